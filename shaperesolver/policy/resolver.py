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

import os
import re

from ..base import bodies
from ..base.log import get as get_logger
from ..base.record import Frozen, set_field
from ..cube.label import CubeLabel, WriteOutcome, read_label, write_shape_model
from ..errors import (
    DataAreaError,
    KernelDbError,
    ModelError,
    ModelUnreachableError,
    NoAnswerError,
    NoMatchError,
    NotInTableError,
    ShapeResolverError,
    UsageError,
    VersionNotFoundError,
)
from ..models import isisfiles
from .options import (
    DEFAULT_COLLECTION,
    DEFAULT_URL,
    FALLBACKS,
    NULL,
    RINGPLANE,
    SHAPES,
    SKY,
    ring_observation,
)
from .state import ResolverState

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any

    from typing_extensions import Unpack

    from ..catalog.choice import Choice
    from .audit import Audit
    from .inventory import ItemInfo
    from .types import ResolverOptions, Shape

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

log = get_logger(__name__)



class ResolutionError(ShapeResolverError):
    """No shape model could be chosen for a cube; ``reasons`` lists why, in order."""

    def __init__(self, reasons: Iterable[str]) -> None:
        self.reasons = tuple(reasons)
        super().__init__("; ".join(self.reasons))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reasons,))


class Resolution(Frozen):
    """The shape model chosen for one cube (or target).  Immutable.

    ``source`` is ``web``, ``system``, ``user``, ``ringplane`` or ``ellipsoid`` (always
    ``ellipsoid`` when ``shape_model`` is ``Null``).  ``fallback_reasons`` says why earlier steps of
    the policy were passed over.
    """

    __slots__ = ("target", "body", "shape_model", "source", "cube", "item_id", "version", "fallback_reasons", "db",
                 "label_target")
    target: str
    body: str
    shape_model: str
    source: str
    cube: str | None
    item_id: str | None
    version: str | None
    fallback_reasons: tuple[str, ...]
    db: str | None
    #: the TargetName the cube's label held when it was resolved (None if not read)
    label_target: str | None

    def __init__(self, target: str, body: str, shape_model: str, source: str, cube: str | None = None,
                 item_id: str | None = None, version: str | None = None, fallback_reasons: tuple[str, ...] = (),
                 db: str | None = None, label_target: str | None = None) -> None:
        set_field(self, "target", target)
        set_field(self, "body", body)
        set_field(self, "shape_model", shape_model)
        set_field(self, "source", source)
        set_field(self, "cube", cube)
        set_field(self, "item_id", item_id)
        set_field(self, "version", version)
        set_field(self, "fallback_reasons", fallback_reasons)
        set_field(self, "db", db)
        set_field(self, "label_target", label_target)

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


class Resolver(ResolverState):
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
        fits the body (:mod:`shaperesolver.models.modelcheck`); results are cached.  A bool,
        or ``"yes"``/``"no"``.
    fallback:
        ``nomatch`` (default): fall back to SYSTEM, then the ellipsoid, only when the
        catalog has no usable model for the body; when it gives no answer the cube
        fails.  ``always``: fall back on no answer too.  ``never``: no fallback.
    http:
        Timeouts, retries, the deadline of each request and search, and size limits
        (:class:`HttpSettings`); default ``HttpSettings()`` with its ``deadline`` from
        ``$SHAPERESOLVER_HTTP_DEADLINE`` (seconds) when that is set.
    claim_wait:
        Seconds to wait for another process's search of the same body (processes that
        share the cache directory search each body once between them) before searching
        itself; default ``$SHAPERESOLVER_CLAIM_WAIT`` or 60; 0 turns coordination off.
    lock_wait:
        Seconds to wait for a cube that another process holds locked before failing
        that cube (not modified); default ``$SHAPERESOLVER_LOCK_WAIT`` or 30.

    A resolver pickles (for process pools and Dask): the settings and every result it
    has found so far travel, sessions and locks do not (:class:`.state.ResolverState`
    holds all that; this class is the policy).
    """

    def resolve(
        self,
        cube: str | os.PathLike[str] | CubeLabel | None = None,
        *,
        shape: Shape = "web",
        model: str | None = None,
        target: str | None = None,
        version: str | None = None,
    ) -> Resolution:
        """Choose the shape model for ``cube`` (or for ``target`` alone).

        Raises :class:`ResolutionError` when no model can be chosen (e.g. the web failed
        and there is no ISIS data area), :class:`~shaperesolver.errors.LabelError` for
        an unreadable cube and :class:`UsageError` for bad parameters.
        """
        shape = str(shape).lower()  # type: ignore[assignment]  # (any case at run time)
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
        # only a search (web) or a model check (user) uses the body table: warn about an unknown body then
        body = self._body(name) if shape == "user" else bodies.canonical(name)
        base: dict[str, Any] = dict(target=name, body=body, cube=cube_path, label_target=label.target if label else None)
        if label is not None and label.kernels is None and shape != "ellipsoid":
            log.warning("%s: no Kernels group (not spiceinit'ed): a later spiceinit replaces the ShapeModel "
                        "unless it runs before this tool or with shape=user model=...", cube_path)
        if shape == "ellipsoid":
            return Resolution(shape_model=NULL, source="ellipsoid", **base)
        if shape == "ringplane":
            return Resolution(shape_model=RINGPLANE, source="ringplane", **base)
        if shape in ("web", "system") and ring_observation(label, name):
            log.warning("%s: %s is a ring observation; shape=ringplane writes ShapeModel = RingPlane as spiceinit "
                        "does", cube_path or name, name)
        if shape == "user":
            assert model is not None
            return Resolution(shape_model=self.models.user_model(model, body), source="user", **base)
        if body.upper() == SKY:
            return Resolution(shape_model=NULL, source="ellipsoid", **base,
                              fallback_reasons=("TargetName SKY: no shape model is used for sky images",))
        reasons: list[str] = []
        if shape == "web":
            choice = self._web_step(name, version, reasons)
            if choice is not None:
                return Resolution(shape_model=self._portable(choice), source="web", item_id=choice.item_id,
                                  version=choice.version, **base)
        return self._system_step(label, name, reasons, base)

    def _web_step(self, name: str, version: str | None, reasons: list[str]) -> Choice | None:
        """The web model, or None (with why in ``reasons``) when the policy falls back."""
        try:
            return self.web_model(name, version)
        except NoMatchError as exc:
            if self.fallback == "never":
                raise NoMatchError(f"{exc}; not falling back (fallback=never)") from None
            reasons.append(str(exc))
        except (NoAnswerError, VersionNotFoundError) as exc:
            if self.fallback != "always":
                if isinstance(exc, NoAnswerError):
                    raise NoAnswerError(f"{exc}; {self._no_answer_fix(exc)}") from None
                raise
            reasons.append(str(exc))
        return None

    def _no_answer_fix(self, exc: NoAnswerError) -> str:
        """What to do about no answer, as one stage (a long reason is shortened in its
        middle; this never is).  ``fallback=always`` is not offered: that is a choice of
        policy, not a fix (the manual's Fallback section says what it does)."""
        if "refusing" in str(exc):  # a link or redirect the address rules refuse: no setting makes it safe
            return "not modified"
        if isinstance(exc, _UncheckedModel):
            return "not modified: verify=no writes it unchecked, or mirror it (mirror=DIR) and resolve offline with catalog=DIR"
        if self.catalog:
            return "not modified: check catalog="
        return "not modified: check url= and the network, or resolve offline from a mirror (catalog=DIR)"

    def _system_step(self, label: CubeLabel | None, name: str, reasons: list[str], base: dict[str, Any]) -> Resolution:
        """SYSTEM (the data area's kernel database), else the ellipsoid."""
        cube_path = base["cube"]
        from ..models import kerneldb  # (the kernel database: SYSTEM runs only)

        try:
            sysmodel = kerneldb.find_system_model(_keywords(label, name), self.isisdata)
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

    def audit(self, cube: str | os.PathLike[str], *, shape: Shape = "web", model: str | None = None,
              target: str | None = None, version: str | None = None) -> Audit:
        """What the ShapeModel ``cube`` names is worth now (:mod:`.audit`): ``current``,
        ``stale``, ``missing``, ``unreachable``, ``wrong-body``, ``unset``, ``user`` or
        ``failed``, with why.  Reads the cube under a shared lock and never writes it."""
        from .audit import audit

        return audit(self, cube, shape=shape, model=model, target=target, version=version)

    def open_model(self, what: Resolution | str, verify: bool | None = None) -> Any:
        """Open a resolution's model (or a path) as a ``gdal.Dataset``."""
        path = what.shape_model if isinstance(what, Resolution) else what
        if path == NULL:
            raise ModelError("the ellipsoid (Null) has no model to open")
        web = isinstance(what, Resolution) and what.source == "web"
        return self.models.open(path, web, verify)

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

    def items(self, target: str | None = None) -> list[ItemInfo]:
        """Every item the catalog holds for ``target`` (None: every body), as
        :class:`~shaperesolver.policy.inventory.ItemInfo`, marking the one a resolve would choose."""
        from . import inventory

        return inventory.items(self, target)

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
            root = os.path.realpath(isisfiles.data_area(self.isisdata))
        except DataAreaError:
            return choice.vsi_path
        real = os.path.realpath(choice.href)
        rel = os.path.relpath(real, root)
        if not re.match(r"\w+/", rel):  # outside the area, or no $variable to name
            return choice.vsi_path
        return "$" + rel

    def _find_web(self, target: str, body: str, pin: str | None) -> Choice:
        if not self.searches_allowed:
            raise NotInTableError(f"{body} is not in the batch's table of resolved bodies "
                                  "(did the cube change during the batch?)", target, pin)
        if body.upper() == SKY:
            raise NoMatchError("no shape model is used for sky images")
        names = bodies.query_names(target)
        choice = self._lookup(names, body, pin)
        if self.verify:
            try:
                self.models.verified(choice.vsi_path, body, (choice.item_id, choice.version), web=True)
            except ModelUnreachableError as exc:
                raise _UncheckedModel(f"web model {choice.item_id} could not be checked: {exc}") from None
            except ModelError as exc:
                raise NoMatchError(f"web model {choice.item_id} failed verification: {exc}") from None
        return choice

    def user_model_path(self, model: str) -> tuple[str, str, bool]:
        """(the file to open, the ShapeModel value, whether it is a NAIF file) of ``model=``;
        :class:`UsageError` if unusable (see :meth:`.ModelOpener.user_model_path`)."""
        return self.models.user_model_path(model)


class _UncheckedModel(NoAnswerError):
    """The web model could not be reached for its check (``verify=yes``)."""


def _keywords(label: CubeLabel | None, target: str) -> dict[tuple[str, str], str]:
    keywords = label.isiscube_keywords() if label is not None else {}
    keywords[("INSTRUMENT", "TARGETNAME")] = target
    return keywords


def resolve(cube: str | os.PathLike[str] | None = None, *, shape: Shape = "web", model: str | None = None,
            target: str | None = None, version: str | None = None, **options: Unpack[ResolverOptions]) -> Resolution:
    """One-call resolution with a throw-away :class:`Resolver`.

    ``options`` are the settings of :class:`Resolver` (``url``, ``catalog``, ``verify``, ...);
    ``model``, ``target`` and ``version`` those of :meth:`Resolver.resolve`.
    """
    with Resolver(**options) as r:
        return r.resolve(cube, shape=shape, model=model, target=target, version=version)


def iter_resolve(resolver: Resolver, cubes: Iterable[str], **kwargs: Any) -> Iterator[tuple[str, Resolution | None, ShapeResolverError | None]]:
    """Resolve each cube, yielding (cube, resolution or None, error or None)."""
    for cube in cubes:
        try:
            yield cube, resolver.resolve(cube, **kwargs), None
        except ShapeResolverError as exc:
            yield cube, None, exc


def __getattr__(name: str) -> object:
    """The settings' types, imported here before, from :mod:`.types` (which loads :mod:`typing`)."""
    if name in ("Shape", "Fallback", "CacheMode", "ResolverOptions"):
        from . import types

        return getattr(types, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
