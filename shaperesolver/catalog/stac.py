"""STAC search: items for a body from a STAC API or a static catalog (no HTTP details).

What it knows about real servers (``shared/reference/stac-and-gdal.md`` in the project):

* stac-server (USGS) matches ``query`` ``in`` exactly and case-sensitively, reads
  ``sortby`` only, and puts a ``next`` link on every non-empty page: stop with
  ``numberMatched`` / ``context.matched``.
* stac-fastapi-pgstac rejects ``query`` ``in`` with a 400 but supports a CQL2-JSON
  ``filter`` (``a_overlaps``); which form works is remembered per endpoint.
* Nobody's order is trusted: :mod:`.choice` picks the highest version.

Requests go through :mod:`.transport`; every answer and document is read through
:mod:`.stacdoc` (a malformed page or document is no answer; an item that cannot be read
is kept apart as ``unreadable``); which item to use is :mod:`.choice`'s business.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..base import safeio
from ..base.log import get as get_logger
from ..errors import CatalogError, UnsafeFileError, shorten
from ..net.transport import AddressPolicy, Budget, Http, check_api_url, error_text
from . import stacdoc
from .endpoints import FILTER, QUERY, search_url

__all__ = ["StacClient", "StaticCatalog", "search_url", "QUERY", "FILTER"]

log = get_logger(__name__)

PAGE_SIZE = 1000
MAX_PAGES = 50




class StacClient:
    """Searches one STAC API endpoint.  Thread-safe."""

    def __init__(self, url: str, http: Http, modes: MutableMapping[str, str] | None = None,
                 remember_mode: Callable[[str, str], None] | None = None) -> None:
        self.url = check_api_url(url)
        self.search = search_url(url)
        self.http = http
        self._modes = modes if modes is not None else {}
        self._remember = remember_mode
        self.allow_http = urlparse(url).scheme == "http"
        self.policy = AddressPolicy(self.url)

    def body(self, mode: str, collection: str, names: Iterable[str] | None) -> dict[str, Any]:
        """The search body for one body's names in ``mode`` (``query`` or ``filter``); all items for None."""
        names = None if names is None else list(names)
        body: dict[str, Any] = {"collections": [collection]}
        if names is None:
            pass
        elif mode == QUERY:
            body["query"] = {"ssys:targets": {"in": names}}
        else:
            body["filter-lang"] = "cql2-json"
            body["filter"] = {"op": "a_overlaps", "args": [{"property": "ssys:targets"}, names]}
        body["sortby"] = [{"field": "properties.version", "direction": "desc"}]
        body["limit"] = PAGE_SIZE
        return body

    def items(self, collection: str, names: Iterable[str] | None) -> stacdoc.Items:
        """Every item of ``collection`` whose ``ssys:targets`` holds one of ``names`` (None: every item).

        Each page is read by :mod:`.stacdoc`: a malformed page raises StacShapeError (no
        answer); an item that cannot be read is kept apart in ``unreadable``.

        One :class:`Budget` (deadline, total bytes, items) covers every page and retry.
        ``next`` links are followed only with GET or POST, to URLs the client's
        :class:`AddressPolicy` allows.
        """
        names = None if names is None else list(names)
        budget = Budget(self.http.settings, f"search at {self.search}")
        mode = self._modes.get(self.search, QUERY)
        status, data = self.http.json("POST", self.search, self.body(mode, collection, names), budget, self.policy)
        if status == 400 and mode == QUERY:
            log.info("%s rejected the query extension (%s); retrying with a CQL2 filter", self.search, error_text(data))
            mode = FILTER
            status, data = self.http.json("POST", self.search, self.body(mode, collection, names), budget, self.policy)
            if status != 400:
                self._modes[self.search] = FILTER
                if self._remember:
                    self._remember(self.search, FILTER)
        if status == 400:
            raise CatalogError(f"{self.search}: HTTP 400: {error_text(data)}", 400)
        page = stacdoc.page(data, self.search, search=True)
        items = stacdoc.read_items(page.features, self.search)
        seen = len(page.features)
        budget.add_items(seen)
        matched = page.matched
        previous_body = self.body(mode, collection, names)
        pages = 1
        while True:
            link = page.next()
            if link is None or not page.features:
                break
            if matched is not None and seen >= matched:
                break
            if pages >= MAX_PAGES:
                log.warning("%s: stopped after %d pages", self.search, pages)
                break
            if link.method not in ("GET", "POST"):
                raise CatalogError(f"{self.search}: refusing a next link with method {shorten(link.method, 20)!r} "
                                   "(STAC next links are GET or POST)")
            href = self.policy.check(stacdoc.join_url(self.search, link.href, f"{self.search}: next link"), "next link")
            body = link.body
            if link.method == "POST":
                if link.merge and body is not None:
                    body = {**previous_body, **body}
                previous_body = dict(body) if body is not None else previous_body
            status, data = self.http.json(link.method, href, body if link.method == "POST" else None, budget,
                                          self.policy)
            if status == 400:
                raise CatalogError(f"{href}: HTTP 400: {error_text(data)}", 400)
            page = stacdoc.page(data, href, search=True)
            items.add(stacdoc.read_items(page.features, href))
            seen += len(page.features)
            budget.add_items(len(page.features))
            pages += 1
        return items


class StaticCatalog:
    """A static STAC ItemCollection, Collection or Catalog (local path or URL).

    ``item`` and ``child`` links are followed; every item is loaded once.  A remote
    catalog's links must stay http(s) URLs the :class:`AddressPolicy` allows (a
    ``file:`` link or an absolute path is never read from disk); a local catalog's
    links must stay local files, each a regular file of at most ``max_bytes``.  One
    :class:`Budget` covers the whole walk.  A local catalog may be given as its
    directory (``catalog.json`` in it); its relative asset hrefs are files relative to
    the item's document and must stay in the catalog's directory (:func:`check_href`).
    """

    def __init__(self, location: str, http: Http) -> None:
        self.location = location
        self.http = http
        self.remote = bool(re.match(r"https?://", location))
        self.allow_http = location.startswith("http://")
        self.policy = AddressPolicy(location) if self.remote else None
        self._items: stacdoc.Items | None = None
        self._lock = threading.Lock()

    @property
    def local_root(self) -> str | None:
        """The directory local asset files must stay in (None for a remote catalog)."""
        if self.remote:
            return None
        path = self.location[7:] if self.location.startswith("file://") else self.location
        return path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))

    def _load(self, where: str, budget: Budget) -> Any:
        if self.remote:
            status, data = self.http.json("GET", where, None, budget, self.policy)
            if status >= 400:
                raise CatalogError(f"{where}: HTTP {status}: {error_text(data)}", status)
            return data
        path = Path(where[7:] if where.startswith("file://") else where)
        budget.check_time()
        try:
            raw, _ = safeio.read_regular(path, self.http.settings.max_bytes, what="static catalog file")
        except UnsafeFileError as exc:
            if exc.errno == 2:
                raise CatalogError(f"{path}: static catalog not found") from None
            raise CatalogError(f"cannot read static catalog: {exc}") from None
        budget.add_bytes(len(raw))
        try:
            return safeio.loads_json(raw, str(path))
        except ValueError as exc:
            raise CatalogError(f"cannot read static catalog: {shorten(str(exc))}") from None

    def items(self) -> stacdoc.Items:
        """Every item reachable from the catalog (a copy), the unreadable ones apart."""
        with self._lock:
            if self._items is None:
                self._items = self._walk()
            return self._items.copy()

    def _walk(self) -> stacdoc.Items:
        budget = Budget(self.http.settings, f"static catalog {self.location}")
        seen: set[str] = set()
        items = stacdoc.Items()
        start = self.location
        if not self.remote and self.local_root == (start[7:] if start.startswith("file://") else start):
            start = os.path.join(start, "catalog.json")
        todo = [start]
        while todo:
            where = todo.pop(0)
            if where in seen:
                continue
            seen.add(where)
            if len(seen) > 10000:
                raise CatalogError(f"{self.location}: more than 10000 documents in the static catalog")
            page = stacdoc.page(self._load(where, budget), where)
            budget.add_items(len(page.features))
            found = stacdoc.read_items(page.features, where)
            items.add(stacdoc.Items((_absolute_assets(it, where, self.remote) for it in found), found.unreadable))
            todo.extend(self._link(where, ln.href) for ln in page.links if ln.rel in ("item", "child", "items"))
        return items

    def _link(self, base: str, href: str) -> str:
        if self.remote:
            target = stacdoc.join_url(base, href, f"{base}: catalog link")  # "/x" stays on the server; "file:..." stays file:
            assert self.policy is not None
            try:
                return self.policy.check(target, "catalog link")
            except CatalogError as exc:
                raise CatalogError(f"{base}: {exc} (a remote catalog's links must stay remote)") from None
        if re.search(r"[\x00-\x1f\x7f]", href):
            raise CatalogError(f"{base}: refusing catalog link {shorten(href, 100)!r} (control characters)")
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", href) and not href.startswith("file://"):
            raise CatalogError(f"{base}: refusing catalog link {shorten(href, 100)!r}: a local catalog's links must be local files")
        return _resolve(base, href)


def _absolute_assets(item: Mapping[str, Any], where: str, remote: bool) -> Mapping[str, Any]:
    """``item`` with relative asset hrefs made absolute against ``where``, the document it
    came from: a URL on the same server for a remote catalog (a mirror served over HTTP),
    a path for a local one (whose ``file://`` hrefs become paths too).  Other hrefs are
    left for :func:`check_href` to judge."""
    try:
        found = stacdoc.assets(item)
    except CatalogError:
        return item  # malformed: choose_asset and list= say so
    fixed: dict[str, Any] = {}
    for asset in found:
        href = asset.href
        relative = not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", href)
        if remote and relative:
            try:
                href = stacdoc.join_url(where, href, "asset href")
            except CatalogError:
                pass  # left as it is, for check_href to refuse
        elif not remote and (relative or href.startswith("file://")):
            body = href[7:] if href.startswith("file://") else re.sub(r"^(?:\./)+", "", href)
            href = body if body.startswith("/") else os.path.join(os.path.abspath(os.path.dirname(where)), body)
        fixed[asset.key] = {**item["assets"][asset.key], "href": href}
    return {**item, "assets": fixed}


def _resolve(base: str, href: str) -> str:
    if href.startswith("file://"):
        return href[7:]
    if href.startswith("/"):
        return href
    return str((Path(base).parent / href).resolve())
