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

import _thread
import signal

TYPE_CHECKING = False
if TYPE_CHECKING:  # (typing is not loaded at run time: a one-cube run does without it)
    from typing import Any

__all__ = ["STOPS", "Interrupts", "Stops"]

#: the signals the command takes as Ctrl-C (and its worker processes leave to it)
STOPS = ("SIGINT", "SIGTERM", "SIGHUP")


#: the command's :class:`Stops` while it runs (None for a program using the API)
_command: Stops | None = None


class _Taken:
    """The handler: what it counted, and where a SIGINT goes now."""

    def __init__(self) -> None:
        self.total = 0  # every SIGINT
        self.count = 0  # those the batch took (and the ones handed to it)
        self.active = False
        self.hold = 0  # holds in force (a cube's report inside the wait for the next result: two)
        self.held = False

    def __call__(self, signum: int, frame: Any) -> None:
        _arrived(signum, frame)
        self.total += 1
        if self.active:
            self.count += 1
        elif _command is not None and _command.stopping:  # (the command's stop unwinds: counted, not raised again)
            pass
        elif self.hold:
            self.held = True
        else:
            self.stop()

    @staticmethod
    def stop() -> None:
        """The ``KeyboardInterrupt`` of a stop.  In the command, more stop signals are
        then only counted while it unwinds: one raised again inside a clean-up or a
        finaliser (a connection pool's, at a garbage collection) cut that short and
        printed a traceback."""
        if _command is not None:
            _command.stopping = True
        raise KeyboardInterrupt


def _arrived(signum: int, frame: Any) -> None:
    """A stop signal's handler has started: the first to come names the command's stop.

    A signal that comes while another's handler runs has its handler run inside that one,
    possibly before the other's first line: it came second (its frame, or one just above
    it, is that handler's)."""
    command = _command
    if command is None or command.claimed:
        return
    depth = 0
    while frame is not None and depth < 4:
        if frame.f_code in _HANDLERS:
            return
        frame, depth = frame.f_back, depth + 1
    command.claimed = True
    command.first = None if signum == signal.SIGINT else signum


class Interrupts:
    """See the module's text.  ``count``: the Ctrl-Cs a batch took; ``total``: all of them."""

    def __init__(self) -> None:
        self._taken = _Taken()
        self._old: Any = None
        self._saved: tuple[bool, int] | None = None
        self._command: Stops | None = None  # the command's, this batch's signals go to

    def __enter__(self) -> Interrupts:
        handler = signal.getsignal(signal.SIGINT)
        shared = handler if isinstance(handler, _Taken) else _command.batch if _command is not None else None
        if shared is not None:
            self._taken, self._saved = shared, (shared.active, shared.hold)
        elif handler is signal.default_int_handler or (_command is not None and _command.owns(handler)):
            try:
                self._old = signal.signal(signal.SIGINT, self._taken)
            except ValueError:  # not the main thread: only the main thread gets SIGINT
                pass
        if _command is not None and _command.batch is None and _command.main == _thread.get_ident():
            # (the command's SIGTERM and SIGHUP come here too, SIGINT ignored or not (a
            # command started in the background of a shell has it ignored), and where the
            # command runs inside a program's batch, whose handler this one shares)
            self._command, _command.batch = _command, self._taken
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None
        if self._command is not None:
            self._command.batch, self._command = None, None
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
            _Taken.stop()

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
            _Taken.stop()


class Stops:
    """SIGTERM and SIGHUP taken as Ctrl-C is, for the command (see the module's text).

    Each goes to SIGINT's handler (an :class:`Interrupts`' when a batch runs, else a
    ``KeyboardInterrupt``); so does a Ctrl-C where no batch runs (a batch's
    :class:`Interrupts` takes SIGINT over while it runs).  ``first`` is the number of
    the first that came, None when that was a Ctrl-C.  Only signals left at their default
    are taken (under ``nohup`` SIGHUP stays ignored), and only in the main thread.

    While a stop unwinds (``stopping``: its ``KeyboardInterrupt`` was raised, here or by a
    batch's :class:`Interrupts`), more of them only count towards "do not wait"; once the
    command has stopped (:meth:`calm`), they (and Ctrl-C) are ignored while it says so and
    exits; with ``keep`` (the program itself, which exits next) they stay ignored after
    the ``with``, so one that comes during Python's exit does not make a finished run or
    a stop look like a death by that signal to a batch system.
    """

    def __init__(self, keep: bool = False) -> None:
        self.first: int | None = None
        self.claimed = False  # a stop signal came (``first``: which, if not Ctrl-C)
        self.keep = keep
        self.stopping = False
        self._calm = False
        self._old: dict[int, Any] = {}
        self._outer: Stops | None = None
        self.batch: _Taken | None = None  # the running batch's handler (:class:`Interrupts`)
        self.main = _thread.get_ident()

    def __enter__(self) -> Stops:
        global _command
        for name in STOPS:
            signum = getattr(signal, name)
            default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            try:
                if signal.getsignal(signum) is default:
                    self._old[signum] = signal.signal(signum, self._take)
            except ValueError:  # not the main thread
                break
        if self._old:
            self._outer, _command = _command, self
        return self

    def __exit__(self, *exc: object) -> None:
        global _command
        ignore = self.keep  # (the program exits next: a signal during Python's exit would kill it)
        for signum, old in self._old.items():
            signal.signal(signum, signal.SIG_IGN if ignore else old)
        if self._old and _command is self:
            _command = self._outer
        self._old.clear()

    def calm(self) -> None:
        """The command has stopped: from here a stop signal or a Ctrl-C is ignored."""
        self._calm = True

    def owns(self, handler: Any) -> bool:
        """Whether ``handler`` is this one's (a batch's :class:`Interrupts` takes SIGINT over from it)."""
        return bool(handler == self._take)

    def _take(self, signum: int, frame: Any) -> None:
        if self._calm:
            return
        _arrived(signum, frame)
        handler = signal.getsignal(signal.SIGINT)
        batch = self.batch if self.batch is not None else handler if isinstance(handler, _Taken) else None
        if batch is not None:
            batch(signal.SIGINT, frame)
        elif not self.stopping:  # (once it unwinds, counted by nobody: no batch waits any more)
            self.stopping = True
            raise KeyboardInterrupt

    @property
    def name(self) -> str:
        """The first signal's name (``SIGTERM``), or ``""`` when none came."""
        return signal.Signals(self.first).name if self.first is not None else ""


#: the handlers' code: a signal whose handler runs inside one of them came second (:func:`_arrived`)
_HANDLERS = frozenset({_Taken.__call__.__code__, _arrived.__code__, Stops._take.__code__})
