"""Issue 24, item 4: the mirror's parts, each tested on its own.

* :mod:`shaperesolver.mirror.download`: one file fetched whole from a real server on
  127.0.0.1 (:class:`servers.FileHost`, :class:`servers.RangeServer`): a part is resumed
  only on a 206 that proves the same file, a cut is retried from the bytes held, a slow
  body is cut, the size and ``file:checksum`` bounds hold, and only a checked part is
  renamed into place;
* :mod:`shaperesolver.mirror.layout`: item directories, walked without following a link;
* :mod:`shaperesolver.mirror.document`: the catalog, changed by concurrent processes
  under its lock without losing an entry, replaced atomically, never written through a link;
* :mod:`shaperesolver.mirror.prune`: on a real mirror directory, only strictly older
  versions of the same body and collection go.
"""

import hashlib
import json
import multiprocessing
import os
from pathlib import Path

import pytest
from servers import FileHost, RangeServer, item

from shaperesolver import MirrorError
from shaperesolver.mirror import document, download, layout, prune
from shaperesolver.net.transport import AddressPolicy, Http, HttpSettings

NAME = "dem.tif"
V1 = os.urandom(300_000)
V2 = os.urandom(300_000)  # the file replaced on the server: the same size, other bytes


@pytest.fixture
def host():
    with FileHost() as h:
        h.put(NAME, V1)
        yield h


@pytest.fixture
def http():
    h = Http(HttpSettings(retries=0, backoff=0.05))
    yield h
    h.close()


def _download(http, server, **kw) -> download.Download:
    return download.Download(http, AddressPolicy(server.url("")), kw.pop("max_size", 2**30), **kw)


def _multihash(name: str, data: bytes) -> str:
    """The ``file:checksum`` of ``data`` (a varint code, a varint length, the digest)."""
    code = next(c for c, (n, _) in download.MULTIHASH.items() if n == name)
    digest = next(f for n, f in download.MULTIHASH.values() if n == name)()
    digest.update(data)
    raw = digest.digest()

    def varint(n: int) -> bytes:
        out = b""
        while True:
            byte, n = n & 0x7F, n >> 7
            out += bytes([byte | (0x80 if n else 0)])
            if not n:
                return out

    return (varint(code) + varint(len(raw)) + raw).hex()


def _held_part(tmp_path: Path, url: str, data: bytes, validator: str) -> Path:
    """A part holding the first half of ``data``, recorded as the download of ``url``."""
    part = download.part_of(tmp_path / NAME)
    part.write_bytes(data[: len(data) // 2])
    download.record_of(part).write_text(json.dumps({"href": url, "total": len(data), "validator": validator}))
    return part


# ------------------------------------------------------------ download


def test_a_fresh_download_is_renamed_into_place_whole_once_checked(host, http, tmp_path):
    url = host.url(NAME)
    part = download.part_of(tmp_path / NAME)
    got = _download(http, host).fetch(url, part, len(V1), "Moon dem.tif", None)
    assert (got.size, got.fetched, got.resumed) == (len(V1), len(V1), False)
    assert got.sha256 == hashlib.sha256(V1).hexdigest() and part.read_bytes() == V1
    assert json.loads(download.record_of(part).read_text()) == {"href": url, "total": len(V1),
                                                                "validator": host.etags[NAME]}
    checked = []
    _download(http, host).keep(got, part, NAME, url, None, checked.append)
    assert checked == [part]
    assert (tmp_path / NAME).read_bytes() == V1 and sorted(p.name for p in tmp_path.iterdir()) == [NAME]


@pytest.mark.parametrize("server", ["the same file", "changed, If-Range honoured", "changed, If-Range ignored",
                                    "changed size, If-Range ignored", "a weak validator recorded"])
def test_a_part_is_resumed_only_on_a_206_that_proves_the_same_file(host, http, tmp_path, server):
    """Whatever the server does, the file downloaded is the one it holds now, whole; the
    part is continued only when the answer is a 206 with the recorded validator."""
    url, etag1 = host.url(NAME), host.etags[NAME]
    part = _held_part(tmp_path, url, V1, 'W/"weak"' if server.startswith("a weak") else etag1)
    now = {"changed size, If-Range ignored": V2 + b"more"}.get(server, V2 if server.startswith("changed") else V1)
    host.put(NAME, now)
    host.honour_if_range = "ignored" not in server
    got = _download(http, host).fetch(url, part, None, "Moon dem.tif", None)
    gets = host.gets(NAME)
    assert part.read_bytes() == now and got.sha256 == hashlib.sha256(now).hexdigest() and got.size == len(now)
    if server == "the same file":
        assert got.resumed and got.fetched == len(V1) - len(V1) // 2
        assert [(g["range"], g["if_range"]) for g in gets] == [(f"bytes={len(V1) // 2}-", etag1)]
    elif server.startswith("a weak"):  # no proof possible: not even asked
        assert not got.resumed and [(g["range"], g["if_range"]) for g in gets] == [(None, None)]
    else:
        assert not got.resumed and got.fetched == len(now)
        assert (gets[0]["range"], gets[0]["if_range"]) == (f"bytes={len(V1) // 2}-", etag1)
        # a 200 carries the new file (taken at once); a 206 of another file is refused and asked for again
        assert [g["range"] for g in gets[1:]] == ([] if host.honour_if_range else [None])


def test_a_cut_download_is_retried_from_the_bytes_it_has(host, http, tmp_path):
    url = host.url(NAME)
    host.cut[NAME] = len(V1) // 3
    host.after_cut[NAME] = host.cut.clear
    part = download.part_of(tmp_path / NAME)
    got = _download(http, host, retries=1).fetch(url, part, len(V1), "Moon dem.tif", None)
    assert part.read_bytes() == V1 and got.sha256 == hashlib.sha256(V1).hexdigest()
    assert got.fetched == len(V1) and not got.resumed  # resumed: continued a part an earlier run left
    assert [(g["range"], g["if_range"]) for g in host.gets(NAME)] == [
        (None, None), (f"bytes={len(V1) // 3}-", host.etags[NAME])]


def test_a_cut_with_no_retry_left_keeps_the_part_for_the_next_run(host, http, tmp_path):
    url = host.url(NAME)
    host.cut[NAME] = len(V1) // 3
    part = download.part_of(tmp_path / NAME)
    with pytest.raises(MirrorError, match=rf"body ended early.* at {len(V1) // 3} of {len(V1)} bytes; gave up after 1"):
        _download(http, host, retries=0).fetch(url, part, None, "Moon dem.tif", None)
    assert part.read_bytes() == V1[: len(V1) // 3]
    host.cut.clear()
    got = _download(http, host).fetch(url, part, None, "Moon dem.tif", None)  # the next run
    assert got.resumed and got.fetched == len(V1) - len(V1) // 3 and part.read_bytes() == V1


def test_a_body_slower_than_the_low_speed_limit_is_cut(http, tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / NAME).write_bytes(V1)
    part = download.part_of(tmp_path / NAME)
    with RangeServer(www, rate=4000) as slow:
        dl = _download(http, slow, retries=0, min_rate=10**6, slow_time=0.2)
        with pytest.raises(MirrorError, match=r"slower than 1000000 bytes/s for 0.2 s.* gave up after 1 attempts"):
            dl.fetch(slow.url(NAME), part, None, "Moon dem.tif", None)
    assert 0 < part.stat().st_size < len(V1) and V1.startswith(part.read_bytes())  # kept to resume


@pytest.mark.parametrize("bound", ["max_size", "the catalog's file:size"])
def test_a_file_larger_than_allowed_or_announced_is_not_downloaded(host, http, tmp_path, bound):
    part = download.part_of(tmp_path / NAME)
    dl = _download(http, host, max_size=1000 if bound == "max_size" else 2**30)
    want = "more than the 1000-byte limit" if bound == "max_size" else f"announces {len(V1)} bytes, the catalog 1000"
    with pytest.raises(MirrorError, match=want):
        dl.fetch(host.url(NAME), part, None if bound == "max_size" else 1000, "Moon dem.tif", None)
    assert not part.exists()


@pytest.mark.parametrize("kind", ["sha1", "sha2-384", "sha3-256", "md5", "blake2b-256", "blake2b-512"])
def test_the_source_checksum_of_each_kind_is_compared(host, http, tmp_path, kind):
    """The right multihash is accepted and the file kept; one wrong byte of it refuses the file
    and removes the part and its record."""
    url = host.url(NAME)
    right = _multihash(kind, V1)
    for checksum, kept in ((right[:-1] + ("0" if right[-1] != "0" else "1"), False), (right, True)):
        parsed = download.source_checksum(checksum, url)
        assert parsed is not None and parsed.name == kind
        part = download.part_of(tmp_path / NAME)
        dl = _download(http, host)
        got = dl.fetch(url, part, None, "Moon dem.tif", parsed)
        if kept:
            dl.keep(got, part, NAME, url, parsed, lambda p: None)
        else:
            with pytest.raises(MirrorError, match=f"its {kind} is .* not kept"):
                dl.keep(got, part, NAME, url, parsed, lambda p: None)
        assert sorted(p.name for p in tmp_path.iterdir()) == ([NAME] if kept else [])


@pytest.mark.parametrize("value", ["5620" + "ab" * 32, "1240" + "ab" * 64, "12" + "ab" * 32, "sha256:abcd", 1220])
def test_a_checksum_that_cannot_be_compared_is_noted_and_not_compared(value, caplog):
    """An unknown code (0x56), a digest longer than its hash's, a length that is not the
    digest's, no hex string: noted in the log, not compared."""
    assert download.source_checksum(value, "http://127.0.0.1/dem.tif") is None
    assert [r.getMessage() for r in caplog.records if "not compared" in r.getMessage()]


def test_a_part_refused_by_the_callers_check_is_removed(host, http, tmp_path):
    url = host.url(NAME)
    part = download.part_of(tmp_path / NAME)
    dl = _download(http, host)
    got = dl.fetch(url, part, None, "Moon dem.tif", None)

    def gdal_says_no(p: Path) -> None:
        raise MirrorError(f"{url}: downloaded, but not a usable model")

    with pytest.raises(MirrorError, match="not a usable model"):
        dl.keep(got, part, NAME, url, None, gdal_says_no)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------ layout


def test_item_directories_of_bodies_and_collections_never_meet():
    keys = [layout.Key("Tempel 1", None, "dem1"), layout.Key("Tempel_1", None, "dem1"),
            layout.Key("Tempel 1", "c", "dem1"), layout.Key("Moon", "c", "dem1")]
    dirs = [k.parts for k in keys]
    assert len(set(dirs)) == 4 and all(layout.plain(p) or p == "_" for d in dirs for p in d)
    assert dirs[1] == ("Tempel_1", "_", "dem1") and dirs[3] == ("Moon", "c", "dem1")
    for parts in (*dirs, ("dem1",)):
        assert layout.item_parts(layout.item_href(parts)) == parts
    for href in ("../x/x.json", "./a/../x/x.json", "./.shaperesolver/c/x/x.json", "./Moon/c/x/y.json", "/x/x.json"):
        assert layout.item_parts(href) is None


def test_directories_are_walked_without_following_a_planted_link(tmp_path):
    top, victim = tmp_path / "m", tmp_path / "victim"
    top.mkdir()
    victim.mkdir()
    with layout.pinned(top, ("Moon", "c", "dem1"), create=True) as where:
        (where / "f").write_text("x")
    assert (top / "Moon" / "c" / "dem1" / "f").read_text() == "x"
    os.rename(top / "Moon", tmp_path / "moved")
    os.symlink(victim, top / "Moon")
    with pytest.raises(MirrorError, match="link or a file; refusing"):
        with layout.pinned(top, ("Moon", "c", "dem1"), create=True):
            pass
    os.symlink(victim, tmp_path / "moved" / "c" / "dem2")  # a link in place of an item directory
    (victim / "precious").write_text("keep")
    with pytest.raises(MirrorError, match="link or a file"):
        layout.remove_item_dir(tmp_path, ("moved", "c", "dem2"))
    assert list(victim.iterdir()) == [victim / "precious"]


# ------------------------------------------------------------ the catalog document


def _add(mirror: Path, key: layout.Key, data: bytes = b"dem", version: str = "0001", name: str = "dem.tif") -> None:
    """Put ``data`` in ``key``'s directory and its item in the catalog, as a download does."""
    doc = document.Document(mirror)
    doc.prepare()
    src = item(key.item_id, [key.body], version, href=f"http://127.0.0.1:9/{name}")
    src["collection"] = key.collection
    with layout.pinned(mirror, key.parts, create=True) as where:
        (where / name).write_bytes(data)
        doc.add(key, where, document.item_document(key, src, "image", name, len(data),
                                                   hashlib.sha256(data).hexdigest(), src["assets"]["image"]["href"], None))


def _adder(mirror: Path, worker: int) -> None:
    for i in range(10):
        _add(mirror, layout.Key("Moon", "c", f"w{worker}i{i}"))


def test_concurrent_processes_lose_no_catalog_entry(tmp_path):
    fork = multiprocessing.get_context("fork")
    workers = [fork.Process(target=_adder, args=(tmp_path, w)) for w in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    cat = json.loads((tmp_path / "catalog.json").read_text())
    hrefs = sorted(ln["href"] for ln in cat["links"] if ln["rel"] == "item")
    assert hrefs == sorted(f"./Moon/c/w{w}i{i}/w{w}i{i}.json" for w in range(6) for i in range(10))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".shaperesolver", "Moon", "catalog.json"]  # no temp file


def test_the_catalog_is_replaced_whole_never_rewritten_in_place(tmp_path):
    """A reader that opened the catalog before a change keeps reading the old one, whole."""
    _add(tmp_path, layout.Key("Moon", "c", "dem1"))
    before = (tmp_path / "catalog.json").read_bytes()
    with open(tmp_path / "catalog.json", "rb") as reader:
        _add(tmp_path, layout.Key("Mars", "c", "dem1"))
        assert reader.read() == before
    assert "./Mars/c/dem1/dem1.json" in (tmp_path / "catalog.json").read_text()
    assert json.loads(before)["links"][-1]["href"] == "./Moon/c/dem1/dem1.json"


def test_a_catalog_planted_as_a_link_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "victim.json"
    victim.write_text(json.dumps({"type": "Catalog", "links": []}))
    mirror = tmp_path / "m"
    mirror.mkdir()
    os.symlink(victim, mirror / "catalog.json")
    with pytest.raises(MirrorError, match="catalog"):
        _add(mirror, layout.Key("Moon", "c", "dem1"))
    assert json.loads(victim.read_text()) == {"type": "Catalog", "links": []}
    assert document.Document(mirror).entry(layout.Key("Moon", "c", "dem1"), "dem.tif", None) is None


def test_an_entry_is_present_only_when_its_file_is_whole_and_the_source_unchanged(tmp_path):
    key = layout.Key("Moon", "c", "dem1")
    _add(tmp_path, key, b"x" * 100)
    doc = document.Document(tmp_path)
    path = tmp_path / "Moon" / "c" / "dem1" / "dem.tif"
    assert doc.entry(key, "dem.tif", None) == (path, 100, hashlib.sha256(b"x" * 100).hexdigest())
    assert doc.entry(key, "dem.tif", "1220" + hashlib.sha256(b"x" * 100).hexdigest()) is not None
    assert doc.entry(key, "dem.tif", "1220" + "00" * 32) is None  # the source describes another file now
    assert doc.entry(layout.Key("Mars", "c", "dem1"), "dem.tif", None) is None  # another body's item, same id
    assert doc.entry(layout.Key("Moon", "d", "dem1"), "dem.tif", None) is None  # another collection
    path.write_bytes(b"x" * 50)  # cut short
    assert doc.entry(key, "dem.tif", None) is None


def test_an_item_document_names_its_local_file_and_keeps_the_original(tmp_path):
    key = layout.Key("Moon", "c", "dem1")
    src = item("dem1", ["Moon"], "0001", href="https://dems.example.org/dem.tif")
    src["assets"]["image"]["alternate"] = {"s3": {"href": "s3://x/dem.tif"}}
    doc = document.item_document(key, src, "image", "dem.tif", 5, "ab" * 32, src["assets"]["image"]["href"], "1220" + "cd" * 32)
    assert doc["assets"] == {"image": {"href": "./dem.tif", "type": "image/tiff; application=geotiff", "file:size": 5,
                                       "file:checksum": "1220" + "ab" * 32,
                                       "shaperesolver:original_href": "https://dems.example.org/dem.tif",
                                       "shaperesolver:source_checksum": "1220" + "cd" * 32}}
    assert [ln["href"] for ln in doc["links"]] == ["../../../catalog.json"] * 2
    assert doc["properties"] == src["properties"] and doc["id"] == "dem1"


# ------------------------------------------------------------ prune


def _shelf(mirror: Path) -> dict[str, layout.Key]:
    """A real mirror: the Moon in collection c at versions 9, 0010 (kept below), 11 and one
    that does not compare; the Moon in collection d and Mars at version 1; an old-layout 0008."""
    keys = {"moon9": layout.Key("Moon", "c", "moon9"), "moon10": layout.Key("Moon", "c", "moon10"),
            "moon11": layout.Key("Moon", "c", "moon11"), "moonbeta": layout.Key("Moon", "c", "moonbeta"),
            "moonD": layout.Key("Moon", "d", "moonD"), "mars": layout.Key("Mars", "c", "mars")}
    versions = {"moon9": "9", "moon10": "0010", "moon11": "11", "moonbeta": "beta", "moonD": "1", "mars": "1"}
    for name, key in keys.items():
        _add(mirror, key, version=versions[name])
    legacy = mirror / "moon8"
    legacy.mkdir()
    src = item("moon8", ["Moon"], "0008")
    src["collection"] = "c"
    (legacy / "moon8.json").write_text(json.dumps(src))
    (legacy / "dem.tif").write_bytes(b"dem")
    cat = json.loads((mirror / "catalog.json").read_text())
    cat["links"].append({"rel": "item", "href": "./moon8/moon8.json"})
    (mirror / "catalog.json").write_text(json.dumps(cat))
    return keys


@pytest.mark.parametrize("kept", ["moon10", "moon9"])
def test_prune_removes_only_strictly_older_items_of_the_same_body_and_collection(tmp_path, kept):
    """Keeping 0010 removes 9 and 0008 (digit strings compared as numbers); keeping a pinned
    9 removes 0008 only: 0010 and 11 are newer."""
    keys = _shelf(tmp_path)
    doc = document.Document(tmp_path)
    kept_item = doc.read_item(keys[kept].parts)
    gone = prune.prune(doc, keys[kept], keys[kept].parts, kept_item)
    assert gone == (["moon9", "moon8"] if kept == "moon10" else ["moon8"])
    cat = (tmp_path / "catalog.json").read_text()
    for name, key in keys.items():
        assert (tmp_path.joinpath(*key.parts) / "dem.tif").exists() == (name not in gone)
        assert (f"/{name}/{name}.json" in cat) == (name not in gone)
    assert not (tmp_path / "moon8").exists() and "moon8" not in cat


def test_prune_keeps_an_item_whose_directory_is_a_planted_link(tmp_path):
    keys = _shelf(tmp_path)
    victim = tmp_path / "victim"
    os.rename(tmp_path.joinpath(*keys["moon9"].parts), victim)
    os.symlink(victim, tmp_path.joinpath(*keys["moon9"].parts))
    doc = document.Document(tmp_path)
    assert prune.prune(doc, keys["moon10"], keys["moon10"].parts, doc.read_item(keys["moon10"].parts)) == ["moon8"]
    assert sorted(p.name for p in victim.iterdir()) == ["dem.tif", "moon9.json"]
    assert "./Moon/c/moon9/moon9.json" in (tmp_path / "catalog.json").read_text()
