"""One search per key across processes that share a cache directory.

When many processes start at once with a cold cache (a SLURM job array, a Dask
cluster), the first one to take a key's *claim* searches; the others wait, bounded,
for the cache entry it writes and use it.  A claim is an exclusive ``flock`` on
``<cache dir>/<key>.claim``: the kernel releases it when its holder exits or is
killed, so a waiter that finds the claim free takes it over (and first looks again
for the entry, which a finished holder has written).  A waiter that reaches the bound
searches itself.  A holder whose search failed notes why in the claim file, so the
processes waiting on it fall back at once instead of retrying the dead server one by one.

Claim files are opened with ``O_NOFOLLOW`` in a directory owned by the user and not
writable by others (the cache's own rule), created 0600, and used only if they are
regular files of the user's that others cannot write; anything else (or a
file system without ``flock``) means no coordination, never an error.  They are never
deleted (deleting a lock file races with processes that have just opened it).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from contextlib import contextmanager

from .log import get as get_logger
from .record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

__all__ = ["Claim", "claim", "DEFAULT_WAIT"]

log = get_logger(__name__)

#: how long a process waits for another process's search before searching itself (s)
DEFAULT_WAIT = 60.0
_POLL = (0.02, 0.1)


class Claim(Record):
    """What :func:`claim` found.

    ``result`` is what ``poll`` returned (another process's answer: do not search);
    ``noted`` is what the previous holder recorded with :meth:`note` while this process
    waited (e.g. why its search failed: use that, do not search); otherwise ``held``
    says whether this process holds the claim (it may not, when coordination is
    unavailable or the wait reached its bound) and it should search.
    """

    __slots__ = ("result", "noted", "held", "waited", "_fd")
    result: Any
    noted: Any
    held: bool
    waited: float
    _fd: int | None

    def __init__(self) -> None:
        self.result = self.noted = self._fd = None
        self.held, self.waited = False, 0.0

    def note(self, value: Any) -> None:
        """Leave ``value`` (JSON) for the processes waiting on this claim (e.g. a failure)."""
        if self._fd is None:
            return
        import json

        data = json.dumps({"noted": time.time(), "value": value}).encode()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
        except OSError:
            pass

    def _clear(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass


def _open(directory: str, key: str) -> int | None:
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        dst = os.stat(directory)
        if dst.st_uid != os.geteuid() or dst.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or not stat.S_ISDIR(dst.st_mode):
            log.info("cache directory %s is not ours alone; searching without a claim", directory)
            return None
        fd = os.open(os.path.join(directory, f"{key}.claim"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        log.info("cannot open a claim in %s (%s); searching without one", directory, exc.strerror)
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        log.info("claim file for %s in %s is not a regular file of ours; searching without one", key, directory)
        return None
    return fd


def _try_lock(fd: int) -> bool | None:
    """True if locked, False if someone else holds it, None if flock does not work here."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        log.info("flock is not available for the cache directory (%s); searching without a claim", exc.strerror)
        return None


def _noted(fd: int, since: float) -> Any:
    import json

    try:
        raw = os.pread(fd, 65536, 0)
        note = json.loads(raw) if raw else None
        when = float(note["noted"]) if isinstance(note, dict) else 0.0
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(note, dict):
        return None
    return note.get("value") if when >= since else None


@contextmanager
def claim(directory: str | os.PathLike[str], key: str, poll: Callable[[], Any], wait: float = DEFAULT_WAIT,
          what: str = "") -> Iterator[Claim]:
    """Take the claim on ``key``, or wait (at most ``wait`` s) for ``poll()`` to answer.

    ``poll`` looks for the answer another process would leave (the cache entry).  The
    claim is held until the ``with`` block ends.
    """
    c = Claim()
    fd = _open(os.fspath(directory), key)
    if fd is None:
        yield c
        return
    try:
        t0 = time.time()
        got = _try_lock(fd)
        if got:  # free at once: the entry may have been written since the caller looked
            c.result = poll()
        if got is False:
            log.info("another process is searching for %s; waiting up to %.0f s for its result", what or key, wait)
        while got is False:
            import random

            time.sleep(random.uniform(*_POLL))
            c.result = poll()
            if c.result is not None:
                break
            got = _try_lock(fd)
            if got:  # the holder finished (or died): look once more, then it is ours
                c.result = poll()
                c.noted = None if c.result is not None else _noted(fd, t0)
                break
            if time.time() - t0 >= wait:
                log.warning("waited %.0f s for another process's search for %s; searching myself", wait, what or key)
                got = None
        c.waited = time.time() - t0
        if got and c.result is None and c.noted is None:
            c.held, c._fd = True, fd
            c._clear()
        yield c
    finally:
        os.close(fd)  # releases the flock
