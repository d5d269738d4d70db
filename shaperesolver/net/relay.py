"""GDAL's only road to a web model: a careful relay on 127.0.0.1 that fetches through :class:`Http`.

libcurl inside GDAL follows any redirect a server sends to its GET (GDAL has no option
to stop it), so a model host could answer our checks with 200 and send GDAL to a
loopback admin port or a cloud metadata address.  GDAL is therefore never given a web
URL: it opens ``/vsicurl/http://127.0.0.1:PORT/TOKEN/name.tif`` and this relay makes
each request it receives (``Range`` passed on) with ``requests``, checking every hop
against the API's :class:`AddressPolicy`.  GDAL sees only the relay, which never
redirects; a refused hop is a 403 whose reason :meth:`Relay.failure` gives back.

What the relay promises, whoever connects to it:

* **Only the user's own processes are served.**  A connection whose peer socket belongs
  to another uid (read from ``/proc/net/tcp`` and ``tcp6`` on Linux, before any thread is
  started) is closed at once; a route is reachable only through its random token.
* **Bounded work.**  At most :data:`MAX_CONNECTIONS` connections are served at once (more
  are closed at once, never given a thread); each must send a whole request within
  :data:`REQUEST_SECONDS` of connecting or of its last answer (an idle one is closed
  then), and a watchdog cuts it when a request outlives the settings' deadline; the
  listen backlog is :data:`BACKLOG`.  Resets and broken pipes are logged at debug,
  never a traceback.
* **Streamed answers.**  Upstream bytes pass to GDAL through a buffer of
  :data:`BUFFER_BYTES` (no answer is held whole, so no size cap but the deadline); a
  server that ignores ``Range`` is answered for it (GDAL gets only the range it asked
  for); an answer cut upstream is cut for GDAL too (never passed on as whole).
* **Failures remembered per request.**  :meth:`Relay.failure` names a failure of a
  request made since a :meth:`Relay.mark`, and only while no later request on that route
  succeeded (a status GDAL recovered from is never blamed for a later, different failure).
* **No port or token printed.**  :func:`unmask` turns relay URLs in any text (GDAL's
  messages, our own log lines) back into the model's real URL.

The server starts on first use (never at import), once per process (a forked worker
starts its own), on 127.0.0.1 only; a route lives as long as the process (one per model
URL and address policy).  :func:`gdal_config` is GDAL's side of the same settings:
timeouts and retries that end with the relay's deadline, and no proxy.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import secrets
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from posixpath import basename
from socketserver import TCPServer
from typing import Any
from urllib.parse import urlparse

from ..base.log import get as get_logger
from ..errors import CatalogError, shorten
from .settings import HttpSettings
from .transport import AddressPolicy, Http, stream_errors

__all__ = ["Relay", "RELAY", "GDAL_NO_PROXY", "gdal_config", "unmask", "peer_uid",
           "MAX_CONNECTIONS", "BACKLOG", "REQUEST_SECONDS", "BUFFER_BYTES"]

log = get_logger(__name__)

#: Connections served at once (one thread each); more are closed as they are accepted.
MAX_CONNECTIONS = 64
#: Connections the kernel queues before the relay accepts them.
BACKLOG = 128
#: Seconds a connection has to send a whole request (line and headers) after it is
#: accepted or its last answer was sent; also the limit of each read or write until then.
REQUEST_SECONDS = 10.0
#: Bytes of an answer held at once on their way from the model host to GDAL.
BUFFER_BYTES = 1 << 16
#: GDAL config that keeps libcurl off any proxy the environment names: the relay is local.
GDAL_NO_PROXY = {"GDAL_HTTP_PROXY": "", "GDAL_HTTPS_PROXY": ""}
_PASSED_ON = ("Content-Type", "Accept-Ranges", "Last-Modified", "ETag")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_TOKEN = r"[A-Za-z0-9_-]{32}"  # secrets.token_urlsafe(24)
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def gdal_config(settings: HttpSettings) -> dict[str, str]:
    """GDAL config for reading through the relay under ``settings``: no proxy, and
    timeouts and retries that line up with the relay's: each of GDAL's requests is cut by
    the relay at the deadline (with its reason), GDAL's own clock one second later only
    as a backstop, and a failure is retried ``retries`` times after ``backoff`` seconds."""
    return {**GDAL_NO_PROXY,
            "GDAL_HTTP_CONNECTTIMEOUT": f"{max(1, math.ceil(settings.connect_timeout))}",
            "GDAL_HTTP_TIMEOUT": f"{math.ceil(settings.deadline) + 1}",
            "GDAL_HTTP_MAX_RETRY": f"{max(0, settings.retries)}",
            "GDAL_HTTP_RETRY_DELAY": f"{max(0.0, settings.backoff):g}"}


# ------------------------------------------------------------------ whose connection


def _proc_address(ip: str, port: int, v6: bool) -> str:
    """An address as /proc/net/tcp (or tcp6) prints it: 32-bit words in host order, in hex."""
    if v6:
        raw = ipaddress.IPv6Address(f"::ffff:{ip}" if "." in ip else ip).packed
    else:
        raw = socket.inet_aton(ip)
    words = struct.unpack(f"={len(raw) // 4}I", raw)
    return "".join(f"{w:08X}" for w in words) + f":{port:04X}"


#: TCP states in which a connecting socket still has its owner (ESTABLISHED, CLOSE_WAIT):
#: a socket its owner already closed is an orphan the kernel lists as uid 0
_OWNED_STATES = ("01", "08")


def owners(tables: Iterable[str] = ("/proc/net/tcp", "/proc/net/tcp6"), port: int | None = None) -> dict[tuple[str, str], int]:
    """One read of the kernel's TCP tables: (local address, remote address) as the tables
    print them -> the owning uid, for sockets that still have an owner (an orphan's row,
    inode 0, says uid 0 whoever made it, and is left out).  :class:`OSError` when no table
    can be read (not Linux).  With ``port``, only rows that name it are parsed (a long
    table a neighbour made costs a substring search per row, not a split)."""
    found: dict[tuple[str, str], int] = {}
    mark = f":{port:04X} " if port is not None else ""
    read = 0
    for table in tables:
        try:
            with open(table, encoding="ascii", errors="replace") as f:
                read += 1
                next(f, None)  # the column names
                for line in f:
                    if mark not in line:
                        continue
                    cols = line.split()
                    if len(cols) > 9 and cols[3] in _OWNED_STATES and cols[9] != "0":
                        found[(cols[1], cols[2])] = int(cols[7])
        except FileNotFoundError:  # no IPv6 (tcp6), or no /proc
            continue
    if not read:
        raise OSError("no /proc/net/tcp to tell a connection's owner")
    return found


def peer_uid(peer: tuple[str, int], server: tuple[str, int], table: dict[tuple[str, str], int] | None = None) -> int | None:
    """The uid owning the TCP socket at ``peer`` that is connected to ``server`` (both
    IPv4 on this machine), from ``table`` (:func:`owners`; read now when not given).
    None when no owned socket is listed (it is gone, or orphaned)."""
    table = owners() if table is None else table
    for v6 in (False, True):
        uid = table.get((_proc_address(peer[0], peer[1], v6), _proc_address(server[0], server[1], v6)))
        if uid is not None:
            return uid
    return None


# ------------------------------------------------------------------ routes


@dataclass(eq=False)
class _Route:
    url: str
    http: Http
    policy: AddressPolicy
    failures: list[tuple[int, str]] = field(default_factory=list)  # (request number, reason), since the last success


class _Cut(Exception):
    """The answer could not be completed: the connection to GDAL is dropped unfinished."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_SECONDS  # each read and write until the request is known
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("relay: %s", unmask(format % args))

    def handle(self) -> None:
        """Requests until GDAL closes the connection or sends none within :data:`REQUEST_SECONDS`."""
        self.close_connection = False
        while not self.close_connection:
            self.server.watch(self.connection, REQUEST_SECONDS)
            self.connection.settimeout(REQUEST_SECONDS)
            self.handle_one_request()

    def do_HEAD(self) -> None:
        self._relay("HEAD")

    def do_GET(self) -> None:
        self._relay("GET")

    def finish(self) -> None:
        try:
            super().finish()
        except OSError as exc:  # GDAL went away while the last bytes were flushed
            log.debug("relay: connection ended: %s", exc)
        finally:
            for route in self.server.used.pop(threading.get_ident(), ()):
                route.http.close()  # this thread's session

    def _answer(self, status: int, reason: str) -> None:
        body = reason.encode("utf-8", "replace")[:300]
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _relay(self, method: str) -> None:
        token = self.path.split("/")[1] if self.path.count("/") >= 2 else ""
        relay = self.server.relay
        route = relay.route(token)
        if route is None:
            self._answer(404, "no such route")
            return
        st = route.http.settings
        end = time.monotonic() + st.deadline
        self.server.watch(self.connection, st.deadline + 2)  # the backstop of the checks below
        self.connection.settimeout(max(REQUEST_SECONDS, st.read_timeout))
        self.server.used.setdefault(threading.get_ident(), set()).add(route)
        seq = relay.next_request()
        name = shorten(route.url, 120)

        def left() -> float:
            if time.monotonic() >= end:
                raise CatalogError(f"{name}: no whole answer within {st.deadline:g} s")
            return end - time.monotonic()

        wanted = _RANGE.fullmatch(self.headers.get("Range", "").strip())
        headers = {"Accept": "*/*", "Accept-Encoding": "identity"}
        if self.headers.get("Range"):
            headers["Range"] = self.headers["Range"]
        probe = False
        try:
            resp, _ = route.http.stream(route.url, headers, route.policy, "model", method=method)
            if method == "HEAD" and resp.status_code in (405, 501):  # a host that refuses HEAD (GDAL would then
                resp.close()  # GET the whole file): its first byte tells the size
                resp, _ = route.http.stream(route.url, {**headers, "Range": "bytes=0-0"}, route.policy, "model")
                probe = True
        except CatalogError as exc:  # a refused hop, too many redirects
            relay.failed(route, seq, str(exc))
            self._answer(403, str(exc))  # (403: GDAL does not retry it)
            return
        except stream_errors() as exc:  # (503: GDAL retries it, as it would have retried the server)
            why = f"{name}: no answer from its server ({shorten(str(exc), 160)})"
            relay.failed(route, seq, why)
            self._answer(503, why)
            return
        try:
            self._pass_on(resp, method, route, seq, wanted, left, probe)
        except _Cut as exc:
            relay.failed(route, seq, str(exc))
            self.close_connection = True
            try:  # GDAL must see an unfinished answer, never a short one as whole
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        finally:
            resp.close()

    def _pass_on(self, resp: Any, method: str, route: _Route, seq: int, wanted: re.Match[str] | None,
                 left: Callable[[], float], probe: bool = False) -> None:
        """Send GDAL the answer's status and headers, then its body as it arrives.  The
        outcome is recorded before GDAL can see it."""
        status, size, skip, content_range = _shape(resp, method, wanted, probe, route.url)
        try:
            left()
        except CatalogError as exc:  # the headers alone took the whole deadline
            raise _Cut(str(exc)) from None
        if status >= 400:
            self.server.relay.failed(route, seq, f"{shorten(route.url, 120)}: HTTP {status}")
        else:
            self.server.relay.succeeded(route)
        self.send_response(status)
        for key in _PASSED_ON:
            if resp.headers.get(key):
                self.send_header(key, resp.headers[key])
        if content_range:
            self.send_header("Content-Range", content_range)
        chunked = size is None and method == "GET"  # (a cut answer is then seen as cut, as with a length)
        if size is not None:
            self.send_header("Content-Length", str(size))
        elif chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if method == "HEAD":
            return
        sent = 0
        for chunk in self._body(resp, route, left):
            if skip:
                drop = min(skip, len(chunk))
                chunk, skip = chunk[drop:], skip - drop
            if size is not None:
                chunk = chunk[: size - sent]
            if chunk and not self._send(chunk, chunked):
                return  # GDAL had what it wanted and hung up
            sent += len(chunk)
            if size is not None and sent >= size:
                return
        if size is not None and sent < size:
            raise _Cut(f"{shorten(route.url, 120)}: the answer ended after {sent} of {size} bytes")
        if chunked:
            self._send(b"", chunked)

    @staticmethod
    def _body(resp: Any, route: _Route, left: Callable[[], float]) -> Any:
        """The upstream body, a buffer at a time; :class:`_Cut` when it fails or is late."""
        try:
            yield from route.http.chunks(resp, BUFFER_BYTES, left, decode=True)
        except CatalogError as exc:
            raise _Cut(str(exc)) from None
        except stream_errors() as exc:
            raise _Cut(f"{shorten(route.url, 120)}: the answer was cut ({shorten(str(exc), 160)})") from None

    def _send(self, chunk: bytes, chunked: bool) -> bool:
        """Write to GDAL; False when GDAL has closed the connection."""
        try:
            if chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            else:
                self.wfile.write(chunk)
        except OSError as exc:
            log.debug("relay: GDAL stopped reading: %s", exc)
            self.close_connection = True
            return False
        return True


def _shape(resp: Any, method: str, wanted: re.Match[str] | None, probe: bool, url: str) -> tuple[int, int | None, int, str | None]:
    """(status, body length or None, upstream bytes to skip, Content-Range) of the answer
    GDAL gets for ``resp``.  ``probe``: ``resp`` answers a GET of byte 0 that stands in for
    a HEAD the host refused (its size is Content-Range's).  A host that ignored ``wanted``
    (a single Range) and sent the whole file is answered here for it: GDAL gets only the
    range it asked for, never a whole file it would hold in memory.  :class:`_Cut` when
    no such answer can be given."""
    status = resp.status_code
    length = resp.headers.get("Content-Length", "").strip()
    encoded = resp.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")
    size = int(length) if length.isdigit() and not encoded else None
    content_range = resp.headers.get("Content-Range")
    whole = _CONTENT_RANGE.fullmatch((content_range or "").strip())
    if status == 206 and content_range and not whole:
        raise _Cut(f"{shorten(url, 120)}: a 206 answer with a malformed Content-Range")
    if probe and status == 206 and whole and whole.group(3).isdigit():
        return 200, int(whole.group(3)), 0, None
    if wanted is None or status != 200 or method != "GET":
        return status, size, 0, content_range if status in (206, 416) else None
    start = int(wanted.group(1))
    stop = int(wanted.group(2)) + 1 if wanted.group(2) else size
    if size is not None and stop is not None:
        stop = min(stop, size)
    if stop is None or stop <= start:
        raise _Cut(f"{shorten(url, 120)}: ignored a Range request and sent no usable length")
    return 206, stop - start, start, f"bytes {start}-{stop - 1}/{size if size is not None else '*'}"


class _Server(TCPServer):
    """Accepts on 127.0.0.1 only the user's own connections, up to :data:`MAX_CONNECTIONS`."""

    request_queue_size = BACKLOG

    def __init__(self, relay: Relay) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.relay = relay
        self.used: dict[int, set[_Route]] = {}
        self.uid = os.geteuid()
        self.owners_known = True
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._ends: dict[socket.socket, float] = {}
        self._lock = threading.Lock()

    def server_activate(self) -> None:
        super().server_activate()
        self.socket.setblocking(False)  # accepted in batches: see _handle_request_noblock

    def _handle_request_noblock(self) -> None:
        """Accept every pending connection, read the owners' table once for all of them,
        then serve the user's own and close the rest: a neighbour's flood of connections
        costs one table read per batch, and never stands between the user and the relay."""
        batch: list[tuple[socket.socket, Any]] = []
        while len(batch) < BACKLOG:
            try:
                request, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            request.setblocking(True)
            batch.append((request, address))
        if not batch:
            return
        table = None
        if self.owners_known:
            try:
                table = owners(port=int(self.server_address[1]))
            except OSError as exc:
                self.owners_known = False  # not Linux: only the tokens keep neighbours out
                log.debug("relay: cannot tell whose connections are: %s", exc)
        here = (str(self.server_address[0]), int(self.server_address[1]))
        for request, address in batch:
            uid = self.uid if table is None else peer_uid(address, here, table)
            if uid != self.uid:
                log.debug("relay: refused a connection of uid %s", "(gone or orphaned)" if uid is None else uid)
                self.shutdown_request(request)
                continue
            try:
                self.process_request(request, address)
            except Exception:
                self.handle_error(request, address)
                self.shutdown_request(request)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.debug("relay: %d connections being served; closed one more", MAX_CONNECTIONS)
            self.shutdown_request(request)
            return
        self.watch(request, REQUEST_SECONDS)
        try:
            threading.Thread(target=self._serve, args=(request, client_address), daemon=True,
                             name="shaperesolver-relay-request").start()
        except RuntimeError:  # no thread to be had
            self._done(request)
            raise

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self._done(request)

    def _done(self, request: Any) -> None:
        with self._lock:
            self._ends.pop(request, None)
        self.shutdown_request(request)
        self._slots.release()

    def watch(self, request: Any, seconds: float) -> None:
        """Cut ``request``'s connection ``seconds`` from now unless it ended by then."""
        with self._lock:
            self._ends[request] = time.monotonic() + seconds

    def service_actions(self) -> None:
        """The watchdog (run by serve_forever between accepts, every half second)."""
        now = time.monotonic()
        with self._lock:  # (held: a connection is closed only after _done took it out)
            for s in [s for s, end in self._ends.items() if end <= now]:
                del self._ends[s]
                log.debug("relay: cut a connection at its deadline")
                try:
                    s.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked on it
                except OSError:
                    pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # a reset, a broken pipe, a connection the watchdog cut
            log.debug("relay: connection ended: %s", exc)
        else:  # pragma: no cover - a bug: one line, the traceback only at debug
            log.warning("relay: %s while serving GDAL: %s", type(exc).__name__, shorten(unmask(str(exc)), 200))
            log.debug("relay: the traceback", exc_info=True)


class Relay:
    """Routes from local URLs GDAL may open to the web models they stand for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[str, _Route] = {}
        self._tokens: dict[tuple[str, str], str] = {}
        self._server: _Server | None = None
        self._pid = 0
        self._seq = 0

    def add(self, url: str, http: Http, policy: AddressPolicy) -> str:
        """A ``/vsicurl/`` path GDAL can open for the web model at ``url``."""
        policy.check(url, "model")
        name = _SAFE_NAME.sub("_", basename(urlparse(url).path))[-80:] or "model.tif"
        with self._lock:
            port = self._port()
            token = self._tokens.get((url, policy.base))
            if token is None or token not in self._routes:
                token = secrets.token_urlsafe(24)
                self._tokens[(url, policy.base)] = token
            self._routes[token] = _Route(url, http, policy)  # GDAL's cache of the local URL stays valid
        return f"/vsicurl/http://127.0.0.1:{port}/{token}/{name}"

    def mark(self) -> int:
        """A point in the relay's requests: :meth:`failure` with ``since`` counts only later ones."""
        with self._lock:
            return self._seq

    def next_request(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def failed(self, route: _Route, seq: int, reason: str) -> None:
        with self._lock:
            route.failures[:] = [*route.failures[-4:], (seq, reason)]

    def succeeded(self, route: _Route) -> None:
        """A request on ``route`` was answered: earlier failures were recovered from."""
        with self._lock:
            route.failures.clear()

    def failure(self, local: str, since: int = 0) -> str | None:
        """Why the relay refused or failed a request on ``local``'s route made after
        ``since`` (a :meth:`mark`), unless a later request on the route succeeded."""
        with self._lock:
            route = self._routes.get(self._token(local))
            recent = [why for seq, why in route.failures if seq > since] if route is not None else []
            return recent[-1] if recent else None

    def route(self, token: str) -> _Route | None:
        with self._lock:
            return self._routes.get(token)

    def unmask(self, text: str) -> str:
        """``text`` with each of this relay's URLs (and tokens) replaced by the model's URL."""
        with self._lock:
            routes = dict(self._routes)
        if not routes:
            return text

        def real(m: re.Match[str]) -> str:
            route = routes.get(m.group("token"))
            return m.group(0) if route is None else (m.group("vsi") or "") + route.url

        return re.sub(rf"(?P<vsi>/vsicurl/)?(?:https?://127\.0\.0\.1:\d+)?/(?P<token>{_TOKEN})(?:/[A-Za-z0-9._-]*)?",
                      real, text)

    @staticmethod
    def _token(local: str) -> str:
        parts = local.split("/")
        return parts[-2] if len(parts) >= 2 else ""

    def _port(self) -> int:
        if self._server is None or self._pid != os.getpid():  # a forked child has no server thread
            self._routes, self._tokens = {}, {}
            self._server = _Server(self)
            self._pid = os.getpid()
            threading.Thread(target=self._server.serve_forever, args=(0.5,), name="shaperesolver-relay",
                             daemon=True).start()
            log.debug("GDAL relay started on 127.0.0.1")
        return int(self._server.server_address[1])


#: The process's relay.
RELAY = Relay()


def unmask(text: str) -> str:
    """``text`` with the process's relay URLs replaced by the models' real URLs."""
    return RELAY.unmask(text)
