"""Does a shape model fit the cube's body?  Pure logic: no GDAL, no I/O.

ISIS reads a ShapeModel's pixels as radii in metres from the target's centre.  Two
checks compare what :mod:`shaperesolver.models.raster` read cheaply from a model with the
body's triaxial radii (NAIF pck00011.tpc, in :mod:`shaperesolver.base.bodies`):

* **values** (:func:`check_values`): a sample of valid pixels (NoData and ISIS special
  pixels already dropped) must lie in the body's radius range ``[c - m, a + m]``, where
  the topography margin is ``m = min(25 km, a / 2)``: 25 km for planets and large moons
  (Mars spans about -8.2 to +21.2 km around its datum, Earth -11 to +8.8 km, the Moon
  -9.1 to +10.8 km), half the longest radius for small irregular bodies (Phobos 6.5 km,
  Itokawa 134 m).  The lower bound is never below ``c / 4``.  At least
  :data:`MIN_INSIDE` of the sample must be inside.  When not, the message says what
  the values look like: kilometres (x 1000 they fit), another body's radii (95 % of
  them in its range), or heights above a datum (median below half the lowest accepted
  radius; preferred over a body smaller than 1/20 of that).
* **CRS** (:func:`check_crs`): the semi-major axis of the model's coordinate system must
  be within 1 % of the body's ``a`` (or, for DEMs on a mean-radius sphere, within 1 %
  of the interval ``[c, a]``), and its datum/ellipsoid names must not name another body.
  A CRS with no ellipsoid (a ``LOCAL_CS``) gives no latitude and longitude: ISIS cannot
  map a ground point into such a model, so it is refused, whatever its values.

Both return ``None`` when the model fits, else a one-line reason.  Bodies without
radii (``Body.radii_km is None``) skip the radius tests; the caller logs it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..base.bodies import Body, all_bodies

__all__ = [
    "VERSION",
    "MARGIN_KM",
    "MIN_INSIDE",
    "Sample",
    "CrsFacts",
    "radius_range",
    "check_values",
    "check_crs",
    "no_lonlat",
    "describe_range",
]

#: Bumped when the rules change, so cached results of older rules are not reused.
VERSION = 2
#: Topography margin for large bodies (km); small bodies use half their longest radius.
MARGIN_KM = 25.0
#: Fraction of the valid sample that must lie inside the radius range.
MIN_INSIDE = 0.95
#: Tolerance of the CRS semi-major axis against the body's radii.
CRS_TOLERANCE = 0.01


@dataclass(frozen=True)
class Sample:
    """Valid pixel values (metres, scale/offset applied) read from one level of a model."""

    values: tuple[float, ...]
    read: int  # pixels read, valid or not
    level: str  # e.g. "overview 256x128" or "full resolution 32x16"

    @property
    def median(self) -> float:
        v = sorted(self.values)
        n = len(v)
        return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


@dataclass(frozen=True)
class CrsFacts:
    """What the model's coordinate system says about its body."""

    semi_major_m: float | None
    names: tuple[str, ...] = ()  # GEOGCS, datum and ellipsoid names
    #: why the CRS gives no latitude and longitude (e.g. "a LOCAL_CS"): the model is refused; or None
    unconfirmed: str | None = None


def radius_range(body: Body) -> tuple[float, float] | None:
    """The accepted pixel values for ``body`` in metres: ``[c - m, a + m]``, or None."""
    if body.radii_km is None:
        return None
    big, small = max(body.radii_km), min(body.radii_km)
    margin = min(MARGIN_KM, big / 2)
    lo = max(small - margin, small / 4)
    return lo * 1000.0, (big + margin) * 1000.0


def describe_range(body: Body) -> str:
    rng = radius_range(body)
    assert rng is not None and body.radii_km is not None
    radii = "/".join(f"{r * 1000:.0f}" for r in body.radii_km)
    return f"{body.name}'s radii are {radii} m, accepted {rng[0]:.0f} to {rng[1]:.0f} m"


def _inside(values: Iterable[float], rng: tuple[float, float], factor: float = 1.0) -> float:
    vals = list(values)
    if not vals:
        return 0.0
    lo, hi = rng
    return sum(1 for v in vals if lo <= v * factor <= hi) / len(vals)


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.6g}"


def check_values(sample: Sample, body: Body, others: Sequence[Body] | None = None) -> str | None:
    """``None`` when the sample fits ``body``; else why not (one line).

    ``body`` must have radii (check ``body.radii_km`` first).
    """
    rng = radius_range(body)
    if rng is None:
        raise ValueError(f"{body.name} has no radii")
    if not sample.values:
        return f"no valid pixel values in {sample.level} ({sample.read} pixels read, all NoData)"
    if _inside(sample.values, rng) >= MIN_INSIDE:
        return None
    med = sample.median
    lo_v, hi_v = min(sample.values), max(sample.values)
    seen = f"median {_fmt(med)}, range {_fmt(lo_v)} to {_fmt(hi_v)} in {sample.level}"
    need = f"ISIS needs radii in metres from {body.name}'s centre ({describe_range(body)})"
    if _inside(sample.values, rng, 1000.0) >= MIN_INSIDE:
        return f"values look like kilometres ({seen}): {need}; multiply by 1000"
    like = _looks_like(sample, body, others)
    near_zero = abs(med) < rng[0] / 2
    tiny = like is not None and max(like.radii_km or (0.0,)) * 1000.0 < rng[0] / 20
    if like is not None and not (near_zero and tiny):
        return f"values look like radii of {like.name}, not {body.name} ({seen}): {need}"
    if near_zero:
        return (f"values look like heights above a datum, not radii ({seen}): {need}; "
                f"add the datum radius to the heights or use a radius DEM")
    return f"values do not fit {body.name} ({seen}): {need}"


def _looks_like(sample: Sample, body: Body, others: Sequence[Body] | None) -> Body | None:
    """The other body whose radius range holds the sample best (and enough of it)."""
    best: tuple[float, float, Body] | None = None
    med = sample.median
    for other in others if others is not None else all_bodies():
        rng = radius_range(other)
        if other.name == body.name or rng is None:
            continue
        frac = _inside(sample.values, rng)
        if frac >= MIN_INSIDE:
            mean = sum(other.radii_km or ()) / 3 * 1000.0
            score = (frac, -abs(mean - med) / mean)
            if best is None or score > best[:2]:
                best = (*score, other)
    return best[2] if best else None


def _tokens(names: Iterable[str]) -> set[str]:
    return {t for n in names for t in re.split(r"[^0-9a-z]+", n.lower()) if t}


def _named(body: Body, tokens: set[str]) -> bool:
    for spelling in (body.name, *body.aliases):
        words = [w for w in re.split(r"[^0-9a-z]+", spelling.lower()) if w]
        if words and all(w in tokens for w in words):
            return True
    return False


def _fits_axis(body: Body, a_m: float) -> bool:
    if body.radii_km is None:
        return False
    small, big = min(body.radii_km) * 1000.0, max(body.radii_km) * 1000.0
    return small * (1 - CRS_TOLERANCE) <= a_m <= big * (1 + CRS_TOLERANCE)


def no_lonlat(crs: CrsFacts) -> str | None:
    """Why a model whose CRS gives no latitude and longitude is unusable for any body, or None."""
    if not crs.unconfirmed:
        return None
    return (f"its coordinate system is {crs.unconfirmed}, which gives no latitude and longitude: ISIS "
            "cannot map a ground point into it; not a usable shape model")


def check_crs(crs: CrsFacts, body: Body, others: Sequence[Body] | None = None) -> str | None:
    """``None`` when the model's CRS agrees with ``body`` (or names nothing); else why not."""
    if crs.unconfirmed:
        return no_lonlat(crs)
    pool = [b for b in (others if others is not None else all_bodies()) if b.name != body.name]
    tokens = _tokens(crs.names)
    names = ", ".join(n for n in crs.names if n)
    if tokens and not _named(body, tokens):
        for other in pool:
            if _named(other, tokens):
                return f"the coordinate system names {other.name} ({names}), not {body.name}"
    a = crs.semi_major_m
    if a is None or not a > 0 or body.radii_km is None:
        return None
    if _fits_axis(body, a):
        return None
    like = [o.name for o in pool if _fits_axis(o, a)]
    hint = f"; it looks like {' or '.join(like[:3])}" if like else ""
    return (f"the coordinate system's semi-major axis is {a:.0f} m ({names or 'unnamed'}), not within 1% of "
            f"{body.name}'s a = {max(body.radii_km) * 1000:.0f} m{hint}")
