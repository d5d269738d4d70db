"""Target names as labels spell them → canonical body names as the STAC catalog uses them.

The table (:mod:`.bodytable`, shipped inside the package) lists each body's canonical
name, NAIF id, NAIF name, common aliases and triaxial radii (a, b, c in km, from NAIF's
pck00011.tpc; see ``bodies-radii-source.md``; ``None`` when the PCK has none).  Labels say ``MARS``, ``Mars``, ``IO``,
``TEMPEL_1``...; the catalog matches exact, case-sensitive canonical names.
"""

from __future__ import annotations

from .record import Frozen, set_field

__all__ = ["Body", "lookup", "query_names", "all_bodies", "canonical"]


class Body(Frozen):
    """One solar-system body of the table."""

    __slots__ = ("name", "naif_id", "naif_name", "aliases", "radii_km")
    name: str
    naif_id: int
    naif_name: str
    aliases: tuple[str, ...]
    radii_km: tuple[float, float, float] | None

    def __init__(self, name: str, naif_id: int, naif_name: str, aliases: tuple[str, ...] = (),
                 radii_km: tuple[float, float, float] | None = None) -> None:
        set_field(self, "name", name)
        set_field(self, "naif_id", naif_id)
        set_field(self, "naif_name", naif_name)
        set_field(self, "aliases", aliases)
        set_field(self, "radii_km", radii_km)


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).upper()


_TABLE: tuple[tuple[Body, ...], dict[str, Body]] | None = None


def _table() -> tuple[tuple[Body, ...], dict[str, Body]]:
    global _TABLE
    if _TABLE is None:  # (a race builds it twice, alike)
        from .bodytable import TABLE

        bodies = tuple(Body(*row) for row in TABLE)
        index: dict[str, Body] = {}
        for b in bodies:
            for spelling in (b.name, b.naif_name, str(b.naif_id), *b.aliases):
                index.setdefault(_norm(spelling), b)
        _TABLE = bodies, index
    return _TABLE


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
