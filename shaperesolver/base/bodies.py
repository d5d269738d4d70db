"""Target names as labels spell them → canonical body names as the STAC catalog uses them.

The table (``bodies.json``, shipped inside the package) lists each body's canonical
name, NAIF id, NAIF name, common aliases and triaxial radii (a, b, c in km, from NAIF's
pck00011.tpc; see ``bodies-radii-source.md``; ``None`` when the PCK has none).  Labels say ``MARS``, ``Mars``, ``IO``,
``TEMPEL_1``...; the catalog matches exact, case-sensitive canonical names.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["Body", "lookup", "query_names", "all_bodies", "canonical"]


@dataclass(frozen=True)
class Body:
    """One solar-system body of the table."""

    name: str
    naif_id: int
    naif_name: str
    aliases: tuple[str, ...] = ()
    radii_km: tuple[float, float, float] | None = None


def _norm(name: str) -> str:
    return re.sub(r"[\s_]+", " ", name).strip().upper()


def _radii(value: object) -> tuple[float, float, float] | None:
    if not value:
        return None
    a, b, c = (float(v) for v in value)  # type: ignore[attr-defined]
    return a, b, c


@lru_cache(maxsize=1)
def _table() -> tuple[tuple[Body, ...], dict[str, Body]]:
    # read beside this module (installed packages are directories): importlib.resources
    # would cost more to import than the whole table does to read
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "bodies.json"), encoding="utf-8") as fh:
        raw = json.load(fh)
    bodies = tuple(Body(r["name"], int(r["naif_id"]), r["naif_name"], tuple(r.get("aliases", ())), _radii(r.get("radii_km")))
                   for r in raw)
    index: dict[str, Body] = {}
    for b in bodies:
        for spelling in (b.name, b.naif_name, str(b.naif_id), *b.aliases):
            index.setdefault(_norm(spelling), b)
    return bodies, index


def all_bodies() -> tuple[Body, ...]:
    """Every body in the table."""
    return _table()[0]


def lookup(target: str) -> Body | None:
    """The body a label's TargetName means, or None when the table does not know it."""
    return _table()[1].get(_norm(target))


def query_names(target: str) -> tuple[str, ...]:
    """Names to send in one ``in`` list: the canonical name and the label's own spelling."""
    spelled = target.strip()
    body = lookup(spelled)
    if body is None:
        return (spelled,)
    return (body.name,) if spelled == body.name else (body.name, spelled)


def canonical(target: str) -> str:
    """The canonical name of ``target`` (as written when the table does not know it)."""
    body = lookup(target)
    return body.name if body else target.strip()
