"""What the catalog holds: every item of a body (or of every body), and which one a resolve chooses.

Items are read through :mod:`.stacdoc`: an item that cannot be read, or whose assets are
malformed, is listed with its ``problem`` and never chosen; only a catalog that cannot
be read at all (no answer) is an error.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..base import bodies
from ..catalog import stacdoc
from ..catalog.choice import choose_asset, version_key
from ..errors import CatalogError

if TYPE_CHECKING:
    from .resolver import Resolver

__all__ = ["ItemInfo", "items", "group"]


@dataclass(frozen=True)
class ItemInfo:
    """One catalog item of one body."""

    body: str
    item_id: str
    version: str | None
    datetime: str | None
    deprecated: bool
    href: str | None
    size: int | None
    chosen: bool
    #: why the item has no usable GeoTIFF asset (None when it has one)
    problem: str | None = None

    def record(self) -> dict[str, Any]:
        """The fields as one JSON object (``--json`` prints one per line)."""
        return asdict(self)


def _info(item: stacdoc.Item | stacdoc.Unreadable, body: str, chosen_id: str | None,
          local_root: str | None) -> ItemInfo:
    if isinstance(item, stacdoc.Unreadable):
        return ItemInfo(body=body, item_id=item.item_id or "?", version=None, datetime=None, deprecated=False,
                        href=None, size=None, chosen=False, problem=item.problem)
    href: str | None = None
    problem = None
    found: list[stacdoc.Asset] = []
    try:
        found = stacdoc.assets(item.raw)
        href = choose_asset(item.raw, True, local_root=local_root)[1]
    except CatalogError as exc:
        problem = str(exc)
        href = found[0].href if found else None
    size = next((a.size for a in found if a.href == href), None)
    return ItemInfo(body=body, item_id=item.id, version=item.version, datetime=item.datetime,
                    deprecated=item.deprecated, href=href, size=size, chosen=item.id == chosen_id, problem=problem)


def group(raw: Iterable[Any], target: str | None) -> dict[str, list[stacdoc.Item | stacdoc.Unreadable]]:
    """Items per canonical body name: ``target``'s only, or every body's.

    Each is read by :func:`stacdoc.read_item`; an unreadable one (also those ``raw``
    holds apart, as :class:`stacdoc.Items`) goes under its bodies when its
    ``ssys:targets`` could be read, else under ``target``'s body, or ``?``.
    """
    wanted = None if target is None else set(bodies.query_names(target))
    asked = "?" if target is None else bodies.canonical(target)
    out: dict[str, list[stacdoc.Item | stacdoc.Unreadable]] = {}
    entries = [stacdoc.read_item(it, f"items[{index}]") for index, it in enumerate(raw)]
    for entry in [*entries, *getattr(raw, "unreadable", ())]:
        names = entry.targets
        if names is None:
            out.setdefault(asked, []).append(entry)
        elif wanted is not None:
            if wanted.intersection(names):
                out.setdefault(asked, []).append(entry)
        else:
            for name in dict.fromkeys(bodies.canonical(n) for n in names):
                out.setdefault(name, []).append(entry)
    return out


def items(resolver: Resolver, target: str | None = None) -> list[ItemInfo]:
    """Every item for ``target`` (None: every body the catalog holds), newest first per body;
    items that cannot be read (:mod:`.stacdoc`) last, with their problem (``?``: body unknown).

    Raises :class:`CatalogError` when the catalog cannot be read.
    """
    found: list[ItemInfo] = []
    grouped = group(resolver.catalog_items(target), target)
    for body, entries in sorted(grouped.items(), key=lambda kv: (kv[0] == "?", kv[0])):
        readable = [e for e in entries if isinstance(e, stacdoc.Item)]
        try:
            choice = resolver.choose([e.raw for e in readable], body if target is None else target)
        except CatalogError:  # the newest item's asset is refused (its problem is listed): none chosen
            choice = None
        chosen = choice.item_id if choice else None
        ordered: list[stacdoc.Item | stacdoc.Unreadable] = [*sorted(readable, key=version_key, reverse=True)]
        ordered.extend(e for e in entries if isinstance(e, stacdoc.Unreadable))
        found.extend(_info(it, body, chosen, resolver.local_root) for it in ordered)
    return found
