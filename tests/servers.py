"""Real HTTP servers on 127.0.0.1 for protocol and fault tests.

* :class:`StacServer` behaves like stac-server (USGS's STAC API): exact, case-sensitive
  ``query`` ``in``; reads ``sortby`` and ignores ``sort``; newest ``datetime`` first by
  default; a ``next`` link on every non-empty page; stac-server's error bodies.  With
  ``pgstac=True`` it rejects ``query`` like stac-fastapi-pgstac and takes CQL2 filters.
* :class:`AnswerServer` answers each path with whatever a test set last (property-based tests).
* :class:`RangeServer` serves files with HTTP Range support, as GDAL's /vsicurl/ needs
  (and ``Last-Modified``, as S3 sends it).
* :class:`FileHost` serves in-memory files with a strong ETag and single-range GETs, and
  misbehaves per file on request (cuts, a changed file, an ignored ``If-Range``).

Both count the requests they get.  Scripted faults (:meth:`StacServer.fault`) are
served before normal answers.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass


class _Base:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        handler = self._handler_class()
        self.httpd = _Server(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def log(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)

    def _handler_class(self):
        raise NotImplementedError


def item(item_id, targets, version=None, datetime="2025-01-01T00:00:00Z", assets=None, deprecated=None, href=None):
    props = {"ssys:targets": targets, "datetime": datetime}
    if version is not None:
        props["version"] = version
    if deprecated is not None:
        props["deprecated"] = deprecated
    return {
        "type": "Feature", "stac_version": "1.1.0", "id": item_id, "collection": "isis-global-dtms",
        "geometry": None, "properties": props, "links": [],
        "assets": assets if assets is not None else {
            "image": {"href": href or f"https://dems.example.org/{item_id}.tiff", "type": "image/tiff; application=geotiff"}},
    }


class StacServer(_Base):
    """A stac-server look-alike.  ``prefix`` is where the API root lives (``/api/``)."""

    def __init__(self, items: list[dict] | None = None, prefix: str = "/", pgstac: bool = False,
                 next_host: str | None = None, page_size: int | None = None, next_link: dict | None = None,
                 pad: int = 0, inject: list | None = None) -> None:
        self.items = list(items or [])
        # hostile: features put first on the first page of each search whose names they mention, as they are
        self.inject = list(inject or [])
        self.prefix = prefix
        self.pgstac = pgstac
        self.next_host = next_host
        self.page_size = page_size  # the server's own maximum page size
        self.next_link = next_link  # hostile: fields that override every next link
        self.pad = pad  # hostile: bytes of padding in every search answer
        self.faults: list[dict[str, Any]] = []
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def fault(self, status=200, body: Any = b"", headers=None, delay=0.0, times=1, close=False, dribble=0.0):
        """Answer the next ``times`` requests with this instead of a normal answer.

        ``dribble`` sends the body one byte every ``dribble`` seconds.
        """
        for _ in range(times):
            self.faults.append({"status": status, "body": body, "headers": headers or {}, "delay": delay, "close": close,
                                "dribble": dribble})

    @property
    def searches(self):
        return [r for r in self.requests if r["path"].endswith("/search")]

    # -------------------------------------------------------------- semantics

    def _matches(self, it, body):
        cols = body.get("collections")
        if cols and it.get("collection") not in cols:
            return False
        targets = it["properties"].get("ssys:targets") or []
        q = (body.get("query") or {}).get("ssys:targets")
        if q is not None:
            if "in" in q and not set(q["in"]) & set(targets):
                return False
            if "eq" in q and q["eq"] not in targets:
                return False
        f = body.get("filter")
        if f is not None:
            if f.get("op") not in ("a_overlaps", "a_contains") or f["args"][0] != {"property": "ssys:targets"}:
                raise ValueError("unsupported filter")
            if not set(f["args"][1]) & set(targets):
                return False
        return True

    def search(self, body: dict) -> tuple[int, dict]:
        if self.pgstac and "query" in body:
            return 400, {"code": "BadRequest", "description": "Operator in is not supported by the query extension"}
        if not self.pgstac and "filter" in body:
            return 400, {"code": "BadRequest", "description": "filter is not supported"}
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or limit <= 0 or limit > 10000:
            return 400, {"code": "BadRequest", "description": "limit must be between 1 and 10000"}
        if self.page_size:
            limit = min(limit, self.page_size)
        try:
            found = [it for it in self.items if self._matches(it, body)]
        except ValueError as exc:
            return 400, {"code": "BadRequest", "description": str(exc)}
        found.sort(key=lambda it: it["properties"]["datetime"], reverse=True)  # default order
        for sort in reversed(body.get("sortby") or []):
            field = sort["field"]
            if not field.startswith("properties.") and field not in ("id", "datetime"):
                return 400, {"code": "BadRequest", "description": f"Cannot sort on field {field}"}
            key = field.split(".", 1)[-1]
            found.sort(key=lambda it: str(it["properties"].get(key, it.get(key, ""))), reverse=sort.get("direction") == "desc")
        start = int(body.get("next") or 0)
        page = found[start : start + limit]
        if start == 0:
            names = ((body.get("query") or {}).get("ssys:targets") or {}).get("in") or (body.get("filter") or {}).get("args", [0, []])[1]
            extra = [f for f in self.inject if not names or any(json.dumps(n) in json.dumps(f) for n in names)]
            page, found = extra + page, extra + found
        host = self.next_host or "127.0.0.1"
        links = [{"rel": "root", "href": f"http://{host}:{self.port}{self.prefix}"}]
        if page:  # stac-server emits next on every non-empty page, even the last
            links.append({"rel": "next", "method": "POST", "merge": False,
                          "href": f"http://{host}:{self.port}/gateway/prod/search",
                          "body": {**{k: v for k, v in body.items() if k != "next"}, "next": str(start + limit)}})
            if self.next_link:
                links[-1].update(self.next_link)
        extra = {"padding": "x" * self.pad} if self.pad else {}
        return 200, {**extra, "type": "FeatureCollection", "stac_version": "1.0.0", "features": page, "links": links,
                     "numberMatched": len(found), "numberReturned": len(page),
                     "context": {"limit": limit, "matched": len(found), "returned": len(page)}}

    def _handler_class(self):
        server = self

        class Handler(_QuietHandler):
            def _send(self, status, body, headers=None, dribble=0.0):
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                hdrs = {"Content-Type": "application/json", **(headers or {})}
                for k, v in hdrs.items():
                    self.send_header(k, v)
                if "Content-Length" not in hdrs:
                    self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                if not dribble:
                    self.wfile.write(raw)
                    return
                try:
                    for i in range(len(raw)):
                        self.wfile.write(raw[i : i + 1])
                        self.wfile.flush()
                        time.sleep(dribble)
                except OSError:  # the client gave up
                    self.close_connection = True

            def _handle(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                server.log({"method": method, "path": self.path, "body": body, "headers": dict(self.headers)})
                if server.faults:
                    f = server.faults.pop(0)
                    if f["delay"]:
                        time.sleep(f["delay"])
                    if f["close"]:
                        self.close_connection = True
                        return
                    self._send(f["status"], f["body"], f["headers"], f["dribble"])
                    return
                if self.path.endswith("/search") and method == "POST":
                    status, data = server.search(body or {})
                    self._send(status, data)
                elif self.path.rstrip("/") == server.prefix.rstrip("/") and method == "GET":
                    self._send(200, {"type": "Catalog", "id": "test", "stac_version": "1.0.0", "description": "test",
                                     "conformsTo": ["https://api.stacspec.org/v1.0.0/core",
                                                   "https://api.stacspec.org/v1.0.0/item-search"],
                                     "links": [{"rel": "search", "method": "POST", "type": "application/geo+json",
                                                "href": server.url.rstrip("/") + "/search"},
                                               {"rel": "self", "href": server.url}]})
                else:
                    self._send(404, {"code": "NotFound", "description": "Not Found"})

            def do_POST(self):
                self._handle("POST")

            def do_GET(self):
                self._handle("GET")

            def do_DELETE(self):
                self._handle("DELETE")

            def do_PUT(self):
                self._handle("PUT")

        return Handler


class AnswerServer(_Base):
    """Answers every request for a path with what ``answers`` holds for it now (status,
    raw body), else 404: one server for a whole property-based test, whose examples set
    ``answers`` in turn (requests are answered one at a time, with their own headers)."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, bytes]] = {}
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _handler_class(self):
        server = self

        class Handler(_QuietHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                server.log({"method": self.command, "path": self.path})
                status, raw = server.answers.get(self.path.split("?")[0], (404, b'{"code": "NotFound"}'))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _answer

        return Handler


class RangeServer(_Base):
    """Serves files from ``root`` with HEAD, GET and single-range GET (206).

    ``rate`` throttles bodies (bytes per second); ``delay`` is added to every request;
    ``lies`` maps a file name to ``"long"`` (announce 1000 bytes more than sent, then
    close) or ``"short"`` (announce and send only the first half as the whole file).
    ``served`` counts the body bytes sent per path.
    """

    def __init__(self, root: Path, rate: float | None = None, delay: float = 0.0,
                 lies: dict[str, str] | None = None) -> None:
        self.root = Path(root)
        self.rate = rate
        self.delay = delay
        self.lies = dict(lies or {})
        self.served: dict[str, int] = {}
        super().__init__()

    def gets(self, name: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == "GET" and r["path"].lstrip("/") == name]

    def _count(self, path: str, n: int) -> None:
        with self._lock:
            self.served[path] = self.served.get(path, 0) + n

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def _handler_class(self):
        server = self

        class Handler(_QuietHandler):
            def _serve(self, head):
                server.log({"method": "HEAD" if head else "GET", "path": self.path, "range": self.headers.get("Range")})
                if server.delay:
                    time.sleep(server.delay)
                name = self.path.lstrip("/").split("?")[0]
                path = server.root / name
                if not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                full = path.stat().st_size
                lie = server.lies.get(name)
                if lie == "short":
                    full //= 2
                rng = self.headers.get("Range")
                status, start, end = 200, 0, full - 1
                if rng and rng.startswith("bytes="):
                    a, _, b = rng[6:].split(",")[0].partition("-")
                    start = int(a) if a else max(0, full - int(b))
                    end = min(int(b), full - 1) if (a and b) else full - 1
                    status = 206
                with open(path, "rb") as f:
                    f.seek(start)
                    body = f.read(max(0, end + 1 - start))
                self.send_response(status)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "image/tiff")
                self.send_header("Last-Modified", formatdate(path.stat().st_mtime, usegmt=True))
                self.send_header("Content-Length", str(len(body) + (1000 if lie == "long" else 0)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end + (1000 if lie == 'long' else 0)}/"
                                                      f"{full + (1000 if lie == 'long' else 0)}")
                self.end_headers()
                if head:
                    return
                if lie == "long":
                    self.close_connection = True
                step = max(1, min(65536, int(server.rate))) if server.rate else 65536
                try:
                    for i in range(0, len(body), step):
                        chunk = body[i : i + step]
                        self.wfile.write(chunk)
                        server._count(name, len(chunk))
                        if server.rate:
                            time.sleep(len(chunk) / server.rate)
                except OSError:  # the client went away (killed)
                    self.close_connection = True

            def do_HEAD(self):
                self._serve(True)

            def do_GET(self):
                self._serve(False)

        return Handler


class FileHost(_Base):
    """Serves in-memory files with a strong ETag and single-range GETs (206), and misbehaves on
    request, per file name:

    * ``cut[name] = n``: every GET closes the connection once the body reaches byte ``n`` of
      the file; ``after_cut[name]`` (a callable) runs once after the first such cut;
    * ``honour_if_range = False``: a range is served whatever ``If-Range`` says (the
      validator is never compared), as some servers and caches do;
    * ``whole_for_range = True``: a range request gets a 200 with the whole file;
    * ``status[name] = code``: every GET gets that status; ``location[name] = text``: every
      GET gets a 302 with that Location header.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.etags: dict[str, str] = {}
        self.cut: dict[str, int] = {}
        self.after_cut: dict[str, object] = {}
        self.status: dict[str, int] = {}
        self.location: dict[str, str] = {}
        self.honour_if_range = True
        self.whole_for_range = False
        super().__init__()

    def put(self, name: str, data: bytes) -> None:
        """Add or replace a file (a new ETag)."""
        with self._lock:
            self.files[name] = data
            self.etags[name] = '"%s"' % hashlib.sha256(data).hexdigest()[:16]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def gets(self, name: str) -> list[dict]:
        return [r for r in self.requests if r["path"].lstrip("/") == name]

    def _handler_class(self):
        host = self

        class Handler(_QuietHandler):
            def do_GET(self):
                name = self.path.lstrip("/")
                host.log({"path": self.path, "range": self.headers.get("Range"), "if_range": self.headers.get("If-Range")})
                if name in host.status or name in host.location or name not in host.files:
                    self.send_response(302 if name in host.location else host.status.get(name, 404))
                    if name in host.location:
                        self.send_header("Location", host.location[name])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with host._lock:
                    data, etag = host.files[name], host.etags[name]
                rng, validator = self.headers.get("Range"), self.headers.get("If-Range")
                start = 0
                honoured = not host.honour_if_range or validator in (None, etag)
                if rng and rng.startswith("bytes=") and not host.whole_for_range and honoured:
                    start = int(rng[6:].split("-")[0])
                self.send_response(206 if start else 200)
                self.send_header("ETag", etag)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                stop = host.cut.get(name, len(data))
                try:
                    self.wfile.write(data[start:max(start, stop)])
                    self.wfile.flush()
                except OSError:
                    pass
                if stop < len(data):
                    self.close_connection = True
                    then = host.after_cut.pop(name, None)
                    if then is not None:
                        then()

        return Handler


def make_geotiff(path: Path, bands: int = 1, georef: bool = True, size=(32, 16)) -> Path:
    """A small Mars-radius GeoTIFF (tiled), written with GDAL."""
    from osgeo import gdal, osr

    drv = gdal.GetDriverByName("GTiff")
    ds = drv.Create(str(path), size[0], size[1], bands, gdal.GDT_Float32, options=["TILED=YES", "BLOCKXSIZE=16", "BLOCKYSIZE=16"])
    if georef:
        ds.SetGeoTransform((-180.0, 360.0 / size[0], 0.0, 90.0, 0.0, -180.0 / size[1]))
        srs = osr.SpatialReference()
        srs.SetGeogCS("Mars 2000", "D_Mars_2000", "Mars_2000_IAU_IAG", 3396190.0, 169.8944472236118)
        ds.SetProjection(srs.ExportToWkt())
    for b in range(1, bands + 1):
        ds.GetRasterBand(b).Fill(3396190.0)
    ds.FlushCache()
    ds = None
    return path
