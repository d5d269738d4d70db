"""One file fetched whole: resumed only on proof, checked, then renamed into place.

Owns the download of one asset into ``<file>.part`` (with its record ``<file>.part.json``:
the href, the whole length and the validator), the source's ``file:checksum`` (a
multihash) and the bounds of a download (retries, a low-speed limit, free space,
``max_size``).  It reaches the server only through :meth:`Http.stream
<shaperesolver.net.transport.Http.stream>` with the mirror's address policy.

Promises:

* a part is resumed only with ``If-Range`` carrying the strong validator (ETag, else
  Last-Modified) recorded with it, and only when the server answers 206 with that same
  validator and a ``Content-Range`` that starts exactly at the bytes held and ends at the
  size recorded; anything else (a 200, another validator, range or size, a server that
  ignores ``If-Range``) discards the part and starts over;
* the announced length (the catalog's ``file:size`` and the server's), the source's
  ``file:checksum`` (SHA-1, SHA-2, SHA-3, BLAKE2b, MD5; an unknown code is logged and not
  compared) and the caller's own check must all agree before :meth:`Download.keep`
  renames the part to its name (fsync, rename, fsync of the directory); a file that
  fails is removed with its record;
* a download slower than ``min_rate`` bytes/s over ``slow_time`` seconds, a broken
  connection or a 429/5xx is retried (``retries`` times, with the HTTP settings'
  backoff) from the bytes already written; a full disk removes the part.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..base import safeio
from ..base.log import get as get_logger
from ..errors import CatalogError, MirrorError, UnsafeFileError, shorten
from ..net.transport import AddressPolicy, stream_errors
from .layout import atomic_write, fsync_dir, unlink, write_all

if TYPE_CHECKING:
    from ..net.transport import Http

log = get_logger(__name__)

#: A download slower than MIN_RATE bytes/s over SLOW_TIME seconds is cut and retried.
MIN_RATE = 1024
SLOW_TIME = 60.0
_CHUNK = 1 << 20
_RESERVE = 2**20  # free space left over after a download

#: multihash codes of ``file:checksum`` that are compared: code -> (name, hash factory)
MULTIHASH: dict[int, tuple[str, Callable[[], Any]]] = {
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


class Progress(Protocol):
    def update(self, n: int) -> None: ...
    def close(self) -> None: ...


#: makes a progress display: (description, total bytes, bytes already there)
ProgressFactory = Callable[[str, int, int], Progress]


@dataclass(frozen=True)
class Checksum:
    """A source's ``file:checksum`` that can be compared."""

    text: str
    name: str
    code: int
    digest: bytes


@dataclass
class Fetched:
    """A file downloaded into its part: its size, the bytes this run fetched, whether it
    continued an earlier part, and its digests by multihash name."""

    size: int
    fetched: int
    resumed: bool
    digests: dict[str, Any] = field(repr=False)

    @property
    def sha256(self) -> str:
        return str(self.digests["sha2-256"].hexdigest())


class _Cut(Exception):
    """The connection broke or the body ended before the announced length."""

    def __init__(self, got: int, reason: str) -> None:
        self.got, self.reason = got, reason


def part_of(path: Path) -> Path:
    """Where ``path`` is downloaded to before it is whole."""
    return path.with_name(path.name + ".part")


def record_of(part: Path) -> Path:
    """The record kept beside a part: its href, whole length and validator."""
    return part.with_name(part.name + ".json")


@dataclass
class Download:
    """Downloads files whole through ``http`` under ``policy`` and the given bounds."""

    http: Http
    policy: AddressPolicy
    max_size: int
    retries: int = 3
    min_rate: int = MIN_RATE
    slow_time: float = SLOW_TIME
    progress: ProgressFactory | None = None

    def fetch(self, href: str, part: Path, announced: int | None, what: str, checksum: Checksum | None) -> Fetched:
        """Download ``href`` into ``part`` (resuming it only when the server proves the file
        is the same); :class:`MirrorError` when it cannot be had whole."""
        names = {"sha2-256"} | ({checksum.name} if checksum is not None else set())
        meta_path = record_of(part)
        meta = _read_record(meta_path)
        have = 0
        if meta.get("href") == href and _strong(meta.get("validator")) and (announced in (None, meta["total"])):
            try:
                st = os.stat(part, follow_symlinks=False)
                have = st.st_size if stat.S_ISREG(st.st_mode) and st.st_size < meta["total"] else 0
            except OSError:
                have = 0
        if have == 0:
            unlink(part)
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
            unlink(part)

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
                        why = resume_refused(resp, have, total, meta["validator"])
                        if why:
                            start_over(why)
                            if resp.status_code != 200:  # a 200 carries the whole file: take it
                                continue
                    elif resp.status_code == 416:
                        raise MirrorError(f"{href}: HTTP 416 to a request for the whole file")
                    total = _extent(resp, href, have)
                    if total > self.max_size:
                        raise MirrorError(f"{href}: {total} bytes, more than the {self.max_size}-byte limit (raise maxsize=)")
                    if announced is not None and total != announced:
                        raise MirrorError(f"{href}: the server announces {total} bytes, the catalog {announced}")
                    _space(part.parent, total - have, href)
                    meta = {"href": href, "total": total, "validator": validator(resp.headers)}
                    atomic_write(meta_path, meta)
                    if bar is None and self.progress is not None:
                        bar = self.progress(what, total, have)
                    try:
                        got = self._stream(resp, part, have, total, href, bar, digests)
                    except _Cut as cut:
                        have += cut.got
                        fetched += cut.got
                        failures = self._retry(failures, f"{href}: {cut.reason} at {have} of {total} bytes")
                        continue
                    return Fetched(total, fetched + got, resumed, digests)
        finally:
            if bar is not None:
                bar.close()

    def keep(self, got: Fetched, part: Path, name: str, href: str, checksum: Checksum | None,
             accept: Callable[[Path], None]) -> None:
        """Rename the downloaded ``part`` to ``name`` beside it once its digest is the source's
        ``file:checksum`` and ``accept(part)`` raised nothing; else remove it and raise."""
        try:
            compare(checksum, got.digests, href)
            accept(part)
            os.replace(part, part.parent / name)
            fsync_dir(part.parent)
        except BaseException:
            unlink(part)
            unlink(record_of(part))
            raise
        unlink(record_of(part))

    def _get(self, href: str, headers: dict[str, str]) -> tuple[Any, str]:
        try:
            # the headers within the low-speed time (at most the deadline): a host that drips them is cut
            resp, url = self.http.stream(href, headers, self.policy, headers_within=self.slow_time)
        except CatalogError as exc:  # malformed answers (a Location that is no URL) included
            raise MirrorError(str(exc)) from None
        if resp.status_code not in (200, 206, 416, 429, 500, 502, 503, 504):
            resp.close()
            raise MirrorError(f"{url}: HTTP {resp.status_code}")
        return resp, url

    def _stream(self, resp: Any, part: Path, have: int, total: int, href: str, bar: Progress | None,
                digests: dict[str, Any]) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_APPEND if have else os.O_TRUNC)
        fd = os.open(part, flags, 0o644)
        got = 0
        try:
            if have and os.fstat(fd).st_size != have:
                raise MirrorError(f"{part}: changed size during the download")
            window, window_got = time.monotonic(), 0
            arriving = self.http.chunks(resp, _CHUNK)
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
                write_all(fd, chunk)
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
                unlink(part)
                unlink(record_of(part))
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
        delay = min(30.0, self.http.settings.backoff * 2 ** (failures - 1))
        log.info("%s; retrying in %.1f s", reason, delay)
        time.sleep(delay)
        return failures


def _read_record(path: Path) -> dict[str, Any]:
    try:
        meta = safeio.loads_json(safeio.read_regular(path, 65536, follow=False)[0], str(path))
    except (UnsafeFileError, ValueError):
        return {}
    return meta if isinstance(meta, dict) and isinstance(meta.get("total"), int) else {}


def _extent(resp: Any, href: str, have: int) -> int:
    """The whole length of the file the response carries (checked against its range)."""
    length = resp.headers.get("Content-Length", "")
    if resp.status_code == 206:
        whole = _rest_of(resp, have)
        if whole is None:
            raise MirrorError(f"{href}: the server answered a range request with Content-Range "
                              f"{resp.headers.get('Content-Range')!r}")
        if length.isdigit() and int(length) != whole - have:
            raise MirrorError(f"{href}: Content-Length {length} does not match Content-Range "
                              f"{resp.headers.get('Content-Range')!r}")
        return whole
    if not length.isdigit():
        raise MirrorError(f"{href}: the server announces no Content-Length")
    return int(length)


def _space(directory: Path, need: int, href: str) -> None:
    try:
        vfs = os.statvfs(directory)
    except OSError:
        return
    free = vfs.f_bavail * vfs.f_frsize
    if need + _RESERVE > free:
        raise MirrorError(f"{directory}: not enough free space for {href} ({need} bytes needed, {free} free)")


# ------------------------------------------------------------ proving a file whole


def validator(headers: Mapping[str, str]) -> str | None:
    """The strong validator of an answer: its ETag, else its Last-Modified (None if neither)."""
    etag = (headers.get("ETag") or "").strip()
    if _strong(etag):
        return etag
    modified = (headers.get("Last-Modified") or "").strip()
    return modified or None


def _strong(value: Any) -> bool:
    """Whether ``value`` can go in ``If-Range`` (a weak ETag cannot)."""
    return isinstance(value, str) and bool(value) and not value.startswith("W/") and value.isprintable()


def content_range(value: str) -> tuple[int, int, int] | None:
    """(first, last, whole length) of a ``Content-Range: bytes a-b/n``; None for anything else."""
    m = re.fullmatch(r"bytes (\d{1,20})-(\d{1,20})/(\d{1,20})", value.strip())
    return None if m is None else (int(m.group(1)), int(m.group(2)), int(m.group(3)))


def _rest_of(resp: Any, have: int) -> int | None:
    """The whole length of the file when the answer's Content-Range runs from byte ``have``
    to its end; None for any other range."""
    rng = content_range(resp.headers.get("Content-Range", ""))
    return None if rng is None or rng[0] != have or rng[1] + 1 != rng[2] else rng[2]


def resume_refused(resp: Any, have: int, total: int | None, recorded: str) -> str | None:
    """Why the answer to a resumed request does not continue the part we hold (None if it does):
    a 206 with the ``recorded`` validator and a Content-Range from byte ``have`` to the end of
    ``total`` bytes is the only answer that does."""
    if resp.status_code == 200:
        return "the server sent the whole file again (200 to a range request)"
    if resp.status_code != 206:
        return f"the server refused the range (HTTP {resp.status_code})"
    whole = _rest_of(resp, have)
    if whole is None:
        return f"the server answered bytes={have}- with Content-Range {resp.headers.get('Content-Range')!r}"
    if whole != total:
        return f"the file is {whole} bytes now, not {total}"
    name = "ETag" if recorded.startswith('"') else "Last-Modified"
    now = (resp.headers.get(name) or "").strip()
    if now != recorded:
        return f"the file changed ({name} {shorten(now, 80)!r}, was {shorten(recorded, 80)!r})"
    return None


def source_checksum(value: Any, href: str) -> Checksum | None:
    """The source asset's ``file:checksum`` when it is a multihash that can be compared;
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
    if code not in MULTIHASH:
        log.warning("%s: the catalog's file:checksum uses multihash code 0x%x, which is not one compared here; "
                    "not compared", href, code)
        return None
    name, factory = MULTIHASH[code]
    if length > factory().digest_size:
        log.warning("%s: the catalog's file:checksum is %d bytes, more than a %s digest; not compared", href, length, name)
        return None
    return Checksum(text, name, code, raw[i:])


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
    factories = {name: factory for name, factory in MULTIHASH.values()}
    hashes = {name: factories[name]() for name in names}
    if length:
        with open(part, "rb") as f:
            while length > 0 and (chunk := f.read(min(_CHUNK, length))):
                for h in hashes.values():
                    h.update(chunk)
                length -= len(chunk)
    return hashes


def compare(checksum: Checksum | None, digests: dict[str, Any], href: str) -> None:
    """Refuse a file whose digest is not the source's ``file:checksum``."""
    if checksum is None:
        return
    got = digests[checksum.name].digest()[: len(checksum.digest)]
    if got != checksum.digest:
        raise MirrorError(f"{href}: downloaded, but its {checksum.name} is {got.hex()}, not the {checksum.digest.hex()} "
                          "of the catalog's file:checksum; not kept")
    log.info("%s: %s matches the catalog's file:checksum", href, checksum.name)
