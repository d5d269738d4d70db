"""The types of a :class:`~shaperesolver.policy.resolver.Resolver`'s settings, for type
checkers and editors (:mod:`.options` holds the values and checks them at run time).

Apart from :mod:`.options` because building them loads :mod:`typing`, which a run does
not otherwise need.
"""

from __future__ import annotations

import os
from typing import Literal, TypedDict

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..net.settings import HttpSettings

__all__ = ["Shape", "Fallback", "CacheMode", "ResolverOptions"]

#: a ``shape=`` (any case is accepted at run time; type checkers see these)
Shape = Literal["web", "system", "ellipsoid", "ringplane", "user"]
Fallback = Literal["nomatch", "always", "never"]
CacheMode = Literal["yes", "no", "refresh"]


class ResolverOptions(TypedDict, total=False):
    """The settings of a :class:`~shaperesolver.Resolver`, as keyword arguments of
    :func:`~shaperesolver.resolve` and :func:`~shaperesolver.write_batch` (type checkers
    and editors complete and check them)."""

    url: str | None
    catalog: str | os.PathLike[str] | None
    collection: str
    cache: CacheMode
    cache_dir: str | os.PathLike[str] | None
    cache_ttl: float | None
    isisdata: str | os.PathLike[str] | None
    verify: bool | Literal["yes", "no"]
    fallback: Fallback
    http: HttpSettings | None
    gdal_options: dict[str, str] | None
    claim_wait: float | None
    lock_wait: float | None
