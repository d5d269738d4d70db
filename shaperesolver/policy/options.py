"""What a :class:`~shaperesolver.policy.resolver.Resolver` accepts: the constants of the policy
and the checks of its settings (each wrong one a :class:`UsageError` naming it).

Light on purpose: the command line's parameter table reads it before anything heavy loads
(the types of these settings, which need :mod:`typing`, are :mod:`.types`).
"""

from __future__ import annotations

import math
import os

from ..errors import UsageError, shorten

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..cube.label import CubeLabel

__all__ = ["DEFAULT_URL", "DEFAULT_COLLECTION", "SHAPES", "FALLBACKS", "NULL", "SKY", "RINGPLANE", "RING_PROJECTIONS", "ring_observation", "yes_no", "one_of", "check_types", "seconds"]

DEFAULT_URL = "https://astrogeology.usgs.gov/apis/isis-stac/"
DEFAULT_COLLECTION = "isis-global-dtms"
SHAPES = ("web", "system", "ellipsoid", "ringplane", "user")
#: when the web step may give way to SYSTEM and the ellipsoid (see the module docstring)
FALLBACKS = ("nomatch", "always", "never")

NULL = "Null"
SKY = "SKY"
RINGPLANE = "RingPlane"
#: Mapping projections of ring observations (ISIS's ring-plane projections)
RING_PROJECTIONS = ("PLANAR", "RINGCYLINDRICAL")
_MAPPING = ("IsisCube", "Mapping")


def ring_observation(label: CubeLabel | None, target: str) -> bool:
    """Is this a ring observation (a ring-system target or a ring-plane Mapping group)?"""
    if "RING" in target.upper():
        return True
    if label is None:
        return False
    sc = label.scan  # (two lookups, not a table of every IsisCube keyword: this runs for every cube)
    proj = sc.find(_MAPPING, "ProjectionName")
    value = "" if proj is None else proj.value if isinstance(proj.value, str) else (proj.value[0] if proj.value else "")
    return value.upper() in RING_PROJECTIONS or sc.find(_MAPPING, "RingLongitudeDirection") is not None


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


def __getattr__(name: str) -> object:
    """The settings' types, formerly here, from :mod:`.types` (which loads :mod:`typing`)."""
    if name in ("Shape", "Fallback", "CacheMode", "ResolverOptions"):
        from . import types

        return getattr(types, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
