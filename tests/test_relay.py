"""GDAL reaches web models only through the relay on 127.0.0.1 (shaperesolver.net.relay).

libcurl inside GDAL follows redirects given to its GET; the relay makes each of GDAL's
requests itself under the API's address rules.  Public hosts are stood in for by a
forwarding proxy on loopback (see test_gdal_lockdown); bodies: the Moon and Phobos.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler

import pytest
from osgeo import gdal
from servers import RangeServer, StacServer, item
from test_gdal_lockdown import (
    MOON_A,
    PUBLIC_API,
    PUBLIC_FILES,
    SCRIPT,
    Redirector,
    _empty_area,
    _public_api,
    moon_values,
    write_tif,
)
from test_outcomes import make

from shaperesolver import HttpSettings, NoAnswerError, Resolver, read_label, write_batch
from shaperesolver.net import relay

FAST = HttpSettings(retries=0, connect_timeout=3, read_timeout=5, deadline=20)


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def public(monkeypatch, tmp_path):
    """A public API at PUBLIC_API; the Moon's asset host redirects GDAL's GET (only) to a
    loopback copy, the Phobos one serves its DEM honestly.  Yields (api url, inner, proxy)."""
    for k in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(k, raising=False)
    www = tmp_path / "www"
    www.mkdir()
    write_tif(www / "moon.tif", moon_values())
    write_tif(www / "phobos.tif", moon_values() / MOON_A * 11080.0, body="Phobos", radius=11080.0)
    size = (www / "moon.tif").stat().st_size
    items = [item("moon0001", ["Moon"], "0001", href=f"http://{PUBLIC_FILES}/moon.tif"),
             item("phobos0001", ["Phobos"], "0001", href=f"http://{PUBLIC_FILES}:8080/phobos.tif")]
    with RangeServer(www) as inner, RangeServer(www) as outer, \
            Redirector(f"http://127.0.0.1:{inner.port}/moon.tif", size) as switch, StacServer(items) as srv:
        routes = {f"{PUBLIC_FILES}:80": switch.port, f"{PUBLIC_FILES}:8080": outer.port}
        with _public_api(monkeypatch, srv.port, routes) as proxy:
            gdal.VSICurlClearCache()
            yield f"http://{PUBLIC_API}/", inner, proxy


def _cubes(tmp_path, n=2):
    moons = [make(tmp_path / "c", f"moon{i}.cub", "MOON") for i in range(n)]
    phobos = [make(tmp_path / "c", f"phobos{i}.cub", "Phobos") for i in range(n)]
    return moons, phobos


def _check(moons, phobos, before, inner, proxy):
    assert all(digest(c) == before[c] for c in moons), "a Moon cube changed"
    assert [read_label(c).shape_model for c in phobos] == [f"/vsicurl/http://{PUBLIC_FILES}:8080/phobos.tif"] * len(phobos)
    assert inner.requests == [], "GDAL's GET was redirected to loopback"
    assert not [q for q in proxy.requests if q[1].startswith("127.0.0.1")]


@pytest.mark.parametrize("door", ["from=", "fromlist= jobs=4"])
def test_console_script_refuses_gdals_redirect_for_that_body_only(public, tmp_path, door):
    api, inner, proxy = public
    moons, phobos = _cubes(tmp_path)
    before = {c: digest(c) for c in moons}
    env = {**os.environ, "SHAPERESOLVER_CACHE_DIR": str(tmp_path / "cache"), "ISISDATA": str(_empty_area(tmp_path))}
    if door == "from=":
        runs = [[f"from={c}"] for c in moons + phobos]
    else:
        (tmp_path / "cubes.lis").write_text("".join(f"{c}\n" for c in moons + phobos))
        runs = [[f"fromlist={tmp_path / 'cubes.lis'}", "jobs=4"]]
    errs = ""
    for args in runs:
        p = subprocess.run([str(SCRIPT), *args, f"url={api}"], capture_output=True, text=True, env=env, timeout=180)
        errs += p.stderr
        assert p.returncode == (0 if "phobos" in args[0] else 1), p.stderr
    assert errs.count("loopback address (127.0.0.1)") == len(moons) and "Traceback" not in errs, errs
    _check(moons, phobos, before, inner, proxy)


def test_api_and_dask_refuse_gdals_redirect(public, tmp_path, dask_cluster):
    api, inner, proxy = public
    moons, phobos = _cubes(tmp_path, 3)
    before = {c: digest(c) for c in moons}
    kw = dict(url=api, cache_dir=tmp_path / "cache", isisdata=_empty_area(tmp_path), http=FAST)
    with Resolver(**kw) as r, pytest.raises(NoAnswerError, match=r"loopback address \(127\.0\.0\.1\)"):
        r.resolve(target="Moon")
    recs = write_batch(moons + phobos, dask_cluster[1], **kw)
    assert [bool(x.get("error")) for x in recs] == [True] * 3 + [False] * 3, json.dumps(recs)
    _check(moons, phobos, before, inner, proxy)


def test_the_relay_serves_only_its_routes_and_never_a_neighbour(public, tmp_path):
    """A neighbour (another uid) who finds the relay's port (it is on 127.0.0.1) gets no
    answer at all, even with a route's token; the user's own processes get 404 without
    one.  Nothing is sent anywhere."""
    api, inner, proxy = public
    with Resolver(url=api, cache="no", isisdata=_empty_area(tmp_path), http=FAST) as r:
        assert r.resolve(target="Phobos").source == "web"
    local = relay.RELAY.add(f"http://{PUBLIC_FILES}:8080/phobos.tif", r.http, r._client.policy)
    port = local.split("/")[4].split(":")[1]
    seen = len(proxy.requests)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for path in ("/", "/phobos.tif", "/x/phobos.tif", "/" + "A" * 32 + "/phobos.tif", "/../../etc/passwd"):
        with pytest.raises(urllib.error.HTTPError) as own:
            opener.open(f"http://127.0.0.1:{port}{path}", timeout=5)
        assert own.value.code == 404, path
        assert _as_nobody_get(f"http://127.0.0.1:{port}{path}") == 0, path  # closed unanswered
    assert _as_nobody_get(local[len("/vsicurl/"):]) == 0  # the token does not help a neighbour
    assert len(proxy.requests) == seen and inner.requests == []


def _as_nobody_get(url):
    """The HTTP status a GET of ``url`` gets from a forked child running as uid 65534 (0: none)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                code = urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=5).status
            except urllib.error.HTTPError as exc:
                code = exc.code
            os.write(w, str(code).encode())
        finally:
            os._exit(0)
    os.close(w)
    out = os.read(r, 100)
    os.close(r)
    os.waitpid(pid, 0)
    return int(out or b"0")


class _Flood(BaseHTTPRequestHandler):
    """Ignores Range: every GET gets the whole (large) body with 200."""

    protocol_version = "HTTP/1.1"
    size = 3 * 2**20

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", str(self.size))
        self.end_headers()

    def do_GET(self):
        self.do_HEAD()
        chunk = b"II*\x00" + b"\x00" * (2**16 - 4)
        try:
            for _ in range(self.size // len(chunk)):
                self.wfile.write(chunk)
        except OSError:
            pass


def test_a_host_that_ignores_range_sends_gdal_only_the_range(tmp_path):
    """The relay answers GDAL's Range itself when the host sends the whole file with 200,
    and stops reading it there (it once held up to 64 MiB of each answer).  The file is
    not a GeoTIFF: nothing matches, the Io cube falls back."""
    import threading
    from http.server import ThreadingHTTPServer

    class Flood(_Flood):
        size = 512 * 2**20
        sent = 0

        def do_GET(self):
            self.do_HEAD()
            chunk = b"II*\x00" + b"\x00" * (2**16 - 4)
            try:
                for _ in range(self.size // len(chunk)):
                    self.wfile.write(chunk)
                    Flood.sent += len(chunk)
            except OSError:
                pass

    flood = ThreadingHTTPServer(("127.0.0.1", 0), Flood)
    flood.daemon_threads = True
    threading.Thread(target=flood.serve_forever, daemon=True).start()
    try:
        href = f"http://127.0.0.1:{flood.server_address[1]}/io.tif"
        with StacServer([item("io0001", ["Io"], "0001", href=href)]) as srv, \
                Resolver(url=srv.url, cache="no", isisdata=_empty_area(tmp_path), http=FAST) as r:
            gdal.VSICurlClearCache()
            res = r.resolve(target="Io")
        assert res.source == "ellipsoid" and "not a GeoTIFF" in res.fallback_reasons[0], res.record()
        assert Flood.sent < 32 * 2**20, f"{Flood.sent} bytes read"
    finally:
        flood.shutdown()
        flood.server_close()


class _Drip(_Flood):
    """Sends a GET's body one byte every 0.2 s: each read is inside the read timeout."""

    def do_GET(self):
        self.do_HEAD()
        try:
            for _ in range(self.size):
                self.wfile.write(b"I")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass


def test_a_dripping_model_server_is_no_answer_within_the_deadline(tmp_path):
    """Before, the relay read until a whole 64 KiB chunk came (hours at this rate) while GDAL gave up."""
    import threading
    from http.server import ThreadingHTTPServer

    drip = ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    drip.daemon_threads = True
    threading.Thread(target=drip.serve_forever, daemon=True).start()
    try:
        href = f"http://127.0.0.1:{drip.server_address[1]}/titan.tif"
        settings = HttpSettings(retries=0, connect_timeout=3, read_timeout=5, deadline=3)
        with StacServer([item("titan0001", ["Titan"], "0001", href=href)]) as srv, \
                Resolver(url=srv.url, cache="no", isisdata=_empty_area(tmp_path), http=settings) as r:
            gdal.VSICurlClearCache()
            t0 = time.monotonic()
            with pytest.raises(NoAnswerError, match="no whole answer within 3 s"):
                r.resolve(target="Titan")
            assert time.monotonic() - t0 < 25
    finally:
        drip.shutdown()
        drip.server_close()
