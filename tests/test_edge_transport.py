"""Issue 22, the network edge in shaperesolver.transport: one deadline from the first byte,
malformed answers classified where they arrive, and connections only to checked addresses.

Real servers on 127.0.0.1 that drip their headers one line a second, redirect to URLs
that do not parse, and a host name whose answer changes between two lookups (the DNS
server's behaviour, stood in for in-process by swapping ``socket.getaddrinfo``: nothing
else is patched).  Doors: the API, the console script (``from=``, ``fromlist= jobs=4``,
``fallback=always``), the GDAL relay and ``mirror=``.  Bodies: Mars, the Moon, Phobos, Io.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import dems
import pytest
from osgeo import gdal
from servers import RangeServer, StacServer, _Base, _QuietHandler, item
from test_gdal_lockdown import PUBLIC_API, Redirector, _public_api
from test_outcomes import make

from shaperesolver import HttpSettings, NoAnswerError, Resolver
from shaperesolver.errors import CatalogError, MirrorError
from shaperesolver.mirror import Mirror
from shaperesolver.net.transport import AddressPolicy, Http, stream_errors

EXE = str(Path(sys.executable).parent / "shaperesolver")
FAST = HttpSettings(connect_timeout=3, read_timeout=5, retries=1, backoff=0.01, deadline=5)
#: a bound no fixed run comes near (each is cut at a 5 s deadline), and a dripping run
#: on the old code passes (http.client gives up only after 100 header lines, and retries)
EXITED_WITHIN = 60
BAD_LOCATION = "http://[::1/search"
#: what a Location that does not parse is called (by requests, or by our own check)
MALFORMED = re.compile(r"malformed answer|not a valid URL")


class HeaderDrip(_Base):
    """Answers every request with a status line, then one header line a second, and never
    ends the headers (until the test ends): each read is well inside any read timeout."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.stop = threading.Event()
        super().__init__()

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def __exit__(self, *exc):
        self.stop.set()
        super().__exit__(*exc)

    def _handler_class(self):
        server = self

        class Handler(_QuietHandler):
            def _drip(self):
                server.log({"method": self.command, "path": self.path})
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self.close_connection = True
                try:
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
                    self.wfile.flush()
                    n = 0
                    while not server.stop.wait(server.interval):
                        n += 1
                        self.wfile.write(f"X-Drip-{n}: {n}\r\n".encode())
                        self.wfile.flush()
                except OSError:  # the client gave up
                    pass

            do_GET = do_POST = do_HEAD = _drip

        return Handler


def digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run(*args, env, timeout=EXITED_WITHIN):
    """The console script; TimeoutExpired (a failure) if it is still running after ``timeout`` s."""
    return subprocess.run([EXE, "cache=no", *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


def in_thread(call, within=EXITED_WITHIN):
    """Run ``call`` in a thread; (what it raised, or None) once it ended, a failure if it is
    still running after ``within`` seconds."""
    out: dict = {}

    def target():
        try:
            out["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            out["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(within)
    assert not worker.is_alive(), f"still running {within} s after a 5 s deadline"
    return out.get("error")


def one_line_each(stderr: str) -> None:
    assert "Traceback" not in stderr and "unexpected" not in stderr.lower(), stderr


# ================================================================ one deadline from the first byte


@pytest.mark.parametrize("where", ["url", "catalog"])
def test_a_server_that_drips_its_headers_is_cut_at_the_deadline_api(where, isisdata):
    """Per-read timeouts reset on every header line: resolve() ran for minutes past deadline=5."""
    with HeaderDrip() as drip:
        kw = {where: drip.url()}

        def call():
            with Resolver(cache="no", isisdata=isisdata, verify=False, http=FAST, **kw) as r:
                return r.resolve(target="Mars")

        err = in_thread(call)
    assert isinstance(err, NoAnswerError) and "deadline" in str(err), repr(err)
    assert "127.0.0.1" in str(err)


def test_a_proxy_that_drips_its_headers_is_cut_at_the_deadline(monkeypatch, isisdata):
    """The environment's proxy connects for us; the connection to it keeps the deadline."""
    for k in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(k, raising=False)
    with HeaderDrip() as drip:
        monkeypatch.setenv("http_proxy", drip.url())
        monkeypatch.setenv("HTTP_PROXY", drip.url())

        def call():
            with Resolver(url=f"http://{PUBLIC_API}/", cache="no", isisdata=isisdata, verify=False, http=FAST) as r:
                return r.resolve(target="Titan")

        err = in_thread(call)
        assert drip.requests, "the proxy was not asked"
    assert isinstance(err, NoAnswerError) and "deadline" in str(err), repr(err)


@pytest.mark.parametrize("door", ["from=", "fromlist= jobs=4"])
def test_a_server_that_drips_its_headers_is_cut_at_the_deadline_cli(door, tmp_path, env):
    bodies = ["Mars", "Moon", "Phobos", "Io"] if door.startswith("fromlist") else ["Moon"]
    cubes = [make(tmp_path / "c", f"{b.lower()}.cub", b.upper()) for b in bodies]
    before = {c: digest(c) for c in cubes}
    with HeaderDrip() as drip:
        if door == "from=":
            p = run(f"from={cubes[0]}", f"url={drip.url()}", env=env)
        else:
            (tmp_path / "list.txt").write_text("".join(f"{c}\n" for c in cubes))
            p = run(f"fromlist={tmp_path / 'list.txt'}", "jobs=4", f"url={drip.url()}", env=env)
    assert p.returncode == 1, p.stderr
    one_line_each(p.stderr)
    assert "deadline" in p.stderr and drip.url() in p.stderr, p.stderr
    assert all(digest(c) == before[c] for c in cubes), "a cube changed although its server never answered"


@pytest.fixture(scope="module")
def moon_www(tmp_path_factory):
    d = tmp_path_factory.mktemp("www")
    dems.make_cog(d / "moon.tif", "Moon", 1024, 512)
    return d


def test_an_asset_host_that_drips_its_headers_is_cut_mirror_api(tmp_path):
    """The mirror's low-speed limit started only with the body: a host dripping headers held it."""
    with HeaderDrip() as drip, StacServer([item("molaMars0005", ["Mars"], "0005", href=drip.url("mars.tif"))]) as stac, \
            Resolver(url=stac.url, cache="no", http=HttpSettings(retries=0, read_timeout=5, deadline=30)) as r:
        mirror = Mirror(tmp_path / "m", r, min_rate=1024, slow_time=3, retries=1)
        err = in_thread(lambda: mirror.add("Mars"))
    assert isinstance(err, MirrorError) and "deadline" in str(err) and "mars.tif" in str(err), repr(err)
    assert not (tmp_path / "m" / "catalog.json").exists()


def test_an_asset_host_that_drips_its_headers_fails_its_body_only_mirror_cli(tmp_path, env, moon_www):
    with HeaderDrip() as drip, RangeServer(moon_www) as files, \
            StacServer([item("molaMars0005", ["Mars"], "0005", href=drip.url("mars.tif")),
                        item("lolaMoon0001", ["Moon"], "0001", href=files.url("moon.tif"))]) as stac:
        p = run(f"mirror={tmp_path / 'm'}", "target=Mars,Moon", f"url={stac.url}", env=env)
    assert p.returncode == 1, p.stderr
    one_line_each(p.stderr)
    assert "deadline" in p.stderr and "mars.tif" in p.stderr, p.stderr
    cat = (tmp_path / "m" / "catalog.json").read_text()
    assert "lolaMoon0001" in cat and "molaMars0005" not in cat


# ================================================================ malformed answers are no answer


@pytest.mark.parametrize("headers", [
    {"Location": BAD_LOCATION},  # urllib: ValueError: Invalid IPv6 URL
    {"Location": "http://127.0.0.1:99999/search"},  # ValueError: Port out of range
    {"Location": "http://127.0.0.1:port/search"},  # ValueError: Port could not be cast
], ids=["ipv6", "port-range", "port-text"])
def test_a_malformed_redirect_from_the_api_is_no_answer_api(headers, resolver_factory, isisdata):
    with StacServer([item("molaMars0005", ["Mars"], "0005")]) as srv:
        srv.fault(status=302, headers={**headers, "Content-Length": "0"}, times=10)
        r = resolver_factory(srv.url, isisdata=isisdata, cache="no", http=FAST)
        with pytest.raises(NoAnswerError) as info:
            r.resolve(target="Mars")
    assert srv.url.rstrip("/") in str(info.value) and MALFORMED.search(str(info.value)), str(info.value)


@pytest.mark.parametrize("fault", [
    {"headers": {"Content-Length": "\u00b2"}, "close": False},  # isdigit() but not int()
    {"headers": {"Retry-After": "\u00b2"}, "status": 503},  # the same in Retry-After
    {"headers": {"Content-Length": "12, 13"}},
    {"headers": {"Content-Range": "bytes 9-3/2"}},
], ids=["length-superscript", "retry-after-superscript", "length-list", "range"])
def test_malformed_framing_headers_are_no_answer(fault, resolver_factory, isisdata):
    with StacServer([item("molaMars0005", ["Mars"], "0005")]) as srv:
        srv.fault(**{"status": 200, "body": b"{}", **fault}, times=10)
        r = resolver_factory(srv.url, isisdata=isisdata, cache="no", http=FAST)
        with pytest.raises(NoAnswerError) as info:
            r.resolve(target="Mars")
    assert srv.url.rstrip("/") in str(info.value), str(info.value)


def test_a_malformed_redirect_from_the_api_falls_back_or_fails_as_the_policy_says_cli(tmp_path, env, isisdata):
    """The no-answer rule: the cube fails untouched, unless fallback=always (SYSTEM then)."""
    cubes = [make(tmp_path / "c", "mars.cub", "MARS"), make(tmp_path / "c", "mars2.cub", "MARS")]
    before = digest(cubes[0])
    with StacServer([item("molaMars0005", ["Mars"], "0005")]) as srv:
        srv.fault(status=302, headers={"Location": BAD_LOCATION, "Content-Length": "0"}, times=20)
        kept = run(f"from={cubes[0]}", f"url={srv.url}", f"isisdata={isisdata}", "verify=no", env=env)
        fell = run(f"from={cubes[1]}", f"url={srv.url}", f"isisdata={isisdata}", "verify=no", "fallback=always",
                   "--json", env=env)
    assert kept.returncode == 1, kept.stderr
    one_line_each(kept.stderr)
    assert MALFORMED.search(kept.stderr) and "check url= and the network" in kept.stderr, kept.stderr
    assert digest(cubes[0]) == before
    assert fell.returncode == 0, fell.stderr
    one_line_each(fell.stderr)
    rec = json.loads(fell.stdout.splitlines()[-1])
    assert rec["source"] == "system" and MALFORMED.search(json.dumps(rec.get("fallback_reason"))), rec


def test_a_malformed_redirect_from_a_model_host_is_no_answer_through_the_relay_cli(tmp_path, env):
    """GDAL reads the model through the relay, whose upstream got the ValueError: a traceback."""
    cube = make(tmp_path / "c", "phobos.cub", "Phobos")
    before = digest(cube)
    with Redirector("http://[::1/phobos.tif") as bounce, \
            StacServer([item("phobosErnst0001", ["Phobos"], "0001",
                             href=f"http://127.0.0.1:{bounce.port}/phobos.tif")]) as srv:
        gdal.VSICurlClearCache()
        p = run(f"from={cube}", f"url={srv.url}", "verify=yes", "--json", env=env)
    assert p.returncode == 1, p.stderr
    one_line_each(p.stderr)
    # the line names the model (a long line is cut in its middle); the record keeps the whole reason
    assert "phobosErnst0001" in p.stderr and MALFORMED.search(p.stderr), p.stderr
    error = json.loads(p.stdout.splitlines()[-1])["error"]
    assert "/phobos.tif: malformed answer" in error and error.count("phobos.tif") == 1, error
    assert digest(cube) == before


def test_a_malformed_redirect_from_an_asset_host_fails_its_body_only_mirror(tmp_path, env, moon_www):
    """It ended the whole mirror= run with "unexpected error": the Moon was never mirrored."""
    with Redirector(BAD_LOCATION) as bounce, RangeServer(moon_www) as files, \
            StacServer([item("molaMars0005", ["Mars"], "0005", href=f"http://127.0.0.1:{bounce.port}/mars.tif"),
                        item("lolaMoon0001", ["Moon"], "0001", href=files.url("moon.tif"))]) as stac:
        p = run(f"mirror={tmp_path / 'm'}", "target=Mars,Moon", f"url={stac.url}", env=env)
        with Resolver(url=stac.url, cache="no", http=FAST) as r:
            with pytest.raises(MirrorError, match=MALFORMED):
                Mirror(tmp_path / "m2", r, retries=0).add("Mars")
    assert p.returncode == 1, p.stderr
    one_line_each(p.stderr)
    assert "mars.tif" in p.stderr and MALFORMED.search(p.stderr), p.stderr
    cat = (tmp_path / "m" / "catalog.json").read_text()
    assert "lolaMoon0001" in cat and "molaMars0005" not in cat


# ================================================================ connect to the address that was checked

#: A "public" address by the rules (not loopback, private, link-local or reserved) that no
#: TCP connection can reach: connect() to a multicast address fails in the kernel
#: (ENETUNREACH), so nothing leaves the machine when the checked address is used.
PUBLIC_UNREACHABLE = "224.0.0.1"
REBINDING = "rebind.test"


@pytest.fixture
def rebinding(monkeypatch):
    """A DNS server that answers REBINDING with a public address first, then 127.0.0.1
    (a rebinding attack); every other name as the system does.  Yields the answers given."""
    real = socket.getaddrinfo
    answers: list[str] = []

    def lookup(host, port, *args, **kwargs):
        if isinstance(host, str) and host.rstrip(".").lower() == REBINDING:
            answers.append(PUBLIC_UNREACHABLE if not answers else "127.0.0.1")
            return real(answers[-1], port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    return answers


def test_a_name_that_rebinds_to_loopback_is_never_connected_to(rebinding, tmp_path):
    """The rules looked the name up, then requests looked it up again to connect."""
    (tmp_path / "moon.tif").write_bytes(b"II*\x00" + b"\x00" * 60)
    policy = AddressPolicy(f"http://{PUBLIC_API}/")  # a public API: loopback is refused
    http = Http(HttpSettings(retries=0, connect_timeout=3, read_timeout=3, deadline=10))
    with RangeServer(tmp_path) as victim:
        url = f"http://{REBINDING}:{victim.port}/moon.tif"
        # the relay's and the mirror's road: checked and connected by Http.stream itself
        with pytest.raises((CatalogError, *stream_errors())):
            resp, _ = http.stream(url, {}, policy, "model")
            resp.close()
        first = list(rebinding)
        rebinding.clear()
        # the road of a next link: checked by its caller, then sent
        policy.check(url, "next link")
        with pytest.raises(CatalogError):
            http.json("GET", url, policy=policy)
        http.close()
    assert victim.requests == [], "a request reached the loopback address the rules refused"
    assert first[0] == PUBLIC_UNREACHABLE and rebinding[0] == PUBLIC_UNREACHABLE


def test_a_next_link_whose_name_rebinds_to_loopback_is_no_answer(rebinding, monkeypatch, tmp_path):
    """Through the API: a public API (a proxy on loopback stands in for it) whose next link
    names a host that answers with a public address for the check, then loopback."""
    for k in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("no_proxy", REBINDING)  # the proxy carries the API only
    moons = [item(f"moon000{i}", ["Moon"], f"000{i}", href=f"https://dems.example.org/moon{i}.tif") for i in (1, 2)]
    with StacServer(moons, page_size=1, next_host=REBINDING) as srv, _public_api(monkeypatch, srv.port) as proxy:
        with Resolver(url=f"http://{PUBLIC_API}/", cache="no", verify=False, http=FAST,
                             isisdata=tmp_path / "none") as r:
            with pytest.raises(NoAnswerError, match="loopback"):
                r.resolve(target="Moon")
        direct = [q for q in srv.requests if q["headers"].get("Host", "").startswith(REBINDING)]
    assert direct == [], "the next link reached the loopback server the rules refused"
    assert rebinding and rebinding[0] == PUBLIC_UNREACHABLE


def tls(server, monkeypatch, seen=None):
    """Serve ``server`` over TLS with a certificate for ``localhost`` (tests/data/tls), which
    requests then trusts; the names clients ask for (SNI) go to ``seen``."""
    import ssl

    pem = Path(__file__).parent / "data" / "tls" / "localhost.pem"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pem))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem)
    if seen is not None:
        context.sni_callback = lambda sock, name, ctx: seen.append(name)
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    return server


def test_tls_is_checked_against_the_name_while_connecting_to_the_checked_address(monkeypatch, isisdata):
    """The connection goes to the address looked up and checked, and TLS still sends the
    name (SNI) and checks the certificate against it; Host names it too."""
    seen: list[str | None] = []
    with tls(StacServer([item("molaMars0005", ["Mars"], "0005")]), monkeypatch, seen) as srv:
        with Resolver(url=f"https://localhost:{srv.port}/", cache="no", isisdata=isisdata, verify=False, http=FAST) as r:
            assert r.resolve(target="Mars").item_id == "molaMars0005"
        with Resolver(url=f"https://127.0.0.1:{srv.port}/", cache="no", isisdata=isisdata, verify=False, http=FAST) as r:
            with pytest.raises(NoAnswerError, match="(?i)certificate"):
                r.resolve(target="Mars")
    assert "localhost" in seen
    assert {q["headers"].get("Host") for q in srv.requests} == {f"localhost:{srv.port}"}


def test_a_server_that_drips_its_headers_over_tls_is_cut_at_the_deadline(monkeypatch, isisdata):
    """The watchdog holds its own handle on the connection, so TLS wrapping it changes nothing."""
    with tls(HeaderDrip(), monkeypatch) as drip:
        def call():
            with Resolver(url=f"https://localhost:{drip.port}/", cache="no", isisdata=isisdata, http=FAST) as r:
                return r.resolve(target="Io")

        err = in_thread(call)
    assert isinstance(err, NoAnswerError) and "deadline" in str(err), repr(err)


# ------------------------------------------------------------------ attack round


@pytest.mark.parametrize("base", ["http://10.1.2.3/", "http://[fd00::1]/", "http://8.8.8.8/"])
@pytest.mark.parametrize("form", ["0.0.0.0", "0", "[::]", "[::ffff:0.0.0.0]", "[::127.0.0.1]"])
def test_the_unspecified_address_never_reaches_this_machine(base, form):
    """Before: 0.0.0.0, 0 and [::] counted as private, so with an API on a private address a
    link to them was allowed, and Linux connected it to a loopback-only service."""
    hits = []

    class Local(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *a):
            pass

    v6 = form.startswith("[")
    cls = type("S", (http.server.ThreadingHTTPServer,), {"address_family": socket.AF_INET6 if v6 else socket.AF_INET})
    srv = cls(("::1" if v6 else "127.0.0.1", 0), Local)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://{form}:{srv.server_address[1]}/x"
        with pytest.raises(CatalogError):
            Http(HttpSettings(deadline=5, retries=0)).json("GET", url, policy=AddressPolicy(base))
        assert not hits
    finally:
        srv.shutdown()
        srv.server_close()
