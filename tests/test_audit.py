"""Issue 25: audit an archive (``audit=yes``, ``Resolver.audit``, ``audit_batch``).

An archive of real-format cubes of four targets (Mars, Moon, Phobos, SATURN RINGS, plus a
SKY image) holds every status: web models one version behind and deprecated, SYSTEM
models that exist and were removed, a URL that answers 404 and one whose server is down,
a Mars DEM named in a Moon cube, ``Null`` and no ShapeModel where a model exists, a sky
and a ring image, a user DEM, and current ones.  Every model is a real COG written with
GDAL, served with Range support on 127.0.0.1 behind a stac-server look-alike that holds
several versions of each body's item; the audit runs through ``from=``, ``fromlist=`` with
``jobs=4``, ``-batchlist``, a Dask LocalCluster and the API, and must leave every cube
byte-identical (and its mtime unchanged).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cubes
import dems
import pvl
import pytest
from servers import RangeServer, StacServer, item

from shaperesolver import Audit, HttpSettings, ModelUnreachableError, Resolver, audit_batch, iter_batch, read_label
from shaperesolver.base import bodies

FAST = HttpSettings(retries=0, deadline=5.0, connect_timeout=2.0, read_timeout=5.0)
EXE = str(Path(sys.executable).parent / "shaperesolver")
LABEL_BYTES = 8192
KEYS = {"cube", "target", "body", "current", "chosen", "status", "reason"}
FINE = ("current", "user")

# name -> (TargetName, ShapeModel (None: no ShapeModel keyword), the expected status).
# Values are templates: {www} is the model server, {dead} a server that is down, {user} the user DEM.
ARCHIVE = {
    "mars_current_a": ("MARS", "/vsicurl/{www}mars2.tif", "current"),
    "mars_current_b": ("MARS", "/vsicurl/{www}mars2.tif", "current"),
    "mars_behind_a": ("MARS", "/vsicurl/{www}mars1.tif", "stale"),  # one version behind
    "mars_behind_b": ("MARS", "/vsicurl/{www}mars1.tif", "stale"),  # (the same model: checked once)
    "mars_deprecated": ("MARS", "/vsicurl/{www}mars3.tif", "stale"),  # a deprecated pinned version
    "mars_404": ("MARS", "/vsicurl/{www}mars_gone.tif", "unreachable"),
    "mars_down": ("MARS", "/vsicurl/{dead}mars2.tif", "unreachable"),
    "mars_null": ("MARS", "Null", "unset"),
    "mars_user": ("MARS", "{user}", "user"),
    "moon_current": ("MOON", "/vsicurl/{www}moon2.tif", "current"),
    "moon_behind": ("MOON", "/vsicurl/{www}moon1.tif", "stale"),
    "moon_system": ("MOON", "$base/dems/moon_sys.tif", "stale"),  # a SYSTEM model while a web one exists
    "moon_removed": ("MOON", "$base/dems/moon_sys_old.tif", "missing"),  # a SYSTEM model that was removed
    "moon_marsdem": ("MOON", "{user}", "wrong-body"),  # a Mars DEM named in a Moon cube
    "phobos_current": ("PHOBOS", "/vsicurl/{www}phobos1.tif", "current"),
    "phobos_unset": ("PHOBOS", None, "unset"),  # spiceinit'ed, no ShapeModel keyword
    "sky": ("SKY", "Null", "current"),
    "rings": ('"SATURN RINGS"', "RingPlane", "current"),
}
EXPECTED = {name: status for name, (_, _, status) in ARCHIVE.items()}
# what a resolve chooses now, per body (the models served: see www)
CHOSEN = {"Mars": "mars2.tif", "Moon": "moon2.tif", "Phobos": "phobos1.tif"}


# ------------------------------------------------------------------ the parts


@pytest.fixture(scope="module")
def www(tmp_path_factory):
    """The web models: real COGs (1024 x 512, the smallest size with an overview)."""
    d = tmp_path_factory.mktemp("www")
    for name, body in (("mars1", "Mars"), ("mars2", "Mars"), ("mars3", "Mars"), ("moon1", "Moon"), ("moon2", "Moon"),
                       ("phobos1", "Phobos")):
        dems.make_cog(d / f"{name}.tif", body, 1024, 512)
    return d


@pytest.fixture(scope="module")
def user_dem(tmp_path_factory):
    """A user's Mars DEM: outside the data area and the catalog."""
    return dems.make_cog(tmp_path_factory.mktemp("user") / "my_mars_dem.tif", "Mars", 1024, 512)


def stac_items(rs: RangeServer) -> list[dict]:
    return [item("marsdem0001", ["Mars"], "0001", "2021-01-01T00:00:00Z", href=rs.url("mars1.tif")),
            item("marsdem0002", ["Mars"], "0002", "2022-01-01T00:00:00Z", href=rs.url("mars2.tif")),
            item("marsdem0003", ["Mars"], "0003", "2023-01-01T00:00:00Z", href=rs.url("mars3.tif"), deprecated=True),
            item("moondem0001", ["Moon"], "0001", "2021-01-01T00:00:00Z", href=rs.url("moon1.tif")),
            item("moondem0002", ["Moon"], "0002", "2022-01-01T00:00:00Z", href=rs.url("moon2.tif")),
            item("phobosdem0001", ["Phobos"], "0001", "2021-01-01T00:00:00Z", href=rs.url("phobos1.tif"))]


@pytest.fixture
def servers(www):
    with RangeServer(www) as rs, StacServer(stac_items(rs)) as stac:
        yield rs, stac


@pytest.fixture
def isisdata(tmp_path):
    """An ISIS data area whose SYSTEM model for the Moon is a real DEM."""
    root = tmp_path / "isisdata"
    d = root / "base" / "dems"
    d.mkdir(parents=True)
    (d / "kernels.0001.db").write_text(
        'Object = Dem\n  Group = Selection\n    Match = ("Instrument","TargetName","Moon")\n'
        '    File = ("base", "dems/moon_sys.tif")\n  EndGroup\nEndObject\n')
    dems.make_cog(d / "moon_sys.tif", "Moon", 1024, 512)
    return root


def dead_url() -> str:
    """A server that is down: a port on 127.0.0.1 nothing listens on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/"


def cube_text(target: str, shape: str | None) -> str:
    text = cubes.label_text("viking_mars").replace("Bytes = 65536", f"Bytes = {LABEL_BYTES}")
    text = text.replace("StartByte   = 65537", f"StartByte   = {LABEL_BYTES + 1}")
    text = text.replace("TargetName           = MARS\n", f"TargetName           = {target}\n")
    if shape is not None:
        text = text.replace("    CameraVersion ", f"    ShapeModel                = {shape}\n    CameraVersion ")
    return text


def make_archive(directory: Path, rs: RangeServer, user: Path, names=None) -> dict[str, Path]:
    """The archive's cubes (attached, real labels), name -> path."""
    directory.mkdir(parents=True, exist_ok=True)
    fill = {"www": rs.url(""), "dead": dead_url(), "user": str(user)}
    out = {}
    for name in names or ARCHIVE:
        target, shape, _ = ARCHIVE[name]
        value = shape.format(**fill) if shape is not None else None
        path = cubes.write_attached(directory / f"{name}.cub", cube_text(target, value), label_bytes=LABEL_BYTES,
                                    data_bytes=512)
        label = read_label(path)
        assert label.shape_model == value and label.target == target.strip('"')  # the archive is as meant
        out[name] = path
    return out


def fingerprint(paths) -> dict[str, tuple[str, int]]:
    return {str(p): (hashlib.sha256(Path(p).read_bytes()).hexdigest(), os.stat(p).st_mtime_ns) for p in paths}


def write_list(path: Path, paths) -> Path:
    path.write_text("".join(f"{p}\n" for p in paths))
    return path


def run(*args, env, timeout=120):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def statuses(recs) -> dict[str, str]:
    return {Path(r["cube"]).stem: r["status"] for r in recs}


def searches_per_body(stac: StacServer) -> Counter:
    return Counter(bodies.canonical(s["body"]["query"]["ssys:targets"]["in"][0]) for s in stac.searches)


def summary(counts: Counter, total: int) -> str:
    order = ("current", "user", "stale", "unset", "missing", "unreachable", "wrong-body", "failed")
    return f"{total} cubes audited: " + ", ".join(f"{counts[s]} {s}" for s in order if counts[s])


def check_records(recs, archive: dict[str, Path], rs: RangeServer) -> None:
    """Every record: its keys, its status, its chosen model."""
    assert [r["cube"] for r in recs] == [str(p) for p in archive.values()]
    for r in recs:
        name = Path(r["cube"]).stem
        assert set(r) == KEYS, r
        assert r["status"] == EXPECTED[name], r
        want_body = {"MARS": "Mars", "MOON": "Moon", "PHOBOS": "Phobos", "SKY": "SKY",
                     '"SATURN RINGS"': "SATURN RINGS"}[ARCHIVE[name][0]]
        assert r["body"] == want_body, r
        if want_body in CHOSEN:
            assert r["chosen"] == "/vsicurl/" + rs.url(CHOSEN[want_body]), r
        if r["status"] not in FINE:
            assert r["reason"], r  # it says why
    by = {Path(r["cube"]).stem: r for r in recs}
    assert by["phobos_unset"]["current"] is None and by["mars_null"]["current"] == "Null"
    assert by["rings"]["current"] == "RingPlane" and by["sky"]["current"] == "Null"
    assert "deprecated" in by["mars_deprecated"]["reason"] and "marsdem0003" in by["mars_deprecated"]["reason"]
    assert "marsdem0001" in by["mars_behind_a"]["reason"] and "moondem0001" in by["moon_behind"]["reason"]
    assert "SYSTEM" in by["moon_system"]["reason"]


# ------------------------------------------------------------------ the command


def test_fromlist_jobs4_json_errlist_then_fix_with_batchlist(servers, tmp_path, env, isisdata, user_dem):
    rs, stac = servers
    archive = make_archive(tmp_path / "archive", rs, user_dem)
    lst = write_list(tmp_path / "archive.lis", archive.values())
    before = fingerprint(archive.values())
    errlist = tmp_path / "fix.lis"
    src = [f"url={stac.url}", f"isisdata={isisdata}"]
    p = run(f"fromlist={lst}", "audit=yes", *src, "jobs=4", "--json", f"-errlist={errlist}", env=env)
    assert p.returncode == 1, p.stderr
    recs = jsonl(p.stdout)
    check_records(recs, archive, rs)
    assert statuses(recs) == EXPECTED
    counts = Counter(EXPECTED.values())
    assert f"shaperesolver: {summary(counts, len(ARCHIVE))}" in p.stderr.splitlines(), p.stderr
    assert "Traceback" not in p.stderr
    assert fingerprint(archive.values()) == before  # no byte and no mtime changed
    assert not list((tmp_path / "archive").glob(".*"))  # no journal, no lock file left behind
    # -errlist: exactly the cubes neither current nor user
    bad = [str(archive[n]) for n, s in EXPECTED.items() if s not in FINE]
    assert errlist.read_text().splitlines() == bad
    # one search per body (SKY needs none), the searches of the jobs' threads shared
    assert searches_per_body(stac) == Counter({"Mars": 1, "Moon": 1, "Phobos": 1, "SATURN RINGS": 1})

    # the human form: one line per cube on stdout, the summary on stderr (all but the cube of the
    # server that is down: GDAL's retries of a refused connection cost seconds, and it was seen above)
    quick = {n: p for n, p in archive.items() if n != "mars_down"}
    p = run(f"fromlist={write_list(tmp_path / 'quick.lis', quick.values())}", "audit=yes", *src, "jobs=4", env=env)
    assert p.returncode == 1, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == len(quick)
    for line, (name, path) in zip(lines, quick.items()):
        assert line.startswith(f"{path}: {EXPECTED[name]}: "), line
    behind = lines[list(quick).index("mars_behind_a")]
    assert behind.startswith(f"{archive['mars_behind_a']}: stale: /vsicurl/{rs.url('mars1.tif')} -> "
                             f"/vsicurl/{rs.url('mars2.tif')} ("), behind
    assert lines[list(quick).index("phobos_unset")].startswith(f"{archive['phobos_unset']}: unset: (none) -> ")
    assert lines[list(quick).index("mars_current_a")] == f"{archive['mars_current_a']}: current: " \
                                                        f"/vsicurl/{rs.url('mars2.tif')}"
    counts["unreachable"] -= 1
    assert p.stderr.splitlines()[-1] == f"shaperesolver: {summary(counts, len(quick))}", p.stderr
    assert fingerprint(archive.values()) == before

    # the errlist fed back to a normal resolve (it writes) fixes exactly those cubes
    p = run(f"-batchlist={errlist}", "from=$1", *src, env=env)
    assert p.returncode == 0, p.stderr
    after = fingerprint(archive.values())
    changed = {str(archive[n]) for n in archive if after[str(archive[n])] != before[str(archive[n])]}
    assert changed == set(bad)
    errlist2 = tmp_path / "fix2.lis"
    p = run(f"fromlist={lst}", "audit=yes", *src, "jobs=4", "--json", f"-errlist={errlist2}", env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    recs = jsonl(p.stdout)
    assert all(r["status"] in FINE for r in recs), [r for r in recs if r["status"] not in FINE]
    assert statuses(recs)["mars_user"] == "user" and Counter(r["status"] for r in recs) == Counter(
        {"current": len(ARCHIVE) - 1, "user": 1})
    assert not errlist2.exists() or errlist2.read_text() == ""
    assert fingerprint(archive.values()) == after


def test_from_one_cube(servers, tmp_path, env, isisdata, user_dem):
    rs, stac = servers
    archive = make_archive(tmp_path / "archive", rs, user_dem)
    before = fingerprint(archive.values())
    src = [f"url={stac.url}", f"isisdata={isisdata}"]
    for name in ("mars_behind_a", "moon_system", "moon_removed", "mars_404", "mars_down", "moon_marsdem", "mars_null",
                 "mars_user", "rings", "sky", "phobos_current"):
        p = run(f"from={archive[name]}", "audit=yes", *src, "--json", env=env)
        assert p.returncode == (0 if EXPECTED[name] in FINE else 1), (name, p.stdout, p.stderr)
        [rec] = jsonl(p.stdout)
        assert set(rec) == KEYS and rec["status"] == EXPECTED[name] and rec["cube"] == str(archive[name]), rec
    assert fingerprint(archive.values()) == before
    p = run(f"from={archive['moon_removed']}", "audit=yes", *src, env=env)
    assert p.returncode == 1
    assert p.stdout.startswith(f"{archive['moon_removed']}: missing: $base/dems/moon_sys_old.tif -> "
                               f"/vsicurl/{rs.url('moon2.tif')} ("), p.stdout


def test_batchlist(servers, tmp_path, env, isisdata, user_dem):
    rs, stac = servers
    archive = make_archive(tmp_path / "archive", rs, user_dem)
    before = fingerprint(archive.values())
    rows = write_list(tmp_path / "rows.lis", archive.values())
    errlist = tmp_path / "rows.err"
    p = run(f"-batchlist={rows}", "from=$1", "audit=yes", f"url={stac.url}", f"isisdata={isisdata}", "--json",
            f"-errlist={errlist}", env=env)
    assert p.returncode == 1, p.stderr
    recs = jsonl(p.stdout)
    check_records(recs, archive, rs)
    # -batchlist: the failing rows' lines
    assert errlist.read_text().splitlines() == [str(archive[n]) for n, s in EXPECTED.items() if s not in FINE]
    assert fingerprint(archive.values()) == before
    assert searches_per_body(stac) == Counter({"Mars": 1, "Moon": 1, "Phobos": 1, "SATURN RINGS": 1})


def test_exit_codes_and_usage_errors(servers, tmp_path, env, isisdata, user_dem):
    rs, stac = servers
    fine = ["mars_current_a", "mars_user", "moon_current", "phobos_current", "sky", "rings"]
    archive = make_archive(tmp_path / "archive", rs, user_dem, fine)
    lst = write_list(tmp_path / "fine.lis", archive.values())
    src = [f"url={stac.url}", f"isisdata={isisdata}"]
    log = tmp_path / "audit.log"
    p = run(f"fromlist={lst}", "audit=yes", *src, f"-log={log}", env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stderr.splitlines()[-1] == "shaperesolver: 6 cubes audited: 5 current, 1 user", p.stderr
    groups = [v for k, v in pvl.loads(log.read_text()).items() if k == "Audit"]  # one PVL group per cube
    assert [(g["From"], g["Status"]) for g in groups] == [(str(archive[n]), EXPECTED[n]) for n in fine]
    assert groups[1]["ShapeModel"] == str(user_dem) and groups[1]["Body"] == "Mars"
    before = fingerprint(archive.values())
    for bad in (["list=yes"], [f"mirror={tmp_path / 'mirror'}"]):
        p = run(f"fromlist={lst}", "audit=yes", *src, *bad, env=env)
        assert p.returncode == 2, (bad, p.stderr)
        assert p.stderr.startswith("shaperesolver: ") and p.stderr.count("\n") == 1 and p.stdout == "", p.stderr
    p = run(f"from={archive['sky']}", "audit=yes", "target=Mars", "list=yes", *src, env=env)
    assert p.returncode == 2 and p.stdout == ""
    assert not (tmp_path / "mirror").exists()
    assert fingerprint(archive.values()) == before


# ------------------------------------------------------------------ once per body, once per model


def test_each_distinct_model_is_checked_once(servers, tmp_path, env, isisdata, user_dem):
    """How the checks are counted: GDAL opens a web model with one HEAD and reads it with
    range GETs, and a check done twice in one process costs no request (GDAL's cache of
    the relay's URL, then the memo and the on-disk cache), so a duplicate check shows up
    only when it runs in another process or at the same time on another thread.  So the
    same model is checked from cold (a fresh cache directory, a new process) by a run in
    which two cubes name it, with four threads, and by a run with one cube: the requests
    for it must be the same, and one HEAD (one open) each time."""
    rs, stac = servers
    archive = make_archive(tmp_path / "archive", rs, user_dem)
    src = [f"url={stac.url}", f"isisdata={isisdata}"]

    def requests_for(name):
        return [(r["method"], r["range"]) for r in rs.requests if r["path"].lstrip("/") == name]

    lst = write_list(tmp_path / "two.lis", [archive[n] for n in ("mars_behind_a", "mars_behind_b", "mars_current_a",
                                                                    "mars_current_b", "moon_current")])
    p = run(f"fromlist={lst}", "audit=yes", *src, "jobs=4", "--json", env={**env, "SHAPERESOLVER_CACHE_DIR":
                                                                               str(tmp_path / "cache-two")})
    assert [r["status"] for r in jsonl(p.stdout)] == ["stale", "stale", "current", "current", "current"], p.stderr
    two = {m: requests_for(m) for m in ("mars1.tif", "mars2.tif")}
    assert two["mars1.tif"].count(("HEAD", None)) == 1 and two["mars2.tif"].count(("HEAD", None)) == 1
    rs.requests.clear()
    p = run(f"from={archive['mars_behind_a']}", "audit=yes", *src, "--json", env={**env, "SHAPERESOLVER_CACHE_DIR":
                                                                                     str(tmp_path / "cache-one")})
    assert jsonl(p.stdout)[0]["status"] == "stale", p.stderr
    one = {m: requests_for(m) for m in ("mars1.tif", "mars2.tif")}
    assert sorted(two["mars1.tif"]) == sorted(one["mars1.tif"]) and one["mars1.tif"]
    assert sorted(two["mars2.tif"]) == sorted(one["mars2.tif"]) and one["mars2.tif"]  # (the chosen one: verify=yes)


@pytest.mark.cluster
def test_dask_checks_each_model_once_in_the_client(servers, tmp_path, isisdata, user_dem, dask_cluster):
    """With ``cache="no"`` no process can take a check from the on-disk cache, and each
    worker is another process with its own GDAL: a model checked on a worker would be
    opened there again (one more HEAD).  One HEAD per model file: checked once, here."""
    _, client = dask_cluster
    rs, stac = servers
    archive = make_archive(tmp_path / "archive", rs, user_dem)
    before = fingerprint(archive.values())
    recs = audit_batch(list(archive.values()), client, url=stac.url, isisdata=str(isisdata), cache="no", http=FAST,
                       chunk_size=1)
    check_records(recs, archive, rs)
    assert statuses(recs) == EXPECTED
    assert fingerprint(archive.values()) == before
    assert searches_per_body(stac) == Counter({"Mars": 1, "Moon": 1, "Phobos": 1, "SATURN RINGS": 1})
    heads = Counter(r["path"].lstrip("/") for r in rs.requests if r["method"] == "HEAD")
    # GDAL's open of a URL that answers 404 makes more than one HEAD: what one check of such a
    # URL costs, from cold (a name never opened in this process), is measured here
    with Resolver(url=stac.url, cache="no", http=FAST) as r:
        with pytest.raises(ModelUnreachableError):
            r.models.check_named("/vsicurl/" + rs.url("never_there.tif"), "Mars")
    one_404 = sum(1 for r in rs.requests if r["method"] == "HEAD" and r["path"] == "/never_there.tif")
    assert one_404 >= 1
    assert heads == Counter({**{m: 1 for m in ("mars1.tif", "mars2.tif", "mars3.tif", "moon1.tif", "moon2.tif",
                                               "phobos1.tif")}, "mars_gone.tif": one_404}), heads


@pytest.mark.cluster
def test_cli_with_a_dask_scheduler(servers, tmp_path, env, isisdata, user_dem, dask_cluster):
    cluster, _ = dask_cluster
    rs, stac = servers
    archive = make_archive(tmp_path / "archive", rs, user_dem)
    before = fingerprint(archive.values())
    lst = write_list(tmp_path / "archive.lis", archive.values())
    errlist = tmp_path / "err.lis"
    p = run(f"fromlist={lst}", "audit=yes", f"url={stac.url}", f"isisdata={isisdata}",
            f"scheduler={cluster.scheduler_address}", "--json", f"-errlist={errlist}", env=env)
    assert p.returncode == 1, p.stderr
    check_records(jsonl(p.stdout), archive, rs)
    assert errlist.read_text().splitlines() == [str(archive[n]) for n, s in EXPECTED.items() if s not in FINE]
    assert fingerprint(archive.values()) == before
    assert searches_per_body(stac) == Counter({"Mars": 1, "Moon": 1, "Phobos": 1, "SATURN RINGS": 1})


# ------------------------------------------------------------------ the API


def test_api_resolver_audit_and_audit_batch(servers, tmp_path, isisdata, user_dem):
    rs, stac = servers
    archive = make_archive(tmp_path / "archive", rs, user_dem)
    before = fingerprint(archive.values())
    with Resolver(url=stac.url, isisdata=isisdata, cache_dir=tmp_path / "cache-one", http=FAST) as r:
        got = {name: r.audit(path) for name, path in archive.items()}
        assert searches_per_body(stac) == Counter({"Mars": 1, "Moon": 1, "Phobos": 1, "SATURN RINGS": 1})
    for name, a in got.items():
        assert isinstance(a, Audit) and a.status == EXPECTED[name] and a.cube == str(archive[name]), a
        assert a.ok == (EXPECTED[name] in FINE)
        assert a.record() == {k: getattr(a, k) for k in KEYS}
    with pytest.raises(dataclasses.FrozenInstanceError):
        got["mars_404"].status = "current"  # type: ignore[misc]
    a = got["mars_behind_a"]
    assert a.current == f"/vsicurl/{rs.url('mars1.tif')}" and a.chosen == f"/vsicurl/{rs.url('mars2.tif')}"
    assert a.target == "MARS" and a.body == "Mars"
    assert fingerprint(archive.values()) == before

    stac.requests.clear()
    recs = audit_batch(list(archive.values()), jobs=4, url=stac.url, isisdata=str(isisdata),
                       cache_dir=tmp_path / "cache-batch", http=FAST)
    assert recs == [got[n].record() for n in archive]
    assert searches_per_body(stac) == Counter({"Mars": 1, "Moon": 1, "Phobos": 1, "SATURN RINGS": 1})
    with Resolver(url=stac.url, isisdata=isisdata, cache_dir=tmp_path / "cache-iter", http=FAST) as r:
        streamed = list(iter_batch((str(p) for p in archive.values()), resolver=r, audit=True, jobs=2))
    assert streamed == recs
    assert fingerprint(archive.values()) == before


def test_audit_takes_only_a_shared_lock(servers, tmp_path, isisdata, user_dem):
    """Another reader's shared lock on every cube does not stop an audit (it never locks for
    writing), while a write, which needs the cube alone, is kept out by the same lock."""
    import fcntl

    from shaperesolver import write_shape_model

    rs, stac = servers
    names = ["mars_current_a", "mars_behind_a", "moon_removed", "phobos_unset", "rings"]
    archive = make_archive(tmp_path / "archive", rs, user_dem, names)
    before = fingerprint(archive.values())
    fds = [os.open(p, os.O_RDONLY) for p in archive.values()]
    try:
        for fd in fds:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        with Resolver(url=stac.url, isisdata=isisdata, cache_dir=tmp_path / "cache", http=FAST, lock_wait=1) as r:
            assert {n: r.audit(p).status for n, p in archive.items()} == {n: EXPECTED[n] for n in names}
            recs = audit_batch(list(archive.values()), resolver=r, jobs=2)
            assert [x["status"] for x in recs] == [EXPECTED[n] for n in names]
        with pytest.raises(Exception, match="lock|busy|held"):
            write_shape_model(archive["mars_behind_a"], "Null", lock_wait=1)
    finally:
        for fd in fds:
            os.close(fd)
    assert fingerprint(archive.values()) == before


def test_current_after_expansion_pins_and_cubes_that_cannot_be_read(servers, tmp_path, env, isisdata, user_dem):
    """``$base/...``, ``$ISISDATA/...``, ``~`` and a path spelled out name the same SYSTEM
    model; a URL with or without ``/vsicurl/`` the same web model; ``version=`` moves what is
    current; a file that is not a cube is ``failed`` (and listed)."""
    rs, stac = servers
    d = tmp_path / "forms"
    d.mkdir()
    sysdem = isisdata / "base" / "dems" / "moon_sys.tif"
    forms = {"base": "$base/dems/moon_sys.tif", "isisdata": "$ISISDATA/base/dems/moon_sys.tif",
             "tilde": "~/isisdata/base/dems/moon_sys.tif", "spelled": str(sysdem)}
    moon = {k: cubes.write_attached(d / f"moon_{k}.cub", cube_text("MOON", v), label_bytes=LABEL_BYTES,
                                    data_bytes=512) for k, v in forms.items()}
    home = {**env, "HOME": str(tmp_path)}  # ~ is tmp_path
    src = [f"url={stac.url}", f"isisdata={isisdata}"]
    lst = write_list(tmp_path / "moon.lis", moon.values())
    before = fingerprint(moon.values())
    p = run(f"fromlist={lst}", "audit=yes", "shape=system", *src, "--json", env=home)
    assert p.returncode == 0, p.stdout + p.stderr
    recs = jsonl(p.stdout)
    assert [(r["status"], r["chosen"]) for r in recs] == [("current", "$base/dems/moon_sys.tif")] * 4, recs
    p = run(f"fromlist={lst}", "audit=yes", *src, "--json", env=home)  # shape=web: a newer web model exists
    assert p.returncode == 1
    assert [r["status"] for r in jsonl(p.stdout)] == ["stale"] * 4, p.stdout

    plain = cubes.write_attached(d / "mars_plain.cub", cube_text("MARS", rs.url("mars2.tif")),
                                 label_bytes=LABEL_BYTES, data_bytes=512)
    archive = make_archive(tmp_path / "archive", rs, user_dem, ["mars_current_a", "mars_behind_a", "mars_deprecated"])
    junk = d / "junk.cub"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    lst = write_list(tmp_path / "mars.lis", [plain, *archive.values(), junk, d / "no_such.cub"])
    before.update(fingerprint([plain, *archive.values(), junk]))
    errlist = tmp_path / "err.lis"
    p = run(f"fromlist={lst}", "audit=yes", *src, "--json", f"-errlist={errlist}", env=home)
    assert p.returncode == 1
    recs = jsonl(p.stdout)
    assert [r["status"] for r in recs] == ["current", "current", "stale", "stale", "failed", "failed"], recs
    assert all(set(r) == KEYS for r in recs) and recs[4]["reason"] and recs[5]["reason"]
    assert errlist.read_text().splitlines() == [str(archive["mars_behind_a"]), str(archive["mars_deprecated"]),
                                                str(junk), str(d / "no_such.cub")]
    assert "6 cubes audited: 2 current, 2 stale, 2 failed" in p.stderr, p.stderr
    p = run(f"fromlist={lst}", "audit=yes", "version=0001", *src, "--json", env=home)  # pinned to 0001
    assert [(r["status"], r["chosen"]) for r in jsonl(p.stdout)[:4]] == [
        ("stale", "/vsicurl/" + rs.url("mars1.tif"))] * 2 + [("current", "/vsicurl/" + rs.url("mars1.tif")),
                                                            ("stale", "/vsicurl/" + rs.url("mars1.tif"))]
    assert fingerprint([*moon.values(), plain, *archive.values(), junk]) == before
    assert not (d / "no_such.cub").exists()
