"""GDAL's only road to a web model: a relay on 127.0.0.1 that fetches through :class:`Http`.

libcurl inside GDAL follows any redirect a server sends to its GET (GDAL has no option
to stop it), so a model host could answer our checks with 200 and send GDAL to a
loopback admin port or a cloud metadata address.  GDAL is therefore never given a web
URL: it opens ``/vsicurl/http://127.0.0.1:PORT/TOKEN/name.tif`` and this relay makes
each request it receives (``Range`` passed on) with ``requests``, checking every hop
against the API's :class:`AddressPolicy`.  GDAL sees only the relay, which never
redirects; a refused hop is a 403 whose reason :meth:`Relay.failure` gives back.

The server starts on first use (never at import), once per process (a forked worker
starts its own), on 127.0.0.1 only; a route is reachable only through its random token
and for as long as the process lives (one per model URL and address policy).  Each answer is capped at :data:`MAX_ANSWER_BYTES`
and by the settings' timeouts and deadline.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from posixpath import basename
from typing import Any
from urllib.parse import urlparse

from ..errors import CatalogError, shorten
from .transport import AddressPolicy, Http, stream_errors

__all__ = ["Relay", "RELAY", "MAX_ANSWER_BYTES", "GDAL_NO_PROXY"]

log = logging.getLogger(__name__)

#: The largest answer passed to GDAL (GDAL's blocks are capped at 16 MiB before a read).
MAX_ANSWER_BYTES = 64 * 2**20
#: GDAL config that keeps libcurl off any proxy the environment names: the relay is local.
GDAL_NO_PROXY = {"GDAL_HTTP_PROXY": "", "GDAL_HTTPS_PROXY": ""}
_PASSED_ON = ("Content-Type", "Content-Range", "Accept-Ranges", "Last-Modified", "ETag")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(eq=False)
class _Route:
    url: str
    http: Http
    policy: AddressPolicy
    failures: list[str] = field(default_factory=list)

    def failed(self, reason: str) -> None:
        self.failures[:] = [*self.failures[-4:], reason]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("relay: " + format, *args)

    def do_HEAD(self) -> None:
        self._relay("HEAD")

    def do_GET(self) -> None:
        self._relay("GET")

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            for route in self.server.used.pop(threading.get_ident(), ()):
                route.http.close()  # this thread's session

    def _answer(self, status: int, reason: str, route: _Route | None = None) -> None:
        if route is not None:
            route.failed(reason)
        body = reason.encode("utf-8", "replace")[:300]
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _relay(self, method: str) -> None:
        token = self.path.split("/")[1] if self.path.count("/") >= 2 else ""
        route = self.server.relay.route(token)
        if route is None:
            self._answer(404, "no such route")
            return
        self.server.used.setdefault(threading.get_ident(), set()).add(route)
        headers = {"Accept": "*/*"}
        if self.headers.get("Range"):
            headers["Range"] = self.headers["Range"]
        try:
            resp, body = _fetch(route, method, headers)
        except CatalogError as exc:  # a refused hop, an answer too large or too slow
            self._answer(403, str(exc), route)  # (403: GDAL does not retry it)
            return
        except stream_errors() as exc:  # (503: GDAL retries it, as it would have retried the server)
            self._answer(503, f"{shorten(route.url, 120)}: no answer from its server ({shorten(str(exc), 160)})", route)
            return
        if resp.status_code >= 400:
            route.failed(f"{shorten(route.url, 120)}: HTTP {resp.status_code}")
        self.send_response(resp.status_code)
        for name in _PASSED_ON:
            if resp.headers.get(name):
                self.send_header(name, resp.headers[name])
        length = resp.headers.get("Content-Length", "") if method == "HEAD" else str(len(body))
        if length.isdigit():
            self.send_header("Content-Length", length)
        self.end_headers()
        if method == "GET":
            self.wfile.write(body)


def _fetch(route: _Route, method: str, headers: dict[str, str]) -> tuple[Any, bytes]:
    """(the closed response, its body) for one of GDAL's requests, within the deadline."""
    st = route.http.settings
    end = time.monotonic() + st.deadline

    def left() -> float:
        if time.monotonic() >= end:
            raise CatalogError(f"{shorten(route.url, 120)}: no whole answer within {st.deadline:g} s")
        return end - time.monotonic()

    resp, _ = route.http.stream(route.url, headers, route.policy, "model", method=method)
    try:
        chunks, size = [], 0
        if method == "GET":
            for chunk in route.http.chunks(resp, 1 << 16, left, decode=True):
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise CatalogError(f"{shorten(route.url, 120)}: an answer over {MAX_ANSWER_BYTES >> 20} MiB")
                chunks.append(chunk)
        return resp, b"".join(chunks)
    finally:
        resp.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, relay: Relay) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.relay = relay
        self.used: dict[int, set[_Route]] = {}


class Relay:
    """Routes from local URLs GDAL may open to the web models they stand for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[str, _Route] = {}
        self._tokens: dict[tuple[str, str], str] = {}
        self._server: _Server | None = None
        self._pid = 0

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

    def failure(self, local: str) -> str | None:
        """Why the relay last refused or failed a request on ``local``'s route, if it did."""
        with self._lock:
            route = self._routes.get(self._token(local))
            return route.failures[-1] if route is not None and route.failures else None

    def route(self, token: str) -> _Route | None:
        with self._lock:
            return self._routes.get(token)

    @staticmethod
    def _token(local: str) -> str:
        parts = local.split("/")
        return parts[-2] if len(parts) >= 2 else ""

    def _port(self) -> int:
        if self._server is None or self._pid != os.getpid():  # a forked child has no server thread
            self._routes, self._tokens = {}, {}
            self._server = _Server(self)
            self._pid = os.getpid()
            threading.Thread(target=self._server.serve_forever, name="shaperesolver-relay", daemon=True).start()
            log.debug("GDAL relay on 127.0.0.1:%d", self._server.server_address[1])
        return int(self._server.server_address[1])


#: The process's relay.
RELAY = Relay()
