"""Find shape-model items in a STAC API (or a static STAC catalog) and pick one.

This is the only module that speaks HTTP.  What it knows about real servers
(``shared/reference/stac-and-gdal.md``):

* stac-server (USGS) matches ``query`` ``in`` exactly and case-sensitively, reads
  ``sortby`` only, and puts a ``next`` link on every non-empty page: stop with
  ``numberMatched`` / ``context.matched``.
* stac-fastapi-pgstac rejects ``query`` ``in`` with a 400 but supports a CQL2-JSON
  ``filter`` (``a_overlaps``); which form works is remembered per endpoint.
* Nobody's order is trusted: the highest version is chosen here.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

import requests

from ._version import __version__
from .errors import CatalogError, UsageError, VersionNotFoundError

__all__ = [
    "Choice",
    "HttpSettings",
    "StacClient",
    "StaticCatalog",
    "choose_item",
    "choose_asset",
    "search_url",
    "check_api_url",
    "version_key",
]

log = logging.getLogger(__name__)

QUERY = "query"
FILTER = "filter"
PAGE_SIZE = 1000
MAX_PAGES = 50
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
    def vsi_path(self) -> str:
        """The path GDAL (and ISIS) open: ``/vsicurl/<href>``."""
        return "/vsicurl/" + self.href


@dataclass(frozen=True)
class HttpSettings:
    """Timeouts, retries and limits for every request a resolver makes."""

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5
    max_retry_after: float = 60.0
    max_bytes: int = 20 * 2**20


# ------------------------------------------------------------------ versions


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


def _targets(item: Mapping[str, Any]) -> list[str]:
    value = (item.get("properties") or {}).get("ssys:targets")
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list) else []


def choose_item(items: Iterable[Mapping[str, Any]], names: Iterable[str], pin: str | None, where: str,
                allow_http: bool) -> Choice | None:
    """The highest (or pinned) version among ``items`` for ``names``; None if none matches.

    Items marked ``deprecated`` are skipped unless pinned.  A pin that matches nothing
    raises :class:`VersionNotFoundError`.
    """
    wanted = set(names)
    candidates = [it for it in items if isinstance(it, Mapping) and wanted.intersection(_targets(it))]
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
    key, href = choose_asset(best, allow_http)
    version = (best.get("properties") or {}).get("version")
    return Choice(str(best.get("id")), None if version is None else str(version), href, key)


def choose_asset(item: Mapping[str, Any], allow_http: bool = False) -> tuple[str, str]:
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
    return key, check_href(href, item_id, allow_http)


def check_href(href: str, item_id: object, allow_http: bool) -> str:
    """Refuse an asset href that is not a clean absolute https (or chosen http) URL."""
    if _CONTROL.search(href):
        raise CatalogError(f"item {item_id}: refusing asset href {href!r} (whitespace, quotes or control characters)")
    parts = urlparse(href)
    ok = {"https", "http"} if allow_http else {"https"}
    if parts.scheme not in ok or not parts.netloc:
        raise CatalogError(
            f"item {item_id}: refusing asset href {href!r} (must be an absolute https URL"
            + (" or http, as the catalog is http)" if allow_http else ")")
        )
    return href


# ------------------------------------------------------------------ HTTP


def check_api_url(url: str) -> str:
    """Validate a ``url=`` parameter (a usage error when it is not an http(s) URL)."""
    parts = urlparse(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or _CONTROL.search(url):
        raise UsageError(f"url={url!r} is not an http(s) URL of a STAC API")
    return url


def search_url(url: str) -> str:
    """``<url>/search`` with exactly one slash between the two."""
    return url.rstrip("/") + "/search"


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Http:
    """One ``requests.Session`` per thread, with timeouts, retries and a size cap."""

    def __init__(self, settings: HttpSettings, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self._local = threading.local()
        self._sleep = sleep
        self.requests_sent = 0
        self._count_lock = threading.Lock()

    @property
    def session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            s.headers["User-Agent"] = f"shaperesolver/{__version__}"
            s.headers["Accept"] = "application/geo+json, application/json;q=0.9"
            self._local.session = s
        return s

    def close(self) -> None:
        s = getattr(self._local, "session", None)
        if s is not None:
            s.close()
            self._local.session = None

    def json(self, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        """Send a request with retries; return (status, decoded JSON) for 2xx and 4xx.

        Raises :class:`CatalogError` when the server cannot be reached, keeps failing
        or answers with something that is not JSON.
        """
        st = self.settings
        attempt = 0
        while True:
            attempt += 1
            with self._count_lock:
                self.requests_sent += 1
            try:
                resp = self.session.request(
                    method, url, json=body, timeout=(st.connect_timeout, st.read_timeout), stream=True
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt <= st.retries:
                    delay = st.backoff * 2 ** (attempt - 1)
                    log.info("%s %s: %s; retrying in %.1f s", method, url, type(exc).__name__, delay)
                    self._sleep(delay)
                    continue
                kind = "timed out" if isinstance(exc, requests.Timeout) else "cannot connect"
                raise CatalogError(f"{url}: {kind} after {attempt} attempts ({_short(str(exc), 160)})") from None
            except requests.RequestException as exc:
                raise CatalogError(f"{url}: request failed ({_short(str(exc), 160)})") from None
            try:
                if resp.status_code in (429, 502, 503, 504) and attempt <= st.retries:
                    delay = self._retry_after(resp, st.backoff * 2 ** (attempt - 1))
                    log.info("%s %s: HTTP %d; retrying in %.1f s", method, url, resp.status_code, delay)
                    self._sleep(delay)
                    continue
                raw = self._read(resp, url)
                return resp.status_code, self._decode(resp, raw, url)
            finally:
                resp.close()

    def _retry_after(self, resp: requests.Response, default: float) -> float:
        value = resp.headers.get("Retry-After", "").strip()
        if value.isdigit():
            return min(float(value), self.settings.max_retry_after)
        return default

    def _read(self, resp: requests.Response, url: str) -> bytes:
        limit = self.settings.max_bytes
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise CatalogError(f"{url}: response of {int(declared)} bytes is larger than the {limit}-byte limit")
        chunks = []
        size = 0
        try:
            for chunk in resp.iter_content(65536):
                size += len(chunk)
                if size > limit:
                    raise CatalogError(f"{url}: response is larger than the {limit}-byte limit")
                chunks.append(chunk)
        except requests.RequestException as exc:
            raise CatalogError(f"{url}: reading the response failed ({_short(str(exc), 160)})") from None
        return b"".join(chunks)

    def _decode(self, resp: requests.Response, raw: bytes, url: str) -> Any:
        status = resp.status_code
        ctype = resp.headers.get("Content-Type", "")
        try:
            data = json.loads(raw)
        except ValueError:
            if "html" in ctype.lower() or raw.lstrip()[:1] == b"<":
                raise CatalogError(f"{url}: HTTP {status}, got an HTML page instead of JSON", status) from None
            raise CatalogError(f"{url}: HTTP {status}, response is not JSON: {_short(raw[:200].decode('utf-8', 'replace'))!r}", status) from None
        if status >= 500 or (status >= 400 and status != 400):
            raise CatalogError(f"{url}: HTTP {status}: {_error_text(data)}", status)
        return data


def _error_text(data: Any) -> str:
    if isinstance(data, Mapping):
        for key in ("description", "message", "detail", "error"):
            if data.get(key):
                code = data.get("code")
                return _short(f"{code}: {data[key]}" if code else str(data[key]))
    return _short(json.dumps(data))


def _features(data: Any, url: str) -> list[Mapping[str, Any]]:
    if not isinstance(data, Mapping) or not isinstance(data.get("features"), list):
        raise CatalogError(f"{url}: not a STAC FeatureCollection (no 'features' list)")
    return [f for f in data["features"] if isinstance(f, Mapping)]


def _matched(data: Mapping[str, Any]) -> int | None:
    for value in (data.get("numberMatched"), (data.get("context") or {}).get("matched")):
        if isinstance(value, int):
            return value
    return None


def _next_link(data: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for link in data.get("links") or ():
        if isinstance(link, Mapping) and link.get("rel") == "next" and isinstance(link.get("href"), str):
            return link
    return None


class StacClient:
    """Searches one STAC API endpoint.  Thread-safe."""

    def __init__(self, url: str, http: Http, modes: dict[str, str] | None = None,
                 remember_mode: Callable[[str, str], None] | None = None) -> None:
        self.url = check_api_url(url)
        self.search = search_url(url)
        self.http = http
        self._modes = modes if modes is not None else {}
        self._remember = remember_mode
        self.allow_http = urlparse(url).scheme == "http"

    def body(self, mode: str, collection: str, names: Iterable[str]) -> dict[str, Any]:
        """The search body for one body's names in ``mode`` (``query`` or ``filter``)."""
        names = list(names)
        body: dict[str, Any] = {"collections": [collection]}
        if mode == QUERY:
            body["query"] = {"ssys:targets": {"in": names}}
        else:
            body["filter-lang"] = "cql2-json"
            body["filter"] = {"op": "a_overlaps", "args": [{"property": "ssys:targets"}, names]}
        body["sortby"] = [{"field": "properties.version", "direction": "desc"}]
        body["limit"] = PAGE_SIZE
        return body

    def items(self, collection: str, names: Iterable[str]) -> list[Mapping[str, Any]]:
        """Every item of ``collection`` whose ``ssys:targets`` holds one of ``names``."""
        names = list(names)
        mode = self._modes.get(self.search, QUERY)
        status, data = self.http.json("POST", self.search, self.body(mode, collection, names))
        if status == 400 and mode == QUERY:
            log.info("%s rejected the query extension (%s); retrying with a CQL2 filter", self.search, _error_text(data))
            mode = FILTER
            status, data = self.http.json("POST", self.search, self.body(mode, collection, names))
            if status != 400:
                self._modes[self.search] = FILTER
                if self._remember:
                    self._remember(self.search, FILTER)
        if status == 400:
            raise CatalogError(f"{self.search}: HTTP 400: {_error_text(data)}", 400)
        items = _features(data, self.search)
        matched = _matched(data)
        previous_body = self.body(mode, collection, names)
        pages = 1
        while True:
            link = _next_link(data)
            if link is None or not data.get("features"):
                break
            if matched is not None and len(items) >= matched:
                break
            if pages >= MAX_PAGES:
                log.warning("%s: stopped after %d pages", self.search, pages)
                break
            href = urljoin(self.search, link["href"])
            method = str(link.get("method", "GET")).upper()
            body = link.get("body")
            if method == "POST":
                if link.get("merge") and isinstance(body, Mapping):
                    body = {**previous_body, **body}
                previous_body = dict(body) if isinstance(body, Mapping) else previous_body
            status, data = self.http.json(method, href, body if method == "POST" else None)
            if status == 400:
                raise CatalogError(f"{href}: HTTP 400: {_error_text(data)}", 400)
            items.extend(_features(data, href))
            pages += 1
        return items


class StaticCatalog:
    """A static STAC ItemCollection, Collection or Catalog (local path or URL).

    ``item`` and ``child`` links are followed; every item is loaded once.
    """

    def __init__(self, location: str, http: Http) -> None:
        self.location = location
        self.http = http
        self.allow_http = location.startswith("http://")
        self._items: list[Mapping[str, Any]] | None = None
        self._lock = threading.Lock()

    def _load(self, where: str) -> Any:
        if re.match(r"https?://", where):
            status, data = self.http.json("GET", where)
            if status >= 400:
                raise CatalogError(f"{where}: HTTP {status}: {_error_text(data)}", status)
            return data
        path = Path(where[7:] if where.startswith("file://") else where)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CatalogError(f"{path}: static catalog not found") from None
        except (OSError, ValueError) as exc:
            raise CatalogError(f"{path}: cannot read static catalog: {exc}") from None

    def items(self) -> list[Mapping[str, Any]]:
        """Every item reachable from the catalog."""
        with self._lock:
            if self._items is None:
                self._items = self._walk()
            return self._items

    def _walk(self) -> list[Mapping[str, Any]]:
        seen: set[str] = set()
        items: list[Mapping[str, Any]] = []
        todo = [self.location]
        while todo:
            where = todo.pop(0)
            if where in seen:
                continue
            seen.add(where)
            if len(seen) > 10000:
                raise CatalogError(f"{self.location}: more than 10000 documents in the static catalog")
            doc = self._load(where)
            if not isinstance(doc, Mapping):
                raise CatalogError(f"{where}: not a STAC document")
            kind = doc.get("type")
            if kind == "FeatureCollection":
                items.extend(_features(doc, where))
            elif kind == "Feature":
                items.append(doc)
            for link in doc.get("links") or ():
                if isinstance(link, Mapping) and link.get("rel") in ("item", "child", "items") and isinstance(link.get("href"), str):
                    todo.append(_resolve(where, link["href"]))
        return items


def _resolve(base: str, href: str) -> str:
    if re.match(r"[a-z]+://", href) or href.startswith("/"):
        return href
    if re.match(r"https?://", base):
        return urljoin(base, href)
    return str((Path(base).parent / href).resolve())
