"""The ``shaperesolver`` command: ISIS-style parameters over the Python API.

One direction: :func:`.plan.plan` turns the words into a checked plan (the grammar is
:mod:`.isisargs`), this module executes it over the API (:func:`.scale.batch.run_batch`)
and :mod:`.report` says what happened.
Exit codes: 0 every cube got a ShapeModel, 1 at least one cube failed, 2 usage error
(``audit=yes``: 0 every cube is current or user, 1 any other status).
With ``--json`` stdout carries one JSON object per cube (JSON Lines) and everything
meant for people goes to stderr.
"""

from __future__ import annotations

import bisect
import itertools
import sys
from collections.abc import Generator, Iterator, Sequence
from contextlib import ExitStack, contextmanager

from .._version import __version__
from ..base import safeio
from ..base.log import get as get_logger
from ..errors import ShapeResolverError, UnsafeFileError, UsageError
from ..policy.job import BatchOptions, CubeResult, audit_failed, in_order, record
from ..policy.resolver import DEFAULT_COLLECTION, Resolver
from .plan import RESOLVER_KEYS, Plan, Run, plan
from .report import Reporter, append_text, quiet

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..base.interrupts import Stops

__all__ = ["main"]





def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code (the console script exits with it).

    Without ``argv`` it is the program itself (the console script, ``python -m
    shaperesolver``): it reads ``sys.argv``, and once it returns, the stop signals stay
    ignored, since the program exits next (one during Python's exit would make a finished
    run look killed).  A program that runs the command and goes on passes ``argv``: its
    signal handlers are then left as they were.

    A closed stdout (``| head -1``) ends the run quietly with 141 (as SIGPIPE would), and
    Ctrl-C with 130 and one line, SIGTERM with 143 and SIGHUP with 129 (each taken as
    Ctrl-C is: :class:`..base.interrupts.Stops`); in all every cube holds its old or its
    new label.
    """
    from ..base.interrupts import Stops

    stops = Stops(keep=argv is None)  # (the program itself: one more during its exit is ignored)
    with stops:
        try:
            return _finish(argv, stops)
        except KeyboardInterrupt:  # (one more came before the last line was said)
            return 128 + (stops.first or 2)


def _finish(argv: Sequence[str] | None, stops: Stops) -> int:
    """:func:`main`'s run and its last line; a stop makes further stops ignored (``stops.calm``)."""
    try:
        code = _main(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # nobody reads our output: stop, and keep Python's exit-time flush from complaining
        stops.calm()
        quiet(sys.stdout)
        return 141
    except KeyboardInterrupt:
        stops.calm()
        why = f"stopped by {stops.name}" if stops.first is not None else "interrupted"
        _say(f"shaperesolver: {why}; every cube holds its old or its new label")
        return 128 + (stops.first or 2)
    except Exception as exc:  # noqa: BLE001 - a bug: one line for the user, the traceback with -vv
        stops.calm()
        get_logger(__name__).debug("unexpected error", exc_info=True)
        if stops.first is not None and isinstance(exc, OSError):  # (SIGHUP: the terminal is gone)
            _say(f"shaperesolver: stopped by {stops.name}; every cube holds its old or its new label")
            return 128 + stops.first
        _say(f"shaperesolver: unexpected error ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); "
             "every cube holds its old or its new label; please report it (-vv shows where)")
        return 1


def _say(text: str) -> None:
    """The command's last line, on stderr; where stderr is gone (SIGHUP: the terminal
    closed) there is nobody to tell, and Python's exit must not complain either."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        quiet(sys.stderr)
        quiet(sys.stdout)


def _main(argv: Sequence[str]) -> int:
    try:
        todo = plan(list(argv))
    except UsageError as exc:
        print(f"shaperesolver: {exc}", file=sys.stderr)
        return 2
    if todo.help_text is not None:
        sys.stdout.write(todo.help_text)
        return 0
    if todo.show_version:
        print(_versions())
        return 0
    if todo.mode is not None:
        code = _run_mode(todo)
        if code is not None:
            return code
    if todo.errlist:
        try:
            safeio.clear_output(todo.errlist, "-errlist")  # ISIS deletes it at start (a regular file only)
        except UnsafeFileError as exc:
            print(f"shaperesolver: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"shaperesolver: -errlist={todo.errlist}: {exc.strerror}", file=sys.stderr)
            return 2
    report = Reporter(todo.total, as_json=todo.json, verbose=todo.verbose, quiet=todo.quiet, log_file=todo.log_file,
                      audit=any(run.params.get("audit") == "yes" for run in todo.runs))
    with report.running():
        try:
            code = _execute(todo.runs, report, todo.abort, todo.errlist)
        except KeyboardInterrupt:  # the summary still says what was done and what was not run
            report.finish()
            raise
        report.finish()
    return max(code, 1) if report.log_failed else code


def _run_mode(todo: Plan) -> int | None:
    """Run ``list=yes`` or ``mirror=DIR``; the exit code, or None when the plan's resolve
    runs follow (``mirror=`` with ``from=``/``fromlist=`` resolves against the mirror)."""
    from . import modes  # (the downloader: only for these modes)

    assert todo.mode is not None
    params = todo.mode
    opts: dict[str, Any] = dict(params, json=todo.json, quiet=todo.quiet)
    try:
        with Reporter(0, as_json=todo.json, verbose=todo.verbose, quiet=todo.quiet).running():
            return modes.run(opts, lambda: todo.mode_cubes, lambda: _make_resolver(params))
    except UsageError as exc:  # a setting the resolver itself refuses (e.g. a catalog that is not one)
        print(f"shaperesolver: {exc}", file=sys.stderr)
        return 2


def _execute(runs: list[Run], report: Reporter, abort: bool, errlist: str | None) -> int:
    """Run every row (consecutive rows with the same settings as one batch); the exit code.

    A row that cannot start (its settings or model are unusable, the Dask scheduler cannot
    be reached) fails as a whole: one line, and a failed record for each of its cubes.
    """
    code = 0
    failed_rows: list[int] = []
    resolvers: dict[tuple[Any, ...], Resolver] = {}
    stopped_at: int | None = None
    done_after: set[int] = set()  # rows after an abort that other workers had finished meanwhile
    errors = _ErrList(errlist)
    with ExitStack() as stack:
        executors: dict[str | None, Any] = {}
        pools = _Pools(runs, stack)
        i = 0
        while i < len(runs) and stopped_at is None:
            settings = {k: v for k, v in runs[i].params.items() if k not in ("from", "fromlist")}
            j = i + 1
            while j < len(runs) and {k: v for k, v in runs[j].params.items() if k not in ("from", "fromlist")} == settings:
                j += 1
            group = runs[i:j]
            reported = report.done
            failed: list[int] = []  # (filled as rows fail: a Ctrl-C still lists them)
            try:
                key = tuple(settings.get(k) for k in RESOLVER_KEYS)
                if key not in resolvers:
                    resolvers[key] = stack.enter_context(_resolver(settings))
                sched = settings.get("scheduler")
                if sched not in executors:
                    try:
                        executors[sched] = stack.enter_context(_executor(settings))
                    except _SchedulerError as exc:
                        executors[sched] = exc  # the later rows that use it fail at once
                if isinstance(executors[sched], _SchedulerError):
                    raise executors[sched]
                stopped_at = _group(group, i, resolvers[key],
                                    pools.get(settings) if executors[sched] is None else executors[sched], settings,
                                    report, abort, errors, failed, done_after)
            except ShapeResolverError as exc:  # the group's model, settings or scheduler: no cube was touched
                text = " ".join(str(exc).split())
                report.error(text if group[0].row is None or not isinstance(exc, UsageError)
                             else f"row {group[0].row.line.strip()!r}: {text}")
                code = max(code, 2 if isinstance(exc, UsageError) else 1)
                left = itertools.islice(((run, c if isinstance(c, str) else c[0]) for run in group for c in run.cubes),
                                        report.done - reported, None)
                for run, cube in left:  # silent: the line above says why
                    rec = (audit_failed(0, cube, text).record if settings.get("audit") == "yes"
                           else record(cube, None, None, exc))
                    report.cube(rec, None, settings.get("shape", "web"), settings.get("dryrun", "no") == "yes")
                    if run.row is None:
                        errors.add([cube], report)
                failed[:] = range(i, j)
                stopped_at = i if abort else None
            except KeyboardInterrupt:  # the rows that failed so far are in -errlist too
                errors.add([run.row.line.strip() for run in (runs[k] for k in [*failed_rows, *failed])
                            if run.row is not None], report)
                raise
            if failed:
                code = max(code, 1)
            failed_rows += failed
            i = j
    not_done = set() if stopped_at is None else set(range(stopped_at, len(runs))) - done_after
    if stopped_at is not None:
        failed_rows = sorted(set(failed_rows) | not_done)
    errors.add([run.row.line.strip() for run in (runs[i] for i in failed_rows) if run.row is not None], report)
    listed = bool(failed_rows) and errors.ok and errors.written > 0
    if stopped_at is not None:  # (-errlist is named only when the rows really are in it)
        report.error(f"stopped at a failed row (-onerror=abort); {len(not_done)} row(s) not done"
                     + (f", listed in {errlist}" if listed else ""))
    return code


def _group(group: list[Run], first: int, resolver: Resolver, executor: Any, settings: dict[str, str],
           report: Reporter, abort: bool, errors: _ErrList, failed: list[int], done_after: set[int]) -> int | None:
    """Run consecutive rows with the same settings; the row aborted at (or None).  Each
    row that fails is added to ``failed`` as it fails; a row after the one aborted at that
    other workers had already written whole is added to ``done_after``.

    The cubes stream through: nothing here grows with the list but the counts (a failed
    cube of a ``fromlist=`` run goes to ``-errlist`` as it comes).  Ctrl-C: the results
    the batch finished before it stopped are reported, then it goes on up.
    """
    opts = BatchOptions(shape=settings.get("shape", "web"), model=settings.get("model"),
                        target=settings.get("target"), version=settings.get("version"),
                        dryrun=settings.get("dryrun", "no") == "yes", audit=settings.get("audit", "no") == "yes")
    starts: list[int] = []  # the index of each row's first cube, filled as the rows are read

    def cubes() -> Iterator[Any]:
        n = 0
        for run in group:
            starts.append(n)
            for cube in run.cubes:
                yield cube
                n += 1

    shown: set[int] = set()

    def take(result: CubeResult) -> int | None:
        """Report one result; the row to stop at (-onerror=abort), else None."""
        row = first + bisect.bisect_right(starts, result.index) - 1
        run = group[row - first]
        if run.shown is not None and row not in shown and not report.quiet:
            shown.add(row)
            report.write(run.shown + "\n", report.err)
        interrupted: BaseException | None = None
        try:
            report.cube(result.record, result.kernels_text, opts.shape, opts.dryrun, result.error)
        except (KeyboardInterrupt, OSError) as exc:  # (Ctrl-C waited for the cube's report, or its reader
            interrupted = exc  # is gone: its -errlist line too)
        stop = None
        if result.error is not None:
            if run.row is None:
                errors.add([str(result.record.get("cube"))], report)
            if row not in failed:
                failed.append(row)
                # (an audit's finding is its result, not a failure of the run: only a cube it could not audit stops it)
                stop = row if abort and (not opts.audit or result.record.get("status") == "failed") else None
        if interrupted is not None:
            raise interrupted
        return stop

    count = sum(len(run.cubes) for run in group)
    from ..base.interrupts import Interrupts

    # (the run's Ctrl-C: the batch's waits take it where they can act on it; one that comes
    # between the batch giving a result and its report waits for the report; while what an
    # interrupted batch finished is reported, Ctrl-C again only makes the batch stop waiting)
    with Interrupts() as keys:
        results = _results(resolver, cubes(), count, opts, int(settings.get("jobs", "1")), executor)
        try:
            while True:
                keys.hold()
                try:
                    result = next(results)
                except StopIteration:
                    keys.release()  # (one that came after the last result: here)
                    break
                stop = take(result)
                keys.release()
                if stop is not None:
                    # (-onerror=abort: the writes already in flight on other workers end, and are reported)
                    reported: dict[int, int] = {}
                    for late in _finished(results, KeyboardInterrupt()):
                        take(late)
                        row = first + bisect.bisect_right(starts, late.index) - 1
                        reported[row] = reported.get(row, 0) + 1
                    done_after.update(row for row, n in reported.items()  # (rows written whole: not "not done")
                                      if row not in failed and n == len(group[row - first].cubes))
                    return stop
        except (KeyboardInterrupt, OSError) as exc:
            # (Ctrl-C, or stdout's reader is gone: the batch stops and what it finished is
            # told, to -log and -errlist at least; every Ctrl-C so far counts: two held while
            # a cube was reported are two)
            keys.count, keys.active = max(1, keys.total), True
            unreported = _finished(results, exc if isinstance(exc, KeyboardInterrupt) else KeyboardInterrupt())
            keys.active = True
            for result in unreported:
                try:
                    take(result)
                except OSError:  # (its reader went meanwhile: the rest still go to -log)
                    pass
            raise
        finally:
            results.close()
    return None


def _finished(results: Generator[CubeResult, None, None], exc: KeyboardInterrupt) -> list[CubeResult]:
    """The results a batch finished before Ctrl-C and had not yet given (see
    :class:`~shaperesolver.scale.batch.BatchInterrupted`)."""
    done = getattr(exc, "results", None)
    if done is None:  # the interrupt came while a result was being reported: ask the batch
        try:
            results.throw(exc)
        except KeyboardInterrupt as stopped:
            done = getattr(stopped, "results", None)
        except StopIteration:
            pass
    return list(done or [])


def _results(resolver: Resolver, cubes: Iterator[Any], count: int, opts: BatchOptions, jobs: int,
             executor: Any) -> Generator[CubeResult, None, None]:
    """The cubes' results in order: one cube is one job here (no batch machinery loads);
    more go through :func:`~shaperesolver.scale.batch.run_batch`."""
    if count == 1 and (executor is None or isinstance(executor, _Pools.Lazy)):
        cube, more = next(cubes, None), next(cubes, None)  # (a list may have grown since it was counted)
        if isinstance(cube, str) and more is None:
            yield from in_order(resolver, opts, [(0, cube)])
            return
        cubes = itertools.chain([c for c in (cube, more) if c is not None], cubes)
    if isinstance(executor, _Pools.Lazy):
        executor = executor.start()
    from ..scale.batch import run_batch  # (threads, executors, Dask: only for a list)

    # (jobs=N: N worker processes, as ISIS apps' threads would use N cores; Python runs
    # one thread at a time, and reading labels is Python)
    results = run_batch(resolver, _Counted(cubes, count), opts, jobs=jobs, executor=executor,
                        processes=executor is None and jobs != 1)
    try:
        yield from results
    finally:
        results.close()


class _Pools:
    """The command's worker processes (``jobs=N``, N > 1): one pool for each N, started when
    a batch of more than one cube first needs it and kept for every later batch of the run
    (``-batchlist`` rows and groups of rows do not each start their own).  At most one
    worker per cube the run's rows with that ``jobs=`` name."""

    class Lazy:
        def __init__(self, pools: _Pools, jobs: int) -> None:
            self.pools, self.jobs = pools, jobs

        def start(self) -> Any:
            return self.pools.start(self.jobs)

    def __init__(self, runs: list[Run], stack: ExitStack) -> None:
        self.runs, self.stack = runs, stack
        self.made: dict[int, Any] = {}

    @staticmethod
    def jobs(settings: dict[str, str]) -> int:
        try:
            return int(settings.get("jobs", "1"))
        except ValueError:
            return 1  # (the batch says why)

    def get(self, settings: dict[str, str]) -> Any:
        """What a group's batch runs on without a scheduler: None (one cube at a time), or a
        pool started on first use."""
        jobs = self.jobs(settings)
        return None if jobs == 1 or jobs < 0 else self.Lazy(self, jobs)

    def start(self, jobs: int) -> Any:
        if jobs not in self.made:
            from ..scale import pool
            from ..scale.batch import default_jobs

            count = sum(len(run.cubes) for run in self.runs
                        if run.params.get("scheduler") is None and self.jobs(run.params) == jobs)
            wanted = default_jobs() if jobs == 0 else jobs
            made = self.made[jobs] = pool.start(max(1, min(wanted, count or wanted)))
            self.stack.callback(self._close, made)
        return self.made[jobs]

    @staticmethod
    def _close(made: Any) -> None:
        """Stop the workers at the run's end; after a second Ctrl-C (counted however it came:
        held while a cube was reported, or taken by a batch) they are not waited for."""
        from ..base.interrupts import Interrupts

        with Interrupts() as keys:
            made.close(lambda: keys.total >= 2)


class _Counted:
    """An iterator of cubes with a known count (run_batch sizes its chunks by ``len()``)."""

    def __init__(self, it: Iterator[Any], count: int) -> None:
        self.it, self.count = it, count

    def __iter__(self) -> Iterator[Any]:
        return self.it

    def __len__(self) -> int:
        return self.count


class _ErrList:
    """ISIS's ``-errlist``: the failed batch rows as they were written, a ``fromlist=``
    run's failed cubes as they come.  A file that cannot be written is said once; the
    cubes go on."""

    def __init__(self, path: str | None) -> None:
        self.path, self.ok, self.written = path, path is not None, 0

    def add(self, lines: Sequence[str], report: Reporter) -> None:
        if not self.ok or not lines:
            return
        assert self.path is not None
        try:
            append_text(self.path, "".join(f"{line}\n" for line in lines))
        except OSError as exc:
            report.error(f"-errlist={self.path}: {exc.strerror}")
            self.ok = False
            return
        self.written += len(lines)


def _make_resolver(settings: dict[str, str]) -> Resolver:
    try:
        return Resolver(url=settings.get("url"), catalog=settings.get("catalog"),
                        collection=settings.get("collection", DEFAULT_COLLECTION),
                        cache=settings.get("cache", "yes"),  # type: ignore[arg-type]
                        isisdata=settings.get("isisdata"),
                        verify=settings.get("verify", "yes") == "yes",
                        fallback=settings.get("fallback", "nomatch"))  # type: ignore[arg-type]  # (checked by the plan)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@contextmanager
def _resolver(settings: dict[str, str]) -> Iterator[Resolver]:
    with _make_resolver(settings) as r:
        yield r


def _versions() -> str:
    import platform

    from ..models import raster

    parts = [f"shaperesolver {__version__}", f"Python {platform.python_version()}", f"GDAL {raster.gdal_version()}"]
    for mod in ("pvl", "requests", "platformdirs"):
        try:
            parts.append(f"{mod} {__import__(mod).__version__}")
        except Exception:  # noqa: BLE001 - report, never fail, in a version banner
            parts.append(f"{mod} not installed")
    return "\n".join(parts)


class _SchedulerError(ShapeResolverError):
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
