"""The command's ``jobs=N``: worker processes of this machine, so N cores read and write.

Reading and scanning labels is Python, and Python runs one thread at a time: threads
(the API's ``jobs=N``) overlap only the waits.  The command runs a batch on ``N``
processes instead (:func:`start`), started fresh (``spawn``: nothing of this process's
threads, locks or sockets is copied) and fed by :mod:`.batch` like any executor: each
task carries the batch's table, so workers never send a request.

What a worker owes the run that started it:

- **Ctrl-C** (and SIGTERM, SIGHUP) is the parent's: workers ignore them (blocked from the moment they are
  started, so one that comes while a worker is still loading is neither lost by the
  parent nor a traceback from the worker); the parent sets the shared stop event and
  each worker ends its chunk between two cubes, as threads do.
- **Its messages** are the run's: a worker logs at the command's level into a list that
  travels back with the task's results, and the parent passes them on where it takes the
  results, so they are shown (and repeats counted) as the parent's own.
- **It does not outlive the run**: a worker whose parent is gone (``kill -9``) stops
  after the cube in hand and exits; a cube it was writing keeps its old or its new label
  (the write's journal), as after any kill.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..base import log as _log
from ..base.interrupts import STOPS
from ..errors import UsageError

__all__ = ["Pool", "start"]

DEBUG = 10  # (logging.DEBUG, without importing logging)
_NO_START = ("the worker processes could not start ({why}): each one imports the program's main script, so a "
             "script that runs batches on processes (processes=True) must be a file (not stdin) and run them "
             "under `if __name__ == \"__main__\":`")

#: seconds between a worker's checks that its parent is still there
WATCH_EVERY = 0.5
#: seconds the command waits for its first worker process to start
START_WAIT = 120.0
#: seconds a second Ctrl-C still gives the workers before they are killed
HURRY_GRACE = 2.0
#: seconds between the command's checks while it waits for its workers to end
WAIT_POLL = 0.1
#: seconds a worker whose parent is gone gives its cube in hand before it exits
ORPHAN_GRACE = 5.0

# ------------------------------------------------------------ in the worker

_stop: Any = None  # the run's stop event (a multiprocessing Event)
_messages: list[tuple[str, int, str, str | None, str | None]] = []


def _stops() -> set[signal.Signals]:
    """The signals a worker leaves to its parent (Ctrl-C, SIGTERM, SIGHUP: :data:`..base.interrupts.STOPS`)."""
    return {getattr(signal, name) for name in STOPS}


def _init(stop: Any, level: int | None, parent: int) -> None:
    """A worker's start: the stop signals ignored (sent to the whole group, by a terminal
    or a batch system, they are the parent's to act on: it ends the workers between two
    cubes), the run's stop event, its log level, the watch."""
    global _stop
    for signum in _stops():
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _stops())  # (one pending is dropped: ignored)
    _stop = stop
    if level is not None:
        _log.configure(level, _capture(level))
    threading.Thread(target=_watch, args=(parent,), name="shaperesolver-watch", daemon=True).start()


def _capture(level: int) -> Callable[[Any], None]:
    def setup(logging: Any) -> None:
        class Keep(logging.Handler):  # type: ignore[misc]
            def emit(self, record: Any) -> None:
                args = record.args if isinstance(record.args, tuple) else ()
                first = args[0] if args and isinstance(args[0], str) else None
                text = None
                if record.exc_info:
                    text = logging.Formatter().formatException(record.exc_info)
                _messages.append((record.name, record.levelno, record.getMessage(), first, text))

        logger = logging.getLogger(_log.ROOT)
        logger.handlers[:] = [Keep(level)]
        logger.setLevel(level)
        logger.propagate = False

    return setup


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_EVERY)
    _stop.set()  # (the run is gone: no one else waits on it)
    time.sleep(ORPHAN_GRACE)
    os._exit(1)


def _task(fn: Callable[..., Any], args: tuple[Any, ...], stop: bool) -> tuple[Any, list[Any]]:
    """Run ``fn(*args)`` (``stop``: with the run's stop event last); (its value, its messages)."""
    del _messages[:]
    try:
        value = fn(*args, _stop) if stop else fn(*args)
        return value, list(_messages)
    finally:
        del _messages[:]


def _ready() -> None:
    """A task that only makes the pool start a worker."""


# ------------------------------------------------------------ in the parent


def _first_up(started: list[cf.Future[Any]]) -> cf.Future[Any] | None:
    """The first worker to start (it says whether they can start at all: one that re-runs
    a script without the ``__main__`` guard fails at once, and so do they all), or None
    after :data:`START_WAIT`.

    A stop signal meanwhile is taken as it comes (they were blocked for this wait, tens of
    ms, and then came lowest number first, whatever their order: SIGTERM then SIGHUP was
    named SIGHUP).  It is counted, not raised inside the pool's code; where a batch takes
    it (as it would have been), the wait goes on, else it ends the wait and is raised here."""
    from ..base.interrupts import Interrupts

    with Interrupts() as keys:
        taken, seen = keys.active, keys.count
        keys.active = True
        try:
            deadline = time.monotonic() + START_WAIT
            up: set[cf.Future[Any]] = set()
            while not up and (taken or keys.count == seen) and time.monotonic() < deadline:
                up, _ = cf.wait(started, timeout=0.05, return_when=cf.FIRST_COMPLETED)
        finally:
            keys.active = taken
        if keys.count > seen and not taken:
            keys.check()
    return next(iter(up), None)


class Pool:
    """``workers`` processes for one batch (or the command's batches, one after the other);
    ``stop`` asks their chunks to end between two cubes."""

    def __init__(self, workers: int) -> None:
        from .spawn import Context

        self.ctx = Context()  # (spawn; a broken pool's workers are killed: they ignore SIGTERM)
        _quiet_tracker()
        self.workers = workers
        self.stop = self.ctx.Event()
        self.level = _log.shown()
        if self.level is None and "logging" in sys.modules:  # (the API, in a program that logs: the level it takes)
            self.level = sys.modules["logging"].getLogger(_log.ROOT).getEffectiveLevel()
        self._pending: set[cf.Future[Any]] = set()  # the tasks not yet done (:meth:`settle`)
        self.executor: cf.ProcessPoolExecutor | None = self._start()

    def _start(self) -> cf.ProcessPoolExecutor:
        ex = cf.ProcessPoolExecutor(self.workers, mp_context=self.ctx, initializer=_init,
                                    initargs=(self.stop, self.level, os.getpid()))
        try:
            # start them all now, with the stop signals blocked: a worker starts with its parent's signal
            # mask, so a Ctrl-C during its start waits until it has chosen to ignore it (the
            # parent's own is taken when the mask is restored, a few ms later)
            old = signal.pthread_sigmask(signal.SIG_BLOCK, _stops())
            try:
                with _quiet_stderr(self.level is None or self.level > DEBUG):
                    started = [ex.submit(_ready) for _ in range(self.workers)]
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
            first = _first_up(started)
            if first is None:
                raise UsageError(f"the worker processes did not start within {START_WAIT:g} s")
            if first.exception() is not None:
                raise UsageError(_NO_START.format(why=type(first.exception()).__name__))
            _log.get(__name__).debug("started %d worker processes", self.workers)
        except BaseException:  # (that Ctrl-C, or no process could start: none is left behind)
            self.stop.set()
            self._shut(ex, lambda: True)
            raise
        return ex

    def submit(self, fn: Callable[..., Any], *args: Any, stop: bool = False) -> cf.Future[Any]:
        if self.executor is None:
            self.executor = self._start()
        try:
            fut = self.executor.submit(_task, fn, args, stop)
        except cf.process.BrokenProcessPool:
            # a worker died (killed, out of memory, a crash in a C library): the tasks it
            # broke say so for their cubes (each re-read and reported as it is now); the
            # rest of the batch goes on with fresh workers
            _log.get(__name__).warning("a worker process died; starting new ones (the cubes of the tasks it "
                                       "broke are reported as they are now)")
            self._shut(self.executor, lambda: False)
            self.executor = self._start()
            fut = self.executor.submit(_task, fn, args, stop)
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)
        return fut

    @staticmethod
    def take(fut: cf.Future[Any]) -> tuple[Any, list[Any]]:
        """The task's value and the messages its worker logged (:func:`replay` passes them on)."""
        value, messages = fut.result()
        return value, messages

    @staticmethod
    def replay(messages: list[Any]) -> None:
        """Pass on a task's messages (:func:`replay`)."""
        replay(messages)

    def kill(self) -> None:
        """Stop the workers now (a second Ctrl-C): a cube one was writing keeps its old or its
        new label (the write's journal), as after any ``kill -9``."""
        if self.executor is not None:
            _kill(list((getattr(self.executor, "_processes", None) or {}).values()))

    def settle(self, hurry: Callable[[], bool] = lambda: False) -> None:
        """A batch that borrowed the pool is over (maybe stopped early): its tasks still running
        end between two cubes (``hurry()``: they are killed), and the pool is ready for the next batch."""
        if self._pending:
            self.stop.set()
            while self._pending and not hurry():
                cf.wait(list(self._pending), timeout=WAIT_POLL)
            if self._pending:  # (asked again: the cubes in hand are not waited for)
                self._shut(self.executor, lambda: True)
                self.executor = None  # (new workers for a next batch, if there is one)
        self.stop.clear()

    def close(self, hurry: Callable[[], bool] = lambda: False) -> None:
        """Stop the workers (between two cubes) and wait for them; ``hurry()`` (Ctrl-C again),
        or a Ctrl-C here, kills them."""
        self.stop.set()
        if self.executor is not None:
            self._shut(self.executor, hurry)
            self.executor = None

    @staticmethod
    def _shut(ex: cf.ProcessPoolExecutor | None, hurry: Callable[[], bool]) -> None:
        # (never hangs: a worker that waits on a lock or is stopped is killed on ``hurry()``
        # or on a Ctrl-C here; its tasks were not cancelled, so the pool's own thread marks
        # them broken cleanly; the workers are reaped before this returns, so Python's exit
        # has none left to wait for)
        if ex is None:
            return
        procs = list((getattr(ex, "_processes", None) or {}).values())
        while True:
            try:
                ex.shutdown(wait=False)  # (the stop event is set: queued tasks end at once)
                hurried: float | None = None
                while any(p.is_alive() for p in procs):
                    if hurry():  # (after a grace: one sending its result is not cut in the middle of it)
                        hurried = time.monotonic() if hurried is None else hurried
                        if time.monotonic() - hurried >= HURRY_GRACE:
                            _kill(procs)
                    time.sleep(WAIT_POLL / 2)
                ex.shutdown(wait=True)
                return
            except KeyboardInterrupt:
                hurry = lambda: True  # noqa: E731

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _kill(procs: list[Any]) -> None:
    for proc in procs:
        try:
            proc.kill()
        except (OSError, ValueError, AttributeError):
            pass  # (gone already)


@contextlib.contextmanager
def _quiet_stderr(quiet: bool) -> Iterator[None]:
    """Start the workers with their stderr on ``/dev/null`` (``quiet``; everything a worker
    has to say travels back with its results): a script that starts them without the
    ``if __name__ == "__main__":`` guard gets one line (:data:`_NO_START`), not a traceback
    from every worker that re-ran it.  (This process's own stderr is back when the workers
    have been started.)"""
    if not quiet:
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _quiet_tracker() -> None:
    """Start multiprocessing's resource tracker (the process that removes the pool's named
    semaphores if this one dies) with its stderr on ``/dev/null``: after a ``kill -9`` it
    would tell the user's terminal, seconds after the prompt came back, that it cleaned up
    "leaked" semaphores, which is its job, not news.

    It is started with SIGHUP ignored as well (it ignores SIGINT and SIGTERM itself): a
    closed terminal's SIGHUP reaches the whole group, and a tracker it killed is started
    again by the next release of a semaphore, which the new one never saw registered (a
    traceback per semaphore on the user's terminal).  SIGHUP stays blocked meanwhile, so
    one that comes now is this process's, once its handler is back."""
    from multiprocessing import resource_tracker

    hup = getattr(signal, "SIGHUP", None)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {hup}) if hup else None
    try:
        try:
            old = signal.signal(hup, signal.SIG_IGN) if hup else None
        except ValueError:  # (not the main thread: the tracker keeps SIGHUP's default)
            hup = old = None
        try:
            with _quiet_stderr(True):
                resource_tracker.ensure_running()  # (a no-op when it runs already)
        finally:
            if hup:
                signal.signal(hup, old)
    finally:
        if old_mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def replay(messages: list[tuple[str, int, str, str | None, str | None]]) -> None:
    """Pass on messages a worker logged, as records of the same logger, level and text
    (the cube a message starts with stays its first argument, as the repeat count wants)."""
    logging = _log.attach()
    for name, level, text, first, exc_text in messages:
        logger = logging.getLogger(name)
        if not logger.isEnabledFor(level):
            continue
        args: tuple[str, ...]
        if first is not None and text.startswith(f"{first}: "):
            msg, args = "%s: %s", (first, text[len(first) + 2 :])
        else:
            msg, args = "%s", (text,)
        rec = logger.makeRecord(name, level, "(worker)", 0, msg, args, None)
        rec.exc_text = exc_text
        logger.handle(rec)


def start(workers: int) -> Pool:
    """A pool of ``workers`` started processes."""
    return Pool(workers)
