"""SHAPE=SYSTEM: find a DEM in the ISIS data area exactly as ISIS's KernelDb does.

* The database lives in ``$ISISDATA/base/dems``: the highest ``kernels.????.conf``
  when one exists (its Selections' ``File`` entries name the db files to read), else
  the highest ``kernels.????.db``.
* A Selection matches when, for each ``Match = (group, keyword, value)``, the cube's
  ``IsisCube > group > keyword`` equals ``value`` after collapsing whitespace, trimming
  and upper-casing both.  The last matching Selection wins.
* ``File = ("base", "dems/x????.cub")`` means ``$base/dems/x????.cub``; each run of
  ``?`` is resolved to the highest zero-padded version on disk.  ``$base`` is kept
  unexpanded in the result, as spiceinit writes it.
* A chosen model must lie inside the data area (after normalising ``..``; symbolic
  links the data area's owner made are followed) and be an existing regular file.
  Otherwise the previous matching Selection is tried, then the ellipsoid, and
  ``SystemModel.reasons`` says why each was skipped.
* Every db or conf file is read as a regular file of at most :data:`MAX_DB_BYTES`.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

from ..base import safeio
from ..base.log import get as get_logger
from ..base.record import Frozen, set_field
from ..cube.pvlscan import Scan, ScanError, ScanTruncated, scan
from ..errors import DataAreaError, KernelDbError, UnsafeFileError
from . import isisfiles
from .isisfiles import ISIS_VAR, expand_isis

__all__ = ["SystemModel", "find_system_model", "data_area", "highest_version", "expand", "expand_isis", "ISIS_VAR"]

log = get_logger(__name__)

MAX_DB_BYTES = 16 * 2**20  # real kernel dbs are a few kB


class SystemModel(Frozen):
    """What the DEM database says for one cube: ``path`` is None when nothing usable matched.

    ``reasons`` lists matches that were skipped (outside the data area, missing).
    """

    __slots__ = ("path", "db", "reasons")
    path: str | None
    db: str
    reasons: tuple[str, ...]

    def __init__(self, path: str | None, db: str, reasons: tuple[str, ...] = ()) -> None:
        set_field(self, "path", path)
        set_field(self, "db", db)
        set_field(self, "reasons", reasons)


def data_area(isisdata: str | os.PathLike[str] | None = None) -> Path:
    """The ISIS data area (:func:`.isisfiles.data_area`) as a :class:`~pathlib.Path`."""
    return Path(isisfiles.data_area(isisdata))


def highest_version(pattern: Path) -> Path | None:
    """The file matching ``pattern`` whose ``?`` runs form the highest number."""
    name = pattern.name
    if "?" not in name:
        return pattern if pattern.exists() else None
    regex = re.compile("^" + re.sub(r"\\\?(?:\\\?)*", lambda m: f"(\\d{{{m.group().count('?')}}})",
                                      re.escape(name)) + "$")
    best: tuple[tuple[int, ...], Path] | None = None
    try:
        entries = list(pattern.parent.iterdir())
    except OSError:
        return None
    for entry in entries:
        m = regex.match(entry.name)
        if m:
            key = tuple(int(g) for g in m.groups())
            if best is None or key > best[0]:
                best = (key, entry)
    return best[1] if best else None


def expand(path: str, root: Path) -> Path:
    """Expand a leading ``$var`` (``$base/...``, ``$mro/...``) under the data area."""
    m = re.match(r"\$(\w+)(/.*)?$", path)
    if not m:
        return Path(path)
    return root / m.group(1) / (m.group(2) or "/").lstrip("/")


def _norm(value: str) -> str:
    return " ".join(value.split()).upper()


def _read_db(path: Path) -> tuple[str, Scan]:
    try:
        raw, _ = safeio.read_regular(path, MAX_DB_BYTES, what="kernel database")
    except UnsafeFileError as exc:
        raise KernelDbError(str(exc)) from None
    text = raw.decode("latin-1")
    try:
        try:
            return text, scan(text)
        except ScanTruncated:
            return text, scan(text.rstrip() + "\nEnd\n")  # many hand-edited dbs omit End
    except ScanError as exc:
        raise KernelDbError(f"{path}: malformed kernel database: {exc}") from None


def _selections(path: Path) -> list[dict[str, list[tuple[str, ...]]]]:
    """Each Selection group of a db file, as {KEYWORD: [values...]} in file order."""
    try:
        st = path.stat()
    except OSError as exc:
        raise KernelDbError(f"{path}: cannot read: {exc.strerror}") from None
    return _selections_cached(str(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=64)
def _selections_cached(name: str, mtime_ns: int, size: int) -> list[dict[str, list[tuple[str, ...]]]]:
    path = Path(name)
    text, sc = _read_db(path)
    groups = [ag for ag in sc.aggregates if ag.kind == "GROUP" and ag.name.upper() == "SELECTION"]
    out = []
    for ag in groups:
        sel: dict[str, list[tuple[str, ...]]] = {}
        for st in sc.statements:
            if ag.start <= st.start < ag.end and len(st.path) == len(ag.path) + 1:
                value = st.value if isinstance(st.value, tuple) else (st.value,)
                sel.setdefault(st.name.upper(), []).append(value)
        for match in sel.get("MATCH", []):
            if len(match) != 3:
                line = text.count("\n", 0, ag.start) + 1
                raise KernelDbError(f"{path}: malformed Match in the Selection at line {line}: expected (group, keyword, value)")
        out.append(sel)
    return out


def _matches(sel: dict[str, list[tuple[str, ...]]], keywords: dict[tuple[str, str], str]) -> bool:
    for group, key, value in sel.get("MATCH", []):
        have = keywords.get((group.upper(), key.upper()))
        if have is None or _norm(have) != _norm(value):
            return False
    return True


def _file_value(sel: dict[str, list[tuple[str, ...]]], db: Path) -> str | None:
    files = sel.get("FILE")
    if not files:
        return None
    value = files[-1]
    if len(value) == 2:
        return f"${value[0]}/{value[1].lstrip('/')}"
    if len(value) == 1:
        return value[0]
    raise KernelDbError(f"{db}: malformed File entry {value!r}")


def _db_files(root: Path, dems: Path, keywords: dict[tuple[str, str], str]) -> list[Path]:
    conf = highest_version(dems / "kernels.????.conf")
    if conf is not None:
        files: list[Path] = []
        for sel in _selections(conf):
            if _matches(sel, keywords):
                value = _file_value(sel, conf)
                if value:
                    pattern = expand(value, root) if value.startswith("$") else dems / value
                    if not _inside(pattern, root):
                        raise KernelDbError(f"{conf}: {value} is outside the data area {root}")
                    target = highest_version(pattern)
                    if target is None:
                        raise KernelDbError(f"{conf}: no file found for {value}")
                    files.append(target)
        if files:
            return files
    db = highest_version(dems / "kernels.????.db")
    if db is None:
        raise DataAreaError(
            f"no DEM kernel database in {dems}: no existing files found with a numerical version matching "
            f"kernels.????.db (is ISISDATA={root} the right data area?)"
        )
    return [db]


def _inside(path: Path, root: Path) -> bool:
    """True when ``path`` (``..`` normalised away, relative to the cwd) lies inside ``root``."""
    p = os.path.normpath(os.path.abspath(path))
    r = os.path.normpath(os.path.abspath(root))
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


def _usable(value: str, root: Path, db: Path) -> tuple[str | None, str | None]:
    """(the value to write, None) for a usable model, else (None, why it was skipped)."""
    where = expand(value, root) if value.startswith("$") else Path(value)
    if not _inside(where, root):
        return None, f"{db}: SYSTEM model {value} is outside the data area {root}; skipped"
    if "?" in where.name:
        on_disk = highest_version(where)
        if on_disk is None:
            return None, f"{db}: no existing files found with a numerical version matching {value}; skipped"
        value = value[: value.rfind("/") + 1] + on_disk.name if "/" in value else on_disk.name
        where = on_disk
    try:
        fd, _ = safeio.open_regular(where, what="SYSTEM model")
        os.close(fd)
    except UnsafeFileError as exc:
        return None, f"{db}: {exc}; skipped"
    return value, None


def find_system_model(keywords: dict[tuple[str, str], str], isisdata: str | os.PathLike[str] | None = None) -> SystemModel:
    """The SYSTEM shape model for a cube whose ``IsisCube > group > keyword`` values are
    ``keywords`` (keys upper-cased).  ``path`` is None when no usable Selection matches."""
    root = data_area(isisdata)
    dems = root / "base" / "dems"
    if not dems.is_dir():
        raise DataAreaError(f"no DEM directory {dems} in the ISIS data area (set ISISDATA or pass isisdata=DIR)")
    found: list[tuple[str, Path]] = []
    last_db = None
    for db in _db_files(root, dems, keywords):
        last_db = db
        for sel in _selections(db):
            if sel.get("MATCH") and _matches(sel, keywords):
                value = _file_value(sel, db)
                if value:
                    found.append((value, db))
    assert last_db is not None
    reasons: list[str] = []
    for value, db in reversed(found):  # the last match wins; earlier ones are the fallbacks
        usable, why = _usable(value, root, db)
        if usable is not None:
            return SystemModel(usable, str(db), tuple(reasons))
        log.warning("%s", why)
        reasons.append(str(why))
    return SystemModel(None, str(last_db), tuple(reasons))


