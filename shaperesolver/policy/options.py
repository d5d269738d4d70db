"""What a :class:`~shaperesolver.policy.resolver.Resolver` accepts: the constants of the policy
and the checks of its settings (each wrong one a :class:`UsageError` naming it).

Light on purpose: the command line's parameter table reads it before anything heavy loads.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Literal, TypedDict

if TYPE_CHECKING:
    from ..cube.label import CubeLabel
    from ..net.settings import HttpSettings

from ..errors import UsageError, shorten

__all__ = ["DEFAULT_URL", "DEFAULT_COLLECTION", "SHAPES", "Shape", "FALLBACKS", "Fallback", "CacheMode",
           "ResolverOptions", "NULL", "SKY", "RINGPLANE", "RING_PROJECTIONS", "ring_observation", "yes_no", "one_of", "check_types", "seconds"]

DEFAULT_URL = "https://astrogeology.usgs.gov/apis/isis-stac/"
DEFAULT_COLLECTION = "isis-global-dtms"
SHAPES = ("web", "system", "ellipsoid", "ringplane", "user")
#: a ``shape=`` (any case is accepted at run time; type checkers see these)
Shape = Literal["web", "system", "ellipsoid", "ringplane", "user"]
#: when the web step may give way to SYSTEM and the ellipsoid (see the module docstring)
FALLBACKS = ("nomatch", "always", "never")
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

NULL = "Null"
SKY = "SKY"
RINGPLANE = "RingPlane"
#: Mapping projections of ring observations (ISIS's ring-plane projections)
RING_PROJECTIONS = ("PLANAR", "RINGCYLINDRICAL")


def ring_observation(label: CubeLabel | None, target: str) -> bool:
    """Is this a ring observation (a ring-system target or a ring-plane Mapping group)?"""
    if "RING" in target.upper():
        return True
    if label is None:
        return False
    kw = label.isiscube_keywords()
    return (kw.get(("MAPPING", "PROJECTIONNAME"), "").upper() in RING_PROJECTIONS
            or ("MAPPING", "RINGLONGITUDEDIRECTION") in kw)


def yes_no(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("yes", "no", "true", "false"):
        return value.strip().lower() in ("yes", "true")
    raise UsageError(f"{name}={value!r} is not yes or no (or a bool)")


def one_of(name: str, value: object, choices: tuple[str, ...]) -> str:
    if isinstance(value, str) and value.strip().lower() in choices:
        return value.strip().lower()
    raise UsageError(f"{name}={value!r} is not one of {', '.join(choices)}")


def check_types(**settings: Any) -> None:
    """Refuse settings of the wrong type with a :class:`UsageError` naming them."""
    paths = ("catalog", "cache_dir", "isisdata")
    from ..net.settings import HttpSettings

    for name, value in settings.items():
        if value is None:
            continue
        ok = {
            "url": isinstance(value, str),
            "collection": isinstance(value, str) and bool(value.strip()),
            "cache_ttl": isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0,
            "http": isinstance(value, HttpSettings),
            "gdal_options": isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                             for k, v in value.items()),
        }.get(name, isinstance(value, (str, os.PathLike)) and name in paths)
        if not ok:
            raise UsageError(f"{name}={shorten(repr(value), 80)} is not a usable setting")


def seconds(name: str, value: float | None, env: str, default: float) -> float:
    """A finite, non-negative number of seconds: ``value``, else ``$env``, else ``default``."""
    where = name
    if value is None:
        raw = os.environ.get(env)
        if not raw:
            return default
        where, value = env, raw  # type: ignore[assignment]
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise UsageError(f"{where}={value!r} is not a finite number of seconds (0 or more)")
    return seconds
