"""On-disk cache of search results, shared safely between processes of one user.

One small JSON file per key under ``platformdirs.user_cache_dir("shaperesolver")``
(or ``$SHAPERESOLVER_CACHE_DIR``, read when a cache is created, never at import).
Writes go to a temporary file that is renamed into place, so readers never see a
partial file.

Nothing read from the cache is trusted more than a fresh server answer:

* the directory is used only when it is owned by the current user and neither group-
  nor other-writable; otherwise the cache is ignored (not read, not written) with one
  warning.  So sharing means *the same user* across processes and nodes (warm on a
  login node, run on compute nodes with the directory on a shared file system);
  another user's cache is never read, and nobody else can plant entries in yours;
* each entry must be a regular file (not a link, FIFO or device) owned by the current
  user, not group/other-writable, at most :data:`MAX_ENTRY_BYTES` bytes, JSON nested at
  most 64 deep, of the form ``{"stored": <seconds>, "value": ...}`` with a ``stored``
  time that is not in the future (:data:`CLOCK_SKEW` seconds of slack between nodes);
* a bad entry is ignored with a one-line warning and replaced by the next write;
  callers validate the value itself as they validate server answers.

Entries are created ``0644`` (readable by everyone, so another user may inspect them,
writable only by the owner); the directory is created ``0755`` (less if the umask says
so).  Search results are public data; nothing secret is stored.
"""

from __future__ import annotations

import math
import os
import stat
import time
from _thread import allocate_lock

from ..base import safeio
from ..base.log import get as get_logger
from ..errors import UnsafeFileError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

__all__ = ["DiskCache", "default_cache_dir", "CACHE_MODES", "DEFAULT_TTL", "MAX_ENTRY_BYTES", "CLOCK_SKEW"]

log = get_logger(__name__)

CACHE_MODES = ("yes", "no", "refresh")
DEFAULT_TTL = 24 * 3600.0
#: Largest cache file read (an entry is a few hundred bytes).
MAX_ENTRY_BYTES = 1 << 20
#: A ``stored`` time more than this many seconds in the future makes an entry invalid.
CLOCK_SKEW = 60.0


def default_cache_dir() -> Path:
    """``$SHAPERESOLVER_CACHE_DIR`` or the platform's user cache directory."""
    from pathlib import Path  # (json and pathlib load when the cache is first used, not when it is made)

    env = os.environ.get("SHAPERESOLVER_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("shaperesolver"))


def _untrusted(st: os.stat_result) -> str | None:
    """Why a file or directory with this stat may not be trusted, or None."""
    uid = os.geteuid()
    if st.st_uid != uid:
        return f"it is owned by uid {st.st_uid}, not by you (uid {uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"other users can write to it (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


class DiskCache:
    """Key/value entries with an age; ``mode`` is ``yes``, ``no`` or ``refresh``."""

    def __init__(self, directory: str | os.PathLike[str] | None = None, mode: str = "yes",
                 ttl: float = DEFAULT_TTL) -> None:
        if mode not in CACHE_MODES:
            raise ValueError(f"cache mode must be one of {CACHE_MODES}, not {mode!r}")
        self.mode = mode
        self.ttl = ttl
        self._given = directory
        self._directory: Path | None = None
        self._lock = allocate_lock()
        self._warned_unwritable = False
        self._dir_state: str | None = None  # None: not checked; "ok", "missing" or "refused"

    @property
    def directory(self) -> Path:
        """Where the entries live (found on first use: a run that needs no cache never asks)."""
        if self._directory is None:
            if self._given is None:
                self._directory = default_cache_dir()
            else:
                from pathlib import Path

                self._directory = Path(self._given)
        return self._directory

    @staticmethod
    def key(*parts: object) -> str:
        """A stable file-name-safe key for ``parts``."""
        import hashlib
        import json

        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:40]

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def _directory_ok(self, create: bool) -> bool:
        """True when the directory exists (created if ``create``) and may be trusted."""
        with self._lock:
            if self._dir_state in (None, "missing"):
                if create:
                    try:
                        self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
                    except OSError as exc:
                        self._warn_unwritable(exc.strerror or str(exc))
                        return False
                try:
                    st = os.stat(self.directory)
                except FileNotFoundError:
                    self._dir_state = "missing"
                    return False
                except OSError as exc:
                    log.warning("ignoring the cache directory %s (%s)", self.directory, exc.strerror)
                    self._dir_state = "refused"
                    return False
                why = "it is not a directory" if not stat.S_ISDIR(st.st_mode) else _untrusted(st)
                if why:
                    log.warning("ignoring the cache directory %s: %s; set SHAPERESOLVER_CACHE_DIR to a "
                                "directory of your own", self.directory, why)
                    self._dir_state = "refused"
                else:
                    self._dir_state = "ok"
            return self._dir_state == "ok"

    def _warn_unwritable(self, why: str) -> None:
        if not self._warned_unwritable:
            log.warning("cannot write the cache in %s (%s); continuing without it", self.directory, why)
            self._warned_unwritable = True

    def get(self, key: str, allow_stale: bool = False) -> tuple[Any, float] | None:
        """(value, age in seconds), or None when absent, invalid or (unless allowed) stale.

        ``refresh`` mode returns only stale-allowed lookups (the fallback when the API is
        down); ``no`` mode never reads.  Never raises for a bad file: it is ignored
        with a one-line warning.
        """
        if self.mode == "no" or (self.mode == "refresh" and not allow_stale):
            return None
        if not self._directory_ok(create=False):
            return None
        path = self._path(key)
        try:
            raw, st = safeio.read_regular(path, MAX_ENTRY_BYTES, follow=False, what="cache file")
        except UnsafeFileError as exc:
            if exc.errno != 2:  # ENOENT: simply not cached
                log.warning("ignoring cache file: %s", exc)
            return None
        why = _untrusted(st)
        if why is None:
            try:
                entry = safeio.loads_json(raw, "cache file")
            except ValueError as exc:
                why = str(exc).split(": ", 1)[-1]
            else:
                why, value, stored = _check_entry(entry)
        if why is not None:
            log.warning("ignoring cache file %s: %s", path, why)
            return None
        age = max(0.0, time.time() - stored)
        if age > self.ttl and not allow_stale:
            return None
        return value, age

    def put(self, key: str, value: Any) -> None:
        """Store ``value`` atomically (``no`` mode does nothing; never raises for I/O)."""
        if self.mode == "no":
            return
        import json

        data = json.dumps({"stored": time.time(), "value": value}, sort_keys=True)
        if not self._directory_ok(create=True):
            return
        try:
            import tempfile

            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    os.fchmod(f.fileno(), 0o644)
                    f.write(data)
                os.replace(tmp, self._path(key))
            except BaseException:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                raise
        except OSError as exc:
            with self._lock:
                self._warn_unwritable(exc.strerror or str(exc))


def _check_entry(entry: Any) -> tuple[str | None, Any, float]:
    """(reason it is invalid or None, value, stored)."""
    if not isinstance(entry, dict) or set(entry) != {"stored", "value"}:
        return "not a cache entry", None, 0.0
    stored = entry["stored"]
    if isinstance(stored, bool) or not isinstance(stored, (int, float)) or not math.isfinite(stored):
        return "its stored time is not a number", None, 0.0
    if stored > time.time() + CLOCK_SKEW:
        return "its stored time is in the future", None, 0.0
    return None, entry["value"], float(stored)
