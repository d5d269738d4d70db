"""Pruning: which older versions of a body's DEM leave the mirror, and their removal.

Owns the choice (:func:`older`) and the removal (:func:`prune`) of the items of the kept
item's body and collection that an earlier run mirrored.

Promises:

* an item goes only when its version and the kept one's both compare as numbers (the
  same digit-string order the resolver chooses by) and its own is strictly lower: a newer
  or equal version, a pinned older one being kept, an item of another body or collection,
  and an item whose version cannot be compared all stay;
* its catalog link is removed first (under the catalog's lock, by atomic rename), then its
  directory, reached without following a link; a directory that cannot be removed is
  logged and does not fail the run.
"""

from __future__ import annotations

from typing import Any

from ..base.log import get as get_logger
from ..catalog import stacdoc
from ..catalog.choice import version_key
from ..errors import MirrorError
from .document import Document
from .layout import Key, is_item, item_parts, remove_item_dir

log = get_logger(__name__)


def numeric_version(doc: Any) -> tuple[int, str] | None:
    """An item's version as a comparable number (digit count, digits), or None when it
    has none that compares (prune never removes what it cannot compare)."""
    got = stacdoc.read_item(doc, "item")
    if not isinstance(got, stacdoc.Item):
        return None
    numeric, length, digits, _ = version_key(got)
    return (length, digits) if numeric == 1 else None


def older(doc: Any, key: Key, kept_version: tuple[int, str] | None) -> bool:
    """Whether the item document ``doc`` is of ``key``'s body and collection with a version
    strictly lower than ``kept_version``."""
    return (is_item(doc) and key.same_shelf(doc) and kept_version is not None
            and (mine := numeric_version(doc)) is not None and mine < kept_version)


def prune(document: Document, key: Key, kept: tuple[str, ...], kept_item: Any) -> list[str]:
    """Remove the items of ``key``'s body and collection older than ``kept_item`` (kept in the
    directory ``kept``): catalog links, then files; returns their ids."""
    kept_version = numeric_version(kept_item)
    removed: list[tuple[str, ...]] = []
    with document.lock():
        cat = document.read()
        links = []
        for ln in cat["links"]:
            parts = item_parts(ln.get("href")) if ln.get("rel") == "item" else None
            if parts is None or parts == kept or not older(document.read_item(parts), key, kept_version):
                links.append(ln)
            else:
                removed.append(parts)
        cat["links"] = links
        document.write(cat)
        for parts in removed:
            try:
                remove_item_dir(document.directory, parts)
            except (OSError, MirrorError) as exc:
                log.warning("%s: pruned %s from the catalog, but could not remove its directory: %s",
                            key.body, "/".join(parts), exc)
            log.info("%s: pruned %s", key.body, "/".join(parts))
    return [parts[-1] for parts in removed]
