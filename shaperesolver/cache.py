"""On-disk cache of search results, shared safely between processes.

One small JSON file per key under ``platformdirs.user_cache_dir("shaperesolver")``
(or ``$SHAPERESOLVER_CACHE_DIR``, read when a cache is created, never at import).
Writes go to a temporary file that is renamed into place, so readers never see a
partial file; a corrupt file is ignored and replaced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["DiskCache", "default_cache_dir", "CACHE_MODES", "DEFAULT_TTL"]

log = logging.getLogger(__name__)

CACHE_MODES = ("yes", "no", "refresh")
DEFAULT_TTL = 24 * 3600.0


def default_cache_dir() -> Path:
    """``$SHAPERESOLVER_CACHE_DIR`` or the platform's user cache directory."""
    env = os.environ.get("SHAPERESOLVER_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("shaperesolver"))


class DiskCache:
    """Key/value entries with an age; ``mode`` is ``yes``, ``no`` or ``refresh``."""

    def __init__(self, directory: str | os.PathLike[str] | None = None, mode: str = "yes",
                 ttl: float = DEFAULT_TTL) -> None:
        if mode not in CACHE_MODES:
            raise ValueError(f"cache mode must be one of {CACHE_MODES}, not {mode!r}")
        self.mode = mode
        self.ttl = ttl
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self._lock = threading.Lock()
        self._warned_unwritable = False

    @staticmethod
    def key(*parts: object) -> str:
        """A stable file-name-safe key for ``parts``."""
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:40]

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str, allow_stale: bool = False) -> tuple[Any, float] | None:
        """(value, age in seconds), or None when absent, corrupt or (unless allowed) stale.

        ``refresh`` mode returns only stale-allowed lookups (the fallback when the API is
        down); ``no`` mode never reads.
        """
        if self.mode == "no" or (self.mode == "refresh" and not allow_stale):
            return None
        path = self._path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            stored = float(entry["stored"])
            value = entry["value"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            log.info("ignoring corrupt cache file %s", path)
            return None
        age = max(0.0, time.time() - stored)
        if age > self.ttl and not allow_stale:
            return None
        return value, age

    def put(self, key: str, value: Any) -> None:
        """Store ``value`` atomically (``no`` mode does nothing)."""
        if self.mode == "no":
            return
        data = json.dumps({"stored": time.time(), "value": value}, sort_keys=True)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(data)
                os.replace(tmp, self._path(key))
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            with self._lock:
                if not self._warned_unwritable:
                    log.warning("cannot write the cache in %s (%s); continuing without it", self.directory, exc.strerror)
                    self._warned_unwritable = True
