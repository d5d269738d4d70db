"""NAIF DSK shape models: recognised by their own file record, never through GDAL.

ISIS tries a ShapeModel value as a DSK before it tries a cube.  A binary DSK is a NAIF
DAS file whose ID word is ``DAS/DSK``; its file record also names its byte order
(``LTL-IEEE`` or ``BIG-IEEE``).  A transfer-format file (``DASETF``) must be converted
with NAIF's ``tobin`` first.  With ``spiceypy`` (the ``shaperesolver[dsk]`` extra) the
segments are read too: at least one, each with the cube's body as its center.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

from . import bodies, safeio
from .errors import ModelError, UnsafeFileError

__all__ = ["naif_kind", "check_dsk"]

log = logging.getLogger(__name__)

RECORD = 1024
_SPICE = threading.Lock()  # CSPICE is not thread-safe
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
        import spiceypy
    except ImportError:
        log.info("%s: DSK segments not checked (install shaperesolver[dsk] for spiceypy)", shown)
        return
    centers = _centers(spiceypy, path, shown)
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


def _centers(spiceypy: object, path: str, shown: str) -> list[int]:
    sp = spiceypy
    out: list[int] = []
    with _SPICE:
        try:
            handle = sp.dasopr(path)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - CSPICE's errors are many; all mean unreadable
            raise ModelError(f"{shown}: CSPICE cannot open the DSK: {_spice_short(exc)}") from None
        try:
            dla = sp.dlabfs(handle)  # type: ignore[attr-defined]
            while True:
                out.append(int(sp.dskgd(handle, dla).center))  # type: ignore[attr-defined]
                if len(out) > 100_000:
                    break
                dla = sp.dlafns(handle, dla)  # type: ignore[attr-defined]
        except sp.utils.exceptions.NotFoundError:  # type: ignore[attr-defined]
            pass  # no (more) segments
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{shown}: CSPICE cannot read the DSK segments: {_spice_short(exc)}") from None
        finally:
            try:
                sp.dascls(handle)  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - closing a handle CSPICE already dropped
                pass
    return out


def _name(naif_id: int) -> str:
    b = bodies.lookup(str(naif_id))
    return f"{b.name} (NAIF ID {naif_id})" if b else f"NAIF ID {naif_id}"


def _spice_short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    for marker in ("-- ", "SPICE("):
        if marker in text:
            text = text[text.index(marker):]
            break
    return text[:200]
