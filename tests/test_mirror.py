"""Issue 17, items 2 and 3: mirror the chosen DEMs, then resolve offline against the mirror.

Real COGs written with GDAL (tens of MB, overviews) served by the Range-capable server
on 127.0.0.1 behind a stac-server look-alike; the real console script in subprocesses.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dems
import pytest
from osgeo import gdal
from servers import RangeServer, StacServer, item

from shaperesolver import HttpSettings, MirrorError, Resolver, read_label
from shaperesolver.mirror import Mirror

FAST = HttpSettings(retries=0)
COL = "isis-global-dtms"  # servers.item's collection: the mirror keeps items under body/collection/id
EXE = str(Path(sys.executable).parent / "shaperesolver")
ENV = {**os.environ, "SHAPERESOLVER_CLAIM_WAIT": "0"}


@pytest.fixture(scope="session")
def www(tmp_path_factory):
    d = tmp_path_factory.mktemp("dems")
    dems.make_cog(d / "mars.tif", "Mars")  # 45 MB
    dems.make_cog(d / "moon.tif", "Moon", 2048, 1024)
    dems.make_cog(d / "phobos.tif", "Phobos", 1024, 512)
    dems.make_cog(d / "mars6.tif", "Mars", 2048, 1024)
    return d


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run(*args, **kw):
    kw.setdefault("timeout", 120)
    return subprocess.run([EXE, "cache=no", *map(str, args)], capture_output=True, text=True, env=ENV, **kw)


def items_for(rs, **extra):
    its = [item("molaMars0005", ["Mars"], "0005", href=rs.url("mars.tif")),
           item("lolaMoon0001", ["Moon"], "0001", href=rs.url("moon.tif")),
           item("phobosErnst0001", ["Phobos"], "0001", href=rs.url("phobos.tif"))]
    return its + list(extra.values())


@pytest.fixture
def servers(www):
    with RangeServer(www) as rs, StacServer(items_for(rs)) as stac:
        yield rs, stac


def test_mirror_then_resolve_offline(servers, www, tmp_path, make_cube):
    rs, stac = servers
    mirror = tmp_path / "mirror"
    p = run(f"url={stac.url}", "target=Mars,Moon,Phobos", f"mirror={mirror}", "--json")
    assert p.returncode == 0, p.stderr
    recs = {r["body"]: r for r in map(json.loads, p.stdout.splitlines())}
    assert set(recs) == {"Mars", "Moon", "Phobos"}
    for body, name in (("Mars", "mars.tif"), ("Moon", "moon.tif"), ("Phobos", "phobos.tif")):
        assert recs[body]["status"] == "downloaded" and recs[body]["sha256"] == sha(www / name)
        assert sha(recs[body]["path"]) == sha(www / name)
    doc = json.loads((mirror / "Moon" / COL / "lolaMoon0001" / "lolaMoon0001.json").read_text())
    asset = doc["assets"]["image"]
    assert asset["href"] == "./moon.tif" and asset["shaperesolver:original_href"] == rs.url("moon.tif")
    assert asset["file:size"] == (www / "moon.tif").stat().st_size and asset["file:checksum"] == "1220" + sha(www / "moon.tif")
    assert doc["properties"]["version"] == "0001" and doc["properties"]["datetime"] == "2025-01-01T00:00:00Z"
    rs.__exit__(None, None, None)  # the network is gone
    stac.__exit__(None, None, None)
    moon, phobos = make_cube("lro_moon"), make_cube("viking_mars", "phobos.cub")
    for catalog in (mirror, mirror / "catalog.json"):
        p = run(f"catalog={catalog}", f"from={moon}", "verify=yes", "-vv")
        assert p.returncode == 0, p.stderr
        assert "fit Moon" in p.stderr  # the model check ran on the local file
        assert read_label(moon).shape_model == str(mirror / "Moon" / COL / "lolaMoon0001" / "moon.tif")
    p = run(f"catalog={mirror}", f"from={phobos}", "target=Phobos", "verify=yes")
    assert p.returncode == 0, p.stderr
    path = read_label(phobos).shape_model
    assert path == str(mirror / "Phobos" / COL / "phobosErnst0001" / "phobos.tif")
    ds = gdal.Open(path)
    assert ds.RasterXSize == 1024 and ds.GetRasterBand(1).ReadRaster(0, 0, 16, 16)


def test_fromlist_mirror_in_one_go_then_offline_jobs(servers, tmp_path, make_cube):
    rs, stac = servers
    cubes = [make_cube("lro_moon", f"m{i}.cub") for i in range(3)] + [make_cube("viking_mars")]
    lst = tmp_path / "cubes.txt"
    lst.write_text("\n".join(map(str, cubes)) + "\n")
    mirror = tmp_path / "m"
    p = run(f"url={stac.url}", f"fromlist={lst}", f"mirror={mirror}", "jobs=4", "--json")
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    assert [x["status"] for x in lines if "status" in x] == ["downloaded", "downloaded"]  # Moon, Mars: once each
    assert [read_label(c).shape_model for c in cubes] == [str(mirror / "Moon" / COL / "lolaMoon0001" / "moon.tif")] * 3 + [
        str(mirror / "Mars" / COL / "molaMars0005" / "mars.tif")]
    assert len(rs.gets("moon.tif")) == 1 and len(rs.gets("phobos.tif")) == 0
    # a second run on a "compute node": the mirror only, jobs=4, the API too
    p = run(f"catalog={mirror}", f"fromlist={lst}", "jobs=4", "shape=web", "verify=yes")
    assert p.returncode == 0, p.stderr
    with Resolver(catalog=mirror, cache="no") as r:
        res = r.resolve(target="Mars")
        assert res.shape_model == str(mirror / "Mars" / COL / "molaMars0005" / "mars.tif") and res.source == "web"
        assert r.open_model(res).RasterXSize == 4096


def test_a_mirror_served_over_http_is_a_catalog(servers, tmp_path, dask_cluster):
    """``catalog=http://host/mirror/catalog.json``: the mirror's relative hrefs ("./moon.tif")
    were refused as "not an absolute https URL"; they are URLs on the mirror's own server."""
    from test_outcomes import make

    from shaperesolver import write_batch

    rs, stac = servers
    mirror = tmp_path / "m"
    assert run(f"url={stac.url}", "target=Moon,Phobos", f"mirror={mirror}").returncode == 0
    moons = [make(tmp_path / "c", f"moon{i}.cub", "MOON") for i in range(4)]
    phobos = [make(tmp_path / "c", f"phobos{i}.cub", "Phobos") for i in range(4)]
    (tmp_path / "list").write_text("".join(f"{c}\n" for c in moons[1:3] + phobos[1:3]))
    with RangeServer(mirror) as share:
        cat = share.url("catalog.json")
        assert run(f"catalog={cat}", f"from={moons[0]}", "verify=yes").returncode == 0
        p = run(f"catalog={cat}", f"fromlist={tmp_path / 'list'}", "jobs=4", "verify=yes")
        assert p.returncode == 0, p.stderr
        recs = write_batch([moons[3], phobos[3]], dask_cluster[1], catalog=cat, cache="no")
        with Resolver(catalog=cat, cache="no") as r:
            api = r.resolve(target="Phobos")
    moon_url = "/vsicurl/" + share.url(f"Moon/{COL}/lolaMoon0001/moon.tif")
    phobos_url = "/vsicurl/" + share.url(f"Phobos/{COL}/phobosErnst0001/phobos.tif")
    assert [read_label(c).shape_model for c in moons] == [moon_url] * 4
    assert [read_label(c).shape_model for c in phobos[1:]] == [phobos_url] * 3
    assert [x["source"] for x in recs] == ["web", "web"] and api.shape_model == phobos_url
    assert share.gets(f"Moon/{COL}/lolaMoon0001/moon.tif") and not rs.gets("moon.tif")[1:]  # the original server: the mirror run only


def test_second_run_downloads_nothing(servers, tmp_path):
    rs, stac = servers
    mirror = tmp_path / "m"
    assert run(f"url={stac.url}", "target=Phobos", f"mirror={mirror}").returncode == 0
    before = len(rs.gets("phobos.tif"))
    p = run(f"url={stac.url}", "target=Phobos", f"mirror={mirror}", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["status"] == "present" and json.loads(p.stdout)["fetched"] == 0
    assert len(rs.gets("phobos.tif")) == before == 1


def test_kill_mid_download_then_resume(servers, www, tmp_path):
    rs, stac = servers
    size = (www / "mars.tif").stat().st_size
    rs.rate = 8 * 2**20  # about 5 s for the 45 MB
    mirror = tmp_path / "m"
    proc = subprocess.Popen([EXE, "cache=no", f"url={stac.url}", "target=Mars", f"mirror={mirror}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    deadline = time.time() + 60
    while rs.served.get("mars.tif", 0) < size // 2 and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.3)
    first = rs.served["mars.tif"]
    assert size // 2 <= first < size
    assert not (mirror / "Mars" / COL / "molaMars0005" / "mars.tif").exists()
    assert "molaMars0005" not in (mirror / "catalog.json").read_text() if (mirror / "catalog.json").exists() else True
    rs.rate = None
    p = run(f"url={stac.url}", "target=Mars", f"mirror={mirror}", "--json")
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout)
    again = rs.served["mars.tif"] - first
    assert rec["status"] == "resumed" and rec["fetched"] <= again  # bytes in flight at the kill were lost
    assert again <= 0.6 * size
    assert rs.gets("mars.tif")[-1]["range"].startswith("bytes=")
    assert rec["sha256"] == sha(www / "mars.tif") == sha(mirror / "Mars" / COL / "molaMars0005" / "mars.tif")
    assert not list((mirror / "Mars" / COL / "molaMars0005").glob("*.part*"))


@pytest.mark.parametrize("lie", ["long", "short"])
def test_lying_server_never_enters_the_catalog(www, tmp_path, lie):
    mirror = tmp_path / "m"
    with RangeServer(www, lies={"moon.tif": lie}) as rs, StacServer(items_for(rs)) as stac:
        p = run(f"url={stac.url}", "target=Moon,Phobos", f"mirror={mirror}", "-q")
    assert p.returncode == 1
    err = [ln for ln in p.stderr.splitlines() if not ln.startswith("shaperesolver: Phobos")]
    assert len(err) == 1 and "moon.tif" in err[0] and "Traceback" not in p.stderr
    assert ("ended early" in err[0]) if lie == "long" else ("not a usable model" in err[0])
    cat = (mirror / "catalog.json").read_text()
    assert "phobosErnst0001" in cat and "lolaMoon0001" not in cat
    assert not (mirror / "Moon" / COL / "lolaMoon0001" / "moon.tif").exists()
    assert not list((mirror / "Moon" / COL / "lolaMoon0001").glob("*.part")) if lie == "short" else True


def test_a_dripping_server_is_cut_and_retried_not_waited_for(www, tmp_path):
    """200 bytes a second, each read well inside the read timeout, held a mirror for as long as
    the file lasted (an hour for phobos.tif, weeks for a global DEM); under ``min_rate`` for
    ``slow_time`` the download is cut, resumed, and given up after the retries."""
    out = {}

    def add(m):
        try:
            m.add("Phobos")
        except MirrorError as exc:
            out["err"] = exc

    with RangeServer(www, rate=200) as rs, StacServer(items_for(rs)) as stac, \
            Resolver(url=stac.url, cache="no", http=FAST) as r:
        worker = threading.Thread(target=add, args=(Mirror(tmp_path / "m", r, min_rate=1024, slow_time=2, retries=1),),
                                  daemon=True)
        worker.start()
        worker.join(60)
        assert not worker.is_alive(), "still downloading at 200 bytes/s"
        gets = rs.gets("phobos.tif")
    assert "slower than 1024 bytes/s for 2 s" in str(out["err"]) and "gave up after 2 attempts" in str(out["err"])
    assert len(gets) == 2 and gets[1]["range"] not in (None, "bytes=0-"), gets  # the retry resumed
    assert not (tmp_path / "m" / "catalog.json").exists() or "phobosErnst0001" not in (tmp_path / "m" / "catalog.json").read_text()


def test_an_item_directory_swapped_for_a_link_mid_run_gets_no_write(servers, tmp_path):
    """A shared mirror directory (mode 0777): a neighbour holds the catalog's flock, which the
    mirror waits for after the download, swaps the body directory (above the item directory) for
    a link to a directory of ours meanwhile, and lets go. The item document was written through
    the link."""
    import fcntl

    rs, stac = servers
    top = Path(tempfile.mkdtemp(prefix="mirror-"))  # pytest's tmp_path is 0700: out of the neighbour's reach
    top.chmod(0o755)
    mirror, victim = top / "m", top / "victim"
    victim.mkdir()
    with Resolver(url=stac.url, cache="no", http=FAST) as r:
        Mirror(mirror, r).add("Phobos")  # the catalog and its lock file exist
        mirror.chmod(0o777)
        go, ready = os.pipe(), os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the neighbour, uid 65534
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                fd = os.open(mirror / ".shaperesolver" / "catalog.lock", os.O_RDONLY)
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(ready[1], b"locked")
                os.read(go[0], 1)  # the download is done: the mirror now waits for the lock
                os.rename(mirror / "Moon", mirror / "moved")
                os.symlink(victim, mirror / "Moon")
                os.write(ready[1], b"swapped")
            finally:
                os._exit(0)
        os.close(go[0])
        os.close(ready[1])
        assert os.read(ready[0], 6) == b"locked"
        out = {}
        worker = threading.Thread(target=lambda: out.update(done=_try(Mirror(mirror, r).add, "Moon")), daemon=True)
        worker.start()
        deadline = time.monotonic() + 60
        while not (mirror / "Moon" / COL / "lolaMoon0001" / "moon.tif").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.write(go[1], b"x")
        assert os.read(ready[0], 7) == b"swapped"
        os.waitpid(pid, 0)  # its exit lets go of the lock
        worker.join(60)
    try:
        assert not worker.is_alive()
        assert sorted(os.listdir(victim)) == [], "written through the planted link"
        assert (mirror / "moved" / COL / "lolaMoon0001" / "lolaMoon0001.json").is_file()
        assert (mirror / "moved" / COL / "lolaMoon0001" / "moon.tif").is_file()
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _try(fn, *args):
    try:
        return fn(*args)
    except MirrorError as exc:
        return exc


@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs (not root?)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_full_disk_before_and_during_the_download(servers, www, tmpfs):
    rs, stac = servers
    p = run(f"url={stac.url}", "target=Mars", f"mirror={tmpfs / 'm'}")  # 45 MB into 24 MB
    assert p.returncode == 1 and "not enough free space" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmpfs / "m" / "Mars" / COL / "molaMars0005" / "mars.tif").exists()
    # space that vanishes mid-way: another user fills the disk during the download
    rs.rate = 4 * 2**20
    proc = subprocess.Popen([EXE, "cache=no", f"url={stac.url}", "target=Moon", f"mirror={tmpfs / 'm'}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    while rs.served.get("moon.tif", 0) < 2**20 and proc.poll() is None:
        time.sleep(0.01)
    try:
        with open(tmpfs / "filler", "wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 2**20)
    except OSError:
        pass
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "disk full" in err and "Traceback" not in err, err
    assert not (tmpfs / "m" / "Moon" / COL / "lolaMoon0001" / "moon.tif").exists()
    assert not list((tmpfs / "m" / "Moon" / COL / "lolaMoon0001").glob("*.part"))
    cat = tmpfs / "m" / "catalog.json"
    assert not cat.exists() or "lolaMoon0001" not in cat.read_text()


def test_two_mirrors_at_once_download_each_file_once(servers, www, tmp_path):
    rs, stac = servers
    rs.rate = 16 * 2**20
    mirror = tmp_path / "m"
    env = {**ENV, "SHAPERESOLVER_CLAIM_WAIT": "60"}
    procs = [subprocess.Popen([EXE, "cache=no", f"url={stac.url}", "target=Mars,Moon,Phobos", f"mirror={mirror}", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for name in ("mars.tif", "moon.tif", "phobos.tif"):
        assert len(rs.gets(name)) == 1 and rs.served[name] == (www / name).stat().st_size
    statuses = sorted(json.loads(x)["status"] for out, _ in outs for x in out.splitlines())
    assert statuses == ["downloaded"] * 3 + ["present"] * 3
    cat = json.loads((mirror / "catalog.json").read_text())
    assert sorted(ln["href"] for ln in cat["links"] if ln["rel"] == "item") == [
        f"./Mars/{COL}/molaMars0005/molaMars0005.json", f"./Moon/{COL}/lolaMoon0001/lolaMoon0001.json",
        f"./Phobos/{COL}/phobosErnst0001/phobosErnst0001.json"]


def test_newer_version_added_beside_then_prune(www, tmp_path, make_cube):
    mirror = tmp_path / "m"
    with RangeServer(www) as rs:
        with StacServer(items_for(rs)) as stac:
            assert run(f"url={stac.url}", "target=Mars", f"mirror={mirror}").returncode == 0
        newer = item("molaMars0006", ["Mars"], "0006", href=rs.url("mars6.tif"))
        with StacServer(items_for(rs, newer=newer)) as stac:
            p = run(f"url={stac.url}", "target=Mars", f"mirror={mirror}")
            assert p.returncode == 0, p.stderr
            old, new = mirror / "Mars" / COL / "molaMars0005" / "mars.tif", mirror / "Mars" / COL / "molaMars0006" / "mars6.tif"
            assert old.exists() and new.exists()
            cube = make_cube("viking_mars")
            assert run(f"catalog={mirror}", f"from={cube}").returncode == 0
            assert read_label(cube).shape_model == str(new)
            p = run(f"catalog={mirror}", f"from={cube}", "version=5")
            assert p.returncode == 0 and read_label(cube).shape_model == str(old)  # old labels keep working
            p = run(f"url={stac.url}", "target=Mars", f"mirror={mirror}", "prune=yes")
            assert p.returncode == 0 and "pruned molaMars0005" in p.stdout
    assert not old.exists() and new.exists()
    assert "molaMars0005" not in (mirror / "catalog.json").read_text()


def test_mirror_inside_the_isis_data_area_gives_base_paths(servers, tmp_path, make_cube):
    rs, stac = servers
    area = tmp_path / "isisdata"
    mirror = area / "base" / "dems" / "mirror"
    assert run(f"url={stac.url}", "target=Moon", f"mirror={mirror}").returncode == 0
    cube = make_cube("lro_moon")
    p = run(f"catalog={mirror}", f"from={cube}", f"isisdata={area}", "verify=yes")
    assert p.returncode == 0, p.stderr
    assert read_label(cube).shape_model == f"$base/dems/mirror/Moon/{COL}/lolaMoon0001/moon.tif"
    with Resolver(catalog=mirror, cache="no", isisdata=area) as r:
        res = r.resolve(cube)
        assert res.shape_model.startswith("$base/") and r.open_model(res).RasterYSize == 1024
    p = run(f"catalog={mirror}", f"from={cube}")  # no data area known: the absolute path
    assert p.returncode == 0 and read_label(cube).shape_model == str(mirror / "Moon" / COL / "lolaMoon0001" / "moon.tif")


def test_hostile_source_catalog(www, tmp_path):
    mirror = tmp_path / "m"
    with RangeServer(www) as rs:
        bad = [item("privateMars0001", ["Mars"], "0001", href="http://10.1.2.3/mars.tif"),
               item("../../escape", ["Moon"], "0001", href=rs.url("moon.tif")),
               item("phobosDots0001", ["Phobos"], "0001", href=rs.url("..%2F..%2Fphobos.tif")),
               item("titanHuge0001", ["Titan"], "0001", href=rs.url("mars.tif"))]
        bad[3]["assets"]["image"]["file:size"] = 10**18
        with StacServer(bad) as stac:
            p = run(f"url={stac.url}", "target=Mars,Moon,Phobos,Titan", f"mirror={mirror}", "-q")
            assert len(rs.gets("mars.tif")) == len(rs.gets("moon.tif")) == 0
    assert p.returncode == 1 and "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 4
    assert "10.1.2.3 is a private address" in lines[0]
    assert "refusing item id '../../escape'" in lines[1]
    assert "refusing file name '../../phobos.tif'" in lines[2]
    assert "more than the" in lines[3] and "maxsize=" in lines[3]
    assert not mirror.exists() or not any(p.name != ".shaperesolver" for p in mirror.iterdir())


def test_hostile_local_catalog_hrefs_stay_inside(tmp_path, www):
    root = tmp_path / "cat"
    root.mkdir()
    shutil.copy(www / "phobos.tif", tmp_path / "outside.tif")
    (root / "inside").symlink_to(tmp_path)
    feats = [item("a1", ["Phobos"], "1", href="../outside.tif"), item("b1", ["Moon"], "1", href="inside/outside.tif"),
             item("c1", ["Io"], "1", href=str(tmp_path / "outside.tif"))]
    (root / "catalog.json").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    with Resolver(catalog=root, cache="no", verify=False) as r:
        for target, why in (("Phobos", "'..' in a local path"), ("Moon", "outside the catalog's directory"),
                            ("Io", "outside the catalog's directory")):
            with pytest.raises(Exception, match="refusing asset href") as exc:
                r.resolve(target=target, shape="web")
            assert why in str(exc.value)


def test_api_mirror_and_size_limit(servers, www, tmp_path):
    rs, stac = servers
    with Resolver(url=stac.url, cache="no", http=FAST) as r:
        m = Mirror(tmp_path / "m", r, max_size=10 * 2**20)
        with pytest.raises(MirrorError, match="more than the 10485760-byte limit"):
            m.add("Mars")
        done = m.add("PHOBOS")
        assert done.body == "Phobos" and done.status == "downloaded" and done.sha256 == sha(www / "phobos.tif")
    assert len(rs.gets("mars.tif")) == 1 and not (tmp_path / "m" / "Mars" / COL / "molaMars0005").exists()


@pytest.mark.cluster
def test_offline_batch_on_a_dask_cluster(servers, tmp_path, make_cube, dask_cluster):
    from shaperesolver import write_batch

    rs, stac = servers
    mirror = tmp_path / "m"
    assert run(f"url={stac.url}", "target=Moon,Phobos", f"mirror={mirror}").returncode == 0
    rs.__exit__(None, None, None)
    stac.__exit__(None, None, None)
    cubes = [make_cube("lro_moon", f"moon{i}.cub") for i in range(6)]
    cluster, client = dask_cluster
    records = write_batch(cubes[:3], client, catalog=mirror, cache="no", verify=True)
    p = run(f"catalog={mirror}", f"from={cubes[3]}", f"scheduler={cluster.scheduler_address}")
    assert p.returncode == 0, p.stderr
    local = str(mirror / "Moon" / COL / "lolaMoon0001" / "moon.tif")
    assert [r["shape_model"] for r in records] == [local] * 3 and all(r["written"] for r in records)
    assert [read_label(c).shape_model for c in cubes[:4]] == [local] * 4
