"""The worker processes' start method: ``spawn``, with ``terminate()`` that kills.

A worker ignores SIGTERM, as it ignores Ctrl-C and SIGHUP: sent to the whole process
group (``scancel``, ``timeout``, a closed terminal) they are the parent's to act on, and
it ends the workers between two cubes.  But ``concurrent.futures`` ends the workers of a
broken pool (one died) with ``Process.terminate()``, SIGTERM: a worker that ignores it
would live on, blocked writing a result nobody reads, and the pool's join would wait for
it forever.  Here ``terminate()`` sends SIGKILL; a cube the worker was writing keeps its
old or its new label through the journal.
"""

from __future__ import annotations

from multiprocessing import context

__all__ = ["Context"]


class Process(context.SpawnProcess):
    """A spawned worker whose :meth:`terminate` is :meth:`kill`."""

    def terminate(self) -> None:
        self.kill()


class Context(context.SpawnContext):
    """The ``spawn`` context, making :class:`Process` workers."""

    Process = Process
