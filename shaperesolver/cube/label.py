"""Read ISIS cube labels and splice a ShapeModel into them.

Reading touches only the label area at the start of the file, opened without blocking
and only if it is a regular file; the text is read by :mod:`.pvlscan` in time and memory
linear in its size.  Whether a label is attached or detached follows its own layout
(``^Core`` means detached), and before any write the label area is proven to lie inside
the file and before every data byte the label points at (Core, History, Tables...).

Writing replaces, inserts or creates exactly one statement in ``IsisCube > Kernels``
(and removes a non-null ``ElevationModel``) and leaves every other byte alone; how the
bytes reach the disk safely is :mod:`.txn`'s job.  On the write path
(:func:`update_shape_model`) each label is read and scanned once, under the cube's lock
(shared for a dry run, which opens nothing for writing); the caller chooses the value
from that label, and the splice is proven before a byte changes by scanning again only
the Kernels group it moved and checking that every byte outside it is the old one.
:data:`on_io` counts the reads, scans and checks.
"""

from __future__ import annotations

import os
import re
import stat

from ..base import bodies
from ..base.log import get as get_logger
from ..base.record import Frozen, set_field
from ..base.safeio import open_regular, read_fd
from ..errors import (
    CubeChangedError,
    CubeNotFoundError,
    LabelFullError,
    LabelSyntaxError,
    LabelWriteError,
    MissingTargetError,
    NotACubeError,
    ReadOnlyCubeError,
    UnsafeFileError,
    not_a_cube,
)
from . import txn
from .pvlformat import check_round_trip, check_value, format_statement
from .pvlscan import MAX_STATEMENTS, Scan, ScanError, ScanTruncated, scan, skip_blank
from .txn import journal_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["CubeLabel", "WriteOutcome", "read_label", "write_shape_model", "update_shape_model", "journal_path",
           "MAX_LABEL_SCAN", "on_io"]

log = get_logger(__name__)

#: how far into a file we look for the label's ``End`` statement
MAX_LABEL_SCAN = 8 * 1024 * 1024
_CHUNK = 64 * 1024
_KERNELS = ("IsisCube", "Kernels")
_CORE = ("IsisCube", "Core")
_START = re.compile(r"(?:BEGIN_)?OBJECT[ \t]*=[ \t]*\"?ISISCUBE\b", re.I)
_END_LINE = re.compile(r"^[ \t]*END[ \t]*\r?$", re.I | re.M)


#: Instrumentation: when set, called as ``on_io(event, path)`` for every ``"read"`` (a
#: label's bytes read from disk), ``"scan"`` (a whole label scanned) and ``"check"`` (a
#: splice proven: the statement it wrote, or the region it moved, scanned).  None (the
#: default) costs nothing.
on_io: Callable[[str, str], None] | None = None


def _note(event: str, path: str) -> None:
    hook = on_io
    if hook is not None:
        hook(event, path)


def _null(value: str | None) -> bool:
    return value is None or value.strip().upper() in ("", "NULL")


class CubeLabel(Frozen):
    """The label of one cube, as read from disk.

    ``text`` is the label text up to and including the ``End`` line (Latin-1 decoded, so
    offsets are byte offsets).  ``attached`` follows the label's layout (``^Core`` means
    detached).  ``label_bytes`` is ``Label > Bytes`` when the label says it (detached
    labels often do too), ``data_start`` the 0-based offset of the first data byte the
    label points at in this file.  ``layout_problem`` says why the label may not be
    edited in place (None when it may).
    """

    __slots__ = ("path", "text", "attached", "label_bytes", "target", "shape_model", "elevation_model", "kernels",
                 "file_size", "scan", "data_start", "layout_problem")
    _hidden = ("text", "scan")
    path: str
    text: str
    attached: bool
    label_bytes: int | None
    target: str
    shape_model: str | None
    elevation_model: str | None
    kernels: dict[str, str | tuple[str, ...]] | None
    file_size: int
    scan: Scan
    data_start: int | None
    layout_problem: str | None

    def __init__(self, path: str, text: str, attached: bool, label_bytes: int | None, target: str,
                 shape_model: str | None, elevation_model: str | None, kernels: dict[str, str | tuple[str, ...]] | None,
                 file_size: int, scan: Scan, data_start: int | None = None, layout_problem: str | None = None) -> None:
        set_field(self, "path", path)
        set_field(self, "text", text)
        set_field(self, "attached", attached)
        set_field(self, "label_bytes", label_bytes)
        set_field(self, "target", target)
        set_field(self, "shape_model", shape_model)
        set_field(self, "elevation_model", elevation_model)
        set_field(self, "kernels", kernels)
        set_field(self, "file_size", file_size)
        set_field(self, "scan", scan)
        set_field(self, "data_start", data_start)
        set_field(self, "layout_problem", layout_problem)

    @property
    def kernels_text(self) -> str | None:
        """The ``Group = Kernels`` block exactly as written in the label."""
        ag = self.scan.aggregate(_KERNELS)
        return None if ag is None else self.text[ag.start : ag.end]

    def isiscube_keywords(self) -> dict[tuple[str, str], str]:
        """``{(GROUP, KEYWORD): first value}`` for every group directly in IsisCube
        (names upper-cased), as ISIS's KernelDb matching sees them."""
        return {key: st.value if isinstance(st.value, str) else (st.value[0] if st.value else "")
                for key, st in self.scan.group_keywords("IsisCube").items()}

    def pvl(self) -> Any:
        """The whole label parsed by ``pvl`` (a ``PVLModule``)."""
        import pvl

        return pvl.loads(self.text)


class WriteOutcome(Frozen):
    """What :func:`write_shape_model` did (or, in a dry run, would do).

    ``would_write`` is True when a real run would change the file's bytes (equals
    ``written`` in a real run); ``new_text`` is the new label text (what the cube holds
    after a real run)."""

    __slots__ = ("path", "value", "previous", "written", "removed_elevation_model", "kernels_text", "would_write",
                 "new_text", "file_size", "_label")
    _hidden = ("new_text", "file_size")
    _derived = ("_label",)
    path: str
    value: str
    previous: str | None
    written: bool
    removed_elevation_model: str | None
    kernels_text: str
    would_write: bool
    new_text: str
    file_size: int
    _label: CubeLabel | None

    def __init__(self, path: str, value: str, previous: str | None, written: bool, removed_elevation_model: str | None,
                 kernels_text: str, would_write: bool = False, new_text: str = "", file_size: int = 0,
                 _label: CubeLabel | None = None) -> None:
        set_field(self, "path", path)
        set_field(self, "value", value)
        set_field(self, "previous", previous)
        set_field(self, "written", written)
        set_field(self, "removed_elevation_model", removed_elevation_model)
        set_field(self, "kernels_text", kernels_text)
        set_field(self, "would_write", would_write)
        set_field(self, "new_text", new_text)
        set_field(self, "file_size", file_size)
        set_field(self, "_label", _label)

    @property
    def label(self) -> CubeLabel:
        """The new label, read from ``new_text`` on first use (the write path itself
        proves the splice without scanning the whole label again)."""
        if self._label is None:
            set_field(self, "_label", _parse(self.path, self.new_text, self.file_size))
        assert self._label is not None
        return self._label


# ---------------------------------------------------------------- reading


def _read_area(fd: int, path: str, size: int, overlay: bytes | None = None) -> tuple[str, bytes]:
    """(the label text up to the first NUL, the ``End`` line or the scan limit, the bytes
    read from the start of the file).  ``overlay`` stands for the file's first bytes (the
    label a dry run must see where an interrupted write left a mix)."""
    if size == 0:
        raise NotACubeError(path, "empty file, not an ISIS cube")
    _note("read", path)
    want = _CHUNK
    checked = False
    while True:
        data = read_fd(fd, min(want, MAX_LABEL_SCAN))
        if overlay:
            data = (overlay + data[len(overlay):])[: len(data)]
        nul = data.find(b"\0")
        text = (data if nul < 0 else data[:nul]).decode("latin-1")
        if not checked:
            if not _START.match(text, skip_blank(text[:4096], 0)):
                lbl = detached_label_of(path)
                raise NotACubeError(path, f"not an ISIS cube label but the data file of the detached label "
                                          f"{os.path.basename(lbl)} beside it: give that .lbl instead" if lbl else
                                    "not an ISIS cube label (it does not start with 'Object = IsisCube')")
            checked = True
        if nul >= 0 or len(data) >= size or want >= MAX_LABEL_SCAN or _END_LINE.search(text):
            return text, data
        want *= 4


#: how many ``.lbl`` files of a directory :func:`detached_label_of` looks into
MAX_LABELS_LOOKED_AT = 64
_POINTER = re.compile(r'^\s*\^\w+\s*=\s*\(?\s*"?([^"\s,)]+)', re.M)


def detached_label_of(path: str) -> str | None:
    """The detached label (``.lbl`` beside ``path``) whose pointer names ``path`` as its
    data file, or None (looks at ``NAME.lbl`` first, then at most
    :data:`MAX_LABELS_LOOKED_AT` others; only to say where the label is)."""
    folder, name = os.path.split(os.path.abspath(path))
    stem = os.path.splitext(name)[0]
    try:
        others = [e.name for e in os.scandir(folder) if e.name.lower().endswith(".lbl")][:MAX_LABELS_LOOKED_AT]
    except OSError:
        return None
    for cand in sorted(others, key=lambda n: os.path.splitext(n)[0] != stem):
        full = os.path.join(folder, cand)
        try:
            fd, _ = open_regular(full, what="label")
        except OSError:
            continue
        try:
            text = read_fd(fd, _CHUNK).decode("latin-1")
        except OSError:
            continue
        finally:
            os.close(fd)
        if _START.match(text, skip_blank(text[:4096], 0)) and name in _POINTER.findall(text):
            return full
    return None


def _parse(path: str, text: str, size: int) -> CubeLabel:
    _note("scan", path)
    try:
        sc = scan(text)
    except ScanTruncated as exc:
        if len(text) >= MAX_LABEL_SCAN:
            raise LabelSyntaxError(path, f"no End statement within the first {MAX_LABEL_SCAN // 2**20} MiB") from None
        raise LabelSyntaxError(path, f"truncated label: {exc}") from None
    except ScanError as exc:
        raise LabelSyntaxError(path, f"malformed label: {exc}") from None
    return _from_scan(path, text[: sc.end], sc, size)


def _int(sc: Scan, st: Any) -> int | None:
    try:
        return int(str(st.value).strip())
    except ValueError:
        return None


def _layout(sc: Scan, text: str, size: int) -> tuple[bool, int | None, int | None, str | None]:
    """(attached, Label Bytes, first data byte, problem) from the label's own layout."""
    lb = sc.find(("Label",), "Bytes")
    label_bytes = _int(sc, lb) if lb is not None else None
    if lb is not None and label_bytes is None:
        return True, None, None, f"Label > Bytes is not a number: {lb.raw[:40]!r}"
    core = sc.aggregate(_CORE)
    if core is None:
        return True, label_bytes, None, "no IsisCube > Core object, so the cube's layout is unknown"
    if sc.find(_CORE, "^Core") is not None:
        return False, label_bytes, None, None if size <= MAX_LABEL_SCAN else f"a {size}-byte detached label is too large"
    # attached: every StartByte of an object without a ^pointer of its own is in this file
    # a pointer to another file for the object's own data (^Core, ^History, and ^DnFile
    # of an external cube): that object's StartByte is not in this file
    pointered = {st.path for st in sc.statements if st.path and st.name.startswith("^")
                 and st.name[1:].upper() in (st.path[-1].upper(), "DNFILE")}
    starts = []
    for st in sc.statements:
        if st.name.upper() == "STARTBYTE" and st.path not in pointered:
            value = _int(sc, st)
            if value is None or value < 1:
                return True, label_bytes, None, f"{'/'.join(st.path)} > StartByte is not a positive number"
            starts.append(value - 1)
    first = min(starts) if starts else None
    if label_bytes is None:
        return True, None, first, "attached cube without Label > Bytes: the size of its label area is unknown"
    if label_bytes <= len(text):
        return True, label_bytes, first, f"Label > Bytes ({label_bytes}) is smaller than the label text ({len(text)} bytes)"
    if label_bytes > size:
        return True, label_bytes, first, f"Label > Bytes ({label_bytes}) is beyond the end of the file ({size} bytes)"
    if first is not None and label_bytes > first:
        return True, label_bytes, first, (f"Label > Bytes ({label_bytes}) overlaps the data, which starts at byte "
                                          f"{first + 1}")
    return True, label_bytes, first, None


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
    attached, label_bytes, first, problem = _layout(sc, text, size)
    return CubeLabel(
        path=path, text=text, attached=attached, label_bytes=label_bytes,
        target=target, shape_model=_str(shape.value) if shape else None,
        elevation_model=_str(elev.value) if elev else None, kernels=kernels, file_size=size, scan=sc,
        data_start=first, layout_problem=problem,
    )


def _str(value: str | tuple[str, ...]) -> str:
    return value if isinstance(value, str) else "(" + ", ".join(value) + ")"


def _open_cube(path: str) -> tuple[int, os.stat_result]:
    try:
        return open_regular(path, what="cube")
    except UnsafeFileError as exc:
        raise not_a_cube(path, txn._problem(exc), exc.errno) from None


def read_label(path: str | os.PathLike[str], *, lock_wait: float = txn.DEFAULT_LOCK_WAIT,
               shared: bool = False) -> CubeLabel:
    """Read the label of an attached cube or a detached ``.lbl`` (label area only).

    If an earlier write of this cube was interrupted, it is first finished or rolled
    back (see :mod:`.txn`), waiting at most ``lock_wait`` seconds for the cube's lock.
    ``shared`` (an audit): read under a shared lock, which only keeps writers out, with
    nothing opened for writing; an interrupted write is then seen as the next writer
    will leave it (as a dry run sees it) and left for that writer, a stale journal too:
    no file is changed.
    """
    p = os.fspath(path)
    if shared:
        with txn.locked(p, write=False, shared=True, wait=lock_wait) as (fd, st):
            overlay = txn.recover(fd, p, st, writable=False, dry=True, keep=True)
            return _parse(p, _read_area(fd, p, st.st_size, overlay)[0], st.st_size)
    try:
        pending = os.path.lexists(txn.journal_file(p))
    except OSError:
        pending = False  # no such file (or no access): opening it below says which
    if pending:
        try:
            with txn.locked(p, wait=lock_wait) as (fd, st):
                txn.recover(fd, p, st)
                return _parse(p, _read_area(fd, p, st.st_size)[0], st.st_size)
        except ReadOnlyCubeError:
            with txn.locked(p, write=False, wait=lock_wait) as (fd, st):
                txn.recover(fd, p, st, writable=False)
                return _parse(p, _read_area(fd, p, st.st_size)[0], st.st_size)
    fd, st = _open_cube(p)
    try:
        return _parse(p, _read_area(fd, p, st.st_size)[0], st.st_size)
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


class _Plan:
    """A splice: the new text, what it removed, and the one region of the label it moved
    (``[start, old_end)`` of the old text became ``[start, new_end)`` of the new).
    ``within`` is the enclosing path of the region's statements (None: the region is not
    one Kernels group, so the whole label is scanned again to prove the splice).
    ``edits`` are the splice's ``(start, end, replacement)`` in the old text, in order,
    and ``statement`` the ShapeModel statement written (None for a new Kernels group)."""

    __slots__ = ("text", "removed", "start", "old_end", "new_end", "within", "edits", "statement")

    def __init__(self, text: str, removed: str | None, start: int, old_end: int, new_end: int,
                 within: tuple[str, ...] | None, edits: list[tuple[int, int, str]] | None = None,
                 statement: str | None = None) -> None:
        self.text, self.removed, self.start, self.old_end, self.new_end = text, removed, start, old_end, new_end
        self.within, self.edits, self.statement = within, edits, statement


def _splice(lab: CubeLabel, value: str) -> _Plan:
    """Splice ``ShapeModel = value`` into the label (and drop a non-null ElevationModel)."""
    sc = lab.scan
    text, nl = lab.text, sc.newline
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement), non-overlapping
    removed = None
    within: tuple[str, ...] | None
    stmt: str | None = None
    group = sc.aggregate(_KERNELS)
    if group is None:
        cube = sc.aggregate(("IsisCube",))
        assert cube is not None  # _START guarantees it
        end_line = text[cube.end_line : cube.end]
        indent = len(end_line) - len(end_line.lstrip(" "))  # of IsisCube's End_Object
        pad = " " * (indent + 2)
        block = f"{nl}{pad}Group = Kernels{nl}{format_statement('ShapeModel', value, indent + 4, 0, nl)}{pad}End_Group{nl}"
        edits.append((cube.end_line, cube.end_line, block))
        region, within = (cube.end_line, cube.end_line), cube.path + (cube.name,)
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
        region, within = (group.start, group.end), group.path
    edits.sort()
    new_text = _apply(text, edits)
    if not all(region[0] <= start <= end <= region[1] for start, end, _ in edits):
        region, within = (0, len(text)), None  # an edit outside the first Kernels group: prove it all
    return _Plan(new_text, removed, region[0], region[1], region[1] + len(new_text) - len(text),
                 within if len(sc.statements) + len(sc.aggregates) + 2 < MAX_STATEMENTS else None,
                 edits, stmt)


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    """``text`` with each ``(start, end, replacement)`` (in order, not overlapping) made."""
    out = []
    last = 0
    for start, end, rep in edits:
        out.append(text[last:start])
        out.append(rep)
        last = end
    out.append(text[last:])
    return "".join(out)


def _others(statements: list[Any], removed: str | None) -> list[tuple[tuple[str, ...], str, str]]:
    """The statements a splice must leave alone: all but Kernels' ShapeModel (and the
    ElevationModel it removed), as (upper-cased path, name, raw value)."""
    skip = {"SHAPEMODEL"} | ({"ELEVATIONMODEL"} if removed is not None else set())
    out = []
    for s in statements:
        path = tuple(p.upper() for p in s.path)
        if not (s.name.upper() in skip and path == ("ISISCUBE", "KERNELS")):
            out.append((path, s.name, s.raw))
    return out


def _prove(lab: CubeLabel, plan: _Plan, value: str) -> str:
    """Prove that the spliced label reads back as intended; return its Kernels group text.

    A splice into an existing Kernels group is proven by scanning the one statement it
    wrote (:func:`_prove_statement`).  A new Kernels group is proven by scanning the
    region the splice moved: the bytes before and after it
    are checked to be the old ones, and the region alone must read as one complete
    Kernels group that holds ``ShapeModel = value`` and every other statement it held.
    The scanner carries nothing across a group's last line but the nesting, which the
    region leaves as it was, so the rest of the label reads exactly as before.  A splice
    that is not one such region is proven by scanning the whole new label.
    """
    old, new = lab.text, plan.text
    fail = "internal check failed, nothing written: "
    if plan.within is None:
        try:
            full = scan(new)
        except ScanError as exc:
            raise LabelWriteError(lab.path, f"{fail}new label unreadable ({exc})") from None
        got = full.find(_KERNELS, "ShapeModel")
        if got is None or got.value != value or _others(full.statements, plan.removed) != _others(
                lab.scan.statements, plan.removed):
            raise LabelWriteError(lab.path, f"{fail}the edited label does not read back as intended")
        group = full.aggregate(_KERNELS)
        assert group is not None
        return new[group.start : group.end]
    _note("check", lab.path)
    if plan.edits is not None and plan.statement is not None and not _after_dash(old, plan.edits):
        return _prove_statement(lab, plan, value, fail)
    a, b, nb = plan.start, plan.old_end, plan.new_end
    region = new[a:nb]
    if new[:a] != old[:a] or new[nb:] != old[b:] or not region.endswith("\n"):
        raise LabelWriteError(lab.path, f"{fail}the splice changed bytes outside the Kernels group")
    tail = "End" + lab.scan.newline
    try:
        part = scan(region + tail)
    except ScanError as exc:
        raise LabelWriteError(lab.path, f"{fail}new Kernels group unreadable ({exc})") from None
    top = [ag for ag in part.aggregates if not ag.path]
    if (part.end != len(region) + len(tail) or len(top) != 1 or top[0].name.upper() != "KERNELS"
            or top[0].kind != "GROUP" or region[: top[0].start].strip() or top[0].end != len(region)):
        raise LabelWriteError(lab.path, f"{fail}the new Kernels group is not one complete group")
    moved = [st._replace(path=plan.within + st.path) for st in part.statements]
    before = [st for st in lab.scan.statements if a <= st.start < b]
    got = next((st for st in moved if st.name.upper() == "SHAPEMODEL"
                and tuple(p.upper() for p in st.path) == ("ISISCUBE", "KERNELS")), None)
    if got is None or got.value != value or _others(moved, plan.removed) != _others(before, plan.removed):
        raise LabelWriteError(lab.path, f"{fail}the edited label does not read back as intended")
    return region[top[0].start :]


def _after_dash(text: str, edits: list[tuple[int, int, str]]) -> bool:
    """True when the last character before an edit (blank space and line ends skipped) is
    a ``-``: an unquoted value ending in ``-`` continues on the next line when that line
    starts with a value, so what the splice puts there could join the value above it (the
    one state the scanner carries from one line to the next besides the nesting)."""
    for start, _, _ in edits:
        i = start
        while i > 0 and text[i - 1] in " \t\r\n\f\v":
            i -= 1
        if i > 0 and text[i - 1] == "-":
            return True
    return False


def _prove_statement(lab: CubeLabel, plan: _Plan, value: str, fail: str) -> str:
    """The proof of a splice into an existing Kernels group, scanning one statement.

    The scanner's state at the start of a line that begins a statement, ends one or
    holds an ``End_Group`` is only the nesting (comments end with their line; values end
    before their line's end), unless the value above ends in ``-`` and could continue on
    that line (:func:`_after_dash`: such splices get the region proof).  So when each
    edit replaces or removes exactly one of the
    Kernels group's statements, or inserts at the end of one or at the group's
    ``End_Group`` line, and the text written is exactly one complete statement
    ``ShapeModel = value``, the new label reads as the old one with those statements
    replaced, removed or added, and nothing else: what a rescan of the region would show.
    """
    old, new, stmt = lab.text, plan.text, plan.statement
    edits = plan.edits
    assert edits is not None and stmt is not None
    sc = lab.scan
    group = sc.aggregate(_KERNELS)
    spans: dict[tuple[int, int], str] = {}  # (start, end) of each Kernels statement: its name
    ends = set()
    for st in sc.statements:
        if len(st.path) == 2 and st.path[1].upper() == "KERNELS" and st.path[0].upper() == "ISISCUBE":
            spans[(st.start, st.end)] = st.name.upper()
            ends.add(st.end)
    if group is None or group.end_line < 0:
        raise LabelWriteError(lab.path, f"{fail}the Kernels group is not one complete group")
    ends.add(group.end_line)
    first = sc.find(_KERNELS, "ShapeModel")  # (the one ISIS reads: the splice's must take its place)
    last, written = 0, 0
    for start, end, rep in edits:
        name = spans.get((start, end)) if start < end else None
        if start < last or (rep and rep != stmt) or (start == end and (start not in ends or first is not None)) or (
                start < end and not (name == "SHAPEMODEL" and rep and first is not None and first.start == start)
                and not (name == "ELEVATIONMODEL" and not rep and plan.removed is not None)):
            raise LabelWriteError(lab.path, f"{fail}the splice is not whole Kernels statements")
        written += rep == stmt
        last = end
    if written != 1 or _apply(old, edits) != new:
        raise LabelWriteError(lab.path, f"{fail}the edited label is not the splice")
    tail = "End" + sc.newline
    try:
        part = scan(stmt + tail)
    except ScanError as exc:
        raise LabelWriteError(lab.path, f"{fail}new statement unreadable ({exc})") from None
    got = part.statements[0] if len(part.statements) == 1 else None
    if (got is None or part.aggregates or got.start != 0 or got.end != len(stmt) or part.end != len(stmt) + len(tail)
            or got.name.upper() != "SHAPEMODEL" or got.value != value):
        raise LabelWriteError(lab.path, f"{fail}the edited label does not read back as intended")
    grow = sum(len(rep) - (end - start) for start, end, rep in edits if end <= group.end)
    return new[group.start : group.end + grow]


# ---------------------------------------------------------------- writing


def _check_writable(path: str) -> None:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise not_a_cube(path, f"cannot open: {exc.strerror or exc}; not modified", exc.errno) from None
    if not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise ReadOnlyCubeError(path, "file is read-only (no write permission bits); not modified")
    if not os.access(path, os.W_OK):
        raise ReadOnlyCubeError(path, "no permission to write this file; not modified")
    d = os.path.dirname(os.path.realpath(path))
    try:
        dst = os.stat(d)
    except OSError as exc:
        raise NotACubeError(path, f"cannot open its directory: {exc.strerror or exc}; not modified") from None
    if not dst.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(d, os.W_OK):
        raise ReadOnlyCubeError(path, f"directory {d} is not writable (needed for the write journal); not modified")


def _plan(lab: CubeLabel, value: str) -> tuple[_Plan, str]:
    """Splice, prove the result and check the layout; (the splice, the new Kernels group)."""
    plan = _splice(lab, value)
    kernels = _prove(lab, plan, value)
    if plan.text != lab.text:
        if lab.layout_problem:
            raise LabelWriteError(lab.path, f"{lab.layout_problem}; not modified")
        if lab.attached:
            assert lab.label_bytes is not None
            if len(plan.text) >= lab.label_bytes:
                raise LabelFullError(lab.path, f"label space is full: the new label needs {len(plan.text)} bytes but "
                                               f"Label Bytes is {lab.label_bytes}; not modified")
    return plan, kernels


def _write(fd: int, st: os.stat_result, lab: CubeLabel, new_text: str, data: bytes, hook: txn.Hook) -> None:
    """Write ``new_text`` over the locked cube, whose first bytes (read under this lock) are ``data``."""
    old = lab.text.encode("latin-1")
    new = new_text.encode("latin-1")
    if lab.attached:
        width = max(len(old), len(new))
        old_region = data[:width] if len(data) >= width else read_fd(fd, width)
        if len(old_region) != width or not old_region.startswith(old):
            raise LabelWriteError(lab.path, "the label changed while it was read; not modified")
        txn.write_region(fd, lab.path, st, old_region, new + b"\0" * (width - len(new)), hook)
    else:
        whole = data if len(data) == st.st_size else read_fd(fd, MAX_LABEL_SCAN + 1)
        if len(whole) != st.st_size or not whole.startswith(old):
            raise LabelWriteError(lab.path, "the label changed while it was read; not modified")
        txn.replace_file(fd, lab.path, st, new + whole[len(old):], hook)


def write_shape_model(
    path: str | os.PathLike[str], value: str, *, dryrun: bool = False, expect_target: str | None = None,
    lock_wait: float = txn.DEFAULT_LOCK_WAIT, _hook: txn.Hook | None = None,
) -> WriteOutcome:
    """Set ``IsisCube > Kernels > ShapeModel`` of a cube or detached label to ``value``.

    ``value`` is the decoded string (``"Null"`` for the ellipsoid).  Only the label text
    changes; a cube that already holds ``value`` is not rewritten (``written`` is
    False).  With ``dryrun`` nothing is written but every check still runs.  With
    ``expect_target`` the write happens only if the cube (read under the lock) still
    names that body; otherwise :class:`CubeChangedError`.  A cube another process keeps
    locked for ``lock_wait`` seconds is not written (:class:`CubeLockedError`).
    """
    value = value or "Null"
    _check(value)

    def choose(lab: CubeLabel) -> str:
        if expect_target is not None:
            same_target(lab, expect_target)
        return value

    return update_shape_model(path, choose, dryrun=dryrun, lock_wait=lock_wait, _hook=_hook)


def same_target(lab: CubeLabel, target: str) -> None:
    """Raise :class:`CubeChangedError` unless the label still names the body of ``target``."""
    if bodies.canonical(lab.target) != bodies.canonical(target):
        raise CubeChangedError(lab.path, f"the cube changed since it was resolved: its target is now {lab.target}, "
                                         f"not {target}; not modified")


def _check(value: str) -> None:
    check_value(value)
    check_round_trip(value)


def update_shape_model(
    path: str | os.PathLike[str], choose: Callable[[CubeLabel], str], *, dryrun: bool = False,
    lock_wait: float = txn.DEFAULT_LOCK_WAIT, _hook: txn.Hook | None = None,
) -> WriteOutcome:
    """Set the ShapeModel that ``choose(label)`` picks from the cube's own label.

    The label is read and scanned once, under the cube's lock: exclusive for a write, shared
    for a dry run, which opens nothing for writing (an interrupted earlier write is then
    seen as the next writer will leave it: a provably stale journal is removed, a torn
    label is read as the journal's old bytes and left for that writer to restore).
    ``choose`` runs under the lock; what it raises propagates and nothing is written.
    The splice is proven before any byte changes (see :func:`_prove`).
    """
    p = os.fspath(path)
    hook = _hook or (lambda step: None)
    if not dryrun:
        if not os.path.lexists(p):
            raise CubeNotFoundError(p)
        if os.path.isdir(p):
            raise NotACubeError(p, "is a directory, not a cube")
        _check_writable(p)
    with txn.locked(p, write=not dryrun, shared=dryrun, wait=lock_wait) as (fd, st):
        overlay = txn.recover(fd, p, st, writable=not dryrun, dry=dryrun)
        text, data = _read_area(fd, p, st.st_size, overlay)
        lab = _parse(p, text, st.st_size)
        value = choose(lab) or "Null"
        _check(value)
        plan, kernels = _plan(lab, value)
        changed = plan.text != lab.text
        if dryrun or not changed:
            if not changed and not dryrun and not lab.attached:
                txn.clear_temp(p, st)  # a killed write's leftover, even when there is nothing to write
            return _outcome(lab, value, plan, kernels, written=False, would=changed)
        _write(fd, st, lab, plan.text, data, hook)
    return _outcome(lab, value, plan, kernels, written=True, would=True)


def _outcome(lab: CubeLabel, value: str, plan: _Plan, kernels: str, written: bool, would: bool) -> WriteOutcome:
    return WriteOutcome(path=lab.path, value=value, previous=lab.shape_model, written=written,
                        removed_elevation_model=plan.removed, kernels_text=kernels, would_write=would,
                        new_text=plan.text, file_size=lab.file_size)
