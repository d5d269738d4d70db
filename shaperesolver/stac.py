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

import ipaddress
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

import requests
import urllib3

from ._version import __version__
from . import safeio
from .errors import CatalogError, UnsafeFileError, UsageError, VersionNotFoundError

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
    "AddressPolicy",
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
    def local(self) -> bool:
        """True for a file of a local (mirrored) catalog."""
        return self.href.startswith("/")

    @property
    def vsi_path(self) -> str:
        """The path GDAL (and ISIS) open: ``/vsicurl/<href>``, or the local file's path."""
        return self.href if self.local else "/vsicurl/" + self.href


@dataclass(frozen=True)
class HttpSettings:
    """Timeouts, retries and limits for every request a resolver makes.

    ``connect_timeout`` / ``read_timeout`` bound each socket operation; ``deadline``
    bounds a whole search or static-catalog walk (every page, retry, redirect and
    back-off included).  ``max_bytes`` caps one response, ``max_total_bytes`` and
    ``max_items`` everything one search or walk reads.  Exceeding any of them is a
    :class:`CatalogError` (the resolver then falls back as for any web failure).
    """

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5
    max_retry_after: float = 60.0
    max_bytes: int = 20 * 2**20
    deadline: float = 120.0
    max_total_bytes: int = 64 * 2**20
    max_items: int = 100_000
    max_redirects: int = 5


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
                allow_http: bool, policy: AddressPolicy | None = None, local_root: str | None = None) -> Choice | None:
    """The highest (or pinned) version among ``items`` for ``names``; None if none matches.

    Items marked ``deprecated`` are skipped unless pinned.  A pin that matches nothing
    raises :class:`VersionNotFoundError`.  ``policy`` and ``local_root``: see :func:`check_href`.
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


def check_href(href: str, item_id: object, allow_http: bool, policy: AddressPolicy | None = None,
               local_root: str | None = None) -> str:
    """Refuse an asset href that is not a clean absolute https (or chosen http) URL.

    With ``policy`` (the API's or remote catalog's address rules) an IP-literal host must
    be of a kind the policy allows; a host name is looked up only when the model is
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
    if policy is not None:
        try:
            policy.check(href, "asset href", lookup=False)
        except CatalogError as exc:
            raise CatalogError(f"item {item_id}: {exc}") from None
    return href


def _check_local(path: str, item_id: object, root: str) -> str:
    if ".." in path.split("/"):
        raise CatalogError(f"item {item_id}: refusing asset href {path!r} ('..' in a local path)")
    real, top = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([real, top]) != top:
        raise CatalogError(f"item {item_id}: refusing asset href {path!r} (outside the catalog's directory {root})")
    return os.path.normpath(path)


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


class Budget:
    """Time, bytes and items left for one search or one catalog walk."""

    def __init__(self, settings: HttpSettings, what: str) -> None:
        self.settings = settings
        self.what = what
        self.end = time.monotonic() + settings.deadline
        self.bytes = 0
        self.items = 0

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def check_time(self) -> float:
        left = self.remaining()
        if left <= 0:
            raise CatalogError(f"{self.what}: gave up after the {self.settings.deadline:g} s deadline "
                               "(pages and retries included)")
        return left

    def add_bytes(self, n: int) -> None:
        self.bytes += n
        if self.bytes > self.settings.max_total_bytes:
            raise CatalogError(f"{self.what}: more than {self.settings.max_total_bytes} bytes in all "
                               "(the limit across pages)")

    def add_items(self, n: int) -> None:
        self.items += n
        if self.items > self.settings.max_items:
            raise CatalogError(f"{self.what}: more than {self.settings.max_items} items in all (the limit across pages)")


def _category(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_private:
        return "private"
    if ip.is_global:
        return "public"
    return "reserved"


def _addresses(host: str, port: int | None) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses ``host`` stands for (an IP literal is not looked up)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise CatalogError(f"cannot resolve host {host!r} ({exc})") from None
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


class AddressPolicy:
    """Where links and redirects a server sends may lead.

    Only ``http``/``https``.  Public addresses are always allowed (USGS's ``next``
    links point at another public host than its API URL); a loopback, link-local,
    private or reserved address only when the trusted ``base`` URL (the API or
    catalog the user chose) is itself on an address of that kind.  Checked before any
    connection is made; the base host is looked up on first use, never at import.
    """

    def __init__(self, base: str) -> None:
        self.base = base
        self._allowed: set[str] | None = None
        self._lock = threading.Lock()

    def allowed(self) -> set[str]:
        with self._lock:
            if self._allowed is None:
                parts = urlparse(self.base)
                try:
                    self._allowed = {_category(ip) for ip in _addresses(parts.hostname or "", parts.port)}
                except CatalogError:
                    self._allowed = set()
                self._allowed.add("public")
            return self._allowed

    def check(self, url: str, what: str, lookup: bool = True) -> str:
        """``url`` if a request to it may be sent, else a CatalogError saying why.

        ``lookup=False`` checks an IP-literal host only (a name is not looked up).
        """
        parts = urlparse(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or _CONTROL.search(url):
            raise CatalogError(f"refusing {what} {_short(url, 120)!r}: only http(s) URLs are followed")
        if not lookup:
            try:
                ipaddress.ip_address(parts.hostname.strip("[]"))
            except ValueError:
                return url
        allowed = self.allowed()
        try:
            addresses = _addresses(parts.hostname, parts.port)
        except CatalogError:
            # a name only a configured proxy can resolve (compute nodes behind one): no IP
            # literal, so not a metadata or private address we could be steered to
            if requests.utils.get_environ_proxies(url).get(parts.scheme):
                return url
            raise
        for ip in addresses:
            kind = _category(ip)
            if kind not in allowed:
                raise CatalogError(f"refusing {what} {_short(url, 100)!r}: {parts.hostname} is a {kind} address ({ip}), "
                                   f"and {urlparse(self.base).hostname} is not")
        return url


def _origin(url: str) -> tuple[str, str, int | None]:
    p = urlparse(url)
    return (p.scheme, (p.hostname or "").lower(), p.port or {"http": 80, "https": 443}.get(p.scheme))


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

    def json(self, method: str, url: str, body: Any = None, budget: Budget | None = None,
             policy: AddressPolicy | None = None) -> tuple[int, Any]:
        """Send a request with retries; return (status, decoded JSON) for 2xx and 4xx.

        Raises :class:`CatalogError` when the server cannot be reached, keeps failing,
        answers with something that is not JSON, or the ``budget`` runs out.
        Redirects are followed only to URLs ``policy`` allows, and a POST body is
        never re-sent to another origin.
        """
        st = self.settings
        budget = budget or Budget(st, url)
        attempt = 0
        redirects = 0
        while True:
            attempt += 1
            left = budget.check_time()
            with self._count_lock:
                self.requests_sent += 1
            try:
                resp = self.session.request(
                    method, url, json=body, timeout=(min(st.connect_timeout, left), min(st.read_timeout, left)),
                    stream=True, allow_redirects=False,
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                budget.check_time()
                if attempt <= st.retries:
                    delay = st.backoff * 2 ** (attempt - 1)
                    log.info("%s %s: %s; retrying in %.1f s", method, url, type(exc).__name__, delay)
                    self._pause(delay, budget)
                    continue
                kind = "timed out" if isinstance(exc, requests.Timeout) else "cannot connect"
                raise CatalogError(f"{url}: {kind} after {attempt} attempts ({_short(str(exc), 160)})") from None
            except requests.RequestException as exc:
                raise CatalogError(f"{url}: request failed ({_short(str(exc), 160)})") from None
            try:
                if resp.status_code in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
                    redirects += 1
                    target = urljoin(url, resp.headers["Location"])
                    if redirects > st.max_redirects:
                        raise CatalogError(f"{url}: more than {st.max_redirects} redirects")
                    keep_body = resp.status_code in (307, 308)
                    if method == "POST" and keep_body and _origin(target) != _origin(url):
                        raise CatalogError(f"{url}: refusing to re-send the search body to another origin "
                                           f"(HTTP {resp.status_code} redirect to {_short(target, 100)})")
                    if policy is not None:
                        policy.check(target, "redirect to")
                    elif urlparse(target).scheme not in ("http", "https"):
                        raise CatalogError(f"{url}: refusing a redirect to {_short(target, 100)!r}")
                    log.info("%s %s: HTTP %d redirect to %s", method, url, resp.status_code, target)
                    if not keep_body and method != "GET":
                        method, body = "GET", None
                    url = target
                    attempt -= 1  # a redirect is not a failed attempt
                    continue
                if resp.status_code in (429, 502, 503, 504) and attempt <= st.retries:
                    delay = self._retry_after(resp, st.backoff * 2 ** (attempt - 1))
                    log.info("%s %s: HTTP %d; retrying in %.1f s", method, url, resp.status_code, delay)
                    self._pause(delay, budget)
                    continue
                raw = self._read(resp, url, budget)
                return resp.status_code, self._decode(resp, raw, url)
            finally:
                resp.close()

    def final_url(self, url: str, policy: AddressPolicy, what: str = "model") -> str:
        """Where ``url`` ends after redirects, found with HEAD requests (never their bodies).

        Every hop is checked by ``policy`` before it is contacted, so GDAL is then given
        a URL it may open; a redirect to an address the policy refuses is a
        :class:`CatalogError`, as is a server that cannot be reached.
        """
        st = self.settings
        budget = Budget(st, f"{what} {url}")
        policy.check(url, what)
        for _ in range(st.max_redirects + 1):
            left = budget.check_time()
            try:
                resp = self.session.head(url, timeout=(min(st.connect_timeout, left), min(st.read_timeout, left)),
                                         allow_redirects=False)
            except requests.RequestException as exc:
                raise CatalogError(f"{url}: cannot reach the {what} ({_short(str(exc), 160)})") from None
            resp.close()
            location = resp.headers.get("Location")
            if resp.status_code not in (301, 302, 303, 307, 308) or not location:
                return url
            target = urljoin(url, location)
            policy.check(target, f"{what} redirect from {_short(url, 100)} to")
            log.info("HEAD %s: HTTP %d redirect to %s", url, resp.status_code, target)
            url = target
        raise CatalogError(f"{url}: more than {st.max_redirects} redirects")

    def _pause(self, delay: float, budget: Budget) -> None:
        """Sleep before a retry, unless that would outlast the deadline."""
        if delay >= budget.remaining():
            budget.end = time.monotonic()  # waiting would outlast it: the deadline is reached now
            budget.check_time()
        self._sleep(delay)

    def _retry_after(self, resp: requests.Response, default: float) -> float:
        value = resp.headers.get("Retry-After", "").strip()
        if value.isdigit():
            return min(float(value), self.settings.max_retry_after)
        return default

    def _read(self, resp: requests.Response, url: str, budget: Budget) -> bytes:
        limit = self.settings.max_bytes
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise CatalogError(f"{url}: response of {int(declared)} bytes is larger than the {limit}-byte limit")
        chunks = []
        size = 0
        try:
            while True:
                left = budget.check_time()
                self._socket_timeout(resp, min(self.settings.read_timeout, left))
                chunk = resp.raw.read1(65536, decode_content=True)  # returns as soon as anything arrives
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise CatalogError(f"{url}: response is larger than the {limit}-byte limit")
                budget.add_bytes(len(chunk))
                chunks.append(chunk)
        except CatalogError:
            raise
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            budget.check_time()
            raise CatalogError(f"{url}: reading the response failed ({_short(str(exc), 160)})") from None
        return b"".join(chunks)

    @staticmethod
    def _socket_timeout(resp: requests.Response, seconds: float) -> None:
        """Shorten the socket's timeout so a slow body cannot outlast the deadline."""
        conn = getattr(resp.raw, "connection", None)
        sock = getattr(conn, "sock", None)
        if sock is not None:
            try:
                sock.settimeout(max(0.01, seconds))
            except OSError:  # pragma: no cover - closed meanwhile
                pass

    def _decode(self, resp: requests.Response, raw: bytes, url: str) -> Any:
        status = resp.status_code
        ctype = resp.headers.get("Content-Type", "")
        if not safeio.json_depth_ok(raw):
            raise CatalogError(f"{url}: HTTP {status}, JSON nested more than {safeio.MAX_JSON_DEPTH} levels deep", status)
        try:
            data = json.loads(raw)
        except RecursionError:  # pragma: no cover - the depth check comes first
            raise CatalogError(f"{url}: HTTP {status}, JSON nested too deeply", status) from None
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
        self.policy = AddressPolicy(self.url)

    def body(self, mode: str, collection: str, names: Iterable[str] | None) -> dict[str, Any]:
        """The search body for one body's names in ``mode`` (``query`` or ``filter``); all items for None."""
        names = None if names is None else list(names)
        body: dict[str, Any] = {"collections": [collection]}
        if names is None:
            pass
        elif mode == QUERY:
            body["query"] = {"ssys:targets": {"in": names}}
        else:
            body["filter-lang"] = "cql2-json"
            body["filter"] = {"op": "a_overlaps", "args": [{"property": "ssys:targets"}, names]}
        body["sortby"] = [{"field": "properties.version", "direction": "desc"}]
        body["limit"] = PAGE_SIZE
        return body

    def items(self, collection: str, names: Iterable[str] | None) -> list[Mapping[str, Any]]:
        """Every item of ``collection`` whose ``ssys:targets`` holds one of ``names`` (None: every item).

        One :class:`Budget` (deadline, total bytes, items) covers every page and retry.
        ``next`` links are followed only with GET or POST, to URLs the client's
        :class:`AddressPolicy` allows.
        """
        names = None if names is None else list(names)
        budget = Budget(self.http.settings, f"search at {self.search}")
        mode = self._modes.get(self.search, QUERY)
        status, data = self.http.json("POST", self.search, self.body(mode, collection, names), budget, self.policy)
        if status == 400 and mode == QUERY:
            log.info("%s rejected the query extension (%s); retrying with a CQL2 filter", self.search, _error_text(data))
            mode = FILTER
            status, data = self.http.json("POST", self.search, self.body(mode, collection, names), budget, self.policy)
            if status != 400:
                self._modes[self.search] = FILTER
                if self._remember:
                    self._remember(self.search, FILTER)
        if status == 400:
            raise CatalogError(f"{self.search}: HTTP 400: {_error_text(data)}", 400)
        items = _features(data, self.search)
        budget.add_items(len(items))
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
            method = str(link.get("method", "GET")).upper()
            if method not in ("GET", "POST"):
                raise CatalogError(f"{self.search}: refusing a next link with method {_short(method, 20)!r} "
                                   "(STAC next links are GET or POST)")
            href = self.policy.check(urljoin(self.search, link["href"]), "next link")
            body = link.get("body")
            if method == "POST":
                if link.get("merge") and isinstance(body, Mapping):
                    body = {**previous_body, **body}
                previous_body = dict(body) if isinstance(body, Mapping) else previous_body
            status, data = self.http.json(method, href, body if method == "POST" else None, budget, self.policy)
            if status == 400:
                raise CatalogError(f"{href}: HTTP 400: {_error_text(data)}", 400)
            page = _features(data, href)
            budget.add_items(len(page))
            items.extend(page)
            pages += 1
        return items


class StaticCatalog:
    """A static STAC ItemCollection, Collection or Catalog (local path or URL).

    ``item`` and ``child`` links are followed; every item is loaded once.  A remote
    catalog's links must stay http(s) URLs the :class:`AddressPolicy` allows (a
    ``file:`` link or an absolute path is never read from disk); a local catalog's
    links must stay local files, each a regular file of at most ``max_bytes``.  One
    :class:`Budget` covers the whole walk.  A local catalog may be given as its
    directory (``catalog.json`` in it); its relative asset hrefs are files relative to
    the item's document and must stay in the catalog's directory (:func:`check_href`).
    """

    def __init__(self, location: str, http: Http) -> None:
        self.location = location
        self.http = http
        self.remote = bool(re.match(r"https?://", location))
        self.allow_http = location.startswith("http://")
        self.policy = AddressPolicy(location) if self.remote else None
        self._items: list[Mapping[str, Any]] | None = None
        self._lock = threading.Lock()

    @property
    def local_root(self) -> str | None:
        """The directory local asset files must stay in (None for a remote catalog)."""
        if self.remote:
            return None
        path = self.location[7:] if self.location.startswith("file://") else self.location
        return path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))

    def _load(self, where: str, budget: Budget) -> Any:
        if self.remote:
            status, data = self.http.json("GET", where, None, budget, self.policy)
            if status >= 400:
                raise CatalogError(f"{where}: HTTP {status}: {_error_text(data)}", status)
            return data
        path = Path(where[7:] if where.startswith("file://") else where)
        budget.check_time()
        try:
            raw, _ = safeio.read_regular(path, self.http.settings.max_bytes, what="static catalog file")
        except UnsafeFileError as exc:
            if exc.errno == 2:
                raise CatalogError(f"{path}: static catalog not found") from None
            raise CatalogError(f"cannot read static catalog: {exc}") from None
        budget.add_bytes(len(raw))
        try:
            return safeio.loads_json(raw, str(path))
        except ValueError as exc:
            raise CatalogError(f"cannot read static catalog: {_short(str(exc))}") from None

    def items(self) -> list[Mapping[str, Any]]:
        """Every item reachable from the catalog."""
        with self._lock:
            if self._items is None:
                self._items = self._walk()
            return self._items

    def _walk(self) -> list[Mapping[str, Any]]:
        budget = Budget(self.http.settings, f"static catalog {self.location}")
        seen: set[str] = set()
        items: list[Mapping[str, Any]] = []
        start = self.location
        if not self.remote and self.local_root == (start[7:] if start.startswith("file://") else start):
            start = os.path.join(start, "catalog.json")
        todo = [start]
        while todo:
            where = todo.pop(0)
            if where in seen:
                continue
            seen.add(where)
            if len(seen) > 10000:
                raise CatalogError(f"{self.location}: more than 10000 documents in the static catalog")
            doc = self._load(where, budget)
            if not isinstance(doc, Mapping):
                raise CatalogError(f"{where}: not a STAC document")
            kind = doc.get("type")
            found: list[Mapping[str, Any]] = []
            if kind == "FeatureCollection":
                found = _features(doc, where)
            elif kind == "Feature":
                found = [doc]
            budget.add_items(len(found))
            items.extend(found if self.remote else (_local_assets(it, where) for it in found))
            for link in doc.get("links") or ():
                if isinstance(link, Mapping) and link.get("rel") in ("item", "child", "items") and isinstance(link.get("href"), str):
                    todo.append(self._link(where, link["href"]))
        return items

    def _link(self, base: str, href: str) -> str:
        if self.remote:
            target = urljoin(base, href)  # "/x" stays on the server; "file:..." stays file:
            assert self.policy is not None
            try:
                return self.policy.check(target, "catalog link")
            except CatalogError as exc:
                raise CatalogError(f"{base}: {exc} (a remote catalog's links must stay remote)") from None
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", href) and not href.startswith("file://"):
            raise CatalogError(f"{base}: refusing catalog link {_short(href, 100)!r}: a local catalog's links must be local files")
        return _resolve(base, href)


def _local_assets(item: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """``item`` with relative (and ``file://``) asset hrefs made absolute against ``where``."""
    assets = item.get("assets")
    if not isinstance(assets, Mapping):
        return item
    fixed: dict[str, Any] = {}
    for key, asset in assets.items():
        href = asset.get("href") if isinstance(asset, Mapping) else None
        if isinstance(href, str) and (href.startswith("file://") or not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", href)):
            body = href[7:] if href.startswith("file://") else re.sub(r"^(?:\./)+", "", href)
            asset = {**asset, "href": body if body.startswith("/") else os.path.join(os.path.abspath(os.path.dirname(where)), body)}
        fixed[key] = asset
    return {**item, "assets": fixed}


def _resolve(base: str, href: str) -> str:
    if href.startswith("file://"):
        return href[7:]
    if href.startswith("/"):
        return href
    return str((Path(base).parent / href).resolve())
