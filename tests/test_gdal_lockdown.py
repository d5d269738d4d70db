"""Issue 15, items 3 and 4 (and LOCAL_CS of 9): GDAL opens only what ISIS would, bounded.

Hostile files are written with GDAL (MRF, VRT, WMS) and served as ``.tif`` assets by the
Range-capable server on 127.0.0.1.  A "public" host is an IP literal (8.8.8.8,
93.184.216.34) reached through a forwarding proxy on loopback (``http_proxy``, which
both ``requests`` and GDAL's curl honour), so nothing leaves the machine and no name is
looked up.  Bodies: the Moon and Phobos.
"""

import http.client
import json
import os
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import cubes
import numpy as np
import pytest
from osgeo import gdal, osr
from servers import RangeServer, StacServer, item

from shaperesolver import HttpSettings, Resolver, errors
from shaperesolver.base import safeio
from shaperesolver.models import raster

FAST = HttpSettings(connect_timeout=2, read_timeout=5, retries=0, backoff=0.01)
SCRIPT = Path(sys.executable).parent / "shaperesolver"
MOON_A = 1737400.0
PUBLIC_API = "8.8.8.8"
PUBLIC_FILES = "93.184.216.34"
SECRET = b"TOPSECRET-0600-bytes:" + bytes(range(200, 256)) * 4


# ---------------------------------------------------------------- servers


class Proxy:
    """A forwarding HTTP proxy on loopback: ``routes`` maps "host:port" to a loopback port.

    Unknown hosts get 502 and are never contacted; every request is logged.
    """

    def __init__(self, routes):
        self.routes = dict(routes)
        self.requests = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                parts = urlsplit(self.path)
                hostport = parts.netloc if ":" in parts.netloc else parts.netloc + ":80"
                proxy.requests.append((self.command, hostport, parts.path))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                port = proxy.routes.get(hostport)
                if port is None:
                    self.send_response(502)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
                conn.request(self.command, parts.path + (f"?{parts.query}" if parts.query else ""), body, headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_HEAD = do_POST = _forward

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class Redirector:
    """Answers every request with a 302 to ``target``; with ``head_size`` a HEAD gets 200
    and that Content-Length instead (a host that redirects only the GET GDAL sends)."""

    def __init__(self, target, head_size=None):
        self.requests = []
        me = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                me.requests.append((self.command, self.path))
                if self.command == "HEAD" and head_size is not None:
                    self.send_response(200)
                    self.send_header("Content-Length", str(head_size))
                    self.send_header("Accept-Ranges", "bytes")
                else:
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.send_header("Content-Length", "0")
                self.end_headers()

            do_HEAD = do_GET

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def no_proxy_env(monkeypatch):
    for k in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


# ---------------------------------------------------------------- files written with GDAL


def _srs(body="Moon", radius=MOON_A, local=False):
    srs = osr.SpatialReference()
    if local:
        srs.SetLocalCS("arbitrary")
    else:
        srs.SetGeogCS(f"{body} 2000", f"D_{body}_2000", f"{body}_2000_IAU_IAG", radius, 0.0)
    return srs.ExportToWkt()


def moon_values(w=64, h=32, heights=False):
    lat = np.radians(np.linspace(89, -89, h))[:, None]
    lon = np.radians(np.linspace(-180, 180, w))[None, :]
    topo = 9000.0 * np.sin(3 * lon) * np.cos(2 * lat)
    return (topo if heights else MOON_A + topo).astype(np.float32)


def write_tif(path, values, body="Moon", radius=MOON_A, local=False, options=("TILED=YES", "BLOCKXSIZE=16", "BLOCKYSIZE=16")):
    h, w = values.shape
    ds = gdal.GetDriverByName("GTiff").Create(str(path), w, h, 1, gdal.GDT_Float32, options=list(options))
    ds.SetGeoTransform((-180.0, 360.0 / w, 0.0, 90.0, 0.0, -180.0 / h))
    ds.SetProjection(_srs(body, radius, local))
    ds.GetRasterBand(1).WriteArray(values)
    ds = None
    return path


def hostile_files(www, tmp, files_port, admin_port):
    """MRF, VRT and WMS datasets written by GDAL, renamed ``.tif``; returns the victims."""
    payload = write_tif(www / "payload.tif", moon_values(16, 16))
    victim = tmp / "victim-bashrc"
    victim.write_bytes(b"# the user's own shell start-up file\nexport PATH=$HOME/bin:$PATH\n")
    secret = tmp / "secret-0600"
    secret.write_bytes(SECRET)
    os.chmod(secret, 0o600)
    # MRF whose cache is filled from a server-chosen source into local files the server names
    mrf = gdal.GetDriverByName("MRF").CreateCopy(str(tmp / "m.mrf"), gdal.Open(str(payload)),
                                                options=["COMPRESS=DEFLATE", "NOCOPY=TRUE",
                                                         f"CACHEDSOURCE=/vsicurl/http://127.0.0.1:{files_port}/payload.tif"])
    mrf = None
    text = (tmp / "m.mrf").read_text().replace(
        "<Raster>", f"<Raster>\n    <DataFile>{victim}</DataFile>\n    <IndexFile>{tmp / 'created.idx'}</IndexFile>")
    (www / "mrf.tif").write_text(text)
    # VRT whose band is the raw bytes of a local 0600 file
    vrt = gdal.GetDriverByName("VRT").Create(str(tmp / "v.vrt"), 16, 8, 0)
    vrt.AddBand(gdal.GDT_Byte, ["subClass=VRTRawRasterBand", f"SourceFilename={secret}", "relativeToVRT=0"])
    vrt.SetGeoTransform((-180.0, 22.5, 0.0, 90.0, 0.0, -22.5))
    vrt.SetProjection(_srs())
    vrt = None
    (www / "vrt.tif").write_bytes((tmp / "v.vrt").read_bytes())
    # WMS service description whose server is an admin URL on another port
    src = gdal.Open(textwrap.dedent(f"""\
        <GDAL_WMS><Service name="WMS"><Version>1.1.1</Version>
        <ServerUrl>http://127.0.0.1:{admin_port}/admin/delete?</ServerUrl><Layers>x</Layers><SRS>EPSG:4326</SRS>
        <ImageFormat>image/tiff</ImageFormat></Service><DataWindow><UpperLeftX>-180</UpperLeftX>
        <UpperLeftY>90</UpperLeftY><LowerRightX>180</LowerRightX><LowerRightY>-90</LowerRightY><SizeX>64</SizeX>
        <SizeY>32</SizeY></DataWindow><BandsCount>1</BandsCount><DataType>Float32</DataType></GDAL_WMS>"""))
    gdal.GetDriverByName("WMS").CreateCopy(str(tmp / "w.xml"), src)
    (www / "wms.tif").write_bytes((tmp / "w.xml").read_bytes())
    return victim, secret


def _everything_written(*dirs):
    out = b""
    for d in dirs:
        for p in Path(d).rglob("*"):
            if p.is_file():
                out += p.read_bytes()
    return out


def _secret_bits():
    """Fragments of the secret as they could show up (raw, as decoded text, as pixel numbers)."""
    return [SECRET[:12], SECRET[:12].decode(), str(SECRET[0]) + ", " + str(SECRET[1]), f"median {SECRET[8]}",
            "TOPSECRET"]


# ---------------------------------------------------------------- 3. hostile formats


@pytest.mark.parametrize("door", ["api", "cli"])
def test_hostile_mrf_vrt_wms_assets_are_never_opened(tmp_path, no_proxy_env, door):
    www = tmp_path / "www"
    www.mkdir()
    with RangeServer(www) as files, RangeServer(tmp_path) as admin:
        victim, secret = hostile_files(www, tmp_path, files.port, admin.port)
        before = victim.read_bytes()
        names = {"Moon": "mrf.tif", "Phobos": "vrt.tif", "Io": "wms.tif"}
        items = [item(f"{b}{n[:3]}0001", [b], "0001", href=files.url(n)) for b, n in names.items()]
        cache = tmp_path / "cache"
        with StacServer(items) as srv:
            gdal.VSICurlClearCache()
            if door == "api":
                r = Resolver(url=srv.url, cache_dir=cache, http=FAST, isisdata=_empty_area(tmp_path))
                text = ""
                for body, name in names.items():
                    try:
                        res = r.resolve(target=body)
                    except errors.ShapeResolverError as exc:
                        text += str(exc)
                    else:
                        assert res.source != "web"
                        text += json.dumps(res.record())
                    assert "not a GeoTIFF" in text and name in text, text
            else:
                moon = cubes.make(tmp_path, "lro_moon")
                io = cubes.make(tmp_path, "galileo_io_detached")
                lst = tmp_path / "list.txt"
                lst.write_text(f"{moon}\n{io}\n")
                env = dict(os.environ, SHAPERESOLVER_CACHE_DIR=str(cache), ISISDATA=str(_empty_area(tmp_path)))
                runs = [subprocess.run([str(SCRIPT), f"fromlist={lst}", f"url={srv.url}", "--json", "-v", *extra],
                                       capture_output=True, text=True, env=env, timeout=120)
                        for extra in ([], ["target=Phobos", "jobs=2"])]
                text = "".join(p.stdout + p.stderr for p in runs)
                assert "Traceback" not in text
                assert text.count("not a GeoTIFF") >= 3, text
                for p in runs:
                    for line in p.stdout.splitlines():
                        assert json.loads(line)["source"] != "web"
        assert admin.requests == [], admin.requests  # the WMS server was never asked
        assert victim.read_bytes() == before and not (tmp_path / "created.idx").exists()
        assert {q["path"] for q in files.requests} <= {"/mrf.tif", "/vrt.tif", "/wms.tif"}  # no payload fetched
    written = _everything_written(cache) + text.encode()
    for bit in _secret_bits():
        assert (bit if isinstance(bit, bytes) else bit.encode()) not in written


def test_local_models_open_as_isis_cube_or_geotiff_only(tmp_path):
    """A user's ISIS cube and GeoTIFF pass for the Moon; a local VRT or MRF is refused by format."""
    values = moon_values()
    cub = gdal.GetDriverByName("ISIS3").Create(str(tmp_path / "moon.cub"), 64, 32, 1, gdal.GDT_Float32)
    cub.SetGeoTransform((-180.0, 360.0 / 64, 0.0, 90.0, 0.0, -180.0 / 32))
    cub.SetProjection(_srs())
    cub.GetRasterBand(1).WriteArray(values)
    cub = None
    tif = write_tif(tmp_path / "moon.tif", values)
    www = tmp_path / "www"
    www.mkdir()
    victim, secret = hostile_files(www, tmp_path, 9, 9)
    r = Resolver(cache_dir=tmp_path / "cache")
    for model in (tmp_path / "moon.cub", tif):
        assert r.resolve(target="Moon", shape="user", model=str(model)).source == "user"
        assert raster.open_model(str(model), drivers=raster.LOCAL_DRIVERS).RasterCount == 1
    for name in ("vrt.tif", "mrf.tif"):
        with pytest.raises(errors.ModelError, match="not an ISIS cube or a GeoTIFF") as info:
            r.resolve(target="Moon", shape="user", model=str(www / name))
        assert "TOPSECRET" not in str(info.value)
    with pytest.raises(errors.ModelError, match="not a GeoTIFF"):  # a web model is never an ISIS cube
        raster.open_model(str(tmp_path / "moon.cub"))


# ---------------------------------------------------------------- 3. addresses of assets


def _public_api(proxy_env, stac_port, extra_routes=()):
    routes = {f"{PUBLIC_API}:80": stac_port, **dict(extra_routes)}
    proxy = Proxy(routes)
    proxy_env.setenv("http_proxy", proxy.url)
    proxy_env.setenv("HTTP_PROXY", proxy.url)
    return proxy


@pytest.mark.parametrize("href,words", [
    ("http://169.254.169.254/latest/meta-data/iam/security-credentials/#.tif", "link-local address (169.254.169.254)"),
    ("http://127.0.0.1:{port}/moon.tif", "loopback address (127.0.0.1)"),
    ("http://10.0.0.7/moon.tif", "private address (10.0.0.7)"),
    ("http://[fe80::1]/moon.tif", "link-local address (fe80::1)"),
])
def test_asset_href_to_an_address_the_public_api_may_not_send_us_to(tmp_path, no_proxy_env, make_cube, href, words):
    www = tmp_path / "www"
    www.mkdir()
    write_tif(www / "moon.tif", moon_values())
    with RangeServer(www) as files:
        href = href.format(port=files.port)
        with StacServer([item("moon0001", ["Moon"], "0001", href=href)]) as srv:
            with _public_api(no_proxy_env, srv.port) as proxy:
                api = f"http://{PUBLIC_API}/"
                for verify in (True, False):  # refused when chosen, not only when opened
                    r = Resolver(url=api, cache="no", http=FAST, verify=verify, isisdata=_empty_area(tmp_path))
                    try:
                        res = r.resolve(target="Moon")
                        text = json.dumps(res.record())
                        assert res.source != "web"
                    except errors.ShapeResolverError as exc:
                        text = str(exc)
                    assert words in text and "asset href" in text, text
                cube = make_cube("lro_moon")
                env = dict(os.environ, SHAPERESOLVER_CACHE_DIR=str(tmp_path / "c"), ISISDATA=str(_empty_area(tmp_path)))
                p = subprocess.run([str(SCRIPT), f"from={cube}", f"url={api}", "verify=no", "--json"],
                                   capture_output=True, text=True, env=env, timeout=60)
                assert "Traceback" not in p.stderr and words in p.stdout + p.stderr
                assert href.split("#")[0].encode() not in cube.read_bytes()
            assert files.requests == [] and all(h == f"{PUBLIC_API}:80" for _, h, _ in proxy.requests)


def test_public_asset_hosts_redirect_to_loopback_is_not_followed(tmp_path, no_proxy_env):
    www = tmp_path / "www"
    www.mkdir()
    write_tif(www / "moon.tif", moon_values())
    write_tif(www / "phobos.tif", moon_values() / MOON_A * 11080.0, body="Phobos", radius=11080.0)
    with RangeServer(www) as inner, Redirector(f"http://127.0.0.1:{inner.port}/moon.tif") as bounce, \
            RangeServer(www) as outer:
        items = [item("moon0001", ["Moon"], "0001", href=f"http://{PUBLIC_FILES}/moon.tif"),
                 item("phobos0001", ["Phobos"], "0001", href=f"http://{PUBLIC_FILES}:8080/phobos.tif")]
        with StacServer(items) as srv:
            routes = {f"{PUBLIC_FILES}:80": bounce.port, f"{PUBLIC_FILES}:8080": outer.port}
            with _public_api(no_proxy_env, srv.port, routes):
                gdal.VSICurlClearCache()
                r = Resolver(url=f"http://{PUBLIC_API}/", cache="no", http=FAST, isisdata=_empty_area(tmp_path))
                try:
                    text = json.dumps(r.resolve(target="Moon").record())
                except errors.ShapeResolverError as exc:
                    text = str(exc)
                assert "redirect" in text and "loopback address (127.0.0.1)" in text, text
                # a public asset host that answers itself is opened (through the proxy, by GDAL too)
                phobos = r.resolve(target="Phobos")
                assert phobos.source == "web" and phobos.shape_model == f"/vsicurl/http://{PUBLIC_FILES}:8080/phobos.tif"
        assert inner.requests == [] and bounce.requests  # asked the public host, never the loopback one
        assert any(q["method"] == "GET" for q in outer.requests)


# ---------------------------------------------------------------- 4. bounded work


def one_big_tile(path, side=32768):
    """A GeoTIFF (GDAL-written, then its one tile filled) of one side x side Byte deflate tile."""
    import zlib

    ds = gdal.GetDriverByName("GTiff").Create(str(path), side, side, 1, gdal.GDT_Byte, options=[
        "TILED=YES", f"BLOCKXSIZE={side}", f"BLOCKYSIZE={side}", "COMPRESS=DEFLATE", "SPARSE_OK=TRUE"])
    ds.SetGeoTransform((-180.0, 360.0 / side, 0.0, 90.0, 0.0, -180.0 / side))
    ds.SetProjection(_srs("Phobos", 11080.0))
    ds = None
    z = zlib.compressobj(1)
    row = b"\x07" * side
    with open(path, "ab") as f:
        start = f.tell()
        for _ in range(side):
            f.write(z.compress(row))
        f.write(z.flush())
        count = f.tell() - start
    raw = bytearray(Path(path).read_bytes()[:start])
    assert raw[:4] == b"II*\x00"
    ifd = int.from_bytes(raw[4:8], "little")
    for i in range(int.from_bytes(raw[ifd:ifd + 2], "little")):
        e = ifd + 2 + 12 * i
        tag = int.from_bytes(raw[e:e + 2], "little")
        if tag in (324, 325):  # TileOffsets, TileByteCounts: one LONG each, held in the entry
            raw[e + 2:e + 4] = (4).to_bytes(2, "little")
            raw[e + 8:e + 12] = (start if tag == 324 else count).to_bytes(4, "little")
    with open(path, "r+b") as f:
        f.write(raw)
    return path


def _peak_rss_mib(cmd, env):
    """Run ``cmd`` under a child Python that reports its children's peak RSS (MiB)."""
    probe = ("import resource, subprocess, sys, json; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "print(json.dumps([p.returncode, p.stdout, p.stderr, "
             "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024]))")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, env=env, timeout=600)
    return json.loads(out.stdout)


def test_one_huge_deflate_tile_is_refused_before_reading(tmp_path, make_cube):
    www = tmp_path / "www"
    www.mkdir()
    big = one_big_tile(www / "phobos_big.tif")
    assert big.stat().st_size < 8 * 2**20
    cube = make_cube("lro_moon")
    with RangeServer(www) as files, StacServer([item("phobos0001", ["Phobos"], "0001",
                                                     href=files.url("phobos_big.tif"))]) as srv:
        env = dict(os.environ, SHAPERESOLVER_CACHE_DIR=str(tmp_path / "cache"), ISISDATA=str(_empty_area(tmp_path)))
        rc, out, err, peak = _peak_rss_mib([str(SCRIPT), f"from={cube}", "target=Phobos", f"url={srv.url}", "--json"],
                                           env)
    assert "Traceback" not in err and json.loads(out)["source"] != "web"
    assert "32768x32768 Byte blocks (1024 MiB each)" in out + err and "tiled" in out + err
    assert peak < 400, f"peak RSS {peak:.0f} MiB"
    with pytest.raises(errors.ModelError, match="more than the 16 MiB"):  # the API, a local user model
        Resolver(cache="no").resolve(target="Phobos", shape="user", model=str(big))


def _vrt_with_lost_overview(tmp_path):
    src = write_tif(tmp_path / "base.tif", moon_values(1024, 512), options=("TILED=YES",))
    vrt = gdal.Translate(str(tmp_path / "lost.vrt"), str(src), format="VRT")
    vrt = None
    text = (tmp_path / "lost.vrt").read_text().replace(
        "</VRTRasterBand>", f"<Overview><SourceFilename relativeToVRT=\"0\">{tmp_path / 'gone.tif'}</SourceFilename>"
                            "<SourceBand>1</SourceBand></Overview></VRTRasterBand>")
    (tmp_path / "lost.vrt").write_text(text)
    return tmp_path / "lost.vrt"


@pytest.mark.parametrize("exceptions", [False, True])
def test_an_overview_gdal_cannot_open_is_skipped(tmp_path, exceptions):
    path = _vrt_with_lost_overview(tmp_path)
    was = gdal.GetUseExceptions()
    (gdal.UseExceptions if exceptions else gdal.DontUseExceptions)()
    try:
        ds = gdal.Open(str(path))
        assert ds.GetRasterBand(1).GetOverviewCount() == 1
        sample = raster.sample_values(ds, str(path))
        assert sample.values and "blocks of full resolution" in sample.level
        assert raster.full_resolution_sample(ds, str(path)).values
    finally:
        (gdal.UseExceptions if was else gdal.DontUseExceptions)()


def test_vrt_with_a_lost_overview_fails_each_cube_not_the_batch(tmp_path):
    path = _vrt_with_lost_overview(tmp_path)
    www = tmp_path / "www"
    www.mkdir()
    (www / "moon.tif").write_bytes(path.read_bytes())
    moon1 = cubes.make(tmp_path, "lro_moon", "a.cub")
    moon2 = cubes.make(tmp_path, "lro_moon", "b.cub")
    lst = tmp_path / "list.txt"
    lst.write_text(f"{moon1}\n{moon2}\n")
    env = dict(os.environ, SHAPERESOLVER_CACHE_DIR=str(tmp_path / "cache"), ISISDATA=str(_empty_area(tmp_path)))
    with RangeServer(www) as files, StacServer([item("moon0001", ["Moon"], "0001", href=files.url("moon.tif"))]) as srv:
        p = subprocess.run([str(SCRIPT), f"fromlist={lst}", f"url={srv.url}", "jobs=1", "--json"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert "Traceback" not in p.stderr and "AttributeError" not in p.stdout + p.stderr
    recs = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(recs) == 2 and all(r["source"] != "web" for r in recs)
    assert all("not a GeoTIFF" in (r.get("error") or r.get("fallback_reason") or "") for r in recs)
    # the same VRT as a local user model: one line, no AttributeError
    with pytest.raises(errors.ModelError, match="not an ISIS cube or a GeoTIFF"):
        Resolver(cache="no").resolve(target="Moon", shape="user", model=str(path))


def test_json_depth_check_is_linear():
    code = ("import time; from shaperesolver.base import safeio; t = time.monotonic(); "
            "ok = [safeio.json_depth_ok(('\"' + u * (2_000_000 // len(u)))) for u in ('\\\\\"', '\"\\\\\"', '\"\\\\')]; "
            "print(ok, time.monotonic() - t)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    took = float(p.stdout.split("]")[1])
    assert took < 5, took  # measured; quadratic took > 130 s on 200 kB
    assert safeio.json_depth_ok('["\\"[[[[", [1]]', 2) and not safeio.json_depth_ok('[[["x"]]]', 2)
    assert not safeio.json_depth_ok('[[["unterminated \\"', 2)  # brackets before an open string still count


def test_a_quadratic_json_answer_ends_quickly_through_the_api_and_a_static_catalog(tmp_path):
    bad = b'"' + b'\\"' * 100_000  # 200 kB
    (tmp_path / "catalog.json").write_bytes(bad)
    with StacServer([]) as srv:
        srv.fault(status=200, body=bad)
        for kw in ({"url": srv.url}, {"catalog": tmp_path / "catalog.json"}):
            r = Resolver(cache="no", http=FAST, verify=False, isisdata=_empty_area(tmp_path), **kw)
            try:
                text = json.dumps(r.resolve(target="Phobos").record())
            except errors.ShapeResolverError as exc:
                text = str(exc)
            assert "JSON" in text, text


def overview_lies(path, body, radius, values_full, values_ov):
    """A tiled GeoTIFF whose overviews (GDAL-built, then rewritten) hold other values than its pixels."""
    write_tif(path, values_full, body=body, radius=radius, options=("TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256"))
    ds = gdal.Open(str(path), gdal.GA_Update)
    ds.BuildOverviews("AVERAGE", [2, 4])
    band = ds.GetRasterBand(1)
    for i in range(band.GetOverviewCount()):
        ov = band.GetOverview(i)
        ov.WriteArray(np.asarray(values_ov[:: 2 ** (i + 1), :: 2 ** (i + 1)], dtype=np.float32))
    ds = None
    return path


def test_overviews_with_radii_over_full_resolution_heights_fail(tmp_path, make_cube):
    www = tmp_path / "www"
    www.mkdir()
    heights = moon_values(1024, 512, heights=True)
    overview_lies(www / "moon.tif", "Moon", MOON_A, heights, heights + MOON_A)
    write_tif(www / "moon_ok.tif", heights + MOON_A, options=("TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256"))
    ph = heights / 9000.0 * 1000.0  # Phobos: -1 .. +1 km around an 11 km radius
    overview_lies(tmp_path / "phobos.tif", "Phobos", 11080.0, ph, ph + 11080.0)
    with RangeServer(www) as files:
        items = [item("moon0002", ["Moon"], "0002", href=files.url("moon.tif")),
                 item("moon0001", ["Moon"], "0001", href=files.url("moon_ok.tif"))]
        with StacServer(items) as srv:
            gdal.VSICurlClearCache()
            r = Resolver(url=srv.url, cache="no", http=FAST, isisdata=_empty_area(tmp_path))
            with pytest.raises(errors.ModelError, match="values check for Moon.*heights.*full-resolution window"):
                r.resolve(target="Moon", shape="user", model="/vsicurl/" + files.url("moon.tif"))
            assert r.resolve(target="Moon", shape="user", model="/vsicurl/" + files.url("moon_ok.tif")).source == "user"
        cube = make_cube("lro_moon")
        (www / "phobos.tif").write_bytes((tmp_path / "phobos.tif").read_bytes())
        env = dict(os.environ, SHAPERESOLVER_CACHE_DIR=str(tmp_path / "cache"), ISISDATA=str(_empty_area(tmp_path)))
        with StacServer([item("phobos0001", ["Phobos"], "0001", href=files.url("phobos.tif"))]) as srv:
            p = subprocess.run([str(SCRIPT), f"from={cube}", "target=Phobos", f"url={srv.url}", "--json"],
                               capture_output=True, text=True, env=env, timeout=120)
    assert "Traceback" not in p.stderr and json.loads(p.stdout)["source"] != "web"
    assert "values check for Phobos" in p.stdout and "full-resolution window" in p.stdout


# ---------------------------------------------------------------- 9. LOCAL_CS


def test_local_cs_dem_is_refused_and_not_reported_as_earth(tmp_path):
    good = write_tif(tmp_path / "moon_local.tif", moon_values(), local=True)
    heights = write_tif(tmp_path / "phobos_local.tif", moon_values(heights=True) / 9.0, local=True)
    assert raster.crs_facts(gdal.Open(str(good))).unconfirmed == "a LOCAL_CS"
    r = Resolver(cache="no")
    for target, model in (("Moon", good), ("Phobos", heights)):  # radii or not: no latitude and longitude
        with pytest.raises(errors.ModelError) as info:
            r.resolve(target=target, shape="user", model=str(model))
        assert "a LOCAL_CS, which gives no latitude and longitude" in str(info.value) and "Earth" not in str(info.value)


# ---------------------------------------------------------------- helpers


def _empty_area(tmp_path):
    dems = tmp_path / "isisdata-empty" / "base" / "dems"
    if not dems.exists():
        dems.mkdir(parents=True)
        (dems / "kernels.0001.db").write_text("Object = Dem\nEndObject\n")
    return tmp_path / "isisdata-empty"
