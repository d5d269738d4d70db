"""HTTP for everything the package fetches: the only module that uses ``requests``.

It owns one ``requests.Session`` per thread, timeouts and retries (:class:`HttpSettings`),
the deadline and byte/item caps of one search or walk (:class:`Budget`), the address
rules a hostile answer cannot steer around (:class:`AddressPolicy`: no loopback, private
or link-local hosts unless the API itself is one, no non-http schemes, proxies
respected), redirects followed under those rules, and JSON decoding with one-line
errors.  ``requests`` is imported on first use, so a run that sends nothing never
loads it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import ParseResult, urljoin, urlparse

from .._version import __version__
from ..base import safeio
from ..errors import CatalogError, shorten

if TYPE_CHECKING:
    import requests

from .settings import CONTROL as _CONTROL
from .settings import HttpSettings, check_api_url

__all__ = ["HttpSettings", "Http", "Budget", "AddressPolicy", "check_api_url", "error_text", "stream_errors"]

log = logging.getLogger(__name__)



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
        parts = _http_only(url, what)
        host = parts.hostname or ""
        if not lookup:
            try:
                ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                return url
        allowed = self.allowed()
        try:
            addresses = _addresses(host, parts.port)
        except CatalogError:
            # a name only a configured proxy can resolve (compute nodes behind one): no IP
            # literal, so not a metadata or private address we could be steered to
            import requests

            if requests.utils.get_environ_proxies(url).get(parts.scheme):
                return url
            raise
        for ip in addresses:
            kind = _category(ip)
            if kind not in allowed:
                raise CatalogError(f"refusing {what} {shorten(url, 100)!r}: {host} is a {kind} address ({ip}), "
                                   f"and {urlparse(self.base).hostname} is not")
        return url


class AnyAddress(AddressPolicy):
    """The rules for a catalog the user keeps on disk: any http(s) host its hrefs name."""

    def check(self, url: str, what: str, lookup: bool = True) -> str:
        _http_only(url, what)
        return url


def _http_only(url: str, what: str) -> ParseResult:
    parts = urlparse(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or _CONTROL.search(url):
        raise CatalogError(f"refusing {what} {shorten(url, 120)!r}: only http(s) URLs are followed")
    return parts


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
            import requests

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
        import requests

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
                raise CatalogError(f"{url}: {kind} after {attempt} attempts ({shorten(str(exc), 160)})") from None
            except requests.RequestException as exc:
                raise CatalogError(f"{url}: request failed ({shorten(str(exc), 160)})") from None
            try:
                if resp.status_code in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
                    redirects += 1
                    target = urljoin(url, resp.headers["Location"])
                    if redirects > st.max_redirects:
                        raise CatalogError(f"{url}: more than {st.max_redirects} redirects")
                    keep_body = resp.status_code in (307, 308)
                    if method == "POST" and keep_body and _origin(target) != _origin(url):
                        raise CatalogError(f"{url}: refusing to re-send the search body to another origin "
                                           f"(HTTP {resp.status_code} redirect to {shorten(target, 100)})")
                    if policy is not None:
                        policy.check(target, "redirect to")
                    elif urlparse(target).scheme not in ("http", "https"):
                        raise CatalogError(f"{url}: refusing a redirect to {shorten(target, 100)!r}")
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

    def _pause(self, delay: float, budget: Budget) -> None:
        """Sleep before a retry, unless that would outlast the deadline."""
        if delay >= budget.remaining():
            budget.end = time.monotonic()  # waiting would outlast it: the deadline is reached now
            budget.check_time()
        self._sleep(delay)

    def stream(self, url: str, headers: Mapping[str, str], policy: AddressPolicy,
               what: str = "asset href", method: str = "GET") -> tuple[requests.Response, str]:
        """GET (or HEAD) ``url`` with its body streamed, each redirect checked against
        ``policy`` first; (the open response, the URL it came from).  :class:`CatalogError`
        after too many redirects.  The caller closes the response; transport failures
        raise one of :func:`stream_errors`.
        """
        st = self.settings
        target = url
        for _ in range(st.max_redirects + 1):
            policy.check(target, what if target == url else f"{what} redirect to")
            resp = self.session.request(method, target, headers=dict(headers), stream=True, allow_redirects=False,
                                        timeout=(st.connect_timeout, st.read_timeout))
            if resp.status_code in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
                resp.close()
                target = urljoin(target, resp.headers["Location"])
                continue
            return resp, target
        raise CatalogError(f"{url}: more than {st.max_redirects} redirects")

    def _retry_after(self, resp: requests.Response, default: float) -> float:
        value = resp.headers.get("Retry-After", "").strip()
        if value.isdigit():
            return min(float(value), self.settings.max_retry_after)
        return default

    def _read(self, resp: requests.Response, url: str, budget: Budget) -> bytes:
        import requests
        import urllib3

        limit = self.settings.max_bytes
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise CatalogError(f"{url}: response of {int(declared)} bytes is larger than the {limit}-byte limit")
        chunks = []
        size = 0
        try:
            for chunk in self.chunks(resp, 65536, budget.check_time, decode=True):
                size += len(chunk)
                if size > limit:
                    raise CatalogError(f"{url}: response is larger than the {limit}-byte limit")
                budget.add_bytes(len(chunk))
                chunks.append(chunk)
        except CatalogError:
            raise
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            budget.check_time()
            raise CatalogError(f"{url}: reading the response failed ({shorten(str(exc), 160)})") from None
        return b"".join(chunks)

    def chunks(self, resp: requests.Response, size: int, left: Callable[[], float] | None = None,
               decode: bool = False) -> Iterator[bytes]:
        """A streamed body as it arrives: each read returns as soon as anything has come,
        within the read timeout or the ``left()`` seconds, if fewer (``left`` raises when
        the caller's time is up), so a server dripping bytes cannot hold a caller past its
        clock.  ``decode`` undoes a Content-Encoding.  Transport failures raise one of
        :func:`stream_errors`.
        """
        while True:
            seconds = self.settings.read_timeout if left is None else min(self.settings.read_timeout, left())
            self._socket_timeout(resp, seconds)
            try:
                chunk = resp.raw.read1(size, decode_content=decode)
            except Exception:
                if left is not None:
                    left()  # the caller's time ran out, rather than this read's
                raise
            if not chunk:
                return
            yield chunk

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
            raise CatalogError(f"{url}: HTTP {status}, response is not JSON: {shorten(raw[:200].decode('utf-8', 'replace'))!r}", status) from None
        if status >= 500 or (status >= 400 and status != 400):
            raise CatalogError(f"{url}: HTTP {status}: {error_text(data)}", status)
        return data


def error_text(data: Any) -> str:
    if isinstance(data, Mapping):
        for key in ("description", "message", "detail", "error"):
            if data.get(key):
                code = data.get("code")
                return shorten(f"{code}: {data[key]}" if code else str(data[key]))
    return shorten(json.dumps(data))


def stream_errors() -> tuple[type[BaseException], ...]:
    """What reading a streamed response can raise (for the caller's ``except``)."""
    import requests
    import urllib3

    return (requests.RequestException, urllib3.exceptions.HTTPError, OSError)
