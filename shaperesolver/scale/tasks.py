"""Where a batch's tasks run, and how its waits take Ctrl-C.

:class:`Tasks` runs a batch's tasks on this process's threads (they share the resolver
and may be stopped), on the command's worker processes (:mod:`.pool`) or on any other
executor (a Dask cluster's); in the last two the table travels with the tasks.

Its waits poll, and take Ctrl-C (:mod:`..base.interrupts`) where the batch can act on it.
"""

from __future__ import annotations

import concurrent.futures as cf
import heapq
import itertools
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..base.interrupts import Interrupts
from ..policy.job import BatchOptions, write_chunk
from ..policy.resolver import Resolver
from .pool import HURRY_GRACE

__all__ = ["Tasks"]

#: seconds between a batch's checks for Ctrl-C while it waits for its tasks
POLL = 0.1


class Tasks:
    """A batch's tasks: ``submit``, ``write``, ``wait`` (polls, and takes Ctrl-C), ``take``."""

    def __init__(self, ex: cf.Executor | None, *, stop: Any = None, pool: Any = None,
                 interrupts: Interrupts | None = None) -> None:
        self.ex, self.stop, self.pool = ex, stop, pool
        self.interrupts = interrupts or Interrupts()
        self.shipped = pool is not None or stop is None
        self._said: list[tuple[int, int, list[Any]]] = []  # a heap of (first entry, arrival, messages) held back
        self._order = itertools.count()

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future[Any]:
        if self.pool is not None:
            return self.pool.submit(fn, *args)  # type: ignore[no-any-return]
        assert self.ex is not None
        return self.ex.submit(fn, *args)

    def write(self, resolver: Resolver, opts: BatchOptions, pairs: list[tuple[int, str]]) -> cf.Future[Any]:
        """A write task; with a stop event of ours, it ends between two cubes once that is set."""
        if self.pool is not None:
            return self.pool.submit(write_chunk, resolver, opts, pairs, stop=True)  # type: ignore[no-any-return]
        assert self.ex is not None
        if self.stop is not None:
            return self.ex.submit(write_chunk, resolver, opts, pairs, self.stop)
        return self.ex.submit(write_chunk, resolver, opts, pairs)

    def cancel(self, futures: Iterable[cf.Future[Any]]) -> list[cf.Future[Any]]:
        """Cancel the tasks not yet started; the ones that still run.  Worker processes'
        tasks are not cancelled: they end at once on the stop event (a cancelled task of a
        pool whose workers are then killed makes the pool's own thread fail)."""
        if self.pool is not None:
            return list(futures)
        return [f for f in futures if not f.cancel()]

    def wait(self, futures: Iterable[cf.Future[Any]], first: bool = False,
             timeout: float | None = None) -> set[cf.Future[Any]]:
        """The futures done when the first one (``first``) or all are, or when ``timeout``
        passed; raises ``KeyboardInterrupt`` here on Ctrl-C (see the module's text)."""
        pending = set(futures)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.interrupts.check()
            left = POLL if deadline is None else min(POLL, max(0.0, deadline - time.monotonic()))
            done, pending = cf.wait(pending, timeout=left,
                                    return_when=cf.FIRST_COMPLETED if first else cf.ALL_COMPLETED)
            if (done and first) or not pending:
                return set(futures) - pending
            if deadline is not None and time.monotonic() >= deadline:
                return set(futures) - pending

    def drain(self, futures: list[cf.Future[Any]], limit: float | None) -> None:
        """After Ctrl-C: wait for the running tasks (at most ``limit`` seconds), unless Ctrl-C
        comes again (then worker processes are killed; another executor's are left)."""
        deadline = None if limit is None else time.monotonic() + limit
        pending = set(futures)
        # (this process's threads are waited for whatever comes: they end between two cubes,
        # and cannot be stopped sooner)
        threads = self.pool is None and self.stop is not None
        hurried: float | None = None
        while pending:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return
            if self.interrupts.hurry and not threads:
                # (a grace first: a worker that is sending its result is not killed in the
                # middle of it, which would leave the pool's reader waiting for the rest)
                hurried = now if hurried is None else hurried
                if self.pool is None or now - hurried >= HURRY_GRACE:
                    break
            try:
                _, pending = cf.wait(pending, timeout=POLL)
            except KeyboardInterrupt:  # (a program that keeps SIGINT to itself: its second Ctrl-C)
                self.interrupts.count = max(2, self.interrupts.count + 1)
        if pending and self.pool is not None:
            self.pool.kill()
            cf.wait(pending, timeout=10)  # (the pool marks their tasks broken)

    def take(self, fut: cf.Future[Any], first: int | None = None) -> Any:
        """The task's value.  A worker process's messages are passed on now, or (``first``:
        the lowest list index of a write chunk) just before that entry's result is given
        (:meth:`before`): tasks end in any order, and the run says things in the order of
        its list, as ``jobs=1`` does."""
        if self.pool is None:
            return fut.result()
        value, messages = self.pool.take(fut)
        if first is None:
            self.pool.replay(messages)
        elif messages:
            heapq.heappush(self._said, (first, next(self._order), messages))
        return value

    def before(self, index: int) -> None:
        """Pass on the messages of the chunks whose first entry is ``index`` or earlier."""
        while self._said and self._said[0][0] <= index:
            self.pool.replay(heapq.heappop(self._said)[2])

    def flush(self) -> None:
        """Pass on every message held back (an interrupted batch)."""
        self.before(sys.maxsize)
