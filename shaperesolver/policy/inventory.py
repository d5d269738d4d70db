"""What the catalog holds: every item of a body (or of every body), and which one a resolve chooses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..base import bodies
from ..catalog.choice import choose_asset, item_targets, version_key
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


def _size(item: Mapping[str, Any], href: str | None) -> int | None:
    for asset in (item.get("assets") or {}).values():
        if isinstance(asset, Mapping) and asset.get("href") == href:
            size = asset.get("file:size")
            return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None
    return None


def _info(item: Mapping[str, Any], body: str, chosen_id: str | None, local_root: str | None) -> ItemInfo:
    raw = item.get("properties")
    props: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    href: str | None = None
    problem = None
    try:
        href = choose_asset(item, True, local_root=local_root)[1]
    except CatalogError as exc:
        problem = str(exc)
        assets = item.get("assets")
        if isinstance(assets, Mapping):
            href = next((a["href"] for a in assets.values() if isinstance(a, Mapping) and isinstance(a.get("href"), str)), None)
    version = props.get("version")
    when = props.get("datetime") or props.get("start_datetime")
    return ItemInfo(body=body, item_id=str(item.get("id")), version=None if version is None else str(version),
                    datetime=None if when is None else str(when), deprecated=bool(props.get("deprecated")),
                    href=href, size=_size(item, href), chosen=str(item.get("id")) == chosen_id, problem=problem)


def group(raw: Iterable[Mapping[str, Any]], target: str | None) -> dict[str, list[Mapping[str, Any]]]:
    """Items per canonical body name: ``target``'s only, or every body's."""
    wanted = None if target is None else set(bodies.query_names(target))
    out: dict[str, list[Mapping[str, Any]]] = {}
    for it in raw:
        if not isinstance(it, Mapping):
            continue
        names = item_targets(it)
        if wanted is not None:
            if wanted.intersection(names):
                out.setdefault(bodies.canonical(target or ""), []).append(it)
            continue
        for name in dict.fromkeys(bodies.canonical(n) for n in names):
            out.setdefault(name, []).append(it)
    return out


def items(resolver: Resolver, target: str | None = None) -> list[ItemInfo]:
    """Every item for ``target`` (None: every body the catalog holds), newest first per body.

    Raises :class:`CatalogError` when the catalog cannot be read.
    """
    found: list[ItemInfo] = []
    for body, raw in sorted(group(resolver.catalog_items(target), target).items()):
        try:
            choice = resolver.choose(raw, body if target is None else target)
        except CatalogError:  # the newest item's asset is refused (its problem is listed): none chosen
            choice = None
        found.extend(_info(it, body, choice.item_id if choice else None, resolver.local_root)
                     for it in sorted(raw, key=version_key, reverse=True))
    return found
