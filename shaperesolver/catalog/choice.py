"""Which item and asset to use: pure functions over STAC items, no I/O.

The highest version wins whatever order a server answers in (``0010`` above ``0009``,
numbers compared as numbers); deprecated items are skipped unless a ``version=`` pin
names them; a pin that matches nothing is an error, not a fallback.  An asset must be a
GeoTIFF data asset whose href is a clean absolute https URL (http only for an http
catalog), or, for a local catalog, a file inside the catalog's directory.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ..errors import CatalogError, VersionNotFoundError

if TYPE_CHECKING:
    from ..net.transport import AddressPolicy

__all__ = ["Choice", "version_key", "item_targets", "choose_item", "choose_asset", "check_href"]

log = logging.getLogger(__name__)

_CONTROL = re.compile(r"[\x00-\x20\x7f\"'<>\\]")
_TIFF_TYPE = re.compile(r"image/tiff|geotiff", re.I)
_TIFF_HREF = re.compile(r"\.tiff?(?:[?#].*)?$", re.I)
_PREFERRED_KEYS = ("image", "data")


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




def version_key(item: Mapping[str, Any]) -> tuple[int, int, str]:
    """Sort key: numeric version when there is one, else the item id's trailing digits."""
    props = item.get("properties") or {}
    version = props.get("version")
    text = str(version).strip() if version is not None else ""
    if re.fullmatch(r"\d+", text):
        return (1, int(text), text)
    digits = re.search(r"(\d+)$", str(item.get("id", "")))
    if digits:
        return (1, int(digits.group(1)), text)
    return (0, 0, text)


def _same_version(item: Mapping[str, Any], pin: str) -> bool:
    props = item.get("properties") or {}
    version = props.get("version")
    if version is None:
        digits = re.search(r"(\d+)$", str(item.get("id", "")))
        version = digits.group(1) if digits else None
    if version is None:
        return False
    have = str(version).strip()
    if have.isdigit() and pin.strip().isdigit():
        return int(have) == int(pin)
    return have == pin.strip()


def item_targets(item: Mapping[str, Any]) -> list[str]:
    value = (item.get("properties") or {}).get("ssys:targets")
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list) else []


def choose_item(items: Iterable[Mapping[str, Any]], names: Iterable[str], pin: str | None, where: str,
                allow_http: bool, policy: AddressPolicy | None = None, local_root: str | None = None) -> Choice | None:
    """The highest (or pinned) version among ``items`` for ``names``; None if none matches.

    Items marked ``deprecated`` are skipped unless pinned.  A pin that matches nothing
    raises :class:`VersionNotFoundError`.  ``policy`` and ``local_root``: see :func:`check_href`.
    """
    wanted = set(names)
    candidates = [it for it in items if isinstance(it, Mapping) and wanted.intersection(item_targets(it))]
    if pin is not None:
        pinned = [it for it in candidates if _same_version(it, pin)]
        if not pinned:
            have = sorted({str((it.get("properties") or {}).get("version")) for it in candidates})
            raise VersionNotFoundError(
                f"version {pin} of {'/'.join(names)} is not in {where} (versions there: {', '.join(have) or 'none'})"
            )
        candidates = pinned
    else:
        candidates = [it for it in candidates if not (it.get("properties") or {}).get("deprecated")]
    if not candidates:
        return None
    best = max(candidates, key=version_key)
    key, href = choose_asset(best, allow_http, policy, local_root)
    version = (best.get("properties") or {}).get("version")
    if pin is not None and (best.get("properties") or {}).get("deprecated"):
        log.warning("%s version %s is deprecated in %s; using it because version=%s pins it",
                    best.get("id"), version, where, pin)
    return Choice(str(best.get("id")), None if version is None else str(version), href, key)


def choose_asset(item: Mapping[str, Any], allow_http: bool = False, policy: AddressPolicy | None = None,
                 local_root: str | None = None) -> tuple[str, str]:
    """(asset key, href) of the item's GeoTIFF data asset.

    Preference order: a ``data``-role asset with a TIFF media type; any asset with a
    TIFF media type; a ``data``-role asset with a ``.tif``/``.tiff`` href; any asset with
    such an href.  Within a tier the keys ``image`` then ``data`` come first, then the
    rest alphabetically.  Thumbnails and overviews are never chosen.
    """
    item_id = item.get("id", "?")
    assets = item.get("assets")
    if not isinstance(assets, Mapping) or not assets:
        raise CatalogError(f"item {item_id} has no assets")
    usable = []
    for key, asset in assets.items():
        if not isinstance(asset, Mapping) or not isinstance(asset.get("href"), str):
            continue
        roles = set(asset.get("roles") or ())
        if roles & {"thumbnail", "overview", "metadata"}:
            continue
        is_type = bool(_TIFF_TYPE.search(str(asset.get("type", ""))))
        is_href = bool(_TIFF_HREF.search(asset["href"].split("?")[0]))
        is_data = "data" in roles
        tier = 0 if (is_type and is_data) else 1 if is_type else 2 if (is_href and is_data) else 3 if is_href else None
        if tier is None:
            continue
        rank = _PREFERRED_KEYS.index(key) if key in _PREFERRED_KEYS else len(_PREFERRED_KEYS)
        usable.append((tier, rank, key, asset["href"]))
    if not usable:
        raise CatalogError(f"item {item_id} has no GeoTIFF data asset (assets: {', '.join(map(str, assets))})")
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
        raise CatalogError(f"item {item_id}: refusing asset href {href!r} (whitespace, quotes or control characters)")
    if local_root is not None and href.startswith("/"):
        return _check_local(href, item_id, local_root)
    parts = urlparse(href)
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
