"""The policy, in one place: web → SYSTEM → ellipsoid, and the :class:`Resolver`.

A :class:`Resolver` holds the HTTP session(s), the cache and the settings.  It is safe
to share across threads: each thread gets its own ``requests.Session`` and every
memo is guarded by a lock.  Within one resolver each body is searched once and each
model opened (verified) once.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import bodies, claims, kerneldb, modelcheck, raster, safeio
from .cache import DiskCache
from .errors import (
    CatalogError,
    DataAreaError,
    KernelDbError,
    ModelError,
    ShapeResolverError,
    UnsafeFileError,
    UsageError,
    VersionNotFoundError,
)
from .label import CubeLabel, WriteOutcome, read_label, write_shape_model
from .stac import FILTER, QUERY, Choice, Http, HttpSettings, StacClient, StaticCatalog, _short, check_api_url, check_href, choose_item

__all__ = [
    "DEFAULT_URL",
    "DEFAULT_COLLECTION",
    "SHAPES",
    "Resolution",
    "Resolver",
    "ResolutionError",
    "resolve",
]

log = logging.getLogger(__name__)

DEFAULT_URL = "https://astrogeology.usgs.gov/apis/isis-stac/"
DEFAULT_COLLECTION = "isis-global-dtms"
SHAPES = ("web", "system", "ellipsoid", "user")
NULL = "Null"


class ResolutionError(ShapeResolverError):
    """No shape model could be chosen for a cube; ``reasons`` lists why, in order."""

    def __init__(self, reasons: Iterable[str]) -> None:
        self.reasons = tuple(reasons)
        super().__init__("; ".join(self.reasons))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reasons,))


@dataclass(frozen=True)
class Resolution:
    """The shape model chosen for one cube (or target).  Immutable.

    ``source`` is ``web``, ``system``, ``user`` or ``ellipsoid`` (always ``ellipsoid``
    when ``shape_model`` is ``Null``).  ``fallback_reasons`` says why earlier steps of
    the policy were passed over.
    """

    target: str
    body: str
    shape_model: str
    source: str
    cube: str | None = None
    item_id: str | None = None
    version: str | None = None
    fallback_reasons: tuple[str, ...] = ()
    db: str | None = None
    #: the TargetName the cube's label held when it was resolved (None if not read)
    label_target: str | None = None

    def record(self) -> dict[str, Any]:
        """The fields of the JSON record (without the write outcome)."""
        return {
            "cube": self.cube,
            "target": self.target,
            "body": self.body,
            "shape_model": self.shape_model,
            "source": self.source,
            "item_id": self.item_id,
            "version": self.version,
            "fallback_reason": "; ".join(self.fallback_reasons) or None,
            "db": self.db,
        }


@dataclass
class _Memo:
    lock: threading.Lock = field(default_factory=threading.Lock)
    values: dict[Any, Any] = field(default_factory=dict)
    key_locks: dict[Any, threading.Lock] = field(default_factory=dict)

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        """``make()`` once per key (errors are remembered too), even across threads."""
        with self.lock:
            if key in self.values:
                return self._unwrap(self.values[key])
            klock = self.key_locks.setdefault(key, threading.Lock())
        with klock:
            with self.lock:
                if key in self.values:
                    return self._unwrap(self.values[key])
            try:
                value: Any = ("ok", make())
            except ShapeResolverError as exc:
                value = ("err", exc)
            with self.lock:
                self.values[key] = value
            return self._unwrap(value)

    @staticmethod
    def _unwrap(value: tuple[str, Any]) -> Any:
        if value[0] == "err":
            raise value[1]
        return value[1]


class Resolver:
    """Resolves shape models; holds the HTTP session, cache and settings.

    Parameters
    ----------
    url:
        STAC API root (default ``$SHAPERESOLVER_STAC_URL`` or USGS's ISIS STAC API).
    catalog:
        A static STAC catalog (local path or URL) to use instead of the API.
    collection:
        The collection to search (``isis-global-dtms``).
    cache:
        ``yes``, ``no`` or ``refresh``; ``cache_dir`` overrides the cache directory.
    isisdata:
        The ISIS data area for SYSTEM models (default ``$ISISDATA``, read when needed).
    verify:
        Open each web or user model with GDAL once and check it is a usable DEM that
        fits the body (:mod:`shaperesolver.modelcheck`); results are cached.
    http:
        Timeouts, retries and size limits.
    claim_wait:
        Seconds to wait for another process's search of the same body (processes that
        share the cache directory search each body once between them) before searching
        itself; default ``$SHAPERESOLVER_CLAIM_WAIT`` or 60; 0 turns coordination off.

    A resolver pickles (for process pools and Dask): the settings and every result it
    has found so far travel, sessions and locks do not.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        catalog: str | os.PathLike[str] | None = None,
        collection: str = DEFAULT_COLLECTION,
        cache: str = "yes",
        cache_dir: str | os.PathLike[str] | None = None,
        cache_ttl: float | None = None,
        isisdata: str | os.PathLike[str] | None = None,
        verify: bool = True,
        http: HttpSettings | None = None,
        gdal_options: dict[str, str] | None = None,
        claim_wait: float | None = None,
    ) -> None:
        if claim_wait is None:
            env = os.environ.get("SHAPERESOLVER_CLAIM_WAIT")
            try:
                claim_wait = float(env) if env else claims.DEFAULT_WAIT
            except ValueError:
                raise UsageError(f"SHAPERESOLVER_CLAIM_WAIT={env!r} is not a number of seconds") from None
        self.claim_wait = float(claim_wait)
        self.url = check_api_url(url or os.environ.get("SHAPERESOLVER_STAC_URL") or DEFAULT_URL)
        self.catalog = os.fspath(catalog) if catalog is not None else None
        self.collection = collection
        self.isisdata = os.fspath(isisdata) if isisdata is not None else None
        self.verify = verify
        self.gdal_options = dict(gdal_options or {})
        kw: dict[str, Any] = {} if cache_ttl is None else {"ttl": cache_ttl}
        self.cache = DiskCache(cache_dir, mode=cache, **kw)
        self.http = Http(http or HttpSettings())
        self._modes = _ModeStore(self.cache)
        self._client = StacClient(self.url, self.http, self._modes, self._modes.remember)
        self._static = StaticCatalog(self.catalog, self.http) if self.catalog else None
        self._web = _Memo()
        self._opened = _Memo()
        #: False in a copy shipped to batch workers: a body missing from the table is an error
        self.searches_allowed = True

    def __getstate__(self) -> dict[str, Any]:
        config = dict(url=self.url, catalog=self.catalog, collection=self.collection, cache=self.cache.mode,
                      cache_dir=os.fspath(self.cache.directory), cache_ttl=self.cache.ttl, isisdata=self.isisdata,
                      verify=self.verify, http=self.http.settings, gdal_options=self.gdal_options,
                      claim_wait=self.claim_wait)
        with self._web.lock, self._opened.lock:
            return {"config": config, "web": dict(self._web.values), "opened": dict(self._opened.values),
                    "searches_allowed": self.searches_allowed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        config = state["config"]
        if not state["searches_allowed"]:
            config = {**config, "cache": "no"}  # a worker's copy: it never searches
        self.__init__(**config)  # type: ignore[misc]
        self._web.values.update(state["web"])
        self._opened.values.update(state["opened"])
        self.searches_allowed = state["searches_allowed"]

    def web_table(self) -> dict[tuple[str, str | None], Choice | ShapeResolverError]:
        """What each (body, version pin) resolved to so far: a choice, or why not."""
        with self._web.lock:
            return {k: v[1] for k, v in self._web.values.items()}

    # ------------------------------------------------------------ public API

    @property
    def requests_sent(self) -> int:
        """HTTP requests this resolver has sent to STAC servers (GDAL's not counted)."""
        return self.http.requests_sent

    def close(self) -> None:
        """Close the calling thread's HTTP session."""
        self.http.close()

    def __enter__(self) -> Resolver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def resolve(
        self,
        cube: str | os.PathLike[str] | CubeLabel | None = None,
        *,
        shape: str = "web",
        model: str | None = None,
        target: str | None = None,
        version: str | None = None,
    ) -> Resolution:
        """Choose the shape model for ``cube`` (or for ``target`` alone).

        Raises :class:`ResolutionError` when no model can be chosen (e.g. the web failed
        and there is no ISIS data area), :class:`~shaperesolver.errors.LabelError` for
        an unreadable cube and :class:`UsageError` for bad parameters.
        """
        shape = shape.lower()
        if shape not in SHAPES:
            raise UsageError(f"shape={shape!r} is not one of {', '.join(SHAPES)}")
        if shape == "user" and not model:
            raise UsageError("shape=user needs model=PATH")
        if model and shape != "user":
            raise UsageError("model= is only used with shape=user")
        label = None
        if isinstance(cube, CubeLabel):
            label = cube
        elif cube is not None and (target is None or shape == "system"):
            label = read_label(cube)
        cube_path = label.path if label else (os.fspath(cube) if cube is not None and not isinstance(cube, CubeLabel) else None)
        name = target if target is not None else (label.target if label else None)
        if name is None or not name.strip():
            raise UsageError("give a cube or target=NAME")
        body = bodies.canonical(name)
        base = dict(target=name, body=body, cube=cube_path, label_target=label.target if label else None)
        if shape == "ellipsoid":
            return Resolution(shape_model=NULL, source="ellipsoid", **base)
        if shape == "user":
            assert model is not None
            return Resolution(shape_model=self._user_model(model, body), source="user", **base)
        reasons: list[str] = []
        if shape == "web":
            try:
                choice = self.web_model(name, version)
            except _Fallback as fb:
                reasons.append(str(fb))
            else:
                return Resolution(shape_model=self._portable(choice), source="web", item_id=choice.item_id,
                                  version=choice.version, **base)
        keywords = _keywords(label, name)
        try:
            sysmodel = kerneldb.find_system_model(keywords, self.isisdata)
        except (DataAreaError, KernelDbError) as exc:
            raise ResolutionError([*reasons, str(exc)]) from None
        reasons.extend(sysmodel.reasons)
        if sysmodel.path is None:
            reasons.append(f"no SYSTEM shape model for {name} in {sysmodel.db}; using the ellipsoid")
            log.warning("%s: %s", cube_path or name, reasons[-1])
            return Resolution(shape_model=NULL, source="ellipsoid", fallback_reasons=tuple(reasons), db=sysmodel.db, **base)
        return Resolution(shape_model=sysmodel.path, source="system", fallback_reasons=tuple(reasons), db=sysmodel.db, **base)

    def write(self, resolution: Resolution, cube: str | os.PathLike[str] | None = None, *, dryrun: bool = False) -> WriteOutcome:
        """Write ``resolution.shape_model`` into the cube's Kernels group."""
        path = cube if cube is not None else resolution.cube
        if path is None:
            raise UsageError("no cube to write to")
        # re-checked under the lock: a cube swapped since it was resolved is not written
        return write_shape_model(path, resolution.shape_model, dryrun=dryrun,
                                  expect_target=resolution.label_target)

    def open_model(self, what: Resolution | str, verify: bool | None = None) -> Any:
        """Open a resolution's model (or a path) as a ``gdal.Dataset``."""
        path = what.shape_model if isinstance(what, Resolution) else what
        if path == NULL:
            raise ModelError("the ellipsoid (Null) has no model to open")
        return raster.open_model(self._expand(path), self.verify if verify is None else verify, self.gdal_options)

    def web_model(self, target: str, version: str | None = None) -> Choice:
        """The web model for ``target``; raises ``_Fallback`` (a CatalogError) on failure."""
        body = bodies.canonical(target)
        pin = None if version is None else str(version).strip()
        return self._web.get((body, pin), lambda: self._find_web(target, body, pin))

    def items(self, target: str | None = None) -> list[Any]:
        """Every item the catalog holds for ``target`` (None: every body), as
        :class:`~shaperesolver.inventory.ItemInfo`, marking the one a resolve would choose."""
        from . import inventory

        return inventory.items(self, target)

    def catalog_items(self, target: str | None = None) -> list[Any]:
        """The raw STAC items for ``target``'s names (None: the whole collection), not cached.

        Raises :class:`CatalogError` when the catalog cannot be read.
        """
        names = None if target is None else bodies.query_names(target)
        if self._static is not None:
            return list(self._static.items())
        return self._client.items(self.collection, names)

    def choose(self, items: Iterable[Any], target: str, version: str | None = None) -> Choice | None:
        """The item a resolve would choose among ``items`` for ``target`` (None if none fits)."""
        return choose_item(items, bodies.query_names(target), version, self._where(), self.allow_http, self.local_root)

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

    # ------------------------------------------------------------ internals

    def _portable(self, choice: Choice) -> str:
        """The label's path: ``$base/...`` for a local file inside the ISIS data area."""
        if not choice.local:
            return choice.vsi_path
        try:
            root = os.path.realpath(kerneldb.data_area(self.isisdata))
        except DataAreaError:
            return choice.vsi_path
        real = os.path.realpath(choice.href)
        rel = os.path.relpath(real, root)
        if not re.match(r"\w+/", rel):  # outside the area, or no $variable to name
            return choice.vsi_path
        return "$" + rel

    def _where(self) -> str:
        return f"catalog {self.catalog}" if self._static else f"{self.collection} at {self.url}"

    def _find_web(self, target: str, body: str, pin: str | None) -> Choice:
        if not self.searches_allowed:
            raise ShapeResolverError(f"{body} is not in the batch's table of resolved bodies "
                                     "(did the cube change during the batch?)")
        names = bodies.query_names(target)
        choice = self._lookup(names, body, pin)
        if self.verify:
            try:
                self._opened.get((choice.vsi_path, body),
                                 lambda: self._check_open(choice.vsi_path, body, (choice.item_id, choice.version)))
            except ModelError as exc:
                raise _Fallback(f"web model {choice.item_id} failed verification: {exc}") from None
        return choice

    def _check_open(self, path: str, body: str | None = None, content: tuple[Any, ...] = ()) -> bool:
        """Open ``path``, check it fits ``body``; the outcome is cached with the model.

        The cache key is the path, the body and what identifies the content (the catalog
        item and version; size and mtime for local files, which cost nothing).  A warm
        entry costs no request; a stale one is reused when GDAL's stat (free after the
        open) still shows the same size and Last-Modified.
        """
        local = not path.startswith("/vsi")
        ident = raster.identity(path) if local else None
        key = self.cache.key("modelcheck", modelcheck.VERSION, path, body, list(content), ident)
        hit = self.cache.get(key)
        result = hit[0] if hit is not None and isinstance(hit[0], dict) and "ok" in hit[0] else None
        if result is None:
            ds = raster.open_model(path, True, self.gdal_options)
            ident = ident or raster.identity(path, self.gdal_options)
            old = None if self.cache.mode == "refresh" else self.cache.get(key, allow_stale=True)
            if (old is not None and isinstance(old[0], dict) and "ok" in old[0] and old[0].get("identity") == ident
                    and (local or ident.get("mtime"))):
                result = old[0]
            else:
                result = {"ok": True, "reason": None} if body is None else self._model_check(ds, path, body)
            self.cache.put(key, {**result, "identity": ident})
        if not result["ok"]:
            raise ModelError(result["reason"])
        return True

    def _model_check(self, ds: Any, path: str, name: str) -> dict[str, Any]:
        body = bodies.lookup(name)
        if body is None:
            log.info("%s: %s is not in the body table; the model is not checked against it", path, name)
            return {"ok": True, "reason": None}
        why = modelcheck.check_crs(raster.crs_facts(ds), body)
        if why:
            return {"ok": False, "reason": f"{path} failed the CRS check for {body.name}: {why}"}
        if body.radii_km is None:
            log.info("%s: pck00011.tpc has no radii for %s; pixel values not checked", path, body.name)
            return {"ok": True, "reason": None}
        sample = raster.sample_values(ds, path, self.gdal_options)
        why = modelcheck.check_values(sample, body)
        if why:
            return {"ok": False, "reason": f"{path} failed the values check for {body.name}: {why}"}
        log.debug("%s: %d valid values of %s fit %s", path, len(sample.values), sample.level, body.name)
        return {"ok": True, "reason": None}

    def _lookup(self, names: tuple[str, ...], body: str, pin: str | None) -> Choice:
        if self._static is not None:
            try:
                items = self._static.items()
                choice = choose_item(items, names, pin, self._where(), self._static.allow_http, self._static.local_root)
            except VersionNotFoundError:
                raise
            except CatalogError as exc:
                raise _Fallback(f"web search failed: {exc}") from None
            if choice is None:
                raise _Fallback(f"no web shape model for {'/'.join(names)} in {self._where()}")
            return choice
        key = self.cache.key(self._client.search, self.collection, body, pin)
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
                return c.result
            if isinstance(c.noted, dict) and c.noted.get("kind") in ("error", "none", "version"):
                reason = str(c.noted.get("reason"))
                log.info("another process's search for %s gave: %s", body, reason)
                if c.noted["kind"] == "version":
                    raise VersionNotFoundError(reason)
                if c.noted["kind"] == "none":
                    raise _Fallback(reason)
                return self._search_failed(key, CatalogError(reason))
            return self._search(names, body, pin, key, c.note)

    def _search(self, names: tuple[str, ...], body: str, pin: str | None, key: str,
                note: Callable[[Any], None] = lambda value: None) -> Choice:
        """Search the API; ``note`` tells processes waiting on our claim what came of it."""
        try:
            items = self._client.items(self.collection, names)
            choice = choose_item(items, names, pin, self._where(), self._client.allow_http)
        except VersionNotFoundError as exc:
            note({"kind": "version", "reason": str(exc)})
            raise
        except CatalogError as exc:
            note({"kind": "error", "reason": str(exc)})
            return self._search_failed(key, exc)
        if choice is None:
            reason = f"no web shape model for {'/'.join(names)} in {self._where()}"
            note({"kind": "none", "reason": reason})
            raise _Fallback(reason)
        self.cache.put(key, {"item_id": choice.item_id, "version": choice.version, "href": choice.href,
                             "asset_key": choice.asset_key})
        return choice

    def _search_failed(self, key: str, exc: CatalogError) -> Choice:
        stale = self._cached_choice(key, allow_stale=True)
        if stale is not None:
            log.warning("STAC API unreachable (%s); using a cached result %s old", exc, _age(stale[1]))
            return stale[0]
        raise _Fallback(f"web search failed: {exc}") from None

    def _cached_choice(self, key: str, allow_stale: bool) -> tuple[Choice, float] | None:
        """A cached Choice, validated exactly like a fresh answer (types, href rules)."""
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
            check_href(href, item_id, self._client.allow_http)
        except CatalogError as exc:
            log.warning("ignoring cache entry %s: %s", key, _short(str(exc)))
            return None
        return Choice(item_id, version, href, asset_key), age

    def _expand(self, path: str) -> str:
        if path.startswith("$"):
            return str(kerneldb.expand(path, kerneldb.data_area(self.isisdata)))
        return path

    def _user_model(self, model: str, body: str | None = None) -> str:
        if model.startswith("/vsi"):
            if self.verify:
                self._opened.get((model, body), lambda: self._check_open(model, body))
            return model
        if model.startswith("$"):
            try:
                real = self._expand(model)
            except DataAreaError as exc:
                raise UsageError(f"model={model}: {exc}") from None
            if not os.path.exists(real):
                raise UsageError(f"model={model}: {real} does not exist")
            value = model
        else:
            if not os.path.exists(model):
                raise UsageError(f"model={model}: no such file")
            real = value = str(Path(model).resolve())
        try:  # a FIFO or device would hang or exhaust GDAL
            fd, _ = safeio.open_regular(real, what="model")
            os.close(fd)
        except UnsafeFileError as exc:
            raise UsageError(f"model={model}: {exc}") from None
        if self.verify:
            self._opened.get((real, body), lambda: self._check_open(real, body))
        return value


class _Fallback(CatalogError):
    """The web step did not give a usable model (a reason to fall back, not an error)."""


class _ModeStore:
    """Which search form (``query`` or ``filter``) works per endpoint, in memory and on disk.

    The file is read only when a search needs it (never for ellipsoid, SYSTEM, user or
    static-catalog runs), and only well-formed ``{endpoint: "query"|"filter"}`` entries
    are kept.
    """

    KEY = "search-modes"

    def __init__(self, cache: DiskCache) -> None:
        self.cache = cache
        self.lock = threading.Lock()
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

    def get(self, endpoint: str, default: str | None = None) -> str | None:
        return self.modes.get(endpoint, default)

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


def _keywords(label: CubeLabel | None, target: str) -> dict[tuple[str, str], str]:
    keywords = label.isiscube_keywords() if label is not None else {}
    keywords[("INSTRUMENT", "TARGETNAME")] = target
    return keywords


def resolve(cube: str | os.PathLike[str] | None = None, *, shape: str = "web", **kwargs: Any) -> Resolution:
    """One-call resolution with a throw-away :class:`Resolver`.

    Keyword arguments are those of :class:`Resolver` and of :meth:`Resolver.resolve`
    (``model``, ``target``, ``version``).
    """
    per_call = {k: kwargs.pop(k) for k in ("model", "target", "version") if k in kwargs}
    with Resolver(**kwargs) as r:
        return r.resolve(cube, shape=shape, **per_call)


def iter_resolve(resolver: Resolver, cubes: Iterable[str], **kwargs: Any) -> Iterator[tuple[str, Resolution | None, ShapeResolverError | None]]:
    """Resolve each cube, yielding (cube, resolution or None, error or None)."""
    for cube in cubes:
        try:
            yield cube, resolver.resolve(cube, **kwargs), None
        except ShapeResolverError as exc:
            yield cube, None, exc
