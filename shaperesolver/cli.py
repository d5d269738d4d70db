"""The ``shaperesolver`` command: ISIS-style ``key=value`` parameters over the Python API.

Exit codes: 0 every cube got a ShapeModel, 1 at least one cube failed, 2 usage error.
With ``--json`` stdout carries one JSON object per cube (JSON Lines) and everything
meant for people goes to stderr.
"""

from __future__ import annotations

import json
import logging
import platform
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from . import modes, safeio
from ._version import __version__
from .batch import BatchOptions, run_batch
from .errors import ShapeResolverError, UnsafeFileError, UsageError
from .resolver import DEFAULT_COLLECTION, DEFAULT_URL, Resolver

__all__ = ["main", "parse_args"]

log = logging.getLogger("shaperesolver")

PARAMS = ("from", "fromlist", "shape", "model", "url", "catalog", "collection", "target", "version",
          "verify", "cache", "isisdata", "dryrun", "jobs", "scheduler", "list", "mirror", "prune", "maxsize")
FLAGS = {"--json": "json", "-v": "verbose", "--verbose": "verbose", "-q": "quiet", "--quiet": "quiet",
         "-h": "help", "--help": "help", "--version": "show_version"}
CHOICES = {"shape": ("web", "system", "ellipsoid", "user"), "verify": ("yes", "no"),
           "cache": ("yes", "no", "refresh"), "dryrun": ("yes", "no"), "list": ("yes", "no"), "prune": ("yes", "no")}
_BOOL_WORDS = {"true": "yes", "1": "yes", "y": "yes", "false": "no", "0": "no", "n": "no"}

HELP = f"""\
usage: shaperesolver from=CUBE [shape=web|system|ellipsoid|user] [model=PATH]
                     [url=STAC_API_ROOT] [catalog=STATIC_CATALOG] [collection=ID]
                     [target=NAME] [version=VER] [verify=yes|no] [cache=yes|no|refresh]
                     [isisdata=DIR] [dryrun=yes|no] [jobs=N] [scheduler=ADDRESS]
                     [--json] [-v|-q] [--help] [--version]
       shaperesolver fromlist=LIST [same options]
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
  shape=user       model=PATH: a file, a $var/... path under ISISDATA or a /vsi... path
  url=URL          STAC API root (default $SHAPERESOLVER_STAC_URL or {DEFAULT_URL})
  catalog=PATH     a static STAC catalog (path or URL) to search instead of the API
  collection=ID    STAC collection (default {DEFAULT_COLLECTION})
  target=NAME      use this target instead of the label's TargetName
  version=VER      pin a model version (version=5 matches "0005")
  verify=yes|no    open each web/user model with GDAL and check it (default yes)
  cache=yes|no|refresh   use the on-disk search cache (default yes;
                   $SHAPERESOLVER_CACHE_DIR overrides where it lives)
  isisdata=DIR     ISIS data area (default $ISISDATA)
  dryrun=yes       show what would be written, write nothing
  jobs=N           write N cubes at a time (default 1; 0 = one per core)
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
  -v, -q           more or less chatter on stderr

Keys and keyword values are case-insensitive (FROM=x.cub Shape=WEB); --from x.cub and
--from=x.cub work too.  Exit status: 0 all cubes done, 1 a cube failed, 2 usage error.
"""


def parse_args(argv: Sequence[str]) -> dict[str, Any]:
    """Parse ISIS-style arguments into a dict; raises UsageError on anything unknown."""
    opts: dict[str, Any] = {"json": False, "verbose": 0, "quiet": False, "help": False, "show_version": False}
    args = list(argv)
    i = 0
    unknown = []
    while i < len(args):
        arg = args[i]
        i += 1
        low = arg.lower()
        if low in FLAGS:
            name = FLAGS[low]
            opts[name] = opts[name] + 1 if name == "verbose" else True
            continue
        if low == "-vv":
            opts["verbose"] += 2
            continue
        if low.startswith("--") and "=" not in arg:
            key = low[2:]
            if key in PARAMS:
                if key == "dryrun" and (i >= len(args) or "=" in args[i] or args[i].startswith("-")):
                    value = "yes"
                elif i < len(args):
                    value = args[i]
                    i += 1
                else:
                    raise UsageError(f"{arg} needs a value")
                _set(opts, key, value)
                continue
            unknown.append(arg)
            continue
        if "=" in arg:
            key, value = arg.split("=", 1)
            key = key.lower().lstrip("-")
            if key in PARAMS:
                _set(opts, key, value)
                continue
            unknown.append(arg)
            continue
        unknown.append(arg)
    if unknown:
        raise UsageError(f"unknown parameter{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} (see --help)")
    return opts


def _set(opts: dict[str, Any], key: str, value: str) -> None:
    if key in opts:
        raise UsageError(f"{key}= given twice")
    if key in CHOICES:
        value = value.strip().lower()
        value = _BOOL_WORDS.get(value, value) if key in ("verify", "dryrun", "list", "prune") else value
        if value not in CHOICES[key]:
            raise UsageError(f"{key}={value} is not one of {'|'.join(CHOICES[key])}")
    if key == "jobs":
        try:
            jobs = int(value.strip())
        except ValueError:
            jobs = -1
        if jobs < 0:
            raise UsageError(f"jobs={value} is not a number of workers (0 = one per core)")
        opts[key] = jobs
        return
    opts[key] = value


def _versions() -> str:
    from . import raster

    parts = [f"shaperesolver {__version__}", f"Python {platform.python_version()}", f"GDAL {raster.gdal_version()}"]
    for mod in ("pvl", "requests", "platformdirs"):
        try:
            parts.append(f"{mod} {__import__(mod).__version__}")
        except Exception:  # noqa: BLE001 - report, never fail, in a version banner
            parts.append(f"{mod} not installed")
    return "\n".join(parts)


MAX_LIST_BYTES = 64 * 2**20  # a fromlist= file: about a million paths


class ListLineError(ShapeResolverError, ValueError):
    """One line of a ``fromlist=`` file cannot name a cube (not UTF-8, a NUL byte)."""


def _cube_list(opts: dict[str, Any]) -> list[str | tuple[str, ListLineError]]:
    """The cubes to process; a bad ``fromlist`` line is a (shown name, error) pair."""
    cubes: list[str | tuple[str, ListLineError]] = []
    if "from" in opts:
        cubes.append(opts["from"])
    if "fromlist" in opts:
        path = opts["fromlist"]
        try:
            data, _ = safeio.read_regular(path, MAX_LIST_BYTES, what="fromlist")
        except UnsafeFileError as exc:
            raise UsageError(str(exc)) from None
        for n, raw in enumerate(data.split(b"\n"), 1):
            raw = raw.strip()
            if not raw or raw.startswith(b"#"):
                continue
            shown = raw.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
            if b"\0" in raw:
                cubes.append((shown, ListLineError(f"{path} line {n}: contains a NUL byte; not a file name")))
                continue
            try:
                cubes.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                cubes.append((shown, ListLineError(f"{path} line {n}: not valid UTF-8; not a file name")))
    if not cubes and "target" not in opts:
        raise UsageError("give from=CUBE or fromlist=LIST (see --help)")
    return cubes


def _human(rec: dict[str, Any], kernels_text: str | None, dryrun: bool, stream: TextIO) -> None:
    w = stream.write
    body = f" ({rec['body']})" if rec.get("body") and rec["body"] != rec["target"] else ""
    w(f"{rec['cube']}: TargetName = {rec['target']}{body}\n")
    state = "dry run, not written" if dryrun else ("written" if rec["written"] else "unchanged")
    w(f"  ShapeModel: {rec['previous'] or '(none)'}  ->  {rec['shape_model']}  [{state}]\n")
    src = rec["source"]
    if src == "web":
        w(f"  from the web: item {rec['item_id']}, version {rec['version']}\n")
    elif src == "system":
        w(f"  from SYSTEM: {rec['db']}\n")
    else:
        w(f"  from: {src}\n")
    if rec.get("fallback_reason"):
        w(f"  fell back: {rec['fallback_reason']}\n")
    if rec.get("removed_elevation_model"):
        w(f"  removed ElevationModel = {rec['removed_elevation_model']} (it would override ShapeModel)\n")
    if kernels_text is not None:
        w(kernels_text)


class _Progress:
    def __init__(self, total: int, stream: TextIO, enabled: bool) -> None:
        self.total, self.stream = total, stream
        self.enabled = enabled and total >= 20 and stream.isatty()
        self.step = max(1, total // 200)

    def update(self, done: int) -> None:
        if self.enabled and (done % self.step == 0 or done == self.total):
            filled = int(30 * done / self.total)
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total}")
            if done == self.total:
                self.stream.write("\n")
            self.stream.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code (the console script exits with it)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = parse_args(argv)
        if opts["help"]:
            sys.stdout.write(HELP)
            return 0
        if opts["show_version"]:
            print(_versions())
            return 0
        if modes.wanted(opts) or "prune" in opts or "maxsize" in opts:
            _configure_logging(opts)
            code = modes.run(opts, lambda: _cube_list(opts), lambda: Resolver(
                url=opts.get("url"), catalog=opts.get("catalog"), collection=opts.get("collection", DEFAULT_COLLECTION),
                cache=opts.get("cache", "yes"), isisdata=opts.get("isisdata"), verify=opts.get("verify", "yes") == "yes"))
            if code is not None:
                return code
        cubes = _cube_list(opts)
        if "jobs" in opts and "scheduler" in opts:
            raise UsageError("give jobs= or scheduler=, not both (the cluster's workers do the work)")
        opts.setdefault("jobs", 1)
        if cubes == [] and "target" in opts:
            raise UsageError("give from=CUBE or fromlist=LIST (target= overrides their TargetName)")
    except UsageError as exc:
        print(f"shaperesolver: {exc}", file=sys.stderr)
        return 2
    _configure_logging(opts)
    as_json = opts["json"]
    human = sys.stderr if as_json else sys.stdout
    dryrun = opts.get("dryrun", "no") == "yes"
    try:
        resolver = Resolver(
            url=opts.get("url"), catalog=opts.get("catalog"), collection=opts.get("collection", DEFAULT_COLLECTION),
            cache=opts.get("cache", "yes"), isisdata=opts.get("isisdata"), verify=opts.get("verify", "yes") == "yes",
        )
    except (UsageError, ValueError) as exc:
        print(f"shaperesolver: {exc}", file=sys.stderr)
        return 2
    batch = BatchOptions(shape=opts.get("shape", "web"), model=opts.get("model"), target=opts.get("target"),
                         version=opts.get("version"), dryrun=dryrun)
    counts = {"written": 0, "unchanged": 0, "fell back": 0, "failed": 0}
    progress = _Progress(len(cubes), sys.stderr, not opts["quiet"] and (as_json or len(cubes) > 1))
    try:
        with resolver, _executor(opts) as executor:
            for n, result in enumerate(run_batch(resolver, cubes, batch, jobs=opts["jobs"], executor=executor), 1):
                rec = result.record
                if result.error is not None:
                    counts["failed"] += 1
                    if progress.enabled:
                        sys.stderr.write("\n")
                    print(f"shaperesolver: {result.error}", file=sys.stderr)
                else:
                    counts["written" if rec["written"] else "unchanged"] += 1
                    if rec["fallback_reason"]:
                        counts["fell back"] += 1
                if as_json:
                    sys.stdout.write(json.dumps(rec) + "\n")
                    sys.stdout.flush()
                elif result.error is None and not opts["quiet"]:
                    _human(rec, result.kernels_text, dryrun, human)
                progress.update(n)
    except UsageError as exc:
        print(f"shaperesolver: {exc}", file=sys.stderr)
        return 2
    except _SchedulerError as exc:
        print(f"shaperesolver: {exc}", file=sys.stderr)
        return 1
    if len(cubes) > 1 and not opts["quiet"]:
        verb = "would write" if dryrun else "written"
        print(f"shaperesolver: {len(cubes)} cubes: {counts['written']} {verb}, {counts['unchanged']} unchanged, "
              f"{counts['fell back']} fell back, {counts['failed']} failed", file=sys.stderr)
    return 1 if counts["failed"] else 0


class _SchedulerError(Exception):
    """The Dask scheduler cannot be reached."""


@contextmanager
def _executor(opts: dict[str, Any]) -> Iterator[Any]:
    """None (threads here) or a ``distributed.Client`` for ``scheduler=``."""
    address = opts.get("scheduler")
    if address is None:
        yield None
        return
    try:
        from distributed import Client
    except ImportError:
        raise UsageError("scheduler= needs Dask: pip install 'shaperesolver[dask]'") from None
    try:
        client = Client(address, timeout=15, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise _SchedulerError(f"cannot reach the Dask scheduler at {address}: {' '.join(str(exc).split())}") from None
    try:
        yield client
    finally:
        client.close()


def _configure_logging(opts: dict[str, Any]) -> None:
    level = logging.ERROR if opts["quiet"] else logging.WARNING - 10 * min(opts["verbose"], 2)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("shaperesolver: %(message)s"))
    root = logging.getLogger("shaperesolver")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
