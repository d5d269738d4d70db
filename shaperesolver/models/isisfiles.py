"""ISIS file names: the data area and ``$variables`` expanded as ISIS expands them.

Light (:mod:`os` and :mod:`re`): the command line expands its file parameters with it
before anything else loads; :mod:`.kerneldb` (SHAPE=SYSTEM) builds on it.
"""

from __future__ import annotations

import os
import re

from ..errors import DataAreaError

__all__ = ["ISIS_VAR", "data_area", "expand_isis"]


def data_area(isisdata: str | os.PathLike[str] | None = None) -> str:
    """The ISIS data area: ``isisdata`` or ``$ISISDATA`` (read now, not at import)."""
    root = os.fspath(isisdata) if isisdata is not None else os.environ.get("ISISDATA")
    if not root:
        raise DataAreaError("no ISIS data area: set ISISDATA (export ISISDATA=/path/to/isisdata) or pass isisdata=DIR")
    if not os.path.isdir(root):
        raise DataAreaError(f"ISIS data area {root} does not exist (set ISISDATA or pass isisdata=DIR)")
    return _plain(root)


def _plain(path: str) -> str:
    """``path`` as :class:`pathlib.PurePosixPath` spells it (no empty or ``.`` parts, no
    trailing slash; ``..`` kept, as a link may stand before it), without loading pathlib."""
    lead = "//" if path.startswith("//") and not path.startswith("///") else "/" if path.startswith("/") else ""
    return lead + "/".join(p for p in path.split("/") if p not in ("", ".")) or "."


ISIS_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def expand_isis(value: str, isisdata: str | os.PathLike[str] | None = None) -> str:
    """A file name as ISIS expands it: ``~``, ``$ISISDATA``, data-area variables, environment.

    ``$ISISDATA`` is the data area; ``$base``, ``$mars``... are its directories (as in
    ISIS's DataDirectory preferences); any other ``$NAME`` is an environment variable.
    URLs and ``/vsi...`` paths are left alone.  Raises :class:`DataAreaError` for a
    variable that names nothing.
    """
    if "://" in value or value.startswith("/vsi"):
        return value
    if value == "~" or value.startswith("~/"):
        value = os.path.expanduser("~") + value[1:]

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name.upper() == "ISISDATA":
            return data_area(isisdata)
        root = os.fspath(isisdata) if isisdata is not None else os.environ.get("ISISDATA")
        if root and os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
        if name in os.environ:
            return os.environ[name]
        if name.isdigit():
            raise DataAreaError(f"${name} is a -batchlist column; give -batchlist=FILE")
        if root:
            return os.path.join(root, name)  # a data area directory that does not exist (yet)
        raise DataAreaError(f"${name} is neither an environment variable nor, without ISISDATA, a data area directory")

    return ISIS_VAR.sub(one, value)
