"""NAIF DSK shape models: recognised by their own file record, never through GDAL.

ISIS tries a ShapeModel value as a DSK before it tries a cube.  A binary DSK is a NAIF
DAS file whose ID word is ``DAS/DSK``; its file record also names its byte order
(``LTL-IEEE`` or ``BIG-IEEE``).  A transfer-format file (``DASETF``) must be converted
with NAIF's ``tobin`` first.  With ``spiceypy`` (the ``shaperesolver[dsk]`` extra) the
segments are read too: at least one, each with the cube's body as its center.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile

from ..base import bodies, safeio
from ..base.log import get as get_logger
from ..errors import ModelError, UnsafeFileError

__all__ = ["naif_kind", "check_dsk"]

log = get_logger(__name__)

RECORD = 1024
_NATIVE = "LTL-IEEE" if sys.byteorder == "little" else "BIG-IEEE"


def naif_kind(head: bytes) -> str | None:
    """The NAIF file kind a file starts with (``DAS/DSK``, ``DAF/SPK``, ``DASETF``...), else None."""
    word = head[:8].decode("latin-1", "replace")
    if word.startswith(("DAS/", "DAF/", "NAIF/")):
        return word.rstrip(" \0")
    if word.startswith(("DASETF", "DAFETF", "NAIF/DAS")):
        return word[:6]
    return None


def read_record(path: str) -> bytes:
    """The first :data:`RECORD` bytes of a regular file (ModelError if unreadable)."""
    try:
        fd, _ = safeio.open_regular(path, what="model")
    except UnsafeFileError as exc:
        raise ModelError(str(exc)) from None
    try:
        return os.pread(fd, RECORD, 0)
    finally:
        os.close(fd)


def check_dsk(path: str, shown: str, body: str | None, verify: bool = True) -> None:
    """Raise ModelError unless ``path`` is a binary DSK usable for ``body``.

    The file record is always checked; with ``verify`` also the byte order and (with
    spiceypy) that there is at least one segment and every segment's center is ``body``.
    """
    head = read_record(path)
    kind = naif_kind(head)
    if kind in ("DASETF", "DAFETF"):
        raise ModelError(f"{shown}: a NAIF transfer-format file; ISIS needs the binary DSK "
                         "(convert it with NAIF's tobin)")
    if kind != "DAS/DSK":
        what = f"a NAIF {kind} file" if kind else "not a NAIF file"
        raise ModelError(f"{shown}: {what}, not a DSK (its file record's ID word is not DAS/DSK)")
    if not verify:
        return
    if len(head) < RECORD:
        raise ModelError(f"{shown}: truncated DSK ({len(head)} bytes; the file record alone is {RECORD})")
    order = head[84:92].decode("latin-1", "replace")
    if order not in ("LTL-IEEE", "BIG-IEEE"):
        raise ModelError(f"{shown}: DSK file record names no byte order (LTL-IEEE or BIG-IEEE)")
    if order != _NATIVE:
        log.info("%s: %s byte order (this machine is %s); CSPICE translates it when reading", shown, order, _NATIVE)
    try:
        import spiceypy  # noqa: F401 - the reader runs it in a child interpreter
    except ImportError:
        log.info("%s: DSK segments not checked (install shaperesolver[dsk] for spiceypy)", shown)
        return
    centers = _centers(path, shown)
    if not centers:
        raise ModelError(f"{shown}: DSK has no segments")
    want = bodies.lookup(body) if body else None
    if want is None:
        log.info("%s: %s is not in the body table; DSK segment centers not checked", shown, body)
        return
    other = sorted(set(centers) - {want.naif_id})
    if other:
        names = ", ".join(_name(c) for c in other)
        raise ModelError(f"{shown}: DSK segments are for {names}, not {want.name} (NAIF ID {want.naif_id})")


#: seconds CSPICE may take to list a DSK's segments (a crafted file record makes it loop forever)
SPICE_SECONDS = 15.0

# run in a child interpreter: CSPICE cannot be interrupted, and a hostile file may hang or crash it
# with ``python -I`` (no working directory, PYTHONPATH or user site on its path); the
# directory that holds spiceypy is appended after the standard library, so nothing in it
# can stand in for a standard module
_CHILD = """
import sys
if len(sys.argv) > 2:
    sys.path.append(sys.argv[2])
import json
import spiceypy as sp
out = {"centers": []}
try:
    h = sp.dasopr(sys.argv[1])
except Exception as exc:
    print(json.dumps({"open": str(exc)}))
    sys.exit()
try:
    dla = sp.dlabfs(h)
    while len(out["centers"]) <= 100000:
        out["centers"].append(int(sp.dskgd(h, dla).center))
        dla = sp.dlafns(h, dla)
except sp.utils.exceptions.NotFoundError:
    pass
except Exception as exc:
    out["read"] = str(exc)
print(json.dumps(out))
"""


def _spiceypy_home() -> list[str]:
    """The absolute directory spiceypy is imported from here (found, not imported), as a
    one-element list; empty when the child's own site-packages must find it."""
    spec = importlib.util.find_spec("spiceypy")
    if spec is None or not spec.origin:
        return []
    return [os.path.dirname(os.path.dirname(os.path.abspath(spec.origin)))]


def _centers(path: str, shown: str) -> list[int]:
    where = _spiceypy_home()
    try:
        with tempfile.TemporaryDirectory(prefix="shaperesolver-dsk-") as cwd:  # a directory the user owns
            proc = subprocess.run([sys.executable, "-I", "-c", _CHILD, os.path.abspath(path), *where],
                                  capture_output=True, text=True, cwd=cwd, timeout=SPICE_SECONDS,
                                  stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ModelError(f"{shown}: CSPICE did not finish reading the DSK in {SPICE_SECONDS:.0f} s "
                         "(a damaged or crafted file)") from None
    except OSError as exc:
        raise ModelError(f"{shown}: cannot start the DSK reader: {exc.strerror}") from None
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        out = None
    if not isinstance(out, dict):
        raise ModelError(f"{shown}: CSPICE could not read the DSK (its reader ended with exit {proc.returncode})")
    if "open" in out:
        raise ModelError(f"{shown}: CSPICE cannot open the DSK: {_spice_short(out['open'])}")
    if "read" in out:
        raise ModelError(f"{shown}: CSPICE cannot read the DSK segments: {_spice_short(out['read'])}")
    return [int(c) for c in out["centers"]]


def _name(naif_id: int) -> str:
    b = bodies.lookup(str(naif_id))
    return f"{b.name} (NAIF ID {naif_id})" if b else f"NAIF ID {naif_id}"


def _spice_short(exc: BaseException | str) -> str:
    text = " ".join(str(exc).split())
    for marker in ("-- ", "SPICE("):
        if marker in text:
            text = text[text.index(marker):]
            break
    return text[:200]
