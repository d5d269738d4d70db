"""Regenerate the bundled example data in data/ (run from the repository root)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import cubes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent / "data"

MARS_ITEM = {
    "type": "Feature",
    "stac_version": "1.1.0",
    "stac_extensions": ["https://stac-extensions.github.io/version/v1.0.0/schema.json"],
    "id": "molaMarsPlanetaryRadius0005",
    "geometry": {"type": "Polygon", "coordinates": [[[180, -89.99843755425232], [180, 90], [-180, 90],
                                                      [-180, -89.99843755425232], [180, -89.99843755425232]]]},
    "bbox": [-180, -89.99843755425232, 180, 90],
    "properties": {"ssys:targets": ["Mars"], "version": "0005", "datetime": "2026-01-12T19:45:38.253407Z",
                   "created": "2025-12-01T17:12:43.395Z", "updated": "2026-01-12T19:49:54.921Z"},
    "links": [{"rel": "collection", "href": "./collection.json", "type": "application/json"},
              {"rel": "parent", "href": "./collection.json", "type": "application/json"}],
    "assets": {"image": {"href": "https://asc-isisdata.s3.us-west-2.amazonaws.com/isis-stac/isis-dtm-collection/"
                                 "molaMarsPlanetaryRadius0005.tiff",
                         "type": "image/tiff; application=geotiff"}},
    "collection": "isis-global-dtms",
}


def main() -> None:
    c = ROOT / "cubes"
    cubes.write_attached(c / "viking_mars.cub", cubes.label_text("viking_mars"))
    cubes.write_attached(c / "lro_moon.cub", cubes.label_text("lro_moon"))
    cubes.write_detached(c / "galileo_io.lbl", cubes.label_text("galileo_io_detached"), "galileo_io.cub")
    cat = ROOT / "catalog"
    (cat / "catalog.json").write_text(json.dumps({
        "type": "Catalog", "stac_version": "1.1.0", "id": "isis-stac-snapshot",
        "description": "Offline snapshot of USGS's ISIS STAC API (items USGS has published).",
        "links": [{"rel": "child", "href": "./isis-global-dtms/collection.json", "type": "application/json"}],
    }, indent=2) + "\n")
    (cat / "isis-global-dtms" / "collection.json").write_text(json.dumps({
        "type": "Collection", "stac_version": "1.1.0", "id": "isis-global-dtms",
        "description": "ISIS global DTMs (snapshot)", "license": "proprietary",
        "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
        "links": [{"rel": "item", "href": "./molaMarsPlanetaryRadius0005.json", "type": "application/geo+json"}],
    }, indent=2) + "\n")
    (cat / "isis-global-dtms" / "molaMarsPlanetaryRadius0005.json").write_text(json.dumps(MARS_ITEM, indent=2) + "\n")
    (ROOT / "isisdata" / "base" / "dems" / "kernels.0001.db").write_text(
        "# DEM kernel database of the example ISIS data area\n"
        "Object = Dem\n"
        "  Group = Selection\n"
        '    Match = ("Instrument","TargetName","Moon")\n'
        '    File  = ("base", "dems/ldem_128ppd_Mar2011_clon180_radius_pad.cub")\n'
        "  EndGroup\n"
        "EndObject\n"
    )
    # a small stand-in for the 2 GB LOLA DEM (1 pixel per degree instead of 128): a real ISIS cube
    moon_dem(ROOT / "isisdata" / "base" / "dems" / "ldem_128ppd_Mar2011_clon180_radius_pad.cub")


MOON_RADIUS = 1737400.0  # metres (IAU)


def moon_dem(path: Path, ppd: int = 1) -> Path:
    """An attached ISIS cube of Moon radii (metres), written as ISIS writes a DEM: one
    Real band, an Equirectangular Mapping group (centre longitude 180, as LOLA's
    ``clon180``) on the Moon's sphere; the values are the radius plus a smooth +-9 km of
    made-up topography (LOLA's range is -9.1 to +10.8 km)."""
    import numpy as np
    from osgeo import gdal, osr

    width, height = 360 * ppd, 180 * ppd
    lat = np.radians(np.linspace(90 - 0.5 / ppd, -90 + 0.5 / ppd, height))[:, None]
    lon = np.radians(np.linspace(0.5 / ppd, 360 - 0.5 / ppd, width))[None, :]
    radii = (MOON_RADIUS + 9000.0 * np.sin(3 * lon) * np.cos(2 * lat)).astype(np.float32)
    srs = osr.SpatialReference()
    srs.SetProjCS("Equirectangular Moon")
    srs.SetGeogCS("GCS_Moon", "D_Moon", "Moon", MOON_RADIUS, 0.0)
    srs.SetEquirectangular2(0.0, 180.0, 0.0, 0.0, 0.0)
    res = 2 * np.pi * MOON_RADIUS / width  # metres per pixel
    path.unlink(missing_ok=True)
    ds = gdal.GetDriverByName("ISIS3").Create(str(path), width, height, 1, gdal.GDT_Float32,
                                               options=["DATA_LOCATION=LABEL", "FORCE_360=YES",
                                                        "BOUNDING_DEGREES=0,-90,360,90", "ADD_GDAL_HISTORY=NO"])
    ds.SetProjection(srs.ExportToWkt())
    ds.SetGeoTransform((-width / 2 * res, res, 0.0, height / 2 * res, 0.0, -res))
    ds.GetRasterBand(1).WriteArray(radii)
    ds = None
    return path


if __name__ == "__main__":
    main()
