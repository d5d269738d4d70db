"""Issue 22, item 2 (STAC shapes): a malformed answer or item is never an unexpected error.

The rule (``shaperesolver/stacdoc.py``): an item that cannot be read (``properties`` a
list, ``version`` a list, ...) is skipped by a resolve and listed with its problem by
``list=``; an item whose assets are malformed is unusable (no answer when it is the one
a resolve would choose); a malformed page (``context`` a list, a ``next`` link that is
not a URL) is no answer.  Through the console script (``from=``, ``fromlist=`` with
``jobs=4``), a Dask LocalCluster, ``list=yes``, ``mirror=``, the API and a static catalog on disk, with the
Moon, Titan and Io.  Each of these failed on main with an AttributeError, TypeError or
ValueError ("unexpected error ... please report it").
"""

import json

import dems as cogs
import pytest
from servers import RangeServer, StacServer, item
from test_outcomes import FAST, MOON_SYSTEM, TITAN_SYSTEM, dask_client, digest, env, isisdata, jsonl, make, run  # noqa: F401

from shaperesolver import NoAnswerError, Resolver, read_label, resolve, write_batch

MOON = [item("ldem_moon_0002", ["Moon"], "0002"), item("ldem_moon_0001", ["Moon"], "0001")]
TITAN = [item("titan_dem_0001", ["Titan"], "0001")]
MOON_WEB = "/vsicurl/https://dems.example.org/ldem_moon_0002.tiff"
TITAN_WEB = "/vsicurl/https://dems.example.org/titan_dem_0001.tiff"


def listed_props(item_id, targets, version):
    """A newer item whose ``properties`` is a list (not an object)."""
    return {**item(item_id, targets, version), "properties": [{"ssys:targets": targets}]}


#: one unreadable item per body, each newer than the good ones; Io has nothing else
BAD = [listed_props("ldem_moon_0009", ["Moon"], "0009"), listed_props("titan_dem_0009", ["Titan"], "0009"),
       listed_props("io_dem_0009", ["Io"], "0009")]


@pytest.fixture
def stac():
    with StacServer(MOON + TITAN, inject=BAD) as s:
        yield s


# ------------------------------------------------------------------ the console script


@pytest.mark.parametrize("fallback", ["always", "nomatch"])
def test_from_skips_the_unreadable_item(tmp_path, env, isisdata, stac, fallback):  # noqa: F811
    moon, io = make(tmp_path, "moon.cub", "MOON"), make(tmp_path, "io.cub", "IO")
    p = run(f"from={moon}", f"url={stac.url}", f"isisdata={isisdata}", "verify=no", f"fallback={fallback}", "--json",
            env=env)
    assert p.returncode == 0, p.stderr
    [rec] = jsonl(p.stdout)
    assert rec["source"] == "web" and rec["shape_model"] == MOON_WEB and rec["item_id"] == "ldem_moon_0002"
    assert read_label(moon).shape_model == MOON_WEB
    # Io's only item cannot be read: nothing matches, the ellipsoid (no SYSTEM model for Io)
    p = run(f"from={io}", f"url={stac.url}", f"isisdata={isisdata}", "verify=no", f"fallback={fallback}", "--json",
            env=env)
    assert p.returncode == 0, p.stderr
    [rec] = jsonl(p.stdout)
    assert rec["source"] == "ellipsoid" and "no web shape model for Io" in rec["fallback_reason"]
    assert "unexpected" not in p.stderr and "Traceback" not in p.stderr


def test_fromlist_jobs_4(tmp_path, env, isisdata, stac):  # noqa: F811
    cs = [make(tmp_path / "c", f"{i}.cub", t) for i, t in enumerate(["MOON", "Titan", "IO", "MOON", "Titan", "IO"])]
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{c}\n" for c in cs))
    p = run(f"fromlist={lst}", f"url={stac.url}", f"isisdata={isisdata}", "verify=no", "cache=no", "jobs=4",
            "fallback=always", "--json", env=env)
    assert p.returncode == 0, p.stderr
    recs = {r["cube"]: r for r in jsonl(p.stdout)}
    assert [recs[str(c)]["shape_model"] for c in cs] == [MOON_WEB, TITAN_WEB, "Null"] * 2
    assert all(recs[str(c)]["written"] for c in cs)
    assert "unexpected" not in p.stderr


@pytest.mark.cluster
def test_dask(tmp_path, isisdata, stac, dask_client):  # noqa: F811
    cs = [make(tmp_path / "c", f"{i}.cub", t) for i, t in enumerate(["MOON", "Titan", "IO"] * 2)]
    recs = write_batch(cs, dask_client, url=stac.url, isisdata=isisdata, verify=False, cache="no", http=FAST,
                       fallback="always")
    assert [r["shape_model"] for r in recs] == [MOON_WEB, TITAN_WEB, "Null"] * 2
    assert all(r["written"] and not r.get("error") for r in recs), recs


def test_a_malformed_page_is_no_answer_and_always_falls_back(tmp_path, env, isisdata, stac):  # noqa: F811
    moon = make(tmp_path, "moon.cub", "MOON")
    before = digest(moon)
    page = {"type": "FeatureCollection", "features": MOON, "links": [], "context": [{"matched": 2}]}
    stac.fault(status=200, body=page, times=1)
    p = run(f"from={moon}", f"url={stac.url}", f"isisdata={isisdata}", "verify=no", "cache=no", env=env)
    assert p.returncode == 1 and digest(moon) == before
    [line] = p.stderr.strip().splitlines()
    assert "context is a list, not an object" in line and stac.url.rstrip("/") in line
    stac.fault(status=200, body=page, times=1)
    p = run(f"from={moon}", f"url={stac.url}", f"isisdata={isisdata}", "verify=no", "cache=no", "fallback=always",
            "--json", env=env)
    [rec] = jsonl(p.stdout)
    assert p.returncode == 0 and rec["shape_model"] == MOON_SYSTEM and "context is a list" in rec["fallback_reason"]


# ------------------------------------------------------------------ list=yes


def test_list_shows_the_unreadable_item_with_its_problem(stac, env):  # noqa: F811
    p = run(f"url={stac.url}", "cache=no", "target=Moon,Titan", "list=yes", "--json", env=env)
    assert p.returncode == 0, p.stderr
    recs = jsonl(p.stdout)
    assert [(r["body"], r["item_id"], r["chosen"]) for r in recs] == [
        ("Moon", "ldem_moon_0002", True), ("Moon", "ldem_moon_0001", False), ("Moon", "ldem_moon_0009", False),
        ("Titan", "titan_dem_0001", True), ("Titan", "titan_dem_0009", False)]
    assert recs[2]["problem"] == "item ldem_moon_0009: properties is a list, not an object"
    assert recs[2]["version"] is None and recs[2]["href"] is None
    p = run(f"url={stac.url}", "cache=no", "target=Io", "list=yes", env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["Io:", "    io_dem_0009  version -  -  -  (item io_dem_0009: properties is a list, "
                                     "not an object)"]


def test_list_every_body(stac, env):  # noqa: F811
    p = run(f"url={stac.url}", "cache=no", "list=yes", "--json", env=env)
    assert p.returncode == 0, p.stderr
    recs = jsonl(p.stdout)
    assert [r["body"] for r in recs] == ["Moon", "Moon", "Titan", "?", "?", "?"]  # the body of an unreadable item is unknown
    assert {r["item_id"] for r in recs if r["body"] == "?"} == {"ldem_moon_0009", "titan_dem_0009", "io_dem_0009"}


def test_list_an_item_with_malformed_assets(env):  # noqa: F811
    broken = {**item("titan_dem_0002", ["Titan"], "0002"), "assets": {"image": {"href": "https://x/t.tif", "roles": 5}}}
    with StacServer(TITAN + [broken]) as s:
        p = run(f"url={s.url}", "cache=no", "target=Titan", "list=yes", "--json", env=env)
        assert p.returncode == 0, p.stderr
        recs = jsonl(p.stdout)
        assert [(r["item_id"], r["chosen"]) for r in recs] == [("titan_dem_0002", False), ("titan_dem_0001", False)]
        assert recs[0]["problem"] == "item titan_dem_0002: assets.image.roles is 5, not a list"
        # the newest item is unusable: no answer rather than the older one
        with pytest.raises(NoAnswerError, match="assets.image.roles is 5"):
            resolve(target="Titan", url=s.url, cache="no", verify=False, http=FAST)


# ------------------------------------------------------------------ mirror=


@pytest.fixture(scope="module")
def www(tmp_path_factory):
    d = tmp_path_factory.mktemp("dems")
    cogs.make_cog(d / "moon.tif", "Moon", 1024, 512)
    return d


def test_mirror_goes_on(www, tmp_path, env):  # noqa: F811
    with RangeServer(www) as rs, StacServer([item("ldem_moon_0002", ["Moon"], "0002", href=rs.url("moon.tif"))],
                                            inject=BAD) as s:
        mirror = tmp_path / "mirror"
        p = run(f"url={s.url}", "cache=no", "target=Io,Moon", f"mirror={mirror}", "--json", env=env)
        assert p.returncode == 1  # Io could not be mirrored
        [rec] = jsonl(p.stdout)
        assert rec["body"] == "Moon" and rec["status"] == "downloaded"
        assert digest(rec["path"]) == digest(www / "moon.tif")
        assert "shaperesolver: Io: no web shape model in" in p.stderr
        assert "unexpected" not in p.stderr and "Traceback" not in p.stderr


# ------------------------------------------------------------------ the API and a static catalog


def test_api(stac):
    assert resolve(target="Moon", url=stac.url, cache="no", verify=False, http=FAST).shape_model == MOON_WEB
    with Resolver(url=stac.url, cache="no", verify=False, http=FAST) as r:
        assert r.resolve(target="Titan").shape_model == TITAN_WEB
        infos = r.items("Titan")
        assert [(i.item_id, i.problem is not None) for i in infos] == [("titan_dem_0001", False), ("titan_dem_0009", True)]
        # Resolver.choose takes any list: what cannot be read is skipped
        assert r.choose([5, "x", None, *BAD, *MOON], "Moon").item_id == "ldem_moon_0002"


def test_odd_versions_are_compared_without_converting_them(resolver_factory):
    huge = "9" * 5000  # int() of it raises ValueError (Python's 4300-digit limit)
    items = [item("ldem_moon_0002", ["Moon"], "0002"), item("ldem_moon_x", ["Moon"], huge),
             item("ldem_moon_y", ["Moon"], "\u00b2")]  # '²'.isdigit() is True, int('²') raises
    with StacServer(items) as s:
        r = resolver_factory(s.url, cache="no", verify=False)
        assert r.web_model("Moon").item_id == "ldem_moon_x"
        assert r.web_model("Moon", version="2").item_id == "ldem_moon_0002"


def test_a_next_link_that_is_not_a_url_is_no_answer():
    with StacServer(MOON, page_size=1, next_link={"href": "http://[::1/search"}) as s:
        with pytest.raises(NoAnswerError, match="next link 'http://\\[::1/search' is not a URL"):
            resolve(target="Moon", url=s.url, cache="no", verify=False, http=FAST)


def test_static_catalog_on_disk(tmp_path, env, isisdata):  # noqa: F811
    cat = tmp_path / "cat"
    cat.mkdir()
    (cat / "catalog.json").write_text(json.dumps({"type": "Catalog", "id": "x", "links": [
        {"rel": "item", "href": "./bad.json"}, {"rel": "item", "href": "./good.json"}]}))
    (cat / "bad.json").write_text(json.dumps({**listed_props("titan_dem_0009", ["Titan"], "0009"), "type": "Feature"}))
    (cat / "good.json").write_text(json.dumps({**item("titan_dem_0001", ["Titan"], "0001", href="./titan.tif"),
                                                "type": "Feature"}))
    (cat / "titan.tif").write_bytes(b"")
    titan = make(tmp_path, "titan.cub", "Titan")
    p = run(f"from={titan}", f"catalog={cat}", f"isisdata={isisdata}", "verify=no", "fallback=always", "--json", env=env)
    assert p.returncode == 0, p.stderr
    [rec] = jsonl(p.stdout)
    assert rec["source"] == "web" and rec["shape_model"] == str(cat / "titan.tif")
    p = run(f"catalog={cat}", "target=Titan", "list=yes", "--json", env=env)
    assert p.returncode == 0, p.stderr
    assert [(r["item_id"], r["problem"]) for r in jsonl(p.stdout)] == [
        ("titan_dem_0001", None), ("titan_dem_0009", "item titan_dem_0009: properties is a list, not an object")]
    assert TITAN_SYSTEM  # the data area has one, but the web answered
