"""Issue 22, item 2: mutated STAC answers never end in an unexpected error (hypothesis).

A well-formed two-page search answer (and a static catalog on disk) is mutated the
ways a careless or hostile server could: any field's value swapped for another JSON
type, huge or negative numbers, NaN, odd strings (lone surrogates, non-ASCII, URLs that
do not parse, private addresses, paths), fields removed or added, values wrapped in a
list or an object, links that are not objects, ``next`` links of the wrong shape, a
page that is not an object, another status.  One real HTTP server on 127.0.0.1 answers
whatever the current example set.  The outcome must always be exactly one of:

* a model (the cube's label then holds it),
* a fallback with its reason (SYSTEM or the ellipsoid),
* a :class:`NoAnswerError` on one line, the cube byte for byte untouched (never under
  ``fallback=always``),

and ``list=yes`` always lists (every item with a well-typed record, the malformed ones
with their problem) or says in one line that the catalog could not be read.

Budget: the ``ci`` profile of ``tests/conftest.py`` (fixed examples, derandomized, no
deadline); about 200 examples through the API, fewer through ``list=`` and ``catalog=``.
A guard (an audit hook, active only here) refuses any name lookup or connection beyond
loopback, so a mutated link can never leave the machine.
"""

from __future__ import annotations

import contextlib
import copy
import io
import ipaddress
import json
import sys
import tempfile
import threading

import cubes
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from servers import AnswerServer, item
from test_outcomes import make

from shaperesolver import HttpSettings, NoAnswerError, Resolver, read_label
from shaperesolver.catalog import stacdoc
from shaperesolver.catalog.choice import Choice, choose_item
from shaperesolver.cli.modes import _list
from shaperesolver.errors import CatalogError
from shaperesolver.policy import inventory
from shaperesolver.policy.inventory import ItemInfo

HTTP = HttpSettings(retries=0, connect_timeout=2, read_timeout=5, deadline=20)
BODIES = {"Moon": "MOON", "Titan": "Titan", "Io": "IO"}

# ---------------------------------------------------------------- nothing leaves loopback

_GUARD = threading.Event()
_LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", b"127.0.0.1", b"localhost", None}


def _audit(event, args):
    if not _GUARD.is_set():
        return
    if event == "socket.getaddrinfo" and args[0] not in _LOOPBACK_NAMES:
        raise OSError(f"test guard: no lookup of {args[0]!r}")
    if event == "socket.connect" and isinstance(args[1], tuple):
        try:
            loopback = ipaddress.ip_address(str(args[1][0]).split("%")[0]).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise OSError(f"test guard: refusing to connect to {args[1][0]}")


sys.addaudithook(_audit)


@pytest.fixture(scope="module", autouse=True)
def guard():
    _GUARD.set()
    yield
    _GUARD.clear()


# ---------------------------------------------------------------- answers and their mutations

ODD_STRINGS = [
    "", " ", "\x00", "\x1b[31m", "\u00b2", "\u0663", "\ud800", "9" * 5000, "-1", "0", "0009", "1e400",
    "Moon", "MOON", "Titan", "IO", "Io", "data", "image", "thumbnail", "overview", "image/tiff; application=geotiff",
    "next", "item", "child", "items", "root", "GET", "POST", "post", "DELETE", "FeatureCollection", "Feature", "Catalog",
    "http://[::1/x", "http://127.0.0.1:99999/", "//[::1", "http://127.0.0.1:0/", "/page2", "page2", "?x=1", "#frag",
    "http://10.0.0.1/search", "https://169.254.169.254/latest/meta-data", "http://unknown.invalid/search",
    "https://dems.example.org/x.tif", "https://dems.example.org/a b.tif", "https://dems.example.org/\u00e9.tif",
    "https://dems.example.org/a\".tif", "http://dems.example.org/x.tiff", "https://user:pw@dems.example.org/x.tif",
    "file:///etc/passwd", "/etc/passwd", "/dev/zero", "../../etc/passwd", "./x.tif", "x.tif", "javascript:alert(1)",
    "2025-01-01T00:00:00Z", "\u202e", "a" * 300,
]
strings = st.sampled_from(ODD_STRINGS) | st.text(max_size=12)
numbers = (st.integers(-(2**70), 2**70) | st.sampled_from([0, -1, 1, 2, 3, 10**300, -(10**300), 2**63])
           | st.floats(allow_nan=True, allow_infinity=True))
scalars = st.none() | st.booleans() | numbers | strings
values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(strings, kids, max_size=3),
                      max_leaves=6)


def search_answers(url: str, body: str) -> dict:
    """A well-formed two-page answer of a stac-server: two items, then a POST next link to one more."""
    def it(version):
        doc = item(f"{body.lower()}_dem_{version}", [body], version)
        doc["assets"]["image"].update({"roles": ["data"], "file:size": 1000})
        doc["assets"]["thumb"] = {"href": "https://dems.example.org/t.png", "type": "image/png", "roles": ["thumbnail"]}
        return doc

    return {
        "/search": {"type": "FeatureCollection", "features": [it("0003"), it("0002")], "numberMatched": 3,
                    "numberReturned": 2, "context": {"matched": 3, "returned": 2, "limit": 2},
                    "links": [{"rel": "root", "href": url},
                              {"rel": "next", "method": "POST", "merge": True, "href": url + "page2",
                               "body": {"next": "2"}}]},
        "/page2": {"type": "FeatureCollection", "features": [it("0004")], "numberMatched": 3,
                   "links": [{"rel": "root", "href": url}]},
    }


def _paths(tree, here=()):
    """Every path into ``tree`` (a place to mutate), the top-level documents included."""
    yield here
    children = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, child in children:
        yield from _paths(child, (*here, key))


def mutate(data, tree: dict) -> dict:
    """``tree`` (path or file name -> document) with one to four mutations drawn from ``data``."""
    tree = copy.deepcopy(tree)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        paths = [p for p in _paths(tree) if p]
        path = data.draw(st.sampled_from(paths), label="at")
        parent = tree
        for key in path[:-1]:
            parent = parent[key]
        key, old = path[-1], parent[path[-1]]
        op = data.draw(st.sampled_from(["replace", "replace", "delete", "extra", "wrap", "nest"]), label="op")
        if op == "delete" and len(path) > 1:
            del parent[key]
        elif op == "extra" and isinstance(old, dict):
            old[data.draw(strings, label="key")] = data.draw(values, label="value")
        elif op == "extra" and isinstance(old, list):
            old.append(data.draw(values, label="value"))
        elif op == "wrap":
            parent[key] = [old]
        elif op == "nest":
            parent[key] = {"value": old}
        else:
            parent[key] = data.draw(values, label="value")
    return tree


def serve(server: AnswerServer, tree: dict, status: int) -> None:
    server.answers = {path: (status if path == "/search" else 200, json.dumps(doc).encode("utf-8", "surrogatepass"))
                      for path, doc in tree.items()}


# ---------------------------------------------------------------- fixtures (one of each for the whole module)


@pytest.fixture(scope="module")
def server():
    with AnswerServer() as s:
        yield s


@pytest.fixture(scope="module")
def area(tmp_path_factory):
    return cubes.data_area(tmp_path_factory.mktemp("isisdata"))


@pytest.fixture(scope="module")
def cubes_by_body(tmp_path_factory):
    d = tmp_path_factory.mktemp("cubes")
    return {body: make(d, f"{body}.cub", target) for body, target in BODIES.items()}


def check_outcome(cube, fallback: str, **source) -> str:
    """Resolve ``cube`` with a fresh Resolver and write what it chose: the outcome's kind."""
    before = cube.read_bytes()
    try:
        with Resolver(cache="no", verify=False, http=HTTP, fallback=fallback, isisdata=source.pop("isisdata"),
                      **source) as r:
            res = r.resolve(cube)
            r.write(res)
    except NoAnswerError as exc:
        assert fallback != "always", exc
        assert cube.read_bytes() == before, "a cube that got no answer was modified"
        assert str(exc).startswith("web search failed: ") and "\n" not in str(exc)
        return "no answer"
    assert read_label(cube).shape_model == res.shape_model
    if res.source == "web":
        assert res.item_id and res.shape_model.startswith(("/vsicurl/http", "/"))
        return "model"
    assert res.source in ("system", "ellipsoid") and res.fallback_reasons, res
    return "fallback"


# ---------------------------------------------------------------- the pure rules, on their own


@given(data=st.data(), pin=st.one_of(st.none(), st.none(), st.sampled_from(["2", "10", "0010"]), strings))
def test_item_rules_on_mutated_items(data, pin):
    """choice and inventory over mutated items (no server): a Choice, None or a CatalogError."""
    tree = mutate(data, {"items": [item("ldem_moon_0002", ["Moon"], "0002"), item("ldem_moon_0010", ["Moon"], 10)]})
    features = tree["items"] if isinstance(tree["items"], list) else [tree["items"]]
    try:
        got = choose_item(features, ["Moon", "MOON"], pin, "here", False)
    except CatalogError as exc:
        event(type(exc).__name__)
    else:
        assert got is None or (isinstance(got, Choice) and got.href.startswith("https://"))
        event("none" if got is None else "choice")
    for entries in inventory.group(features, None).values():
        assert all(isinstance(e, (stacdoc.Item, stacdoc.Unreadable)) for e in entries)


# ---------------------------------------------------------------- the API against a search endpoint


@settings(max_examples=200)
@given(data=st.data(), body=st.sampled_from(sorted(BODIES)), fallback=st.sampled_from(["nomatch", "always"]),
       status=st.sampled_from([200] * 12 + [201, 400, 404, 500]))
def test_mutated_search_answers(server, area, cubes_by_body, data, body, fallback, status):
    serve(server, mutate(data, search_answers(server.url, body)), status)
    event(check_outcome(cubes_by_body[body], fallback, url=server.url, isisdata=area))


def test_the_unmutated_answer_gives_the_newest_model(server, area, cubes_by_body):
    """The suite's base case: both pages are read and the newest item (on page 2) wins."""
    serve(server, search_answers(server.url, "Titan"), 200)
    assert check_outcome(cubes_by_body["Titan"], "nomatch", url=server.url, isisdata=area) == "model"
    assert read_label(cubes_by_body["Titan"]).shape_model.endswith("/titan_dem_0004.tiff")


# ---------------------------------------------------------------- list=yes


def strict_text() -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")


@settings(max_examples=60)
@given(data=st.data(), body=st.sampled_from(sorted(BODIES) + [None]), as_json=st.booleans())
def test_mutated_answers_through_list(server, area, data, body, as_json):
    serve(server, mutate(data, search_answers(server.url, body or "Moon")), 200)
    with Resolver(url=server.url, cache="no", verify=False, http=HTTP, isisdata=area) as r:
        try:
            infos = r.items(body)
        except CatalogError as exc:
            assert "\n" not in str(exc)
        else:
            for info in infos:
                assert isinstance(info, ItemInfo) and isinstance(info.item_id, str) and isinstance(info.chosen, bool)
                assert all(v is None or isinstance(v, str) for v in (info.version, info.datetime, info.href, info.problem))
                assert info.size is None or (isinstance(info.size, int) and info.size >= 0)
                assert not (info.chosen and info.problem)
                json.dumps(info.record())
            assert sum(i.chosen for i in infos) <= (len(BODIES) + 1 if body is None else 1)
        out, err = strict_text(), strict_text()  # as a real stdout: a lone surrogate could not be written
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = _list(r, [body], as_json)
        out.flush(), err.flush()
        assert code in (0, 1)
        event(f"list exit {code}")
        lines = err.buffer.getvalue().decode().splitlines()
        assert all(line.startswith("shaperesolver: ") for line in lines)
        errors = [line for line in lines if not line.startswith("shaperesolver: note: ")]  # (no items: a note)
        assert len(errors) == code and len(lines) <= 1


# ---------------------------------------------------------------- a static catalog on disk


def static_tree(body: str) -> dict:
    def it(version):
        doc = {**item(f"{body.lower()}_dem_{version}", [body], version, href=f"./{version}.tif"), "type": "Feature"}
        doc["links"] = [{"rel": "parent", "href": "./catalog.json"}]
        return doc

    return {"catalog.json": {"type": "Catalog", "id": "dems", "stac_version": "1.0.0", "description": "x",
                             "links": [{"rel": "item", "href": "./a.json"}, {"rel": "child", "href": "./b.json"}]},
            "a.json": it("0002"),
            "b.json": {"type": "FeatureCollection", "features": [it("0003")], "links": []}}


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory):
    return tmp_path_factory.mktemp("catalogs")


@settings(max_examples=60)
@given(data=st.data(), body=st.sampled_from(sorted(BODIES)), fallback=st.sampled_from(["nomatch", "always"]))
def test_mutated_static_catalogs(catalogs, area, cubes_by_body, data, body, fallback):
    where = tempfile.mkdtemp(dir=catalogs)
    for name, doc in mutate(data, static_tree(body)).items():
        with open(f"{where}/{name}", "wb") as f:
            f.write(json.dumps(doc).encode("utf-8", "surrogatepass"))
    for version in ("0002", "0003"):
        open(f"{where}/{version}.tif", "wb").close()
    event(check_outcome(cubes_by_body[body], fallback, catalog=where, isisdata=area))
