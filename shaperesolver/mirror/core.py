"""Download the chosen DEM of each body into a directory that is a static STAC catalog.

``DIR/catalog.json`` links one item document per mirrored item, kept under its body,
collection and id (``DIR/<body>/<collection>/<item id>/<item id>.json``); its single
asset is the local file beside it.  A resolver with ``catalog=DIR`` then resolves to local
paths without a network.

:class:`Mirror` only orchestrates; each part keeps its own promise:

* :mod:`.layout`: the item key and directory, plain names, directories reached without
  following links, atomic writes, the older ``DIR/<item id>/`` layout still read;
* :mod:`.download`: one file fetched whole (resumed only on a 206 proving the same file,
  ``file:checksum`` compared, bounded), renamed into place only once checked;
* :mod:`.document`: the catalog and item documents, changed under ``flock`` by atomic rename;
* :mod:`.prune`: only versions older than the kept one go, never a newer one;
* claims between processes sharing DIR: :mod:`shaperesolver.base.claims`, one per file.

Here: the chosen item and asset (the resolver's choice), the bounds a catalog announces
(``max_size``), GDAL's check of the downloaded file (it opens it, reads its last tile, and
the model check passes for its body), and :meth:`Mirror.run` failing one body at a time:
a host that misbehaves fails its body with the reason, and the other bodies are still
mirrored.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from ..base import bodies, claims
from ..base.log import get as get_logger
from ..catalog.choice import check_href, item_targets
from ..errors import MirrorError, ModelError, NoMatchError, ShapeResolverError, shorten
from ..models import raster
from ..net.transport import AddressPolicy
from .document import Document, item_document
from .download import MIN_RATE, SLOW_TIME, Checksum, Download, Fetched, ProgressFactory, part_of, source_checksum
from .layout import CATALOG, META, Key, collection, pinned, safe_name
from .prune import prune

if TYPE_CHECKING:
    from ..policy.resolver import Resolver

__all__ = ["Mirror", "Mirrored", "DEFAULT_MAX_SIZE", "CATALOG", "MIN_RATE", "SLOW_TIME"]

log = get_logger(__name__)

#: the largest file downloaded unless raised (the largest ISIS DEMs are a few GB)
DEFAULT_MAX_SIZE = 64 * 2**30


@dataclass(frozen=True)
class Mirrored:
    """One body's DEM in the mirror."""

    body: str
    item_id: str
    version: str | None
    path: str
    size: int
    sha256: str
    #: bytes fetched from the server by this run (0 when it was there already)
    fetched: int
    #: ``downloaded``, ``resumed`` or ``present``
    status: str
    #: ids of the older items of the same body and collection removed (``prune``)
    pruned: tuple[str, ...] = ()
    #: the item's collection (None when the source names none)
    collection: str | None = None

    def record(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


class _PublicOnly(AddressPolicy):
    """For a local source catalog: its hrefs may lead to public addresses only."""

    def __init__(self) -> None:
        super().__init__("https://public.invalid/")

    def allowed(self) -> set[str]:
        return {"public"}


class Mirror:
    """Mirrors bodies' DEMs into ``directory`` through ``resolver``'s catalog and HTTP settings."""

    def __init__(self, directory: str | os.PathLike[str], resolver: Resolver, *, max_size: int = DEFAULT_MAX_SIZE,
                 prune: bool = False, progress: ProgressFactory | None = None, retries: int = 3,
                 claim_wait: float = 24 * 3600.0, min_rate: int = MIN_RATE, slow_time: float = SLOW_TIME) -> None:
        self.directory = Path(directory).absolute()
        self.resolver = resolver
        self.max_size = int(max_size)
        self.prune = prune
        self.progress = progress
        self.retries = retries
        self.claim_wait = claim_wait
        self.min_rate = int(min_rate)
        self.slow_time = float(slow_time)
        src = resolver.source_url
        self.policy = AddressPolicy(src) if src else _PublicOnly()
        self.allow_http = src is None or src.startswith("http://")
        self.document = Document(self.directory)

    @property
    def catalog_path(self) -> Path:
        return self.document.path

    def run(self, targets: Iterable[str], version: str | None = None) -> Iterator[tuple[str, Mirrored | None, ShapeResolverError | None]]:
        """Mirror each distinct body of ``targets``: yields (target, result or None, error or None).

        A body that fails (its host, its file, its catalog entry) yields its error and the
        next body is mirrored all the same.
        """
        seen: set[str] = set()
        for target in targets:
            body = bodies.canonical(target)
            if body in seen:
                continue
            seen.add(body)
            try:
                yield target, self.add(target, version), None
            except ShapeResolverError as exc:
                log.info("%s: not mirrored: %s", body, exc)
                yield target, None, exc
            except OSError as exc:
                yield target, None, MirrorError(f"{body}: {exc.filename or self.directory}: {exc.strerror or exc}")

    def add(self, target: str, version: str | None = None) -> Mirrored:
        """Mirror ``target``'s chosen (or pinned) DEM; raises :class:`MirrorError` or CatalogError."""
        body = bodies.canonical(target)
        raw = self.resolver.catalog_items(target)
        choice = self.resolver.choose(raw, target, version)
        if choice is None:
            raise NoMatchError(f"{body}: no web shape model in {self.resolver._where()}")
        if choice.local:
            raise MirrorError(f"{body}: item {choice.item_id} is already a local file ({choice.href})")
        item = _source_item(raw, choice.item_id, choice.asset_key, choice.href, bodies.query_names(target))
        href = self.policy.check(check_href(choice.href, choice.item_id, self.allow_http), "asset href")
        item_id = safe_name(choice.item_id, "item id", choice.item_id)
        shelf = collection(item)
        if shelf is not None:
            safe_name(shelf, "collection", choice.item_id)
        key = Key(body, shelf, item_id)
        name = safe_name(unquote(urlparse(href).path.rsplit("/", 1)[-1]), "file name", choice.item_id)
        asset = item["assets"][choice.asset_key]
        announced = asset.get("file:size")
        if isinstance(announced, bool) or not isinstance(announced, int) or announced < 0:
            announced = None
        if announced is not None and announced > self.max_size:
            raise MirrorError(f"{body}: {href} is {announced} bytes by the catalog, more than the "
                              f"{self.max_size}-byte limit (raise maxsize=)")
        checksum = source_checksum(asset.get("file:checksum"), href)
        self.document.prepare()

        def poll() -> Mirrored | None:
            entry = self.document.entry(key, name, None if checksum is None else checksum.text)
            return None if entry is None else Mirrored(body, item_id, choice.version, str(entry[0]), entry[1], entry[2],
                                                       0, "present", collection=shelf)

        found = poll()
        if found is None:
            claim_key = "mirror-" + hashlib.sha256(json.dumps([*key.parts, name]).encode()).hexdigest()[:32]
            with claims.claim(self.directory / META, claim_key, poll, self.claim_wait, what=f"{body} download") as c:
                found = c.result or self._download(key, item, choice.asset_key, href, name, announced, checksum,
                                                   choice.version)
        if self.prune:
            kept = Path(found.path).parent.relative_to(self.directory).parts
            found = Mirrored(**{**found.__dict__, "pruned": tuple(prune(self.document, key, kept, item))})
        return found

    def _download(self, key: Key, item: Mapping[str, Any], asset_key: str, href: str, name: str,
                  announced: int | None, checksum: Checksum | None, version: str | None) -> Mirrored:
        """Download into the item's directory (held open), check, add to the catalog."""
        final = self.directory.joinpath(*key.parts, name)
        source = None if checksum is None else checksum.text
        with pinned(self.directory, key.parts, create=True) as where:
            try:
                got = self._whole(where, final, key.body, href, announced, checksum)
                self.document.add(key, where, item_document(key, item, asset_key, name, got.size, got.sha256, href,
                                                            source))
            except MirrorError as exc:  # name the item directory, not the descriptor it was reached by
                raise MirrorError(str(exc).replace(str(where), str(final.parent))) from None
        log.info("%s: %s in the mirror (%d bytes, %d fetched)", key.body, final, got.size, got.fetched)
        return Mirrored(key.body, key.item_id, version, str(final), got.size, got.sha256, got.fetched,
                        "resumed" if got.resumed else "downloaded", collection=key.collection)

    def _whole(self, where: Path, final: Path, body: str, href: str, announced: int | None,
               checksum: Checksum | None) -> Fetched:
        """The file ``final`` downloaded into its directory held open as ``where``, proven whole and checked."""
        download = Download(self.resolver.http, self.policy, self.max_size, self.retries, self.min_rate,
                            self.slow_time, self.progress)
        part = part_of(where / final.name)
        try:
            got = download.fetch(href, part, announced, f"{body} {final.name}", checksum)
        except BaseException:
            try:
                final.parent.rmdir()  # only when empty: a part kept for resuming stays
            except OSError:
                pass
            raise
        download.keep(got, part, final.name, href, checksum, lambda p: self._check(p, body, href, final))
        return got

    def _check(self, part: Path, body: str, href: str, final: Path) -> None:
        """GDAL opens the file and reads its last tile; the model check passes for ``body``."""
        shown = str(final) + ".part"
        try:
            ds = raster.open_model(str(part), True, name=shown)
            why = raster.read_last_block(ds)
            if why:
                raise ModelError(f"GDAL cannot read the last block: {shorten(why, 120)}")
            result = self.resolver.models.model_check(ds, shown, body)
        except ModelError as exc:
            raise MirrorError(f"{href}: downloaded, but not a usable model: {exc}") from None
        if not result["ok"]:
            raise MirrorError(f"{href}: downloaded, but {result['reason']}")


def _source_item(raw: Iterable[Any], item_id: str, asset_key: str, href: str, names: Iterable[str]) -> Mapping[str, Any]:
    """The item of ``raw`` that was chosen: its id, one of the body's names among its targets,
    and the chosen asset's href (items of other bodies or collections may share the id)."""
    wanted = set(names)
    for it in raw:
        if not isinstance(it, Mapping) or str(it.get("id")) != item_id or not wanted.intersection(item_targets(it)):
            continue
        assets = it.get("assets")
        asset = assets.get(asset_key) if isinstance(assets, Mapping) else None
        if isinstance(asset, Mapping) and asset.get("href") == href:
            return it
    raise MirrorError(f"item {shorten(item_id, 80)}: the chosen asset is not in the catalog's answer")
