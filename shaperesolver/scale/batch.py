"""Batches: resolve each distinct body once, then read, check and write cubes in parallel.

One code path takes threads (``jobs=N``), any :class:`concurrent.futures.Executor`
(a process pool, ``distributed.Client.get_executor()``) or a ``distributed.Client``:

1. *scan* (on the workers, in chunks): each cube's target and file identity;
2. *resolve* (here, once per distinct body and version pin): the web table, which
   ships with the tasks inside a copy of the :class:`~.resolver.Resolver` that may not
   search, so workers never send a request;
3. *write* (on the workers, in chunks): resolve each cube from the table (SYSTEM and the
   ellipsoid need only the label) and write it through the crash-safe write path.

List entries that name the same file (twice, or through a hard or symbolic link) go
to the same chunk in input order, so they are written one after the other and the
first one reports ``written``.  Every task is idempotent (a cube that already holds
its value is not rewritten, an interrupted write is finished or rolled back by the
next reader), so an executor may run a task again after losing a worker.  Results
come back in input order as the same records ``--json`` prints, streamed: at most a
few chunks per worker are in flight or waiting to be yielded, so memory does not grow
with the list.  Every record says what happened to its own cube: an unexpected error
stays with the cube it happened to, and a cube whose task was lost is re-read and
reported as it is now (``written: null`` when this run cannot know).

Ctrl-C (a ``KeyboardInterrupt`` in the thread that reads the results, or thrown into the
generator) stops the batch between two cubes and raises :class:`BatchInterrupted`, which
carries every result that was finished but not yet yielded: each completed write is
reported, also when interrupted.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..cube.label import read_label
from ..errors import ShapeResolverError, UsageError
from ..policy.job import BatchOptions, CubeResult, record, reread, why, write_chunk
from ..policy.resolver import SHAPES, Resolver, ResolverOptions, Shape

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["BatchOptions", "BatchInterrupted", "CubeResult", "record", "run_batch", "write_batch", "default_jobs"]

log = logging.getLogger(__name__)

MAX_CHUNK = 1000
#: seconds an interrupted batch waits for another executor's running tasks (its own threads: until they stop)
DRAIN_WAIT = 30.0
#: the options of a batch that gives none (web, no pin, a real write)
DEFAULT_OPTIONS = BatchOptions()


def default_jobs() -> int:
    """The number of cores this process may run on (``jobs=0``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# ------------------------------------------------------------ worker tasks (module level: they pickle)


def _identity(cube: str) -> tuple[Any, ...]:
    try:
        st = os.stat(cube)
        return ("file", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.abspath(cube))


def _entry_result(index: int, name: str, err: Exception) -> CubeResult:
    """A list entry that names no cube (the caller found it bad): reported as is."""
    return CubeResult(index, name, record(name, None, None, err), None, " ".join(str(err).split()))


def scan_chunk(entries: Sequence[tuple[int, str]], want_target: bool) -> list[tuple[int, tuple[Any, ...], str | None]]:
    """Task: (index, file identity, TargetName or None) of each cube.  Never raises for a cube."""
    out = []
    for index, cube in entries:
        target = None
        if want_target:
            try:
                target = read_label(cube).target
            except ShapeResolverError:
                pass  # the write task reports it
        out.append((index, _identity(cube), target))
    return out


# ------------------------------------------------------------ the client side


def _as_executor(executor: Any) -> cf.Executor:
    if isinstance(executor, cf.Executor):
        return executor
    if hasattr(executor, "get_executor"):  # distributed.Client
        return executor.get_executor(pure=False)  # type: ignore[no-any-return]
    raise UsageError(f"not an executor or a distributed.Client: {executor!r}")


def _chunks(items: list[tuple[int, str]], size: int) -> Iterator[list[tuple[int, str]]]:
    return (items[i : i + size] for i in range(0, len(items), size))


def _stream(ex: cf.Executor, fn: Callable[..., Any], calls: Iterable[tuple[Any, ...]], window: int,
            queue: deque[tuple[tuple[Any, ...], cf.Future[Any]]] | None = None,
            ) -> Iterator[tuple[tuple[Any, ...], cf.Future[Any]]]:
    """Submit ``fn(*args)`` for each ``args``, at most ``window`` not yet consumed at a
    time; yields (args, future) in submission order (the caller waits on the result).
    A consumed future is dropped, so finished results never pile up.  ``queue`` (the
    futures submitted and not yet yielded) may be given, to collect them after an interrupt."""
    queue = deque() if queue is None else queue
    todo = iter(calls)
    try:
        while True:
            for args in todo:
                queue.append((args, ex.submit(fn, *args)))
                if len(queue) >= window:
                    break
            if not queue:
                return
            yield queue.popleft()
    finally:
        for _, fut in queue:
            fut.cancel()


def _chunk_size(n: int, workers: int) -> int:
    # several chunks per worker, for balance and cheap re-runs, without flooding a scheduler
    return max(1, min(MAX_CHUNK, -(-n // max(64, 8 * workers))))


def _check(resolver: Resolver, opts: BatchOptions) -> None:
    """Parameter errors are the batch's, not each cube's: raise them (UsageError) up front."""
    shape = opts.shape.lower()
    if shape not in SHAPES:
        raise UsageError(f"shape={opts.shape!r} is not one of {', '.join(SHAPES)}")
    if shape == "user":
        if not opts.model:
            raise UsageError("shape=user needs model=PATH")
        resolver.user_model_path(opts.model)  # checked against each cube's body, once per body
    elif opts.model:
        raise UsageError("model= is only used with shape=user")


def run_batch(
    resolver: Resolver,
    cubes: Iterable[str | os.PathLike[str] | tuple[str, Exception]],
    opts: BatchOptions = DEFAULT_OPTIONS,
    *,
    jobs: int = 1,
    executor: Any = None,
    chunk_size: int | None = None,
) -> Generator[CubeResult, None, None]:
    """Process ``cubes``; yields one :class:`CubeResult` per list entry, in input order.

    Without ``executor`` the work runs on ``jobs`` threads of this process (``0``: one
    per core).  With one (any :class:`concurrent.futures.Executor` or a
    ``distributed.Client``) each body is resolved here once and the write tasks get
    the table.  An entry may be a ``(name, error)`` pair (a list line that names no
    cube): it is reported with that error.  Raises :class:`UsageError` for bad
    parameters before any cube is touched.
    """
    items: list[tuple[int, str]] = []
    bad: dict[int, CubeResult] = {}
    for i, c in enumerate(cubes):
        if isinstance(c, tuple):
            bad[i] = _entry_result(i, c[0], c[1])
        else:
            items.append((i, os.fspath(c)))
    _check(resolver, opts)
    if not items:
        yield from (bad[i] for i in sorted(bad))
        return
    jobs = default_jobs() if jobs == 0 else jobs
    if jobs < 0:
        raise UsageError(f"jobs={jobs} must be 0 (one per core) or more")
    if executor is None and jobs == 1:  # in order, here: nothing to group
        nxt = 0
        for item in items:
            while nxt in bad:
                yield bad.pop(nxt)
                nxt += 1
            yield from write_chunk(resolver, opts, [item])
            nxt = item[0] + 1
        yield from (bad[i] for i in sorted(bad))
        return
    own = stop = None
    ex: cf.Executor
    if executor is None:
        own = ex = cf.ThreadPoolExecutor(jobs, thread_name_prefix="shaperesolver")
        workers, stop = jobs, threading.Event()
    else:
        ex = _as_executor(executor)
        workers = _worker_count(executor)
    size = chunk_size or _chunk_size(len(items), workers)
    try:
        yield from _run(resolver, items, bad, opts, ex, size, max(2, 4 * workers), stop)
    finally:
        if own is not None:
            assert stop is not None
            stop.set()  # stopped early (Ctrl-C, a closed pipe): the threads end between two cubes
            own.shutdown(wait=True, cancel_futures=True)


def _worker_count(executor: Any) -> int:
    n = getattr(executor, "_max_workers", None)
    if isinstance(n, int):
        return n
    try:
        info = executor.scheduler_info()  # distributed.Client
        return max(1, sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values()))
    except Exception:  # noqa: BLE001 - only a chunking hint
        return 8


def _run(resolver: Resolver, items: list[tuple[int, str]], bad: dict[int, CubeResult], opts: BatchOptions,
         ex: cf.Executor, size: int, window: int, stop: threading.Event | None) -> Iterator[CubeResult]:
    shipped = stop is None  # not our own threads: the table travels with the tasks
    web = opts.shape.lower() == "web"
    user = opts.shape.lower() == "user" and resolver.verify
    # 1. scan: which entries name the same file, and the targets when the shipped table needs them
    want = shipped and (web or user) and opts.target is None
    first: dict[int, int] = {}  # hash of a file's identity -> its first entry (a collision only groups)
    later: dict[int, list[tuple[int, str]]] = {}
    names: set[str] = set()
    for (chunk, _), fut in _stream(ex, scan_chunk, ((c, want) for c in _chunks(items, size)), window):
        try:
            scanned = fut.result()
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001 - a lost scan only costs the grouping
            log.warning("a scan task failed (%s); its cubes are resolved where they are written", why(exc))
            continue
        for (i, cube), (_, key, target) in zip(chunk, scanned):
            j = first.setdefault(hash(key), i)
            if j != i:
                later.setdefault(j, []).append((i, cube))
            if target:
                names.add(target)
    del first
    worker_resolver = resolver
    if shipped:
        # 2. resolve each distinct (body, pin) once, here (a user model: check it once per
        # body); the table travels with the tasks
        for name in sorted({opts.target} if opts.target is not None else names):
            try:
                if web:
                    resolver.web_model(name, opts.version)
                elif user:
                    resolver.resolve(None, shape="user", model=opts.model, target=name)
            except ShapeResolverError:
                pass  # remembered in the table; each cube falls back (or fails) on its own
        worker_resolver = _shippable(resolver)
    # (threads of this process share ``resolver``, whose memo searches each body once)
    # 3. write: same-file entries together, in input order
    skip = {i for group in later.values() for i, _ in group}

    def chunks() -> Iterator[tuple[Any, ...]]:
        cur: list[tuple[int, str]] = []
        for i, cube in items:
            if i in skip:
                continue  # written with the group's first entry
            cur.append((i, cube))
            cur.extend(later.get(i, ()))
            if len(cur) >= size:
                yield (worker_resolver, opts, cur) + (() if stop is None else (stop,))
                cur = []
        if cur:
            yield (worker_resolver, opts, cur) + (() if stop is None else (stop,))

    done: dict[int, CubeResult] = dict(bad)
    nxt = 0
    pending: deque[tuple[tuple[Any, ...], cf.Future[Any]]] = deque()
    current: list[cf.Future[Any]] = []  # the future being waited on (no longer in ``pending``)
    try:
        while nxt in done:
            yield done.pop(nxt)
            nxt += 1
        for (_, _, chunk, *_), fut in _stream(ex, write_chunk, chunks(), window, pending):
            current[:] = [fut]
            try:
                results = fut.result()
            except UsageError:
                raise
            except Exception as exc:  # noqa: BLE001 - the task is lost: say what each of its cubes holds now
                results = [reread(i, c, f"worker failed ({why(exc)})") for i, c in chunk]
            current.clear()
            for r in results:
                done[r.index] = r
            while nxt in done:
                yield done.pop(nxt)
                nxt += 1
    except KeyboardInterrupt:
        raise BatchInterrupted(_finished(done, [*current, *(f for _, f in pending)], stop)) from None
    yield from (done[i] for i in sorted(done))


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a batch; ``results`` are the cubes it finished and had not yet yielded."""

    def __init__(self, results: list[CubeResult]) -> None:
        super().__init__()
        self.results = results


def _finished(done: dict[int, CubeResult], futures: list[cf.Future[Any]],
              stop: threading.Event | None) -> list[CubeResult]:
    """After an interrupt: stop the tasks between two cubes, wait for the running ones,
    and return every finished result not yet yielded, in input order."""
    if stop is not None:
        stop.set()  # our threads end their chunks after the cube in hand
    running = [f for f in futures if not f.cancel()]
    cf.wait(running, timeout=None if stop is not None else DRAIN_WAIT)
    out = dict(done)
    for f in running:
        if f.done() and not f.cancelled() and f.exception() is None:
            out.update((r.index, r) for r in f.result())
    return [out[i] for i in sorted(out)]


def _shippable(resolver: Resolver) -> Resolver:
    """A copy of ``resolver`` with everything it has resolved, that never searches."""
    state = resolver.__getstate__()
    state["searches_allowed"] = False
    copy = Resolver.__new__(Resolver)
    copy.__setstate__(state)
    return copy


def write_batch(
    cubes: Iterable[str | os.PathLike[str]],
    executor: Any = None,
    *,
    jobs: int = 1,
    resolver: Resolver | None = None,
    shape: Shape = "web",
    model: str | None = None,
    target: str | None = None,
    version: str | None = None,
    dryrun: bool = False,
    chunk_size: int | None = None,
    **resolver_kwargs: Unpack[ResolverOptions],
) -> list[dict[str, Any]]:
    """Resolve and write a ShapeModel into every cube; returns the records in input order.

    ``executor`` is a ``distributed.Client`` or any :class:`concurrent.futures.Executor`
    (cubes must be on a file system its workers see); without one the cubes are written
    by ``jobs`` threads here.  Each body is searched once.  ``resolver`` (else a new
    :class:`Resolver` from ``resolver_kwargs``) supplies the settings.  A failed cube has
    an ``error`` in its record and does not stop the others.
    """
    opts = BatchOptions(shape=shape, model=model, target=target, version=version, dryrun=dryrun)
    if isinstance(cubes, (str, bytes, os.PathLike)):
        cubes = [os.fsdecode(cubes)]  # one cube, not its characters
    own = resolver is None
    r = resolver if resolver is not None else Resolver(**resolver_kwargs)
    try:
        return [res.record for res in run_batch(r, cubes, opts, jobs=jobs, executor=executor, chunk_size=chunk_size)]
    finally:
        if own:
            r.close()
