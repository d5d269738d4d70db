"""The installed ``shaperesolver`` command, run as a subprocess."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import cubes
import pytest
from servers import StacServer, item

EXE = shutil.which("shaperesolver", path=os.path.dirname(sys.executable)) or shutil.which("shaperesolver")
MARS = [item("molaMarsPlanetaryRadius0005", ["Mars"], "0005"), item("molaMarsPlanetaryRadius0004", ["Mars"], "0004", "2027-01-01T00:00:00Z")]
URL5 = "/vsicurl/https://dems.example.org/molaMarsPlanetaryRadius0005.tiff"
KEYS = {"cube", "target", "shape_model", "source", "item_id", "version", "fallback_reason", "written"}


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ, SHAPERESOLVER_CACHE_DIR=str(tmp_path / "cache"))
    e.pop("ISISDATA", None)
    e.pop("SHAPERESOLVER_STAC_URL", None)
    return e


def run(*args, env=None):
    assert EXE, "the shaperesolver command is not installed"
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env, timeout=120)


def jsonl(proc):
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_help_and_version(env):
    p = run("--help", env=env)
    assert p.returncode == 0 and "shape=web|system|ellipsoid|ringplane|user" in p.stdout
    p = run("--version", env=env)
    assert p.returncode == 0
    for word in ("shaperesolver", "Python", "GDAL 3.", "pvl", "requests"):
        assert word in p.stdout


def test_web_json_record(make_cube, env):
    cube = make_cube("viking_mars")
    with StacServer(MARS) as srv:
        p = run(f"from={cube}", f"url={srv.url}", "verify=no", "--json", env=env)
    assert p.returncode == 0, p.stderr
    [rec] = jsonl(p)
    assert set(rec) >= KEYS
    assert rec | {"cube": None} == rec | {
        "cube": None, "target": "MARS", "body": "Mars", "shape_model": URL5, "source": "web",
        "item_id": "molaMarsPlanetaryRadius0005", "version": "0005", "fallback_reason": None, "written": True,
        "previous": None}
    assert rec["cube"] == str(cube)
    again = run(f"from={cube}", f"url={srv.url}", "verify=no", "--json", env=env)  # served from the cache
    assert jsonl(again)[0]["written"] is False and jsonl(again)[0]["previous"] == URL5


def test_isis_style_and_dash_style_parameters_are_case_insensitive(make_cube, env, isisdata):
    cube = make_cube("viking_mars")
    p = run(f"FROM={cube}", "Shape=SYSTEM", f"IsisData={isisdata}", env=env)
    assert p.returncode == 0, p.stderr
    assert "$base/dems/molaMarsPlanetaryRadius0004.cub" in p.stdout and "Group = Kernels" in p.stdout
    p = run("--from", cube, "--shape", "Ellipsoid", "--json", env=env)
    assert p.returncode == 0 and jsonl(p)[0]["shape_model"] == "Null" and jsonl(p)[0]["source"] == "ellipsoid"
    assert jsonl(p)[0]["previous"] == "$base/dems/molaMarsPlanetaryRadius0004.cub"


def test_user_shape(make_cube, env, tmp_path):
    cube = make_cube("lro_moon")
    dem = tmp_path / "moon.cub"
    dem.write_text("x")
    p = run(f"from={cube}", "shape=user", f"model={dem}", "verify=no", "--json", env=env)
    rec = jsonl(p)[0]
    assert p.returncode == 0 and rec["source"] == "user" and rec["shape_model"] == str(dem) and rec["written"]


def test_dryrun_writes_nothing(make_cube, env):
    cube = make_cube("ctx_mars")
    before = cube.read_bytes()
    p = run(f"from={cube}", "shape=ellipsoid", "dryrun=yes", env=env)
    assert p.returncode == 0 and "dry run" in p.stdout and "ShapeModel = Null" not in before.decode("latin-1")
    assert cube.read_bytes() == before


def test_usage_errors_exit_2(make_cube, env):
    cube = make_cube("viking_mars")
    for args in ([f"from={cube}", "bogus=1"], [f"from={cube}", "shape=dem"], [], [f"from={cube}", "shape=user"],
                 [f"from={cube}", "url=not-a-url"], [f"from={cube}", "--frobnicate"]):
        p = run(*args, env=env)
        assert p.returncode == 2, (args, p.stderr)
        assert p.stderr.startswith("shaperesolver: ") and p.stderr.count("\n") == 1
    assert "bogus=1" in run(f"from={cube}", "bogus=1", env=env).stderr


def test_fromlist_with_a_bad_cube_in_the_middle(make_cube, env, tmp_path):
    good1, good2 = make_cube("viking_mars"), make_cube("lro_moon")
    bad = tmp_path / "broken.cub"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(500))
    lst = tmp_path / "list.txt"
    lst.write_text(f"# my cubes\n{good1}\n\n{bad}\n{good2}\n")
    before = bad.read_bytes()
    p = run(f"fromlist={lst}", "shape=ellipsoid", "--json", env=env)
    assert p.returncode == 1
    recs = jsonl(p)
    assert [r["cube"] for r in recs] == [str(good1), str(bad), str(good2)]
    assert [r["written"] for r in recs] == [True, False, True]
    assert recs[1]["source"] is None and "not an ISIS cube" in recs[1]["error"]
    assert bad.read_bytes() == before
    assert "3 cubes: 2 written" in p.stderr and f"{bad}: not an ISIS cube" in p.stderr


def test_fallback_chain_with_the_web_server_down(make_cube, env, isisdata):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{s.getsockname()[1]}/"
    s.close()
    mars, moon = make_cube("viking_mars"), make_cube("lro_moon")
    # no answer fails the cube by default (issue 15); fallback=always walks the chain
    p = run(f"from={mars}", f"url={dead}", f"isisdata={isisdata}", "--json", env=env)
    rec = jsonl(p)[0]
    assert p.returncode == 1 and rec["source"] is None and "cannot connect" in rec["error"]
    p = run(f"from={mars}", f"url={dead}", f"isisdata={isisdata}", "--json", "fallback=always", env=env)
    rec = jsonl(p)[0]
    assert p.returncode == 0 and rec["source"] == "system" and "cannot connect" in rec["fallback_reason"]
    assert rec["db"].endswith("kernels.0002.db") and rec["item_id"] is None and rec["version"] is None
    p = run(f"from={moon}", f"url={dead}", f"isisdata={isisdata}", "--json", "fallback=always", env=env)
    rec = jsonl(p)[0]
    assert p.returncode == 0 and rec["source"] == "ellipsoid" and rec["shape_model"] == "Null"
    assert "cannot connect" in rec["fallback_reason"] and "no SYSTEM shape model" in rec["fallback_reason"]
    # no data area at all: the cube fails with both reasons and is untouched
    before = mars.read_bytes()
    p = run(f"from={mars}", f"url={dead}", "--json", "fallback=always", env=env)
    rec = jsonl(p)[0]
    assert p.returncode == 1 and rec["source"] is None and rec["written"] is False
    assert "cannot connect" in rec["error"] and "ISISDATA" in rec["error"]
    assert mars.read_bytes() == before


def test_failed_write_is_one_line_and_leaves_the_cube(env, tmp_path):
    text = cubes.label_text("viking_mars")
    text = text.replace("Bytes = 65536", f"Bytes = {len(text) + 5}")
    cube = cubes.write_attached(tmp_path / "full.cub", text, label_bytes=len(text) + 5)
    before = cube.read_bytes()
    p = run(f"from={cube}", "shape=user", "model=/vsicurl/https://x.org/a-very-long-path/dem.tif", "verify=no", env=env)
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and str(cube) in p.stderr and "label space is full" in p.stderr
    assert cube.read_bytes() == before


def test_static_catalog_offline(make_cube, env):
    root = Path(__file__).resolve().parent.parent / "data" / "catalog" / "catalog.json"
    cube = make_cube("ctx_mars")
    p = run(f"from={cube}", f"catalog={root}", "verify=no", "--json", env=env)
    rec = jsonl(p)[0]
    assert p.returncode == 0 and rec["item_id"] == "molaMarsPlanetaryRadius0005" and rec["removed_elevation_model"]


def test_import_is_quiet_and_pure(tmp_path):
    """Importing reads no environment, touches no disk or network, and configures no output."""
    code = ("import logging, sys, shaperesolver; "
            "h = logging.getLogger('shaperesolver').handlers; "
            "print(len(h), type(h[0]).__name__, 'osgeo' in sys.modules)")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "nohome"), "ISISDATA": str(tmp_path / "nowhere"),
           "SHAPERESOLVER_STAC_URL": "not a url", "SHAPERESOLVER_CACHE_DIR": str(tmp_path / "never")}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert p.returncode == 0 and p.stdout.split() == ["1", "NullHandler", "False"] and p.stderr == ""
    assert not (tmp_path / "never").exists() and not (tmp_path / "nohome").exists()


def test_an_unexpected_error_is_one_line_not_a_traceback(tmp_path, env):
    """A bug (here planted: the summary raises) reaches the user as one line, exit 1; -vv shows where."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import shaperesolver.cli.report as r\n"
        "def finish(self):\n    raise RuntimeError('planted\\nbug')\n"
        "r.Reporter.finish = finish\n")
    cube = cubes.write_attached(tmp_path / "moon.cub", cubes.label_text("lro_moon"))
    before = cube.read_bytes()
    e = dict(env, PYTHONPATH=str(hook))
    p = subprocess.run([EXE, f"from={cube}", "shape=ellipsoid", "dryrun=yes"], env=e, capture_output=True, text=True)
    assert p.returncode == 1
    assert p.stderr.splitlines()[-1].startswith("shaperesolver: unexpected error (RuntimeError: planted bug)")
    assert "Traceback" not in p.stderr and cube.read_bytes() == before
    p = subprocess.run([EXE, f"from={cube}", "shape=ellipsoid", "dryrun=yes", "-vv"], env=e, capture_output=True,
                       text=True)
    assert p.returncode == 1 and "Traceback" in p.stderr and "planted" in p.stderr
