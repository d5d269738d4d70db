"""shape=web against a stac-server look-alike on 127.0.0.1: protocol, choice, faults, cache."""

import json
import time

import pytest
from servers import StacServer, item

from shaperesolver import HttpSettings, Resolver, errors
from shaperesolver.catalog.choice import choose_asset
from shaperesolver.catalog.stac import search_url
from shaperesolver.policy.resolver import ResolutionError

FAST = HttpSettings(connect_timeout=2, read_timeout=2, retries=2, backoff=0.01, max_retry_after=5)

MARS = [
    # the trap: the newest datetime is not the highest version
    item("molaMarsPlanetaryRadius0004", ["Mars"], "0004", "2026-03-01T00:00:00Z"),
    item("molaMarsPlanetaryRadius0010", ["Mars"], "0010", "2025-06-01T00:00:00Z"),
    item("molaMarsPlanetaryRadius0005", ["Mars"], "0005", "2026-01-12T19:45:38Z"),
    item("molaMarsPlanetaryRadius0009", ["Mars"], "0009", "2024-01-01T00:00:00Z"),
]
MOON = [item("ldem_moon_0002", ["Moon"], "2"), item("ldem_moon_0011", ["Moon"], "11"), item("ldem_moon_0003", ["Moon"], "3")]


def test_search_url_has_exactly_one_slash():
    assert search_url("http://h/api") == "http://h/api/search"
    assert search_url("http://h/api/") == "http://h/api/search"
    assert search_url("http://h/api//") == "http://h/api/search"


@pytest.mark.parametrize("prefix", ["/", "/api/isis-stac/"])
def test_highest_version_wins_not_newest_datetime(make_cube, resolver_factory, prefix):
    with StacServer(MARS + MOON, prefix=prefix) as srv:
        url = srv.url if prefix == "/" else srv.url.rstrip("/")  # with and without trailing slash
        r = resolver_factory(url)
        res = r.resolve(make_cube("viking_mars"))
        assert (res.source, res.item_id, res.version) == ("web", "molaMarsPlanetaryRadius0010", "0010")
        assert res.shape_model == "/vsicurl/https://dems.example.org/molaMarsPlanetaryRadius0010.tiff"
        assert res.body == "Mars" and res.target == "MARS"
        [req] = srv.searches
        assert req["path"] == prefix.rstrip("/") + "/search"
        body = req["body"]
        assert body["query"] == {"ssys:targets": {"in": ["Mars", "MARS"]}}
        assert body["sortby"] == [{"field": "properties.version", "direction": "desc"}]
        assert body["collections"] == ["isis-global-dtms"] and body["limit"] >= 100
        assert req["headers"]["User-Agent"].startswith("shaperesolver/")


def test_numeric_versions_beat_lexicographic_order(resolver_factory):
    with StacServer(MOON) as srv:
        res = resolver_factory(srv.url).resolve(target="MOON")
        assert res.version == "11" and res.item_id == "ldem_moon_0011"


def test_version_from_item_id_when_missing():
    from shaperesolver.catalog.choice import choose_item
    items = [item("dem0003", ["Io"]), item("dem0012", ["Io"]), item("dem0007", ["Io"], "x")]
    assert choose_item(items, ["Io"], None, "here", False).item_id == "dem0012"


def test_one_search_per_body_per_run(make_cube, resolver_factory):
    with StacServer(MARS + MOON) as srv:
        r = resolver_factory(srv.url, cache="no")
        for name in ("viking_mars", "ctx_mars", "lro_moon"):
            r.resolve(make_cube(name))
        r.resolve(target="mars")
        assert len(srv.searches) == 2 and r.requests_sent == 2


def test_pagination_follows_next_on_another_host_and_stops_by_matched(resolver_factory, monkeypatch):
    import shaperesolver.catalog.stac as stac
    monkeypatch.setattr(stac, "PAGE_SIZE", 2)
    many = [item(f"dem{v:04d}", ["Ceres"], f"{v:04d}", f"2026-01-{v:02d}T00:00:00Z") for v in range(1, 6)]
    with StacServer(many, next_host="localhost") as srv:
        res = resolver_factory(srv.url, cache="no").resolve(target="CERES")
        assert res.version == "0005"
        paths = [r["path"] for r in srv.searches]
        assert paths == ["/search", "/gateway/prod/search", "/gateway/prod/search"]  # 5 items: 3 pages, no empty 4th
        assert srv.searches[1]["headers"]["Host"].startswith("localhost")


def test_deprecated_skipped_unless_pinned(resolver_factory):
    items = [item("d1", ["Vesta"], "1"), item("d2", ["Vesta"], "2", deprecated=True)]
    with StacServer(items) as srv:
        r = resolver_factory(srv.url, cache="no")
        assert r.resolve(target="Vesta").version == "1"
        assert r.resolve(target="Vesta", version="2").version == "2"


def test_pinned_version_numeric_match_and_missing_pin_is_an_error(resolver_factory, isisdata):
    with StacServer(MARS) as srv:
        r = resolver_factory(srv.url, cache="no", isisdata=isisdata)
        assert r.resolve(target="Mars", version="5").version == "0005"
        with pytest.raises(errors.VersionNotFoundError) as info:
            r.resolve(target="Mars", version="7")
        assert "0010" in str(info.value)


def test_unknown_name_is_queried_as_written(resolver_factory, isisdata):
    with StacServer(MARS) as srv:
        res = resolver_factory(srv.url, isisdata=isisdata).resolve(target="Planet X")
        assert srv.searches[0]["body"]["query"]["ssys:targets"]["in"] == ["Planet X"]
        assert res.source == "ellipsoid" and "no web shape model" in res.fallback_reasons[0]


def test_cql2_filter_when_query_is_rejected_and_remembered(resolver_factory, tmp_path):
    with StacServer(MARS + MOON + [item("europa1", ["Europa"], "1")], pgstac=True) as srv:
        r = resolver_factory(srv.url)
        assert r.resolve(target="Mars").version == "0010"
        assert [("query" in s["body"], "filter" in s["body"]) for s in srv.searches] == [(True, False), (False, True)]
        assert srv.searches[1]["body"]["filter"] == {"op": "a_overlaps", "args": [{"property": "ssys:targets"}, ["Mars"]]}
        r.resolve(target="Moon")  # same run: straight to the filter
        assert "filter" in srv.searches[2]["body"] and len(srv.searches) == 3
        r2 = resolver_factory(srv.url)  # a later run, sharing the cache directory
        r2.resolve(target="Europa")
        assert "filter" in srv.searches[3]["body"] and len(srv.searches) == 4


# ---------------------------------------------------------------- assets


def _asset_item(assets):
    return {"id": "it", "assets": assets}


def test_asset_choice_order():
    tif = "image/tiff; application=geotiff"
    assert choose_asset(_asset_item({"data": {"href": "https://x/a.tiff", "type": tif}}))[0] == "data"
    assert choose_asset(_asset_item({"thumbnail": {"href": "https://x/t.png", "type": "image/png", "roles": ["thumbnail"]},
                                     "image": {"href": "https://x/a.tiff", "type": tif}}))[0] == "image"
    assert choose_asset(_asset_item({"zz": {"href": "https://x/b", "type": tif, "roles": ["data"]},
                                     "image": {"href": "https://x/a.tiff", "type": tif}}))[0] == "zz"
    assert choose_asset(_asset_item({"meta": {"href": "https://x/m.xml", "type": "application/xml"},
                                     "dem": {"href": "https://x/dem.TIF"}}))[0] == "dem"


@pytest.mark.parametrize("href,why", [
    ("ftp://dems.example.org/a.tiff", "absolute https"),
    ("https://dems.example.org/a\n.tiff", "control characters"),
    ("https://dems.example.org/a b.tiff", "whitespace"),
    ('https://dems.example.org/a".tiff', "quotes"),
    ("dems/a.tiff", "absolute https"),
    ("http://dems.example.org/a.tiff", "absolute https"),
])
def test_bad_hrefs_are_refused_and_fail_the_cube(resolver_factory, isisdata, href, why):
    """A refused href is a malformed answer: no answer, so the cube fails (issue 15)."""
    with StacServer([item("bad", ["Mars"], "1", href=href)]) as srv:
        r = resolver_factory(srv.url.replace("http://", "http://"), isisdata=isisdata)
        r._client.allow_http = False  # the server is plain http on loopback; behave as an https catalog
        with pytest.raises(errors.NoAnswerError) as info:
            r.resolve(target="Mars")
        assert "bad" in str(info.value) and why in str(info.value)


def test_http_href_allowed_from_a_plain_http_catalog(resolver_factory):
    with StacServer([item("plain", ["Mars"], "1", href="http://dems.example.org/a.tiff")]) as srv:
        res = resolver_factory(srv.url).resolve(target="Mars")
        assert res.shape_model == "/vsicurl/http://dems.example.org/a.tiff"


# ---------------------------------------------------------------- faults


def _fallback(resolver_factory, isisdata, srv, **kw):
    """(the Resolution, or the NoAnswerError that fails the cube; seconds taken)."""
    r = resolver_factory(srv.url, isisdata=isisdata, cache="no", **kw)
    t0 = time.monotonic()
    try:
        res = r.resolve(target="Mars")
    except errors.NoAnswerError as exc:
        res = exc
    return res, time.monotonic() - t0


@pytest.mark.parametrize("fault,words", [
    (dict(status=500, body={"code": "InternalServerError", "description": "boom"}, times=1), "HTTP 500: InternalServerError: boom"),
    (dict(status=200, body=b"{not json", times=1), "not JSON"),
    (dict(status=502, body=b"<html><body>Bad gateway</body></html>", headers={"Content-Type": "text/html"}, times=3), "HTML page"),
    (dict(status=200, body={"type": "FeatureCollection"}, times=1), "no 'features' list"),
    (dict(status=200, body={"type": "FeatureCollection", "features": [{"id": "x", "properties": {"ssys:targets": ["Mars"]}}]}, times=1), "item x has no assets"),
    (dict(status=404, body={"message": "Not Found"}, times=1), "HTTP 404"),
])
def test_faults_fail_the_cube_or_fall_back_with_always(resolver_factory, isisdata, fault, words):
    with StacServer(MARS) as srv:
        srv.fault(**fault)
        err, _ = _fallback(resolver_factory, isisdata, srv)
        assert isinstance(err, errors.NoAnswerError) and words in str(err) and srv.url in str(err), err
        srv.fault(**fault)
        res, _ = _fallback(resolver_factory, isisdata, srv, fallback="always")
        assert res.source == "system" and res.shape_model == "$base/dems/molaMarsPlanetaryRadius0004.cub"
        assert words in res.fallback_reasons[0], res.fallback_reasons


def test_503_then_success(resolver_factory, isisdata):
    with StacServer(MARS) as srv:
        srv.fault(status=503, body={"message": "Service Unavailable"})
        res, _ = _fallback(resolver_factory, isisdata, srv)
        assert res.source == "web" and len(srv.searches) == 2


def test_429_honours_retry_after(resolver_factory, isisdata):
    with StacServer(MARS) as srv:
        srv.fault(status=429, body={"message": "Too Many Requests"}, headers={"Retry-After": "1"})
        res, took = _fallback(resolver_factory, isisdata, srv)
        assert res.source == "web" and took >= 1.0 and len(srv.searches) == 2


def test_server_that_never_answers_times_out(resolver_factory, isisdata):
    with StacServer(MARS) as srv:
        srv.fault(delay=3, times=5)
        err, took = _fallback(resolver_factory, isisdata, srv,
                              http=HttpSettings(connect_timeout=1, read_timeout=0.5, retries=1, backoff=0.01))
        assert isinstance(err, errors.NoAnswerError) and "timed out" in str(err) and took < 3


def test_connection_refused(resolver_factory, isisdata):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = resolver_factory(f"http://127.0.0.1:{port}/", isisdata=isisdata, cache="no")
    with pytest.raises(errors.NoAnswerError, match=f"127.0.0.1:{port}/search: cannot connect"):
        r.resolve(target="Mars")
    assert r.requests_sent == 1 + FAST.retries


def test_fifty_megabyte_body_is_capped(resolver_factory, isisdata):
    with StacServer(MARS) as srv:
        srv.fault(status=200, body=b"[" + b" " * (50 * 2**20) + b"]")
        err, _ = _fallback(resolver_factory, isisdata, srv)
        assert isinstance(err, errors.NoAnswerError) and "limit" in str(err)


def test_web_fails_and_no_data_area_fails_the_cube_with_both_reasons(resolver_factory, make_cube, tmp_path, monkeypatch):
    monkeypatch.delenv("ISISDATA", raising=False)
    with StacServer(MARS) as srv:
        srv.fault(status=500, body={"code": "InternalServerError", "description": "boom"}, times=5)
        r = resolver_factory(srv.url, cache="no", fallback="always")
        with pytest.raises(ResolutionError) as info:
            r.resolve(make_cube("viking_mars"))
        assert len(info.value.reasons) == 2 and "HTTP 500" in info.value.reasons[0] and "ISISDATA" in info.value.reasons[1]


def test_url_that_is_not_a_url_is_a_usage_error():
    with pytest.raises(errors.UsageError):
        Resolver(url="not a url")
    with pytest.raises(errors.UsageError):
        Resolver(url="ftp://example.org/")


# ---------------------------------------------------------------- cache


def test_warm_cache_sends_nothing_and_mars_spellings_share_an_entry(resolver_factory):
    with StacServer(MARS) as srv:
        resolver_factory(srv.url).resolve(target="MARS")
        assert len(srv.searches) == 1
        res = resolver_factory(srv.url).resolve(target="Mars")
        assert len(srv.searches) == 1 and res.version == "0010"


def test_stale_cache_used_when_api_down(resolver_factory, caplog, isisdata):
    with StacServer(MARS) as srv:
        resolver_factory(srv.url).resolve(target="Mars")
        srv.fault(status=503, body={"message": "down"}, times=10)
        res = resolver_factory(srv.url, cache_ttl=0.0, isisdata=isisdata).resolve(target="Mars")
        assert res.source == "web" and res.version == "0010"
        assert any("cached result" in m and " s old" in m for m in caplog.messages)


def test_refresh_skips_fresh_entries_but_keeps_stale_fallback(resolver_factory, isisdata):
    with StacServer(MARS) as srv:
        resolver_factory(srv.url).resolve(target="Mars")
        resolver_factory(srv.url, cache="refresh").resolve(target="Mars")
        assert len(srv.searches) == 2
        srv.fault(status=503, body={"message": "down"}, times=10)
        res = resolver_factory(srv.url, cache="refresh", isisdata=isisdata).resolve(target="Mars")
        assert res.source == "web"


def test_cache_no_neither_reads_nor_writes(resolver_factory, tmp_path):
    with StacServer(MARS) as srv:
        resolver_factory(srv.url, cache="no").resolve(target="Mars")
        resolver_factory(srv.url, cache="no").resolve(target="Mars")
        assert len(srv.searches) == 2
        assert not (tmp_path / "cache").exists()


def test_corrupt_cache_file_is_ignored_and_replaced(resolver_factory, tmp_path):
    with StacServer(MARS) as srv:
        resolver_factory(srv.url).resolve(target="Mars")
        files = [p for p in (tmp_path / "cache").iterdir() if p.suffix == ".json"]
        for p in files:
            p.write_text("{corrupt")
        assert resolver_factory(srv.url).resolve(target="Mars").version == "0010"
        assert len(srv.searches) == 2
        assert all(json.loads(p.read_text()) for p in files if p.exists())


def test_cache_dir_from_environment_at_call_time(monkeypatch, tmp_path):
    from shaperesolver.catalog.cache import default_cache_dir
    monkeypatch.setenv("SHAPERESOLVER_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("SHAPERESOLVER_CACHE_DIR")
    assert default_cache_dir() != tmp_path / "elsewhere"


def test_two_processes_share_the_cache(tmp_path):
    import subprocess
    import sys
    code = ("import sys; from shaperesolver import Resolver, HttpSettings;"
            "r = Resolver(url=sys.argv[1], cache_dir=sys.argv[2], verify=False);"
            "print(r.resolve(target='Mars').version, r.requests_sent)")
    with StacServer(MARS) as srv:
        procs = [subprocess.run([sys.executable, "-c", code, srv.url, str(tmp_path / "c")], capture_output=True, text=True)
                 for _ in range(2)]
        assert [p.stdout.split() for p in procs] == [["0010", "1"], ["0010", "0"]]


def test_threads_share_one_resolver(resolver_factory):
    from concurrent.futures import ThreadPoolExecutor
    with StacServer(MARS + MOON) as srv:
        r = resolver_factory(srv.url, cache="no")
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda t: r.resolve(target=t).version, ["Mars", "MARS", "Moon", "MOON"] * 10))
        assert set(got) == {"0010", "11"} and len(srv.searches) == 2


def test_static_catalog_by_url_follows_child_and_item_links(tmp_path):
    import shutil
    from pathlib import Path

    from servers import RangeServer
    src = Path(__file__).resolve().parent.parent / "data" / "catalog"
    shutil.copytree(src, tmp_path / "www")
    with RangeServer(tmp_path / "www") as files:
        r = Resolver(catalog=files.url("catalog.json"), verify=False, cache="no", http=FAST)
        res = r.resolve(target="mars")
        assert (res.item_id, res.version, res.body) == ("molaMarsPlanetaryRadius0005", "0005", "Mars")
        assert res.shape_model.endswith("isis-dtm-collection/molaMarsPlanetaryRadius0005.tiff")
        assert [q["path"] for q in files.requests] == [
            "/catalog.json", "/isis-global-dtms/collection.json", "/isis-global-dtms/molaMarsPlanetaryRadius0005.json"]
        r.resolve(target="Moon", shape="ellipsoid")
        with pytest.raises(errors.VersionNotFoundError):
            r.resolve(target="Mars", version="4")
        assert len(files.requests) == 3  # the catalog is walked once per resolver
