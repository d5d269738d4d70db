"""Issue 11: a model is checked against the cube's body before it is written.

Real GeoTIFFs written with GDAL here (COG layout: tiled, overviews first), served over
/vsicurl/ from the Range-capable server on 127.0.0.1.
"""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from osgeo import gdal, osr
from servers import RangeServer, StacServer, item

from shaperesolver import HttpSettings, Resolver, errors
from shaperesolver.base import bodies
from shaperesolver.models import modelcheck
from shaperesolver.models.modelcheck import CrsFacts, Sample

W, H = 1024, 512  # overviews 512x256 and 256x128 with 256x256 tiles
FAST = HttpSettings(retries=0)
ISIS_NULL = -3.4028226550889045e38


def mars_radius():
    """MOLA-like radii: the Mars ellipsoid at each latitude plus -8.2 .. +21.2 km of topography."""
    lat = np.radians(np.linspace(89.9, -89.9, H))[:, None]
    lon = np.radians(np.linspace(-180, 180, W))[None, :]
    a, c = 3396190.0, 3376200.0
    r = a * c / np.sqrt((c * np.cos(lat)) ** 2 + (a * np.sin(lat)) ** 2)
    topo = -8200.0 + 29400.0 * (0.5 + 0.5 * np.sin(3 * lon) * np.cos(2 * lat)) ** 2
    return (r + topo).astype(np.float32)


def small_body_radius(name):
    """Radii of a body's triaxial ellipsoid in each direction (metres), with +-5 % roughness."""
    ra, rb, rc = (1000.0 * v for v in bodies.lookup(name).radii_km)
    lat = np.radians(np.linspace(89.9, -89.9, H))[:, None]
    lon = np.radians(np.linspace(-180, 180, W))[None, :]
    x, y, z = np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat) * np.ones_like(lon)
    r = 1.0 / np.sqrt((x / ra) ** 2 + (y / rb) ** 2 + (z / rc) ** 2)
    return (r * (1 + 0.05 * np.sin(5 * lon) * np.cos(3 * lat))).astype(np.float32)


def make_dem(path, values, body="Mars", radius=None, nodata=None, resampling="AVERAGE", names=None, overviews=True):
    """A COG written with GDAL: float32, 256x256 tiles, overviews, a geographic CRS on ``body``."""
    mem = gdal.GetDriverByName("MEM").Create("", values.shape[1], values.shape[0], 1, gdal.GDT_Float32)
    mem.SetGeoTransform((-180.0, 360.0 / values.shape[1], 0.0, 90.0, 0.0, -180.0 / values.shape[0]))
    srs = osr.SpatialReference()
    radius = radius if radius is not None else 1000.0 * bodies.lookup(body).radii_km[0]
    geog, datum, sph = names or (f"{body} 2000", f"D_{body}_2000", f"{body}_2000_IAU_IAG")
    srs.SetGeogCS(geog, datum, sph, radius, 0.0)
    mem.SetProjection(srs.ExportToWkt())
    band = mem.GetRasterBand(1)
    if nodata is not None:
        band.SetNoDataValue(nodata)
    band.WriteArray(values)
    if not overviews:  # a plain tiled GeoTIFF
        out = gdal.GetDriverByName("GTiff").CreateCopy(str(path), mem, options=[
            "TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256"])
        assert out is not None and out.GetRasterBand(1).GetOverviewCount() == 0
        return path
    out = gdal.GetDriverByName("COG").CreateCopy(str(path), mem, options=[
        "BLOCKSIZE=256", "COMPRESS=DEFLATE", "OVERVIEWS=IGNORE_EXISTING", f"RESAMPLING={resampling}"])
    assert out is not None and out.GetRasterBand(1).GetOverviewCount() == 2
    out = None
    return path


@pytest.fixture(scope="module")
def www(tmp_path_factory):
    d = tmp_path_factory.mktemp("www")
    mars = mars_radius()
    make_dem(d / "mars.tif", mars)
    make_dem(d / "mars_heights.tif", mars - 3396190.0)
    make_dem(d / "mars_km.tif", mars / 1000.0)
    moon = (1737400.0 + (mars - 3396190.0) * 0.6).astype(np.float32)  # -9 .. +11 km
    make_dem(d / "moon_as_mars.tif", moon)  # Moon radii in a catalog item tagged Mars
    make_dem(d / "mars_moon_crs.tif", mars, body="Moon")  # the CRS names the Moon
    make_dem(d / "mars_moon_axis.tif", mars, radius=1737400.0, names=("unknown", "unknown", "unnamed"))
    make_dem(d / "phobos.tif", small_body_radius("Phobos"), body="Phobos", radius=11080.0)
    make_dem(d / "itokawa.tif", small_body_radius("Itokawa"), body="Itokawa", radius=162.0)
    sparse = np.full((H, W), ISIS_NULL, dtype=np.float32)
    rows, cols = np.arange(40, H, 101), np.arange(30, W, 197)
    sparse[np.ix_(rows, cols)] = mars[np.ix_(rows, cols)]  # 30 valid pixels out of 524,288
    make_dem(d / "sparse.tif", sparse, nodata=ISIS_NULL)
    make_dem(d / "sparse_nearest.tif", sparse, nodata=ISIS_NULL, resampling="NEAREST")
    make_dem(d / "sparse_no_overviews.tif", sparse, nodata=ISIS_NULL, overviews=False)
    heights_sparse = np.where(sparse == ISIS_NULL, ISIS_NULL, sparse - 3396190.0).astype(np.float32)
    make_dem(d / "sparse_heights.tif", heights_sparse, nodata=ISIS_NULL)
    make_dem(d / "bennu_heights.tif", (mars - 3396190.0) / 1000.0, body="Bennu", radius=245.0)  # no PCK radii
    make_dem(d / "empty.tif", np.full((H, W), ISIS_NULL, dtype=np.float32), nodata=ISIS_NULL)
    return d


@pytest.fixture
def files(www):
    with RangeServer(www) as srv:
        gdal.VSICurlClearCache()
        yield srv


def check(files, name, target="Mars", **kw):
    """Resolve a user model served over /vsicurl/; returns the error message or None."""
    kw.setdefault("cache", "no")
    r = Resolver(http=FAST, **kw)
    try:
        r.resolve(target=target, shape="user", model="/vsicurl/" + files.url(name))
    except errors.ModelError as exc:
        return str(exc)
    return None


# ------------------------------------------------------------ the cases of the issue


def test_mars_radius_dem_passes_for_mars(files):
    assert check(files, "mars.tif") is None


def test_heights_fail_with_the_heights_message(files):
    msg = check(files, "mars_heights.tif")
    assert "failed the values check for Mars" in msg and "look like heights above a datum" in msg
    assert "ISIS needs radii in metres" in msg and "3396190/3396190/3376200 m" in msg
    assert "\n" not in msg


def test_moon_radii_fail_for_mars_and_name_the_moon(files):
    msg = check(files, "moon_as_mars.tif")
    assert "values look like radii of Moon, not Mars" in msg


def test_kilometre_dem(files):
    msg = check(files, "mars_km.tif")
    assert "values look like kilometres" in msg and "multiply by 1000" in msg


def test_crs_naming_the_moon_fails_for_mars(files):
    msg = check(files, "mars_moon_crs.tif")
    assert "failed the CRS check for Mars" in msg and "names Moon" in msg and "D_Moon_2000" in msg


def test_crs_semi_major_axis_of_another_body(files):
    msg = check(files, "mars_moon_axis.tif")
    assert "semi-major axis is 1737400 m" in msg and "not within 1% of Mars's a = 3396190 m" in msg
    assert "looks like Moon" in msg


@pytest.mark.parametrize("name,target", [("phobos.tif", "Phobos"), ("itokawa.tif", "Itokawa")])
def test_small_irregular_body_passes_with_its_own_radii(files, name, target):
    assert check(files, name, target=target) is None
    assert "CRS check for Mars" in check(files, name, target="Mars")  # its CRS names it


def test_phobos_values_under_a_mars_crs_look_like_phobos():
    phobos = bodies.lookup("Phobos")
    vals = tuple(float(v) for v in small_body_radius("Phobos")[::16, ::16].ravel())
    msg = modelcheck.check_values(Sample(vals, len(vals), "test"), bodies.lookup("Mars"))
    assert "radii of Phobos" in msg or "heights" in msg  # Phobos is < 1/20 of Mars: heights is the likelier mistake
    assert modelcheck.check_values(Sample(vals, len(vals), "test"), phobos) is None


@pytest.mark.parametrize("name", ["sparse.tif", "sparse_nearest.tif", "sparse_no_overviews.tif"])
def test_nodata_except_a_few_valid_pixels(files, name):
    assert check(files, name) is None  # 30 valid pixels of 524,288; NoData ignored
    from shaperesolver.models.raster import open_model, sample_values
    url = "/vsicurl/" + files.url(name)
    gdal.VSICurlClearCache()
    ds = open_model(url)
    before = len(files.requests)
    sample = sample_values(ds, url)
    assert sample.values and all(3351200 < v < 3421190 for v in sample.values)
    if name == "sparse_no_overviews.tif":  # 2 x 2 whole blocks spread over the band
        assert sample.level == "4 blocks of full resolution 1024x512" and 1 <= len(files.requests) - before <= 4


def test_sparse_heights_still_fail_and_all_nodata_fails(files):
    assert "heights" in check(files, "sparse_heights.tif")
    assert "no valid pixel values" in check(files, "empty.tif")


def test_web_fallback_when_the_newest_item_fails_the_check(files, isisdata, tmp_path):
    items = [item("molaMarsPlanetaryRadius0006", ["Mars"], "0006", href=files.url("mars_heights.tif")),
             item("molaMarsPlanetaryRadius0005", ["Mars"], "0005", href=files.url("mars.tif"))]
    with StacServer(items) as srv:
        r = Resolver(url=srv.url, cache_dir=tmp_path / "cache", http=FAST, isisdata=isisdata)
        res = r.resolve(target="Mars")
        assert res.source == "system" and res.shape_model == "$base/dems/molaMarsPlanetaryRadius0004.cub"
        [why] = res.fallback_reasons
        assert why.startswith("web model molaMarsPlanetaryRadius0006 failed verification:")
        assert "values check" in why and "heights" in why
        # cached with the model: a second run neither searches nor touches the DEM, and says the same
        before = len(files.requests)
        res2 = Resolver(url=srv.url, cache_dir=tmp_path / "cache", http=FAST, isisdata=isisdata).resolve(target="MARS")
        assert res2.fallback_reasons == res.fallback_reasons and len(files.requests) == before and len(srv.searches) == 1
        # without a SYSTEM model the chain ends at the ellipsoid
        empty = tmp_path / "empty" / "base" / "dems"
        empty.mkdir(parents=True)
        (empty / "kernels.0001.db").write_text("Object = Dem\nEndObject\n")
        res3 = Resolver(url=srv.url, cache="no", http=FAST, isisdata=tmp_path / "empty").resolve(target="Mars")
        assert res3.source == "ellipsoid" and "heights" in res3.fallback_reasons[0]


def test_request_counts_first_and_cached_check(files, tmp_path):
    url = "/vsicurl/" + files.url("mars.tif")
    items = [item("molaMarsPlanetaryRadius0005", ["Mars"], "0005", href=files.url("mars.tif"))]
    with StacServer(items) as srv:
        r = Resolver(url=srv.url, cache_dir=tmp_path / "c", http=FAST)
        assert r.resolve(target="Mars").shape_model == url
        first = list(files.requests)
        # GDAL's HEAD + 16 KB header (through the relay, one request each); the check adds one
        # read of the smallest overview tile and one full-resolution tile
        assert [q["method"] for q in first] == ["HEAD", "GET", "GET", "GET"], first
        gdal.VSICurlClearCache()
        r2 = Resolver(url=srv.url, cache_dir=tmp_path / "c", http=FAST)
        assert r2.resolve(target="Mars").source == "web"
        assert len(files.requests) == len(first) and r2.requests_sent == 0  # warm cache: nothing at all
        # a stale entry with the same size and Last-Modified: reopen (HEAD + header), no new sampling
        gdal.VSICurlClearCache()
        r3 = Resolver(url=srv.url, cache_dir=tmp_path / "c", cache_ttl=0.0, http=FAST)
        assert r3.resolve(target="Mars").source == "web"
        assert [q["method"] for q in files.requests[len(first):]] == ["HEAD", "GET"]


def test_user_model_failing_is_an_error_for_that_cube_unless_verify_no(files, make_cube, tmp_path):
    cube = make_cube("viking_mars")
    before = cube.read_bytes()
    model = "/vsicurl/" + files.url("mars_heights.tif")
    env = dict(os.environ, SHAPERESOLVER_CACHE_DIR=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "shaperesolver", f"from={cube}", "shape=user", f"model={model}"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1 and "heights" in p.stderr and cube.read_bytes() == before
    p = subprocess.run([*cmd, "verify=no", "--json"], capture_output=True, text=True, env=env, timeout=120)
    rec = json.loads(p.stdout)
    assert p.returncode == 0 and rec["written"] and rec["shape_model"] == model and cube.read_bytes() != before


def test_local_model_is_rechecked_when_its_content_changes(www, tmp_path):
    dem = tmp_path / "mine.tif"
    dem.write_bytes((www / "mars.tif").read_bytes())
    assert Resolver(cache_dir=tmp_path / "c").resolve(target="Mars", shape="user", model=str(dem)).source == "user"
    dem.write_bytes((www / "mars_km.tif").read_bytes())
    with pytest.raises(errors.ModelError, match="kilometres"):
        Resolver(cache_dir=tmp_path / "c").resolve(target="Mars", shape="user", model=str(dem))


def test_body_without_radii_skips_the_values_check_and_says_so(files, caplog):
    assert bodies.lookup("Bennu").radii_km is None
    with caplog.at_level(logging.INFO, logger="shaperesolver"):
        assert check(files, "bennu_heights.tif", target="Bennu") is None  # its CRS names Bennu: that is checked
    assert "names Mars" in check(files, "mars.tif", target="Bennu")
    assert any("no radii for Bennu" in m and "not checked" in m for m in caplog.messages)


# ------------------------------------------------------------ the rules, without GDAL


def test_every_body_has_radii_or_null_and_mars_matches_the_pck():
    table = bodies.all_bodies()
    assert bodies.lookup("Mars").radii_km == (3396.19, 3396.19, 3376.2)
    assert bodies.lookup("Moon").radii_km == (1737.4, 1737.4, 1737.4)
    assert bodies.lookup("Itokawa").radii_km == (0.268, 0.147, 0.104)
    missing = {b.name for b in table if b.radii_km is None}
    assert missing == {"Nix", "Hydra", "Pallas", "Dactyl", "Bennu", "Ryugu", "Didymos", "Dimorphos", "Arrokoth",
                       "Hartley 2"}


def test_margins():
    rng = {n: modelcheck.radius_range(bodies.lookup(n)) for n in ("Mars", "Moon", "Phobos", "Itokawa")}
    assert rng["Mars"] == pytest.approx((3351200.0, 3421190.0))  # 25 km: Hellas -8.2 km, Olympus Mons +21.2 km
    assert rng["Moon"] == pytest.approx((1712400.0, 1762400.0))
    assert rng["Phobos"] == pytest.approx((2600.0, 19500.0))  # half of a = 6.5 km
    assert rng["Itokawa"] == pytest.approx((26.0, 402.0))  # half of a = 134 m; floor c / 4
    assert modelcheck.radius_range(bodies.lookup("Bennu")) is None


def test_crs_rules():
    mars = bodies.lookup("Mars")
    assert modelcheck.check_crs(CrsFacts(3396190.0, ("GCS_Mars_2000", "D_Mars_2000", "Mars_2000_IAU_IAG")), mars) is None
    assert modelcheck.check_crs(CrsFacts(3389500.0, ("Mars (2015) - Sphere",)), mars) is None  # mean-radius sphere
    assert modelcheck.check_crs(CrsFacts(None), mars) is None
    assert "names Moon" in modelcheck.check_crs(CrsFacts(3396190.0, ("Moon_2000",)), mars)
    assert "looks like Earth" in modelcheck.check_crs(CrsFacts(6378137.0, ("WGS 84", "WGS_1984", "WGS 84")), mars)
    ceres = bodies.lookup("Ceres")  # USGS Ceres DEMs use a 470 km sphere, between c and a
    assert modelcheck.check_crs(CrsFacts(470000.0, ("Ceres",)), ceres) is None
