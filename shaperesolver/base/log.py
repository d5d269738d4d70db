"""The package's loggers, without :mod:`logging`'s import cost on a run that says nothing.

Every module logs through :func:`get` (``log = get(__name__)``), whose logger has the
methods of a :class:`logging.Logger` that library code uses.  It loads :mod:`logging`
only when a message could reach someone:

- the program has imported :mod:`logging` itself (it may have configured handlers, as
  pytest's ``caplog`` or a processing chain's ``basicConfig`` do): every message is
  passed on, exactly as through ``logging.getLogger(name)``;
- the command line has asked for the package's messages (:func:`configure`): the
  messages at or above its level load :mod:`logging` and its handler, the rest are
  dropped where they are made.

Otherwise nobody has a handler, and the package's ``NullHandler`` would drop the message
anyway.  That ``NullHandler`` is on the package logger before any message is passed on
(and at import when :mod:`logging` is already loaded), so library use stays silent
unless the program configures logging.  Imports only :mod:`sys` and :mod:`_thread`.
"""

from __future__ import annotations

import sys
from _thread import RLock

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from collections.abc import Callable
    from typing import Any

__all__ = ["DEBUG", "INFO", "WARNING", "ERROR", "Logger", "get", "configure", "attach", "shown"]

ROOT = "shaperesolver"
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40

_lock = RLock()  # (re-entrant: the setup may log)
_attached = False
#: the command line's setup, run when logging loads (None: none asked for)
_pending: Callable[[Any], None] | None = None
#: the lowest level the command line shows (None: it has not asked)
_shown: int | None = None


def attach() -> Any:
    """Load :mod:`logging`, put the ``NullHandler`` on the package logger and run the
    command line's pending setup (once); the :mod:`logging` module."""
    global _attached, _pending
    import logging

    with _lock:  # (the setup runs under the lock: no thread logs before the handler is there)
        if not _attached:
            _attached = True
            logging.getLogger(ROOT).addHandler(logging.NullHandler())
        setup, _pending = _pending, None
        if setup is not None:
            setup(logging)
    return logging


def configure(level: int, setup: Callable[[Any], None]) -> None:
    """The command line's output: messages at ``level`` or above are shown, through the
    handlers ``setup(logging)`` installs when the first of them is made (at once when
    :mod:`logging` is already loaded)."""
    global _pending, _shown
    with _lock:
        _pending, _shown = setup, level
    if "logging" in sys.modules:
        attach()


def shown() -> int | None:
    """The lowest level the command line shows (None: it has not asked)."""
    return _shown


class Logger:
    """A package logger: :class:`logging.Logger`'s debug/info/warning/error/exception."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def enabled(self, level: int) -> bool:
        """Whether a message at ``level`` would be passed on (``isEnabledFor`` once loaded)."""
        if "logging" in sys.modules or (_shown is not None and level >= _shown):
            return bool(attach().getLogger(self.name).isEnabledFor(level))
        return False

    def _log(self, level: int, msg: object, args: tuple[object, ...], kwargs: dict[str, Any]) -> None:
        if "logging" not in sys.modules and (_shown is None or level < _shown):
            return
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 2  # (the caller's line, not this one)
        logger: logging.Logger = attach().getLogger(self.name)
        logger.log(level, msg, *args, **kwargs)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._log(DEBUG, msg, args, kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._log(INFO, msg, args, kwargs)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._log(WARNING, msg, args, kwargs)

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._log(ERROR, msg, args, kwargs)

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        kwargs.setdefault("exc_info", True)
        self._log(ERROR, msg, args, kwargs)


def get(name: str) -> Logger:
    """The logger for module ``name`` (a child of the package logger)."""
    return Logger(name)
