"""Open and read files that may be hostile: regular files only, no blocking, bounded.

Every file shaperesolver reads that it did not just write itself (cube labels, lists,
catalogs, kernel databases, cache entries, journals) goes through here:

* opened with ``O_NONBLOCK`` (a FIFO or a device never hangs the run), optionally with
  ``O_NOFOLLOW`` (a planted symlink is refused where a link could mislead);
* refused unless ``fstat`` says it is a regular file;
* read up to a size limit, so ``/dev/zero`` or a huge file costs nothing;
* JSON is decoded with a nesting-depth limit checked *before* decoding, so deep
  documents never reach Python's recursive decoder.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
from itertools import accumulate

from ..errors import UnsafeFileError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["open_regular", "read_regular", "json_depth_ok", "loads_json", "MAX_JSON_DEPTH", "clear_output",
           "append_output"]

MAX_JSON_DEPTH = 64
#: A string, or an unterminated one up to the end: every ``"`` starts a match that cannot
#: fail, so the substitution is linear (a pattern that must find the closing quote is
#: retried from every ``"`` of an unterminated run: quadratic).
# (compiled on first use, through re's own cache: only a JSON document needs them)
_STRING = r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)'
_NOT_BRACKET = r"[^\[\]{}]+"

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | os.PathLike[str], *, write: bool = False, follow: bool = True,
                 what: str = "file") -> tuple[int, os.stat_result]:
    """Open ``path`` without blocking; return (fd, fstat) only if it is a regular file.

    ``follow=False`` refuses a symbolic link at the last path component.  The returned
    descriptor is blocking again (O_NONBLOCK is cleared after the check).  Raises
    :class:`UnsafeFileError` (an ``OSError`` whose ``errno`` tells what happened).
    """
    p = os.fspath(path)
    flags = (os.O_RDWR if write else os.O_RDONLY) | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    if not follow:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(p, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow:
            raise UnsafeFileError(errno.ELOOP, f"{what} {p} is a symbolic link; refusing to follow it", p) from None
        if exc.errno == errno.ENXIO:  # a FIFO with no writer opened for writing, or a socket
            raise UnsafeFileError(errno.ENXIO, f"{what} {p} is not a regular file", p) from None
        reason = {errno.ENOENT: "no such file", errno.EACCES: "permission denied",
                  errno.EISDIR: "is a directory", errno.EROFS: "read-only file system"}.get(exc.errno or 0)
        raise UnsafeFileError(exc.errno or 0, f"{what} {p}: {reason or exc.strerror or exc}", p) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFileError(errno.EINVAL, f"{what} {p} is {_kind(st.st_mode)}, not a regular file", p)
        fl = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, fl & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _output_kind(st: os.stat_result, path: str, what: str) -> bool:
    """True for a character device (a sink such as ``/dev/null``), False for a regular
    file of ours; anything else, and another user's regular file (root passes the sticky
    bit of a shared /tmp that protects it from everyone else), is refused
    (UnsafeFileError naming it)."""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        if st.st_uid != os.geteuid():
            raise UnsafeFileError(errno.EPERM, f"{what} {path} belongs to uid {st.st_uid}, not to you; "
                                  "refusing to replace or write it", path)
        return False
    if stat.S_ISCHR(mode):
        return True
    raise UnsafeFileError(errno.EINVAL, f"{what} {path} is {_kind(mode)}, not a regular file; "
                          "refusing to replace or write it", path)


def clear_output(path: str | os.PathLike[str], what: str = "file") -> None:
    """Start an output file afresh as ISIS does (``-errlist`` is deleted at start).

    Only a regular file is deleted; a character device (``/dev/null``) is left as the
    sink it is; a missing file is fine; a link, FIFO, socket, directory or block device
    is refused (UnsafeFileError) and left where it is.
    """
    p = os.fspath(path)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return
    if _output_kind(st, p, what):
        return
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


def append_output(path: str | os.PathLike[str], data: bytes, what: str = "file") -> None:
    """Append ``data`` to a regular file (made if missing) or write it to a character
    device; never through a link, into a FIFO, a socket or a block device (UnsafeFileError)."""
    p = os.fspath(path)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
                     | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # a link at the last component; a socket or reader-less FIFO
            mode = os.lstat(p).st_mode
            raise UnsafeFileError(exc.errno, f"{what} {p} is {_kind(mode)}, not a regular file; "
                                  "refusing to write it", p) from None
        raise
    try:
        _output_kind(os.fstat(fd), p, what)
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def read_fd(fd: int, limit: int, offset: int = 0) -> bytes:
    """Read at most ``limit`` bytes from ``offset`` (stops early at end of file)."""
    chunks = []
    got = 0
    while got < limit:
        chunk = os.pread(fd, min(limit - got, 1 << 20), offset + got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_regular(path: str | os.PathLike[str], limit: int, *, follow: bool = True,
                 what: str = "file") -> tuple[bytes, os.stat_result]:
    """The whole content of a regular file no larger than ``limit`` bytes, and its fstat."""
    p = os.fspath(path)
    fd, st = open_regular(p, follow=follow, what=what)
    try:
        if st.st_size > limit:
            raise UnsafeFileError(errno.EFBIG, f"{what} {p} is {st.st_size} bytes, more than the {limit}-byte limit", p)
        data = read_fd(fd, limit + 1)
        if len(data) > limit:  # it grew while we read
            raise UnsafeFileError(errno.EFBIG, f"{what} {p} is more than the {limit}-byte limit", p)
        return data, st
    finally:
        os.close(fd)


def json_depth_ok(data: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """True when ``data`` (JSON text) never nests arrays/objects deeper than ``max_depth``.

    Linear in the size of ``data`` (strings are skipped); it does not validate the JSON.
    """
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    brackets = re.sub(_NOT_BRACKET, "", re.sub(_STRING, "", text, flags=re.S))
    if len(brackets) <= 2 * max_depth:
        return brackets.count("[") + brackets.count("{") <= max_depth or _max_depth(brackets) <= max_depth
    return _max_depth(brackets) <= max_depth


def _max_depth(brackets: str) -> int:
    steps = accumulate(1 if c in "[{" else -1 for c in brackets)
    return max(steps, default=0)


def loads_json(data: str | bytes, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` with a depth limit; raises ValueError naming ``what``."""
    if not json_depth_ok(data, max_depth):
        raise ValueError(f"{what}: JSON nested more than {max_depth} levels deep")
    try:
        import json  # (only a document read needs it: a one-cube run loads none)

        return json.loads(data)
    except RecursionError:  # pragma: no cover - the depth check comes first
        raise ValueError(f"{what}: JSON nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"{what}: not valid JSON ({str(exc)[:120]})") from None
