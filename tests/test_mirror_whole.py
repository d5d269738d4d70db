"""Issue 22, item 4 and the mirror part of item 2: every file in the mirror is the file the
catalog describes, whole.

* a download cut, then the file replaced (same size, new ETag) by a server that ignores
  ``If-Range``: the mirror spliced the two versions and recorded that SHA-256;
* the source's ``file:checksum`` was never compared;
* two bodies' items sharing an id (``dem0001``) collided in the mirror: the Moon was
  "present" with the Mars file, and a Moon cube got ``Null``;
* ``version=1 prune=yes`` deleted the newer ``moon0002`` a label already named;
* one asset host answering a malformed redirect ended the whole run ("unexpected error"),
  so the other bodies were never mirrored.

Real COGs written with GDAL, real HTTP servers on 127.0.0.1 (:mod:`servers`, and
:class:`servers.FileHost` for ETags and scripted faults), the console script in subprocesses
and the API (:class:`shaperesolver.mirror.Mirror`).
"""

import hashlib
import json
import shutil
from pathlib import Path

import dems
import numpy as np
import pytest
from osgeo import gdal
from servers import FileHost, RangeServer, StacServer, item
from test_mirror import COL, run, sha

from shaperesolver import HttpSettings, MirrorError, Resolver, read_label
from shaperesolver.mirror import Mirror

QUICK = HttpSettings(retries=0, backoff=0.05)


@pytest.fixture(scope="module")
def www(tmp_path_factory):
    d = tmp_path_factory.mktemp("whole")
    dems.make_cog(d / "moon.tif", "Moon", 1024, 512)
    dems.make_cog(d / "mars.tif", "Mars", 1024, 512)
    # the Moon's file replaced on the server: the same size, other pixel values
    shutil.copy(d / "moon.tif", d / "moon-v2.tif")
    ds = gdal.Open(str(d / "moon-v2.tif"), gdal.GA_Update)
    band = ds.GetRasterBand(1)
    band.WriteArray((band.ReadAsArray() * np.float32(1.001)).astype(np.float32))
    ds = band = None
    assert (d / "moon-v2.tif").stat().st_size == (d / "moon.tif").stat().st_size
    assert sha(d / "moon-v2.tif") != sha(d / "moon.tif")
    for body in ("mars", "moon"):  # two bodies' files of the same name, for items of the same id
        (d / body).mkdir()
        shutil.copy(d / f"{body}.tif", d / body / "dem.tif")
    return d


def _refused_for_its_checksum(p, mirror, item_dir):
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    err = [ln for ln in p.stderr.splitlines() if "file:checksum" in ln]
    assert len(err) == 1 and "Moon" in err[0] and "not kept" in err[0], p.stderr
    assert not (item_dir / "moon.tif").exists() and not list(item_dir.glob("*.part*")) if item_dir.exists() else True
    cat = mirror / "catalog.json"
    assert not cat.exists() or "lolaMoon0001" not in cat.read_text()


# ------------------------------------------------------------ a resumed download proves the file is the same


@pytest.mark.parametrize("answer", ["206 of the new file", "200 with the new file"])
def test_file_replaced_after_a_cut_is_mirrored_whole_not_spliced(www, tmp_path, answer):
    """The API: a cut at half, the file replaced (same size, new ETag), a server that ignores
    If-Range. Before: the 206 of the new file was appended to the old half (a splice that GDAL
    still opens) and its SHA-256 recorded."""
    v1, v2 = (www / "moon.tif").read_bytes(), (www / "moon-v2.tif").read_bytes()
    with FileHost() as host:
        host.put("moon.tif", v1)
        etag1 = host.etags["moon.tif"]
        host.cut["moon.tif"] = len(v1) // 2
        host.after_cut["moon.tif"] = lambda: (host.cut.clear(), host.put("moon.tif", v2))
        host.honour_if_range = False
        host.whole_for_range = answer.startswith("200")
        with StacServer([item("lolaMoon0001", ["Moon"], "0001", href=host.url("moon.tif"))]) as stac, \
                Resolver(url=stac.url, cache="no", http=QUICK) as r:
            done = Mirror(tmp_path / "m", r, retries=2).add("Moon")
        gets = host.gets("moon.tif")
    path = Path(done.path)
    assert path.read_bytes() == v2, "the mirrored file is not the new file whole"
    assert path == tmp_path / "m" / "Moon" / COL / "lolaMoon0001" / "moon.tif"
    assert done.sha256 == hashlib.sha256(v2).hexdigest() and done.status == "downloaded"
    doc = json.loads((path.parent / "lolaMoon0001.json").read_text())
    assert doc["assets"]["image"]["file:checksum"] == "1220" + hashlib.sha256(v2).hexdigest()
    assert gets[1]["range"] == f"bytes={len(v1) // 2}-" and gets[1]["if_range"] == etag1  # it tried to resume v1
    assert not list(path.parent.glob("*.part*"))


def test_file_replaced_between_runs_is_mirrored_whole_not_spliced(www, tmp_path):
    """The console script: a run gives up on a download cut at half (the part kept to resume);
    the file is replaced (same size, new ETag); the next run, to a server that ignores If-Range,
    resumed onto the old half."""
    v1, v2 = (www / "moon.tif").read_bytes(), (www / "moon-v2.tif").read_bytes()
    mirror = tmp_path / "m"
    item_dir = mirror / "Moon" / COL / "lolaMoon0001"
    with FileHost() as host, StacServer([item("lolaMoon0001", ["Moon"], "0001", href=host.url("moon.tif"))]) as stac:
        host.put("moon.tif", v1)
        host.cut["moon.tif"] = len(v1) // 2
        p = run(f"url={stac.url}", "target=Moon", f"mirror={mirror}", "-q")
        assert p.returncode == 1 and "gave up" in p.stderr, p.stderr
        assert [x.stat().st_size for x in mirror.rglob("moon.tif.part")] == [len(v1) // 2]
        host.cut.clear()
        host.put("moon.tif", v2)
        host.honour_if_range = False
        p = run(f"url={stac.url}", "target=Moon", f"mirror={mirror}", "--json")
        assert host.gets("moon.tif")[-2]["range"] == f"bytes={len(v1) // 2}-"  # it tried to resume
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout)
    assert Path(rec["path"]).read_bytes() == v2, "the mirrored file is not the new file whole"
    assert rec["path"] == str(item_dir / "moon.tif")
    assert rec["sha256"] == hashlib.sha256(v2).hexdigest() and rec["status"] == "downloaded"
    assert not list(item_dir.glob("*.part*"))


# ------------------------------------------------------------ file:checksum


def _multihash(kind, data):
    return {"sha2-256": "1220" + hashlib.sha256(data).hexdigest(), "sha2-512": "1340" + hashlib.sha512(data).hexdigest(),
            "sha1": "1114" + hashlib.sha1(data).hexdigest()}[kind]


@pytest.mark.parametrize("kind", ["sha2-256", "sha2-512", "sha1"])
def test_a_wrong_file_checksum_is_refused(www, tmp_path, kind):
    """The console script: the source's file:checksum (the file extension's multihash) does not
    match what the server sends. Before: never compared, the file entered the mirror."""
    right = _multihash(kind, (www / "moon.tif").read_bytes())
    wrong = right[:4] + ("0" if right[4] != "0" else "1") + right[5:]
    mirror = tmp_path / "m"
    with RangeServer(www) as rs:
        moon = item("lolaMoon0001", ["Moon"], "0001", href=rs.url("moon.tif"))
        moon["assets"]["image"]["file:checksum"] = wrong
        mars = item("molaMars0005", ["Mars"], "0005", href=rs.url("mars.tif"))
        with StacServer([moon, mars]) as stac:
            p = run(f"url={stac.url}", "target=Moon,Mars", f"mirror={mirror}", "-q")
    _refused_for_its_checksum(p, mirror, mirror / "Moon" / COL / "lolaMoon0001")
    assert "molaMars0005" in (mirror / "catalog.json").read_text()  # the other body is mirrored


@pytest.mark.parametrize("kind", ["sha2-256", "sha2-512", "sha1", "unknown"])
def test_a_right_file_checksum_is_accepted(www, tmp_path, kind, caplog):
    """The API: a matching checksum of each kind is accepted; an unknown multihash code (0x56, dbl-sha2-256) is
    noted in the log and not compared."""
    data = (www / "moon.tif").read_bytes()
    checksum = "5620" + "ab" * 32 if kind == "unknown" else _multihash(kind, data)
    with RangeServer(www) as rs:
        moon = item("lolaMoon0001", ["Moon"], "0001", href=rs.url("moon.tif"))
        moon["assets"]["image"]["file:checksum"] = checksum
        with StacServer([moon]) as stac, Resolver(url=stac.url, cache="no", http=QUICK) as r:
            done = Mirror(tmp_path / "m", r).add("Moon")
    assert done.status == "downloaded" and done.sha256 == hashlib.sha256(data).hexdigest()
    assert Path(done.path).read_bytes() == data
    noted = [rec.getMessage() for rec in caplog.records if "file:checksum" in rec.getMessage()]
    assert any("0x56" in m and "not compared" in m for m in noted) if kind == "unknown" else not any(
        "not compared" in m for m in noted)


def test_a_wrong_file_checksum_is_refused_through_the_api_and_the_part_removed(www, tmp_path):
    with RangeServer(www) as rs:
        moon = item("lolaMoon0001", ["Moon"], "0001", href=rs.url("moon.tif"))
        moon["assets"]["image"]["file:checksum"] = "1220" + "00" * 32
        with StacServer([moon]) as stac, Resolver(url=stac.url, cache="no", http=QUICK) as r:
            with pytest.raises(MirrorError, match="file:checksum; not kept"):
                Mirror(tmp_path / "m", r).add("Moon")
    folder = tmp_path / "m" / "Moon" / COL / "lolaMoon0001"
    assert not folder.exists() or not list(folder.iterdir())
    assert not (tmp_path / "m" / "catalog.json").exists()


def test_a_source_checksum_that_changed_gets_the_new_file(www, tmp_path):
    """The source now describes another file for the same item (a new file:checksum): the mirrored
    copy is not "present" any more; the new file is downloaded and checked."""
    v1, v2 = (www / "moon.tif").read_bytes(), (www / "moon-v2.tif").read_bytes()
    with FileHost() as host:
        host.put("moon.tif", v1)
        moon = item("lolaMoon0001", ["Moon"], "0001", href=host.url("moon.tif"))
        moon["assets"]["image"]["file:checksum"] = _multihash("sha2-256", v1)
        with StacServer([moon]) as stac, Resolver(url=stac.url, cache="no", http=QUICK) as r:
            first = Mirror(tmp_path / "m", r).add("Moon")
            assert Mirror(tmp_path / "m", r).add("Moon").status == "present"
            host.put("moon.tif", v2)
            stac.items[0]["assets"]["image"]["file:checksum"] = _multihash("sha2-512", v2)
            second = Mirror(tmp_path / "m", r).add("Moon")
    assert first.sha256 == hashlib.sha256(v1).hexdigest()
    assert second.status == "downloaded" and second.sha256 == hashlib.sha256(v2).hexdigest()
    assert Path(second.path).read_bytes() == v2 and second.path == first.path


# ------------------------------------------------------------ items keyed by collection, body and id


def test_two_bodies_items_sharing_an_id_both_mirrored_and_resolved(www, tmp_path, make_cube, dask_cluster):
    """Mars's and the Moon's items are both ``dem0001``, their files both ``dem.tif``. Before: the
    Moon was "present" with the Mars file's checksum, and a Moon cube resolved from the mirror
    got Null (exit 0)."""
    from shaperesolver import write_batch

    mirror = tmp_path / "m"
    moons = [make_cube("lro_moon", f"moon{i}.cub") for i in range(3)]
    mars = make_cube("viking_mars")
    lst = tmp_path / "cubes.lis"
    lst.write_text(f"{moons[0]}\n{mars}\n")
    with RangeServer(www) as rs:
        items = [item("dem0001", ["Mars"], "0001", href=rs.url("mars/dem.tif")),
                 item("dem0001", ["Moon"], "0001", href=rs.url("moon/dem.tif"))]
        with StacServer(items) as stac:
            p = run(f"url={stac.url}", f"fromlist={lst}", f"mirror={mirror}", "jobs=4", "--json")
    assert p.returncode == 0, p.stderr
    recs = {r["body"]: r for r in map(json.loads, p.stdout.splitlines()) if "status" in r}
    assert recs["Moon"]["status"] == recs["Mars"]["status"] == "downloaded"
    assert recs["Moon"]["sha256"] == sha(www / "moon.tif") and recs["Mars"]["sha256"] == sha(www / "mars.tif")
    moon_file, mars_file = mirror / "Moon" / COL / "dem0001" / "dem.tif", mirror / "Mars" / COL / "dem0001" / "dem.tif"
    assert sha(moon_file) == sha(www / "moon.tif") and sha(mars_file) == sha(www / "mars.tif")
    assert read_label(moons[0]).shape_model == str(moon_file) and read_label(mars).shape_model == str(mars_file)
    # offline, from the mirror: the console script, the API and a Dask cluster
    p = run(f"catalog={mirror}", f"from={moons[1]}", "verify=yes")
    assert p.returncode == 0, p.stderr
    assert read_label(moons[1]).shape_model == str(moon_file)
    with Resolver(catalog=mirror, cache="no") as r:
        assert r.resolve(target="Moon").shape_model == str(moon_file)
        assert r.resolve(target="Mars").shape_model == str(mars_file)
    recs = write_batch([moons[2]], dask_cluster[1], catalog=mirror, cache="no", verify=True)
    assert [x["shape_model"] for x in recs] == [str(moon_file)]


def test_a_static_source_catalog_with_an_id_shared_by_two_bodies(www, tmp_path):
    """The API, from a static catalog over HTTP (every item in one answer): the Moon's item was
    looked up by id alone, so the Mars item's metadata went with the Moon's file."""
    (www / "shared").mkdir(exist_ok=True)
    with RangeServer(www) as rs:
        mars = item("dem0001", ["Mars"], "0001", href=rs.url("mars/dem.tif"))
        mars["assets"]["image"]["file:size"] = (www / "mars.tif").stat().st_size
        moon = item("dem0001", ["Moon"], "0001", href=rs.url("moon/dem.tif"))
        moon["assets"]["image"]["file:size"] = (www / "moon.tif").stat().st_size
        (www / "shared" / "catalog.json").write_text(json.dumps({"type": "FeatureCollection", "features": [mars, moon]}))
        with Resolver(catalog=rs.url("shared/catalog.json"), cache="no", http=QUICK) as r:
            out = list(Mirror(tmp_path / "m", r).run(["Mars", "Moon"]))
    assert [(t, e) for t, _, e in out] == [("Mars", None), ("Moon", None)]
    assert {d.body: d.sha256 for _, d, _ in out} == {"Mars": sha(www / "mars.tif"), "Moon": sha(www / "moon.tif")}
    assert all(d.collection == COL for _, d, _ in out)
    with Resolver(catalog=tmp_path / "m", cache="no") as r:  # each item document is its own body's
        assert r.resolve(target="Moon").shape_model == str(tmp_path / "m" / "Moon" / COL / "dem0001" / "dem.tif")
        assert r.resolve(target="Mars").shape_model == str(tmp_path / "m" / "Mars" / COL / "dem0001" / "dem.tif")


def test_a_mirror_written_before_the_keyed_layout_is_still_read(www, tmp_path, make_cube):
    """``DIR/<item id>/`` entries an older version wrote: present (no download), resolved offline,
    and pruned when older."""
    mirror = tmp_path / "m"
    old = mirror / "lolaMoon0001"
    old.mkdir(parents=True)
    shutil.copy(www / "moon.tif", old / "moon.tif")
    size = (www / "moon.tif").stat().st_size
    (old / "lolaMoon0001.json").write_text(json.dumps({
        **item("lolaMoon0001", ["Moon"], "0001"), "links": [{"rel": "root", "href": "../catalog.json"}],
        "assets": {"image": {"href": "./moon.tif", "type": "image/tiff; application=geotiff", "file:size": size,
                             "file:checksum": "1220" + sha(www / "moon.tif")}}}))
    (mirror / "catalog.json").write_text(json.dumps({"type": "Catalog", "stac_version": "1.0.0", "id": "shaperesolver-mirror",
                                                     "description": "old", "links": [
                                                         {"rel": "item", "href": "./lolaMoon0001/lolaMoon0001.json"}]}))
    cube = make_cube("lro_moon")
    with RangeServer(www) as rs:
        items = [item("lolaMoon0001", ["Moon"], "0001", href=rs.url("moon.tif")),
                 item("lolaMoon0002", ["Moon"], "0002", href=rs.url("moon-v2.tif"))]
        with StacServer(items) as stac:
            p = run(f"url={stac.url}", "target=Moon", f"mirror={mirror}", "version=1", "--json")
            assert p.returncode == 0 and json.loads(p.stdout)["status"] == "present" and not rs.gets("moon.tif")
            assert run(f"catalog={mirror}", f"from={cube}").returncode == 0
            assert read_label(cube).shape_model == str(old / "moon.tif")
            p = run(f"url={stac.url}", "target=Moon", f"mirror={mirror}", "prune=yes")
    assert p.returncode == 0 and "pruned lolaMoon0001" in p.stdout, p.stdout + p.stderr
    assert not old.exists() and (mirror / "Moon" / COL / "lolaMoon0002" / "moon-v2.tif").exists()


# ------------------------------------------------------------ prune removes older versions only


def test_prune_with_a_pinned_older_version_keeps_the_newer(www, tmp_path, make_cube):
    """``version=1 prune=yes`` after 0002 was mirrored (and a label written naming it). Before:
    moon0002 was deleted, so the label named a missing file."""
    mirror = tmp_path / "m"
    cube = make_cube("lro_moon")
    with RangeServer(www) as rs:
        items = [item("moon0001", ["Moon"], "0001", href=rs.url("moon.tif")),
                 item("moon0002", ["Moon"], "0002", href=rs.url("moon-v2.tif")),
                 item("molaMars0005", ["Mars"], "0005", href=rs.url("mars.tif"))]
        with StacServer(items) as stac:
            assert run(f"url={stac.url}", "target=Moon,Mars", f"mirror={mirror}").returncode == 0
            assert run(f"catalog={mirror}", f"from={cube}").returncode == 0
            newer = Path(read_label(cube).shape_model)
            assert newer.name == "moon-v2.tif" and newer.exists()
            p = run(f"url={stac.url}", "target=Moon", f"mirror={mirror}", "version=1", "prune=yes")
            assert p.returncode == 0 and "pruned" not in p.stdout, p.stdout + p.stderr
            assert newer.exists() and "moon0002" in (mirror / "catalog.json").read_text()
            assert run(f"catalog={mirror}", f"from={cube}", "verify=yes").returncode == 0  # the label's file is there
            # the API, no pin: the newest is kept, the older one goes, Mars is untouched
            with Resolver(url=stac.url, cache="no", http=QUICK) as r:
                done = Mirror(mirror, r, prune=True).add("Moon")
    assert done.item_id == "moon0002" and done.status == "present" and done.pruned == ("moon0001",)
    assert newer == mirror / "Moon" / COL / "moon0002" / "moon-v2.tif"
    assert newer.exists() and not (mirror / "Moon" / COL / "moon0001").exists()
    assert (mirror / "Mars" / COL / "molaMars0005" / "mars.tif").exists()
    cat = (mirror / "catalog.json").read_text()
    assert "moon0002" in cat and "moon0001" not in cat and "molaMars0005" in cat


# ------------------------------------------------------------ one host's failure fails that body only


@pytest.mark.parametrize("fault", ["malformed redirect", "HTTP 500"])
def test_one_host_failing_fails_its_body_only(www, tmp_path, fault):
    """The Moon's asset host misbehaves; Mars's does not. Before: a malformed Location ended the
    whole run ("unexpected error"): Mars, after the Moon, was never mirrored."""
    mirror = tmp_path / "m"
    with FileHost() as bad, RangeServer(www) as good:
        if fault == "HTTP 500":
            bad.status["moon.tif"] = 500
        else:
            bad.location["moon.tif"] = "http://[::1/moon.tif"
        items = [item("lolaMoon0001", ["Moon"], "0001", href=bad.url("moon.tif")),
                 item("molaMars0005", ["Mars"], "0005", href=good.url("mars.tif")),
                 item("phobosDem0001", ["Phobos"], "0001", href=bad.url("phobos.tif"))]  # 404
        with StacServer(items) as stac:
            p = run(f"url={stac.url}", "target=Moon,Mars,Phobos", f"mirror={mirror}", "--json", "-q")
            with Resolver(url=stac.url, cache="no", http=QUICK) as r:
                api = list(Mirror(tmp_path / "api", r, retries=1).run(["Moon", "Mars"]))
    assert p.returncode == 1 and "Traceback" not in p.stderr and "unexpected" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("shaperesolver: Moon") and "moon.tif" in lines[0], p.stderr
    assert lines[1].startswith("shaperesolver: Phobos") and "HTTP 404" in lines[1]
    assert [json.loads(x)["body"] for x in p.stdout.splitlines()] == ["Mars"]
    assert sha(mirror / "Mars" / COL / "molaMars0005" / "mars.tif") == sha(www / "mars.tif")
    cat = (mirror / "catalog.json").read_text()
    assert "molaMars0005" in cat and "lolaMoon0001" not in cat
    assert [t for t, _, e in api if e is not None] == ["Moon"] and isinstance(api[0][2], MirrorError)
    assert api[1][1] is not None and api[1][1].body == "Mars" and api[1][1].status == "downloaded"
