"""Open a shape model for a body and verify it, once, with its cache.

The one interface the policy uses to touch a model (:class:`ModelOpener`): a web model
is opened as a GeoTIFF through the loopback relay (:mod:`shaperesolver.net.relay`,
so GDAL never reaches an address the API's rules refuse); a local one (user or
SYSTEM) as an ISIS cube or GeoTIFF; a NAIF DSK through CSPICE.  The check (does the
model hold radii of the cube's body: :mod:`.modelcheck`) runs once per model and
body in a process and is kept in the on-disk cache with what identifies the content,
so a warm entry costs no request.  User model paths (``model=``) are expanded here, as
ISIS expands them.  GDAL, the relay and CSPICE load only when a model is opened.
"""

from __future__ import annotations

import errno
import os
import re

from ..base import bodies, safeio
from ..base.log import get as get_logger
from ..base.memo import Memo
from ..errors import (
    CatalogError,
    DataAreaError,
    ModelError,
    ModelMissingError,
    ModelUnreachableError,
    UnsafeFileError,
    UsageError,
)
from . import isisfiles

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol

    from ..net.transport import AddressPolicy, Http

    class Cache(Protocol):
        """What the opener needs of the on-disk cache (:class:`~shaperesolver.catalog.cache.DiskCache`)."""

        mode: str

        def key(self, *parts: object) -> str: ...
        def get(self, key: str, allow_stale: bool = False) -> tuple[Any, float] | None: ...
        def put(self, key: str, value: Any) -> None: ...

__all__ = ["ModelOpener", "isis_form"]

log = get_logger(__name__)


class ModelOpener:
    """Opens and checks models for one resolver's settings.

    ``policy`` gives the address rules a web model's requests must keep (those of the
    API or catalog the model came from); ``http`` gives the timeouts and deadline.
    """

    def __init__(self, *, isisdata: str | None, verify: bool, gdal_options: dict[str, str], cache: Cache,
                 http: Callable[[], Http], policy: Callable[[], AddressPolicy | None]) -> None:
        self.isisdata = isisdata
        self.verify = verify
        self.gdal_options = gdal_options
        self.cache = cache
        self._http = http
        self._policy = policy
        #: (path, body[, "dsk"]) -> checked once per process (errors remembered)
        self.checked = Memo()

    # ------------------------------------------------------------ the interface

    def verified(self, path: str, body: str | None, content: tuple[Any, ...] = (), web: bool = False,
                 strict: bool = False) -> None:
        """Check once that ``path`` opens and fits ``body`` (ModelError if not;
        ModelUnreachableError when it could not be read).  ``strict``: a URL no trusted
        source gave (a label's), held to the public-only rules when the catalog is local."""
        self.checked.get((path, body), lambda: self._check_open(path, body, content, web, strict))

    def open(self, path: str, web: bool, verify: bool | None = None) -> Any:
        """Open a model (after expanding ISIS's ``$base/...`` forms) as a ``gdal.Dataset``."""
        return self._open(self.expand(path), web, self.verify if verify is None else verify)

    def user_model(self, model: str, body: str | None = None) -> str:
        """The ShapeModel value for ``model=``, checked against ``body`` once (with verify)."""
        real, value, naif = self.user_model_path(model)
        if naif:  # ISIS tries a DSK before a cube
            from . import dsk

            self.checked.get((real, body, "dsk"), lambda: dsk.check_dsk(real, model, body, self.verify))
        elif self.verify:
            self.verified(real, body)
        return value

    def user_model_path(self, model: str) -> tuple[str, str, bool]:
        """(the file to open, the ShapeModel value, whether it is a NAIF file) of ``model=``;
        :class:`UsageError` if unusable.  Opens nothing with GDAL."""
        from . import dsk  # (NAIF files: only for a user model)

        if model.startswith("/vsi"):
            return model, model, False
        try:
            real = self.expand(model)
        except DataAreaError as exc:
            raise UsageError(f"model={model}: {exc}") from None
        if not os.path.exists(real):
            raise UsageError(f"model={model}: no such file" if real == model else f"model={model}: {real} does not exist")
        # the label keeps what ISIS itself expands ($base/..., $ISISDATA/...); ~ and $HOME are spelled out
        value = model if isis_form(model, self.isisdata) else os.path.realpath(real)
        try:  # a FIFO or device would hang or exhaust GDAL
            fd, _ = safeio.open_regular(real, what="model")
            head = os.pread(fd, 8, 0)
            os.close(fd)
        except (UnsafeFileError, OSError) as exc:
            raise UsageError(f"model={model}: {exc}") from None
        return real, value, dsk.naif_kind(head) is not None

    def check_named(self, value: str, body: str | None) -> str:
        """Open and check the model a label names (its ``ShapeModel`` value) as ISIS would
        find it; returns what was opened (the expanded path, or the ``/vsicurl/`` URL).

        Raises :class:`ModelMissingError` for a local file that is not there (or not a
        regular file), :class:`ModelUnreachableError` for a URL that gives no answer
        (through the relay and the address rules of a resolve) or a ``/vsi`` form this
        tool does not open, and :class:`ModelError` when the model does not fit ``body``.
        Each model is checked once per process (and cached as a resolve's check is).
        """

        text = value.strip()
        if text.startswith("/vsi") or "://" in text:
            url = text[len("/vsicurl/"):] if text.startswith("/vsicurl/") else text
            if text.startswith("/vsi") and not text.startswith("/vsicurl/") or not url.startswith(("http://", "https://")):
                raise ModelUnreachableError(f"{text}: only local files and /vsicurl/ http(s) URLs are opened")
            path = "/vsicurl/" + url
            self.verified(path, body, web=True, strict=True)
            return path
        checked: str = self.checked.get(("named", text, body), lambda: self._check_local(text, body))
        return checked

    def _check_local(self, text: str, body: str | None) -> str:
        from . import dsk

        try:
            real = self.expand(text)
        except DataAreaError as exc:
            raise ModelMissingError(f"{text}: {exc}") from None
        try:
            fd, _ = safeio.open_regular(real, what="model")
        except UnsafeFileError as exc:
            raise ModelMissingError(f"{text}: {real} does not exist" if exc.errno == errno.ENOENT and real != text
                                    else str(exc)) from None
        try:
            head = os.pread(fd, _LABEL_HEAD, 0)
        except OSError as exc:
            raise ModelUnreachableError(f"{text}: {exc.strerror}") from None
        finally:
            os.close(fd)
        real = os.path.realpath(real)
        _check_core(head, real, text)
        if dsk.naif_kind(head) is not None:  # ISIS tries a DSK before a cube
            self.checked.get((real, body, "dsk"), lambda: dsk.check_dsk(real, text, body, True))
        else:
            self.verified(real, body)
        return real

    def expand(self, path: str) -> str:
        """``path`` as ISIS expands it (``$base/...``, ``$ISISDATA/...``, ``~``)."""
        return isisfiles.expand_isis(path, self.isisdata)

    # ------------------------------------------------------------ GDAL's side

    def _open(self, path: str, web: bool, verify: bool = True, strict: bool = False) -> Any:
        """A web model as GeoTIFF only, through the relay that applies the API's address
        rules to every request GDAL makes (and every redirect it is sent); a local one
        as an ISIS cube or GeoTIFF."""
        from . import raster  # (GDAL's side: loaded when a model is opened)

        if not (web and path.startswith("/vsicurl/")):
            return raster.open_model(path, verify, self.gdal_options, raster.WEB_DRIVERS if web else raster.LOCAL_DRIVERS)
        from ..net.relay import RELAY
        from ..net.transport import AnyAddress, PublicOnly

        url = path[len("/vsicurl/"):]
        try:
            local = RELAY.add(url, self._http(), self._policy() or (PublicOnly() if strict else AnyAddress(url)))
        except CatalogError as exc:
            raise ModelUnreachableError(str(exc)) from None
        mark = RELAY.mark()
        try:
            return raster.open_model(local, verify, self._gdal_config(web), raster.WEB_DRIVERS, name=path)
        except ModelError as exc:
            why = RELAY.failure(local, since=mark)  # this open's request the server failed (not recovered): no answer
            if why:
                why = why.removeprefix(f"{url}: ")  # (the relay names the URL; the path already does)
                raise ModelUnreachableError(f"GDAL cannot open {path}: {why}") from None
            raise type(exc)(str(exc).replace(local[len("/vsicurl/"):], url)) from None

    def _gdal_config(self, web: bool) -> dict[str, str]:
        """GDAL config for reading a model: a web one is read from the local relay, never a
        proxy, with timeouts and retries from the resolver's HTTP settings."""
        if not web:
            return self.gdal_options
        from ..net.relay import gdal_config

        return {**self.gdal_options, **gdal_config(self._http().settings)}

    def _check_open(self, path: str, body: str | None = None, content: tuple[Any, ...] = (), web: bool = False,
                    strict: bool = False) -> bool:
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
            ds = self._open(path, web, strict=strict)
            ident = ident or raster.identity(ds.GetDescription() or path, self._gdal_config(web))
            old = None if self.cache.mode == "refresh" else self.cache.get(key, allow_stale=True)
            if (old is not None and isinstance(old[0], dict) and "ok" in old[0] and old[0].get("identity") == ident
                    and (local or ident.get("mtime"))):
                result = old[0]
            else:
                result = {"ok": True, "reason": None} if body is None else self.model_check(ds, path, body, web)
            self.cache.put(key, {**result, "identity": ident})
        if not result["ok"]:
            raise ModelError(result["reason"])
        return True

    def model_check(self, ds: Any, path: str, name: str, web: bool = False) -> dict[str, Any]:
        """Does the open dataset ``ds`` hold radii of ``name``: ``{'ok': bool, 'reason': str | None}``."""
        from . import modelcheck, raster  # (GDAL's side: loaded when a model is opened)

        facts = raster.crs_facts(ds)
        why = modelcheck.no_lonlat(facts)  # unusable whatever the body
        if why:
            return {"ok": False, "reason": f"{path}: {why}"}
        body = bodies.lookup(name)
        if body is None:
            log.info("%s: %s is not in the body table; the model is not checked against it", path, name)
            return {"ok": True, "reason": None}
        why = modelcheck.check_crs(facts, body)
        if why:
            return {"ok": False, "reason": f"{path} failed the CRS check for {body.name}: {why}"}
        if body.radii_km is None:
            log.info("%s: pck00011.tpc has no radii for %s; pixel values not checked", path, body.name)
            return {"ok": True, "reason": None}
        try:
            opts = self._gdal_config(web)
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


#: bytes of a label-named local model read before GDAL opens it (an ISIS label's ^Core is in them)
_LABEL_HEAD = 256 * 1024
# (patterns compiled on first use, through re's own cache: a run that opens no model compiles none)
_CORE = rb"^[ \t]*\^Core[ \t]*=[ \t]*(.+?)[ \t]*\r?$"
_CORE_OBJECT = rb"^[ \t]*Object[ \t]*=[ \t]*Core\b(.*?)^[ \t]*End_Object"
_FORMAT = rb"^[ \t]*Format[ \t]*=[ \t]*\"?(\w+)"
#: the core formats GDAL's ISIS3 driver reads itself (anything else it hands to every driver GDAL has)
_RAW_CORES = (b"TILE", b"BANDSEQUENTIAL")


def _check_core(head: bytes, real: str, shown: str) -> None:
    """An ISIS label a cube names may point its ``^Core`` at another file: GDAL's ISIS3
    driver then opens that file itself, with every driver GDAL has (a VRT that reaches
    any URL, a FIFO that never answers).  Only a raw core (Tile, BandSequential) in a
    regular file is let through; raises ModelError or ModelMissingError otherwise."""
    m = re.search(_CORE, head, re.M | re.I)
    if m is None or head[:2] in (b"II", b"MM"):  # no ^Core (or a TIFF that happens to hold the bytes)
        return
    value = m.group(1).decode("latin-1").strip().strip("()")
    first = value.split(",")[0].strip().strip('"').strip()
    if first.isdigit():  # attached: the core is in this file
        return
    fmt = re.search(_CORE_OBJECT, head, re.M | re.I | re.S)
    kind = re.search(_FORMAT, fmt.group(1), re.M | re.I) if fmt else None
    if kind is None or kind.group(1).upper() not in _RAW_CORES:
        what = kind.group(1).decode("latin-1") if kind else "no Format"
        raise ModelError(f"{shown}: an ISIS label whose ^Core is another file of format {what}; not opened "
                         "(GDAL would open that file with any of its drivers)")
    core = os.path.join(os.path.dirname(real), first)
    try:
        fd, _ = safeio.open_regular(core, what="core")
    except UnsafeFileError as exc:
        raise ModelMissingError(f"{shown}: its ^Core {first}: {exc}") from None
    os.close(fd)


def isis_form(model: str, isisdata: str | os.PathLike[str] | None) -> bool:
    """True when every ``$var`` in ``model`` is one ISIS expands from its data area."""
    names = [a or b for a, b in isisfiles.ISIS_VAR.findall(model)]
    if not names or model.startswith("~"):
        return False
    root = os.fspath(isisdata) if isisdata is not None else os.environ.get("ISISDATA")
    return all(n.upper() == "ISISDATA" or (root is not None and os.path.isdir(os.path.join(root, n))) for n in names)
