"""Issue 15, items 1, 2 and part of 9: outcomes you can trust.

* "nothing matches" (the catalog answered: no usable item) falls back to SYSTEM, then the
  ellipsoid; "no answer" (dead port, typo'd catalog, HTTP 500, malformed JSON, a model
  that cannot be reached for its check, an unsatisfiable pin) fails that cube, untouched,
  unless ``fallback=always``; ``fallback=never`` makes a miss an error too;
* ``shape=user`` checks the model against each cube's own body (Moon, Phobos);
* small traps: ``verify="no"``, bad settings, ``write_batch("x.cub")``, SKY, unknown bodies.

Everything is real: servers on 127.0.0.1, a closed port, GDAL-written GeoTIFFs served with
Range support, the console script in a subprocess, threads and a Dask LocalCluster.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import cubes
import numpy as np
import pytest
from osgeo import gdal, osr
from servers import RangeServer, StacServer, item

from shaperesolver import HttpSettings, Resolver, read_label, resolve, write_batch, write_shape_model
from shaperesolver.errors import ShapeResolverError, UsageError

EXE = shutil.which("shaperesolver", path=os.path.dirname(sys.executable))
FAST = HttpSettings(retries=0, connect_timeout=2, read_timeout=5)
LABEL_BYTES = 8192
MOON_DEM = "/vsicurl/https://dems.example.org/moonLolaRadius0003.tiff"


# ------------------------------------------------------------------ helpers


def dead_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make(directory: Path, name: str, target: str) -> Path:
    """A small attached cube whose TargetName is ``target``."""
    directory.mkdir(parents=True, exist_ok=True)
    text = cubes.label_text("viking_mars").replace("Bytes = 65536", f"Bytes = {LABEL_BYTES}")
    text = text.replace("StartByte   = 65537", f"StartByte   = {LABEL_BYTES + 1}").replace("= MARS\n", f"= {target}\n")
    return cubes.write_attached(directory / name, text, label_bytes=LABEL_BYTES, data_bytes=512)


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run(*args, env, timeout=120):
    assert EXE, "the shaperesolver console script is not installed"
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ, SHAPERESOLVER_CACHE_DIR=str(tmp_path / "cache"))
    for k in ("ISISDATA", "SHAPERESOLVER_STAC_URL", "SHAPERESOLVER_CLAIM_WAIT"):
        e.pop(k, None)
    return e


@pytest.fixture
def isisdata(tmp_path):
    """A data area with SYSTEM models for the Moon and Titan (none for Io or Phobos)."""
    return cubes.data_area(tmp_path / "isisdata")


MOON_SYSTEM = "$base/dems/ldem_0001.cub"
TITAN_SYSTEM = "$base/dems/titan_0001.cub"


def moon_items():
    return [item("moonLolaRadius0003", ["Moon"], "0003"), item("moonLolaRadius0002", ["Moon"], "0002")]


def geotiff(path: Path, values: np.ndarray, body: str, radius: float) -> Path:
    """A small georeferenced float32 GeoTIFF on ``body``'s sphere, written with GDAL."""
    ds = gdal.GetDriverByName("GTiff").Create(str(path), values.shape[1], values.shape[0], 1, gdal.GDT_Float32)
    ds.SetGeoTransform((-180.0, 360.0 / values.shape[1], 0.0, 90.0, 0.0, -180.0 / values.shape[0]))
    srs = osr.SpatialReference()
    srs.SetGeogCS(f"{body} 2000", f"D_{body}_2000", f"{body}_2000_IAU_IAG", radius, 0.0)
    ds.SetProjection(srs.ExportToWkt())
    ds.GetRasterBand(1).WriteArray(values)
    ds.FlushCache()
    ds = None
    return path


def topo(base: float, amplitude: float) -> np.ndarray:
    lat = np.radians(np.linspace(89, -89, 32))[:, None]
    lon = np.radians(np.linspace(-180, 180, 64))[None, :]
    return (base + amplitude * np.sin(3 * lon) * np.cos(2 * lat)).astype(np.float32)


@pytest.fixture(scope="module")
def dems(tmp_path_factory):
    d = tmp_path_factory.mktemp("dems")
    geotiff(d / "moon.tif", topo(1737400.0, 9000.0), "Moon", 1737400.0)
    geotiff(d / "phobos.tif", topo(11080.0, 1500.0), "Phobos", 11080.0)
    geotiff(d / "mars.tif", topo(3396190.0, 15000.0), "Mars", 3396190.0)
    return d


@pytest.fixture(scope="module")
def dask_client(dask_cluster):
    return dask_cluster[1]


# ------------------------------------------------------------------ item 1: no answer fails the cube


def test_dead_port_fails_the_cube_and_names_the_url(tmp_path, env, isisdata):
    cube = make(tmp_path, "moon.cub", "MOON")
    before = digest(cube)
    url = f"http://127.0.0.1:{dead_port()}/api/"
    p = run(f"from={cube}", f"url={url}", f"isisdata={isisdata}", "--json", env=env)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    [rec] = jsonl(p.stdout)
    assert rec["error"] and rec["source"] is None and rec["written"] is False
    assert f"127.0.0.1:{url.split(':')[2].split('/')[0]}/api/search" in rec["error"] and "cannot connect" in rec["error"]
    assert digest(cube) == before
    # -q hides the chatter, never the error line
    q = run(f"from={cube}", f"url={url}", f"isisdata={isisdata}", "-q", env=env)
    lines = q.stderr.splitlines()
    assert q.returncode == 1 and q.stdout == "" and len(lines) == 1
    assert lines[0].startswith(f"shaperesolver: {cube}: web search failed:") and "/api/search" in lines[0]
    assert digest(cube) == before


def test_a_cube_that_has_a_shape_model_stays_byte_identical(tmp_path, env, isisdata):
    cube = make(tmp_path, "titan.cub", "TITAN")
    write_shape_model(cube, "/vsicurl/https://dems.example.org/titanRadius0005.tiff")
    before = digest(cube)
    p = run(f"from={cube}", f"url=http://127.0.0.1:{dead_port()}/", f"isisdata={isisdata}", env=env)
    assert p.returncode == 1 and "cannot connect" in p.stderr and "Traceback" not in p.stderr
    assert digest(cube) == before and read_label(cube).shape_model.endswith("titanRadius0005.tiff")


def test_typoed_catalog_path_fails_the_cube(tmp_path, env, isisdata):
    cube = make(tmp_path, "io.cub", "IO")
    before = digest(cube)
    typo = tmp_path / "catalgo.json"
    p = run(f"from={cube}", f"catalog={typo}", f"isisdata={isisdata}", "--json", env=env)
    [rec] = jsonl(p.stdout)
    assert p.returncode == 1 and str(typo) in rec["error"] and "not found" in rec["error"]
    assert digest(cube) == before


@pytest.mark.parametrize("fault, words", [
    (dict(status=500, body={"code": "Boom", "description": "database down"}), "HTTP 500"),
    (dict(status=200, body=b'{"type": "FeatureCollection", "features": [', headers={"Content-Type": "application/json"}),
     "not JSON"),
])
def test_http_500_and_malformed_json_fail_the_cube(tmp_path, env, isisdata, fault, words):
    cube = make(tmp_path, "moon.cub", "MOON")
    before = digest(cube)
    with StacServer(moon_items()) as srv:
        srv.fault(times=10, **fault)
        p = run(f"from={cube}", f"url={srv.url}", f"isisdata={isisdata}", "verify=no", "--json", env=env)
        [rec] = jsonl(p.stdout)
        assert p.returncode == 1 and words in rec["error"] and f"{srv.url}search" in rec["error"], rec
        assert digest(cube) == before
        # fallback=always: today's behaviour, the reason recorded
        srv.fault(times=10, **fault)
        p = run(f"from={cube}", f"url={srv.url}", f"isisdata={isisdata}", "verify=no", "fallback=always", "--json",
                "cache=no", env=env)
        [rec] = jsonl(p.stdout)
        assert p.returncode == 0 and rec["source"] == "system" and rec["shape_model"] == MOON_SYSTEM
        assert words in rec["fallback_reason"] and rec["written"]


def test_unsatisfiable_version_fails_unless_always(tmp_path, isisdata, resolver_factory):
    cube = make(tmp_path, "moon.cub", "MOON")
    with StacServer(moon_items()) as srv:
        r = resolver_factory(srv.url, isisdata=isisdata, http=FAST)
        with pytest.raises(ShapeResolverError, match="version 9 of Moon/MOON is not in"):
            r.resolve(cube, version="9")
        r = resolver_factory(srv.url, isisdata=isisdata, http=FAST, fallback="always", cache="no")
        res = r.resolve(cube, version="9")
        assert res.source == "system" and "version 9 of Moon/MOON" in res.fallback_reasons[0]


def test_model_unreachable_for_its_check_fails_but_a_failed_check_falls_back(tmp_path, env, isisdata, dems):
    """verify=yes: a model that cannot be reached is no answer; one that does not fit is no match."""
    moon, titan = make(tmp_path, "moon.cub", "MOON"), make(tmp_path, "titan.cub", "Titan")
    before = digest(moon)
    gone = f"http://127.0.0.1:{dead_port()}/moonLolaRadius0003.tif"
    with RangeServer(dems) as files, StacServer([
        item("moonLolaRadius0003", ["Moon"], "0003", href=gone),
        item("titanRadius0001", ["Titan"], "0001", href=files.url("mars.tif")),  # a Mars DEM tagged Titan
    ]) as srv:
        gdal.VSICurlClearCache()
        p = run(f"from={moon}", f"url={srv.url}", f"isisdata={isisdata}", "verify=yes", "--json", env=env)
        [rec] = jsonl(p.stdout)
        assert p.returncode == 1 and "could not be checked" in rec["error"] and gone in rec["error"], rec
        assert digest(moon) == before
        p = run(f"from={titan}", f"url={srv.url}", f"isisdata={isisdata}", "verify=yes", "--json", env=env)
        [rec] = jsonl(p.stdout)
        assert p.returncode == 0 and rec["source"] == "system" and rec["shape_model"] == TITAN_SYSTEM
        assert "failed verification" in rec["fallback_reason"] and "Titan" in rec["fallback_reason"]


def test_nothing_matches_falls_back_and_never_makes_it_an_error(tmp_path, env, isisdata):
    titan, io = make(tmp_path, "titan.cub", "TITAN"), make(tmp_path, "io.cub", "IO")
    with StacServer(moon_items() + [item("ioOld0001", ["Io"], "0001", deprecated=True)]) as srv:
        p = run(f"from={titan}", f"url={srv.url}", f"isisdata={isisdata}", "verify=no", "--json", env=env)
        [rec] = jsonl(p.stdout)
        assert p.returncode == 0 and rec["source"] == "system" and "no web shape model for Titan" in rec["fallback_reason"]
        p = run(f"from={io}", f"url={srv.url}", f"isisdata={isisdata}", "verify=no", "--json", env=env)
        [rec] = jsonl(p.stdout)  # only a deprecated item: nothing matches; no SYSTEM model: the ellipsoid
        assert p.returncode == 0 and rec["source"] == "ellipsoid" and rec["shape_model"] == "Null"
        before = digest(titan)
        p = run(f"from={titan}", f"url={srv.url}", f"isisdata={isisdata}", "verify=no", "fallback=never", env=env)
        assert p.returncode == 1 and "no web shape model for Titan" in p.stderr and "fallback=never" in p.stderr
        assert digest(titan) == before and "Traceback" not in p.stderr
        p = run(f"from={titan}", "fallback=sometimes", env=env)
        assert p.returncode == 2 and "fallback=sometimes" in p.stderr


def test_a_stale_cache_entry_still_serves_when_the_server_is_gone(tmp_path, isisdata, resolver_factory, caplog):
    cube = make(tmp_path, "moon.cub", "MOON")
    with StacServer(moon_items()) as srv:
        url = srv.url
        assert resolver_factory(url, isisdata=isisdata, http=FAST).resolve(cube).shape_model == MOON_DEM
    # the server is gone: a fresh entry serves without a request ...
    assert resolver_factory(url, isisdata=isisdata, http=FAST).resolve(cube).shape_model == MOON_DEM
    # ... and a stale one serves with its warning, under every fallback=
    for fb in ("nomatch", "never"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="shaperesolver"):
            res = resolver_factory(url, isisdata=isisdata, http=FAST, cache_ttl=1e-6, fallback=fb).resolve(cube)
        assert res.source == "web" and res.shape_model == MOON_DEM
        assert any("using a cached result" in m for m in caplog.messages)


def test_batches_apply_the_rule_per_cube(tmp_path, env, isisdata):
    """fromlist=, jobs=4 and the API: Titan matches nothing (falls back), Moon's answer fails."""
    cs = [make(tmp_path / "c", f"{i}.cub", t) for i, t in enumerate(["MOON", "Titan", "MOON", "Titan", "IO"])]
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{c}\n" for c in cs))
    with StacServer(moon_items()) as srv:
        for jobs in ("1", "4"):
            srv.fault(status=500, body={"message": "down"}, times=1)  # the first search (whichever body) fails
            before = {c: digest(c) for c in cs}
            p = run(f"fromlist={lst}", f"url={srv.url}", f"isisdata={isisdata}", "verify=no", "cache=no",
                    f"jobs={jobs}", "dryrun=yes", "--json", env=env)
            recs = jsonl(p.stdout)
            assert p.returncode == 1 and len(recs) == 5
            failed = [r for r in recs if r.get("error")]
            assert failed and all("HTTP 500" in r["error"] for r in failed)
            assert len({r["body"] or read_label(r["cube"]).target for r in failed}) == 1  # one body's search failed
            assert all(digest(c) == before[c] for c in cs)
    # the API with threads: a dead port fails every cube; always falls back with the reason
    url = f"http://127.0.0.1:{dead_port()}/"
    recs = write_batch(cs, jobs=4, url=url, isisdata=isisdata, verify=False, cache="no", http=FAST)
    assert all("cannot connect" in r["error"] and not r["written"] for r in recs)
    recs = write_batch(cs, jobs=4, url=url, isisdata=isisdata, verify=False, cache="no", http=FAST, fallback="always")
    assert [r["source"] for r in recs] == ["system", "system", "system", "system", "ellipsoid"]
    assert all("cannot connect" in r["fallback_reason"] for r in recs)


def test_waiters_on_a_failed_search_fail_too(tmp_path, env, isisdata):
    """The cross-process path: another process's noted error is no answer for the waiters."""
    from test_scale import SlowStac, start_gated

    cube = make(tmp_path, "titan.cub", "TITAN")
    with SlowStac([item("titanRadius0001", ["Titan"], "0001")], delay=1.0) as srv:
        srv.fault(status=503, body={"message": "down"}, delay=1.0, times=100)
        argv = [f"from={cube}", f"url={srv.url}", "verify=no", f"isisdata={isisdata}", "dryrun=yes", "--json"]
        procs, gate = start_gated(tmp_path, [argv] * 4, {**env})
        gate.touch()
        outs = [(p.communicate(timeout=120), p.returncode) for p in procs]
        n = len(srv.requests)
        assert n <= 4 * 2  # the waiters used the holder's note (plus stragglers)
        recs = [jsonl(o)[0] for (o, _), _ in outs]
        assert all(rc == 1 for _, rc in outs) and all(r["source"] is None and "503" in r["error"] for r in recs), recs
        (tmp_path / "always").mkdir()
        procs, gate = start_gated(tmp_path / "always", [argv + ["fallback=always"]] * 4, {**env})
        gate.touch()
        recs = [jsonl(p.communicate(timeout=120)[0])[0] for p in procs]
        assert all(r["source"] == "system" and "503" in r["fallback_reason"] for r in recs), recs


@pytest.mark.cluster
def test_dask_shipped_table_applies_the_rule(tmp_path, env, isisdata, dask_client):
    cs = [make(tmp_path / "c", f"{i}.cub", t) for i, t in enumerate(["MOON", "Titan"] * 4)]
    before = {c: digest(c) for c in cs}
    url = f"http://127.0.0.1:{dead_port()}/"
    kw = dict(url=url, isisdata=isisdata, verify=False, cache_dir=tmp_path / "cache", http=FAST)
    recs = write_batch(cs, dask_client, **kw)
    assert [r["cube"] for r in recs] == [str(c) for c in cs]
    assert all(r["error"] and "cannot connect" in r["error"] and r["source"] is None for r in recs), recs
    assert all(digest(c) == before[c] for c in cs)
    recs = write_batch(cs, dask_client, fallback="always", **kw)
    assert [r["shape_model"] for r in recs] == [MOON_SYSTEM, TITAN_SYSTEM] * 4
    assert all("cannot connect" in r["fallback_reason"] and r["written"] for r in recs)
    # nothing matches for Titan, Moon found: the shipped table says both
    cs2 = [make(tmp_path / "d", f"{i}.cub", t) for i, t in enumerate(["MOON", "Titan"] * 2)]
    with StacServer(moon_items()) as srv:
        recs = write_batch(cs2, dask_client, **{**kw, "url": srv.url})
        assert [r["source"] for r in recs] == ["web", "system"] * 2 and len(srv.searches) == 2
        before = {c: digest(c) for c in cs2}
        recs = write_batch(cs2, dask_client, **{**kw, "url": srv.url, "fallback": "never", "cache": "no"})
        assert [bool(r.get("error")) for r in recs] == [False, True] * 2
        assert all("fallback=never" in r["error"] for r in recs[1::2])
        assert all(digest(c) == before[c] for c in cs2)


# ------------------------------------------------------------------ item 2: shape=user per body


DOORS = ["from", "fromlist", "jobs4", "api", "api-jobs4", "dask", "dask-cli"]


@pytest.mark.parametrize("door", DOORS)
def test_user_model_is_checked_against_each_cubes_body(tmp_path, env, dems, door, request):
    moon_a, phobos, moon_b = (make(tmp_path / "c", "a.cub", "MOON"), make(tmp_path / "c", "p.cub", "PHOBOS"),
                              make(tmp_path / "c", "b.cub", "Moon"))
    mars = make(tmp_path / "c", "m.cub", "MARS")

    def batch(cs, model):
        """(records, exit code or None) through this test's door."""
        common = ["shape=user", f"model={model}", "--json"]
        if door == "from":
            outs = [run(f"from={c}", *common, env=env) for c in cs]
            assert all("Traceback" not in p.stderr for p in outs)
            return [jsonl(p.stdout)[0] for p in outs], max(p.returncode for p in outs)
        if door in ("fromlist", "jobs4", "dask-cli"):
            lst = tmp_path / f"list-{len(cs)}-{Path(model).stem}.txt"
            lst.write_text("".join(f"{c}\n" for c in cs))
            extra = {"fromlist": [], "jobs4": ["jobs=4"]}.get(door)
            if extra is None:
                extra = [f"scheduler={request.getfixturevalue('dask_client').scheduler.address}"]
            p = run(f"fromlist={lst}", *common, *extra, env=env)
            assert "Traceback" not in p.stderr
            return jsonl(p.stdout), p.returncode
        executor = request.getfixturevalue("dask_client") if door == "dask" else None
        recs = write_batch(cs, executor, jobs=4 if door == "api-jobs4" else 1, shape="user", model=str(model),
                           cache_dir=tmp_path / "cache")
        return recs, None

    before = digest(phobos)
    recs, rc = batch([moon_a, phobos, moon_b], dems / "moon.tif")
    assert rc in (1, None) and [r["cube"] for r in recs] == [str(moon_a), str(phobos), str(moon_b)]
    assert [r["source"] for r in recs] == ["user", None, "user"]
    assert recs[0]["shape_model"] == recs[2]["shape_model"] == str(dems / "moon.tif") and recs[0]["written"]
    assert "Phobos" in recs[1]["error"] and "moon.tif" in recs[1]["error"] and "\n" not in recs[1]["error"]
    assert digest(phobos) == before
    assert read_label(moon_b).shape_model == str(dems / "moon.tif")
    # the right DEM for Phobos passes; a Mars DEM fails only the Moon cube
    recs, rc = batch([phobos], dems / "phobos.tif")
    assert rc in (0, None) and recs[0]["source"] == "user" and read_label(phobos).shape_model == str(dems / "phobos.tif")
    before = digest(moon_a)
    recs, rc = batch([moon_a, mars], dems / "mars.tif")
    assert rc in (1, None) and recs[0]["error"] and "Moon" in recs[0]["error"] and recs[1]["written"]
    assert digest(moon_a) == before and read_label(mars).shape_model == str(dems / "mars.tif")


def test_user_model_check_is_once_per_body(tmp_path, dems, resolver_factory):
    """Three Moon cubes and one Phobos cube open the model twice (the memo), not four times."""
    cs = [make(tmp_path, f"{i}.cub", t) for i, t in enumerate(["MOON", "MOON", "PHOBOS", "Moon"])]
    r = resolver_factory(verify=True, cache="no")
    recs = write_batch(cs, resolver=r, shape="user", model=str(dems / "moon.tif"), dryrun=True)
    assert [r_["source"] for r_ in recs] == ["user", "user", None, "user"]
    assert sorted(k[1] for k in r.models.checked.values) == ["Moon", "Phobos"]


# ------------------------------------------------------------------ item 9: settings and small traps


def test_verify_words_and_bad_settings(tmp_path, dems):
    unreachable = f"/vsicurl/http://127.0.0.1:{dead_port()}/x.tif"
    for no in (False, "no", "NO", "false"):
        assert resolve(target="Moon", shape="user", model=unreachable, verify=no, cache="no").shape_model == unreachable
    for yes in (True, "yes", "Yes"):
        with pytest.raises(ShapeResolverError, match="GDAL cannot open"):
            resolve(target="Moon", shape="user", model=unreachable, verify=yes, cache="no")
    bad = [dict(verify="maybe"), dict(verify=1), dict(verify=None), dict(cache=False), dict(cache="sometimes"),
           dict(fallback="sometimes"), dict(fallback=True), dict(collection=""), dict(cache_ttl="1h"),
           dict(http={"retries": 0}), dict(isisdata=5), dict(url=5), dict(gdal_options={"A": 1})]
    for kw in bad:
        with pytest.raises(UsageError) as info:
            Resolver(cache_dir=tmp_path / "cache", **kw)
        assert isinstance(info.value, ValueError) and isinstance(info.value, ShapeResolverError)
        assert next(iter(kw)) in str(info.value)
    assert Resolver(cache="No", fallback="ALWAYS", cache_dir=tmp_path).fallback == "always"


def test_write_batch_of_one_path_is_one_cube(tmp_path):
    cube = make(tmp_path, "io.cub", "IO")
    for one in (str(cube), cube, os.fsencode(cube)):
        recs = write_batch(one, shape="ellipsoid", cache="no")
        assert len(recs) == 1 and recs[0]["cube"] == str(cube) and recs[0]["shape_model"] == "Null"
    [rec] = write_batch(str(tmp_path / "missing.cub"), shape="ellipsoid", cache="no")
    assert "missing.cub" in rec["error"]


def test_sky_says_no_shape_model_is_used_and_asks_no_server(tmp_path, env, isisdata):
    cube = make(tmp_path, "sky.cub", "SKY")
    with StacServer(moon_items()) as srv:
        for extra in ([], ["jobs=2"], ["fallback=never"]):
            p = run(f"from={cube}", f"url={srv.url}", f"isisdata={isisdata}", "--json", *extra, env=env)
            [rec] = jsonl(p.stdout)
            assert p.returncode == 0 and rec["shape_model"] == "Null" and rec["body"] == "SKY"
            assert "no shape model is used for sky images" in rec["fallback_reason"]
            assert "ellipsoid" not in rec["fallback_reason"] and "ellipsoid" not in p.stderr
        assert srv.requests == []


def test_an_unknown_body_gets_one_warning(tmp_path, env, isisdata):
    cs = [make(tmp_path, f"{i}.cub", "MOON") for i in range(3)]
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{c}\n" for c in cs))
    with StacServer(moon_items()) as srv:
        p = run(f"fromlist={lst}", "target=Marz", f"url={srv.url}", f"isisdata={isisdata}", "verify=no",
                "dryrun=yes", env=env)
        warned = [line for line in p.stderr.splitlines() if "Marz is not a body shaperesolver knows" in line]
        assert p.returncode == 0 and len(warned) == 1, p.stderr
        p = run(f"from={cs[0]}", f"url={srv.url}", f"isisdata={isisdata}", "verify=no", "dryrun=yes", env=env)
        assert p.returncode == 0 and "not a body shaperesolver knows" not in p.stderr


@pytest.mark.parametrize("mapping,ring", [
    ("ProjectionName = Planar", True), ("ProjectionName = RingCylindrical", True),
    ("ProjectionName = (Planar, x)", True), ("RingLongitudeDirection = CounterClockwise", True),
    ("ProjectionName = Equirectangular", False), ("ProjectionName = Planar_ish", False), ("", False)])
def test_a_ring_plane_mapping_group_marks_a_ring_observation(tmp_path, caplog, mapping, ring):
    """ISIS's ring-plane projections (a Mapping group directly in IsisCube) make a Saturn
    image a ring observation: web and system say shape=ringplane is what spiceinit writes."""
    text = cubes.label_text("cassini_titan").replace("TargetName              = TITAN", "TargetName = SATURN")
    assert "SATURN" in text
    text = text.replace("    ProjectionName     = Sinusoidal\n", f"    {mapping}\n" if mapping else "", 1)  # (its own)
    assert "Sinusoidal" not in text
    cube = cubes.write_attached(tmp_path / "saturn.cub", text)
    caplog.set_level("WARNING", logger="shaperesolver")
    data = Path(__file__).resolve().parent.parent / "data" / "isisdata"
    res = resolve(cube, shape="system", isisdata=str(data))
    assert res.shape_model == "Null"
    said = [r.getMessage() for r in caplog.records if "is a ring observation" in r.getMessage()]
    assert bool(said) == ring, said
