"""Batches: resolve each distinct body once, then read, check and write cubes in parallel.

One code path takes threads (``jobs=N``), worker processes (the command's ``jobs=N``,
:mod:`.pool`), any :class:`concurrent.futures.Executor` (``distributed.Client.get_executor()``)
or a ``distributed.Client``:

1. *scan* (on the workers, in chunks): each cube's file identity (a real run), and its
   target where the table below needs it before the writes (``shape=user``, an audit);
2. *resolve* (here, once per distinct body and version pin, as bodies appear): the web
   table, which ships with the tasks inside a copy of the :class:`~.resolver.Resolver`
   that may not search, so workers never send a request.  A web body is learned from
   the writes themselves: a worker that meets a body the table lacks gives the cube back
   untouched (``CubeResult.needs``), the body is resolved here and the cube sent again,
   so a label is read once, the first few of each body twice;
3. *write* (on the workers, in chunks): resolve each cube from the table (SYSTEM and the
   ellipsoid need only the label) and write it through the crash-safe write path.

The list is a stream, and so is everything after it: entries are read as the window
moves on, at most a few chunks per worker are in flight or waiting to be yielded, and
results come back in input order as they are done, so memory does not grow with the
list (a million entries take what a thousand take).  In a real run, list entries that
name the same file (twice, or through a hard or symbolic link) are written one after
the other in input order, so the first one reports ``written``: a later entry joins the
chunk of an earlier one not yet sent, or waits until the chunk that holds it is done.
Every task is idempotent (a cube that already holds its value is not rewritten, an
interrupted write is finished or rolled back by the next reader), so an executor may run
a task again after losing a worker.  Results are the same records ``--json`` prints.
Every record says what happened to its own cube: an unexpected error stays with the cube
it happened to, and a cube whose task was lost is re-read and reported as it is now
(``written: null`` when this run cannot know).

Ctrl-C stops the batch between two cubes and raises :class:`BatchInterrupted`, which
carries every result that was finished but not yet yielded: each completed write is
reported, also when interrupted.  In the main thread the batch takes SIGINT itself while
its own code runs (:mod:`..base.interrupts`: a ``KeyboardInterrupt`` inside
:mod:`concurrent.futures` could hang it or lose a result); between two results Ctrl-C is
the program's, and a ``KeyboardInterrupt`` thrown into the generator stops it the same
way.  A second Ctrl-C does not wait for the tasks in hand (worker processes are killed;
the cubes of their chunks are re-read and reported as they are now).
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sized
from typing import TYPE_CHECKING, Any

from ..base.interrupts import Interrupts
from ..base.log import get as get_logger
from ..cube.label import read_label
from ..errors import ShapeResolverError, UsageError
from ..policy.job import BatchOptions, CubeResult, audit_failed, in_order, record, reread, why
from ..policy.resolver import SHAPES, Resolver
from .tasks import Tasks

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..policy.types import ResolverOptions, Shape

__all__ = ["BatchOptions", "BatchInterrupted", "CubeResult", "record", "run_batch", "write_batch", "iter_batch",
           "audit_batch", "default_jobs"]

log = get_logger(__name__)

#: the most cubes one task takes: enough to make a task's overhead small (a Dask task
#: costs about a millisecond), few enough that what is in flight stays small
MAX_CHUNK = 100
#: seconds an interrupted batch waits for another executor's running tasks (its own threads: until they stop)
DRAIN_WAIT = 30.0
#: seconds an interrupted batch waits for a cube's lock to say what it holds (a worker killed in its hands)
REREAD_WAIT = 2.0
#: seconds a shipped web batch sends only its first chunk, to learn the bodies from it
LEARN_WAIT = 1.0
#: the options of a batch that gives none (web, no pin, a real write)
DEFAULT_OPTIONS = BatchOptions()
#: a list entry: a cube, or a (name, error) pair for a line that names none
Entry = str | os.PathLike[str] | tuple[str, Exception]
#: a scanned entry: (index, cube, identity_key of its file or None, TargetName or None,
#: ShapeModel or None (an audit's scan only))
_Scanned = tuple[int, str, int | None, str | None, str | None]


def default_jobs() -> int:
    """The number of cores this process may run on (``jobs=0``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# ------------------------------------------------------------ worker tasks (module level: they pickle)


def identity_key(cube: str) -> int:
    """A number naming the file ``cube`` is (its device and inode; its absolute path when
    it cannot be stat'ed), the same in every process: scan tasks run in other processes
    (a process pool, Dask workers), whose ``hash()`` of a string differs from ours."""
    try:
        st = os.stat(cube)
        return (st.st_dev << 64) | st.st_ino
    except OSError:
        import zlib

        path = os.path.abspath(cube).encode("utf-8", "surrogateescape")
        return -1 - ((zlib.crc32(path) << 32) | zlib.adler32(path))  # (negative: never a device and inode)


def _entry_result(index: int, name: str, err: Exception) -> CubeResult:
    """A list entry that names no cube (the caller found it bad): reported as is."""
    return CubeResult(index, name, record(name, None, None, err), None, " ".join(str(err).split()))


def scan_chunk(entries: list[tuple[int, str]], want_target: bool,
               want_key: bool = True, shared: bool = False) -> list[tuple[int, int | None, str | None, str | None]]:
    """Task: (index, identity_key of the file or None, TargetName or None, ShapeModel or
    None) of each cube (``shared``: an audit's scan, read under a shared lock).  Never
    raises for a cube."""
    out = []
    for index, cube in entries:
        target = model = None
        if want_target:
            try:
                label = read_label(cube, shared=True) if shared else read_label(cube)
                target, model = label.target, label.shape_model
            except ShapeResolverError:
                pass  # the write task reports it
        out.append((index, identity_key(cube) if want_key else None, target, model))
    return out


# ------------------------------------------------------------ the client side


def _as_executor(executor: Any) -> cf.Executor:
    if isinstance(executor, cf.Executor):
        return executor
    if hasattr(executor, "get_executor"):  # distributed.Client
        return executor.get_executor(pure=False)  # type: ignore[no-any-return]
    raise UsageError(f"not an executor or a distributed.Client: {executor!r}")


def _stream(tasks: Tasks, fn: Callable[..., Any], calls: Iterable[tuple[Any, ...]],
            window: int) -> Iterator[tuple[tuple[Any, ...], cf.Future[Any]]]:
    """Submit ``fn(*args)`` for each ``args``, at most ``window`` not yet consumed at a
    time; yields (args, future) in submission order (the caller waits on the result).
    A consumed future is dropped, so finished results never pile up."""
    queue: deque[tuple[tuple[Any, ...], cf.Future[Any]]] = deque()
    todo = iter(calls)
    try:
        while True:
            for args in todo:
                queue.append((args, tasks.submit(fn, *args)))
                if len(queue) >= window:
                    break
            if not queue:
                return
            tasks.wait([queue[0][1]])  # (Ctrl-C is taken here)
            yield queue.popleft()
    finally:
        tasks.cancel(fut for _, fut in queue)


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


def _entries(cubes: Iterable[Entry]) -> Iterator[tuple[int, str] | CubeResult]:
    """Each list entry as (index, cube), or the result of one that names no cube."""
    for i, c in enumerate(cubes):
        if isinstance(c, tuple):
            yield _entry_result(i, c[0], c[1])
        else:
            yield i, os.fspath(c)


def run_batch(
    resolver: Resolver,
    cubes: Iterable[Entry],
    opts: BatchOptions = DEFAULT_OPTIONS,
    *,
    jobs: int = 1,
    executor: Any = None,
    chunk_size: int | None = None,
    processes: bool = False,
) -> Generator[CubeResult, None, None]:
    """Process ``cubes``; yields one :class:`CubeResult` per list entry, in input order.

    ``cubes`` is read as a stream (a generator of a million paths is fine; when it has a
    ``len()`` the chunks are sized from it).  Without ``executor`` the work runs on
    ``jobs`` threads of this process (``0``: one per core).  With one (any
    :class:`concurrent.futures.Executor` or a ``distributed.Client``) each body is
    resolved here once and the write tasks get the table.  ``processes=True`` runs the
    ``jobs`` workers as processes of this machine instead of threads (:mod:`.pool`: the
    command's ``jobs=N``; Python runs one thread at a time, so only processes make
    reading and scanning labels faster with more cores).  An entry may be a ``(name,
    error)`` pair (a list line that names no cube): it is reported with that error.
    Raises :class:`UsageError` for bad parameters before any cube is touched.
    """
    _check(resolver, opts)
    jobs = default_jobs() if jobs == 0 else jobs
    if jobs < 0:
        raise UsageError(f"jobs={jobs} must be 0 (one per core) or more")
    entries = _entries(cubes)
    if executor is None and jobs == 1:  # in order, here: nothing to group
        try:
            yield from in_order(resolver, opts, entries)
        except KeyboardInterrupt as exc:  # (nothing finished is held back: every result was given)
            if isinstance(exc, BatchInterrupted):
                raise
            raise BatchInterrupted([]) from None
        return
    known = len(cubes) if isinstance(cubes, Sized) else 0
    own: Any = None
    tasks: Tasks | None = None
    run: Generator[CubeResult, None, None] | None = None
    interrupts = Interrupts()
    completed = False
    with interrupts:  # (Ctrl-C is taken where the batch can act on it: see ..base.interrupts)
        interrupts.active = True
        try:  # (a Ctrl-C while the workers start still shuts them down)
            if executor is None and processes:
                from . import pool

                workers = min(jobs, known) if known else jobs
                own = pool.start(workers)
                tasks = Tasks(None, stop=own.stop, pool=own, interrupts=interrupts)
            elif executor is not None and _is_pool(executor):  # (the command's, kept for all its batches)
                tasks = Tasks(None, stop=executor.stop, pool=executor, interrupts=interrupts)
                workers = executor.workers
            elif executor is None:
                workers = jobs
                own = cf.ThreadPoolExecutor(jobs, thread_name_prefix="shaperesolver")
                tasks = Tasks(own, stop=threading.Event(), interrupts=interrupts)
            else:
                tasks = Tasks(_as_executor(executor), interrupts=interrupts)
                workers = _worker_count(executor)

            def size(seen: int) -> int:  # from the list's length, else from what was seen so far
                return chunk_size or _chunk_size(max(known, seen), workers)

            run = gen = _run(resolver, entries, opts, tasks, size, max(2, 4 * workers))
            thrown: KeyboardInterrupt | None = None
            while True:
                interrupts.active = True
                try:
                    result = next(gen) if thrown is None else gen.throw(thrown)
                except StopIteration:
                    break
                thrown = None
                interrupts.active = False  # (the program's code runs: its Ctrl-C is its own)
                try:
                    yield result
                except KeyboardInterrupt as exc:  # (there, or thrown in): the batch stops and says what it finished
                    interrupts.count = max(1, interrupts.count)
                    thrown = exc
            completed = True
        finally:
            interrupts.active = True
            if run is not None:
                run.close()
            hurry = lambda: interrupts.hurry  # noqa: E731
            if tasks is not None and tasks.pool is not None and own is None:
                tasks.pool.settle(hurry)  # (a borrowed pool: stopped early, the workers end their chunks between two cubes)
            elif tasks is not None and tasks.pool is not None:
                tasks.pool.close(hurry)  # (stopped early: the workers end their chunks between two cubes)
            elif tasks is not None and own is not None:
                tasks.stop.set()  # stopped early (Ctrl-C, a closed pipe): the threads end between two cubes
                own.shutdown(wait=True, cancel_futures=True)
    if completed and interrupts.count:  # (Ctrl-C after the last result was taken)
        raise BatchInterrupted([])


def _is_pool(executor: Any) -> bool:
    from .pool import Pool

    return isinstance(executor, Pool)


def _worker_count(executor: Any) -> int:
    n = getattr(executor, "_max_workers", None)
    if isinstance(n, int):
        return n
    try:
        info = executor.scheduler_info()  # distributed.Client
        return max(1, sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values()))
    except Exception:  # noqa: BLE001 - only a chunking hint
        return 8


def _scanned(tasks: Tasks, entries: Iterator[tuple[int, str] | CubeResult], size: Callable[[int], int],
             window: int, want_target: bool, want_key: bool, shared: bool) -> Generator[_Scanned | CubeResult, None, None]:
    """Step 1, streamed: the entries with their file identity, target and ShapeModel, in order."""
    if not (want_target or want_key):
        for e in entries:
            yield e if isinstance(e, CubeResult) else (e[0], e[1], None, None, None)
        return
    bad: deque[list[CubeResult]] = deque()  # the bad entries met with each chunk, in step with the calls

    def calls() -> Iterator[tuple[Any, ...]]:
        cur: list[tuple[int, str]] = []
        met: list[CubeResult] = []
        for seen, e in enumerate(entries, 1):
            if isinstance(e, CubeResult):
                met.append(e)
            else:
                cur.append(e)
            if len(cur) + len(met) >= size(seen):
                bad.append(met)
                yield (cur, want_target, want_key, shared)
                cur, met = [], []
        if cur or met:
            bad.append(met)
            yield (cur, want_target, want_key, shared)

    for (chunk, *_), fut in _stream(tasks, scan_chunk, calls(), window):
        yield from bad.popleft()
        try:
            scanned = tasks.take(fut) if chunk else []
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001 - a lost scan only costs the grouping
            log.warning("a scan task failed (%s); its cubes are resolved where they are written", why(exc))
            scanned = [(i, None, None, None) for i, _ in chunk]
        for (i, cube), (_, key, target, model) in zip(chunk, scanned):
            yield i, cube, key, target, model


class _Table:
    """Step 2: the shipped resolver, with every body met so far resolved here once."""

    def __init__(self, resolver: Resolver, opts: BatchOptions, shipped: bool) -> None:
        self.resolver, self.opts, self.shipped = resolver, opts, shipped
        self.web = opts.shape.lower() == "web"
        self.user = opts.shape.lower() == "user" and resolver.verify
        self.done: set[str] = set()
        self.checked: set[tuple[str, str]] = set()  # an audit's (ShapeModel, body) pairs checked here
        self.copy: Resolver | None = None
        self.sent_again: set[tuple[int, tuple[str, str | None]]] = set()  # (entry, body) sent again once resolved
        self.learned: set[tuple[str, str | None]] = set()  # the (target, pin) searches workers asked for

    def learn(self, index: int, needs: tuple[str, str | None]) -> bool:
        """A worker met a body not in the table (a web batch ships no scan of targets): resolve
        it here (once) and say whether the cube ``index`` should be sent again (once for each
        body it names: a cube given another body meanwhile is sent again for that one)."""
        if (index, needs) in self.sent_again or not self.web:
            return False
        self.sent_again.add((index, needs))
        name, pin = needs
        if (name, pin) not in self.learned:
            self.learned.add((name, pin))
            try:
                self.resolver.web_model(name, pin)
            except ShapeResolverError:
                pass  # remembered in the table; the cube falls back (or fails) on its own
            self.copy = None
        return True

    def for_chunk(self, chunk: list[_Scanned]) -> Resolver:
        """The resolver the chunk's task gets (threads here share ``resolver``, whose memo
        searches each body once; shipped tasks get a copy that never searches)."""
        if not self.shipped:
            return self.resolver
        names = {self.opts.target} if self.opts.target is not None else {e[3] for e in chunk if e[3]}
        new = sorted(n for n in names if n not in self.done) if (self.web or self.user) else []
        for name in new:
            self.done.add(name)
            try:
                if self.web:
                    self.resolver.web_model(name, self.opts.version)
                    if self.opts.audit:
                        self.resolver.known_models(name)
                else:
                    self.resolver.resolve(None, shape="user", model=self.opts.model, target=name)
            except ShapeResolverError:
                pass  # remembered in the table; each cube falls back (or fails) on its own
        models = self._audit_models(chunk) if self.opts.audit else []
        if new or models or self.copy is None:
            self.copy = _shippable(self.resolver)
        return self.copy

    def _audit_models(self, chunk: list[_Scanned]) -> list[tuple[str, str]]:
        """An audit: check here each model the chunk's cubes name, once (the results ship)."""
        from ..base import bodies

        new = []
        for *_, target, model in chunk:
            name = self.opts.target or target
            if not (model and name) or model.strip().upper() in ("", "NULL", "RINGPLANE"):
                continue
            pair = (model, bodies.canonical(name))
            if pair in self.checked:
                continue
            self.checked.add(pair)
            new.append(pair)
            try:
                self.resolver.models.check_named(*pair)
            except ShapeResolverError:
                pass  # remembered; the cube's audit says it
        return new


def _run(resolver: Resolver, entries: Iterator[tuple[int, str] | CubeResult], opts: BatchOptions,
         tasks: Tasks, size: Callable[[int], int], window: int) -> Generator[CubeResult, None, None]:
    table = _Table(resolver, opts, tasks.shipped)
    # (shipped: the bodies a user model is checked for, and an audit's models, come from a
    # scan first; a web body is learned from the first cube a worker meets it in, which is
    # sent again: most labels are read once)
    want_target = tasks.shipped and (table.user and opts.target is None or opts.audit)
    source = _scanned(tasks, entries, size, window, want_target, not (opts.dryrun or opts.audit), opts.audit)
    limit = window * MAX_CHUNK  # entries read ahead of the writes, at most
    done: dict[int, CubeResult] = {}
    nxt = 0
    inflight: dict[int, tuple[list[_Scanned], cf.Future[Any]]] = {}  # chunk number -> (its entries, its task)
    where: dict[int, int] = {}  # identity hash -> the in-flight chunk that holds it
    waiting: dict[int, list[_Scanned]] = {}  # chunk -> same-file entries to send once it is done
    ready: deque[_Scanned] = deque()  # entries whose earlier same-file chunk is done: they go first
    cur: list[_Scanned] = []
    keys: set[int] = set()
    held = seen = seq = 0  # entries read and not yet sent; entries read; chunks sent
    exhausted = False
    # (a shipped web batch learns its bodies from the first chunk that comes back: until then
    # one chunk is out, so the first window is not sent with an empty table and read twice)
    learning = tasks.shipped and table.web and opts.target is None

    def send() -> None:
        nonlocal cur, keys, held, seq
        seq += 1
        pairs = [(i, c) for i, c, *_ in cur]
        inflight[seq] = (cur, tasks.write(table.for_chunk(cur), opts, pairs))
        where.update((k, seq) for k in keys)
        held -= len(cur)
        cur, keys = [], set()

    finished: dict[int, tuple[list[_Scanned], list[_Scanned]]] = {}  # chunk -> (its entries, those to send again)
    released = 1  # the first chunk whose entries are not released yet
    try:
        while True:
            room = 1 if learning else window
            # (entries whose file is free again go first whatever is held; read on only while
            # what is held, and what waits to be yielded, stays within the limit)
            while len(inflight) < room and (ready or (held < limit and len(done) < limit)):
                e: _Scanned
                if ready:
                    e = ready.popleft()
                elif not exhausted:
                    got = next(source, None)
                    if got is None:
                        exhausted = True
                        break
                    seen += 1
                    if isinstance(got, CubeResult):
                        done[got.index] = got
                        continue
                    e = got
                    held += 1
                else:
                    break
                key = e[2]
                if key is not None and key not in keys and key in where:
                    waiting.setdefault(where[key], []).append(e)  # after the chunk that holds its file
                    continue
                cur.append(e)
                if key is not None:
                    keys.add(key)
                if len(cur) >= size(seen):
                    send()
            if cur and len(inflight) < room:
                send()
            while nxt in done:
                tasks.before(nxt)
                yield done.pop(nxt)
                nxt += 1
            if not inflight:
                if exhausted and not ready and not cur:
                    break
                continue
            # (results are taken as their tasks end, not in the order sent: one cube that waits
            # for a lock holds back nothing but its own chunk)
            ended = tasks.wait([f for _, f in inflight.values()], first=True,
                               timeout=LEARN_WAIT if learning else None)
            if not ended:  # (the first chunk is slow, e.g. a cube waits for a lock: the others need not wait)
                learning = False
                continue
            for n in sorted(n for n, (_, f) in inflight.items() if f in ended):
                chunk, fut = inflight[n]
                try:
                    results = tasks.take(fut, min(e[0] for e in chunk))
                except UsageError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the task is lost: say what each of its cubes holds now
                    results = [audit_failed(i, c, f"worker failed ({why(exc)})") if opts.audit
                               else reread(i, c, f"worker failed ({why(exc)})") for i, c, *_ in chunk]
                del inflight[n]
                again = [r.index for r in results if r.needs is not None and table.learn(r.index, r.needs)]
                sent = {e[0]: e for e in chunk}
                finished[n] = (chunk, [sent[i] for i in again])
                for r in results:
                    if r.index not in again:
                        done[r.index] = r
                learning = False
            # (in the order sent, whatever order the tasks ended in: a cube sent again, and the
            # entries of the same file that waited for a chunk, go out as they would at jobs=1)
            while released in finished:
                chunk, again_entries = finished.pop(released)
                for _, _, key, *_ in chunk:
                    if key is not None and where.get(key) == released:
                        del where[key]
                ready.extend(again_entries)  # (before the entries that waited for this chunk: they come later)
                ready.extend(waiting.pop(released, ()))
                released += 1
            while nxt in done:
                tasks.before(nxt)
                yield done.pop(nxt)
                nxt += 1
        for i in sorted(done):
            tasks.before(i)
            yield done[i]
        tasks.flush()
    except KeyboardInterrupt:
        raise BatchInterrupted(_finished(done, list(inflight.values()), tasks, opts)) from None
    finally:
        tasks.cancel(fut for _, fut in inflight.values())
        source.close()  # (its scan tasks not yet consumed are cancelled too)


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a batch; ``results`` are the cubes it finished and had not yet given
    (:func:`run_batch`: :class:`CubeResult`; :func:`iter_batch`: their records), or every
    record finished (:func:`write_batch`, :func:`audit_batch`)."""

    def __init__(self, results: list[Any]) -> None:
        super().__init__()
        self.results = results


def _finished(done: dict[int, CubeResult], running: list[tuple[list[_Scanned], cf.Future[Any]]], tasks: Tasks,
              opts: BatchOptions) -> list[CubeResult]:
    """After an interrupt: stop the tasks between two cubes, wait for the running ones,
    and return every finished result not yet yielded, in input order (a cube a worker
    gave back for its body was not touched: it is not among them).  Ctrl-C again: the
    tasks in hand are not waited for; a worker process's are killed, and each cube of
    their chunks is re-read and reported as it is now."""
    if tasks.stop is not None:
        tasks.stop.set()  # our threads or processes end their chunks after the cube in hand
    tasks.drain(tasks.cancel(f for _, f in running), None if tasks.stop is not None else DRAIN_WAIT)
    out = dict(done)
    tasks.flush()
    for chunk, f in running:
        if f.cancelled():
            continue
        if f.done() and f.exception() is None:
            out.update((r.index, r) for r in tasks.take(f) if r.needs is None)
        elif tasks.stop is None or tasks.pool is not None:
            # (killed in its worker's hands, or not waited for: say what each cube holds now;
            # a write cut short is finished or rolled back by this reading)
            why_text = ("interrupted: its worker process was stopped" if tasks.pool is not None
                        else "interrupted: its task was not waited for")
            out.update((i, audit_failed(i, c, why_text) if opts.audit else reread(i, c, why_text, lock_wait=REREAD_WAIT))
                       for i, c, *_ in chunk)
    return [out[i] for i in sorted(out)]


def _shippable(resolver: Resolver) -> Resolver:
    """A copy of ``resolver`` with everything it has resolved, that never searches."""
    state = resolver.__getstate__()
    state["searches_allowed"] = False
    copy = Resolver.__new__(Resolver)
    copy.__setstate__(state)
    return copy


def iter_batch(
    cubes: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
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
    audit: bool = False,
    processes: bool = False,
    **resolver_kwargs: Unpack[ResolverOptions],
) -> Generator[dict[str, Any], None, None]:
    """:func:`write_batch` for long lists: yields each record, in input order, as soon as
    it and all before it are done; memory does not grow with the list (``cubes`` may be
    a generator, e.g. the lines of a file).  ``audit=True`` yields :func:`audit_batch`'s
    records instead (nothing is written)."""
    opts = BatchOptions(shape=shape, model=model, target=target, version=version, dryrun=dryrun, audit=audit)
    if isinstance(cubes, (str, bytes, os.PathLike)):
        cubes = [os.fsdecode(cubes)]  # one cube, not its characters
    own = resolver is None
    r = resolver if resolver is not None else Resolver(**resolver_kwargs)
    try:
        results = run_batch(r, cubes, opts, jobs=jobs, executor=executor, chunk_size=chunk_size, processes=processes)
        try:
            for res in results:
                yield res.record
        except BatchInterrupted as exc:  # (its results as the records this yields)
            raise BatchInterrupted([res.record for res in exc.results]) from None
        finally:
            results.close()
    finally:
        if own:
            r.close()


def write_batch(
    cubes: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
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
    processes: bool = False,
    **resolver_kwargs: Unpack[ResolverOptions],
) -> list[dict[str, Any]]:
    """Resolve and write a ShapeModel into every cube; returns the records in input order.

    ``executor`` is a ``distributed.Client`` or any :class:`concurrent.futures.Executor`
    (cubes must be on a file system its workers see); without one the cubes are written
    by ``jobs`` threads here, or ``jobs`` worker processes with ``processes=True`` (what
    the command's ``jobs=N`` runs: reading labels is Python, and only processes make it
    use more cores; a script that uses them needs ``if __name__ == "__main__":``).  Each body is searched once.  ``resolver`` (else a new
    :class:`Resolver` from ``resolver_kwargs``) supplies the settings.  A failed cube has
    an ``error`` in its record and does not stop the others.  For a list too long to hold
    its records, :func:`iter_batch` yields them one by one.
    """
    return _all(iter_batch(cubes, executor, jobs=jobs, resolver=resolver, shape=shape, model=model, target=target,
                           version=version, dryrun=dryrun, chunk_size=chunk_size, processes=processes,
                           **resolver_kwargs))


def audit_batch(
    cubes: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    executor: Any = None,
    *,
    jobs: int = 1,
    resolver: Resolver | None = None,
    shape: Shape = "web",
    model: str | None = None,
    target: str | None = None,
    version: str | None = None,
    chunk_size: int | None = None,
    processes: bool = False,
    **resolver_kwargs: Unpack[ResolverOptions],
) -> list[dict[str, Any]]:
    """Audit every cube (:meth:`Resolver.audit <shaperesolver.Resolver.audit>`); returns
    the records in input order: ``cube``, ``target``, ``body``, ``current``, ``chosen``,
    ``status`` and ``reason``.  Nothing is written; each body is searched once and each
    model checked once, on threads, processes, an executor or a Dask cluster as :func:`write_batch`.
    For a list too long to hold its records: ``iter_batch(..., audit=True)``.
    """
    return _all(iter_batch(cubes, executor, jobs=jobs, resolver=resolver, shape=shape, model=model, target=target,
                           version=version, chunk_size=chunk_size, audit=True, processes=processes,
                           **resolver_kwargs))


def _all(records: Generator[dict[str, Any], None, None]) -> list[dict[str, Any]]:
    """Every record; Ctrl-C: :class:`BatchInterrupted` with every record finished (those
    already taken and those the batch finished before it stopped), in input order."""
    out: list[dict[str, Any]] = []
    try:
        for rec in records:
            out.append(rec)
    except BatchInterrupted as exc:
        raise BatchInterrupted(out + exc.results) from None
    except KeyboardInterrupt as exc:  # (here, between two records: the batch says what it finished)
        try:
            records.throw(exc)
        except BatchInterrupted as stopped:
            raise BatchInterrupted(out + stopped.results) from None
        except (KeyboardInterrupt, StopIteration):
            pass
        raise BatchInterrupted(out) from None
    return out
