"""The on-disk transaction: everything that makes a label write safe, in one place.

A cube ends with exactly its old bytes or exactly its new label, whatever happens.

* **Lock.** Writers (and readers that find a journal) hold an exclusive ``flock`` on the
  cube file itself (a dry run a shared one, on a descriptor opened read-only); the lock
  is re-taken if the path was replaced while waiting.
* **Attached cubes: journal, then write in place.**  Only the changed region at the
  start of the file is rewritten (the old and the new label text, padded with NULs).
  Before any byte of the cube changes:

  1. space for the region is secured with ``posix_fallocate`` (a sparse label area on
     a full disk fails here, not half-way through the label);
  2. a journal beside the cube records the cube's identity (device, inode), the old
     and the new region, and a checksum of itself; it is preallocated, written with
     every write checked for its full length, and fsynced with its directory.

  Then the region is written (checked) and fsynced, and the journal removed (three
  fsyncs per cube: the journal, its directory, the cube).  Any error rolls the cube
  back at once from memory.
* **Recovery** (next open, even a read or a dry run: a dry run removes a stale
  journal but never writes the cube; it reads a torn label as its old bytes) applies a journal only when it is
  provably this cube's: a regular file (opened without following links or blocking),
  owned by the cube's owner or by us, of bounded size, complete (checksum), naming this
  cube's device and inode, and the cube's current region made only of bytes of the old
  and the new region.  Then: current == new -> the write finished (journal dropped);
  current == old -> it never started (dropped); a mix -> the old region is put back.
  Anything else is left alone and reported (:class:`JournalError`).
* **Detached labels** are replaced atomically: a temporary file beside the real file
  (links are written through), preallocated, with the label's owner, group and mode,
  fsynced, then renamed over it.  A hard-linked label is refused (renaming would split
  the link).  A temporary file left by a killed write is removed by the next writer
  (under the lock, even when it has nothing to write).
* **Bounded waits.**  The lock is polled (``LOCK_NB``, with back-off) for at most
  ``wait`` seconds: a cube another process holds locked fails with
  :class:`CubeLockedError` instead of hanging the batch.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from ..base.log import get as get_logger
from ..base.safeio import open_regular, read_fd
from ..errors import CubeLockedError, JournalError, LabelWriteError, ReadOnlyCubeError, UnsafeFileError, not_a_cube

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

__all__ = ["journal_path", "temp_path", "locked", "recover", "write_region", "replace_file", "clear_temp", "Hook",
           "DEFAULT_LOCK_WAIT"]

log = get_logger(__name__)

Hook = Callable[[str], None]

_MAGIC = b"SHAPERESOLVER-JOURNAL-2\n"
_HEAD = struct.Struct(">QQQ")  # st_dev, st_ino, region length
_SUM = 32  # bytes of a SHA-256 digest (hashlib loads when a journal is written or read)
#: largest region a journal may hold (the reader never scans more than 8 MiB of label)
MAX_REGION = 16 * 2**20
#: how long a writer waits for another process's lock on a cube (s)
DEFAULT_LOCK_WAIT = 30.0
_LOCK_POLL = (0.01, 0.5)  # first and longest pause between tries
#: a batch's stop event (anything with ``is_set()``) while one of its chunks runs here: a
#: wait for a lock then ends at the next try once the batch is stopping (Ctrl-C does not
#: wait out another process's lock)
stopping: ContextVar[Any] = ContextVar("shaperesolver_stopping", default=None)


class LockWaitStopped(CubeLockedError):
    """The batch stopped while this cube waited for its lock; not modified."""


def _beside(real: str, st: os.stat_result, suffix: str) -> str:
    # named after the file's identity, not its name: every hard link and every later
    # name of the file finds the same journal, and the name is short whatever the cube's is
    return os.path.join(os.path.dirname(real), f".shaperesolver-{st.st_dev:x}-{st.st_ino:x}.{suffix}")


def _real(fd: int, path: str) -> str:
    """The real path of the file open as ``fd`` (opened by the name ``path``): what the
    kernel says it opened (one readlink, where ``realpath`` costs an lstat per part of
    the name), else ``realpath``."""
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # (no /proc)
        return os.path.realpath(path)
    return real if real.startswith("/") and not real.endswith(" (deleted)") else os.path.realpath(path)


def _name(path: str) -> str:
    return os.path.basename(path)


def _unlink(path: str) -> None:
    """Remove ``path`` if it is there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def journal_file(path: str | os.PathLike[str]) -> str:
    """Where the write journal of the cube at ``path`` lives: beside the real file, named
    after its device and inode (``.shaperesolver-DEV-INODE.journal``)."""
    real = os.path.realpath(path)
    return _beside(real, os.stat(real), "journal")


def journal_path(path: str | os.PathLike[str]) -> Path:
    """:func:`journal_file` as a :class:`~pathlib.Path` (for callers; the write path uses strings)."""
    from pathlib import Path

    return Path(journal_file(path))


def temp_path(path: str | os.PathLike[str]) -> Path:
    """The temporary file a detached-label write of ``path`` uses (beside the real file)."""
    from pathlib import Path

    real = os.path.realpath(path)
    return Path(_beside(real, os.stat(real), "tmp"))


def _noop(step: str) -> None:
    return None


# ------------------------------------------------------------------ low level


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """Write all of ``data`` at ``offset`` or raise OSError (short writes are retried)."""
    view = memoryview(data)
    done = 0
    while done < len(view):
        n = os.pwrite(fd, view[done:], offset + done)
        if n <= 0:
            raise OSError(errno.EIO, "write made no progress")
        done += n


def _reserve(fd: int, length: int) -> None:
    """Allocate blocks for [0, length) so later writes there cannot fail for space."""
    if length <= 0:
        return
    try:
        os.posix_fallocate(fd, 0, length)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            return  # this file system cannot preallocate; writes are still checked
        raise


def _create(path: str, new: str, what: str) -> int:
    """Create ``new`` for writing: exclusively, never through a link, private to us."""
    try:
        return os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise LabelWriteError(path, f"cannot create {what} {_name(new)}: {_why(exc)}; not modified") from None


def _fsync_dir(directory: str | os.PathLike[str]) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_after_commit(directory: str | os.PathLike[str], path: str) -> None:
    """fsync a directory after the write took effect: a failure is worth a warning only."""
    try:
        _fsync_dir(directory)
    except OSError as exc:
        log.warning("%s: written; could not sync its directory (%s)", path, _why(exc))


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded"
    return exc.strerror or str(exc)


# ------------------------------------------------------------------ the lock


def _flock(fd: int, path: str, wait: float, shared: bool = False) -> None:
    """Take an exclusive (or shared) flock on ``fd``, trying for at most ``wait`` seconds."""
    deadline = time.monotonic() + wait
    pause = _LOCK_POLL[0]
    while True:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            raise CubeLockedError(path, f"locked by another process for {wait:g} s; not modified")
        stop = stopping.get()
        if stop is not None and stop.is_set():
            raise LockWaitStopped(path, "the batch stopped while it waited for the cube's lock; not modified")
        time.sleep(min(pause, left))
        pause = min(2 * pause, _LOCK_POLL[1])


@contextmanager
def locked(path: str, write: bool = True, wait: float = DEFAULT_LOCK_WAIT,
           shared: bool = False) -> Iterator[tuple[int, os.stat_result]]:
    """Open the regular file ``path`` (following links) and hold an exclusive flock
    (``shared``: a shared one, which only keeps writers out).

    Yields (fd, fstat).  If the path was replaced while we waited for the lock, the new
    file is locked instead.  Raises :class:`CubeLockedError` when another process holds
    the lock for ``wait`` seconds.
    """
    while True:
        try:
            fd, st = open_regular(path, write=write, what="cube")
        except UnsafeFileError as exc:
            if write and exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise ReadOnlyCubeError(path, f"cannot open for writing: {os.strerror(exc.errno)}; not modified") from None
            raise not_a_cube(path, _problem(exc), exc.errno) from None
        try:
            _flock(fd, path, wait, shared)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)  # replaced while we waited: lock the new file
    try:
        yield fd, os.fstat(fd)
    finally:
        os.close(fd)  # closing releases the flock


def _problem(exc: UnsafeFileError) -> str:
    text = str(exc)
    prefix = f"cube {exc.filename}"
    return text[len(prefix):].lstrip(": ").strip() if text.startswith(prefix) else text


# ------------------------------------------------------------------ journal


def _encode(st: os.stat_result, old: bytes, new: bytes) -> bytes:
    body = _MAGIC + _HEAD.pack(st.st_dev, st.st_ino, len(old)) + old + new
    import hashlib

    return body + hashlib.sha256(body).digest()


def _decode(blob: bytes) -> tuple[int, int, bytes, bytes] | None:
    """(dev, ino, old, new) of a complete journal, or None when it is torn."""
    head = len(_MAGIC) + _HEAD.size
    if len(blob) < head + _SUM or not blob.startswith(_MAGIC):
        return None
    body, digest = blob[:-_SUM], blob[-_SUM:]
    import hashlib

    if hashlib.sha256(body).digest() != digest:
        return None
    dev, ino, length = _HEAD.unpack_from(blob, len(_MAGIC))
    if len(body) != head + 2 * length:
        return None
    return dev, ino, body[head : head + length], body[head + length :]


def _mixed(cur: bytes, old: bytes, new: bytes) -> bool:
    """True when every byte of ``cur`` is the old or the new byte at its offset."""
    if len(cur) != len(old):
        return False
    step = 4096
    for i in range(0, len(cur), step):
        c = cur[i : i + step]
        if c == old[i : i + step] or c == new[i : i + step]:
            continue
        if not all(x in (a, b) for x, a, b in zip(c, old[i : i + step], new[i : i + step])):
            return False
    return True


def recover(fd: int, path: str, st: os.stat_result, writable: bool = True, dry: bool = False,
            keep: bool = False) -> bytes | None:
    """Finish or roll back an interrupted write of ``path`` (the caller holds the lock).

    Raises :class:`JournalError` when a file at the journal path is not provably this
    cube's journal; the cube and that file are then left exactly as they are.  With
    ``dry`` (a dry run: a shared lock, the cube open read-only) the cube is never
    written: a provably stale journal is still removed, and when the label is a mix of
    the old and the new bytes the old bytes are returned (what the next writer restores,
    so what the dry run must read); the journal then stays.  Otherwise returns None.
    ``keep`` (an audit, which changes no file): a stale journal is left for the next writer too.
    """
    jp = _beside(_real(fd, path), st, "journal")
    try:
        os.lstat(jp)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LabelWriteError(path, f"cannot look for the journal {_name(jp)}: {_why(exc)}") from None

    def refuse(why: str) -> JournalError:
        return JournalError(path, f"{_name(jp)} {why}; cube not changed. Move that file away if no shaperesolver write "
                                  "of this cube was interrupted")

    try:
        jfd, jst = open_regular(jp, follow=False, what="journal")
    except UnsafeFileError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise refuse("is not a regular file" if exc.errno in (errno.ELOOP, errno.EINVAL, errno.ENXIO)
                     else f"cannot be read ({os.strerror(exc.errno) if exc.errno else exc})") from None
    try:
        if jst.st_uid not in (st.st_uid, os.geteuid()):
            raise refuse(f"belongs to uid {jst.st_uid}, not to the cube's owner")
        limit = len(_MAGIC) + _HEAD.size + 2 * MAX_REGION + _SUM
        if jst.st_size > limit:
            raise refuse(f"is {jst.st_size} bytes, too large to be a journal")
        blob = read_fd(jfd, limit + 1)
    finally:
        os.close(jfd)
    parsed = _decode(blob)
    if parsed is None:
        head = blob[: len(_MAGIC)]
        if _MAGIC.startswith(head) or head.startswith(_MAGIC) or not head.strip(b"\0"):
            # never completed, so the cube was never touched: drop it
            log.info("%s: removing an incomplete write journal %s (the cube was not modified)", path, jp)
            if not keep:
                _drop(jp, writable, path, dry)
            return None
        raise refuse("is not a shaperesolver journal")
    dev, ino, old, new = parsed
    if (dev, ino) != (st.st_dev, st.st_ino):
        raise refuse("was written for another file (device/inode differ)")
    cur = read_fd(fd, len(old))
    if cur == new:
        log.info("%s: an earlier write had finished; removing its journal %s", path, jp)
    elif cur == old:
        log.info("%s: an earlier write never started; removing its journal %s", path, jp)
    elif _mixed(cur, old, new):
        if dry:
            return old
        if not writable:
            raise LabelWriteError(path, f"an earlier write was interrupted ({_name(jp)}); open it with write access to restore the label")
        log.warning("%s: an earlier write was interrupted; restoring the label saved in %s", path, jp)
        try:
            _pwrite_all(fd, old, 0)
            os.fsync(fd)
        except OSError as exc:
            raise LabelWriteError(path, f"restoring the label from {_name(jp)} failed ({_why(exc)}); the journal is kept") from None
    else:
        raise refuse("does not match this cube's label area")
    if not keep:
        _drop(jp, writable, path, dry)
    return None


def _drop(jp: str, writable: bool, path: str, dry: bool = False) -> None:
    """Remove a journal that recovery proved stale (a dry run tries, and leaves it to the
    next writer when it may not)."""
    if not (writable or dry):
        return
    try:
        os.unlink(jp)
    except FileNotFoundError:
        return
    except OSError as exc:
        if dry:
            log.debug("%s: cannot remove the stale journal %s (%s); the next write does", path, _name(jp), _why(exc))
            return
        raise LabelWriteError(path, f"cannot remove the journal {_name(jp)}: {_why(exc)}") from None
    _sync_after_commit(os.path.dirname(jp), path)


def write_region(fd: int, path: str, st: os.stat_result, old: bytes, new: bytes, hook: Hook = _noop) -> None:
    """Replace bytes [0, len(new)) of the locked cube, which hold ``old``, with ``new``."""
    assert len(old) == len(new) <= MAX_REGION
    jp = _beside(_real(fd, path), st, "journal")
    try:
        _reserve(fd, len(new))
    except OSError as exc:
        raise LabelWriteError(path, f"cannot secure space for the label ({_why(exc)}); not modified") from None
    blob = _encode(st, old, new)
    jfd = _create(path, jp, "the write journal")
    try:
        try:
            hook("journal-open")
            _reserve(jfd, len(blob))
            _pwrite_all(jfd, blob[: len(blob) // 2], 0)
            hook("journal-header")
            _pwrite_all(jfd, blob[len(blob) // 2 :], len(blob) // 2)
            os.fsync(jfd)
        finally:
            os.close(jfd)
        _fsync_dir(os.path.dirname(jp))
    except BaseException as exc:  # KeyboardInterrupt too: the cube is untouched, drop the journal
        _unlink(jp)
        if isinstance(exc, OSError):
            raise LabelWriteError(path, f"cannot write the journal {_name(jp)} ({_why(exc)}); not modified") from None
        raise
    try:
        hook("journal-durable")
        _pwrite_all(fd, new, 0)
        hook("label-written")
        os.fsync(fd)
    except BaseException as exc:  # KeyboardInterrupt too: roll back before it goes on
        why = _why(exc) if isinstance(exc, OSError) else type(exc).__name__
        try:
            _pwrite_all(fd, old, 0)
            os.fsync(fd)
        except OSError:
            raise LabelWriteError(path, f"writing the label failed ({why}) and so did the rollback; "
                                        f"the next run restores it from {_name(jp)}") from None
        _unlink(jp)
        if isinstance(exc, OSError):
            raise LabelWriteError(path, f"writing the label failed ({why}); old label restored") from None
        raise
    # the new label is durable: from here on nothing may fail the write (a journal left
    # behind matches the new label, so the next run just removes it)
    try:
        hook("label-durable")
        os.unlink(jp)
    except OSError as exc:
        log.warning("%s: written; could not remove the journal %s (%s): the next run removes it", path, _name(jp), _why(exc))
        return
    except BaseException:  # KeyboardInterrupt: finish the commit, then let it go on
        _unlink(jp)
        raise
    # (the removal is not synced: a journal a crash brings back matches the new label, and
    # the next open drops it, so an fsync of the directory here would buy nothing)
    hook("journal-removed")


# ------------------------------------------------------------------ detached labels


def _clear_temp(tmp: str, st: os.stat_result) -> None:
    """Remove a temporary file left by a killed write (we hold the label's lock).

    Only what provably is one: named after this label's device and inode, a regular
    file (not a link) with one name, owned by us or by the label's owner.
    """
    try:
        tst = os.lstat(tmp)
    except OSError:
        return
    if stat.S_ISREG(tst.st_mode) and tst.st_nlink == 1 and tst.st_uid in (st.st_uid, os.geteuid()):
        log.info("removing %s, left by an interrupted write", tmp)
        try:
            os.unlink(tmp)
        except OSError as exc:
            log.warning("cannot remove %s, left by an interrupted write: %s", tmp, _why(exc))
    # anything else stays; O_EXCL then fails with a clear error


def clear_temp(path: str, st: os.stat_result) -> None:
    """Remove the temporary file a killed write of the locked label ``path`` left behind."""
    _clear_temp(_beside(os.path.realpath(path), st, "tmp"), st)


def replace_file(fd: int, path: str, st: os.stat_result, data: bytes, hook: Hook = _noop) -> None:
    """Atomically replace the locked regular file ``path`` (links written through)."""
    real = _real(fd, path)
    if st.st_nlink > 1:
        raise LabelWriteError(path, f"has {st.st_nlink} hard links; replacing it would split them; not modified")
    tmp = _beside(real, st, "tmp")
    _clear_temp(tmp, st)
    tfd = _create(path, tmp, "the temporary file")
    try:
        try:
            _reserve(tfd, len(data))
            _pwrite_all(tfd, data, 0)
            if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(tfd, st.st_uid, st.st_gid)
            os.fchmod(tfd, stat.S_IMODE(st.st_mode))
            os.fsync(tfd)
        finally:
            os.close(tfd)
        hook("temp-durable")
        if not os.path.samestat(os.stat(real), st):
            raise OSError(errno.ESTALE, "the label was replaced during the write")
        os.replace(tmp, real)
    except BaseException as exc:
        _unlink(tmp)
        if isinstance(exc, OSError):
            why = "cannot keep its owner and group" if exc.errno == errno.EPERM else _why(exc)
            raise LabelWriteError(path, f"replacing the label failed ({why}); not modified") from None
        raise
    _sync_after_commit(os.path.dirname(real), path)
    hook("renamed")
