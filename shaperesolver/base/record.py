"""Value classes for the start of every run, without :mod:`dataclasses`' cost.

Importing :mod:`dataclasses` and building the classes a one-cube run needs with it took
more time than the rest of that run together (it loads :mod:`inspect`, and each class is
compiled from generated source).  The classes on that path derive from :class:`Record`
or :class:`Frozen` instead: each names its fields in ``__slots__`` (the order of its
``__init__``'s parameters) and writes its own ``__init__`` (so type checkers see the
signature); the rest (``repr``, ``==``, ``hash`` for frozen ones, ``copy`` and
``pickle``) follows from the fields here, as a dataclass's would.  Classes off that path
stay dataclasses.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Record", "Frozen", "set_field"]

#: how a frozen record's ``__init__`` sets its fields
set_field = object.__setattr__

_FIELDS: dict[type, tuple[str, ...]] = {}


def _fields(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = tuple(name for klass in reversed(cls.__mro__) for name in klass.__dict__.get("__slots__", ()))
        _FIELDS[cls] = names
    return names


class Record:
    """A mutable value: its fields are its ``__slots__``; equal when of one class with equal fields."""

    __slots__ = ()
    #: fields left out of ``repr`` (long texts)
    _hidden: tuple[str, ...] = ()
    #: fields left out of ``==`` and ``hash`` too (what is derived from the others)
    _derived: tuple[str, ...] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _fields(type(self)))

    def __repr__(self) -> str:
        shown = (f"{name}={getattr(self, name)!r}" for name in _fields(type(self))
                 if name not in self._hidden and name not in self._derived)
        return f"{type(self).__qualname__}({', '.join(shown)})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Record)
        return self._compared() == other._compared()

    def _compared(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _fields(type(self)) if name not in self._derived)

    # (no __hash__: defining __eq__ leaves a mutable record unhashable, as a dataclass is)

    def __getstate__(self) -> tuple[Any, ...]:
        return self._values()

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(_fields(type(self)), state, strict=True):
            set_field(self, name, value)


class Frozen(Record):
    """An immutable value (assigning a field raises ``AttributeError``); hashable."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a {type(self).__name__}")

    def __hash__(self) -> int:
        return hash(self._compared())
