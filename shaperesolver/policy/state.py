"""What a resolver holds: its checked settings, the cache, the HTTP side and the STAC
client made on first use, the model opener, what it has found so far, and how all of
that pickles for process pools and Dask.  The policy itself is :mod:`.resolver`.
"""

from __future__ import annotations

import os
from _thread import allocate_lock

from ..base import claims
from ..base.memo import Memo
from ..catalog.cache import CACHE_MODES, DiskCache
from ..catalog.weblookup import ModeStore, WebLookup
from ..cube import txn
from ..errors import ShapeResolverError
from ..models.opener import ModelOpener
from ..net.settings import DEFAULT_DEADLINE, HttpSettings, check_api_url
from .options import (
    DEFAULT_COLLECTION,
    DEFAULT_URL,
    FALLBACKS,
    check_types,
    one_of,
    seconds,
    yes_no,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Literal

    from typing_extensions import Self

    from ..catalog.choice import Choice
    from ..catalog.stac import StacClient
    from ..net.transport import Http
    from .types import CacheMode, Fallback

__all__ = ["ResolverState"]


class ResolverState(WebLookup):
    """The state of a :class:`~shaperesolver.policy.resolver.Resolver` (see its parameters)."""

    def __init__(
        self,
        *,
        url: str | None = None,
        catalog: str | os.PathLike[str] | None = None,
        collection: str = DEFAULT_COLLECTION,
        cache: CacheMode = "yes",
        cache_dir: str | os.PathLike[str] | None = None,
        cache_ttl: float | None = None,
        isisdata: str | os.PathLike[str] | None = None,
        verify: bool | Literal["yes", "no"] = True,
        fallback: Fallback = "nomatch",
        http: HttpSettings | None = None,
        gdal_options: dict[str, str] | None = None,
        claim_wait: float | None = None,
        lock_wait: float | None = None,
    ) -> None:
        check_types(url=url, catalog=catalog, collection=collection, cache_dir=cache_dir, cache_ttl=cache_ttl,
                        isisdata=isisdata, http=http, gdal_options=gdal_options)
        self.verify = yes_no("verify", verify)
        self.fallback = one_of("fallback", fallback, FALLBACKS)
        cache_mode = one_of("cache", cache, CACHE_MODES)
        self.claim_wait = seconds("claim_wait", claim_wait, "SHAPERESOLVER_CLAIM_WAIT", claims.DEFAULT_WAIT)
        self.lock_wait = seconds("lock_wait", lock_wait, "SHAPERESOLVER_LOCK_WAIT", txn.DEFAULT_LOCK_WAIT)
        api = url or os.environ.get("SHAPERESOLVER_STAC_URL") or DEFAULT_URL
        self.url = api if api == DEFAULT_URL else check_api_url(api)
        self.catalog = os.fspath(catalog) if catalog is not None else None
        self.collection = collection
        self.isisdata = os.fspath(isisdata) if isisdata is not None else None
        self.gdal_options = dict(gdal_options or {})
        kw: dict[str, Any] = {} if cache_ttl is None else {"ttl": cache_ttl}
        self.cache = DiskCache(cache_dir, mode=cache_mode, **kw)
        self._http_settings = http or HttpSettings(deadline=seconds("deadline", None, "SHAPERESOLVER_HTTP_DEADLINE",
                                                                    DEFAULT_DEADLINE))
        self._http: Http | None = None
        self._stac: StacClient | None = None
        self._lazy = allocate_lock()
        self._modes = ModeStore(self.cache)
        self._static = None
        if self.catalog:
            from ..catalog.stac import StaticCatalog

            self._static = StaticCatalog(self.catalog, self.http)
        self._web = Memo()
        self._listing = Memo()  # body -> its items, for an audit (see WebLookup.known_models)
        #: opening and checking models (GDAL, the relay, CSPICE load only when one is opened)
        self.models = ModelOpener(isisdata=self.isisdata, verify=self.verify, gdal_options=self.gdal_options,
                                  cache=self.cache, http=lambda: self.http, policy=self._policy)
        self._unknown: set[str] = set()  # bodies already warned about
        #: False in a copy shipped to batch workers: a body missing from the table is an error
        self.searches_allowed = True

    def __getstate__(self) -> dict[str, Any]:
        config = dict(url=self.url, catalog=self.catalog, collection=self.collection, cache=self.cache.mode,
                      cache_dir=os.fspath(self.cache.directory), cache_ttl=self.cache.ttl, isisdata=self.isisdata,
                      verify=self.verify, fallback=self.fallback, http=self._http_settings, gdal_options=self.gdal_options,
                      claim_wait=self.claim_wait, lock_wait=self.lock_wait)
        return {"config": config, "web": self._web.snapshot(), "opened": self.models.checked.snapshot(),
                "listed": self._listing.snapshot(), "unknown": sorted(self._unknown),
                "searches_allowed": self.searches_allowed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        config = state["config"]
        if not state["searches_allowed"]:
            config = {**config, "cache": "no"}  # a worker's copy: it never searches
        self.__init__(**config)  # type: ignore[misc]
        self._web.values.update(state["web"])
        self.models.checked.values.update(state["opened"])
        self._listing.values.update(state.get("listed", {}))
        self._unknown.update(state.get("unknown", ()))  # (warned about already: a copy does not warn again)
        self.searches_allowed = state["searches_allowed"]

    def web_table(self) -> dict[tuple[str, str | None], Choice | ShapeResolverError]:
        """What each (body, version pin) resolved to so far: a choice, or why not."""
        with self._web.lock:
            return {k: v[1] for k, v in self._web.values.items()}

    @property
    def http(self) -> Http:
        """The HTTP side (made on first use: a run that sends nothing never loads it)."""
        if self._http is None:
            from ..net.transport import Http

            with self._lazy:
                if self._http is None:
                    self._http = Http(self._http_settings)
        return self._http

    @property
    def _client(self) -> StacClient:
        """The STAC API client (made on first use)."""
        if self._stac is None:
            from ..catalog.stac import StacClient

            http = self.http
            with self._lazy:
                if self._stac is None:
                    self._stac = StacClient(self.url, http, self._modes, self._modes.remember)
        return self._stac

    @property
    def requests_sent(self) -> int:
        """HTTP requests this resolver has sent to STAC servers (GDAL's not counted)."""
        return self._http.requests_sent if self._http is not None else 0

    def close(self) -> None:
        """Close the calling thread's HTTP session."""
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
