"""Which item and asset to use: pure functions over STAC items, no I/O.

The highest version wins whatever order a server answers in (``0010`` above ``0009``,
numbers compared as numbers); deprecated items are skipped unless a ``version=`` pin
names them; a pin that matches nothing is an error, not a fallback.  An asset must be a
GeoTIFF data asset whose href is a clean absolute https URL (http only for an http
catalog), or, for a local catalog, a file inside the catalog's directory.

Items are read through :mod:`.stacdoc` and nothing else: an item whose identity cannot
be read (``properties`` a list, ``version`` an object, ...) is skipped; one whose assets
are malformed is unusable, so choosing it raises :class:`CatalogError` (no answer).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..base.log import get as get_logger
from ..errors import CatalogError, VersionNotFoundError, shorten
from . import stacdoc

if TYPE_CHECKING:
    from ..net.transport import AddressPolicy

__all__ = ["Choice", "KnownModel", "known_models", "version_key", "item_targets", "choose_item", "choose_asset",
           "check_href"]

log = get_logger(__name__)

_CONTROL = re.compile(r"[^\x21-\x7e]|[\"'<>\\]")
_TIFF_TYPE = re.compile(r"image/tiff|geotiff", re.I)
_TIFF_HREF = re.compile(r"\.tiff?(?:[?#].*)?$", re.I)
_PREFERRED_KEYS = ("image", "data")
_DIGITS = re.compile(r"[0-9]+")
_TAIL = re.compile(r"([0-9]+)$")


@dataclass(frozen=True)
class Choice:
    """The item chosen for one body and the /vsicurl/ path of its GeoTIFF asset."""

    item_id: str
    version: str | None
    href: str
    asset_key: str

    @property
    def local(self) -> bool:
        """True for a file of a local (mirrored) catalog."""
        return self.href.startswith("/")

    @property
    def vsi_path(self) -> str:
        """The path GDAL (and ISIS) open: ``/vsicurl/<href>``, or the local file's path."""
        return self.href if self.local else "/vsicurl/" + self.href




@dataclass(frozen=True)
class KnownModel:
    """One item the catalog holds for a body (any version, deprecated or not), with every
    asset href it names: what an audit compares a cube's ShapeModel against."""

    item_id: str
    version: str | None
    deprecated: bool
    hrefs: tuple[str, ...]


def known_models(items: Iterable[Any], names: Iterable[str]) -> tuple[KnownModel, ...]:
    """The readable items among ``items`` that name one of ``names`` (a body's names),
    newest first; an item whose assets cannot be read is listed with none."""
    wanted = set(names)
    out = []
    for index, raw in enumerate(items):
        item = stacdoc.read_item(raw, f"items[{index}]")
        if not isinstance(item, stacdoc.Item) or not wanted.intersection(item.targets):
            continue
        try:
            hrefs = tuple(a.href for a in stacdoc.assets(item.raw))
        except CatalogError:
            hrefs = ()
        out.append((item, KnownModel(item.id, item.version, item.deprecated, hrefs)))
    out.sort(key=lambda pair: version_key(pair[0]), reverse=True)
    return tuple(k for _, k in out)


def version_key(item: stacdoc.Item) -> tuple[int, int, str, str]:
    """Sort key: numeric version when there is one, else the item id's trailing digits.

    Digits are compared as numbers without converting them (``0010`` above ``9``,
    however long), and only ASCII digits count.
    """
    text = (item.version or "").strip()
    digits = text if _DIGITS.fullmatch(text) else None
    if digits is None:
        tail = _TAIL.search(item.id)
        digits = tail.group(1) if tail else None
    if digits is None:
        return (0, 0, "", text)
    number = digits.lstrip("0")
    return (1, len(number), number, text)


def _same_version(item: stacdoc.Item, pin: str) -> bool:
    version = item.version
    if version is None:
        tail = _TAIL.search(item.id)
        version = tail.group(1) if tail else None
    if version is None:
        return False
    have, want = version.strip(), pin.strip()
    if _DIGITS.fullmatch(have) and _DIGITS.fullmatch(want):
        return have.lstrip("0") == want.lstrip("0")
    return have == want


def item_targets(item: Any) -> list[str]:
    """The bodies an item names (``ssys:targets``); none when they cannot be read."""
    got = stacdoc.read_item(item, "item")
    return list(got.targets or ())


def choose_item(items: Iterable[Any], names: Iterable[str], pin: str | None, where: str,
                allow_http: bool, policy: AddressPolicy | None = None, local_root: str | None = None) -> Choice | None:
    """The highest (or pinned) version among ``items`` for ``names``; None if none matches.

    Items are read by :func:`stacdoc.read_item`: one that cannot be read is skipped (a
    debug line).  Items marked ``deprecated`` are skipped unless pinned.  A pin that
    matches nothing raises :class:`VersionNotFoundError`.  The chosen item's assets
    must be usable (:func:`choose_asset`), else :class:`CatalogError`.  ``policy`` and
    ``local_root``: see :func:`check_href`.
    """
    names = list(names)
    wanted = set(names)
    candidates = []
    for index, raw in enumerate(items):
        got = stacdoc.read_item(raw, f"{where}: items[{index}]")
        if isinstance(got, stacdoc.Unreadable):
            log.debug("skipping an item of %s: %s", where, got.problem)
        elif wanted.intersection(got.targets):
            candidates.append(got)
    if pin is not None:
        pinned = [it for it in candidates if _same_version(it, pin)]
        if not pinned:
            have = sorted({str(it.version) for it in candidates})
            raise VersionNotFoundError(
                f"version {pin} of {'/'.join(names)} is not in {where} (versions there: {', '.join(have) or 'none'})"
            )
        candidates = pinned
    else:
        candidates = [it for it in candidates if not it.deprecated]
    if not candidates:
        return None
    best = max(candidates, key=version_key)
    key, href = choose_asset(best.raw, allow_http, policy, local_root)
    if pin is not None and best.deprecated:
        log.warning("%s version %s is deprecated in %s; using it because version=%s pins it",
                    best.id, best.version, where, pin)
    return Choice(best.id, best.version, href, key)


def choose_asset(item: Mapping[str, Any], allow_http: bool = False, policy: AddressPolicy | None = None,
                 local_root: str | None = None) -> tuple[str, str]:
    """(asset key, href) of the item's GeoTIFF data asset.

    Preference order: a ``data``-role asset with a TIFF media type; any asset with a
    TIFF media type; a ``data``-role asset with a ``.tif``/``.tiff`` href; any asset with
    such an href.  Within a tier the keys ``image`` then ``data`` come first, then the
    rest alphabetically.  Thumbnails and overviews are never chosen.  A malformed asset
    (:func:`stacdoc.assets`) makes the whole item unusable: StacShapeError.
    """
    found = stacdoc.assets(item)
    usable = []
    for asset in found:
        roles = set(asset.roles)
        if roles & {"thumbnail", "overview", "metadata"}:
            continue
        is_type = bool(_TIFF_TYPE.search(asset.media_type or ""))
        is_href = bool(_TIFF_HREF.search(asset.href.split("?")[0]))
        is_data = "data" in roles
        tier = 0 if (is_type and is_data) else 1 if is_type else 2 if (is_href and is_data) else 3 if is_href else None
        if tier is None:
            continue
        rank = _PREFERRED_KEYS.index(asset.key) if asset.key in _PREFERRED_KEYS else len(_PREFERRED_KEYS)
        usable.append((tier, rank, asset.key, asset.href))
    item_id = stacdoc.item_id(item)
    if not usable:
        keys = shorten(", ".join(a.key for a in found), 150)
        raise CatalogError(f"item {item_id} has no GeoTIFF data asset (assets: {keys})")
    _, _, key, href = min(usable)
    return key, check_href(href, item_id, allow_http, policy, local_root)


def check_href(href: str, item_id: object, allow_http: bool,
               policy: AddressPolicy | Callable[[], AddressPolicy] | None = None, local_root: str | None = None) -> str:
    """Refuse an asset href that is not a clean absolute https (or chosen http) URL.

    With ``policy`` (the API's or remote catalog's address rules, or a function that
    gives them: called only for an IP-literal host) an IP-literal host must be of a kind
    the policy allows; a host name is looked up only when the model is
    opened (:meth:`Http.final_url`), never just to choose it.  With ``local_root`` (the
    directory of a local static catalog) an absolute path is accepted too, if it has no
    ``..`` component and, links resolved, stays inside ``local_root``
    (:class:`StaticCatalog` has made relative hrefs absolute).
    """
    if _CONTROL.search(href):
        raise CatalogError(f"item {item_id}: refusing asset href {shorten(href, 120)!r} (whitespace, quotes, non-ASCII "
                           "or control characters; labels are ASCII)")
    if local_root is not None and href.startswith("/"):
        return _check_local(href, item_id, local_root)
    parts = stacdoc.parse_url(href, f"item {item_id}: asset href")
    ok = {"https", "http"} if allow_http else {"https"}
    if parts.scheme not in ok or not parts.netloc:
        raise CatalogError(
            f"item {item_id}: refusing asset href {href!r} (must be an absolute https URL"
            + (" or http, as the catalog is http)" if allow_http else ")")
        )
    if policy is not None and _ip_literal(parts.hostname or ""):
        rules = policy if hasattr(policy, "check") else policy()
        try:
            rules.check(href, "asset href", lookup=False)
        except CatalogError as exc:
            raise CatalogError(f"item {item_id}: {exc}") from None
    return href


def _ip_literal(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _check_local(path: str, item_id: object, root: str) -> str:
    if ".." in path.split("/"):
        raise CatalogError(f"item {item_id}: refusing asset href {path!r} ('..' in a local path)")
    real, top = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([real, top]) != top:
        raise CatalogError(f"item {item_id}: refusing asset href {path!r} (outside the catalog's directory {root})")
    return os.path.normpath(path)
