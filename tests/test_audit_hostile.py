"""Issue 25, attacked: what a hostile label, list or neighbour file may make ``audit=yes`` do.

Each test failed before its fix (an attack round on the audit): a label naming an ISIS
label whose ``^Core`` is a VRT made GDAL fetch any URL, a ``^Core`` FIFO hung the audit,
a label's URL reached a loopback host with a local catalog, ``-log``/``-errlist`` naming
the list grew or deleted it, an audit removed a stale journal, an empty list got the
resolve summary, and a cube that could not be read printed ``(none)`` as its model.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cubes
import pytest

from shaperesolver import HttpSettings, Resolver
from shaperesolver.cube.txn import journal_path

ROOT = Path(__file__).resolve().parent.parent
EXE = str(Path(sys.executable).parent / "shaperesolver")
CATALOG = ROOT / "data" / "catalog" / "catalog.json"
ISISDATA = ROOT / "data" / "isisdata"
FAST = HttpSettings(retries=0, deadline=5.0, connect_timeout=2.0, read_timeout=5.0)
LABEL_BYTES = 8192

DETACHED = """Object = IsisCube
  Object = Core
    ^Core = "{core}"
    Format = {fmt}
    Group = Dimensions
      Samples = 64
      Lines   = 32
      Bands   = 1
    End_Group
    Group = Pixels
      Type = Real
      ByteOrder = Lsb
      Base = 0.0
      Multiplier = 1.0
    End_Group
  End_Object
  Group = Mapping
    ProjectionName = SimpleCylindrical
    CenterLongitude = 0.0
    TargetName = Mars
    EquatorialRadius = 3396190.0 <meters>
    PolarRadius = 3376200.0 <meters>
    LatitudeType = Planetocentric
    LongitudeDirection = PositiveEast
    LongitudeDomain = 180
    MinimumLatitude = -90.0
    MaximumLatitude = 90.0
    MinimumLongitude = -180.0
    MaximumLongitude = 180.0
    UpperLeftCornerX = -10669477.0 <meters>
    UpperLeftCornerY = 5334738.0 <meters>
    PixelResolution = 166710.0 <meters/pixel>
    Scale = 0.35 <pixels/degree>
  End_Group
End_Object
End
"""


class Counting:
    """An HTTP server on 127.0.0.1 that counts every request and answers 404."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        seen = self.paths

        class H(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                seen.append(self.path)
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_HEAD = do_GET  # noqa: N815

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def host():
    h = Counting()
    yield h
    h.close()


def cube(path: Path, shape: str | None, target: str = "MARS") -> Path:
    text = cubes.label_text("viking_mars").replace("Bytes = 65536", f"Bytes = {LABEL_BYTES}")
    text = text.replace("StartByte   = 65537", f"StartByte   = {LABEL_BYTES + 1}").replace("= MARS\n", f"= {target}\n")
    if shape is not None:
        text = text.replace("  Group = Kernels\n", f'  Group = Kernels\n    ShapeModel = "{shape}"\n', 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    return cubes.write_attached(path, text, label_bytes=LABEL_BYTES, data_bytes=512)


def run(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SHAPERESOLVER_CACHE_DIR=str(cwd / "cache"), SHAPERESOLVER_HTTP_DEADLINE="5")
    for k in ("ISISDATA", "SHAPERESOLVER_STAC_URL", "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(k, None)
    return subprocess.run([EXE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def snap(p: Path) -> tuple[bytes, int]:
    return p.read_bytes(), os.stat(p).st_mtime_ns


def test_an_isis_label_whose_core_is_a_vrt_is_not_opened(tmp_path, host):
    """A VRT core would make GDAL fetch any URL itself (no relay, no address rules)."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "ext.tif").write_text(
        '<VRTDataset rasterXSize="64" rasterYSize="32"><VRTRasterBand dataType="Float32" band="1"><SimpleSource>'
        f'<SourceFilename relativeToVRT="0">/vsicurl/{host.url}secret.tif</SourceFilename><SourceBand>1</SourceBand>'
        '</SimpleSource></VRTRasterBand></VRTDataset>\n')
    (models / "vrt_model.cub").write_text(DETACHED.format(core="ext.tif", fmt="GeoTIFF"))
    c = cube(tmp_path / "c.cub", str(models / "vrt_model.cub"))
    before = snap(c)
    with Resolver(catalog=CATALOG, isisdata=ISISDATA, verify=False, cache="no", http=FAST) as r:
        got = r.audit(c)
    assert got.status == "wrong-body" and "^Core is another file" in (got.reason or ""), got
    assert host.paths == [], "GDAL fetched the VRT's source"
    assert snap(c) == before


def test_an_isis_label_whose_core_is_a_fifo_is_missing_not_a_hang(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    os.mkfifo(models / "core.fifo")
    (models / "fifo_model.cub").write_text(DETACHED.format(core="core.fifo", fmt="BandSequential"))
    c = cube(tmp_path / "c.cub", str(models / "fifo_model.cub"))
    proc = run(f"from={c}", "audit=yes", f"catalog={CATALOG}", f"isisdata={ISISDATA}", "verify=no", "--json",
               cwd=tmp_path, timeout=90)
    assert proc.returncode == 1, proc.stderr
    assert '"status": "missing"' in proc.stdout and "core.fifo" in proc.stdout and "FIFO" in proc.stdout


def test_a_label_url_with_a_local_catalog_may_reach_public_addresses_only(tmp_path, host):
    c = cube(tmp_path / "c.cub", f"/vsicurl/{host.url}mars.tif")
    proc = run(f"from={c}", "audit=yes", f"catalog={CATALOG}", f"isisdata={ISISDATA}", "verify=no", "--json",
               cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert '"status": "unreachable"' in proc.stdout and "public addresses only" in proc.stdout, proc.stdout
    assert host.paths == []


@pytest.mark.parametrize("option", ["-log", "-errlist"])
def test_an_output_that_is_the_list_is_a_usage_error(tmp_path, option):
    cubes_ = [cube(tmp_path / f"c{i}.cub", "Null") for i in range(3)]
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{c}\n" for c in cubes_))
    text = lst.read_text()
    proc = run(f"fromlist={lst}", "audit=yes", f"catalog={CATALOG}", f"isisdata={ISISDATA}", "verify=no",
               f"{option}={lst}", cwd=tmp_path, timeout=60)
    assert proc.returncode == 2 and f"{option}={lst} is the list" in proc.stderr, proc.stderr
    assert lst.read_text() == text
    batch = tmp_path / "rows.lis"
    batch.write_text(text)
    proc = run(f"-batchlist={batch}", "from=$1", "dryrun=yes", f"catalog={CATALOG}", f"isisdata={ISISDATA}",
               f"{option}={batch}", cwd=tmp_path, timeout=60)
    assert proc.returncode == 2 and batch.read_text() == text, proc.stderr


def test_an_audit_changes_no_file_not_even_a_stale_journal(tmp_path):
    c = cube(tmp_path / "c.cub", "Null")
    jp = journal_path(c)
    jp.write_bytes(b"\0" * 64)  # a write that never completed: the next writer drops it
    before, dir_before = snap(c), os.stat(tmp_path).st_mtime_ns
    with Resolver(catalog=CATALOG, isisdata=ISISDATA, verify=False, cache="no") as r:
        got = r.audit(c)
    assert got.status in ("unset", "current"), got
    assert jp.exists() and snap(c) == before and os.stat(tmp_path).st_mtime_ns == dir_before


def test_an_empty_list_gets_the_audit_summary_and_an_unreadable_cube_its_reason(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    proc = run(f"fromlist={empty}", "audit=yes", f"catalog={CATALOG}", cwd=tmp_path)
    assert proc.returncode == 0 and "0 cubes audited" in proc.stderr, proc.stderr
    lst = tmp_path / "one.txt"
    lst.write_text(f"{tmp_path / 'gone.cub'}\n{cube(tmp_path / 'c.cub', 'Null')}\n")
    proc = run(f"fromlist={lst}", "audit=yes", f"catalog={CATALOG}", f"isisdata={ISISDATA}", "verify=no",
               cwd=tmp_path)
    line = next(x for x in proc.stdout.splitlines() if "gone.cub" in x)
    assert line.startswith(f"{tmp_path / 'gone.cub'}: failed: ") and "(none)" not in line, line
    assert "no such file" in line
