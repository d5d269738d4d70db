"""The mirror's own catalog: ``DIR/catalog.json`` and one item document per mirrored item.

Owns reading and rewriting the catalog (a static STAC catalog whose ``item`` links name
the item documents), the item document written beside each file (its single asset the
local file, with ``file:size``, ``file:checksum`` as a SHA-256 multihash and the original
href in ``shaperesolver:original_href``), and the question whether an item is already in
the mirror, whole.

Promises:

* the catalog and the item documents are read only as regular files (never through a
  link), bounded in size; a catalog that is not one the mirror wrote is refused;
* every change is made under an exclusive ``flock`` on ``DIR/.shaperesolver/catalog.lock``
  and written by atomic rename, so concurrent mirrors of one directory lose no entry and
  a reader sees the old catalog or the new one, whole;
* an item counts as present only when the catalog links it, its document is that item
  (id, collection, body), its file is a regular file of the recorded size, and the source
  describes the same file now (its ``file:checksum``, when it has one).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..base import safeio
from ..base.log import get as get_logger
from ..errors import MirrorError, UnsafeFileError
from .layout import CATALOG, META, Key, atomic_write, item_href, pinned

log = get_logger(__name__)

_MAX_CATALOG = 64 * 2**20


class Document:
    """The catalog of the mirror in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / CATALOG

    def prepare(self) -> None:
        """Make the mirror directory and its bookkeeping directory."""
        try:
            self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            (self.directory / META).mkdir(mode=0o755, exist_ok=True)
        except OSError as exc:
            raise MirrorError(f"cannot create the mirror directory {self.directory}: {exc.strerror}") from None

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the exclusive lock every change of the catalog is made under."""
        fd = os.open(self.directory / META / "catalog.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def read(self) -> dict[str, Any]:
        """The catalog (a new, empty one when there is none yet); its links are objects."""
        try:
            raw, _ = safeio.read_regular(self.path, _MAX_CATALOG, follow=False, what="mirror catalog")
            cat = safeio.loads_json(raw, str(self.path))
        except UnsafeFileError as exc:
            if exc.errno != errno.ENOENT:
                raise MirrorError(str(exc)) from None
            cat = None
        except ValueError as exc:
            raise MirrorError(f"cannot read the mirror catalog: {exc}") from None
        if cat is None:
            return {"type": "Catalog", "stac_version": "1.0.0", "id": "shaperesolver-mirror",
                    "description": "DEMs mirrored by shaperesolver", "links": [
                        {"rel": "root", "href": f"./{CATALOG}", "type": "application/json"}]}
        if not isinstance(cat, dict) or cat.get("type") != "Catalog" or not isinstance(cat.get("links"), list):
            raise MirrorError(f"{self.path} is not a STAC catalog shaperesolver wrote")
        cat["links"] = [ln for ln in cat["links"] if isinstance(ln, dict)]
        return cat

    def write(self, cat: Mapping[str, Any]) -> None:
        """Replace the catalog with ``cat`` (hold :meth:`lock`)."""
        atomic_write(self.path, cat)

    def read_item(self, parts: tuple[str, ...]) -> Any:
        """The item document in the directory ``parts`` (reached without following links);
        None when it is not there or not JSON."""
        try:
            with pinned(self.directory, parts) as where:
                raw, _ = safeio.read_regular(where / f"{parts[-1]}.json", _MAX_CATALOG, follow=False, what="mirror item")
            return safeio.loads_json(raw, "/".join(parts))
        except (UnsafeFileError, ValueError, MirrorError):
            return None

    def add(self, key: Key, where: Path, doc: Mapping[str, Any]) -> None:
        """Write ``key``'s item document into its directory, held open as ``where``, and link it
        from the catalog (in place of any earlier link to it)."""
        with self.lock():
            atomic_write(where / f"{key.item_id}.json", doc)
            cat = self.read()
            href = item_href(key.parts)
            cat["links"] = [ln for ln in cat["links"] if ln.get("href") != href]
            cat["links"].append({"rel": "item", "href": href, "type": "application/geo+json", "title": key.body})
            self.write(cat)

    def entry(self, key: Key, name: str, source_checksum: str | None) -> tuple[Path, int, str] | None:
        """(path, size, sha256) when the catalog lists ``key``'s item with its file ``name``
        there, whole (by its size), and the same file the source describes now (by its
        ``file:checksum``, the text ``source_checksum``); in the keyed layout or the older one."""
        try:
            cat = self.read()
        except MirrorError:
            return None
        listed = {ln.get("href") for ln in cat["links"] if ln.get("rel") == "item"}
        for parts in (key.parts, key.legacy):
            if item_href(parts) not in listed:
                continue
            doc = self.read_item(parts)
            if not key.holds(doc):
                continue
            for asset in (doc.get("assets") or {}).values() if isinstance(doc.get("assets"), Mapping) else ():
                if not isinstance(asset, Mapping) or asset.get("href") != "./" + name:
                    continue
                size, ours = asset.get("file:size"), str(asset.get("file:checksum", ""))
                path = self.directory.joinpath(*parts, name)
                try:
                    st = os.stat(path, follow_symlinks=False)
                except OSError:
                    continue
                if not (isinstance(size, int) and stat.S_ISREG(st.st_mode) and st.st_size == size
                        and re.fullmatch(r"1220[0-9a-f]{64}", ours)):
                    continue
                if source_checksum is not None and source_checksum not in (ours, asset.get("shaperesolver:source_checksum")):
                    log.info("%s: the source's file:checksum of %s is %s now, not the mirrored file's; downloading "
                             "it again", key.body, key.item_id, source_checksum)
                    continue
                return path, size, ours[4:]
        return None


def item_document(key: Key, item: Mapping[str, Any], asset_key: str, name: str, size: int, sha256: str,
                  href: str, source_checksum: str | None) -> dict[str, Any]:
    """The document of a mirrored item: the source ``item`` with its chosen asset alone, now
    the local file ``name`` (its size and SHA-256; the original href and checksum kept),
    linked up to the mirror's catalog."""
    local = {k: v for k, v in item["assets"][asset_key].items() if k != "alternate"}
    local.update({"href": "./" + name, "file:size": size, "file:checksum": "1220" + sha256,
                  "shaperesolver:original_href": href})
    if source_checksum is not None:
        local["shaperesolver:source_checksum"] = source_checksum
    up = "../" * len(key.parts)
    doc = {k: v for k, v in item.items() if k not in ("links", "assets")}
    doc.update({"type": "Feature", "stac_version": item.get("stac_version", "1.0.0"), "assets": {asset_key: local},
                "links": [{"rel": "root", "href": up + CATALOG, "type": "application/json"},
                          {"rel": "parent", "href": up + CATALOG, "type": "application/json"}]})
    return doc
