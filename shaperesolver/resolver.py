"""The policy, in one place: web → SYSTEM → ellipsoid, and the :class:`Resolver`.

The web step ends in a model, in *nothing matches* (the catalog answered: no item for
the body, all deprecated, or the newest failed the model check; SYSTEM and the
ellipsoid follow) or in *no answer* (the server, catalog or model could not be read;
the cube fails).  ``fallback=`` changes that: ``always`` falls back on no answer too,
``never`` makes nothing-matches an error as well.

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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import bodies, claims, dsk, kerneldb, safeio, txn
from .cache import CACHE_MODES, DiskCache
from .choice import Choice, choose_item
from .errors import (
    CatalogError,
    DataAreaError,
    KernelDbError,
    ModelError,
    ModelUnreachableError,
    NoAnswerError,
    NoMatchError,
    ShapeResolverError,
    UnsafeFileError,
    UsageError,
    VersionNotFoundError,
)
from .label import CubeLabel, WriteOutcome, read_label, write_shape_model
from .options import (
    DEFAULT_COLLECTION,
    DEFAULT_URL,
    FALLBACKS,
    NULL,
    RING_PROJECTIONS,
    RINGPLANE,
    SHAPES,
    SKY,
    check_types,
    one_of,
    seconds,
    yes_no,
)
from .stac import StacClient, StaticCatalog
from .transport import AnyAddress, Http, HttpSettings, check_api_url
from .weblookup import ModeStore, WebLookup

__all__ = [
    "DEFAULT_URL",
    "DEFAULT_COLLECTION",
    "SHAPES",
    "FALLBACKS",
    "Resolution",
    "Resolver",
    "ResolutionError",
    "resolve",
]

log = logging.getLogger(__name__)



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

    ``source`` is ``web``, ``system``, ``user``, ``ringplane`` or ``ellipsoid`` (always
    ``ellipsoid`` when ``shape_model`` is ``Null``).  ``fallback_reasons`` says why earlier steps of
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


class Resolver(WebLookup):
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
        fits the body (:mod:`shaperesolver.modelcheck`); results are cached.  A bool,
        or ``"yes"``/``"no"``.
    fallback:
        ``nomatch`` (default): fall back to SYSTEM, then the ellipsoid, only when the
        catalog has no usable model for the body; when it gives no answer the cube
        fails.  ``always``: fall back on no answer too.  ``never``: no fallback.
    http:
        Timeouts, retries and size limits.
    claim_wait:
        Seconds to wait for another process's search of the same body (processes that
        share the cache directory search each body once between them) before searching
        itself; default ``$SHAPERESOLVER_CLAIM_WAIT`` or 60; 0 turns coordination off.
    lock_wait:
        Seconds to wait for a cube that another process holds locked before failing
        that cube (not modified); default ``$SHAPERESOLVER_LOCK_WAIT`` or 30.

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
        verify: bool | str = True,
        fallback: str = "nomatch",
        http: HttpSettings | None = None,
        gdal_options: dict[str, str] | None = None,
        claim_wait: float | None = None,
        lock_wait: float | None = None,
    ) -> None:
        check_types(url=url, catalog=catalog, collection=collection, cache_dir=cache_dir, cache_ttl=cache_ttl,
                        isisdata=isisdata, http=http, gdal_options=gdal_options)
        self.verify = yes_no("verify", verify)
        self.fallback = one_of("fallback", fallback, FALLBACKS)
        cache = one_of("cache", cache, CACHE_MODES)
        self.claim_wait = seconds("claim_wait", claim_wait, "SHAPERESOLVER_CLAIM_WAIT", claims.DEFAULT_WAIT)
        self.lock_wait = seconds("lock_wait", lock_wait, "SHAPERESOLVER_LOCK_WAIT", txn.DEFAULT_LOCK_WAIT)
        self.url = check_api_url(url or os.environ.get("SHAPERESOLVER_STAC_URL") or DEFAULT_URL)
        self.catalog = os.fspath(catalog) if catalog is not None else None
        self.collection = collection
        self.isisdata = os.fspath(isisdata) if isisdata is not None else None
        self.gdal_options = dict(gdal_options or {})
        kw: dict[str, Any] = {} if cache_ttl is None else {"ttl": cache_ttl}
        self.cache = DiskCache(cache_dir, mode=cache, **kw)
        self.http = Http(http or HttpSettings())
        self._modes = ModeStore(self.cache)
        self._client = StacClient(self.url, self.http, self._modes, self._modes.remember)
        self._static = StaticCatalog(self.catalog, self.http) if self.catalog else None
        self._web = _Memo()
        self._opened = _Memo()
        self._unknown: set[str] = set()  # bodies already warned about
        #: False in a copy shipped to batch workers: a body missing from the table is an error
        self.searches_allowed = True

    def __getstate__(self) -> dict[str, Any]:
        config = dict(url=self.url, catalog=self.catalog, collection=self.collection, cache=self.cache.mode,
                      cache_dir=os.fspath(self.cache.directory), cache_ttl=self.cache.ttl, isisdata=self.isisdata,
                      verify=self.verify, fallback=self.fallback, http=self.http.settings, gdal_options=self.gdal_options,
                      claim_wait=self.claim_wait, lock_wait=self.lock_wait)
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
            label = read_label(cube, lock_wait=self.lock_wait)
        cube_path = label.path if label else (os.fspath(cube) if cube is not None and not isinstance(cube, CubeLabel) else None)
        name = target if target is not None else (label.target if label else None)
        if name is None or not name.strip():
            raise UsageError("give a cube or target=NAME")
        body = self._body(name)
        base: dict[str, Any] = dict(target=name, body=body, cube=cube_path, label_target=label.target if label else None)
        if label is not None and label.kernels is None and shape != "ellipsoid":
            log.warning("%s: no Kernels group (not spiceinit'ed): a later spiceinit replaces the ShapeModel "
                        "unless it runs before this tool or with shape=user model=...", cube_path)
        if shape == "ellipsoid":
            return Resolution(shape_model=NULL, source="ellipsoid", **base)
        if shape == "ringplane":
            return Resolution(shape_model=RINGPLANE, source="ringplane", **base)
        if shape in ("web", "system") and _rings(label, name):
            log.warning("%s: %s is a ring observation; shape=ringplane writes ShapeModel = RingPlane as spiceinit "
                        "does", cube_path or name, name)
        if shape == "user":
            assert model is not None
            return Resolution(shape_model=self._user_model(model, body), source="user", **base)
        if body.upper() == SKY:
            return Resolution(shape_model=NULL, source="ellipsoid", **base,
                              fallback_reasons=("TargetName SKY: no shape model is used for sky images",))
        reasons: list[str] = []
        if shape == "web":
            try:
                choice = self.web_model(name, version)
            except NoMatchError as exc:
                if self.fallback == "never":
                    raise NoMatchError(f"{exc}; not falling back (fallback=never)") from None
                reasons.append(str(exc))
            except (NoAnswerError, VersionNotFoundError) as exc:
                if self.fallback != "always":
                    if isinstance(exc, NoAnswerError):
                        raise NoAnswerError(f"{exc}; not falling back (fallback=always would)") from None
                    raise
                reasons.append(str(exc))
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
                                  expect_target=resolution.label_target, lock_wait=self.lock_wait)

    def open_model(self, what: Resolution | str, verify: bool | None = None) -> Any:
        """Open a resolution's model (or a path) as a ``gdal.Dataset``."""
        path = what.shape_model if isinstance(what, Resolution) else what
        if path == NULL:
            raise ModelError("the ellipsoid (Null) has no model to open")
        web = isinstance(what, Resolution) and what.source == "web"
        return self._open(self._expand(path), web, self.verify if verify is None else verify)

    def web_model(self, target: str, version: str | None = None) -> Choice:
        """The web model for ``target``.

        Raises :class:`NoMatchError` when the catalog has no usable model for the body,
        :class:`NoAnswerError` when it (or the model's check) gave no answer and
        :class:`VersionNotFoundError` for a pin that matches nothing.
        """
        body = self._body(target)
        pin = None if version is None else str(version).strip()
        choice: Choice = self._web.get((body, pin), lambda: self._find_web(target, body, pin))
        return choice

    def items(self, target: str | None = None) -> list[Any]:
        """Every item the catalog holds for ``target`` (None: every body), as
        :class:`~shaperesolver.inventory.ItemInfo`, marking the one a resolve would choose."""
        from . import inventory

        return inventory.items(self, target)

    def catalog_items(self, target: str | None = None) -> list[Any]:
        """The raw STAC items for ``target``'s names (None: the whole collection), not cached,
        as :class:`~shaperesolver.stacdoc.Items` (those that cannot be read in ``unreadable``).

        Raises :class:`CatalogError` when the catalog cannot be read.
        """
        names = None if target is None else bodies.query_names(target)
        if self._static is not None:
            return self._static.items()
        return self._client.items(self.collection, names)

    def choose(self, items: Iterable[Any], target: str, version: str | None = None) -> Choice | None:
        """The item a resolve would choose among ``items`` for ``target`` (None if none fits)."""
        policy = self._static.policy if self._static is not None else self._client.policy
        return choose_item(items, bodies.query_names(target), version, self._where(), self.allow_http, policy,
                           self.local_root)

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

    def _body(self, name: str) -> str:
        """The canonical body of ``name``; an unknown one gets one warning per resolver."""
        body = bodies.canonical(name)
        if bodies.lookup(name) is None and body.upper() != SKY:
            with self._web.lock:
                new = body not in self._unknown
                self._unknown.add(body)
            if new:
                log.warning("%s is not a body shaperesolver knows; searched as written, models not checked against it",
                            body)
        return body

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

    def _find_web(self, target: str, body: str, pin: str | None) -> Choice:
        if not self.searches_allowed:
            raise ShapeResolverError(f"{body} is not in the batch's table of resolved bodies "
                                     "(did the cube change during the batch?)")
        if body.upper() == SKY:
            raise NoMatchError("no shape model is used for sky images")
        names = bodies.query_names(target)
        choice = self._lookup(names, body, pin)
        if self.verify:
            try:
                self._opened.get((choice.vsi_path, body),
                                 lambda: self._check_open(choice.vsi_path, body, (choice.item_id, choice.version), web=True))
            except ModelUnreachableError as exc:
                raise NoAnswerError(f"web model {choice.item_id} could not be checked: {exc}") from None
            except ModelError as exc:
                raise NoMatchError(f"web model {choice.item_id} failed verification: {exc}") from None
        return choice

    def _open(self, path: str, web: bool, verify: bool = True) -> Any:
        """Open a model: a web one as GeoTIFF only, through the relay that applies the
        API's address rules to every request GDAL makes (and every redirect it is sent);
        a local (user or SYSTEM) one as an ISIS cube or GeoTIFF."""
        from . import raster  # (GDAL's side: loaded when a model is opened)

        if not (web and path.startswith("/vsicurl/")):
            return raster.open_model(path, verify, self.gdal_options, raster.WEB_DRIVERS if web else raster.LOCAL_DRIVERS)
        from .relay import RELAY

        url = path[len("/vsicurl/"):]
        policy = self._static.policy if self._static is not None else self._client.policy
        try:
            local = RELAY.add(url, self.http, policy or AnyAddress(url))
        except CatalogError as exc:
            raise ModelUnreachableError(str(exc)) from None
        try:
            return raster.open_model(local, verify, self._gdal_options(web), raster.WEB_DRIVERS, name=path)
        except ModelError as exc:
            why = RELAY.failure(local)  # the relay refused a hop or the server failed: no answer
            if why:
                raise ModelUnreachableError(f"GDAL cannot open {path}: {why}") from None
            raise type(exc)(str(exc).replace(local[len("/vsicurl/"):], url)) from None

    def _gdal_options(self, web: bool) -> dict[str, str]:
        """GDAL config for reading a model: a web one is read from the local relay, never a proxy."""
        if not web:
            return self.gdal_options
        from .relay import GDAL_NO_PROXY

        return {**self.gdal_options, **GDAL_NO_PROXY}

    def _check_open(self, path: str, body: str | None = None, content: tuple[Any, ...] = (), web: bool = False) -> bool:
        """Open ``path``, check it fits ``body``; the outcome is cached with the model.

        The cache key is the path, the body and what identifies the content (the catalog
        item and version; size and mtime for local files, which cost nothing).  A warm
        entry costs no request; a stale one is reused when GDAL's stat (free after the
        open) still shows the same size and Last-Modified.
        """
        from . import modelcheck, raster  # (GDAL's side: loaded when a model is opened)

        local = not path.startswith("/vsi")
        ident = raster.identity(path) if local else None
        key = self.cache.key("modelcheck", modelcheck.VERSION, path, body, list(content), ident)
        hit = self.cache.get(key)
        result = hit[0] if hit is not None and isinstance(hit[0], dict) and "ok" in hit[0] else None
        if result is None:
            ds = self._open(path, web)
            ident = ident or raster.identity(ds.GetDescription() or path, self._gdal_options(web))
            old = None if self.cache.mode == "refresh" else self.cache.get(key, allow_stale=True)
            if (old is not None and isinstance(old[0], dict) and "ok" in old[0] and old[0].get("identity") == ident
                    and (local or ident.get("mtime"))):
                result = old[0]
            else:
                result = {"ok": True, "reason": None} if body is None else self._model_check(ds, path, body, web)
            self.cache.put(key, {**result, "identity": ident})
        if not result["ok"]:
            raise ModelError(result["reason"])
        return True

    def _model_check(self, ds: Any, path: str, name: str, web: bool = False) -> dict[str, Any]:
        from . import modelcheck, raster  # (GDAL's side: loaded when a model is opened)

        body = bodies.lookup(name)
        if body is None:
            log.info("%s: %s is not in the body table; the model is not checked against it", path, name)
            return {"ok": True, "reason": None}
        facts = raster.crs_facts(ds)
        if facts.unconfirmed:
            log.warning("%s: its coordinate system is %s, which cannot confirm the body; only its pixel values "
                        "are checked against %s", path, facts.unconfirmed, body.name)
        why = modelcheck.check_crs(facts, body)
        if why:
            return {"ok": False, "reason": f"{path} failed the CRS check for {body.name}: {why}"}
        if body.radii_km is None:
            log.info("%s: pck00011.tpc has no radii for %s; pixel values not checked", path, body.name)
            return {"ok": True, "reason": None}
        try:
            opts = self._gdal_options(web)
            samples = [raster.sample_values(ds, path, opts)]
            if not samples[0].level.startswith("full resolution"):  # an overview can hide what the pixels hold
                samples.append(raster.full_resolution_sample(ds, path, opts))
        finally:
            ds.FlushCache()
        for i, sample in enumerate(samples):
            if i and not sample.values:
                log.info("%s: no valid pixels in %s; checked %s only", path, sample.level, samples[0].level)
                continue
            why = modelcheck.check_values(sample, body)
            if why:
                return {"ok": False, "reason": f"{path} failed the values check for {body.name}: {why}"}
            log.debug("%s: %d valid values of %s fit %s", path, len(sample.values), sample.level, body.name)
        return {"ok": True, "reason": None}

    def _expand(self, path: str) -> str:
        return kerneldb.expand_isis(path, self.isisdata)

    def _user_model(self, model: str, body: str | None = None) -> str:
        """The ShapeModel value for ``model``, checked against ``body`` once (with verify)."""
        real, value, naif = self.user_model_path(model)
        if naif:  # ISIS tries a DSK before a cube
            self._opened.get((real, body, "dsk"), lambda: dsk.check_dsk(real, model, body, self.verify))
        elif self.verify:
            self._opened.get((real, body), lambda: self._check_open(real, body))
        return value

    def user_model_path(self, model: str) -> tuple[str, str, bool]:
        """(the file to open, the ShapeModel value, whether it is a NAIF file) of ``model=``;
        :class:`UsageError` if unusable.

        Opens nothing with GDAL: the model check needs the cube's body.
        """
        if model.startswith("/vsi"):
            return model, model, False
        try:
            real = self._expand(model)
        except DataAreaError as exc:
            raise UsageError(f"model={model}: {exc}") from None
        if not os.path.exists(real):
            raise UsageError(f"model={model}: no such file" if real == model else f"model={model}: {real} does not exist")
        # the label keeps what ISIS itself expands ($base/..., $ISISDATA/...); ~ and $HOME are spelled out
        value = model if _isis_form(model, self.isisdata) else str(Path(real).resolve())
        try:  # a FIFO or device would hang or exhaust GDAL
            fd, _ = safeio.open_regular(real, what="model")
            head = os.pread(fd, 8, 0)
            os.close(fd)
        except (UnsafeFileError, OSError) as exc:
            raise UsageError(f"model={model}: {exc}") from None
        return real, value, dsk.naif_kind(head) is not None


def _isis_form(model: str, isisdata: str | os.PathLike[str] | None) -> bool:
    """True when every ``$var`` in ``model`` is one ISIS expands from its data area."""
    names = [a or b for a, b in kerneldb.ISIS_VAR.findall(model)]
    if not names or model.startswith("~"):
        return False
    root = os.fspath(isisdata) if isisdata is not None else os.environ.get("ISISDATA")
    return all(n.upper() == "ISISDATA" or (root is not None and os.path.isdir(os.path.join(root, n))) for n in names)


def _rings(label: CubeLabel | None, target: str) -> bool:
    """Is this a ring observation (a ring-system target or a ring-plane Mapping group)?"""
    if "RING" in target.upper():
        return True
    if label is None:
        return False
    kw = label.isiscube_keywords()
    return (kw.get(("MAPPING", "PROJECTIONNAME"), "").upper() in RING_PROJECTIONS
            or ("MAPPING", "RINGLONGITUDEDIRECTION") in kw)


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
