"""Real DEMs for the mirror tests and benchmark: COGs written with GDAL (tiled, overviews)."""

from pathlib import Path

import numpy as np
from osgeo import gdal, osr

from shaperesolver.base import bodies


def radius_grid(body: str, width: int, height: int) -> np.ndarray:
    """The body's triaxial radii in each direction (metres) plus +-1 % of smooth topography."""
    ra, rb, rc = (1000.0 * v for v in bodies.lookup(body).radii_km)
    lat = np.radians(np.linspace(89.9, -89.9, height, dtype=np.float32))[:, None]
    lon = np.radians(np.linspace(-180, 180, width, dtype=np.float32))[None, :]
    x, y, z = np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat) * np.ones_like(lon)
    r = 1.0 / np.sqrt((x / ra) ** 2 + (y / rb) ** 2 + (z / rc) ** 2)
    return (r * (1 + 0.002 * np.sin(7 * lon) * np.cos(5 * lat))).astype(np.float32)


def make_cog(path: Path, body: str, width: int = 4096, height: int = 2048) -> Path:
    """An uncompressed float32 COG of ``body`` (4096 x 2048: 45 MB), on the body's GEOGCS."""
    mem = gdal.GetDriverByName("MEM").Create("", width, height, 1, gdal.GDT_Float32)
    mem.SetGeoTransform((-180.0, 360.0 / width, 0.0, 90.0, 0.0, -180.0 / height))
    srs = osr.SpatialReference()
    srs.SetGeogCS(f"{body} 2000", f"D_{body}_2000", f"{body}_2000_IAU_IAG", 1000.0 * bodies.lookup(body).radii_km[0], 0.0)
    mem.SetProjection(srs.ExportToWkt())
    mem.GetRasterBand(1).WriteArray(radius_grid(body, width, height))
    out = gdal.GetDriverByName("COG").CreateCopy(str(path), mem, options=["BLOCKSIZE=512", "COMPRESS=NONE"])
    assert out is not None and out.GetRasterBand(1).GetOverviewCount() >= 1
    out = None
    return Path(path)
