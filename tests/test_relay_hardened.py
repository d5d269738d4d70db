"""Issue 22, item 3: the relay behaves like a careful server (shaperesolver.relay).

A neighbour (a real second uid, 65534, in a forked child) holding 200 idle connections
gets no thread of the user's process; the user's own idle connections are capped and
closed; a connect-and-reset (SO_LINGER 0) puts no traceback on the console script's
terminal; a model host that refuses HEAD (405) with a 72 MiB model, honouring Range or
not, is read through every door; a status GDAL recovered from is never blamed for a later
"not a GeoTIFF"; GDAL's messages name the model's real URL, never the relay's port or
token; GDAL's retries and timeout follow the resolver's HttpSettings.  Everything is real:
servers on 127.0.0.1, the console script, threads, a Dask LocalCluster.  Bodies: the Moon,
Phobos and Io.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from osgeo import gdal
from peak import PEAK_KIB
from servers import StacServer, item
from test_gdal_lockdown import MOON_A, SCRIPT, _empty_area, moon_values, write_tif
from test_outcomes import make

from shaperesolver import HttpSettings, NoAnswerError, Resolver, read_label, write_batch
from shaperesolver.net import relay

FAST = HttpSettings(retries=0, connect_timeout=3, read_timeout=10, deadline=60)
BIG = 72 * 2**20
PHOBOS_A = 13000.0  # Phobos's largest radius (km 13.0 x 11.4 x 9.1)
TOKEN = re.compile(r"/[A-Za-z0-9_-]{32}/")


# ------------------------------------------------------------------ a model host


class Host:
    """Serves files from ``root`` streamed from disk (never held whole), counting requests
    and body bytes sent.  ``head``: the status every HEAD gets (None: a normal answer);
    ``ranges=False``: Range ignored (200 and the whole file); ``fail``: statuses that the
    first GETs get instead of the file; ``delay``: seconds before each answer, and
    ``get_delay`` more before each GET's."""

    def __init__(self, root: Path, head: int | None = None, ranges: bool = True, fail=(), delay: float = 0.0,
                 get_delay: float = 0.0):
        self.root, self.head, self.ranges, self.fail, self.delay = Path(root), head, ranges, list(fail), delay
        self.get_delay = get_delay
        self.requests: list[tuple[str, str, str | None]] = []
        self.sent = 0
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                host.requests.append(("HEAD", self.path, self.headers.get("Range")))
                time.sleep(host.delay)
                path = host.root / self.path.lstrip("/")
                self.send_response(host.head or 200)
                self.send_header("Content-Length", str(path.stat().st_size) if host.head is None else "0")
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()

            def do_GET(self):
                rng = self.headers.get("Range")
                host.requests.append(("GET", self.path, rng))
                time.sleep(host.delay + host.get_delay)
                if host.fail:
                    self.send_response(host.fail.pop(0))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path = host.root / self.path.lstrip("/")
                size = path.stat().st_size
                start, end, status = 0, size - 1, 200
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
                if m and host.ranges:
                    start, status = int(m.group(1)), 206
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                self.send_response(status)
                self.send_header("Content-Length", str(end + 1 - start))
                self.send_header("Content-Type", "image/tiff")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.end_headers()
                with open(path, "rb") as f:
                    f.seek(start)
                    left = end + 1 - start
                    try:
                        while left > 0:
                            chunk = f.read(min(left, 1 << 16))
                            self.wfile.write(chunk)
                            host.sent += len(chunk)
                            left -= len(chunk)
                    except OSError:  # the client had enough
                        self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def big_model(path: Path, body: str, radius: float, size: int = BIG) -> Path:
    """A real GeoTIFF of ``body`` padded (sparsely: no disk used) to ``size`` bytes."""
    write_tif(path, moon_values() / MOON_A * radius, body=body, radius=radius)
    with open(path, "r+b") as f:
        f.truncate(size)
    return path


def digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cli(*args, tmp_path, timeout=240):
    env = {**os.environ, "SHAPERESOLVER_CACHE_DIR": str(tmp_path / "cache"), "ISISDATA": str(_empty_area(tmp_path))}
    for k in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "SHAPERESOLVER_STAC_URL"):
        env.pop(k, None)
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture
def no_proxy(monkeypatch):
    for k in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(k, raising=False)
    gdal.VSICurlClearCache()


@pytest.fixture
def models(tmp_path, no_proxy):
    """72 MiB Moon and Phobos models on a host answering HEAD with 405 and honouring Range."""
    www = tmp_path / "www"
    www.mkdir()
    big_model(www / "moon.tif", "Moon", MOON_A)
    big_model(www / "phobos.tif", "Phobos", PHOBOS_A)
    with Host(www, head=405) as host:
        items = [item("moon0001", ["Moon"], "0001", href=host.url("moon.tif")),
                 item("phobos0001", ["Phobos"], "0001", href=host.url("phobos.tif"))]
        with StacServer(items) as srv:
            yield srv.url, host


# ------------------------------------------------------------------ neighbours


def _hold(port: int, n: int, uid: int | None):
    """A forked child (as ``uid`` if given) that holds ``n`` idle connections to ``port``.

    Returns (pid, read end, write end): the child writes how many it opened, waits for a
    byte from the parent, then writes how many the relay closed within 40 s of that.
    """
    up_r, up_w = os.pipe()
    down_r, down_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            if uid is not None:
                os.setgid(uid)
                os.setuid(uid)
            held = []
            for _ in range(n):
                try:
                    held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                except OSError:
                    pass
            os.write(up_w, f"{len(held)}\n".encode())
            os.read(down_r, 1)
            end, closed = time.monotonic() + 40, set()
            while len(closed) < len(held) and time.monotonic() < end:
                ready, _, _ = select.select([s for s in held if s not in closed], [], [], 1.0)
                for s in ready:
                    try:
                        if s.recv(1) == b"":
                            closed.add(s)
                    except OSError:
                        closed.add(s)
            os.write(up_w, f"{len(closed)}\n".encode())
        finally:
            os._exit(0)
    os.close(up_w)
    os.close(down_r)
    return pid, up_r, down_w


def _line(fd) -> int:
    out = b""
    while not out.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            break
        out += chunk
    return int(out or b"-1")


def _relay_port(r: Resolver, url: str) -> int:
    local = relay.RELAY.add(url, r.http, r._client.policy)
    return int(local.split("/")[4].split(":")[1])


@pytest.mark.parametrize("who", ["neighbour", "the user"])
def test_200_idle_connections_neither_grow_the_threads_nor_stop_a_resolve(tmp_path, no_proxy, who):
    """Before: each connection got a thread for good (5 -> 205 threads, none closed after 70 s)."""
    www = tmp_path / "www"
    www.mkdir()
    write_tif(www / "moon.tif", moon_values())
    write_tif(www / "phobos.tif", moon_values() / MOON_A * PHOBOS_A, body="Phobos", radius=PHOBOS_A)
    with Host(www) as host, StacServer([item("moon0001", ["Moon"], "0001", href=host.url("moon.tif")),
                                        item("phobos0001", ["Phobos"], "0001", href=host.url("phobos.tif"))]) as srv:
        kw = dict(url=srv.url, cache="no", isisdata=_empty_area(tmp_path), http=FAST)
        with Resolver(**kw) as r:
            assert r.resolve(target="Moon").source == "web"
            port = _relay_port(r, host.url("moon.tif"))
        time.sleep(1)
        before = threading.active_count()
        pid, up, down = _hold(port, 200, 65534 if who == "neighbour" else None)
        try:
            assert _line(up) >= 150  # (the backlog queues the ones not yet accepted)
            time.sleep(2)
            grown = threading.active_count() - before
            limit = 5 if who == "neighbour" else 64 + 5  # (relay.MAX_CONNECTIONS is 64)
            assert grown <= limit, f"{grown} more threads while {who} held 200 connections"
            if who == "neighbour":  # the relay serves the user meanwhile
                gdal.VSICurlClearCache()
                with Resolver(**kw) as r2:
                    assert r2.resolve(target="Phobos").source == "web"
            os.write(down, b"x")
            assert _line(up) == 200, "idle connections were not closed"
        finally:
            os.kill(pid, signal.SIGKILL)  # (it has reported, or the test failed)
            os.waitpid(pid, 0)
            os.close(up)
            os.close(down)
        if who == "the user":  # and once they are gone, the user is served again
            gdal.VSICurlClearCache()
            with Resolver(**kw) as r3:
                assert r3.resolve(target="Phobos").source == "web"


def _listening_ports(pid: int) -> list[int]:
    """Ports on 127.0.0.1 that process ``pid`` listens on (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = []
    with open("/proc/net/tcp") as f:
        for line in list(f)[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes and cols[1].startswith("0100007F:"):
                ports.append(int(cols[1].split(":")[1], 16))
    return ports


def test_a_connect_and_reset_puts_no_traceback_on_the_terminal(tmp_path, no_proxy):
    """Before: each reset printed a ConnectionResetError traceback on the user's terminal."""
    www = tmp_path / "www"
    www.mkdir()
    write_tif(www / "phobos.tif", moon_values() / MOON_A * PHOBOS_A, body="Phobos", radius=PHOBOS_A)
    cube = make(tmp_path / "c", "phobos.cub", "Phobos")
    with Host(www, delay=1.5) as host, StacServer([item("phobos0001", ["Phobos"], "0001", href=host.url("phobos.tif"))]) as srv:
        env = {**os.environ, "SHAPERESOLVER_CACHE_DIR": str(tmp_path / "cache"), "ISISDATA": str(_empty_area(tmp_path))}
        proc = subprocess.Popen([str(SCRIPT), f"from={cube}", f"url={srv.url}"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        try:
            end, ports = time.monotonic() + 60, []
            while not ports and proc.poll() is None and time.monotonic() < end:
                ports = _listening_ports(proc.pid)
                time.sleep(0.05)
            assert ports, "the console script's relay was never seen listening"
            resets = 0
            for _ in range(30):
                s = socket.socket()
                try:
                    s.connect(("127.0.0.1", ports[0]))
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    resets += 1
                except OSError:  # the run ended meanwhile
                    break
                finally:
                    s.close()
                time.sleep(0.02)
            out, err = proc.communicate(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert resets >= 10, resets
    assert "Traceback" not in err and "ConnectionReset" not in err, err
    assert proc.returncode == 0, err
    assert read_label(cube).shape_model == "/vsicurl/" + host.url("phobos.tif")


# ------------------------------------------------------------------ streamed answers


@pytest.mark.parametrize("door", ["api", "from=", "fromlist= jobs=4", "dask"])
def test_a_72_mib_model_on_a_host_that_refuses_head_is_read(models, tmp_path, door, request):
    """Before: GDAL then fetched without a range and the relay refused the answer (over 64 MiB)."""
    api, host = models
    moons = [make(tmp_path / "c", f"moon{i}.cub", "MOON") for i in range(2)]
    phobos = [make(tmp_path / "c", f"phobos{i}.cub", "Phobos") for i in range(2)]
    want = {**{c: "/vsicurl/" + host.url("moon.tif") for c in moons}, **{c: "/vsicurl/" + host.url("phobos.tif") for c in phobos}}
    if door == "api":
        with Resolver(url=api, cache="no", isisdata=_empty_area(tmp_path), http=FAST) as r:
            assert r.resolve(target="Moon").shape_model == want[moons[0]]
            assert r.resolve(phobos[0]).shape_model == want[phobos[0]]
        return
    if door == "dask":
        client = request.getfixturevalue("dask_cluster")[1]
        recs = write_batch(moons + phobos, client, url=api, cache_dir=tmp_path / "cache", isisdata=_empty_area(tmp_path),
                           http=FAST)
        assert not [x for x in recs if x.get("error")], json.dumps(recs)
    elif door == "from=":
        for c in moons + phobos:
            p = cli(f"from={c}", f"url={api}", tmp_path=tmp_path)
            assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    else:
        (tmp_path / "cubes.lis").write_text("".join(f"{c}\n" for c in moons + phobos))
        p = cli(f"fromlist={tmp_path / 'cubes.lis'}", "jobs=4", f"url={api}", tmp_path=tmp_path)
        assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert {c: read_label(c).shape_model for c in want} == want
    assert host.sent < 16 * 2**20, "the whole model was read"


def test_a_host_that_refuses_head_and_ignores_range(tmp_path, no_proxy):
    """GDAL gets only the range it asked for; the relay stops reading the host after it."""
    www = tmp_path / "www"
    www.mkdir()
    big_model(www / "io.tif", "Io", 1821490.0)
    with Host(www, head=405, ranges=False) as host, \
            StacServer([item("io0001", ["Io"], "0001", href=host.url("io.tif"))]) as srv, \
            Resolver(url=srv.url, cache="no", isisdata=_empty_area(tmp_path), http=FAST) as r:
        assert r.resolve(target="Io").shape_model == "/vsicurl/" + host.url("io.tif")
        assert host.sent < 24 * 2**20, f"{host.sent} bytes read from the host"


def test_a_72_mib_answer_streams_whole_in_bounded_memory(tmp_path, no_proxy):
    """A GET without a range of a 200 MiB model through the relay: every byte, in a buffer.
    Before: refused (over 64 MiB); held whole, it would have taken 200 MiB."""
    www = tmp_path / "www"
    www.mkdir()
    big_model(www / "moon.tif", "Moon", MOON_A, size=200 * 2**20)
    code = f"""if True:
        import hashlib, sys, urllib.request
        from shaperesolver.net import relay
        from shaperesolver.net.transport import AnyAddress, Http, HttpSettings
        url = sys.argv[1]
        local = relay.RELAY.add(url, Http(HttpSettings(deadline=120)), AnyAddress(url))[len("/vsicurl/"):]
        before = {PEAK_KIB}
        h, n = hashlib.sha256(), 0
        with urllib.request.build_opener(urllib.request.ProxyHandler({{}})).open(local, timeout=60) as resp:
            while chunk := resp.read(1 << 16):
                h.update(chunk)
                n += len(chunk)
        print(n, h.hexdigest(), ({PEAK_KIB} - before) // 1024)
    """
    with Host(www) as host:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(relay.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
        p = subprocess.run([sys.executable, "-c", code, host.url("moon.tif")], capture_output=True, text=True, env=env,
                           timeout=180)
    assert p.returncode == 0, p.stderr
    n, sha, grown_mib = p.stdout.split()
    assert (int(n), sha) == (200 * 2**20, digest(www / "moon.tif"))
    assert int(grown_mib) < 48, f"the relay's process grew by {grown_mib} MiB"


# ------------------------------------------------------------------ failures per request


@pytest.mark.parametrize("door", ["api", "from="])
def test_not_a_geotiff_after_a_recovered_status_falls_back(tmp_path, no_proxy, door):
    """GDAL retried a 503 and got the file, which is not a GeoTIFF: nothing matches (fall
    back).  Before: the 503 was blamed (no answer; the cube failed)."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "io.tif").write_bytes(b"GIF89a" + bytes(range(256)) * 64)  # an image, not a GeoTIFF
    settings = HttpSettings(retries=1, backoff=0.2, connect_timeout=3, read_timeout=10, deadline=60)
    with Host(www, fail=[503]) as host, StacServer([item("io0001", ["Io"], "0001", href=host.url("io.tif"))]) as srv:
        if door == "api":
            with Resolver(url=srv.url, cache="no", isisdata=_empty_area(tmp_path), http=settings) as r:
                res = r.resolve(target="Io")
            assert res.source == "ellipsoid" and "not a GeoTIFF" in res.fallback_reasons[0], res.record()
        else:
            cube = make(tmp_path / "c", "io.cub", "Io")
            p = cli(f"from={cube}", f"url={srv.url}", "--json", tmp_path=tmp_path)
            assert p.returncode == 0, p.stderr
            rec = json.loads(p.stdout.splitlines()[-1])
            assert rec["source"] == "ellipsoid" and "not a GeoTIFF" in rec["fallback_reason"], rec
            assert read_label(cube).shape_model == "Null"
        assert [q[0] for q in host.requests[:3]] == ["HEAD", "GET", "GET"]  # the 503, then GDAL's retry


# ------------------------------------------------------------------ GDAL's messages and settings


def _truncated_moon(www: Path) -> Path:
    """A Moon GeoTIFF whose tiles end early: the header opens, reading the pixels fails."""
    path = write_tif(www / "moon.tif", moon_values(),
                     options=("TILED=YES", "BLOCKXSIZE=16", "BLOCKYSIZE=16", "COMPRESS=DEFLATE"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    return path


@pytest.mark.parametrize("verbosity", [[], ["-v", "-v"]])
def test_gdals_messages_name_the_model_never_the_relay(tmp_path, no_proxy, verbosity):
    """Before: GDAL's ERROR 1 lines reached stderr with the relay's port and token."""
    www = tmp_path / "www"
    www.mkdir()
    _truncated_moon(www)
    cube = make(tmp_path / "c", "moon.cub", "MOON")
    before = digest(cube)
    with Host(www) as host, StacServer([item("moon0001", ["Moon"], "0001", href=host.url("moon.tif"))]) as srv:
        p = cli(f"from={cube}", f"url={srv.url}", *verbosity, tmp_path=tmp_path)
    assert p.returncode == 1 and digest(cube) == before, p.stderr
    ports = {int(x) for x in re.findall(r"127\.0\.0\.1:(\d+)", p.stderr)}
    assert ports <= {host.port, srv.port}, p.stderr  # no relay port
    assert not TOKEN.search(p.stderr), p.stderr
    assert "TIFFReadEncodedTile() failed" in p.stderr and "ERROR 1" not in p.stderr, p.stderr
    if verbosity:  # GDAL's own messages, logged: they name the model (the one-line error may be cut)
        assert re.search(rf"GDAL error 1: /vsicurl/{re.escape(host.url('moon.tif'))}, band 1: IReadBlock", p.stderr), p.stderr
    else:
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_gdals_messages_through_the_api(tmp_path, no_proxy, capfd):
    www = tmp_path / "www"
    www.mkdir()
    _truncated_moon(www)
    with Host(www) as host, StacServer([item("moon0001", ["Moon"], "0001", href=host.url("moon.tif"))]) as srv, \
            Resolver(url=srv.url, cache="no", isisdata=_empty_area(tmp_path), http=FAST) as r:
        capfd.readouterr()
        with pytest.raises(NoAnswerError) as info:
            r.resolve(target="Moon")
        port = _relay_port(r, host.url("moon.tif"))
    err = capfd.readouterr().err
    assert "ERROR 1" not in err, err  # nothing printed behind the caller's back
    text = str(info.value)
    assert f":{port}" not in text and not TOKEN.search(text) and host.url("moon.tif") in text, text


def test_gdals_retries_follow_the_settings(tmp_path, no_proxy):
    """retries=0: GDAL sends each request once (before: GDAL_HTTP_MAX_RETRY=2 whatever the settings)."""
    www = tmp_path / "www"
    www.mkdir()
    write_tif(www / "phobos.tif", moon_values() / MOON_A * PHOBOS_A, body="Phobos", radius=PHOBOS_A)
    with Host(www, fail=[503] * 20) as host, \
            StacServer([item("phobos0001", ["Phobos"], "0001", href=host.url("phobos.tif"))]) as srv, \
            Resolver(url=srv.url, cache="no", isisdata=_empty_area(tmp_path), http=FAST) as r:
        with pytest.raises(NoAnswerError, match="HTTP 503"):
            r.resolve(target="Phobos")
    gets = [q for q in host.requests if q[0] == "GET"]
    assert len(gets) <= 2, gets  # one open, and the one retry after GDAL's cache is cleared


def test_gdal_waits_for_an_answer_as_long_as_the_deadline(tmp_path, no_proxy):
    """A host that takes 35 s to answer each GET, within a 60 s deadline: read.  Before:
    GDAL gave up after its own 30 s, whatever the deadline (and retried twice)."""
    www = tmp_path / "www"
    www.mkdir()
    write_tif(www / "phobos.tif", moon_values() / MOON_A * PHOBOS_A, body="Phobos", radius=PHOBOS_A)
    with Host(www, get_delay=35.0) as host, \
            StacServer([item("phobos0001", ["Phobos"], "0001", href=host.url("phobos.tif"))]) as srv, \
            Resolver(url=srv.url, cache="no", isisdata=_empty_area(tmp_path),
                     http=HttpSettings(retries=0, connect_timeout=3, read_timeout=40, deadline=60)) as r:
        assert r.resolve(target="Phobos").source == "web"
    assert [q[0] for q in host.requests] == ["HEAD", "GET"]  # (the slow answer was waited for)


# ------------------------------------------------------------------ attack round (issue 22)


def _neighbour(port: int, path: str, rounds: int, mode: str, seconds: float = 20.0):
    """A forked child as uid 65534 against the relay: ``orphan`` sends a GET for ``path``,
    half-closes and closes at once (its socket row becomes an orphan, which the kernel
    lists as uid 0).  Bounded in rounds and ``seconds``; returns its pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgid(65534)
            os.setuid(65534)
            end = time.monotonic() + seconds
            for _ in range(rounds):
                if time.monotonic() > end:
                    break
                try:
                    s = socket.create_connection(("127.0.0.1", port), timeout=2)
                    if mode == "orphan":
                        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes=0-15\r\n\r\n".encode())
                        s.shutdown(socket.SHUT_WR)
                    s.close()
                except OSError:
                    pass
        finally:
            os._exit(0)
    return pid


def test_a_neighbour_that_closes_at_once_is_not_served_as_root(tmp_path, no_proxy):
    """Before: an orphaned socket's row says uid 0, so as root the relay served 60 % of them."""
    if os.geteuid() != 0:
        pytest.skip("the orphan row's uid 0 matters when the user is root (CI runs as root)")
    www = tmp_path / "www"
    www.mkdir()
    write_tif(www / "moon.tif", moon_values())
    with Host(www) as host:
        r = Resolver(url=host.url("api/"), cache="no", http=FAST, isisdata=_empty_area(tmp_path))
        local = relay.RELAY.add(host.url("moon.tif"), r.http, r._client.policy)
        port = int(local.split("/")[4].split(":")[1])
        path = "/" + "/".join(local.split("/")[5:])
        before = len(host.requests)
        pid = _neighbour(port, path, 200, "orphan")
        os.waitpid(pid, 0)
        time.sleep(1)
        served = [q for q in host.requests[before:] if q[0] == "GET"]
        assert not served, f"{len(served)} upstream GETs made for a neighbour"
