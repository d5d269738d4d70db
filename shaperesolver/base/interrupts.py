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
"""

from __future__ import annotations

import signal

TYPE_CHECKING = False
if TYPE_CHECKING:  # (typing is not loaded at run time: a one-cube run does without it)
    from typing import Any

__all__ = ["Interrupts"]


class _Taken:
    """The handler: what it counted, and where a SIGINT goes now."""

    def __init__(self) -> None:
        self.total = 0  # every SIGINT
        self.count = 0  # those the batch took (and the ones handed to it)
        self.active = False
        self.hold = False
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
        self._saved: tuple[bool, bool] | None = None

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

    @property
    def hurry(self) -> bool:
        """Ctrl-C came again: do not wait for the tasks in hand."""
        return self._taken.count >= 2

    def hold(self) -> None:
        """From here a Ctrl-C waits for :meth:`release` (the command reports a cube)."""
        self._taken.hold = True

    def unhold(self) -> None:
        """Stop holding (a Ctrl-C held meanwhile is kept for the next :meth:`release`)."""
        self._taken.hold = False

    def release(self) -> None:
        """The Ctrl-C held since :meth:`hold`, if one came, as a ``KeyboardInterrupt`` here."""
        self._taken.hold = False
        if self._taken.held:
            self._taken.held = False
            raise KeyboardInterrupt
