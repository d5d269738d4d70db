"""Read ISIS cube labels and splice a ShapeModel into them safely.

Reading touches only the label area at the start of the file.  Writing replaces,
inserts or creates exactly one statement in ``IsisCube > Kernels`` (and removes a
non-null ``ElevationModel``), leaves every other byte alone, and is crash-safe:

* attached cubes: the old label area is saved to a journal beside the cube (fsynced,
  with its directory) before the label area is overwritten in place; the journal is
  removed once the new label is on disk.  Any later open of the cube rolls an
  unfinished write back to exactly the old bytes.
* detached labels: a temporary file in the same directory is fsynced and renamed over
  the ``.lbl`` (atomic), keeping its permission bits.

Concurrent writers are serialised with ``flock`` on the cube itself.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import re
import stat
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import (
    LabelError,
    LabelFullError,
    LabelSyntaxError,
    LabelWriteError,
    MissingTargetError,
    NotACubeError,
    ReadOnlyCubeError,
)
from .pvlformat import check_value, format_statement
from .pvlscan import Scan, ScanError, ScanTruncated, Statement, scan

__all__ = ["CubeLabel", "WriteOutcome", "read_label", "write_shape_model", "journal_path", "MAX_LABEL_SCAN"]

log = logging.getLogger(__name__)

#: how far into a file we look for the label's ``End`` statement
MAX_LABEL_SCAN = 8 * 1024 * 1024
_CHUNK = 64 * 1024
_KERNELS = ("IsisCube", "Kernels")
_JOURNAL_MAGIC = b"SHAPERESOLVER-JOURNAL-1\n"
_JOURNAL_HEADER = struct.Struct(">Q32s")  # payload length, sha256(payload)
_START = re.compile(r"(?:\s+|#[^\n]*|/\*.*?\*/)*(?:BEGIN_)?OBJECT\s*=\s*\"?ISISCUBE\b", re.I | re.S)
_END_LINE = re.compile(r"^[ \t]*END[ \t]*\r?$", re.I | re.M)

Hook = Callable[[str], None]


def journal_path(path: str | os.PathLike[str]) -> Path:
    """Where the write journal of ``path`` lives (beside it, hidden)."""
    p = Path(path)
    return p.with_name(f".{p.name}.shaperesolver-journal")


def _null(value: str | None) -> bool:
    return value is None or value.strip().upper() in ("", "NULL")


@dataclass(frozen=True)
class CubeLabel:
    """The label of one cube, as read from disk.

    ``text`` is the label text up to and including the ``End`` line (Latin-1 decoded, so
    offsets are byte offsets).  ``label_bytes`` is the space ISIS reserved for an
    attached label (``Label > Bytes``), ``None`` for a detached label.
    """

    path: str
    text: str
    attached: bool
    label_bytes: int | None
    target: str
    shape_model: str | None
    elevation_model: str | None
    kernels: dict[str, str | tuple[str, ...]] | None
    file_size: int
    scan: Scan | None  # None when the fast reader failed and pvl read the label

    @property
    def kernels_text(self) -> str | None:
        """The ``Group = Kernels`` block exactly as written in the label."""
        if self.scan is None:
            return None
        ag = self.scan.aggregate(_KERNELS)
        return None if ag is None else self.text[ag.start : ag.end]

    def isiscube_keywords(self) -> dict[tuple[str, str], str]:
        """``{(GROUP, KEYWORD): first value}`` for every group directly in IsisCube
        (names upper-cased), as ISIS's KernelDb matching sees them."""
        out: dict[tuple[str, str], str] = {}
        if self.scan is not None:
            for st in self.scan.statements:
                if len(st.path) == 2 and st.path[0].upper() == "ISISCUBE":
                    value = st.value if isinstance(st.value, str) else (st.value[0] if st.value else "")
                    out.setdefault((st.path[1].upper(), st.name.upper()), value)
            return out
        cube = self.pvl().get("IsisCube") or {}
        for gname, group in cube.items():
            if hasattr(group, "items"):
                for key, value in group.items():
                    if isinstance(value, list):
                        value = value[0] if value else ""
                    out.setdefault((gname.upper(), key.upper()), "Null" if value is None else str(value))
        return out

    def pvl(self) -> Any:
        """The whole label parsed by ``pvl`` (a ``PVLModule``)."""
        import pvl

        return pvl.loads(self.text)


@dataclass(frozen=True)
class WriteOutcome:
    """What :func:`write_shape_model` did (or, in a dry run, would do)."""

    path: str
    value: str
    previous: str | None
    written: bool
    removed_elevation_model: str | None
    kernels_text: str
    label: CubeLabel


# ---------------------------------------------------------------- reading


def _open_error(path: str, exc: OSError) -> LabelError:
    if exc.errno == errno.ENOENT:
        return NotACubeError(path, "no such file")
    if exc.errno == errno.EISDIR:
        return NotACubeError(path, "is a directory, not a cube")
    if exc.errno == errno.EACCES:
        return NotACubeError(path, "permission denied")
    return NotACubeError(path, f"cannot open: {exc.strerror or exc}")


def _read_text(fd: int, path: str) -> tuple[str, int]:
    """Return (label text up to the first NUL or the scan limit, file size)."""
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        raise NotACubeError(path, "is a directory, not a cube")
    size = st.st_size
    if size == 0:
        raise NotACubeError(path, "empty file, not an ISIS cube")
    want = _CHUNK
    while True:
        data = os.pread(fd, min(want, MAX_LABEL_SCAN), 0)
        nul = data.find(b"\0")
        text = (data if nul < 0 else data[:nul]).decode("latin-1")
        if not _START.match(text[:4096]):
            raise NotACubeError(path, "not an ISIS cube label (it does not start with 'Object = IsisCube')")
        if nul >= 0 or len(data) >= size or _END_LINE.search(text) or want >= MAX_LABEL_SCAN:
            return text, size
        want *= 4


def _parse(path: str, text: str, size: int) -> CubeLabel:
    try:
        sc: Scan | None = scan(text)
    except ScanTruncated as exc:
        if len(text) >= MAX_LABEL_SCAN:
            raise LabelSyntaxError(path, f"no End statement within the first {MAX_LABEL_SCAN // 2**20} MiB") from None
        raise LabelSyntaxError(path, f"truncated label: {exc}") from None
    except ScanError as exc:
        log.debug("%s: fast reader gave up (%s); reading with pvl", path, exc)
        return _parse_with_pvl(path, text, size)
    assert sc is not None
    return _from_scan(path, text[: sc.end], sc, size)


def _from_scan(path: str, text: str, sc: Scan, size: int) -> CubeLabel:
    target_st = sc.find(("IsisCube", "Instrument"), "TargetName")
    if sc.aggregate(("IsisCube", "Instrument")) is None:
        raise MissingTargetError(path, "no IsisCube > Instrument group in the label")
    target = target_st.value if target_st else None
    if not isinstance(target, str) or _null(target):
        raise MissingTargetError(path, "no TargetName in IsisCube > Instrument")
    kern_ag = sc.aggregate(_KERNELS)
    kernels = None
    if kern_ag is not None:
        kernels = {st.name: st.value for st in sc.statements if st.start >= kern_ag.start and st.end <= kern_ag.end
                   and len(st.path) == 2}
    shape = sc.find(_KERNELS, "ShapeModel")
    elev = sc.find(_KERNELS, "ElevationModel")
    lb = sc.find(("Label",), "Bytes")
    label_bytes = None
    if lb is not None:
        try:
            label_bytes = int(str(lb.value))
        except ValueError:
            raise LabelSyntaxError(path, f"Label > Bytes is not a number: {lb.raw!r}") from None
    return CubeLabel(
        path=path, text=text, attached=label_bytes is not None, label_bytes=label_bytes,
        target=target, shape_model=_str(shape.value) if shape else None,
        elevation_model=_str(elev.value) if elev else None, kernels=kernels, file_size=size, scan=sc,
    )


def _str(value: str | tuple[str, ...]) -> str:
    return value if isinstance(value, str) else "(" + ", ".join(value) + ")"


def _parse_with_pvl(path: str, text: str, size: int) -> CubeLabel:
    import pvl

    m = _END_LINE.search(text)
    if not m:
        raise LabelSyntaxError(path, "truncated label: no End statement")
    text = text[: m.end()] + "\n"
    try:
        module = pvl.loads(text)
    except Exception as exc:  # pvl raises several unrelated types
        raise LabelSyntaxError(path, f"malformed label: {str(exc).splitlines()[0]}") from None
    cube = module.get("IsisCube")
    inst = cube.get("Instrument") if cube is not None else None
    if inst is None:
        raise MissingTargetError(path, "no IsisCube > Instrument group in the label")
    target = inst.get("TargetName")
    if target is None or str(target).strip() == "":
        raise MissingTargetError(path, "no TargetName in IsisCube > Instrument")
    kern = cube.get("Kernels")
    kernels = None if kern is None else {k: ("Null" if v is None else str(v)) for k, v in kern.items()}
    lab = module.get("Label")
    label_bytes = int(lab["Bytes"]) if lab is not None and "Bytes" in lab else None
    shape = kernels.get("ShapeModel") if kernels else None
    elev = kernels.get("ElevationModel") if kernels else None
    return CubeLabel(
        path=path, text=text, attached=label_bytes is not None, label_bytes=label_bytes, target=str(target),
        shape_model=_str(shape) if shape is not None else None,
        elevation_model=_str(elev) if elev is not None else None,
        kernels=kernels, file_size=size, scan=None,
    )


def read_label(path: str | os.PathLike[str]) -> CubeLabel:
    """Read the label of an attached cube or a detached ``.lbl`` (label area only).

    If an earlier write was interrupted, the label is first rolled back to exactly the
    bytes it had before that write.
    """
    p = os.fspath(path)
    if journal_path(p).exists():
        with _locked(p) as fd:
            _recover(fd, p)
            return _parse(p, *_read_text(fd, p))
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError as exc:
        raise _open_error(p, exc) from None
    try:
        return _parse(p, *_read_text(fd, p))
    finally:
        os.close(fd)


# ---------------------------------------------------------------- editing


def _kernels_layout(lab: CubeLabel, sc: Scan, group_start: int, group_end: int) -> tuple[int, int]:
    """(indent, padded name width) of the statements already in the Kernels group."""
    indent, width = -1, 0
    for st in sc.statements:
        if group_start <= st.start < group_end and len(st.path) == 2:
            if indent < 0:
                indent = st.name_start - st.start
            width = max(width, st.eq - st.name_start - 1)
    if indent < 0:
        ag = sc.aggregate(_KERNELS)
        assert ag is not None
        head = lab.text[ag.start : ag.end]
        indent = len(head) - len(head.lstrip(" ")) + 2
    return indent, width


def _splice(lab: CubeLabel, value: str) -> tuple[str, str | None]:
    """Return (new label text, removed ElevationModel value or None)."""
    sc = lab.scan
    if sc is None:
        raise LabelSyntaxError(lab.path, "this label is too unusual for a safe in-place edit (pvl could read it)")
    text, nl = lab.text, sc.newline
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement), non-overlapping
    removed = None
    group = sc.aggregate(_KERNELS)
    if group is None:
        cube = sc.aggregate(("IsisCube",))
        assert cube is not None  # _START guarantees it
        end_line = text[cube.end_line : cube.end]
        indent = len(end_line) - len(end_line.lstrip(" "))  # of IsisCube's End_Object
        pad = " " * (indent + 2)
        block = f"{nl}{pad}Group = Kernels{nl}{format_statement('ShapeModel', value, indent + 4, 0, nl)}{pad}End_Group{nl}"
        edits.append((cube.end_line, cube.end_line, block))
    else:
        indent, width = _kernels_layout(lab, sc, group.start, group.end)
        stmt = format_statement("ShapeModel", value, indent, width, nl)
        shape = sc.find(_KERNELS, "ShapeModel")
        if shape is not None:
            edits.append((shape.start, shape.end, stmt))
        else:
            addendum = sc.find(_KERNELS, "InstrumentAddendum")
            at = addendum.end if addendum is not None else group.end_line
            edits.append((at, at, stmt))
        elev = sc.find(_KERNELS, "ElevationModel")
        if elev is not None and not _null(_str(elev.value)):
            removed = _str(elev.value)
            edits.append((elev.start, elev.end, ""))
    out = []
    last = 0
    for start, end, rep in sorted(edits):
        out.append(text[last:start])
        out.append(rep)
        last = end
    out.append(text[last:])
    return "".join(out), removed


def _verify(lab: CubeLabel, new_text: str, value: str, removed: str | None) -> Scan:
    """Check that the spliced label reads back as intended; return its scan."""
    try:
        new = scan(new_text)
    except ScanError as exc:
        raise LabelWriteError(lab.path, f"internal check failed, nothing written: new label unreadable ({exc})") from None
    assert lab.scan is not None

    def others(sc: Scan) -> list[tuple[tuple[str, ...], str, str]]:
        skip = {"SHAPEMODEL"} | ({"ELEVATIONMODEL"} if removed is not None else set())
        return [(s.path, s.name, s.raw) for s in sc.statements
                if not (s.name.upper() in skip and tuple(p.upper() for p in s.path) == ("ISISCUBE", "KERNELS"))]

    got = new.find(_KERNELS, "ShapeModel")
    if got is None or got.value != value or others(new) != others(lab.scan):
        raise LabelWriteError(lab.path, "internal check failed, nothing written: the edited label does not read back as intended")
    return new


# ---------------------------------------------------------------- safe I/O


def _check_writable(path: str) -> None:
    st = os.stat(path)
    if not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise ReadOnlyCubeError(path, "file is read-only (no write permission bits); not modified")
    if not os.access(path, os.W_OK):
        raise ReadOnlyCubeError(path, "no permission to write this file; not modified")
    d = os.path.dirname(os.path.abspath(path))
    dst = os.stat(d)
    if not dst.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(d, os.W_OK):
        raise ReadOnlyCubeError(path, f"directory {d} is not writable (needed for the write journal); not modified")


@contextmanager
def _locked(path: str, write: bool = True) -> Iterator[int]:
    """Open ``path`` and hold an exclusive flock on it (re-opening if it was replaced)."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR if write else os.O_RDONLY)
        except IsADirectoryError:
            raise NotACubeError(path, "is a directory, not a cube") from None
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EROFS) and write:
                raise ReadOnlyCubeError(path, f"cannot open for writing: {exc.strerror}; not modified") from None
            raise _open_error(path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # a detached label was replaced while we waited: lock the new one
    try:
        yield fd
    finally:
        os.close(fd)  # closing releases the flock


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _recover(fd: int, path: str) -> None:
    """Roll back an interrupted write of ``path`` (the caller holds the lock)."""
    jp = journal_path(path)
    try:
        blob = jp.read_bytes()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise LabelWriteError(path, f"cannot read the write journal {jp}: {exc.strerror}") from None
    head = len(_JOURNAL_MAGIC) + _JOURNAL_HEADER.size
    complete = False
    if blob.startswith(_JOURNAL_MAGIC) and len(blob) >= head:
        length, digest = _JOURNAL_HEADER.unpack_from(blob, len(_JOURNAL_MAGIC))
        payload = blob[head:]
        complete = len(payload) == length and hashlib.sha256(payload).digest() == digest
    if complete:
        # The journal was durable before the label was touched: put the old bytes back.
        log.warning("%s: an earlier write was interrupted; restoring the label saved in %s", path, jp)
        os.pwrite(fd, payload, 0)
        os.fsync(fd)
    else:
        # The journal never became durable, so the label was never touched.
        log.info("%s: removing an incomplete write journal %s (the cube was not modified)", path, jp)
    jp.unlink()
    _fsync_dir(str(jp.parent))


def _write_attached(fd: int, lab: CubeLabel, new_text: str, hook: Hook) -> None:
    assert lab.label_bytes is not None
    new = new_text.encode("latin-1")
    if len(new) >= lab.label_bytes:
        raise LabelFullError(
            lab.path, f"label space is full: the new label needs {len(new)} bytes but Label Bytes is {lab.label_bytes}; not modified"
        )
    old_area = os.pread(fd, lab.label_bytes, 0)
    area = new + b"\0" * (lab.label_bytes - len(new))
    jp = journal_path(lab.path)
    try:
        jfd = os.open(jp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise LabelWriteError(lab.path, f"cannot create the write journal {jp}: {exc.strerror}; not modified") from None
    try:
        try:
            hook("journal-open")
            os.write(jfd, _JOURNAL_MAGIC + _JOURNAL_HEADER.pack(len(old_area), hashlib.sha256(old_area).digest()))
            hook("journal-header")
            os.write(jfd, old_area)
            os.fsync(jfd)
        finally:
            os.close(jfd)
        _fsync_dir(str(jp.parent))
    except OSError as exc:
        jp.unlink(missing_ok=True)
        raise LabelWriteError(lab.path, f"cannot write the write journal {jp}: {exc.strerror}; not modified") from None
    hook("journal-durable")
    try:
        os.pwrite(fd, area, 0)
        hook("label-written")
        os.fsync(fd)
    except OSError as exc:
        _recover(fd, lab.path)
        raise LabelWriteError(lab.path, f"writing the label failed ({exc.strerror}); old label restored") from None
    hook("label-durable")
    jp.unlink()
    _fsync_dir(str(jp.parent))
    hook("journal-removed")


def _write_detached(lab: CubeLabel, new_text: str, hook: Hook) -> None:
    path = lab.path
    st = os.stat(path)
    with open(path, "rb") as f:
        rest = f.read()[len(lab.text.encode("latin-1")):]
    directory = os.path.dirname(os.path.abspath(path))
    try:
        tfd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise LabelWriteError(path, f"cannot create a temporary file in {directory}: {exc.strerror}; not modified") from None
    try:
        with os.fdopen(tfd, "wb") as f:
            f.write(new_text.encode("latin-1") + rest)
            f.flush()
            os.fchmod(f.fileno(), stat.S_IMODE(st.st_mode))
            os.fsync(f.fileno())
        hook("temp-durable")
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise LabelWriteError(path, f"replacing the label failed ({exc.strerror}); not modified") from None
        raise
    _fsync_dir(directory)
    hook("renamed")


def _no_hook(step: str) -> None:
    return None


def write_shape_model(
    path: str | os.PathLike[str], value: str, *, dryrun: bool = False, _hook: Hook | None = None
) -> WriteOutcome:
    """Set ``IsisCube > Kernels > ShapeModel`` of a cube or detached label to ``value``.

    ``value`` is the decoded string (``"Null"`` for the ellipsoid).  Only the label text
    changes; a cube that already holds ``value`` is not rewritten (``written`` is
    False).  With ``dryrun`` nothing is written but every check still runs.
    """
    p = os.fspath(path)
    check_value(value)
    if not value:
        value = "Null"
    hook = _hook or _no_hook
    if dryrun:
        lab = read_label(p)
        new_text, removed = _splice(lab, value)
        new_scan = _verify(lab, new_text, value, removed)
        return _outcome(lab, p, value, new_text, new_scan, removed, written=False)
    if not os.path.exists(p):
        raise NotACubeError(p, "no such file")
    if os.path.isdir(p):
        raise NotACubeError(p, "is a directory, not a cube")
    _check_writable(p)
    with _locked(p) as fd:
        _recover(fd, p)
        lab = _parse(p, *_read_text(fd, p))
        new_text, removed = _splice(lab, value)
        new_scan = _verify(lab, new_text, value, removed)
        if new_text == lab.text:
            return _outcome(lab, p, value, new_text, new_scan, removed, written=False)
        if lab.attached:
            _write_attached(fd, lab, new_text, hook)
        else:
            _write_detached(lab, new_text, hook)
    return _outcome(lab, p, value, new_text, new_scan, removed, written=True)


def _outcome(lab: CubeLabel, path: str, value: str, new_text: str, new_scan: Scan, removed: str | None,
             written: bool) -> WriteOutcome:
    new = _from_scan(path, new_text, new_scan, lab.file_size)
    return WriteOutcome(
        path=path, value=value, previous=lab.shape_model, written=written,
        removed_elevation_model=removed, kernels_text=new.kernels_text or "", label=new,
    )
