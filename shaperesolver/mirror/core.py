"""Download the chosen DEM of each body into a directory that is a static STAC catalog.

``DIR/catalog.json`` links one item document per mirrored item
(``DIR/<item id>/<item id>.json``) whose single asset is the local file beside it, with
the original href (``shaperesolver:original_href``), ``file:size`` and
``file:checksum`` (SHA-256 multihash).  A resolver with ``catalog=DIR`` then resolves
to local paths without a network.

Downloads are resumable (``<file>.part`` and ``<file>.part.json`` in the item's
directory; HTTP Range with ``If-Range``), checked (the announced length, GDAL opens
it and its last tile, the model check for its body), atomic (fsync, rename, fsync of
the directory; a file enters the catalog only after that), bounded (retries, socket
timeouts, the address policy of searches, ``max_size``), and done once per file among
processes sharing DIR (a :mod:`~shaperesolver.base.claims` claim per item).  The catalog is
rewritten under an exclusive ``flock`` by atomic rename.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlparse

from ..base import bodies, claims, safeio
from ..catalog.choice import check_href, item_targets
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
_CHUNK = 1 << 20
#: A download slower than MIN_RATE bytes/s over SLOW_TIME seconds is cut and retried.
MIN_RATE = 1024
SLOW_TIME = 60.0
_MAX_CATALOG = 64 * 2**20
_RESERVE = 2**20  # free space left over after a download


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
    pruned: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


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
        """Mirror each distinct body of ``targets``: yields (target, result or None, error or None)."""
        seen: set[str] = set()
        for target in targets:
            body = bodies.canonical(target)
            if body in seen:
                continue
            seen.add(body)
            try:
                yield target, self.add(target, version), None
            except ShapeResolverError as exc:
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
        item = next(it for it in raw if isinstance(it, Mapping) and str(it.get("id")) == choice.item_id
                    and (it.get("assets") or {}).get(choice.asset_key, {}).get("href") is not None)
        if choice.local:
            raise MirrorError(f"{body}: item {choice.item_id} is already a local file ({choice.href})")
        href = self.policy.check(check_href(choice.href, choice.item_id, self.allow_http), "asset href")
        item_id = self._safe(choice.item_id, "item id", choice.item_id)
        name = self._safe(unquote(urlparse(href).path.rsplit("/", 1)[-1]), "file name", choice.item_id)
        asset = (item.get("assets") or {})[choice.asset_key]
        announced = asset.get("file:size")
        if isinstance(announced, bool) or not isinstance(announced, int) or announced < 0:
            announced = None
        if announced is not None and announced > self.max_size:
            raise MirrorError(f"{body}: {href} is {announced} bytes by the catalog, more than the "
                              f"{self.max_size}-byte limit (raise maxsize=)")
        self._prepare()
        final = self.directory / item_id / name

        def poll() -> Mirrored | None:
            entry = self._entry(item_id, name)
            return None if entry is None else Mirrored(body, item_id, choice.version, str(final), entry[0], entry[1], 0, "present")

        found = poll()
        if found is None:
            key = "mirror-" + hashlib.sha256(f"{item_id}/{name}".encode()).hexdigest()[:32]
            with claims.claim(self.directory / _META, key, poll, self.claim_wait, what=f"{body} download") as c:
                found = c.result or self._download_and_add(body, item, choice.asset_key, href, final, announced,
                                                           choice.version)
        if self.prune:
            found = Mirrored(**{**found.__dict__, "pruned": tuple(self._prune(body, item_id))})
        return found

    # ------------------------------------------------------------ download

    def _download_and_add(self, body: str, item: Mapping[str, Any], key: str, href: str, final: Path,
                          announced: int | None, version: str | None) -> Mirrored:
        final.parent.mkdir(mode=0o755, exist_ok=True)
        with _pinned(final.parent) as where:
            try:
                size, fetched, resumed, digest = self._into(where, final, body, item, key, href, announced)
            except MirrorError as exc:  # name the item directory, not the descriptor it was reached by
                raise MirrorError(str(exc).replace(str(where), str(final.parent))) from None
        log.info("%s: %s in the mirror (%d bytes, %d fetched)", body, final, size, fetched)
        return Mirrored(body, final.parent.name, version, str(final), size, digest, fetched,
                        "resumed" if resumed else "downloaded")

    def _into(self, where: Path, final: Path, body: str, item: Mapping[str, Any], key: str, href: str,
              announced: int | None) -> tuple[int, int, bool, str]:
        """Download into the item directory held open as ``where``, check, add to the catalog."""
        part = where / (final.name + ".part")
        try:
            size, fetched, resumed, digest = self._fetch(href, part, announced, f"{body} {final.name}")
        except BaseException:
            try:
                final.parent.rmdir()  # only when empty: a part kept for resuming stays
            except OSError:
                pass
            raise
        try:
            self._check(part, body, href, final)
            os.replace(part, where / final.name)
            _fsync_dir(where)
        except BaseException:
            _unlink(part)
            _unlink(_meta_path(part))
            raise
        _unlink(_meta_path(part))
        local = {k: v for k, v in item["assets"][key].items() if k != "alternate"}
        local.update({"href": "./" + final.name, "file:size": size, "file:checksum": "1220" + digest,
                      "shaperesolver:original_href": href})
        doc = {k: v for k, v in item.items() if k not in ("links", "assets")}
        doc.update({"type": "Feature", "stac_version": item.get("stac_version", "1.0.0"), "assets": {key: local},
                    "links": [{"rel": "root", "href": f"../{CATALOG}", "type": "application/json"},
                              {"rel": "parent", "href": f"../{CATALOG}", "type": "application/json"}]})
        item_id = final.parent.name
        with self._catalog_lock():
            _atomic_write(where / f"{item_id}.json", doc)
            cat = self._read_catalog()
            href_rel = f"./{item_id}/{item_id}.json"
            links = [ln for ln in cat["links"] if ln.get("href") != href_rel]
            links.append({"rel": "item", "href": href_rel, "type": "application/geo+json", "title": body})
            cat["links"] = links
            _atomic_write(self.catalog_path, cat)
        return size, fetched, resumed, digest

    def _fetch(self, href: str, part: Path, announced: int | None, what: str) -> tuple[int, int, bool, str]:
        """Download ``href`` into ``part`` (resuming it); returns (size, bytes fetched, resumed, SHA-256)."""
        meta_path = _meta_path(part)
        meta = _read_meta(meta_path)
        have = part.stat().st_size if part.exists() and meta.get("href") == href else 0
        if have == 0:
            _unlink(part)
        resumed = have > 0
        hasher = _sha256(part, have)
        fetched = 0
        total = meta.get("total") if have else None
        failures = 0
        bar: Progress | None = None
        broken = stream_errors()
        try:
            while True:
                headers = {"Accept": "*/*", "Accept-Encoding": "identity"}
                if have:
                    headers["Range"] = f"bytes={have}-"
                    if meta.get("validator"):
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
                    if resp.status_code == 416 and have:
                        have, total, resumed, hasher = 0, None, False, hashlib.sha256()
                        _unlink(part)
                        continue
                    start, full = self._extent(resp, href, have)
                    if total is not None and full != total and start:
                        # the file changed under a resumed download: start over
                        have, total, resumed, hasher = 0, None, False, hashlib.sha256()
                        _unlink(part)
                        continue
                    total = full
                    if total > self.max_size:
                        raise MirrorError(f"{href}: {total} bytes, more than the {self.max_size}-byte limit (raise maxsize=)")
                    if announced is not None and total != announced:
                        raise MirrorError(f"{href}: the server announces {total} bytes, the catalog {announced}")
                    if start == 0 and have:
                        have, resumed, hasher = 0, False, hashlib.sha256()
                    self._space(part.parent, total - have, href)
                    validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
                    meta = {"href": href, "total": total, "validator": validator}
                    _atomic_write(meta_path, meta)
                    if bar is None and self.progress is not None:
                        bar = self.progress(what, total, have)
                    try:
                        got = self._stream(resp, part, have, total, href, bar, hasher)
                    except _Cut as cut:
                        have += cut.got
                        fetched += cut.got
                        failures = self._retry(failures, f"{href}: {cut.reason} at {have} of {total} bytes")
                        continue
                    have += got
                    fetched += got
                    return total, fetched, resumed, hasher.hexdigest()
        finally:
            if bar is not None:
                bar.close()

    def _get(self, href: str, headers: dict[str, str]) -> tuple[Any, str]:
        try:
            resp, url = self.resolver.http.stream(href, headers, self.policy)
        except CatalogError as exc:
            raise MirrorError(str(exc)) from None
        if resp.status_code not in (200, 206, 416, 429, 500, 502, 503, 504):
            resp.close()
            raise MirrorError(f"{url}: HTTP {resp.status_code}")
        return resp, url

    @staticmethod
    def _extent(resp: Any, href: str, have: int) -> tuple[int, int]:
        """(first byte, whole length) of what the response carries."""
        length = resp.headers.get("Content-Length", "")
        if resp.status_code == 206:
            m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", resp.headers.get("Content-Range", "").strip())
            if not m or int(m.group(1)) != have or int(m.group(2)) + 1 != int(m.group(3)):
                raise MirrorError(f"{href}: the server answered a range request with Content-Range "
                                  f"{resp.headers.get('Content-Range')!r}")
            if length.isdigit() and int(length) != int(m.group(3)) - have:
                raise MirrorError(f"{href}: Content-Length {length} does not match Content-Range "
                                  f"{resp.headers.get('Content-Range')!r}")
            return have, int(m.group(3))
        if not length.isdigit():
            raise MirrorError(f"{href}: the server announces no Content-Length")
        return 0, int(length)

    def _stream(self, resp: Any, part: Path, have: int, total: int, href: str, bar: Progress | None,
                hasher: Any) -> int:
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
                hasher.update(chunk)
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

    def _entry(self, item_id: str, name: str) -> tuple[int, str] | None:
        """(size, sha256) when the catalog lists ``item_id`` and its file is there, whole."""
        try:
            raw, _ = safeio.read_regular(self.directory / item_id / f"{item_id}.json", _MAX_CATALOG, follow=False,
                                         what="mirror item")
            doc = safeio.loads_json(raw, item_id)
            cat = self._read_catalog()
        except (UnsafeFileError, ValueError, MirrorError):
            return None
        if not any(ln.get("href") == f"./{item_id}/{item_id}.json" for ln in cat["links"]):
            return None
        for asset in (doc.get("assets") or {}).values() if isinstance(doc, dict) else ():
            if isinstance(asset, dict) and asset.get("href") == "./" + name:
                size, checksum = asset.get("file:size"), str(asset.get("file:checksum", ""))
                try:
                    st = os.stat(self.directory / item_id / name, follow_symlinks=False)
                except OSError:
                    return None
                if isinstance(size, int) and st.st_size == size and checksum.startswith("1220"):
                    return size, checksum[4:]
        return None

    def _prune(self, body: str, keep: str) -> list[str]:
        """Remove the other items of ``body`` (files and catalog links); returns their ids."""
        removed = []
        with self._catalog_lock():
            cat = self._read_catalog()
            links = []
            for ln in cat["links"]:
                m = re.fullmatch(r"\./([^/]+)/\1\.json", str(ln.get("href", "")))
                if ln.get("rel") != "item" or not m or m.group(1) == keep or not _SAFE.fullmatch(m.group(1)):
                    links.append(ln)
                    continue
                if (self.directory / m.group(1)).is_symlink():  # planted: never delete through it
                    links.append(ln)
                    continue
                doc_path = self.directory / m.group(1) / f"{m.group(1)}.json"
                try:
                    doc = safeio.loads_json(safeio.read_regular(doc_path, _MAX_CATALOG, follow=False)[0], str(doc_path))
                except (UnsafeFileError, ValueError):
                    links.append(ln)
                    continue
                if body not in {bodies.canonical(t) for t in item_targets(doc)}:
                    links.append(ln)
                    continue
                removed.append(m.group(1))
            cat["links"] = links
            _atomic_write(self.catalog_path, cat)
            for item_id in removed:
                folder = self.directory / item_id
                with _pinned(folder) as where:
                    for entry in os.scandir(where):
                        if entry.is_file(follow_symlinks=False):
                            os.unlink(where / entry.name)
                folder.rmdir()  # a link put in its place meanwhile is not a directory: refused
                log.info("%s: pruned %s", body, item_id)
        return removed

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


@contextmanager
def _pinned(folder: Path) -> Iterator[Path]:
    """``folder`` held open, refused if it is a link (another user may have planted it to aim
    our writes or deletes), as a path that reaches the held directory whatever is renamed or
    swapped meanwhile (``/proc/self/fd/N`` on Linux; the folder itself elsewhere)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise MirrorError(f"{folder}: not a directory but a link or a file; refusing to write or delete "
                              "through it") from None
        raise MirrorError(f"{folder}: {exc.strerror}") from None
    try:
        held = Path(f"/proc/self/fd/{fd}")
        yield held if held.is_dir() else folder
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


def _sha256(path: Path, length: int) -> Any:
    """A SHA-256 object fed the first ``length`` bytes of ``path`` (a part being resumed)."""
    h = hashlib.sha256()
    if length:
        with open(path, "rb") as f:
            while length > 0 and (chunk := f.read(min(_CHUNK, length))):
                h.update(chunk)
                length -= len(chunk)
    return h
