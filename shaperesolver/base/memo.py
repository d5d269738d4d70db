"""A memo shared by threads: each key is made once, its error remembered too."""

from __future__ import annotations

from _thread import allocate_lock

from ..errors import ShapeResolverError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading
    from collections.abc import Callable
    from typing import Any

__all__ = ["Memo"]


class Memo:
    """``get(key, make)`` calls ``make()`` once per key, even across threads; a
    :class:`ShapeResolverError` it raises is remembered and raised again."""

    __slots__ = ("lock", "values", "key_locks")

    def __init__(self) -> None:
        self.lock: threading.Lock = allocate_lock()
        self.values: dict[Any, Any] = {}
        self.key_locks: dict[Any, threading.Lock] = {}

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        """``make()`` once per key (errors are remembered too), even across threads."""
        with self.lock:
            if key in self.values:
                return self._unwrap(self.values[key])
            klock = self.key_locks.setdefault(key, allocate_lock())
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
            import copy
            # a fresh copy, with no traceback: raising the remembered object again would grow
            # its traceback by every caller's frames (and keep their labels alive) for good
            raise copy.copy(value[1]).with_traceback(None) from None
        return value[1]
