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
    # an empty stand-in for the 2 GB LOLA DEM: SYSTEM models must exist in the data area
    (ROOT / "isisdata" / "base" / "dems" / "ldem_128ppd_Mar2011_clon180_radius_pad.cub").write_bytes(b"")


if __name__ == "__main__":
    main()
