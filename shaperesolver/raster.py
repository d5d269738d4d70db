"""Open and check shape models through GDAL (the only module that imports ``osgeo``).

GDAL's defaults for ``/vsicurl/`` are unkind to a batch tool: dozens of requests per
open (directory listings, side-car probes), no timeout, no retry, and a failed open
cached for the life of the process.  :func:`gdal_options` scopes the settings that fix
this and restores the user's own afterwards (works on GDAL 3.6, which has no
``gdal.config_options``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from .errors import ModelError

__all__ = ["VSICURL_OPTIONS", "gdal_options", "open_model", "gdal_version"]

log = logging.getLogger(__name__)

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
_LOCK = threading.RLock()  # config options are process-wide in GDAL


def _gdal() -> Any:
    try:
        from osgeo import gdal
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ModelError(f"GDAL's Python bindings (osgeo) are not installed: {exc}") from None
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


def _try_open(gdal: Any, path: str) -> tuple[Any, str]:
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        gdal.ErrorReset()
        try:
            ds = gdal.Open(path, gdal.GA_ReadOnly)
        except RuntimeError as exc:  # the user turned on gdal.UseExceptions()
            return None, str(exc)
        return ds, gdal.GetLastErrorMsg()
    finally:
        gdal.PopErrorHandler()


def open_model(path: str, verify: bool = True, options: Mapping[str, str] | None = None) -> Any:
    """Open ``path`` with GDAL and return the ``gdal.Dataset``.

    With ``verify`` the dataset must be a single-band numeric raster with a
    georeference.  Raises :class:`ModelError` with GDAL's reason otherwise.  A failed
    ``/vsicurl/`` open is retried once after clearing GDAL's failed-open cache.
    """
    gdal = _gdal()
    opts = dict(VSICURL_OPTIONS, **(options or {}))
    with gdal_options(opts):
        ds, err = _try_open(gdal, path)
        if ds is None and path.startswith("/vsicurl"):
            gdal.VSICurlClearCache()
            ds, err = _try_open(gdal, path)
    if ds is None:
        raise ModelError(f"GDAL cannot open {path}: {err.strip() or 'unknown error'}")
    if verify:
        problem = _problem(gdal, ds)
        if problem:
            raise ModelError(f"{path} is not a usable shape model: {problem}")
    return ds


def _problem(gdal: Any, ds: Any) -> str | None:
    if ds.RasterCount != 1:
        return f"{ds.RasterCount} bands, expected 1"
    dtype = ds.GetRasterBand(1).DataType
    numeric = {gdal.GDT_Byte, gdal.GDT_UInt16, gdal.GDT_Int16, gdal.GDT_UInt32, gdal.GDT_Int32,
               gdal.GDT_Float32, gdal.GDT_Float64}
    if dtype not in numeric:
        return f"band type {gdal.GetDataTypeName(dtype)} is not a real number type"
    gt = ds.GetGeoTransform(can_return_null=True)
    srs = ds.GetProjection() or ""
    if gt is None or tuple(gt) == (0.0, 1.0, 0.0, 0.0, 0.0, 1.0) or not srs:
        return "no georeference (geotransform and coordinate system)"
    return None
