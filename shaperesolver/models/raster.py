"""Open and check shape models through GDAL (the only module that imports ``osgeo``).

GDAL's defaults for ``/vsicurl/`` are unkind to a batch tool: dozens of requests per
open (directory listings, side-car probes), no timeout, no retry, and a failed open
cached for the life of the process.  :func:`gdal_options` scopes the settings that fix
this and restores the user's own afterwards (works on GDAL 3.6, which has no
``gdal.config_options``).

GDAL's own messages (``ERROR 1:``, ``Warning 1:``) never reach the terminal while this
module works (:func:`_gdal_messages`): they go through ``logging`` (warnings at info,
errors at debug and in the one-line exception raised), with any URL of the relay that
reads web models for GDAL turned back into the model's real URL
(:func:`shaperesolver.net.relay.unmask`: no port or token of the relay is ever printed).

GDAL is never left to pick a driver by content: a model from a catalog opens with the
GeoTIFF driver only (:data:`WEB_DRIVERS`; a COG is a GeoTIFF), a local user or SYSTEM
model as the formats ISIS reads as shape models (:data:`LOCAL_DRIVERS`).  Drivers such
as VRT, MRF or WMS read or write other files and URLs their XML names.
"""

from __future__ import annotations

import functools
import threading
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from ..base.log import get as get_logger
from ..errors import ModelError, ModelUnreachableError, shorten
from .modelcheck import CrsFacts, Sample

__all__ = ["VSICURL_OPTIONS", "WEB_DRIVERS", "LOCAL_DRIVERS", "gdal_options", "open_model", "gdal_version",
           "sample_values", "full_resolution_sample", "crs_facts", "identity", "gdal_reason", "SAMPLE_PIXELS",
           "MAX_BLOCK_BYTES"]

log = get_logger(__name__)

#: Config options applied while a model is opened.
VSICURL_OPTIONS: dict[str, str] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
    "GDAL_HTTP_MAX_RETRY": "2",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_TIMEOUT": "30",
    "GDAL_HTTP_CONNECTTIMEOUT": "10",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
}
#: Drivers a model from a catalog (a server's bytes) may be opened with.
WEB_DRIVERS = ("GTiff", "COG")
#: Drivers a local user or SYSTEM model may be opened with: ISIS cubes and GeoTIFF.
LOCAL_DRIVERS = ("ISIS3", "GTiff", "COG")
_FORMATS = {WEB_DRIVERS: "a GeoTIFF", LOCAL_DRIVERS: "an ISIS cube or a GeoTIFF"}
_LOCK = threading.RLock()  # config options are process-wide in GDAL
_HANDLING = threading.local()  # the _Messages of this thread's innermost _gdal_messages block
_F = TypeVar("_F", bound=Callable[..., Any])


def _gdal() -> Any:
    try:
        from osgeo import gdal
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ModelUnreachableError(f"GDAL's Python bindings (osgeo) are not installed: {exc}") from None
    return gdal


def gdal_version() -> str:
    """GDAL's release name, or 'not installed'."""
    try:
        return str(_gdal().__version__)
    except ModelError:
        return "not installed"


@contextmanager
def gdal_options(options: Mapping[str, str]) -> Iterator[None]:
    """Set GDAL config options for the duration of the block, then restore them."""
    gdal = _gdal()
    with _LOCK:
        saved = {k: gdal.GetConfigOption(k) for k in options}
        try:
            for k, v in options.items():
                gdal.SetConfigOption(k, v)
            yield
        finally:
            for k, v in saved.items():
                gdal.SetConfigOption(k, v)


class _Messages:
    """GDAL's error handler: each message logged with relay URLs unmasked, the last error kept."""

    def __init__(self, gdal: Any) -> None:
        self.gdal = gdal
        self.error = ""

    def __call__(self, kind: int, number: int, message: str) -> None:
        from ..net.relay import unmask

        text = unmask(str(message)).strip()
        if kind >= self.gdal.CE_Failure:
            self.error = text
            log.debug("GDAL error %d: %s", number, text)
        elif kind == self.gdal.CE_Warning:
            log.info("GDAL warning %d: %s", number, text)
        else:
            log.debug("GDAL: %s", text)


def _gdal_messages(fn: _F) -> _F:
    """Run ``fn`` with GDAL's messages going to :class:`_Messages` (this thread only)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        gdal = _gdal()
        outer = getattr(_HANDLING, "messages", None)
        _HANDLING.messages = handler = _Messages(gdal)
        gdal.PushErrorHandler(handler)
        try:
            gdal.ErrorReset()
            return fn(*args, **kwargs)
        finally:
            gdal.PopErrorHandler()
            _HANDLING.messages = outer

    return run  # type: ignore[return-value]


def _reset_error() -> None:
    """Forget earlier errors of this thread (before a call whose failure is reported)."""
    handler = getattr(_HANDLING, "messages", None)
    if handler is not None:
        handler.error = ""
    _gdal().ErrorReset()


def _last_error(exc: BaseException | None = None) -> str:
    """GDAL's last error in this thread (``exc``'s, when GDAL raised it), relay URLs unmasked."""
    from ..net.relay import unmask

    handler = getattr(_HANDLING, "messages", None)
    if exc is not None:
        return unmask(str(exc))
    if handler is not None and handler.error:
        return str(handler.error)
    return unmask(_gdal().GetLastErrorMsg())


@_gdal_messages
def _try_open(gdal: Any, path: str, drivers: Sequence[str]) -> tuple[Any, str]:
    try:
        ds = gdal.OpenEx(path, gdal.OF_RASTER | gdal.OF_READONLY | gdal.OF_VERBOSE_ERROR, allowed_drivers=list(drivers))
    except RuntimeError as exc:  # the user turned on gdal.UseExceptions()
        return None, _last_error(exc)
    return ds, _last_error()


#: what GDAL says when a web server ignores HTTP Range requests (``python -m http.server``)
_NO_RANGE = "range downloading not supported"


def gdal_reason(message: str) -> str:
    """GDAL's error message on one line, shortened, with what to do when the cause is known
    (that part is never shortened)."""
    reason = shorten(message) or "unknown error"
    if _NO_RANGE in message.lower():
        reason += ("; the model's server must answer HTTP Range requests, as GDAL reads parts of a model "
                   "(python -m http.server does not): serve it from one that does, or download it (mirror=DIR)")
    return reason


def open_model(path: str, verify: bool = True, options: Mapping[str, str] | None = None,
               drivers: Sequence[str] = WEB_DRIVERS, name: str | None = None) -> Any:
    """Open ``path`` with one of ``drivers`` and return the ``gdal.Dataset``.

    With ``verify`` the dataset must be a single-band numeric raster with a
    georeference.  Raises :class:`ModelError` with GDAL's reason otherwise (never the
    content of a file it refused), naming the model ``name`` (default ``path``).  A
    failed ``/vsicurl/`` open is retried once after clearing GDAL's failed-open cache.
    """
    name = name or path
    gdal = _gdal()
    drivers = tuple(drivers)
    opts = dict(VSICURL_OPTIONS, **(options or {}))
    with gdal_options(opts):
        ds, err = _try_open(gdal, path, drivers)
        if ds is None and path.startswith("/vsicurl"):
            gdal.VSICurlClearCache()
            ds, err = _try_open(gdal, path, drivers)
    if ds is None:
        if "not recognized as" in err or "not recognised as" in err:
            fmt = _FORMATS.get(drivers, " or ".join(drivers))
            raise ModelError(f"GDAL cannot open {name}: not {fmt} (the only format opened here)")
        raise ModelUnreachableError(f"GDAL cannot open {name}: {gdal_reason(err.replace(path, name))}")
    if verify:
        problem = _problem(gdal, ds)
        if problem:
            raise ModelError(f"{name} is not a usable shape model: {problem}")
    return ds



def _band(ds: Any, index: int = 1) -> Any:
    """Band ``index``, or None when GDAL cannot give it (whatever its exception setting)."""
    try:
        return ds.GetRasterBand(index)
    except RuntimeError:
        return None


def _overview(band: Any, index: int) -> Any:
    try:
        return band.GetOverview(index)
    except RuntimeError:  # gdal.UseExceptions() is on and the overview cannot be opened
        return None


def _problem(gdal: Any, ds: Any) -> str | None:
    if ds.RasterCount != 1:
        return f"{ds.RasterCount} bands, expected 1"
    band = _band(ds)
    if band is None:
        return "GDAL cannot read its band"
    dtype = band.DataType
    numeric = {gdal.GDT_Byte, gdal.GDT_UInt16, gdal.GDT_Int16, gdal.GDT_UInt32, gdal.GDT_Int32,
               gdal.GDT_Float32, gdal.GDT_Float64}
    if dtype not in numeric:
        return f"band type {gdal.GetDataTypeName(dtype)} is not a real number type"
    gt = ds.GetGeoTransform(can_return_null=True)
    srs = ds.GetProjection() or ""
    if gt is None or tuple(gt) == (0.0, 1.0, 0.0, 0.0, 0.0, 1.0) or not srs:
        return "no georeference (geotransform and coordinate system)"
    return None


#: At most this many pixels are read for the values check (one 512x512 COG tile).
SAMPLE_PIXELS = 512 * 512
#: A block (tile or strip) larger than this is never read: GDAL decompresses a whole
#: block to read any part of it, so one 32768x32768 deflate tile of a 4 MB file is 4 GiB.
MAX_BLOCK_BYTES = 16 * 2**20
#: Side of the window read at full resolution (no decimation, so no overview answers it).
WINDOW = 256
#: Without a usable overview a large band is sampled by side x side whole blocks spread
#: over it: 2 x 2 for network paths (each block may be one HTTP request), 4 x 4 locally.
REMOTE_BLOCKS = 2
LOCAL_BLOCKS = 4
_NETWORK = ("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss", "/vsiswift", "/vsiwebhdfs", "/vsihdfs")
#: ISIS special pixels (Null, Lrs, Lis, His, Hrs) of signed 16-bit cubes.
_ISIS_INT16_SPECIAL = frozenset({-32768, -32767, -32766, -32765, -32764})

_Read = tuple[Any, int, int, int, int, int, int]  # band, x, y, width, height, buffer width, buffer height


def _is_network(path: str) -> bool:
    return any(prefix + tail in path for prefix in _NETWORK for tail in ("/", "?", "_streaming/"))


def _block_bytes(gdal: Any, band: Any) -> tuple[int, str]:
    """Bytes of one of ``band``'s blocks, and the block described for a message."""
    bx, by = band.GetBlockSize()
    size = max(1, gdal.GetDataTypeSize(band.DataType) // 8)
    n = max(1, bx) * max(1, by) * size
    return n, f"{bx}x{by} {gdal.GetDataTypeName(band.DataType)} blocks ({n / 2**20:.0f} MiB each)"


def _full_band(gdal: Any, ds: Any, path: str) -> Any:
    """Band 1, refused (before anything is read) when its blocks are too large to read."""
    band = _band(ds)
    if band is None:
        raise ModelError(f"GDAL cannot read band 1 of {path or 'the model'}")
    n, what = _block_bytes(gdal, band)
    if n > MAX_BLOCK_BYTES:
        raise ModelError(f"{path or 'the model'} has {what}, more than the {MAX_BLOCK_BYTES // 2**20} MiB the "
                         "check reads at once; write it tiled (e.g. a COG with 512x512 tiles)")
    return band


def _reader(gdal: Any, ds: Any, band: Any) -> Any:
    """A function reading a list of windows into one :class:`Sample` (invalid pixels dropped)."""
    nodata = band.GetNoDataValue()
    scale = band.GetScale() or 1.0
    offset = band.GetOffset() or 0.0
    driver = ds.GetDriver()
    isis16 = driver is not None and driver.ShortName.startswith("ISIS") and band.DataType == gdal.GDT_Int16

    def read(name: str, reads: list[_Read], path: str) -> Sample:
        vals = array("d")
        for b, x, y, ww, wh, bx, by in reads:
            _reset_error()
            try:
                raw = b.ReadRaster(x, y, ww, wh, buf_xsize=bx, buf_ysize=by, buf_type=gdal.GDT_Float64)
            except RuntimeError as exc:  # gdal.UseExceptions() is on
                raw, msg = None, _last_error(exc)
            else:
                msg = _last_error()
            b.FlushCache()  # drop the decompressed block: at most one is held at a time
            if raw is None:
                msg = msg.replace(f"{path}, ", "") if path else msg  # (GDAL's "PATH, band 1: ..." names it again)
                raise ModelUnreachableError(f"GDAL cannot read {name} of {path or 'the model'}: {gdal_reason(msg)}")
            vals.frombytes(bytes(raw))
        good = tuple(v * scale + offset for v in vals
                     if v == v and abs(v) < 1e37 and v != nodata and not (isis16 and v in _ISIS_INT16_SPECIAL))
        return Sample(good, len(vals), name)

    return read


@_gdal_messages
def sample_values(ds: Any, path: str = "", options: Mapping[str, str] | None = None,
                  max_pixels: int = SAMPLE_PIXELS) -> Sample:
    """A cheap sample of band 1's valid values in metres (scale/offset applied).

    Reads the smallest overview of at most ``max_pixels`` that has valid pixels (two
    levels are tried: a COG's smallest is one tile, one HTTP request).  Without one, a
    band of at most ``max_pixels`` is read whole; a larger one is sampled by reading a
    few whole blocks spread over it (:data:`LOCAL_BLOCKS`, or :data:`REMOTE_BLOCKS` for
    network paths), each decimated to fit.  NoData, NaN, infinities and ISIS special
    pixels are dropped (``Sample.values`` may then be empty).  Overviews GDAL cannot
    open are skipped; blocks over :data:`MAX_BLOCK_BYTES` are never read (a full
    resolution one is a :class:`ModelError`).
    """
    gdal = _gdal()
    band = _full_band(gdal, ds, path)
    overviews = [ov for ov in (_overview(band, i) for i in range(band.GetOverviewCount())) if ov is not None]
    overviews.sort(key=lambda b: b.XSize * b.YSize)
    plans: list[tuple[str, list[_Read]]] = [
        (f"overview {ov.XSize}x{ov.YSize}", [(ov, 0, 0, ov.XSize, ov.YSize, ov.XSize, ov.YSize)])
        for ov in overviews if ov.XSize * ov.YSize <= max_pixels and _block_bytes(gdal, ov)[0] <= MAX_BLOCK_BYTES][:2]
    w, h = band.XSize, band.YSize
    if w * h <= max_pixels:
        plans.append((f"full resolution {w}x{h}", [(band, 0, 0, w, h, w, h)]))
    else:
        side = REMOTE_BLOCKS if _is_network(path) else LOCAL_BLOCKS
        bx, by = band.GetBlockSize()
        wins = _spread_blocks(w, h, bx, by, side)
        budget = max_pixels / len(wins)
        reads = []
        for x, y, ww, wh in wins:
            k = max(1.0, (ww * wh / budget) ** 0.5)
            reads.append((band, x, y, ww, wh, max(1, int(ww / k)), max(1, int(wh / k))))
        plans.append((f"{len(wins)} blocks of full resolution {w}x{h}", reads))
    read = _reader(gdal, ds, band)
    sample = Sample((), 0, "nothing")
    with gdal_options(dict(VSICURL_OPTIONS, **(options or {}))):
        for name, reads in plans:
            sample = read(name, reads, path)
            if sample.values:
                break
    return sample


@_gdal_messages
def full_resolution_sample(ds: Any, path: str = "", options: Mapping[str, str] | None = None) -> Sample:
    """Valid values of one window of at most :data:`WINDOW` x :data:`WINDOW` pixels read
    at full resolution (never from an overview): the first of the windows at blocks
    spread over the band that has any.  Costs one block per window tried.
    """
    gdal = _gdal()
    band = _full_band(gdal, ds, path)
    bx, by = band.GetBlockSize()
    side = REMOTE_BLOCKS if _is_network(path) else LOCAL_BLOCKS
    spots = _spread_blocks(band.XSize, band.YSize, bx, by, side)
    mid = len(spots) // 2  # the middle block first (a global DEM has data there), then the rest
    read = _reader(gdal, ds, band)
    sample = Sample((), 0, "nothing")
    with gdal_options(dict(VSICURL_OPTIONS, **(options or {}))):
        for x, y, ww, wh in spots[mid:] + spots[:mid]:
            ww, wh = min(ww, WINDOW), min(wh, WINDOW)
            sample = read(f"a {ww}x{wh} full-resolution window at ({x}, {y})", [(band, x, y, ww, wh, ww, wh)], path)
            if sample.values:
                break
    return sample


def _spread_blocks(w: int, h: int, bx: int, by: int, side: int) -> list[tuple[int, int, int, int]]:
    """Up to ``side`` x ``side`` distinct whole blocks spread evenly over a w x h band."""
    bx, by = max(1, min(bx, w)), max(1, min(by, h))
    xs = sorted({int((i + 0.5) * w / side) // bx * bx for i in range(side)})
    ys = sorted({int((j + 0.5) * h / side) // by * by for j in range(side)})
    return [(x, y, min(bx, w - x), min(by, h - y)) for y in ys for x in xs]


def crs_facts(ds: Any) -> CrsFacts:
    """The semi-major axis and the GEOGCS/datum/ellipsoid names of the model's CRS."""
    from osgeo import osr

    wkt = ds.GetProjection() or ""
    srs = osr.SpatialReference()
    if not wkt or srs.ImportFromWkt(wkt) != 0:
        return CrsFacts(None)
    if srs.IsLocal() or not (srs.IsGeographic() or srs.IsProjected()) or not srs.GetAttrValue("SPHEROID"):
        # OGR answers WGS 84's axis for a CRS without an ellipsoid: that says nothing of the file
        kind = "a LOCAL_CS" if srs.IsLocal() else "a coordinate system without an ellipsoid"
        return CrsFacts(None, unconfirmed=kind)
    names = tuple(n for n in (srs.GetAttrValue("GEOGCS"), srs.GetAttrValue("DATUM"), srs.GetAttrValue("SPHEROID")) if n)
    try:
        semi = float(srs.GetSemiMajor())
    except (RuntimeError, TypeError, ValueError):
        semi = None
    return CrsFacts(semi, names)


@_gdal_messages
def identity(path: str, options: Mapping[str, str] | None = None) -> dict[str, int]:
    """What identifies the model's content, cheaply: size and modification time.

    For ``/vsi...`` paths GDAL's stat answers from what the open already learnt (no
    request for ``/vsicurl/``; ``mtime`` is the server's Last-Modified, 0 when absent).
    """
    if not path.startswith("/vsi"):
        import os

        try:
            st = os.stat(path)
        except OSError:
            return {}
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    gdal = _gdal()
    with gdal_options(dict(VSICURL_OPTIONS, **(options or {}))):
        st = gdal.VSIStatL(path)
    return {} if st is None else {"size": int(st.size), "mtime": int(st.mtime)}


@_gdal_messages
def read_last_block(ds: Any) -> str | None:
    """Read band 1's last full-resolution block (a COG's last bytes); None if it reads, else GDAL's reason."""
    band = ds.GetRasterBand(1)
    bx, by = band.GetBlockSize()
    x, y = (band.XSize - 1) // bx * bx, (band.YSize - 1) // by * by
    try:
        raw = band.ReadRaster(x, y, min(bx, band.XSize - x), min(by, band.YSize - y))
    except RuntimeError as exc:
        return _last_error(exc)
    return None if raw is not None else (_last_error().strip() or "unknown error")
