"""Value classes for the start of every run, without :mod:`dataclasses`' cost.

Importing :mod:`dataclasses` and building the classes a one-cube run needs with it took
more time than the rest of that run together (it loads :mod:`inspect`, and each class is
compiled from generated source).  The classes on that path derive from :class:`Record`
or :class:`Frozen` instead: each names its fields in ``__slots__`` (or, to keep its
defaults readable on the class, in ``_names``), in the order of its ``__init__``'s
parameters, and writes its own ``__init__`` (so type checkers see the signature).  The
rest follows from the fields, as a dataclass's would: ``repr``, ``==``, ``hash`` (frozen
ones), ``copy``, ``pickle``, weak references, ``match`` by position, and
:mod:`dataclasses`' own functions (``fields``, ``replace``, ``asdict``, ``is_dataclass``;
assigning to a frozen one raises ``FrozenInstanceError``): the fields a dataclass of the
same shape would have are made the first time something asks for them.  Classes off
that path stay dataclasses.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Record", "Frozen", "set_field"]

#: how a frozen record's ``__init__`` sets its fields
set_field = object.__setattr__

_FIELDS: dict[type, tuple[str, ...]] = {}
_DATACLASS = ("__dataclass_fields__", "__dataclass_params__")


def _fields(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = tuple(name for klass in reversed(cls.__mro__)
                      for name in (*klass.__dict__.get("__slots__", ()), *klass.__dict__.get("_names", ()))
                      if not name.startswith("__"))
        _FIELDS[cls] = names
    return names


def _as_dataclass(cls: type) -> None:
    """Give ``cls`` the ``__dataclass_fields__`` and ``__dataclass_params__`` of a dataclass
    with the same fields, defaults and flags (made with :func:`dataclasses.make_dataclass`)."""
    import dataclasses
    import inspect

    params = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    hidden, derived = getattr(cls, "_hidden", ()), getattr(cls, "_derived", ())
    spec: list[tuple[str, Any, Any]] = []
    for name in _fields(cls):
        given = params.get(name)
        kw: dict[str, Any] = {"repr": name not in hidden and name not in derived, "compare": name not in derived}
        if given is None:  # (a field the class fills itself, e.g. a cache)
            kw.update(init=False, default=None)
        elif given.default is not given.empty:
            kw["default"] = given.default
        spec.append((name, cls.__annotations__.get(name, "Any") if hasattr(cls, "__annotations__") else "Any",
                     dataclasses.field(**kw)))
    shadow = dataclasses.make_dataclass(cls.__name__, spec, frozen=issubclass(cls, Frozen), eq=True)
    for attr in _DATACLASS:
        type.__setattr__(cls, attr, getattr(shadow, attr))


class _Kind(type):
    """The type of records: answers :mod:`dataclasses`' questions about the class."""

    def __getattr__(cls, name: str) -> Any:
        if name in _DATACLASS and isinstance(cls, _Kind) and cls not in (Record, Frozen):
            _as_dataclass(cls)
            return type.__getattribute__(cls, name)
        raise AttributeError(f"type object {cls.__name__!r} has no attribute {name!r}")


class Record(metaclass=_Kind):
    """A mutable value: its fields are its ``__slots__``; equal when of one class with equal fields."""

    __slots__ = ("__weakref__",)
    #: fields left out of ``repr`` (long texts)
    _hidden: tuple[str, ...] = ()
    #: fields left out of ``==`` and ``hash`` too (what is derived from the others)
    _derived: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        type.__setattr__(cls, "__match_args__", _fields(cls))  # (match by position, as a dataclass)

    def __getattr__(self, name: str) -> Any:
        if name in _DATACLASS:  # (dataclasses.fields(instance) asks the instance)
            return getattr(type(self), name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

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


def _frozen(name: str) -> Exception:
    from dataclasses import FrozenInstanceError  # (an AttributeError; loaded only to be raised)

    return FrozenInstanceError(f"cannot assign to field {name!r}")


class Frozen(Record):
    """An immutable value (assigning a field raises ``FrozenInstanceError``); hashable."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise _frozen(name)

    def __delattr__(self, name: str) -> None:
        raise _frozen(name)

    def __hash__(self) -> int:
        return hash(self._compared())
