"""A memo shared by threads: each key is made once, its error remembered too."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ShapeResolverError

__all__ = ["Memo"]


@dataclass
class Memo:
    """``get(key, make)`` calls ``make()`` once per key, even across threads; a
    :class:`ShapeResolverError` it raises is remembered and raised again."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    values: dict[Any, Any] = field(default_factory=dict)
    key_locks: dict[Any, threading.Lock] = field(default_factory=dict)

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        """``make()`` once per key (errors are remembered too), even across threads."""
        with self.lock:
            if key in self.values:
                return self._unwrap(self.values[key])
            klock = self.key_locks.setdefault(key, threading.Lock())
        with klock:
            with self.lock:
                if key in self.values:
                    return self._unwrap(self.values[key])
            try:
                value: Any = ("ok", make())
            except ShapeResolverError as exc:
                value = ("err", exc)
            with self.lock:
                self.values[key] = value
            return self._unwrap(value)

    def put(self, key: Any, value: Any) -> None:
        """Remember ``value`` for ``key`` unless one is already there."""
        with self.lock:
            self.values.setdefault(key, ("ok", value))

    def snapshot(self) -> dict[Any, Any]:
        """The values so far (ok or error), to ship with a pickled owner."""
        with self.lock:
            return dict(self.values)

    @staticmethod
    def _unwrap(value: tuple[str, Any]) -> Any:
        if value[0] == "err":
            # a fresh copy, with no traceback: raising the remembered object again would grow
            # its traceback by every caller's frames (and keep their labels alive) for good
            raise copy.copy(value[1]).with_traceback(None) from None
        return value[1]
