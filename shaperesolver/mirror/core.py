"""Download the chosen DEM of each body into a directory that is a static STAC catalog.

``DIR/catalog.json`` links one item document per mirrored item, kept under its body,
collection and id (``DIR/<body>/<collection>/<item id>/<item id>.json``, ``_`` for an
item without a collection), so items of different bodies or collections that share an
id never share a path.  Its single asset is the local file beside it, with the original
href (``shaperesolver:original_href``), ``file:size`` and ``file:checksum`` (SHA-256
multihash).  A resolver with ``catalog=DIR`` then resolves to local paths without a
network.  Mirrors written before this layout (``DIR/<item id>/``) are still read: such
an entry counts as present when its document names the same collection, body and id.

Each file in the mirror is the whole file the server holds, proven so:

* a download is resumed (``<file>.part`` and ``<file>.part.json`` in the item's
  directory) only with ``If-Range`` carrying the strong validator (ETag, else
  Last-Modified) recorded with the part, and only when the server answers 206 with that
  same validator and a ``Content-Range`` that starts exactly at the bytes we have and
  ends at the size we expect; anything else (a 200, another validator, another range or
  size, a server that ignores ``If-Range``) discards the part and starts over;
* the announced length, the source's ``file:checksum`` (a multihash: SHA-1, SHA-2,
  SHA-3, BLAKE2b, MD5; an unknown code is logged and not compared) and GDAL (it opens
  the file and reads its last tile, and the model check passes for its body) must agree
  before the file enters the catalog; a file that fails is removed, part included.

Downloads are atomic (fsync, rename, fsync of the directory; a file enters the catalog
only after that), bounded (retries, socket timeouts, a low-speed limit, the address
policy of searches, ``max_size``), and done once per file among processes sharing DIR
(a :mod:`~shaperesolver.base.claims` claim per item).  The catalog is rewritten under an
exclusive ``flock`` by atomic rename.  Directories are walked one component at a time
without following links, so a link planted in a shared mirror never aims a write or a
delete.  ``prune`` removes only versions older than the one kept for the same body and
collection, never a newer one.  :meth:`Mirror.run` fails one body at a time: a host that
misbehaves fails its body with the reason, and the other bodies are still mirrored.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlparse

from ..base import bodies, claims, safeio
from ..catalog import stacdoc
from ..catalog.choice import check_href, item_targets, version_key
from ..errors import CatalogError, MirrorError, ModelError, NoMatchError, ShapeResolverError, UnsafeFileError, shorten
from ..models import raster
from ..net.transport import AddressPolicy, stream_errors

if TYPE_CHECKING:
    from ..policy.resolver import Resolver

__all__ = ["Mirror", "Mirrored", "DEFAULT_MAX_SIZE", "CATALOG", "MIN_RATE", "SLOW_TIME"]

log = logging.getLogger(__name__)

CATALOG = "catalog.json"
#: the largest file downloaded unless raised (the largest ISIS DEMs are a few GB)
DEFAULT_MAX_SIZE = 64 * 2**30
_META = ".shaperesolver"
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
#: the collection directory of an item that names no collection (no collection id can be this)
_NO_COLLECTION = "_"
_CHUNK = 1 << 20
#: A download slower than MIN_RATE bytes/s over SLOW_TIME seconds is cut and retried.
MIN_RATE = 1024
SLOW_TIME = 60.0
_MAX_CATALOG = 64 * 2**20
_RESERVE = 2**20  # free space left over after a download

#: multihash codes of ``file:checksum`` that are compared: code -> (name, hash factory)
_MULTIHASH: dict[int, tuple[str, Callable[[], Any]]] = {
    0x11: ("sha1", hashlib.sha1),
    0x12: ("sha2-256", hashlib.sha256),
    0x13: ("sha2-512", hashlib.sha512),
    0x14: ("sha3-512", hashlib.sha3_512),
    0x15: ("sha3-384", hashlib.sha3_384),
    0x16: ("sha3-256", hashlib.sha3_256),
    0x17: ("sha3-224", hashlib.sha3_224),
    0x20: ("sha2-384", hashlib.sha384),
    0xD5: ("md5", lambda: hashlib.md5(usedforsecurity=False)),
    0xB220: ("blake2b-256", lambda: hashlib.blake2b(digest_size=32)),
    0xB240: ("blake2b-512", hashlib.blake2b),
}
_SHA256 = 0x12


class Progress(Protocol):
    def update(self, n: int) -> None: ...
    def close(self) -> None: ...


#: makes a progress display: (description, total bytes, bytes already there)
ProgressFactory = Callable[[str, int, int], Progress]


@dataclass(frozen=True)
class Mirrored:
    """One body's DEM in the mirror."""

    body: str
    item_id: str
    version: str | None
    path: str
    size: int
    sha256: str
    #: bytes fetched from the server by this run (0 when it was there already)
    fetched: int
    #: ``downloaded``, ``resumed`` or ``present``
    status: str
    #: ids of the older items of the same body and collection removed (``prune``)
    pruned: tuple[str, ...] = ()
    #: the item's collection (None when the source names none)
    collection: str | None = None

    def record(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class _Key:
    """What a mirrored item is kept under: its body, collection and id."""

    body: str
    collection: str | None
    item_id: str

    @property
    def parts(self) -> tuple[str, ...]:
        """The item directory, relative to the mirror, as path components."""
        return (_dir_name(self.body), self.collection or _NO_COLLECTION, self.item_id)

    @property
    def legacy(self) -> tuple[str, ...]:
        """Where mirrors written before the keyed layout kept the item."""
        return (self.item_id,)

    def holds(self, doc: Any) -> bool:
        """Whether the item document ``doc`` is this item (its id, collection and body)."""
        return (_is_item(doc) and str(doc.get("id")) == self.item_id and _collection(doc) == self.collection
                and self.body in {bodies.canonical(t) for t in item_targets(doc)})


@dataclass(frozen=True)
class _Checksum:
    """A source's ``file:checksum`` that can be compared."""

    text: str
    name: str
    code: int
    digest: bytes


class _PublicOnly(AddressPolicy):
    """For a local source catalog: its hrefs may lead to public addresses only."""

    def __init__(self) -> None:
        super().__init__("https://public.invalid/")

    def allowed(self) -> set[str]:
        return {"public"}


class Mirror:
    """Mirrors bodies' DEMs into ``directory`` through ``resolver``'s catalog and HTTP settings."""

    def __init__(self, directory: str | os.PathLike[str], resolver: Resolver, *, max_size: int = DEFAULT_MAX_SIZE,
                 prune: bool = False, progress: ProgressFactory | None = None, retries: int = 3,
                 claim_wait: float = 24 * 3600.0, min_rate: int = MIN_RATE, slow_time: float = SLOW_TIME) -> None:
        self.directory = Path(directory).absolute()
        self.resolver = resolver
        self.max_size = int(max_size)
        self.prune = prune
        self.progress = progress
        self.retries = retries
        self.claim_wait = claim_wait
        self.min_rate = int(min_rate)
        self.slow_time = float(slow_time)
        src = resolver.source_url
        self.policy = AddressPolicy(src) if src else _PublicOnly()
        self.allow_http = src is None or src.startswith("http://")

    @property
    def catalog_path(self) -> Path:
        return self.directory / CATALOG

    # ------------------------------------------------------------ public

    def run(self, targets: Iterable[str], version: str | None = None) -> Iterator[tuple[str, Mirrored | None, ShapeResolverError | None]]:
        """Mirror each distinct body of ``targets``: yields (target, result or None, error or None).

        A body that fails (its host, its file, its catalog entry) yields its error and the
        next body is mirrored all the same.
        """
        seen: set[str] = set()
        for target in targets:
            body = bodies.canonical(target)
            if body in seen:
                continue
            seen.add(body)
            try:
                yield target, self.add(target, version), None
            except ShapeResolverError as exc:
                log.info("%s: not mirrored: %s", body, exc)
                yield target, None, exc
            except OSError as exc:
                yield target, None, MirrorError(f"{body}: {exc.filename or self.directory}: {exc.strerror or exc}")

    def add(self, target: str, version: str | None = None) -> Mirrored:
        """Mirror ``target``'s chosen (or pinned) DEM; raises :class:`MirrorError` or CatalogError."""
        body = bodies.canonical(target)
        raw = self.resolver.catalog_items(target)
        choice = self.resolver.choose(raw, target, version)
        if choice is None:
            raise NoMatchError(f"{body}: no web shape model in {self.resolver._where()}")
        if choice.local:
            raise MirrorError(f"{body}: item {choice.item_id} is already a local file ({choice.href})")
        item = _source_item(raw, choice.item_id, choice.asset_key, choice.href, bodies.query_names(target))
        href = self.policy.check(check_href(choice.href, choice.item_id, self.allow_http), "asset href")
        item_id = self._safe(choice.item_id, "item id", choice.item_id)
        collection = _collection(item)
        if collection is not None:
            self._safe(collection, "collection", choice.item_id)
        key = _Key(body, collection, item_id)
        name = self._safe(unquote(urlparse(href).path.rsplit("/", 1)[-1]), "file name", choice.item_id)
        asset = item["assets"][choice.asset_key]
        announced = asset.get("file:size")
        if isinstance(announced, bool) or not isinstance(announced, int) or announced < 0:
            announced = None
        if announced is not None and announced > self.max_size:
            raise MirrorError(f"{body}: {href} is {announced} bytes by the catalog, more than the "
                              f"{self.max_size}-byte limit (raise maxsize=)")
        checksum = _source_checksum(asset.get("file:checksum"), href)
        self._prepare()

        def poll() -> Mirrored | None:
            entry = self._entry(key, name, checksum)
            return None if entry is None else Mirrored(body, item_id, choice.version, str(entry[0]), entry[1], entry[2],
                                                       0, "present", collection=collection)

        found = poll()
        if found is None:
            claim_key = "mirror-" + hashlib.sha256(json.dumps([*key.parts, name]).encode()).hexdigest()[:32]
            with claims.claim(self.directory / _META, claim_key, poll, self.claim_wait, what=f"{body} download") as c:
                found = c.result or self._download_and_add(key, item, choice.asset_key, href, name, announced,
                                                           checksum, choice.version)
        if self.prune:
            kept = Path(found.path).parent.relative_to(self.directory).parts
            kept_version = _numeric_version(item)
            found = Mirrored(**{**found.__dict__, "pruned": tuple(self._prune(key, kept, kept_version))})
        return found

    # ------------------------------------------------------------ download

    def _download_and_add(self, key: _Key, item: Mapping[str, Any], asset_key: str, href: str, name: str,
                          announced: int | None, checksum: _Checksum | None, version: str | None) -> Mirrored:
        final = self.directory.joinpath(*key.parts, name)
        with _pinned(self.directory, key.parts, create=True) as where:
            try:
                size, fetched, resumed, digest = self._into(where, final, key, item, asset_key, href, announced,
                                                            checksum)
            except MirrorError as exc:  # name the item directory, not the descriptor it was reached by
                raise MirrorError(str(exc).replace(str(where), str(final.parent))) from None
        log.info("%s: %s in the mirror (%d bytes, %d fetched)", key.body, final, size, fetched)
        return Mirrored(key.body, key.item_id, version, str(final), size, digest, fetched,
                        "resumed" if resumed else "downloaded", collection=key.collection)

    def _into(self, where: Path, final: Path, key: _Key, item: Mapping[str, Any], asset_key: str, href: str,
              announced: int | None, checksum: _Checksum | None) -> tuple[int, int, bool, str]:
        """Download into the item directory held open as ``where``, check, add to the catalog."""
        part = where / (final.name + ".part")
        try:
            size, fetched, resumed, digests = self._fetch(href, part, announced, f"{key.body} {final.name}", checksum)
        except BaseException:
            try:
                final.parent.rmdir()  # only when empty: a part kept for resuming stays
            except OSError:
                pass
            raise
        try:
            _compare(checksum, digests, href)
            self._check(part, key.body, href, final)
            os.replace(part, where / final.name)
            _fsync_dir(where)
        except BaseException:
            _unlink(part)
            _unlink(_meta_path(part))
            raise
        _unlink(_meta_path(part))
        digest = digests["sha2-256"].hexdigest()
        local = {k: v for k, v in item["assets"][asset_key].items() if k != "alternate"}
        local.update({"href": "./" + final.name, "file:size": size, "file:checksum": "1220" + digest,
                      "shaperesolver:original_href": href})
        if checksum is not None:
            local["shaperesolver:source_checksum"] = checksum.text
        up = "../" * len(key.parts)
        doc = {k: v for k, v in item.items() if k not in ("links", "assets")}
        doc.update({"type": "Feature", "stac_version": item.get("stac_version", "1.0.0"), "assets": {asset_key: local},
                    "links": [{"rel": "root", "href": up + CATALOG, "type": "application/json"},
                              {"rel": "parent", "href": up + CATALOG, "type": "application/json"}]})
        with self._catalog_lock():
            _atomic_write(where / f"{key.item_id}.json", doc)
            cat = self._read_catalog()
            href_rel = _item_href(key.parts)
            links = [ln for ln in cat["links"] if ln.get("href") != href_rel]
            links.append({"rel": "item", "href": href_rel, "type": "application/geo+json", "title": key.body})
            cat["links"] = links
            _atomic_write(self.catalog_path, cat)
        return size, fetched, resumed, digest

    def _fetch(self, href: str, part: Path, announced: int | None, what: str,
               checksum: _Checksum | None) -> tuple[int, int, bool, dict[str, Any]]:
        """Download ``href`` into ``part`` (resuming it only when the server proves the file is
        the same); returns (size, bytes fetched, resumed, the file's digests by name)."""
        names = {"sha2-256"} | ({checksum.name} if checksum is not None else set())
        meta_path = _meta_path(part)
        meta = _read_meta(meta_path)
        have = 0
        if meta.get("href") == href and _strong(meta.get("validator")) and (announced in (None, meta["total"])):
            try:
                st = os.stat(part, follow_symlinks=False)
                have = st.st_size if stat.S_ISREG(st.st_mode) and st.st_size < meta["total"] else 0
            except OSError:
                have = 0
        if have == 0:
            _unlink(part)
        resumed = have > 0
        digests = _digests(names, part, have)
        fetched = 0
        total: int | None = meta["total"] if have else None
        failures = 0
        bar: Progress | None = None
        broken = stream_errors()

        def start_over(why: str) -> None:
            nonlocal have, total, resumed, digests
            log.info("%s: %s; starting the download over", href, why)
            have, total, resumed, digests = 0, None, False, _digests(names, part, 0)
            _unlink(part)

        try:
            while True:
                headers = {"Accept": "*/*", "Accept-Encoding": "identity"}
                if have and not _strong(meta.get("validator")):
                    start_over("the server gave no strong ETag or Last-Modified, so a resumed download could "
                               "not be proven to continue the same file")
                if have:
                    headers["Range"] = f"bytes={have}-"
                    headers["If-Range"] = meta["validator"]
                try:
                    resp, url = self._get(href, headers)
                except MirrorError:
                    raise
                except broken as exc:
                    failures = self._retry(failures, f"{href}: {type(exc).__name__} ({shorten(str(exc), 120)})")
                    continue
                with resp:
                    if resp.status_code in (429, 500, 502, 503, 504):
                        failures = self._retry(failures, f"{href}: HTTP {resp.status_code}")
                        continue
                    if have:
                        why = _resume_refused(resp, have, total, meta["validator"])
                        if why:
                            start_over(why)
                            if resp.status_code != 200:  # a 200 carries the whole file: take it
                                continue
                    elif resp.status_code == 416:
                        raise MirrorError(f"{href}: HTTP 416 to a request for the whole file")
                    _, full = self._extent(resp, href, have)
                    total = full
                    if total > self.max_size:
                        raise MirrorError(f"{href}: {total} bytes, more than the {self.max_size}-byte limit (raise maxsize=)")
                    if announced is not None and total != announced:
                        raise MirrorError(f"{href}: the server announces {total} bytes, the catalog {announced}")
                    self._space(part.parent, total - have, href)
                    meta = {"href": href, "total": total, "validator": _validator(resp.headers)}
                    _atomic_write(meta_path, meta)
                    if bar is None and self.progress is not None:
                        bar = self.progress(what, total, have)
                    try:
                        got = self._stream(resp, part, have, total, href, bar, digests)
                    except _Cut as cut:
                        have += cut.got
                        fetched += cut.got
                        failures = self._retry(failures, f"{href}: {cut.reason} at {have} of {total} bytes")
                        continue
                    have += got
                    fetched += got
                    return total, fetched, resumed, digests
        finally:
            if bar is not None:
                bar.close()

    def _get(self, href: str, headers: dict[str, str]) -> tuple[Any, str]:
        try:
            resp, url = self.resolver.http.stream(href, headers, self.policy, headers_within=self.slow_time)
        except CatalogError as exc:
            raise MirrorError(str(exc)) from None
        except ValueError as exc:  # a malformed answer (a Location that is no URL) the transport let through
            raise MirrorError(f"{href}: a malformed answer ({shorten(str(exc), 120)})") from None
        if resp.status_code not in (200, 206, 416, 429, 500, 502, 503, 504):
            resp.close()
            raise MirrorError(f"{url}: HTTP {resp.status_code}")
        return resp, url

    @staticmethod
    def _extent(resp: Any, href: str, have: int) -> tuple[int, int]:
        """(first byte, whole length) of what the response carries."""
        length = resp.headers.get("Content-Length", "")
        if resp.status_code == 206:
            rng = _content_range(resp.headers.get("Content-Range", ""))
            if rng is None or rng[0] != have or rng[1] + 1 != rng[2]:
                raise MirrorError(f"{href}: the server answered a range request with Content-Range "
                                  f"{resp.headers.get('Content-Range')!r}")
            if length.isdigit() and int(length) != rng[2] - have:
                raise MirrorError(f"{href}: Content-Length {length} does not match Content-Range "
                                  f"{resp.headers.get('Content-Range')!r}")
            return have, rng[2]
        if not length.isdigit():
            raise MirrorError(f"{href}: the server announces no Content-Length")
        return 0, int(length)

    def _stream(self, resp: Any, part: Path, have: int, total: int, href: str, bar: Progress | None,
                digests: dict[str, Any]) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_APPEND if have else os.O_TRUNC)
        fd = os.open(part, flags, 0o644)
        got = 0
        try:
            if have and os.fstat(fd).st_size != have:
                raise MirrorError(f"{part}: changed size during the download")
            window, window_got = time.monotonic(), 0
            arriving = self.resolver.http.chunks(resp, _CHUNK)
            while True:
                try:
                    chunk = next(arriving, b"")
                except stream_errors() as exc:
                    os.fsync(fd)
                    raise _Cut(got, f"the body ended early ({type(exc).__name__})") from None
                if not chunk:
                    break
                window_got += len(chunk)
                if time.monotonic() - window >= self.slow_time:  # curl's --speed-limit / --speed-time
                    if window_got < self.min_rate * self.slow_time:
                        os.fsync(fd)
                        raise _Cut(got, f"slower than {self.min_rate} bytes/s for {self.slow_time:g} s")
                    window, window_got = time.monotonic(), 0
                if have + got + len(chunk) > total:
                    raise MirrorError(f"{href}: the server sent more than the {total} bytes it announced")
                _write_all(fd, chunk, part)
                for h in digests.values():
                    h.update(chunk)
                got += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            os.fsync(fd)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                os.close(fd)
                fd = -1
                _unlink(part)
                _unlink(_meta_path(part))
                raise MirrorError(f"{part.parent}: disk full while writing {part.name[:-5]} "
                                  f"({have + got} of {total} bytes); nothing was added to the mirror") from None
            raise
        finally:
            if fd >= 0:
                os.close(fd)
        if have + got != total:
            raise _Cut(got, "the body ended early")
        return got

    def _retry(self, failures: int, reason: str) -> int:
        failures += 1
        if failures > self.retries:
            raise MirrorError(f"{reason}; gave up after {failures} attempts")
        delay = min(30.0, self.resolver.http.settings.backoff * 2 ** (failures - 1))
        log.info("%s; retrying in %.1f s", reason, delay)
        time.sleep(delay)
        return failures

    def _space(self, directory: Path, need: int, href: str) -> None:
        try:
            vfs = os.statvfs(directory)
        except OSError:
            return
        free = vfs.f_bavail * vfs.f_frsize
        if need + _RESERVE > free:
            raise MirrorError(f"{directory}: not enough free space for {href} ({need} bytes needed, {free} free)")

    def _check(self, part: Path, body: str, href: str, final: Path) -> None:
        """GDAL opens the file and reads its last tile; the model check passes for ``body``."""
        shown = str(final) + ".part"
        try:
            ds = raster.open_model(str(part), True, name=shown)
            why = raster.read_last_block(ds)
            if why:
                raise ModelError(f"GDAL cannot read the last block: {shorten(why, 120)}")
            result = self.resolver.models.model_check(ds, shown, body)
        except ModelError as exc:
            raise MirrorError(f"{href}: downloaded, but not a usable model: {exc}") from None
        if not result["ok"]:
            raise MirrorError(f"{href}: downloaded, but {result['reason']}")

    # ------------------------------------------------------------ the catalog

    def _prepare(self) -> None:
        try:
            self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            (self.directory / _META).mkdir(mode=0o755, exist_ok=True)
        except OSError as exc:
            raise MirrorError(f"cannot create the mirror directory {self.directory}: {exc.strerror}") from None

    @contextmanager
    def _catalog_lock(self) -> Iterator[None]:
        fd = os.open(self.directory / _META / "catalog.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read_catalog(self) -> dict[str, Any]:
        try:
            raw, _ = safeio.read_regular(self.catalog_path, _MAX_CATALOG, follow=False, what="mirror catalog")
            cat = safeio.loads_json(raw, str(self.catalog_path))
        except UnsafeFileError as exc:
            if exc.errno != errno.ENOENT:
                raise MirrorError(str(exc)) from None
            cat = None
        except ValueError as exc:
            raise MirrorError(f"cannot read the mirror catalog: {exc}") from None
        if cat is None:
            return {"type": "Catalog", "stac_version": "1.0.0", "id": "shaperesolver-mirror",
                    "description": "DEMs mirrored by shaperesolver", "links": [
                        {"rel": "root", "href": f"./{CATALOG}", "type": "application/json"}]}
        if not isinstance(cat, dict) or cat.get("type") != "Catalog" or not isinstance(cat.get("links"), list):
            raise MirrorError(f"{self.catalog_path} is not a STAC catalog shaperesolver wrote")
        cat["links"] = [ln for ln in cat["links"] if isinstance(ln, dict)]
        return cat

    def _read_item(self, parts: tuple[str, ...]) -> Any:
        """The item document in the directory ``parts`` (reached without following links);
        None when it is not there or not JSON."""
        try:
            with _pinned(self.directory, parts) as where:
                raw, _ = safeio.read_regular(where / f"{parts[-1]}.json", _MAX_CATALOG, follow=False, what="mirror item")
            return safeio.loads_json(raw, "/".join(parts))
        except (UnsafeFileError, ValueError, MirrorError):
            return None

    def _entry(self, key: _Key, name: str, checksum: _Checksum | None) -> tuple[Path, int, str] | None:
        """(path, size, sha256) when the catalog lists ``key``'s item with its file there, whole
        (by its size), and the same file the source describes now (by its ``file:checksum``)."""
        try:
            cat = self._read_catalog()
        except MirrorError:
            return None
        listed = {ln.get("href") for ln in cat["links"] if ln.get("rel") == "item"}
        for parts in (key.parts, key.legacy):
            if _item_href(parts) not in listed:
                continue
            doc = self._read_item(parts)
            if not key.holds(doc):
                continue
            for asset in (doc.get("assets") or {}).values() if isinstance(doc.get("assets"), Mapping) else ():
                if not isinstance(asset, Mapping) or asset.get("href") != "./" + name:
                    continue
                size, ours = asset.get("file:size"), str(asset.get("file:checksum", ""))
                path = self.directory.joinpath(*parts, name)
                try:
                    st = os.stat(path, follow_symlinks=False)
                except OSError:
                    continue
                if not (isinstance(size, int) and stat.S_ISREG(st.st_mode) and st.st_size == size
                        and re.fullmatch(r"1220[0-9a-f]{64}", ours)):
                    continue
                if checksum is not None and checksum.text not in (ours, asset.get("shaperesolver:source_checksum")):
                    log.info("%s: the source's file:checksum of %s is %s now, not the mirrored file's; downloading "
                             "it again", key.body, key.item_id, checksum.text)
                    continue
                return path, size, ours[4:]
        return None

    def _prune(self, key: _Key, kept: tuple[str, ...], kept_version: tuple[int, str] | None) -> list[str]:
        """Remove the items of ``key``'s body and collection older than the one kept (files and
        catalog links); returns their ids.  A newer or equal version, an item whose version
        cannot be compared, and anything reached through a link stay."""
        removed: list[tuple[str, ...]] = []
        with self._catalog_lock():
            cat = self._read_catalog()
            links = []
            for ln in cat["links"]:
                parts = _item_parts(ln.get("href")) if ln.get("rel") == "item" else None
                if parts is None or parts == kept:
                    links.append(ln)
                    continue
                doc = self._read_item(parts)
                older = (_is_item(doc) and _collection(doc) == key.collection
                         and key.body in {bodies.canonical(t) for t in item_targets(doc)}
                         and kept_version is not None and (mine := _numeric_version(doc)) is not None
                         and mine < kept_version)
                if not older:
                    links.append(ln)
                    continue
                removed.append(parts)
            cat["links"] = links
            _atomic_write(self.catalog_path, cat)
            for parts in removed:
                try:
                    with _pinned(self.directory, parts[:-1]) as parent, _pinned(parent, parts[-1:]) as where:
                        for entry in os.scandir(where):
                            if entry.is_file(follow_symlinks=False):
                                os.unlink(where / entry.name)
                        os.rmdir(parent / parts[-1])  # a link put in its place meanwhile is not a directory: refused
                except (OSError, MirrorError) as exc:
                    log.warning("%s: pruned %s from the catalog, but could not remove its directory: %s",
                                key.body, "/".join(parts), exc)
                log.info("%s: pruned %s", key.body, "/".join(parts))
        return [parts[-1] for parts in removed]

    @staticmethod
    def _safe(name: str, what: str, item_id: str) -> str:
        if not _SAFE.fullmatch(name) or name in (CATALOG, _META) or name.endswith((".part", ".json")):
            raise MirrorError(f"item {shorten(item_id, 80)}: refusing {what} {shorten(name, 80)!r} for a file in the mirror "
                              "(letters, digits, '.', '_', '+', '-' only)")
        return name


class _Cut(Exception):
    """The connection broke or the body ended before the announced length."""

    def __init__(self, got: int, reason: str) -> None:
        self.got, self.reason = got, reason


def _source_item(raw: Iterable[Any], item_id: str, asset_key: str, href: str, names: Iterable[str]) -> Mapping[str, Any]:
    """The item of ``raw`` that was chosen: its id, one of the body's names among its targets,
    and the chosen asset's href (items of other bodies or collections may share the id)."""
    wanted = set(names)
    for it in raw:
        if not isinstance(it, Mapping) or str(it.get("id")) != item_id or not wanted.intersection(item_targets(it)):
            continue
        assets = it.get("assets")
        asset = assets.get(asset_key) if isinstance(assets, Mapping) else None
        if isinstance(asset, Mapping) and asset.get("href") == href:
            return it
    raise MirrorError(f"item {shorten(item_id, 80)}: the chosen asset is not in the catalog's answer")


def _numeric_version(doc: Any) -> tuple[int, str] | None:
    """An item's version as a comparable number (digit count, digits), or None when it
    has none that compares (prune never removes what it cannot compare)."""
    got = stacdoc.read_item(doc, "item")
    if not isinstance(got, stacdoc.Item):
        return None
    numeric, length, digits, _ = version_key(got)
    return (length, digits) if numeric == 1 else None


def _is_item(doc: Any) -> bool:
    """Whether ``doc`` has the shape of a STAC item this module reads (an object whose
    ``properties`` is an object)."""
    return isinstance(doc, Mapping) and isinstance(doc.get("properties"), Mapping)


def _collection(doc: Mapping[str, Any]) -> str | None:
    value = doc.get("collection")
    return value if isinstance(value, str) and value else None


def _dir_name(body: str) -> str:
    """The directory a body's items are kept in: its name, or when that is not a plain file
    name (``Tempel 1``) the name made plain plus a hash of it, so no two bodies share one."""
    if _SAFE.fullmatch(body) and body not in (CATALOG, _META) and not body.endswith((".part", ".json")):
        return body
    plain = re.sub(r"[^A-Za-z0-9_+-]", "_", body)[:150]
    return f"b{plain}-{hashlib.sha256(body.encode()).hexdigest()[:12]}"


def _item_href(parts: tuple[str, ...]) -> str:
    return "./" + "/".join(parts) + f"/{parts[-1]}.json"


def _item_parts(href: Any) -> tuple[str, ...] | None:
    """The item directory of a catalog link this module writes (the keyed layout or the
    older ``./<id>/<id>.json``); None for anything else."""
    if not isinstance(href, str) or not href.startswith("./"):
        return None
    *parts, doc = href[2:].split("/")
    if len(parts) not in (1, 3) or doc != f"{parts[-1]}.json":
        return None
    for i, part in enumerate(parts):
        if not (_SAFE.fullmatch(part) or (len(parts) == 3 and i == 1 and part == _NO_COLLECTION)) or part == _META:
            return None
    return tuple(parts)


# ------------------------------------------------------------ proving a file whole


def _validator(headers: Mapping[str, str]) -> str | None:
    """The strong validator of an answer: its ETag, else its Last-Modified (None if neither)."""
    etag = (headers.get("ETag") or "").strip()
    if _strong(etag):
        return etag
    modified = (headers.get("Last-Modified") or "").strip()
    return modified or None


def _strong(validator: Any) -> bool:
    """Whether ``validator`` can go in ``If-Range`` (a weak ETag cannot)."""
    return isinstance(validator, str) and bool(validator) and not validator.startswith("W/") and validator.isprintable()


def _content_range(value: str) -> tuple[int, int, int] | None:
    m = re.fullmatch(r"bytes (\d{1,20})-(\d{1,20})/(\d{1,20})", value.strip())
    return None if m is None else (int(m.group(1)), int(m.group(2)), int(m.group(3)))


def _resume_refused(resp: Any, have: int, total: int | None, validator: str) -> str | None:
    """Why the answer to a resumed request does not continue the part we hold (None if it does):
    a 206 with the recorded validator and a Content-Range from byte ``have`` to the end of
    ``total`` bytes is the only answer that does."""
    if resp.status_code == 200:
        return "the server sent the whole file again (200 to a range request)"
    if resp.status_code != 206:
        return f"the server refused the range (HTTP {resp.status_code})"
    rng = _content_range(resp.headers.get("Content-Range", ""))
    if rng is None or rng[0] != have or rng[1] + 1 != rng[2]:
        return f"the server answered bytes={have}- with Content-Range {resp.headers.get('Content-Range')!r}"
    if rng[2] != total:
        return f"the file is {rng[2]} bytes now, not {total}"
    field = "ETag" if validator.startswith('"') else "Last-Modified"
    now = (resp.headers.get(field) or "").strip()
    if now != validator:
        return f"the file changed ({field} {shorten(now, 80)!r}, was {shorten(validator, 80)!r})"
    return None


def _source_checksum(value: Any, href: str) -> _Checksum | None:
    """The source asset's ``file:checksum`` when it is a multihash this module can compare;
    None (with a note in the log) when there is none or it cannot be compared."""
    if value is None:
        return None
    text = value.strip().lower() if isinstance(value, str) else ""
    raw = bytes.fromhex(text) if re.fullmatch(r"(?:[0-9a-f]{2}){3,130}", text) else b""
    code, i = _varint(raw, 0)
    length, i = _varint(raw, i)
    if code is None or length is None or length == 0 or len(raw) - i != length:
        log.warning("%s: the catalog's file:checksum %s is not a multihash hex string; not compared",
                    href, shorten(repr(value), 80))
        return None
    if code not in _MULTIHASH:
        log.warning("%s: the catalog's file:checksum uses multihash code 0x%x, which is not one compared here; "
                    "not compared", href, code)
        return None
    name, factory = _MULTIHASH[code]
    if length > factory().digest_size:
        log.warning("%s: the catalog's file:checksum is %d bytes, more than a %s digest; not compared", href, length, name)
        return None
    return _Checksum(text, name, code, raw[i:])


def _varint(raw: bytes, i: int) -> tuple[int | None, int]:
    """An unsigned varint (multiformats) at ``raw[i:]``: (value, next index); None if there is none."""
    value = shift = 0
    while i < len(raw) and shift < 63:
        byte = raw[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7
    return None, i


def _digests(names: set[str], part: Path, length: int) -> dict[str, Any]:
    """Hash objects by multihash name, fed the first ``length`` bytes of ``part`` (a part being resumed)."""
    factories = {name: factory for name, factory in _MULTIHASH.values()}
    hashes = {name: factories[name]() for name in names}
    if length:
        with open(part, "rb") as f:
            while length > 0 and (chunk := f.read(min(_CHUNK, length))):
                for h in hashes.values():
                    h.update(chunk)
                length -= len(chunk)
    return hashes


def _compare(checksum: _Checksum | None, digests: dict[str, Any], href: str) -> None:
    """Refuse a file whose digest is not the source's ``file:checksum``."""
    if checksum is None:
        return
    got = digests[checksum.name].digest()[: len(checksum.digest)]
    if got != checksum.digest:
        raise MirrorError(f"{href}: downloaded, but its {checksum.name} is {got.hex()}, not the {checksum.digest.hex()} "
                          "of the catalog's file:checksum; not kept")
    log.info("%s: %s matches the catalog's file:checksum", href, checksum.name)


# ------------------------------------------------------------ files


@contextmanager
def _pinned(top: Path, parts: tuple[str, ...], create: bool = False) -> Iterator[Path]:
    """The directory ``top/parts...`` held open, reached one component at a time without
    following a link (another user may have planted one to aim our writes or deletes), made
    when ``create``; as a path that reaches the held directory whatever is renamed or
    swapped meanwhile (``/proc/self/fd/N`` on Linux; the path itself elsewhere)."""
    try:
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise MirrorError(f"{top}: {exc.strerror}") from None
    try:
        for i, part in enumerate(parts):
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                where = top.joinpath(*parts[: i + 1])
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise MirrorError(f"{where}: not a directory but a link or a file; refusing to write or delete "
                                      "through it") from None
                raise MirrorError(f"{where}: {exc.strerror}") from None
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    try:
        held = Path(f"/proc/self/fd/{fd}")
        yield held if held.is_dir() else top.joinpath(*parts)
    finally:
        os.close(fd)


def _meta_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = safeio.loads_json(safeio.read_regular(path, 65536, follow=False)[0], str(path))
    except (UnsafeFileError, ValueError):
        return {}
    return meta if isinstance(meta, dict) and isinstance(meta.get("total"), int) else {}


def _write_all(fd: int, data: bytes, path: Path) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _atomic_write(path: Path, doc: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = (json.dumps(doc, indent=1) + "\n").encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, data, tmp)
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        _unlink(tmp)
        raise MirrorError(f"cannot write {path}: {exc.strerror}") from None
    os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
