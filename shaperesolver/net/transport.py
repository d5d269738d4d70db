"""HTTP for everything the package fetches: the only module that uses ``requests``.

What it promises, for every request (API search, static-catalog walk, the GDAL relay's
upstream, the mirror's downloads):

* **One deadline, from the first byte.**  Each exchange (connect, redirects, status,
  headers and body) is watched by one watchdog thread that shuts the connection down when
  its deadline comes, whatever the server drips; the caller gets a :class:`CatalogError`
  naming the URL and the deadline.  Per-read timeouts (:class:`HttpSettings`) still apply
  inside it.  A search or walk shares one deadline across its pages, retries and back-off
  (:class:`Budget`).
* **Every malformed answer classified here.**  A status line, header (``Location``,
  ``Content-Length``, encodings), URL or chunk that ``requests``, ``urllib3`` or the
  standard library cannot parse is a :class:`CatalogError` for that request ("no answer"),
  never a bare ``ValueError`` or a library exception; transport failures a caller may
  retry raise one of :func:`stream_errors`.
* **Connect to the address that was checked.**  A host name is looked up once
  (:func:`_lookup`, the package's only name lookup), each address is checked by the
  :class:`AddressPolicy` (no loopback, private or link-local hosts unless the API itself
  is one, http(s) only), and the connection goes to exactly those addresses, the name
  kept for TLS (SNI, certificate) and ``Host``.  A proxy the environment names for a URL
  makes that connection instead, as before (the connection to the proxy is watched by
  the deadline all the same).

Also: one ``requests.Session`` per thread, retries, byte and item caps, redirects
followed under the address rules, and JSON decoding with one-line errors.  ``requests``
is imported on first use and the watchdog starts on first use, so a run that sends
nothing never loads either.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import ParseResult, urljoin, urlparse

from .._version import __version__
from ..base import safeio
from ..errors import CatalogError, shorten

if TYPE_CHECKING:
    import requests

from ..base.log import get as get_logger
from .settings import CONTROL as _CONTROL
from .settings import HttpSettings, check_api_url

__all__ = ["HttpSettings", "Http", "Budget", "AddressPolicy", "check_api_url", "error_text", "stream_errors",
           "join_url"]

log = get_logger(__name__)

_REDIRECTS = (301, 302, 303, 307, 308)
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


# ------------------------------------------------------------------ addresses


class _NoAddress(CatalogError):
    """A host name that could not be looked up (a failure worth retrying)."""


def _lookup(host: str, port: int) -> list[str]:
    """The addresses ``host`` stands for, in the order to try them (an IP literal is its own).

    The package's only name lookup (``socket.getaddrinfo`` is called here and nowhere
    else): the address rules check what it returns and connections go to exactly that,
    so a name whose answer changes between two lookups cannot lead past the rules.
    """
    literal = host.strip("[]")
    try:
        ipaddress.ip_address(literal)
        return [literal]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:
        raise _NoAddress(f"cannot resolve host {host!r} ({exc})") from None
    found: list[str] = []
    for info in infos:
        ip = str(info[4][0])
        if ip not in found:
            found.append(ip)
    return found


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(address.split("%")[0])


def _category(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:  # 0.0.0.0, 0, [::]: Linux connects them to this machine
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if isinstance(ip, ipaddress.IPv6Address) and int(ip) >> 32 == 0:  # ::a.b.c.d (deprecated IPv4-compatible)
        return "reserved"
    if ip.is_link_local:
        return "link-local"
    if ip.is_private:
        return "private"
    if ip.is_global:
        return "public"
    return "reserved"


def _port(parts: ParseResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def _proxied(url: str) -> bool:
    """Whether the environment names a proxy for ``url`` (the proxy then connects)."""
    import requests

    return bool(requests.utils.get_environ_proxies(url).get(urlparse(url).scheme))


class AddressPolicy:
    """Where links and redirects a server sends may lead.

    Only ``http``/``https``.  Public addresses are always allowed (USGS's ``next``
    links point at another public host than its API URL); a loopback, link-local,
    private or reserved address only when the trusted ``base`` URL (the API or
    catalog the user chose) is itself on an address of that kind.  Checked before any
    connection is made, on the addresses the connection then goes to
    (:meth:`addresses`); the base host is looked up on first use, never at import.
    """

    def __init__(self, base: str) -> None:
        self.base = base
        self._allowed: set[str] | None = None
        self._lock = threading.Lock()

    def allowed(self) -> set[str]:
        with self._lock:
            if self._allowed is None:
                try:
                    parts = urlparse(self.base)
                    self._allowed = {_category(_ip(a)) for a in _lookup(parts.hostname or "", _port(parts))}
                except (CatalogError, ValueError):
                    self._allowed = set()
                self._allowed.add("public")
            return self._allowed

    def check(self, url: str, what: str, lookup: bool = True) -> str:
        """``url`` if a request to it may be sent, else a CatalogError saying why.

        ``lookup=False`` checks an IP-literal host only (a name is not looked up).
        """
        if not lookup:
            try:
                ipaddress.ip_address((_http_only(url, what).hostname or "").strip("[]"))
            except ValueError:
                return url
        self.addresses(url, what)
        return url

    def addresses(self, url: str, what: str) -> tuple[str, ...] | None:
        """The addresses a request to ``url`` may connect to: looked up once and each
        checked (a :class:`CatalogError` names the first refused), or None when the name
        cannot be looked up here but a proxy the environment names will connect for us
        (compute nodes behind one: no IP literal, so not a metadata or private address
        we could be steered to)."""
        parts = _http_only(url, what)
        host = parts.hostname or ""
        try:
            found = _lookup(host, _port(parts))
        except _NoAddress:
            if _proxied(url):
                return None
            raise
        allowed = self.allowed()
        for address in found:
            kind = _category(_ip(address))
            if kind not in allowed:
                raise CatalogError(f"refusing {what} {shorten(url, 100)!r}: {host} is a {kind} address ({address}), "
                                   f"{self._why_not()}")
        return tuple(found)

    def _why_not(self) -> str:
        return f"and {urlparse(self.base).hostname} is not"


class PublicOnly(AddressPolicy):
    """The rules for a URL no trusted source gave (a cube's label, audited with a local
    catalog): public addresses only."""

    def __init__(self) -> None:
        super().__init__("")

    def allowed(self) -> set[str]:
        return {"public"}

    def _why_not(self) -> str:
        return "and a URL that a label names may reach public addresses only (the catalog is local)"


class AnyAddress(AddressPolicy):
    """The rules for a catalog the user keeps on disk: any http(s) host its hrefs name."""

    def check(self, url: str, what: str, lookup: bool = True) -> str:
        _http_only(url, what)
        return url

    def addresses(self, url: str, what: str) -> tuple[str, ...] | None:
        _http_only(url, what)
        return None


def _http_only(url: str, what: str) -> ParseResult:
    try:
        parts = urlparse(url)
        parts.port  # noqa: B018 - a port that is not a number, or out of range, raises here
    except ValueError as exc:
        raise CatalogError(f"refusing {what} {shorten(url, 120)!r}: not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or _CONTROL.search(url):
        raise CatalogError(f"refusing {what} {shorten(url, 120)!r}: only http(s) URLs are followed")
    return parts


def join_url(base: str, ref: str, what: str = "link") -> str:
    """``ref`` read against ``base``; a reference that is not a URL is a :class:`CatalogError`
    naming ``base`` (no answer), never the ``ValueError`` of :func:`urllib.parse.urljoin`."""
    try:
        return urljoin(base, ref)
    except ValueError as exc:
        raise CatalogError(f"{shorten(base, 120)}: {what} {shorten(ref, 100)!r} is not a valid URL ({exc})") from None


def _origin(url: str) -> tuple[str, str, int]:
    p = urlparse(url)
    return (p.scheme, (p.hostname or "").lower(), _port(p))


# ------------------------------------------------------------------ the watchdog


class _Exchange:
    """One request as a whole: its deadline, the connections it uses (shut down when the
    deadline comes) and the addresses it may connect to."""

    def __init__(self, url: str, seconds: float, end: float | None = None) -> None:
        self.url = url
        self.seconds = seconds
        self.end = time.monotonic() + seconds if end is None else end
        #: (host, port) -> the addresses checked for it
        self.pins: dict[tuple[str, int], tuple[str, ...]] = {}
        #: address rules are in force: a host that was not pinned is not connected to
        self.strict = False
        self.fired = False
        self.finished = False
        self._conns: list[Any] = []
        self._lock = threading.Lock()

    def pin(self, url: str, policy: AddressPolicy | None, what: str) -> None:
        """Look ``url``'s host up once and check it (``policy``); connect only there."""
        parts = _http_only(url, what)
        found = None if policy is None else policy.addresses(url, what)
        if found is not None:
            self.pins[(parts.hostname or "", _port(parts))] = found
            self.strict = True

    def adopt(self, conn: Any) -> None:
        """Watch ``conn`` (a connection just made or taken from the pool) until the end."""
        previous = getattr(conn, "_exchange", None)
        if previous is not None and previous is not self:
            previous.release(conn)
        with self._lock:
            conn._exchange = self
            if self.fired:
                _shut(conn)
            elif not self.finished:
                self._conns.append(conn)

    def release(self, conn: Any) -> None:
        with self._lock:
            self._conns = [c for c in self._conns if c is not conn]

    def fire(self) -> None:
        """The deadline came: shut every connection of the exchange down."""
        with self._lock:
            if self.finished:
                return
            self.fired = True
            conns, self._conns = self._conns, []
            for conn in conns:
                _shut(conn)

    def finish(self) -> None:
        with self._lock:
            self.finished = True
            self._conns = []

    def expired(self) -> CatalogError:
        return CatalogError(f"{shorten(self.url, 120)}: no whole answer within {self.seconds:g} s (the deadline)")

    def check(self) -> None:
        if self.fired:
            raise self.expired()


def _shut(conn: Any) -> None:
    """End ``conn``'s TCP connection: a blocked read returns at once, whatever was dripping."""
    guard = getattr(conn, "_guard", None)
    if guard is not None:
        try:
            guard.shutdown(socket.SHUT_RDWR)
        except OSError:  # closed meanwhile
            pass


class _Watchdog:
    """One thread per process (started on first use) that fires exchanges at their deadline."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start afresh (a forked child has no watchdog thread, and nothing to watch)."""
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, _Exchange]] = []
        self._seq = itertools.count()
        self._running = False

    def watch(self, exchange: _Exchange) -> None:
        with self._cond:
            heapq.heappush(self._due, (exchange.end, next(self._seq), exchange))
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="shaperesolver-deadline", daemon=True).start()
            elif self._due[0][2] is exchange:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._due and self._due[0][2].finished:
                        heapq.heappop(self._due)
                    wait = self._due[0][0] - time.monotonic() if self._due else None
                    if wait is not None and wait <= 0:
                        break
                    self._cond.wait(wait)
                _, _, due = heapq.heappop(self._due)
            due.fire()


_WATCHDOG = _Watchdog()
os.register_at_fork(after_in_child=_WATCHDOG.reset)
#: the exchange each thread is making (the connections it opens or reuses join it)
_state = threading.local()


@contextmanager
def _watched(exchange: _Exchange, finish: bool = True) -> Iterator[_Exchange]:
    """Watch ``exchange`` while the block runs (and after it, with ``finish=False``, until
    it is finished elsewhere; an exception finishes it in any case)."""
    _WATCHDOG.watch(exchange)
    previous = getattr(_state, "exchange", None)
    _state.exchange = exchange
    try:
        yield exchange
    except BaseException:
        exchange.finish()
        raise
    else:
        if finish:
            exchange.finish()
    finally:
        _state.exchange = previous


def _bind(resp: requests.Response, exchange: _Exchange) -> None:
    """Keep ``exchange`` watching ``resp`` until the caller closes it."""
    close = resp.close

    def closing() -> None:
        try:
            close()
        finally:
            exchange.finish()

    resp.close = closing  # type: ignore[method-assign]


# ------------------------------------------------------------------ connections


def _connect(address: str, port: int, timeout: Any, source: Any, options: Any) -> socket.socket:
    """A TCP connection to exactly ``address`` (no name is looked up here)."""
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    try:
        for option in options or ():
            sock.setsockopt(*option)
        if isinstance(timeout, (int, float)):
            sock.settimeout(timeout)
        if source:
            sock.bind(source)
        sock.connect((address, port))
        return sock
    except BaseException:
        sock.close()
        raise


def _pinned(conn: Any, exchange: _Exchange | None) -> tuple[str, ...] | None:
    """The addresses ``conn`` may go to under ``exchange``'s rules (those checked for its
    host), or None where no rules apply: no exchange, no address policy, or a connection to
    a proxy the environment names (the proxy connects for us).  :class:`CatalogError` when
    rules apply and its host was not checked."""
    if exchange is None or getattr(conn, "_via_proxy", False):
        return None
    found = exchange.pins.get((str(conn._dns_host).lower(), conn.port))
    if found is None and exchange.strict:
        raise CatalogError(f"refusing to connect to {conn._dns_host}: its address was not checked")
    return found


def _new_socket(conn: Any) -> socket.socket:
    """The socket a connection of ours opens: to the addresses its exchange checked (or,
    where no address rules apply, looked up by :func:`_lookup`), watched by that exchange."""
    from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

    exchange: _Exchange | None = getattr(_state, "exchange", None)
    host = str(conn._dns_host)
    try:
        pinned = _pinned(conn, exchange)
    except CatalogError as exc:
        raise NewConnectionError(conn, str(exc)) from None
    if pinned is None:
        try:
            pinned = tuple(_lookup(host, conn.port))
        except _NoAddress as exc:
            raise NameResolutionError(host, conn, socket.gaierror(str(exc))) from None
    failure: Exception = NewConnectionError(conn, f"no address for {host}")
    for address in pinned:
        if exchange is not None and exchange.fired:
            break
        try:
            sock = _connect(address, conn.port, conn.timeout, conn.source_address, conn.socket_options)
        except TimeoutError:
            failure = ConnectTimeoutError(conn, f"connection to {host} ({address}) timed out")
            continue
        except OSError as exc:
            failure = NewConnectionError(conn, f"cannot connect to {host} ({address}): {exc}")
            continue
        conn._guard, conn._peer = sock.dup(), address  # the watchdog's handle, valid under TLS too
        if exchange is not None:
            exchange.adopt(conn)
        return sock
    raise failure


def _reuse(conn: Any) -> Any:
    """A pooled connection joins the current exchange, unless it goes to an address this
    exchange did not check (then it is closed and connects anew)."""
    exchange: _Exchange | None = getattr(_state, "exchange", None)
    if exchange is not None and conn is not None and conn.sock is not None:
        try:
            pinned = _pinned(conn, exchange)
        except CatalogError:
            pinned = ()
        if pinned is not None and getattr(conn, "_peer", None) not in pinned:
            conn.close()
        else:
            exchange.adopt(conn)
    return conn


_ADAPTER: type[Any] | None = None
_ADAPTER_LOCK = threading.Lock()


def _adapter() -> Any:
    """A ``requests`` adapter whose connections are made by :func:`_new_socket`: direct ones
    to the checked addresses, a proxy's (the proxy connects for us, as before) to the proxy;
    both watched by the deadline."""
    global _ADAPTER
    with _ADAPTER_LOCK:
        if _ADAPTER is None:
            import requests.adapters
            from urllib3.connection import HTTPConnection, HTTPSConnection
            from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

            class Connection(HTTPConnection):
                _guard: socket.socket | None = None
                _peer: str | None = None

                def _new_conn(self) -> socket.socket:
                    return _new_socket(self)

                def close(self) -> None:
                    try:
                        super().close()
                    finally:
                        guard, self._guard = self._guard, None
                        if guard is not None:
                            guard.close()

            class SecureConnection(Connection, HTTPSConnection):
                pass

            class ProxyConnection(Connection):
                _via_proxy = True

            class SecureProxyConnection(ProxyConnection, HTTPSConnection):
                pass

            def pools(plain: type[Any], secure: type[Any]) -> dict[str, type[Any]]:
                class Pool(HTTPConnectionPool):
                    ConnectionCls = plain

                    def _get_conn(self, timeout: float | None = None) -> Any:
                        return _reuse(super()._get_conn(timeout))

                class SecurePool(HTTPSConnectionPool):
                    ConnectionCls = secure

                    def _get_conn(self, timeout: float | None = None) -> Any:
                        return _reuse(super()._get_conn(timeout))

                return {"http": Pool, "https": SecurePool}

            direct, proxied = pools(Connection, SecureConnection), pools(ProxyConnection, SecureProxyConnection)

            class Adapter(requests.adapters.HTTPAdapter):
                def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
                    super().init_poolmanager(*args, **kwargs)
                    self.poolmanager.pool_classes_by_scheme = direct

                def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
                    manager = super().proxy_manager_for(proxy, **kwargs)
                    if not proxy.lower().startswith("socks"):  # (a SOCKS proxy's pools are its own)
                        manager.pool_classes_by_scheme = proxied
                    return manager

            _ADAPTER = Adapter
        return _ADAPTER()


# ------------------------------------------------------------------ failures


def _edge_errors() -> tuple[type[BaseException], ...]:
    """Everything sending a request or reading an answer can raise (:func:`_failure` sorts it)."""
    import http.client

    import requests
    import urllib3

    return (OSError, ValueError, http.client.HTTPException, urllib3.exceptions.HTTPError, requests.RequestException)


def _retryable(exc: BaseException) -> bool:
    """A failure to reach or hear the server (worth retrying), not a malformed answer."""
    import requests
    import urllib3

    if isinstance(exc, (_NoAddress, requests.ConnectionError, requests.Timeout, urllib3.exceptions.ProtocolError,
                        urllib3.exceptions.TimeoutError, urllib3.exceptions.SSLError, urllib3.exceptions.ProxyError)):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, requests.RequestException)


def _failure(exc: BaseException, url: str, exchange: _Exchange | None) -> BaseException:
    """What ``exc`` raised by a request to ``url`` means, as the error to raise: the deadline,
    or a malformed answer or URL (both a :class:`CatalogError`: no answer), or, returned as
    it is, a transport failure the caller may retry (one of :func:`stream_errors`)."""
    if exchange is not None and exchange.fired:
        return exchange.expired()
    if isinstance(exc, CatalogError) or _retryable(exc):
        return exc
    return CatalogError(f"{shorten(url, 120)}: malformed answer ({shorten(str(exc) or type(exc).__name__, 160)})")


_DIGITS = re.compile(r"[0-9]{1,18}")
_CONTENT_RANGE = re.compile(r"bytes (?:([0-9]{1,18})-([0-9]{1,18})|\*)/([0-9]{1,18}|\*)")


def _check_framing(resp: requests.Response, url: str) -> None:
    """Refuse an answer whose framing headers cannot be trusted (no answer), so that every
    caller reads ``Content-Length`` and ``Content-Range`` as plain ASCII numbers; a folded
    header line (obs-fold) is unfolded, as RFC 9112 asks of a client."""
    for name, value in list(resp.headers.items()):
        if "\r" in value or "\n" in value:
            resp.headers[name] = " ".join(value.split())
    status = resp.status_code
    length = resp.headers.get("Content-Length")
    if length is not None:
        if not _DIGITS.fullmatch(length.strip()):
            raise CatalogError(f"{shorten(url, 120)}: HTTP {status} with a malformed Content-Length {shorten(length, 40)!r}")
        resp.headers["Content-Length"] = length.strip()
    ranged = resp.headers.get("Content-Range")
    if ranged is not None:
        m = _CONTENT_RANGE.fullmatch(ranged.strip())
        whole = m.group(3) if m else "*"
        if not m or (m.group(1) is not None and (int(m.group(1)) > int(m.group(2))
                                                 or (whole != "*" and int(m.group(2)) >= int(whole)))):
            raise CatalogError(f"{shorten(url, 120)}: HTTP {status} with a malformed Content-Range {shorten(ranged, 60)!r}")
        resp.headers["Content-Range"] = ranged.strip()


# ------------------------------------------------------------------ requests


class Http:
    """One ``requests.Session`` per thread, with timeouts, retries, a size cap, the
    deadline's watchdog and connections to checked addresses only."""

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
            adapter = _adapter()
            s.mount("http://", adapter)
            s.mount("https://", adapter)
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
        answers with something malformed or not JSON, or the ``budget`` runs out (the
        watchdog cuts the connection then).  ``url`` and each redirect are connected to
        only at addresses ``policy`` allows, and a POST body is never re-sent to another
        origin.
        """
        import requests

        st = self.settings
        budget = budget or Budget(st, url)
        edge = _edge_errors()
        attempt = 0
        redirects = 0
        what = "request to"
        with _watched(_Exchange(url, st.deadline, budget.end)) as exchange:
            while True:
                attempt += 1
                left = budget.check_time()
                with self._count_lock:
                    self.requests_sent += 1
                try:
                    exchange.pin(url, policy, what)
                    resp = self.session.request(
                        method, url, json=body, timeout=(min(st.connect_timeout, left), min(st.read_timeout, left)),
                        stream=True, allow_redirects=False,
                    )
                except edge as exc:
                    failure = _failure(exc, url, exchange)
                    if failure is not exc or not _retryable(exc):
                        budget.check_time()
                        raise failure from None
                    budget.check_time()
                    if attempt <= st.retries:
                        delay = st.backoff * 2 ** (attempt - 1)
                        log.info("%s %s: %s; retrying in %.1f s", method, url, type(exc).__name__, delay)
                        self._pause(delay, budget)
                        continue
                    kind = "timed out" if isinstance(exc, requests.Timeout) else "cannot connect"
                    raise CatalogError(f"{url}: {kind} after {attempt} attempts ({shorten(str(exc), 160)})") from None
                resp._exchange = exchange  # type: ignore[attr-defined]  # (chunks tells a cut from an end)
                try:
                    exchange.check()
                    _check_framing(resp, url)
                    if resp.status_code in _REDIRECTS and resp.headers.get("Location"):
                        redirects += 1
                        target = join_url(url, resp.headers["Location"], f"HTTP {resp.status_code} redirect to")
                        if redirects > st.max_redirects:
                            raise CatalogError(f"{url}: more than {st.max_redirects} redirects")
                        _http_only(target, f"HTTP {resp.status_code} redirect from {shorten(url, 100)} to")  # (its
                        # addresses are checked when it is sent)
                        keep_body = resp.status_code in (307, 308)
                        if method == "POST" and keep_body and _origin(target) != _origin(url):
                            raise CatalogError(f"{url}: refusing to re-send the search body to another origin "
                                               f"(HTTP {resp.status_code} redirect to {shorten(target, 100)})")
                        log.info("%s %s: HTTP %d redirect to %s", method, url, resp.status_code, target)
                        if not keep_body and method != "GET":
                            method, body = "GET", None
                        url, what = target, "redirect to"
                        attempt -= 1  # a redirect is not a failed attempt
                        continue
                    if resp.status_code in (429, 502, 503, 504) and attempt <= st.retries:
                        delay = self._retry_after(resp, st.backoff * 2 ** (attempt - 1))
                        log.info("%s %s: HTTP %d; retrying in %.1f s", method, url, resp.status_code, delay)
                        self._pause(delay, budget)
                        continue
                    raw = self._read(resp, url, budget)
                    return resp.status_code, self._decode(resp, raw, url)
                except CatalogError:
                    if exchange.fired:
                        budget.check_time()
                    raise
                except edge as exc:
                    if exchange.fired:
                        budget.check_time()
                    raise _failure(exc, url, exchange) from None
                finally:
                    resp.close()

    def _pause(self, delay: float, budget: Budget) -> None:
        """Sleep before a retry, unless that would outlast the deadline."""
        if delay >= budget.remaining():
            budget.end = time.monotonic()  # waiting would outlast it: the deadline is reached now
            budget.check_time()
        self._sleep(delay)

    def stream(self, url: str, headers: Mapping[str, str], policy: AddressPolicy,
               what: str = "asset href", method: str = "GET", deadline: float | None = None,
               headers_within: float | None = None) -> tuple[requests.Response, str]:
        """GET (or HEAD) ``url`` with its body streamed, each hop connected to only at
        addresses ``policy`` allows; (the open response, the URL it came from).

        ``deadline`` seconds (default the settings') bound the whole exchange, body
        included, until the caller closes the response: the watchdog shuts the connection
        down then, and the read that was waiting raises :class:`CatalogError` (through
        :meth:`chunks`).  With ``headers_within``, only the part until the headers have
        come is bounded, by that many seconds (at most ``deadline``); the caller bounds the
        body itself (the mirror's low-speed limit).

        :class:`CatalogError`: the deadline, too many redirects, a refused address, or a
        malformed answer (status, headers, ``Location``).  Transport failures (a refused
        connection, a timeout, a reset) raise one of :func:`stream_errors`, which a caller
        may retry.
        """
        st = self.settings
        seconds = st.deadline if deadline is None else deadline
        if headers_within is not None:
            seconds = min(seconds, headers_within)
        target, hop = url, what
        with _watched(_Exchange(url, seconds), finish=False) as exchange:
            for _ in range(st.max_redirects + 1):
                left = exchange.end - time.monotonic()
                if left <= 0:
                    raise exchange.expired()
                try:
                    exchange.pin(target, policy, hop)
                    resp = self.session.request(method, target, headers=dict(headers), stream=True, allow_redirects=False,
                                                timeout=(min(st.connect_timeout, left), st.read_timeout))
                except _edge_errors() as exc:
                    failure = _failure(exc, target, exchange)
                    if failure is exc:
                        raise
                    raise failure from None
                try:
                    exchange.check()
                    _check_framing(resp, target)
                    if resp.status_code in _REDIRECTS and resp.headers.get("Location"):
                        target = join_url(target, resp.headers["Location"], f"HTTP {resp.status_code} redirect to")
                        hop = f"{what} redirect to"
                        resp.close()
                        continue
                except BaseException:
                    resp.close()
                    raise
                if headers_within is not None:
                    exchange.finish()
                else:
                    resp._exchange = exchange  # type: ignore[attr-defined]
                    _bind(resp, exchange)
                return resp, target
            raise CatalogError(f"{url}: more than {st.max_redirects} redirects")

    def _retry_after(self, resp: requests.Response, default: float) -> float:
        value = resp.headers.get("Retry-After", "").strip()
        if _DIGITS.fullmatch(value):
            return min(float(value), self.settings.max_retry_after)
        return default

    def _read(self, resp: requests.Response, url: str, budget: Budget) -> bytes:
        limit = self.settings.max_bytes
        declared = resp.headers.get("Content-Length")  # digits: _check_framing
        if declared is not None and int(declared) > limit:
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
        except stream_errors() as exc:
            budget.check_time()
            raise CatalogError(f"{url}: reading the response failed ({shorten(str(exc), 160)})") from None
        return b"".join(chunks)

    def chunks(self, resp: requests.Response, size: int, left: Callable[[], float] | None = None,
               decode: bool = False) -> Iterator[bytes]:
        """A streamed body as it arrives: each read returns as soon as anything has come,
        within the read timeout or the ``left()`` seconds, if fewer (``left`` raises when
        the caller's time is up), so a server dripping bytes cannot hold a caller past its
        clock.  ``decode`` undoes a Content-Encoding.  The deadline of the exchange, or a
        malformed body (chunking, encoding), raises :class:`CatalogError`; transport
        failures raise one of :func:`stream_errors`.
        """
        exchange: _Exchange | None = getattr(resp, "_exchange", None)
        edge = _edge_errors()
        while True:
            seconds = self.settings.read_timeout if left is None else min(self.settings.read_timeout, left())
            self._socket_timeout(resp, seconds)
            try:
                chunk = resp.raw.read1(size, decode_content=decode)
            except edge as exc:
                failure = _failure(exc, resp.url, exchange)
                if failure is exc and left is not None:
                    left()  # the caller's time ran out, rather than this read's
                if failure is exc:
                    raise
                raise failure from None
            if exchange is not None:
                exchange.check()  # an end of the body the watchdog made is no end
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
    """What reading a streamed response can raise (for the caller's ``except``), besides
    :class:`CatalogError`: transport failures, which a caller may retry."""
    import requests
    import urllib3

    return (requests.RequestException, urllib3.exceptions.HTTPError, OSError)
