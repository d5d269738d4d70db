"""Build small but realistic ISIS cubes for tests and for the bundled example data."""

from __future__ import annotations

import hashlib
from pathlib import Path

LABELS = Path(__file__).parent / "labels"


def label_text(name: str) -> str:
    return (LABELS / f"{name}.pvl").read_text(encoding="latin-1")


def payload(size: int, seed: str = "pixels") -> bytes:
    """Deterministic binary bytes (no long NUL runs) standing in for pixels and blobs."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def write_attached(path: Path, text: str, label_bytes: int = 65536, data_bytes: int = 16384 + 2048) -> Path:
    raw = text.encode("latin-1")
    assert len(raw) < label_bytes, "label does not fit"
    path.write_bytes(raw + b"\0" * (label_bytes - len(raw)) + payload(data_bytes, path.name))
    return path


def write_detached(path: Path, text: str, data_name: str | None = None) -> Path:
    path.write_bytes(text.encode("latin-1"))
    if data_name:
        (path.parent / data_name).write_bytes(payload(16384, data_name))
    return path


def make(tmp: Path, name: str, filename: str | None = None, **kw) -> Path:
    """Write the test label ``name`` as a cube (attached unless it is a detached label)."""
    text = label_text(name)
    if "^Core" in text:
        return write_detached(tmp / (filename or f"{name}.lbl"), text, "galileo_io.cub")
    return write_attached(tmp / (filename or f"{name}.cub"), text, **kw)


def data_area(root: Path) -> Path:
    """An ISIS data area at ``root`` with SYSTEM models for the Moon and Titan (none for Io or Phobos)."""
    dems = root / "base" / "dems"
    dems.mkdir(parents=True)
    (dems / "kernels.0003.db").write_text(
        'Object = Dem\n'
        '  Group = Selection\n    Match = ("Instrument","TargetName","Moon")\n'
        '    File = ("base", "dems/ldem_0001.cub")\n  EndGroup\n'
        '  Group = Selection\n    Match = ("Instrument","TargetName","Titan")\n'
        '    File = ("base", "dems/titan_0001.cub")\n  EndGroup\n'
        'EndObject\n')
    for name in ("ldem_0001.cub", "titan_0001.cub"):
        (dems / name).write_bytes(b"")
    return root


def hold_lock(path: Path, seconds: float):
    """Hold ``path``'s lock (an exclusive flock, as a writer does) for ``seconds`` from now,
    in this process: a run that reads the cube waits that long (a slow run, made on purpose)."""
    import fcntl
    import os
    import threading

    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    timer = threading.Timer(seconds, os.close, (fd,))
    timer.start()
    return timer
