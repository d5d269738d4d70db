"""The mirror on disk: where each item is kept, and how anything is written there.

Owns the item key (body, collection, id) and its directory
``DIR/<body>/<collection>/<item id>/`` (``_`` for an item without a collection; a body
whose name is not a plain file name gets the plain name plus a hash of it), the names a
file in the mirror may have, the links ``catalog.json`` holds to item documents, and the
older layout (``DIR/<item id>/``), which is still read.

Promises:

* two items of different bodies or collections never share a directory, whatever their ids;
* a name is used for a file or directory only when it is plain (letters, digits, ``.``,
  ``_``, ``+``, ``-``), and never one the mirror keeps for itself (``catalog.json``,
  ``.shaperesolver``, ``*.part``, ``*.json``);
* :func:`pinned` reaches a directory one component at a time without following a link
  (another user may plant one in a shared mirror to aim a write or a delete) and hands
  back a path that keeps reaching the directory it opened;
* :func:`atomic_write` leaves either the old file or the whole new one (fsync, rename,
  fsync of the directory), never a link followed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..base import bodies
from ..catalog.choice import item_targets
from ..errors import MirrorError, shorten

CATALOG = "catalog.json"
#: the directory of the mirror's own bookkeeping (claims, the catalog lock)
META = ".shaperesolver"
#: the collection directory of an item that names no collection (no collection id can be this)
NO_COLLECTION = "_"
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")


@dataclass(frozen=True)
class Key:
    """What a mirrored item is kept under: its body, collection and id."""

    body: str
    collection: str | None
    item_id: str

    @property
    def parts(self) -> tuple[str, ...]:
        """The item directory, relative to the mirror, as path components."""
        return (dir_name(self.body), self.collection or NO_COLLECTION, self.item_id)

    @property
    def legacy(self) -> tuple[str, ...]:
        """Where mirrors written before the keyed layout kept the item."""
        return (self.item_id,)

    def holds(self, doc: Any) -> bool:
        """Whether the item document ``doc`` is this item (its id, collection and body)."""
        return is_item(doc) and str(doc.get("id")) == self.item_id and self.same_shelf(doc)

    def same_shelf(self, doc: Mapping[str, Any]) -> bool:
        """Whether the item document ``doc`` is of this key's collection and body."""
        return collection(doc) == self.collection and self.body in {bodies.canonical(t) for t in item_targets(doc)}


def plain(name: str) -> bool:
    """Whether ``name`` may name a file or directory in the mirror."""
    return bool(_SAFE.fullmatch(name)) and name not in (CATALOG, META) and not name.endswith((".part", ".json"))


def safe_name(name: str, what: str, item_id: str) -> str:
    """``name`` when it is :func:`plain`; else :class:`MirrorError` naming the item."""
    if not plain(name):
        raise MirrorError(f"item {shorten(item_id, 80)}: refusing {what} {shorten(name, 80)!r} for a file in the mirror "
                          "(letters, digits, '.', '_', '+', '-' only)")
    return name


def dir_name(body: str) -> str:
    """The directory a body's items are kept in: its name, or when that is not a plain file
    name (``Tempel 1``) the name made plain plus a hash of it, so no two bodies share one."""
    if plain(body):
        return body
    made_plain = re.sub(r"[^A-Za-z0-9_+-]", "_", body)[:150]
    return f"b{made_plain}-{hashlib.sha256(body.encode()).hexdigest()[:12]}"


def is_item(doc: Any) -> bool:
    """Whether ``doc`` has the shape of a STAC item the mirror reads (an object whose
    ``properties`` is an object)."""
    return isinstance(doc, Mapping) and isinstance(doc.get("properties"), Mapping)


def collection(doc: Mapping[str, Any]) -> str | None:
    """An item document's collection id (None when it names none)."""
    value = doc.get("collection")
    return value if isinstance(value, str) and value else None


def item_href(parts: tuple[str, ...]) -> str:
    """The catalog's link to the item document in the directory ``parts``."""
    return "./" + "/".join(parts) + f"/{parts[-1]}.json"


def item_parts(href: Any) -> tuple[str, ...] | None:
    """The item directory of a catalog link the mirror writes (the keyed layout or the
    older ``./<id>/<id>.json``); None for anything else."""
    if not isinstance(href, str) or not href.startswith("./"):
        return None
    *parts, doc = href[2:].split("/")
    if len(parts) not in (1, 3) or doc != f"{parts[-1]}.json":
        return None
    for i, part in enumerate(parts):
        if not (_SAFE.fullmatch(part) or (len(parts) == 3 and i == 1 and part == NO_COLLECTION)) or part == META:
            return None
    return tuple(parts)


@contextmanager
def pinned(top: Path, parts: tuple[str, ...], create: bool = False) -> Iterator[Path]:
    """The directory ``top/parts...`` held open, reached one component at a time without
    following a link (another user may have planted one to aim our writes or deletes), made
    when ``create``; as a path that reaches the held directory whatever is renamed or
    swapped meanwhile (``/proc/self/fd/N`` on Linux; the path itself elsewhere)."""
    try:
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise MirrorError(f"{top}: {exc.strerror}") from None
    try:
        for i, part in enumerate(parts):
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                where = top.joinpath(*parts[: i + 1])
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise MirrorError(f"{where}: not a directory but a link or a file; refusing to write or delete "
                                      "through it") from None
                raise MirrorError(f"{where}: {exc.strerror}") from None
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    try:
        held = Path(f"/proc/self/fd/{fd}")
        yield held if held.is_dir() else top.joinpath(*parts)
    finally:
        os.close(fd)


def remove_item_dir(top: Path, parts: tuple[str, ...]) -> None:
    """Remove the item directory ``top/parts...`` and the files in it, reached without
    following a link; a link put in its place meanwhile is refused (not a directory)."""
    with pinned(top, parts[:-1]) as parent, pinned(parent, parts[-1:]) as where:
        for entry in os.scandir(where):
            if entry.is_file(follow_symlinks=False):
                os.unlink(where / entry.name)
        os.rmdir(parent / parts[-1])


# ------------------------------------------------------------ writing


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def atomic_write(path: Path, doc: Any) -> None:
    """Replace ``path`` with the JSON of ``doc``, whole or not at all."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = (json.dumps(doc, indent=1) + "\n").encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        unlink(tmp)
        raise MirrorError(f"cannot write {path}: {exc.strerror}") from None
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename in the directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink(path: Path) -> None:
    """Remove ``path`` if it is there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
