"""Issue 17, item 1: what the catalog holds (``list=yes``, ``Resolver.items``)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from servers import StacServer, item

from shaperesolver import HttpSettings
from shaperesolver.policy import inventory

FAST = HttpSettings(retries=0)
EXE = str(Path(sys.executable).parent / "shaperesolver")


def sized(item_id, targets, version, size=None, **kw):
    it = item(item_id, targets, version, **kw)
    if size is not None:
        it["assets"]["image"]["file:size"] = size
    return it


ITEMS = [
    sized("molaMarsPlanetaryRadius0004", ["Mars"], "0004", 2_000_000, datetime="2019-01-01T00:00:00Z"),
    sized("molaMarsPlanetaryRadius0005", ["Mars"], "0005", 2_100_000, datetime="2021-01-01T00:00:00Z"),
    sized("molaMarsPlanetaryRadius0006", ["Mars"], "0006", deprecated=True, datetime="2023-01-01T00:00:00Z"),
    sized("ldem_moon_0001", ["Moon"], "0001", 700_000),
    sized("ldem_moon_0002", ["Moon"], "0002"),
    sized("phobos_ernst_0001", ["Phobos"], "0001", 1234),
    {**item("titan_broken", ["Titan"], "0001"), "assets": {"thumb": {"href": "https://x.example/t.png"}}},
]


def run(*args, **kw):
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=60, **kw)


@pytest.fixture
def stac():
    with StacServer(ITEMS) as s:
        yield s


def records(stdout):
    return [json.loads(line) for line in stdout.splitlines()]


def test_list_several_targets_json(stac):
    p = run(f"url={stac.url}", "cache=no", "target=MARS,Moon,Phobos", "list=yes", "--json")
    assert p.returncode == 0, p.stderr
    recs = records(p.stdout)
    by_body = {}
    for r in recs:
        by_body.setdefault(r["body"], []).append(r)
    assert list(by_body) == ["Mars", "Moon", "Phobos"]
    mars = by_body["Mars"]
    assert [r["version"] for r in mars] == ["0006", "0005", "0004"]  # newest first
    assert [r["chosen"] for r in mars] == [False, True, False]  # the deprecated newest is skipped
    assert mars[0]["deprecated"] is True and mars[1]["deprecated"] is False
    assert mars[1]["size"] == 2_100_000 and mars[0]["size"] is None
    assert mars[2]["datetime"] == "2019-01-01T00:00:00Z"
    assert mars[1]["href"] == "https://dems.example.org/molaMarsPlanetaryRadius0005.tiff"
    assert [r["chosen"] for r in by_body["Moon"]] == [True, False] and by_body["Moon"][0]["version"] == "0002"
    assert by_body["Phobos"][0]["size"] == 1234 and by_body["Phobos"][0]["chosen"]


def test_list_every_body_when_no_target(stac):
    p = run(f"url={stac.url}", "cache=no", "list=yes", "--json")
    assert p.returncode == 0, p.stderr
    recs = records(p.stdout)
    assert sorted({r["body"] for r in recs}) == ["Mars", "Moon", "Phobos", "Titan"]
    assert len(recs) == len(ITEMS)
    titan = [r for r in recs if r["body"] == "Titan"][0]
    assert not titan["chosen"] and "no GeoTIFF data asset" in titan["problem"]
    # the search asked for the whole collection, no target filter
    assert "query" not in stac.searches[-1]["body"] and "filter" not in stac.searches[-1]["body"]


def test_list_human_marks_the_chosen_item(stac):
    p = run(f"url={stac.url}", "cache=no", "target=Mars", "list=yes")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "Mars:"
    chosen = [ln for ln in lines if ln.startswith("  * ")]
    assert len(chosen) == 1 and "molaMarsPlanetaryRadius0005" in chosen[0] and "2.0 MB" in chosen[0]
    assert "deprecated" in [ln for ln in lines if "0006" in ln][0]


def test_list_a_body_with_no_items_is_a_note_and_exit_0(stac):
    p = run(f"url={stac.url}", "cache=no", "target=Io", "list=yes")
    assert p.returncode == 0 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [f"shaperesolver: note: no items for Io in isis-global-dtms at {stac.url}"]


def test_list_bodies_of_a_fromlist(stac, make_cube, tmp_path):
    cubes = [make_cube("lro_moon"), make_cube("viking_mars"), make_cube("viking_mars", "second.cub")]
    lst = tmp_path / "cubes.txt"
    lst.write_text("\n".join(map(str, cubes)) + "\n")
    before = [c.read_bytes() for c in cubes]
    p = run(f"url={stac.url}", "cache=no", f"fromlist={lst}", "list=yes", "--json")
    assert p.returncode == 0, p.stderr
    recs = records(p.stdout)
    assert [r["body"] for r in recs] == ["Moon", "Moon", "Mars", "Mars", "Mars"]
    assert [c.read_bytes() for c in cubes] == before  # listing writes nothing


def test_list_from_a_static_catalog(tmp_path):
    cat = tmp_path / "items.json"
    cat.write_text(json.dumps({"type": "FeatureCollection", "features": ITEMS}))
    p = run(f"catalog={cat}", "target=Phobos", "list=yes", "--json")
    assert p.returncode == 0, p.stderr
    assert [r["item_id"] for r in records(p.stdout)] == ["phobos_ernst_0001"]


def test_list_unreachable_server_is_one_line(tmp_path):
    with StacServer([]) as s:
        url = s.url
    p = run(f"url={url}", "cache=no", "target=Mars", "list=yes")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and url.rstrip("/") in p.stderr


def test_api_items(stac, resolver_factory):
    r = resolver_factory(stac.url, cache="no")
    infos = r.items("Moon")
    assert all(isinstance(i, inventory.ItemInfo) for i in infos)
    assert [(i.item_id, i.chosen) for i in infos] == [("ldem_moon_0002", True), ("ldem_moon_0001", False)]
    assert infos[1].record()["size"] == 700_000
    everything = r.items()
    assert {i.body for i in everything} == {"Mars", "Moon", "Phobos", "Titan"}
    assert [i.item_id for i in everything if i.chosen] == [r.web_model(b).item_id for b in ("Mars", "Moon", "Phobos")]
