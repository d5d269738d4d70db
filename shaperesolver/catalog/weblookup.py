"""Finding a body's web model: the cache, the API or static catalog, and processes
sharing the search (one searches, the others read its answer).

:class:`WebLookup` is the part of :class:`~shaperesolver.policy.resolver.Resolver` that asks;
what the answer means (match, no match, no answer, fallback) is the resolver's policy.
"""

from __future__ import annotations

import os
import time
from _thread import allocate_lock
from collections.abc import MutableMapping

from ..base import bodies
from ..base.log import get as get_logger
from ..errors import CatalogError, NoAnswerError, NoMatchError, VersionNotFoundError, shorten
from .endpoints import FILTER, QUERY, search_url

TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any

    from ..base.memo import Memo
    from ..net.transport import AddressPolicy
    from .cache import DiskCache
    from .choice import Choice, KnownModel
    from .stac import StacClient, StaticCatalog

__all__ = ["WebLookup", "ModeStore"]


log = get_logger(__name__)


class WebLookup:
    """The web lookup of a resolver (a mixin: the resolver holds the state)."""

    url: str
    catalog: str | None
    collection: str
    cache: DiskCache
    claim_wait: float
    searches_allowed: bool
    _static: StaticCatalog | None
    #: body -> the KnownModel tuple of its items (see :meth:`known_models`)
    _listing: Memo

    @property
    def _client(self) -> StacClient:
        """The STAC API client (the resolver makes it on first use)."""
        raise NotImplementedError

    def catalog_items(self, target: str | None = None) -> list[Any]:
        """The raw STAC items for ``target``'s names (None: the whole collection), not cached,
        as :class:`~shaperesolver.catalog.stacdoc.Items` (those that cannot be read in ``unreadable``).

        Raises :class:`CatalogError` when the catalog cannot be read.
        """
        names = None if target is None else bodies.query_names(target)
        if self._static is not None:
            return self._static.items()
        return self._client.items(self.collection, names)

    def known_models(self, target: str) -> tuple[KnownModel, ...]:
        """Every item the catalog holds for ``target``'s body, any version, deprecated or
        not, newest first: listed once per body and resolver (a search for the body that
        already ran gave the list).  Raises :class:`NoAnswerError` when the catalog cannot
        be read."""
        body = bodies.canonical(target)
        listed: tuple[KnownModel, ...] = self._listing.get(body, lambda: self._list(target, body))
        return listed

    def _list(self, target: str, body: str) -> tuple[KnownModel, ...]:
        from ..errors import ShapeResolverError
        from .choice import known_models

        if not self.searches_allowed:
            raise ShapeResolverError(f"{body} is not in the batch's table of listed bodies "
                                     "(did the cube change during the batch?)")
        try:
            return known_models(self.catalog_items(target), bodies.query_names(target))
        except CatalogError as exc:
            raise self._no_answer(exc) from None

    def choose(self, items: Iterable[Any], target: str, version: str | None = None) -> Choice | None:
        """The item a resolve would choose among ``items`` for ``target`` (None if none fits)."""
        from .choice import choose_item

        return choose_item(items, bodies.query_names(target), version, self._where(), self.allow_http, self._policy(),
                           self.local_root)

    def _policy(self) -> AddressPolicy | None:
        """The address rules of the API or catalog the items came from."""
        return self._static.policy if self._static is not None else self._client.policy

    @property
    def allow_http(self) -> bool:
        """Whether asset hrefs may be http URLs (the catalog or API is http)."""
        return self._static.allow_http if self._static is not None else self._client.allow_http

    @property
    def local_root(self) -> str | None:
        """The directory a local catalog's asset files must stay in (None otherwise)."""
        return self._static.local_root if self._static is not None else None

    @property
    def source_url(self) -> str | None:
        """The URL the items came from (API or remote catalog); None for a local catalog."""
        if self._static is None:
            return self.url
        return self._static.location if self._static.remote else None

    def _where(self) -> str:
        return f"catalog {self.catalog}" if self._static else f"{self.collection} at {self.url}"

    def _lookup(self, names: tuple[str, ...], body: str, pin: str | None) -> Choice:
        from ..base import claims
        from .choice import choose_item

        if self._static is not None:
            try:
                items = self._static.items()
                choice = choose_item(items, names, pin, self._where(), self._static.allow_http, self._static.policy,
                                     self._static.local_root)
            except VersionNotFoundError:
                raise
            except CatalogError as exc:
                raise self._no_answer(exc) from None
            if choice is None:
                raise NoMatchError(f"no web shape model for {'/'.join(names)} in {self._where()}")
            return choice
        key = self.cache.key(search_url(self.url), self.collection, body, pin)
        hit = self._cached_choice(key, allow_stale=False)
        if hit is not None:
            return hit[0]
        if self.cache.mode == "no" or self.claim_wait <= 0:
            return self._search(names, body, pin, key)
        # processes sharing the cache directory: one searches, the others use its entry
        started = time.time()

        def poll() -> Choice | None:
            got = self._cached_choice(key, allow_stale=True)
            if got is None or got[1] > self.cache.ttl:
                return None
            if self.cache.mode == "refresh" and time.time() - got[1] <= started:
                return None  # refresh: only an entry written since we began counts
            return got[0]

        with claims.claim(self.cache.directory, key, poll, self.claim_wait, what=f"{body} models") as c:
            if c.result is not None:
                found: Choice = c.result
                return found
            if isinstance(c.noted, dict) and c.noted.get("kind") in ("error", "none", "version"):
                reason = str(c.noted.get("reason"))
                log.info("another process's search for %s gave: %s", body, reason)
                if c.noted["kind"] == "version":
                    raise VersionNotFoundError(reason)
                if c.noted["kind"] == "none":
                    raise NoMatchError(reason)
                return self._search_failed(key, CatalogError(reason))
            return self._search(names, body, pin, key, c.note)

    def _search(self, names: tuple[str, ...], body: str, pin: str | None, key: str,
                note: Callable[[Any], None] = lambda value: None) -> Choice:
        """Search the API; ``note`` tells processes waiting on our claim what came of it."""
        from .choice import choose_item, known_models

        try:
            items = self._client.items(self.collection, names)
            self._listing.put(body, known_models(items, names))  # (an audit's list of the body: no second search)
            choice = choose_item(items, names, pin, self._where(), self._client.allow_http, self._client.policy)
        except VersionNotFoundError as exc:
            note({"kind": "version", "reason": str(exc)})
            raise
        except CatalogError as exc:
            note({"kind": "error", "reason": str(exc)})
            return self._search_failed(key, exc)
        if choice is None:
            reason = f"no web shape model for {'/'.join(names)} in {self._where()}"
            note({"kind": "none", "reason": reason})
            raise NoMatchError(reason)
        self.cache.put(key, {"item_id": choice.item_id, "version": choice.version, "href": choice.href,
                             "asset_key": choice.asset_key})
        return choice

    def _search_failed(self, key: str, exc: CatalogError) -> Choice:
        stale = self._cached_choice(key, allow_stale=True)
        if stale is not None:
            log.warning("STAC API unreachable (%s); using a cached result %s old", exc, _age(stale[1]))
            return stale[0]
        raise self._no_answer(exc) from None

    def _no_answer(self, exc: CatalogError) -> NoAnswerError:
        """Why the search gave no answer, naming where it asked."""
        text = str(exc)
        if self._static is not None:
            assert self.catalog is not None
            where = [self.catalog, os.path.dirname(self.catalog.rstrip("/"))]
        else:
            where = [self._client.search, self.url.rstrip("/")]
        named = any(w and w in text for w in where)
        return NoAnswerError(f"web search failed: {text}" if named else f"web search failed: {where[0]}: {text}")

    def _cached_choice(self, key: str, allow_stale: bool) -> tuple[Choice, float] | None:
        """A cached Choice, validated exactly like a fresh answer (types, href rules)."""
        from .choice import Choice, check_href

        hit = self.cache.get(key, allow_stale=allow_stale)
        if hit is None:
            return None
        value, age = hit
        try:
            if not isinstance(value, dict) or set(value) != {"item_id", "version", "href", "asset_key"}:
                raise CatalogError("not a search result")
            item_id, version, href, asset_key = (value[k] for k in ("item_id", "version", "href", "asset_key"))
            if not (isinstance(item_id, str) and isinstance(href, str) and isinstance(asset_key, str)
                    and (version is None or isinstance(version, str))):
                raise CatalogError("fields of the wrong type")
            check_href(href, item_id, self.url.lower().startswith("http:"), lambda: self._client.policy)
        except CatalogError as exc:
            log.warning("ignoring cache entry %s: %s", key, shorten(str(exc)))
            return None
        return Choice(item_id, version, href, asset_key), age


class ModeStore(MutableMapping[str, str]):
    """Which search form (``query`` or ``filter``) works per endpoint, in memory and on disk.

    The file is read only when a search needs it (never for ellipsoid, SYSTEM, user or
    static-catalog runs), and only well-formed ``{endpoint: "query"|"filter"}`` entries
    are kept.
    """

    KEY = "search-modes"

    def __init__(self, cache: DiskCache) -> None:
        self.cache = cache
        self.lock: threading.Lock = allocate_lock()
        self._modes: dict[str, str] | None = None

    @property
    def modes(self) -> dict[str, str]:
        with self.lock:
            if self._modes is None:
                hit = self.cache.get(self.KEY, allow_stale=True) if self.cache.mode != "no" else None
                modes: dict[str, str] = {}
                if hit is not None:
                    if isinstance(hit[0], dict):
                        modes = {k: v for k, v in hit[0].items() if isinstance(k, str) and v in (QUERY, FILTER)}
                    if not isinstance(hit[0], dict) or len(modes) != len(hit[0]):
                        log.warning("ignoring malformed entries in the cache's %s file", self.KEY)
                self._modes = modes
            return self._modes

    def __getitem__(self, endpoint: str) -> str:
        return self.modes[endpoint]

    def __delitem__(self, endpoint: str) -> None:
        modes = self.modes
        with self.lock:
            del modes[endpoint]

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self.modes))

    def __len__(self) -> int:
        return len(self.modes)

    def __setitem__(self, endpoint: str, mode: str) -> None:
        modes = self.modes
        with self.lock:
            modes[endpoint] = mode

    def remember(self, endpoint: str, mode: str) -> None:
        modes = self.modes
        with self.lock:
            modes[endpoint] = mode
            self.cache.put(self.KEY, dict(modes))


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
