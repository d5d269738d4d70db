"""The exception tree: every error shaperesolver raises derives from ShapeResolverError.

Subclasses also inherit the matching builtin (``OSError``, ``ValueError``) so that
callers who already catch those keep working.
"""

from __future__ import annotations

import errno as _errno

__all__ = [
    "ShapeResolverError",
    "LabelError",
    "NotACubeError",
    "CubeNotFoundError",
    "LabelSyntaxError",
    "MissingTargetError",
    "LabelWriteError",
    "LabelFullError",
    "ReadOnlyCubeError",
    "InvalidValueError",
    "UsageError",
    "CatalogError",
    "StacShapeError",
    "ModelError",
    "KernelDbError",
    "DataAreaError",
    "VersionNotFoundError",
    "NoMatchError",
    "NoAnswerError",
    "ModelUnreachableError",
    "ModelMissingError",
    "UnsafeFileError",
    "JournalError",
    "CubeChangedError",
    "CubeLockedError",
    "MirrorError",
]


class ShapeResolverError(Exception):
    """Root of every error raised by shaperesolver."""


class UsageError(ShapeResolverError, ValueError):
    """A parameter the caller gave is not usable (bad URL, unknown shape, ...)."""


class LabelError(ShapeResolverError):
    """A cube label cannot be read or written.  ``str(err)`` names the file."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        problem = " ".join(problem.split())  # always one line
        self.problem = problem if len(problem) <= 200 else problem[:197] + "..."
        super().__init__(f"{self.path}: {self.problem}")

    def __reduce__(self) -> tuple[object, ...]:  # pickles (process pools, Dask)
        return (type(self), (self.path, self.problem))


class NotACubeError(LabelError, ValueError):
    """The file is not an ISIS cube or label (missing, a directory, binary, ...)."""


class CubeNotFoundError(NotACubeError, FileNotFoundError):
    """The cube or label does not exist.  Also a :class:`FileNotFoundError`, so
    ``except OSError`` catches it as it catches :class:`ReadOnlyCubeError`."""

    def __init__(self, path: object, problem: str = "no such file") -> None:
        super().__init__(path, problem)
        self.errno, self.strerror, self.filename = _errno.ENOENT, self.problem, self.path

    def __str__(self) -> str:  # OSError's __str__ would not name the path our way
        return f"{self.path}: {self.problem}"


def not_a_cube(path: object, problem: str, code: int | None) -> NotACubeError:
    """:class:`CubeNotFoundError` when ``code`` (an errno) says the file does not exist, else
    :class:`NotACubeError`."""
    return CubeNotFoundError(path, problem) if code == _errno.ENOENT else NotACubeError(path, problem)


class LabelSyntaxError(LabelError, ValueError):
    """The label text is malformed or truncated."""


class MissingTargetError(LabelError, KeyError):
    """The label has no usable ``IsisCube > Instrument > TargetName``."""

    def __str__(self) -> str:  # KeyError would quote the message
        return f"{self.path}: {self.problem}"


class LabelWriteError(LabelError, OSError):
    """Writing the label failed; the file was left as it was."""

    def __str__(self) -> str:  # OSError's __str__ would not name the path our way
        return f"{self.path}: {self.problem}"


class LabelFullError(LabelWriteError):
    """The new label does not fit in the space reserved by ``Label > Bytes``."""


class ReadOnlyCubeError(LabelWriteError):
    """The cube (or its directory) has no write permission bits."""


class InvalidValueError(ShapeResolverError, ValueError):
    """A value would break the label if written (quotes, newlines, control characters)."""


class CatalogError(ShapeResolverError):
    """A STAC API or static catalog could not give a usable answer."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class StacShapeError(CatalogError):
    """A STAC answer, item, asset or link has a field of the wrong JSON type (the
    message names the document and the field); see :mod:`shaperesolver.stacdoc`."""


class VersionNotFoundError(CatalogError):
    """A pinned ``version=`` does not exist for the body."""


class NoMatchError(CatalogError):
    """The catalog answered and has no usable model for the body (none, all deprecated,
    or the newest failed the model check): SYSTEM, then the ellipsoid, may follow."""


class NoAnswerError(CatalogError):
    """No answer about the body: a transport or HTTP error, a malformed answer, the
    deadline, an unreadable catalog, or a model that could not be reached for its check.
    The cube fails unless ``fallback=always``."""


class ModelError(ShapeResolverError):
    """A shape model could not be opened or failed verification."""


class ModelUnreachableError(ModelError):
    """GDAL could not open or read a model: that says nothing about whether it fits."""


class ModelMissingError(ModelError):
    """A local model a label names is not there (no such file, or not a regular file)."""


class DataAreaError(ShapeResolverError, OSError):
    """The ISIS data area (``$ISISDATA``) or its DEM kernel database is missing."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class KernelDbError(ShapeResolverError, ValueError):
    """A DEM kernel database file is malformed (names the file and line)."""


class UnsafeFileError(ShapeResolverError, OSError):
    """A file to read is not a regular file, is a refused link, or is too large."""

    def __str__(self) -> str:
        return str(self.strerror)


class JournalError(LabelWriteError):
    """A file at a cube's journal path is not provably that cube's journal: left alone."""


class CubeChangedError(LabelWriteError):
    """The cube on disk is no longer the one that was resolved; it was not written."""


class CubeLockedError(LabelWriteError):
    """Another process held the cube's lock longer than the wait allows; not modified."""


class NotInTableError(ShapeResolverError):
    """A batch worker's resolver (a copy that never searches) met a body the batch has
    not resolved yet; ``target`` and ``pin`` name the search it needs.  The batch resolves
    it and sends the cube again; the error is only reported when the body still is not in
    the table the second time (the cube changed during the batch)."""

    def __init__(self, message: str, target: str, pin: str | None) -> None:
        super().__init__(message)
        self.target, self.pin = target, pin

    def __reduce__(self) -> tuple[object, ...]:  # (copied when remembered, pickled by executors)
        return (type(self), (str(self), self.target, self.pin))


class MirrorError(ShapeResolverError):
    """A DEM could not be mirrored (download, check, disk space or the mirror's catalog)."""


def shorten(text: str, limit: int = 200) -> str:
    """``text`` on one line (runs of whitespace made one blank), cut to ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
