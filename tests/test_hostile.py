"""Issue 8: a hostile server, cache, shared directory, catalog, kernel db or list.

Everything here runs against real servers on 127.0.0.1, real FIFOs, symlinks and a
real second uid (a forked child that calls ``os.setuid``).  Traffic to link-local or
private addresses is made impossible by an audit hook (below) that aborts any such
``connect`` before it happens.
"""

import ipaddress
import json
import logging
import os
import socket
import sys
import time

import pytest
from servers import StacServer, item

from shaperesolver import HttpSettings, Resolver
from shaperesolver.catalog.cache import DiskCache
from shaperesolver.catalog.stac import search_url
from shaperesolver.errors import NoAnswerError

FAST = HttpSettings(connect_timeout=2, read_timeout=2, retries=1, backoff=0.01, max_retry_after=5)
MARS = [item("molaMarsPlanetaryRadius0005", ["Mars"], "0005"), item("molaMarsPlanetaryRadius0004", ["Mars"], "0004")]
GOOD = "/vsicurl/https://dems.example.org/molaMarsPlanetaryRadius0005.tiff"
SYSTEM = "$base/dems/molaMarsPlanetaryRadius0004.cub"

# ---------------------------------------------------------------- no traffic beyond loopback

CONNECTS: list = []
_FORBIDDEN = [ipaddress.ip_network(n) for n in ("169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                 "fe80::/10", "fc00::/7")]


def _audit(event, args):
    if event == "socket.connect":
        addr = args[1]
        if isinstance(addr, tuple) and addr:
            CONNECTS.append(addr[0])
            try:
                ip = ipaddress.ip_address(addr[0])
            except ValueError:
                return
            if any(ip in n for n in _FORBIDDEN):
                raise OSError(f"test guard: refusing to connect to {addr[0]}")


sys.addaudithook(_audit)


def no_answer(call):
    """The message of the error a refused answer gives: no answer fails the cube (issue 15)."""
    with pytest.raises(NoAnswerError) as info:
        call()
    return str(info.value)


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def cache_dir(tmp_path):
    """The cache directory, made in advance (0755, ours) so tests can plant entries."""
    d = tmp_path / "cache"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    return d


def plant(cache_dir, url, value, stored=None, body="Mars", pin=None, raw=None):
    """Write a cache entry for (url, body) as an attacker would."""
    path = cache_dir / f"{DiskCache.key(search_url(url), 'isis-global-dtms', body, pin)}.json"
    path.write_bytes(raw if raw is not None else json.dumps({"stored": time.time() if stored is None else stored,
                                                             "value": value}).encode())
    os.chmod(path, 0o644)
    return path


def entry(href, item_id="evil0099", version="0099"):
    return {"item_id": item_id, "version": version, "href": href, "asset_key": "image"}


# ================================================================ 1. cache poisoning


def test_cached_entry_with_a_future_stored_time_is_ignored(resolver_factory, cache_dir, caplog):
    with StacServer(MARS) as srv:
        plant(cache_dir, srv.url, entry("https://evil.example.org/evil0099.tiff"), stored=time.time() + 10 * 365 * 86400)
        res = resolver_factory(srv.url).resolve(target="Mars")
        assert res.shape_model == GOOD and len(srv.searches) == 1
    assert any("in the future" in m for m in caplog.messages)


def test_cached_href_obeys_the_same_rules_as_a_fresh_answer(resolver_factory, cache_dir, isisdata, caplog):
    """An http:// href planted for an https endpoint: refused, as a server answer would be."""
    url = f"https://127.0.0.1:{closed_port()}/"  # nothing listens: the fresh search fails too
    plant(cache_dir, url, entry("http://127.0.0.1:9/attacker/dem.tif"))
    r = resolver_factory(url, isisdata=isisdata)
    assert "attacker" not in no_answer(lambda: r.resolve(target="Mars"))
    assert any("ignoring cache entry" in m and "absolute https" in m for m in caplog.messages)
    assert r.requests_sent >= 1  # the cached value was not used; the API was asked


@pytest.mark.parametrize("kind", ["list", "deep", "devzero", "fifo", "huge", "types", "symlink", "bad-stored",
                                  "not-json", "extra-keys"])
def test_malformed_cache_entries_are_ignored(resolver_factory, cache_dir, tmp_path, caplog, kind):
    with StacServer(MARS) as srv:
        path = cache_dir / f"{DiskCache.key(search_url(srv.url), 'isis-global-dtms', 'Mars', None)}.json"
        if kind == "list":
            plant(cache_dir, srv.url, [1, 2, 3])
        elif kind == "deep":
            plant(cache_dir, srv.url, None, raw=b'{"stored": 1, "value": ' + b"[" * 100000 + b"]" * 100000 + b"}")
        elif kind == "devzero":
            path.symlink_to("/dev/zero")
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "huge":
            plant(cache_dir, srv.url, entry(GOOD[9:]) | {"pad": "x" * (3 << 20)})
        elif kind == "types":
            plant(cache_dir, srv.url, {"item_id": ["x"], "version": 5, "href": {"a": 1}, "asset_key": None})
        elif kind == "symlink":
            real = tmp_path / "elsewhere.json"
            real.write_text(json.dumps({"stored": time.time(), "value": entry("https://evil.example.org/e.tiff")}))
            path.symlink_to(real)
        elif kind == "bad-stored":
            plant(cache_dir, srv.url, None, raw=b'{"stored": "yesterday", "value": {}}')
        elif kind == "not-json":
            plant(cache_dir, srv.url, None, raw=b"\xff\xfe{{{")
        elif kind == "extra-keys":
            plant(cache_dir, srv.url, None, raw=json.dumps({"stored": time.time(), "value": entry("https://e.org/e.tiff"),
                                                            "more": 1}).encode())
        t0 = time.monotonic()
        res = resolver_factory(srv.url).resolve(target="Mars")
        assert time.monotonic() - t0 < 10
        assert res.shape_model == GOOD and res.item_id == "molaMarsPlanetaryRadius0005" and len(srv.searches) == 1
    msgs = [m for m in caplog.messages if "cache" in m]
    assert msgs and all("\n" not in m and len(m) < 400 for m in msgs), caplog.messages


def test_the_search_modes_file_is_read_only_when_a_search_needs_it(resolver_factory, cache_dir, isisdata, make_cube):
    modes = cache_dir / "search-modes.json"
    modes.write_text(json.dumps({"stored": time.time(), "value": {"http://x/search": "filter"}}))
    os.utime(modes, (1_000_000, time.time()))  # atime < mtime: any read updates atime (relatime)
    with StacServer(MARS) as srv:
        cube = make_cube("viking_mars")
        for shape in ("ellipsoid", "system"):
            r = resolver_factory(srv.url, isisdata=isisdata)
            r.resolve(cube, shape=shape)
            r.resolve(target="Mars", shape=shape)
        assert os.stat(modes).st_atime == 1_000_000 and srv.requests == []
        resolver_factory(srv.url).resolve(target="Mars")  # a search: now it is read
        if os.stat(modes).st_atime == 1_000_000:
            pytest.skip("this file system does not update access times")


def test_hostile_search_modes_files_never_break_a_run(resolver_factory, cache_dir, isisdata):
    modes = cache_dir / "search-modes.json"
    os.mkfifo(modes)
    with StacServer(MARS) as srv:
        assert resolver_factory(srv.url).resolve(target="Mars").shape_model == GOOD
        os.unlink(modes)
        modes.write_text(json.dumps({"stored": time.time(), "value": {search_url(srv.url): {"evil": 1}, "x": "filter"}}))
        res = resolver_factory(srv.url).resolve(target="Mars")
        assert res.shape_model == GOOD and "query" in srv.searches[-1]["body"]
        os.unlink(modes)
        modes.write_text(json.dumps({"stored": time.time(), "value": ["filter"]}))
        assert resolver_factory(srv.url, cache="yes").resolve(target="Mars").shape_model == GOOD


# ================================================================ 2. sharing the cache

NOBODY = 65534


def as_user(uid, func):
    """Run ``func()`` in a forked child that has switched to ``uid``; return its JSON result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            messages = []

            class Keep(logging.Handler):
                def emit(self, record):
                    messages.append(record.getMessage())

            logging.getLogger("shaperesolver").addHandler(Keep())
            out = {"result": func(), "messages": messages, "uid": os.getuid()}
            os.write(w, json.dumps(out).encode())
            code = 0
        except BaseException as exc:  # noqa: BLE001 - report to the parent
            os.write(w, json.dumps({"error": repr(exc)}).encode())
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    out = json.loads(data)
    assert "error" not in out, out
    assert out["uid"] == uid
    return out


@pytest.fixture
def shared(tmp_path):
    """A directory every uid can reach (pytest's tmp_path is private to root)."""
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="shaperesolver-shared-", dir="/tmp")
    os.chmod(d, 0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_the_same_user_shares_a_cache_across_processes_and_files_are_0644(shared):
    from pathlib import Path
    d = Path(shared) / "mine"
    # one process of uid 65534 warms the cache ("login node"), another reads it ("compute node")
    as_user(NOBODY, lambda: DiskCache(d).put("k", {"href": "https://x.org/a.tif"}))
    out = as_user(NOBODY, lambda: DiskCache(d).get("k"))
    assert out["result"][0] == {"href": "https://x.org/a.tif"} and out["messages"] == []
    st = (d / "k.json").stat()
    assert st.st_uid == NOBODY and oct(st.st_mode & 0o777) == oct(0o644)
    assert oct(d.stat().st_mode & 0o022) == oct(0)


def test_another_users_cache_directory_is_ignored_with_a_clear_message(shared, caplog):
    from pathlib import Path
    with StacServer(MARS) as srv:
        d = Path(shared) / "roots"
        r = Resolver(url=srv.url, cache_dir=d, verify=False, http=FAST)
        assert r.resolve(target="Mars").shape_model == GOOD and len(srv.searches) == 1
        os.chmod(d, 0o755)

        def nobody_resolves():
            rr = Resolver(url=srv.url, cache_dir=d, verify=False, http=FAST)
            res = rr.resolve(target="Mars")
            return [res.shape_model, rr.requests_sent]

        out = as_user(NOBODY, nobody_resolves)
        assert out["result"] == [GOOD, 1]  # not trusted: asked the API itself, and worked
        [msg] = out["messages"]
        assert "ignoring the cache directory" in msg and "owned by uid 0" in msg and "corrupt" not in msg
        assert {p.stat().st_uid for p in d.iterdir()} == {0}  # nobody wrote nothing there (root: entry + claim)

        # and the other way round: root never trusts what uid 65534 wrote
        theirs = Path(shared) / "theirs"
        out = as_user(NOBODY, lambda: DiskCache(theirs).put(
            DiskCache.key(search_url(srv.url), "isis-global-dtms", "Mars", None), entry("https://evil.example.org/e.tiff")))
        res = Resolver(url=srv.url, cache_dir=theirs, verify=False, http=FAST).resolve(target="Mars")
        assert res.shape_model == GOOD and len(srv.searches) == 3
    assert any("owned by uid 65534" in m for m in caplog.messages)


def test_writable_by_others_directory_or_foreign_file_is_not_trusted(cache_dir, caplog):
    with StacServer(MARS) as srv:
        Resolver(url=srv.url, cache_dir=cache_dir, verify=False, http=FAST).resolve(target="Mars")
        [f] = [p for p in cache_dir.iterdir() if p.suffix == ".json" and p.name != "search-modes.json"]  # not .claim
        f.write_text(json.dumps({"stored": time.time(), "value": entry("https://evil.example.org/e.tiff")}))
        os.chmod(f, 0o644)
        os.chown(f, NOBODY, NOBODY)  # planted by another user (in a directory they could once write)
        assert Resolver(url=srv.url, cache_dir=cache_dir, verify=False, http=FAST).resolve(target="Mars").shape_model == GOOD
        assert any("owned by uid 65534" in m for m in caplog.messages)
        os.chown(f, 0, 0)
        os.chmod(f, 0o666)
        assert Resolver(url=srv.url, cache_dir=cache_dir, verify=False, http=FAST).resolve(target="Mars").shape_model == GOOD
        assert any("other users can write to it (mode 0666)" in m for m in caplog.messages)
        os.chmod(cache_dir, 0o777)
        caplog.clear()
        r = Resolver(url=srv.url, cache_dir=cache_dir, verify=False, http=FAST)
        assert r.resolve(target="Mars").shape_model == GOOD and r.resolve(target="Moon", shape="ellipsoid")
        assert len(srv.searches) == 4
        assert [m for m in caplog.messages if "cache directory" in m] == [
            f"ignoring the cache directory {cache_dir}: other users can write to it (mode 0777); "
            "set SHAPERESOLVER_CACHE_DIR to a directory of your own"]


# ================================================================ 3. requests it should never send


def test_next_link_with_delete_is_refused(resolver_factory, isisdata):
    with StacServer(MARS, page_size=1, next_link={"method": "DELETE", "href": "/admin/delete-everything"}) as srv:
        r = resolver_factory(srv.url, isisdata=isisdata, cache="no")
        why = no_answer(lambda: r.resolve(target="Mars"))
        assert [q["method"] for q in srv.requests] == ["POST"]
        assert "refusing a next link with method 'DELETE'" in why


@pytest.mark.parametrize("href,words", [
    ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "link-local address (169.254.169.254)"),
    ("http://10.0.0.1/search", "private address (10.0.0.1)"),
    ("http://[fe80::1]/search", "link-local address (fe80::1)"),
    ("file:///etc/passwd", "only http(s) URLs"),
    ("gopher://127.0.0.1:70/x", "only http(s) URLs"),
])
def test_next_link_to_a_forbidden_address_is_refused_before_connecting(resolver_factory, isisdata, href, words):
    with StacServer(MARS, page_size=1, next_link={"method": "POST", "href": href}) as srv:
        r = resolver_factory(srv.url, isisdata=isisdata, cache="no")
        CONNECTS.clear()
        assert words in no_answer(lambda: r.resolve(target="Mars"))
        assert set(CONNECTS) == {"127.0.0.1"} and r.requests_sent == 1 and len(srv.requests) == 1


def test_next_link_to_another_loopback_name_is_followed(resolver_factory):
    """The API is on loopback, so a next link to 'localhost' (another loopback name) is fine."""
    with StacServer(MARS, page_size=1, next_host="localhost") as srv:
        res = resolver_factory(srv.url, cache="no").resolve(target="Mars")
        assert res.shape_model == GOOD and len(srv.searches) == 2


def test_address_policy_of_a_public_api():
    """USGS's next links point at another public host; private and metadata addresses are refused."""
    from shaperesolver.errors import CatalogError
    from shaperesolver.net.transport import AddressPolicy
    CONNECTS.clear()
    policy = AddressPolicy("https://8.8.8.8/apis/isis-stac/")  # a public address literal: never contacted
    assert policy.check("https://93.184.216.34/prod/search", "next link")
    for bad in ("http://169.254.169.254/", "http://127.0.0.1:9/", "http://192.168.1.1/", "http://172.16.0.1/",
                "http://[::1]/", "http://[::ffff:169.254.169.254]/", "http://0.0.0.0/", "file:///etc/passwd"):
        with pytest.raises(CatalogError):
            policy.check(bad, "next link")
    assert CONNECTS == []


def test_cross_origin_307_does_not_re_post_the_search_body(resolver_factory, isisdata):
    with StacServer(MARS) as other, StacServer(MARS) as srv:
        srv.fault(status=307, headers={"Location": f"http://localhost:{other.port}/search"}, body=b"")
        why = no_answer(lambda: resolver_factory(srv.url, isisdata=isisdata, cache="no").resolve(target="Mars"))
        assert other.requests == []
        assert "refusing to re-send the search body to another origin" in why


def test_same_origin_307_is_followed_with_the_body(resolver_factory):
    with StacServer(MARS) as srv:
        srv.fault(status=307, headers={"Location": "/moved/search"}, body=b"")
        res = resolver_factory(srv.url, cache="no").resolve(target="Mars")
        assert res.shape_model == GOOD and [q["path"] for q in srv.requests] == ["/search", "/moved/search"]
        assert srv.requests[1]["body"]["query"] == {"ssys:targets": {"in": ["Mars"]}}


def test_remote_catalog_links_stay_remote(tmp_path, isisdata):
    from servers import RangeServer
    www = tmp_path / "www"
    www.mkdir()
    evil = tmp_path / "evil.json"  # a valid item on local disk, which a remote catalog must never reach
    evil.write_text(json.dumps(item("evil0099", ["Mars"], "0099", href="https://evil.example.org/evil.tiff")))
    for name, href in (("a.json", f"file://{evil}"), ("b.json", str(evil)), ("c.json", "/proc/self/cmdline"),
                       ("d.json", "http://169.254.169.254/latest/meta-data/")):
        (www / name).write_text(json.dumps({"type": "Catalog", "id": "x", "links": [{"rel": "child", "href": href}]}))
    with RangeServer(www) as files:
        results = {}
        for name in ("a.json", "b.json", "c.json", "d.json"):
            r = Resolver(catalog=files.url(name), verify=False, cache="no", http=FAST, isisdata=isisdata)
            results[name] = no_answer(lambda: r.resolve(target="Mars"))
        paths = [q["path"] for q in files.requests]
    for why in results.values():
        assert "evil.example.org" not in why
    assert "remote catalog's links must stay remote" in results["a.json"]
    assert str(evil) in paths and "/proc/self/cmdline" in paths  # asked the server, never the local disk
    assert "link-local" in results["d.json"]


def test_local_catalog_links_stay_local_regular_files(tmp_path, isisdata):
    cat = tmp_path / "cat"
    cat.mkdir()
    os.mkfifo(cat / "fifo.json")
    (cat / "zero.json").symlink_to("/dev/zero")
    for name, href in (("web.json", "http://127.0.0.1:9/x.json"), ("fifo-cat.json", "fifo.json"),
                       ("zero-cat.json", "zero.json"), ("dir-cat.json", str(tmp_path))):
        (cat / name).write_text(json.dumps({"type": "Catalog", "id": "x", "links": [{"rel": "child", "href": href}]}))
    expect = {"web.json": "links must be local files", "fifo-cat.json": "is a FIFO", "zero-cat.json": "character device",
              "dir-cat.json": "directory"}
    for name, words in expect.items():
        t0 = time.monotonic()
        r = Resolver(catalog=cat / name, verify=False, cache="no", http=FAST, isisdata=isisdata)
        why = no_answer(lambda: r.resolve(target="Mars"))
        assert time.monotonic() - t0 < 10
        assert words in why, why


# ================================================================ 4. time and memory


def test_dribbling_server_is_cut_off_at_the_search_deadline(resolver_factory, isisdata):
    with StacServer(MARS) as srv:
        srv.fault(status=200, body=b'{"type": "FeatureCollection", "features": []}' + b" " * 1000, dribble=0.2)
        settings = HttpSettings(connect_timeout=2, read_timeout=5, retries=2, backoff=0.01, deadline=1.5)
        t0 = time.monotonic()
        why = no_answer(lambda: resolver_factory(srv.url, isisdata=isisdata, cache="no", http=settings).resolve(target="Mars"))
        took = time.monotonic() - t0
        assert "gave up after the 1.5 s deadline" in why
        assert took < 3


def test_retries_and_back_off_count_against_the_deadline(resolver_factory, isisdata):
    with StacServer(MARS) as srv:
        srv.fault(status=503, body={"message": "slow down"}, headers={"Retry-After": "30"}, times=10)
        settings = HttpSettings(connect_timeout=2, read_timeout=2, retries=5, max_retry_after=60, deadline=1.0)
        t0 = time.monotonic()
        why = no_answer(lambda: resolver_factory(srv.url, isisdata=isisdata, cache="no", http=settings).resolve(target="Mars"))
        assert time.monotonic() - t0 < 2 and "deadline" in why and len(srv.searches) == 1


def test_dribbling_static_catalog_is_cut_off_at_the_walk_deadline(isisdata):
    with StacServer(MARS) as srv:
        srv.fault(status=200, body=b'{"type": "Catalog", "links": []}' + b" " * 1000, dribble=0.2)
        settings = HttpSettings(connect_timeout=2, read_timeout=5, retries=0, deadline=1.0)
        t0 = time.monotonic()
        r = Resolver(catalog=srv.url, verify=False, cache="no", http=settings, isisdata=isisdata)
        why = no_answer(lambda: r.resolve(target="Mars"))
        assert time.monotonic() - t0 < 2.5 and "deadline" in why


def test_deeply_nested_json_is_refused(resolver_factory, isisdata):
    with StacServer(MARS) as srv:
        srv.fault(status=200, body=b"[" * 100000 + b"]" * 100000)
        r = resolver_factory(srv.url, isisdata=isisdata, cache="no")
        assert "nested more than 64 levels" in no_answer(lambda: r.resolve(target="Mars"))


def test_items_are_capped_across_pages(resolver_factory, isisdata):
    many = [item(f"dem{v:05d}", ["Mars"], f"{v:05d}") for v in range(1, 301)]
    with StacServer(many, page_size=50) as srv:
        settings = HttpSettings(connect_timeout=2, read_timeout=2, retries=0, max_items=120)
        r = resolver_factory(srv.url, isisdata=isisdata, cache="no", http=settings)
        assert "more than 120 items in all" in no_answer(lambda: r.resolve(target="Mars"))
        assert len(srv.searches) == 3  # stopped on the page that crossed the cap
        res = resolver_factory(srv.url, isisdata=isisdata, cache="no").resolve(target="Mars")  # the defaults suffice
        assert res.version == "00300" and len(srv.searches) == 3 + 6


def test_bytes_are_capped_across_pages(resolver_factory, isisdata):
    with StacServer(MARS, page_size=1, pad=400_000) as srv:  # each page is well under the per-response cap
        settings = HttpSettings(connect_timeout=2, read_timeout=2, retries=0, max_total_bytes=600_000)
        r = resolver_factory(srv.url, isisdata=isisdata, cache="no", http=settings)
        assert "more than 600000 bytes in all" in no_answer(lambda: r.resolve(target="Mars"))
        assert len(srv.searches) == 2


def test_default_deadline_and_caps():
    st = HttpSettings()
    assert (st.deadline, st.max_total_bytes, st.max_items, st.max_bytes) == (120.0, 64 * 2**20, 100_000, 20 * 2**20)


# ================================================================ 5. inputs that abort a batch

import shutil  # noqa: E402
import subprocess  # noqa: E402

EXE = shutil.which("shaperesolver", path=os.path.dirname(sys.executable)) or shutil.which("shaperesolver")


def run(*args, tmp_path, timeout=60):
    env = dict(os.environ, SHAPERESOLVER_CACHE_DIR=str(tmp_path / "clicache"))
    env.pop("ISISDATA", None)
    env.pop("SHAPERESOLVER_STAC_URL", None)
    p = subprocess.run([EXE, *map(str, args)], capture_output=True, env=env, timeout=timeout)
    assert b"Traceback" not in p.stderr, p.stderr.decode()
    return p


def jsonl(p):
    return [json.loads(line) for line in p.stdout.decode().splitlines()]


def test_bad_fromlist_lines_fail_alone(make_cube, tmp_path):
    good1, good2, good3 = make_cube("viking_mars"), make_cube("lro_moon"), make_cube("ctx_mars")
    lst = tmp_path / "list.bin"
    lst.write_bytes(f"{good1}\n".encode() + b"/tmp/evil\x00name.cub\n" + f"{good2}\n".encode()
                    + b"/tmp/caf\xe9-latin1.cub\n" + f"{good3}\n".encode())
    before = {c: c.read_bytes() for c in (good1, good2, good3)}
    p = run(f"fromlist={lst}", "shape=ellipsoid", "--json", tmp_path=tmp_path)
    assert p.returncode == 1
    recs = jsonl(p)
    assert [r["written"] for r in recs] == [True, False, True, False, True]
    assert "line 2: contains a NUL byte" in recs[1]["error"] and recs[1]["cube"] == "/tmp/evil\\x00name.cub"
    assert "line 4: not valid UTF-8" in recs[3]["error"] and recs[3]["cube"] == "/tmp/caf\\xe9-latin1.cub"
    assert all(c.read_bytes() != b for c, b in before.items())
    errors_ = [line for line in p.stderr.decode().splitlines() if "line " in line]
    assert len(errors_) == 2 and all(len(e) < 200 for e in errors_)
    assert "5 cubes: 3 written, 0 unchanged, 0 fell back, 2 failed" in p.stderr.decode()


@pytest.mark.parametrize("kind", ["fifo", "devzero", "dir"])
def test_a_fromlist_that_is_not_a_regular_file_is_one_line(tmp_path, kind):
    lst = tmp_path / "list.txt"
    if kind == "fifo":
        os.mkfifo(lst)
    elif kind == "devzero":
        lst.symlink_to("/dev/zero")
    else:
        lst.mkdir()
    p = run(f"fromlist={lst}", "shape=ellipsoid", tmp_path=tmp_path, timeout=20)
    assert p.returncode == 2 and p.stderr.count(b"\n") == 1 and b"not a regular file" in p.stderr


@pytest.mark.parametrize("kind", ["devzero", "fifo", "huge"])
def test_hostile_kernel_db_is_a_one_line_error_and_the_batch_goes_on(make_cube, tmp_path, kind):
    root = tmp_path / "isisdata"
    dems = root / "base" / "dems"
    dems.mkdir(parents=True)
    (dems / "kernels.0001.db").write_text('Object = Dem\nEndObject\n')
    bad = dems / "kernels.0009.db"
    if kind == "devzero":
        bad.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(bad)
    else:
        with open(bad, "wb") as f:
            f.truncate(17 * 2**20)
    mars, moon = make_cube("viking_mars"), make_cube("lro_moon")
    before = {c: c.read_bytes() for c in (mars, moon)}
    lst = tmp_path / "list.txt"
    lst.write_text(f"{mars}\n{moon}\n")
    p = run(f"fromlist={lst}", "shape=system", f"isisdata={root}", "--json", tmp_path=tmp_path, timeout=30)
    assert p.returncode == 1
    recs = jsonl(p)
    assert len(recs) == 2 and all(r["source"] is None and "kernels.0009.db" in r["error"] for r in recs)
    assert all(c.read_bytes() == b for c, b in before.items())
    assert all(len(line) < 300 for line in p.stderr.decode().splitlines())


def test_catalog_children_at_devices_and_fifos_fail_the_cube(make_cube, tmp_path, isisdata):
    from servers import RangeServer
    cat = tmp_path / "cat"
    cat.mkdir()
    os.mkfifo(cat / "fifo.json")
    (cat / "local.json").write_text(json.dumps({"type": "Catalog", "links": [
        {"rel": "child", "href": "fifo.json"}, {"rel": "child", "href": "/dev/zero"}]}))
    (cat / "remote.json").write_text(json.dumps({"type": "Catalog", "links": [{"rel": "child", "href": "/dev/zero"}]}))
    (cat / "remote2.json").write_text(json.dumps({"type": "Catalog", "links": [
        {"rel": "child", "href": f"file://{cat}/fifo.json"}]}))
    cube = make_cube("viking_mars")
    before = cube.read_bytes()
    p = run(f"from={cube}", f"catalog={cat / 'local.json'}", f"isisdata={isisdata}", "--json", tmp_path=tmp_path, timeout=30)
    [rec] = jsonl(p)
    assert p.returncode == 1 and rec["source"] is None and "FIFO" in rec["error"]
    with RangeServer(cat) as files:
        p = run(f"from={cube}", f"catalog={files.url('remote.json')}", "dryrun=yes", f"isisdata={isisdata}", "--json",
                tmp_path=tmp_path, timeout=30)
        [rec] = jsonl(p)
        assert p.returncode == 1 and rec["source"] is None and "HTTP 404" in rec["error"]
        assert [q["path"] for q in files.requests] == ["/remote.json", "/dev/zero"]  # asked the server, not the disk
        p = run(f"from={cube}", f"catalog={files.url('remote2.json')}", "dryrun=yes", f"isisdata={isisdata}", "--json",
                tmp_path=tmp_path, timeout=30)
        [rec] = jsonl(p)
        assert p.returncode == 1 and rec["source"] is None and "must stay remote" in rec["error"]
    assert cube.read_bytes() == before


def test_user_model_that_is_a_fifo_is_refused(tmp_path):
    fifo = tmp_path / "dem.tif"
    os.mkfifo(fifo)
    with pytest.raises(Exception) as info:
        Resolver(cache="no", verify=True).resolve(target="Mars", shape="user", model=str(fifo))
    assert "FIFO" in str(info.value)


# ================================================================ 6. SYSTEM paths that escape the data area


def _area(tmp_path, *files):
    root = tmp_path / "isisdata"
    dems = root / "base" / "dems"
    dems.mkdir(parents=True)
    sels = "".join(f'  Group = Selection\n    Match = ("Instrument","TargetName","Mars")\n    File = {f}\n  EndGroup\n'
                   for f in files)
    (dems / "kernels.0001.db").write_text(f"Object = Dem\n{sels}EndObject\n")
    (dems / "molaMarsPlanetaryRadius0004.cub").write_bytes(b"")
    return root


@pytest.mark.parametrize("evil,words", [
    ('"../../../etc/shadow"', "outside the data area"),
    ('("base", "../../../../etc/shadow")', "outside the data area"),
    ('"/etc/shadow"', "outside the data area"),
    ('("base", "dems/missing.cub")', "no such file"),
    ('("base", "dems/gone????.cub")', "no existing files"),
    ('("base", "dems/fifo.cub")', "is a FIFO"),
])
def test_system_model_must_be_an_existing_file_inside_the_data_area(make_cube, tmp_path, evil, words):
    root = _area(tmp_path, '("base", "dems/molaMarsPlanetaryRadius????.cub")', evil)
    os.mkfifo(root / "base" / "dems" / "fifo.cub")
    cube = make_cube("viking_mars")
    r = Resolver(isisdata=root, cache="no")
    res = r.resolve(cube, shape="system")  # the last match is refused: the one before it wins
    assert res.source == "system" and res.shape_model == SYSTEM
    assert words in res.fallback_reasons[0] and "shadow" not in res.shape_model
    only_evil = _area(tmp_path / "b", evil)
    os.mkfifo(only_evil / "base" / "dems" / "fifo.cub")
    res = Resolver(isisdata=only_evil, cache="no").resolve(cube, shape="system")
    assert res.source == "ellipsoid" and res.shape_model == "Null"
    assert words in res.fallback_reasons[0] and "no SYSTEM shape model" in res.fallback_reasons[1]


def test_system_escape_through_the_command_writes_the_ellipsoid(make_cube, tmp_path):
    root = _area(tmp_path, '"../../../etc/shadow"')
    cube = make_cube("viking_mars")
    p = run(f"from={cube}", "shape=system", f"isisdata={root}", "--json", tmp_path=tmp_path)
    [rec] = jsonl(p)
    assert p.returncode == 0 and rec["shape_model"] == "Null" and "outside the data area" in rec["fallback_reason"]
    assert b"shadow" not in cube.read_bytes()
