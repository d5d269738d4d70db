"""The command's usage text (``--help``): what ``shaperesolver`` takes, in one screen."""

from __future__ import annotations

from ..policy.options import DEFAULT_COLLECTION, DEFAULT_URL

__all__ = ["HELP"]

HELP = f"""\
usage: shaperesolver from=CUBE [shape=web|system|ellipsoid|ringplane|user] [model=PATH]
                     [url=STAC_API_ROOT] [catalog=STATIC_CATALOG] [collection=ID]
                     [target=NAME] [version=VER] [verify=yes|no] [cache=yes|no|refresh]
                     [isisdata=DIR] [dryrun=yes|no] [jobs=N] [scheduler=ADDRESS]
                     [fallback=nomatch|always|never]
                     [--json] [-v|-q] [--help] [--version]
       shaperesolver fromlist=LIST [same options]
       shaperesolver -batchlist=FILE 'from=$1' [same options, $1..$9 = columns]
                     [-errlist=FILE] [-onerror=abort|continue] [-log[=FILE]]
       shaperesolver -help[=PARAM]
       shaperesolver [target=NAME[,NAME...]|from=CUBE|fromlist=LIST] list=yes [--json]
       shaperesolver target=NAME[,NAME...]|from=CUBE|fromlist=LIST mirror=DIR
                     [prune=yes|no] [maxsize=BYTES]

Choose a shape model (DEM) for ISIS cubes, as spiceinit's SHAPE parameter does, and
write it into IsisCube > Kernels > ShapeModel without touching the rest of the label.

  from=CUBE        an attached cube (.cub) or a detached label (.lbl)
  fromlist=LIST    a file with one cube per line (# comments and blank lines ignored)
  shape=web        newest DEM for the target in the STAC API, else SYSTEM, else the
                   ellipsoid (default)
  shape=system     the ISIS data area's DEM kernel database ($ISISDATA/base/dems)
  shape=ellipsoid  ShapeModel = Null
  shape=ringplane  ShapeModel = RingPlane (ring observations, as spiceinit)
  shape=user       model=PATH: a DEM file or NAIF DSK (.bds), a $base/... path under
                   ISISDATA, or a /vsi... path
  url=URL          STAC API root (default $SHAPERESOLVER_STAC_URL, else
                   {DEFAULT_URL})
  catalog=PATH     a static STAC catalog (path or URL) to search instead of the API
  collection=ID    STAC collection (default {DEFAULT_COLLECTION})
  target=NAME      use this target instead of the label's TargetName
  version=VER      pin a model version (version=5 matches "0005")
  verify=yes|no    open each web/user model with GDAL and check it (default yes)
  cache=yes|no|refresh   use the on-disk search cache (default yes;
                   $SHAPERESOLVER_CACHE_DIR overrides where it lives)
  isisdata=DIR     ISIS data area (default $ISISDATA)
  fallback=nomatch|always|never   shape=web: fall back to SYSTEM, then the ellipsoid,
                   when the catalog has no model for the body (nomatch, default),
                   also when it gives no answer (always), or never
  dryrun=yes       show what would be written, write nothing
  jobs=N           N worker processes (default 1; 0 = one per core)
  scheduler=ADDR   run the batch on a Dask cluster (tcp://host:8786; needs the
                   shaperesolver[dask] extra); the cubes must be on a file system
                   its workers see
  list=yes         list every item of the bodies (all bodies without target=/from=):
                   id, version, date, deprecated, href, size; * marks the chosen one
  mirror=DIR       download the chosen DEM of each body into DIR, a static catalog
                   (DIR/catalog.json); with from=/fromlist= then resolve against it.
                   Later: catalog=DIR resolves offline to the local files
  prune=yes        drop older mirrored versions of the bodies mirrored now
  maxsize=SIZE     largest file to download (default 64G; K, M, G, T suffixes)
  --json           one JSON object per cube (item, mirrored DEM) on stdout (JSON Lines)
  -v, -q           more or less chatter on stderr (results on stdout stay with -q)

  -batchlist=FILE  run once per row of FILE, $1..$9 in any value = the row's columns
  -errlist=FILE    write the failed rows (or fromlist= cubes) to FILE, to run again
  -onerror=abort|continue   what -batchlist does after a failed row (default abort)
  -log[=FILE]      append each cube's result to FILE (print.prt) as a PVL group
  -help[=PARAM]    the parameters with the values in effect and where each came
                   from (the command line, $SHAPERESOLVER_STAC_URL, $ISISDATA, the
                   default); -help=PARAM describes one

Names and list values are case-insensitive and may be shortened to a unique prefix
(FR=x.cub sh=ell); --from x.cub and --from=x.cub work too.  File names expand ~,
$ISISDATA, $base-style data area directories and environment variables.
Exit status: 0 all cubes done, 1 a cube failed, 2 usage error, 130 interrupted
(Ctrl-C), 143 stopped by SIGTERM (a batch system), 129 by SIGHUP (the terminal
closed), 141 stdout closed (| head); with 129, 130, 141 and 143 every cube holds
its old or its new label.
"""
