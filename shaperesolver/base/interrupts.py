"""Ctrl-C, taken where the code that gets it can act on it.

A ``KeyboardInterrupt`` raised at any line is a hazard where that line is someone else's:
inside :mod:`concurrent.futures` it can leave one of its locks held (a wait that never
ends) or a result half taken (a write done and never reported); in the middle of a
cube's report it would leave the record, ``-log`` and the summary disagreeing.  One
SIGINT handler (:class:`Interrupts`, installed only over Python's own, in the main thread)
counts each Ctrl-C and says where it goes:

- **active** (a batch's own code): counted for the batch, which raises
  ``KeyboardInterrupt`` at its next wait (they poll) and, for a second one while it
  drains, stops waiting (``hurry``);
- **hold** (the command reporting a cube): kept, and raised when the cube is told;
- otherwise (the program's own code, e.g. between two results of a batch): a
  ``KeyboardInterrupt`` where it is, as Python does.

Nested (a batch inside the command's run), an :class:`Interrupts` shares the outer one's
handler and counts.

The command also takes SIGTERM (a batch system's ``scancel``, systemd, ``timeout``) and
SIGHUP (its terminal closed) as it takes Ctrl-C (:class:`Stops`): the batch stops between
two cubes, says what it did, and exits with 128 + the signal's number; a second one does
not wait.  A program using the API keeps those signals to itself.
"""

from __future__ import annotations

import signal

TYPE_CHECKING = False
if TYPE_CHECKING:  # (typing is not loaded at run time: a one-cube run does without it)
    from typing import Any

__all__ = ["STOPS", "Interrupts", "Stops"]

#: the signals the command takes as Ctrl-C (and its worker processes leave to it)
STOPS = ("SIGINT", "SIGTERM", "SIGHUP")


class _Taken:
    """The handler: what it counted, and where a SIGINT goes now."""

    def __init__(self) -> None:
        self.total = 0  # every SIGINT
        self.count = 0  # those the batch took (and the ones handed to it)
        self.active = False
        self.hold = 0  # holds in force (a cube's report inside the wait for the next result: two)
        self.held = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.total += 1
        if self.active:
            self.count += 1
        elif self.hold:
            self.held = True
        else:
            raise KeyboardInterrupt


class Interrupts:
    """See the module's text.  ``count``: the Ctrl-Cs a batch took; ``total``: all of them."""

    def __init__(self) -> None:
        self._taken = _Taken()
        self._old: Any = None
        self._saved: tuple[bool, int] | None = None

    def __enter__(self) -> Interrupts:
        handler = signal.getsignal(signal.SIGINT)
        if isinstance(handler, _Taken):
            self._taken, self._saved = handler, (handler.active, handler.hold)
        elif handler is signal.default_int_handler:
            try:
                self._old = signal.signal(signal.SIGINT, self._taken)
            except ValueError:  # not the main thread: only the main thread gets SIGINT
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None
        if self._saved is not None:
            self._taken.active, self._taken.hold = self._saved
            self._saved = None

    @property
    def total(self) -> int:
        return self._taken.total

    @property
    def count(self) -> int:
        return self._taken.count

    @count.setter
    def count(self, value: int) -> None:
        self._taken.count = value

    @property
    def active(self) -> bool:
        return self._taken.active

    @active.setter
    def active(self, value: bool) -> None:
        self._taken.active = value

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` here if the batch took a Ctrl-C."""
        if self._taken.count:
            raise KeyboardInterrupt

    def is_set(self) -> bool:
        """As a stop event (:func:`..policy.job.write_chunk`): the batch took a Ctrl-C."""
        return self._taken.count > 0

    @property
    def hurry(self) -> bool:
        """Ctrl-C came again: do not wait for the tasks in hand."""
        return self._taken.count >= 2

    def hold(self) -> None:
        """From here a Ctrl-C waits for :meth:`release` (the command reports a cube).  Holds
        nest: a Ctrl-C is raised when the outermost is released."""
        self._taken.hold += 1

    def unhold(self) -> None:
        """End a hold (a Ctrl-C held meanwhile is kept for the next :meth:`release`)."""
        self._taken.hold = max(0, self._taken.hold - 1)

    def release(self) -> None:
        """The Ctrl-C held since :meth:`hold`, if one came, as a ``KeyboardInterrupt`` here."""
        self.unhold()
        if not self._taken.hold and self._taken.held:
            self._taken.held = False
            raise KeyboardInterrupt


class Stops:
    """SIGTERM and SIGHUP taken as Ctrl-C is, for the command (see the module's text).

    Each goes to SIGINT's handler (an :class:`Interrupts`' when a batch runs, else a
    ``KeyboardInterrupt``); ``first`` is the number of the first that came, unless a
    Ctrl-C the batch took came before it.  Only signals left at their default are taken
    (under ``nohup`` SIGHUP stays ignored), and only in the main thread.

    Once the command has stopped (:meth:`calm`), more of them (and Ctrl-C) are ignored
    while it says so and exits; with ``keep`` (the program itself, which exits next) they
    stay ignored after the ``with``, so one that comes during Python's exit does not make
    the stop look like a death by that signal to a batch system.
    """

    def __init__(self, keep: bool = False) -> None:
        self.first: int | None = None
        self.keep = keep
        self._calm = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Stops:
        for name in STOPS[1:]:
            signum = getattr(signal, name)
            try:
                if signal.getsignal(signum) is signal.SIG_DFL:
                    self._old[signum] = signal.signal(signum, self._take)
            except ValueError:  # not the main thread
                break
        return self

    def __exit__(self, *exc: object) -> None:
        ignore = self.keep and self._calm
        for signum, old in self._old.items():
            signal.signal(signum, signal.SIG_IGN if ignore else old)
        self._old.clear()

    def calm(self) -> None:
        """The command has stopped: from here a stop signal or a Ctrl-C is ignored."""
        self._calm = True
        try:
            if signal.SIGINT not in self._old and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self._old[signal.SIGINT] = signal.signal(signal.SIGINT, self._take)
        except ValueError:  # not the main thread
            pass

    def _take(self, signum: int, frame: Any) -> None:
        if self._calm:
            return
        handler = signal.getsignal(signal.SIGINT)
        batch = handler if isinstance(handler, _Taken) else None
        if self.first is None and not (batch is not None and batch.total):  # (a Ctrl-C came first: it names the stop)
            self.first = signum
        if batch is None:
            raise KeyboardInterrupt
        batch(signal.SIGINT, frame)

    @property
    def name(self) -> str:
        """The first signal's name (``SIGTERM``), or ``""`` when none came."""
        return signal.Signals(self.first).name if self.first is not None else ""
