"""shaperesolver: choose the shape model (DEM) for ISIS cubes and write it into their labels.

Quick use from a processing chain::

    from shaperesolver import Resolver

    with Resolver() as r:                      # one session, cache and settings
        res = r.resolve("image.cub")           # web -> SYSTEM -> ellipsoid
        r.write(res)                           # splice IsisCube > Kernels > ShapeModel
        ds = r.open_model(res)                 # the DEM as a gdal.Dataset

Importing the package reads no environment variable and touches no disk or network.
The names below load their room on first use (PEP 562), so a run imports only what
it uses.
"""

from __future__ import annotations

import sys

from ._version import __version__
from .errors import (  # the whole exception tree is public
    CatalogError,
    CubeChangedError,
    CubeLockedError,
    CubeNotFoundError,
    DataAreaError,
    InvalidValueError,
    JournalError,
    KernelDbError,
    LabelError,
    LabelFullError,
    LabelSyntaxError,
    LabelWriteError,
    MirrorError,
    MissingTargetError,
    ModelError,
    ModelMissingError,
    ModelUnreachableError,
    NoAnswerError,
    NoMatchError,
    NotACubeError,
    ReadOnlyCubeError,
    ShapeResolverError,
    StacShapeError,
    UnsafeFileError,
    UsageError,
    VersionNotFoundError,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .base.bodies import Body, canonical, lookup
    from .cube.label import CubeLabel, WriteOutcome, read_label, write_shape_model
    from .net.settings import HttpSettings
    from .policy.audit import Audit
    from .policy.resolver import DEFAULT_COLLECTION, DEFAULT_URL, Resolution, ResolutionError, Resolver, resolve
    from .policy.types import ResolverOptions, Shape
    from .scale.batch import audit_batch, iter_batch, write_batch

if "logging" in sys.modules:  # (else base.log adds it before the first message is passed on)
    from .base import log as _log

    _log.attach()

#: public name -> the module that defines it (imported when the name is first used)
_LAZY = {
    "Body": "base.bodies", "canonical": "base.bodies", "lookup": "base.bodies",
    "CubeLabel": "cube.label", "WriteOutcome": "cube.label", "read_label": "cube.label",
    "write_shape_model": "cube.label",
    "HttpSettings": "net.settings",
    "DEFAULT_COLLECTION": "policy.resolver", "DEFAULT_URL": "policy.resolver", "Resolution": "policy.resolver",
    "ResolutionError": "policy.resolver", "Resolver": "policy.resolver", "resolve": "policy.resolver",
    "write_batch": "scale.batch", "iter_batch": "scale.batch", "audit_batch": "scale.batch",
    "Audit": "policy.audit",
    "Shape": "policy.types", "ResolverOptions": "policy.types",
}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{where}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


# a literal list (type checkers read it; tests/test_first_hour.py checks it against errors.__all__ and _LAZY)
__all__ = [
    "__version__",
    "Body",
    "canonical",
    "lookup",
    "CubeLabel",
    "WriteOutcome",
    "read_label",
    "write_shape_model",
    "Resolver",
    "Resolution",
    "ResolutionError",
    "resolve",
    "write_batch",
    "iter_batch",
    "audit_batch",
    "Audit",
    "HttpSettings",
    "DEFAULT_URL",
    "DEFAULT_COLLECTION",
    "Shape",
    "ResolverOptions",
    # the exception tree (errors.__all__)
    "ShapeResolverError",
    "LabelError",
    "NotACubeError",
    "CubeNotFoundError",
    "LabelSyntaxError",
    "MissingTargetError",
    "LabelWriteError",
    "LabelFullError",
    "ReadOnlyCubeError",
    "InvalidValueError",
    "UsageError",
    "CatalogError",
    "StacShapeError",
    "ModelError",
    "KernelDbError",
    "DataAreaError",
    "VersionNotFoundError",
    "NoMatchError",
    "NoAnswerError",
    "ModelUnreachableError",
    "ModelMissingError",
    "UnsafeFileError",
    "JournalError",
    "CubeChangedError",
    "CubeLockedError",
    "MirrorError",
]
