"""The ``shaperesolver`` command: ISIS-style parameters over the Python API.

The grammar (names, prefixes, reserved options, -batchlist) is :mod:`.isisargs`, the
output :mod:`.report`; this module joins them to :func:`.batch.run_batch`.
Exit codes: 0 every cube got a ShapeModel, 1 at least one cube failed, 2 usage error.
With ``--json`` stdout carries one JSON object per cube (JSON Lines) and everything
meant for people goes to stderr.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from . import isisargs, kerneldb, safeio
from ._version import __version__
from .batch import BatchOptions, run_batch
from .errors import DataAreaError, ShapeResolverError, UnsafeFileError, UsageError
from .report import Reporter, append_text
from .resolver import DEFAULT_COLLECTION, DEFAULT_URL, Resolver

__all__ = ["main", "parse_args"]

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

  -batchlist=FILE  run once per row of FILE, $1..$9 in any value = the row's columns
  -errlist=FILE    write the failed rows (or fromlist= cubes) to FILE, to run again
  -onerror=abort|continue   what -batchlist does after a failed row (default abort)
  -log[=FILE]      append each cube's result to FILE (print.prt) as a PVL group
  -help[=PARAM]    the parameters with their values and defaults (or one of them)

Names and list values are case-insensitive and may be shortened to a unique prefix
(FR=x.cub sh=ell); --from x.cub and --from=x.cub work too.  File names expand ~,
$ISISDATA, $base-style data area directories and environment variables.
Exit status: 0 all cubes done, 1 a cube failed, 2 usage error.
"""



def parse_args(argv: Sequence[str]) -> isisargs.Args:
    """Parse the command line (:func:`.isisargs.parse`); raises UsageError."""
    return isisargs.parse(argv)


@dataclass
class _Run:
    """One run of the application: a batch row's (or the command line's) parameters and cubes."""

    params: dict[str, str]
    cubes: list[str | tuple[str, ListLineError]]
    row: isisargs.Row | None = None


_RESOLVER_KEYS = ("url", "catalog", "collection", "cache", "isisdata", "verify", "fallback")


def _expanded(params: dict[str, str]) -> dict[str, str]:
    """File names as ISIS expands them (model= is expanded by the resolver, which keeps its form)."""
    out = dict(params)
    try:
        if "isisdata" in out:
            out["isisdata"] = _env_only(out["isisdata"])
        for name in ("from", "fromlist", "catalog", "mirror"):
            if name in out:
                out[name] = kerneldb.expand_isis(out[name], out.get("isisdata"))
    except DataAreaError as exc:
        raise UsageError(str(exc)) from None
    return out


def _env_only(value: str) -> str:
    value = os.path.expanduser(value)
    expanded = os.path.expandvars(value)
    if "$" in expanded:
        raise UsageError(f"isisdata={value}: names an unset environment variable")
    return expanded


def _plan(args: isisargs.Args) -> list[_Run]:
    """Every run, parameters checked, before any cube is touched."""
    batch = args.reserved.get("batchlist")
    if batch is None:
        params = _expanded(isisargs.checked(args.params))
        cubes = _cube_list(params)
        if not cubes and "fromlist" not in params:  # an empty list is 0 cubes
            raise UsageError("give from=CUBE or fromlist=LIST (target= overrides their TargetName)"
                             if "target" in params else "give from=CUBE or fromlist=LIST (see --help)")
        return [_Run(params, cubes)]
    runs = []
    for row in isisargs.read_batchlist(os.path.expanduser(batch)):
        try:
            params = {k: isisargs.substitute(v, row.cols) for k, v in args.params.items()}
            params = _expanded(isisargs.checked(params))
        except UsageError as exc:
            raise UsageError(f"{batch}: row {row.line.strip()!r}: {exc}") from None
        cubes = _cube_list(params)
        if not cubes and "fromlist" not in params:
            raise UsageError(f"{batch}: row {row.line.strip()!r}: give from=CUBE or fromlist=LIST")
        runs.append(_Run(params, cubes, row))
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code (the console script exits with it).

    A closed stdout (``| head -1``) ends the run quietly with 141 (as SIGPIPE would), and
    Ctrl-C with 130 and one line; in both every cube holds its old or its new label.
    """
    try:
        code = _main(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # nobody reads our output: stop, and keep Python's exit-time flush from complaining
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass  # not a real stream (main() called in-process)
        return 141
    except KeyboardInterrupt:
        print("shaperesolver: interrupted; every cube holds its old or its new label", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: one line for the user, the traceback with -vv
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        print(f"shaperesolver: unexpected error ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); "
              "every cube holds its old or its new label; please report it (-vv shows where)", file=sys.stderr)
        return 1


def _main(argv: Sequence[str]) -> int:
    try:
        args = parse_args(argv)
        if args.help:
            if "help" in args.reserved:
                sys.stdout.write(isisargs.help_text(args.params, args.reserved["help"]))
            else:
                sys.stdout.write(HELP)
            return 0
        if args.show_version:
            print(_versions())
            return 0
        if "batchlist" not in args.reserved:
            code = _list_or_mirror(args)
            if code is not None:
                return code
        elif any(k in args.params for k in _MODE_KEYS):  # they would be silently ignored
            raise UsageError("list=, mirror=, prune= and maxsize= do not go with -batchlist; run them once "
                             "with target=, from= or fromlist=")
        runs = _plan(args)
    except UsageError as exc:
        print(f"shaperesolver: {exc}", file=sys.stderr)
        return 2
    log_file = (args.reserved["log"] or "print.prt") if "log" in args.reserved else None  # ISIS's default
    errlist = args.reserved.get("errlist")
    if errlist:
        try:
            safeio.clear_output(errlist, "-errlist")  # ISIS deletes it at start (a regular file only)
        except UnsafeFileError as exc:
            print(f"shaperesolver: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"shaperesolver: -errlist={errlist}: {exc.strerror}", file=sys.stderr)
            return 2
    report = Reporter(sum(len(r.cubes) for r in runs), as_json=args.json, verbose=args.verbose, quiet=args.quiet,
                      log_file=log_file)
    abort = args.reserved.get("onerror", "abort") == "abort" and "batchlist" in args.reserved
    with report.running():
        code = _execute(runs, report, abort, errlist)
        report.finish()
    return max(code, 1) if report.log_failed else code


_MODE_KEYS = ("list", "mirror", "prune", "maxsize")


def _list_or_mirror(args: isisargs.Args) -> int | None:
    """Run ``list=yes`` or ``mirror=DIR``; the exit code, or None when a resolve run follows
    (``mirror=`` with ``from=``/``fromlist=`` resolves against the mirror: ``catalog=``)."""
    params = _expanded(isisargs.checked(args.params))
    if params.get("list") != "yes" and "mirror" not in params:
        return None
    from . import modes  # (the downloader: only for these modes)

    opts: dict[str, Any] = dict(params, json=args.json, quiet=args.quiet)
    with Reporter(0, as_json=args.json, verbose=args.verbose, quiet=args.quiet).running():
        code = modes.run(opts, lambda: _cube_list(params), lambda: _make_resolver(params))
    if code is None:
        for key in _MODE_KEYS:
            args.params.pop(key, None)
        args.params["catalog"] = opts["catalog"]
        args.params.pop("collection", None)
    return code


def _execute(runs: list[_Run], report: Reporter, abort: bool, errlist: str | None) -> int:
    """Run every row (consecutive rows with the same settings as one batch); the exit code."""
    code = 0
    failed_rows: list[int] = []
    resolvers: dict[tuple[Any, ...], Resolver] = {}
    stopped_at: int | None = None
    with ExitStack() as stack:
        executors: dict[str | None, Any] = {}
        i = 0
        while i < len(runs) and stopped_at is None:
            settings = {k: v for k, v in runs[i].params.items() if k not in ("from", "fromlist")}
            j = i + 1
            while j < len(runs) and {k: v for k, v in runs[j].params.items() if k not in ("from", "fromlist")} == settings:
                j += 1
            group = runs[i:j]
            try:
                key = tuple(settings.get(k) for k in _RESOLVER_KEYS)
                if key not in resolvers:
                    resolvers[key] = stack.enter_context(_resolver(settings))
                sched = settings.get("scheduler")
                if sched not in executors:
                    executors[sched] = stack.enter_context(_executor(settings))
                failed, stopped_at = _group(group, i, resolvers[key], executors[sched], settings, report, abort)
            except UsageError as exc:
                report.error(str(exc) if group[0].row is None else f"row {group[0].row.line.strip()!r}: {exc}")
                code = max(code, 2)
                failed = [i]
                stopped_at = i if abort else None
                failed += [] if abort else list(range(i + 1, j))
            except _SchedulerError as exc:
                report.error(str(exc))
                return 1
            except ShapeResolverError as exc:  # the group's model or settings: none of its cubes was touched
                report.error(" ".join(str(exc).split()))
                report.counts["failed"] += sum(len(run.cubes) for run in group)
                failed = list(range(i, j))
                stopped_at = i if abort else None
            if failed:
                code = max(code, 1)
            failed_rows += failed
            i = j
    if stopped_at is not None:
        failed_rows = sorted(set(failed_rows) | set(range(stopped_at, len(runs))))
        report.error(f"stopped at a failed row (-onerror=abort); {len(runs) - stopped_at} row(s) not done"
                     + (f", listed in {errlist}" if errlist else ""))
    if errlist and failed_rows:
        _write_errlist(errlist, runs, failed_rows, report)
    return code


def _group(group: list[_Run], first: int, resolver: Resolver, executor: Any, settings: dict[str, str],
           report: Reporter, abort: bool) -> tuple[list[int], int | None]:
    """Run consecutive rows with the same settings; (failed row indexes, row aborted at)."""
    opts = BatchOptions(shape=settings.get("shape", "web"), model=settings.get("model"),
                        target=settings.get("target"), version=settings.get("version"),
                        dryrun=settings.get("dryrun", "no") == "yes")
    owner = [first + n for n, run in enumerate(group) for _ in run.cubes]
    cubes = [c for run in group for c in run.cubes]
    failed: list[int] = []
    shown: set[int] = set()
    results = run_batch(resolver, cubes, opts, jobs=int(settings.get("jobs", "1")), executor=executor)
    try:
        for n, result in enumerate(results):
            row = owner[n]
            run = group[row - first]
            if run.row is not None and row not in shown and not report.quiet:
                shown.add(row)
                report.write(isisargs.command_line(run.params) + "\n", report.err)
            report.cube(result.record, result.kernels_text, opts.shape, opts.dryrun, result.error)
            if result.error is not None and row not in failed:
                failed.append(row)
                if abort:
                    return failed, row
    finally:
        results.close()
    return failed, None


def _write_errlist(path: str, runs: list[_Run], rows: list[int], report: Reporter) -> None:
    """The failed batch rows as they were written (fromlist: the failed cubes), to run again."""
    lines = []
    for i in rows:
        run = runs[i]
        if run.row is not None:
            lines.append(run.row.line.strip())
    if not lines:  # fromlist=: the cubes that failed
        lines = report.failed_cubes
    try:
        append_text(path, "".join(f"{line}\n" for line in lines))
    except OSError as exc:
        report.error(f"-errlist={path}: {exc.strerror}")


def _make_resolver(settings: dict[str, str]) -> Resolver:
    try:
        return Resolver(url=settings.get("url"), catalog=settings.get("catalog"),
                        collection=settings.get("collection", DEFAULT_COLLECTION), cache=settings.get("cache", "yes"),
                        isisdata=settings.get("isisdata"), verify=settings.get("verify", "yes") == "yes",
                        fallback=settings.get("fallback", "nomatch"))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@contextmanager
def _resolver(settings: dict[str, str]) -> Iterator[Resolver]:
    with _make_resolver(settings) as r:
        yield r


def _versions() -> str:
    import platform

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
    return cubes


class _SchedulerError(Exception):
    """The Dask scheduler cannot be reached."""


@contextmanager
def _executor(opts: dict[str, str]) -> Iterator[Any]:
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
        connect: Any = Client  # (distributed has no type hints for it)
        client = connect(address, timeout=15, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise _SchedulerError(f"cannot reach the Dask scheduler at {address}: {' '.join(str(exc).split())}") from None
    try:
        yield client
    finally:
        client.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
