"""The command's ``jobs=N``: worker processes of this machine, so N cores read and write.

Reading and scanning labels is Python, and Python runs one thread at a time: threads
(the API's ``jobs=N``) overlap only the waits.  The command runs a batch on ``N``
processes instead (:func:`start`), started fresh (``spawn``: nothing of this process's
threads, locks or sockets is copied) and fed by :mod:`.batch` like any executor: each
task carries the batch's table, so workers never send a request.

What a worker owes the run that started it:

- **Ctrl-C** is the parent's: workers ignore SIGINT (blocked from the moment they are
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
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..base import log as _log

__all__ = ["Pool", "start"]

#: seconds between a worker's checks that its parent is still there
WATCH_EVERY = 0.5
#: seconds a worker whose parent is gone gives its cube in hand before it exits
ORPHAN_GRACE = 5.0

# ------------------------------------------------------------ in the worker

_stop: Any = None  # the run's stop event (a multiprocessing Event)
_messages: list[tuple[str, int, str, str | None, str | None]] = []


def _init(stop: Any, level: int | None, parent: int) -> None:
    """A worker's start: SIGINT ignored, the run's stop event, its log level, the watch."""
    global _stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # (a pending one is dropped: ignored)
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


class Pool:
    """``workers`` processes for one batch; ``stop`` asks their chunks to end between two cubes."""

    def __init__(self, workers: int) -> None:
        import multiprocessing

        self.ctx = multiprocessing.get_context("spawn")
        _quiet_tracker()
        self.workers = workers
        self.stop = self.ctx.Event()
        self.level = _log.shown()
        if self.level is None and "logging" in sys.modules:  # (the API, in a program that logs: the level it takes)
            self.level = sys.modules["logging"].getLogger(_log.ROOT).getEffectiveLevel()
        self.executor = self._start()

    def _start(self) -> cf.ProcessPoolExecutor:
        ex = cf.ProcessPoolExecutor(self.workers, mp_context=self.ctx, initializer=_init,
                                    initargs=(self.stop, self.level, os.getpid()))
        try:
            # start them all now, with SIGINT blocked: a worker starts with its parent's signal
            # mask, so a Ctrl-C during its start waits until it has chosen to ignore it (the
            # parent's own waits here too, and is taken when the mask is restored)
            old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                for _ in range(self.workers):
                    ex.submit(_ready)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
        except BaseException:  # (that Ctrl-C, or no process could start: none is left behind)
            self.stop.set()
            ex.shutdown(wait=True, cancel_futures=True)
            raise
        return ex

    def submit(self, fn: Callable[..., Any], *args: Any, stop: bool = False) -> cf.Future[Any]:
        try:
            return self.executor.submit(_task, fn, args, stop)
        except cf.process.BrokenProcessPool:
            # a worker died (killed, out of memory, a crash in a C library): the tasks it
            # broke say so for their cubes (each re-read and reported as it is now); the
            # rest of the batch goes on with fresh workers
            _log.get(__name__).warning("a worker process died; starting new ones (the cubes of the tasks it "
                                       "broke are reported as they are now)")
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = self._start()
            return self.executor.submit(_task, fn, args, stop)

    @staticmethod
    def take(fut: cf.Future[Any]) -> Any:
        """The task's value; its workers' messages are passed on here first."""
        value, messages = fut.result()
        if messages:
            replay(messages)
        return value

    def close(self) -> None:
        self.stop.set()
        self.executor.shutdown(wait=True, cancel_futures=True)


def _quiet_tracker() -> None:
    """Start multiprocessing's resource tracker (the process that removes the pool's named
    semaphores if this one dies) with its stderr on ``/dev/null``: after a ``kill -9`` it
    would tell the user's terminal, seconds after the prompt came back, that it cleaned up
    "leaked" semaphores, which is its job, not news."""
    from multiprocessing import resource_tracker

    try:
        saved = os.dup(2)
    except OSError:
        resource_tracker.ensure_running()  # (no stderr to keep it from)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        resource_tracker.ensure_running()  # (a no-op when it runs already)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


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
