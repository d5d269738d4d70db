"""Integration: a real stac-fastapi-pgstac on loopback; the resolver finds the highest
version there through the CQL2 filter path (pgstac rejects the query extension).

Run only this part with ``bash .ci/dev test -k pgstac``.
"""

import os

import pgstac_server
import pytest
from servers import item

from shaperesolver import HttpSettings, Resolver

COLLECTION = {
    "type": "Collection", "stac_version": "1.0.0", "id": "isis-global-dtms", "description": "test DTMs",
    "license": "proprietary", "links": [],
    "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [["2020-01-01T00:00:00Z", None]]}},
}


def _item(item_id, targets, version, dt, **kw):
    it = item(item_id, targets, version, dt, **kw)
    it["geometry"] = {"type": "Polygon", "coordinates": [[[-180, -90], [180, -90], [180, 90], [-180, 90], [-180, -90]]]}
    it["bbox"] = [-180, -90, 180, 90]
    return it


ITEMS = [
    _item("molaMarsPlanetaryRadius0004", ["Mars"], "0004", "2026-03-01T00:00:00Z"),  # newest datetime
    _item("molaMarsPlanetaryRadius0010", ["Mars"], "0010", "2025-06-01T00:00:00Z"),  # highest version
    _item("molaMarsPlanetaryRadius0005", ["Mars"], "0005", "2026-01-12T00:00:00Z"),
    _item("ldem0002", ["Moon"], "0002", "2025-01-01T00:00:00Z"),
    _item("pluto0001", ["Pluto", "Charon"], "0001", "2025-01-01T00:00:00Z"),
]


@pytest.fixture(scope="module")
def pgstac():
    why = pgstac_server.missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the pgstac integration test: {why}")
        pytest.skip(why)
    server = pgstac_server.PgStac()
    try:
        yield server.start(COLLECTION, ITEMS)
    finally:
        server.stop()


def test_highest_version_through_cql2(pgstac, tmp_path, make_cube):
    r = Resolver(url=pgstac.url, cache_dir=tmp_path / "cache", verify=False, http=HttpSettings(retries=1))
    res = r.resolve(make_cube("viking_mars"))  # TargetName = MARS
    assert (res.source, res.item_id, res.version) == ("web", "molaMarsPlanetaryRadius0010", "0010")
    assert r.requests_sent == 2  # query rejected with 400, then the CQL2 filter
    assert r.resolve(target="Moon").item_id == "ldem0002"
    assert r.requests_sent == 3  # remembered: straight to the filter
    assert r.resolve(target="CHARON").item_id == "pluto0001"
    assert r.resolve(target="Mars", version="5").item_id == "molaMarsPlanetaryRadius0005"


def test_no_match_falls_back(pgstac, tmp_path):
    dems = tmp_path / "isisdata" / "base" / "dems"
    dems.mkdir(parents=True)
    (dems / "kernels.0001.db").write_text("Object = Dem\nEndObject\n")
    r = Resolver(url=pgstac.url, cache="no", verify=False, isisdata=tmp_path / "isisdata")
    res = r.resolve(target="Europa")
    assert res.source == "ellipsoid" and "no web shape model for Europa" in res.fallback_reasons[0]
