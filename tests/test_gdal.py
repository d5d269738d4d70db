"""GDAL opens real GeoTIFFs over /vsicurl/ from a Range-capable server on loopback."""

import pytest
from osgeo import gdal
from servers import RangeServer, StacServer, item, make_geotiff

from shaperesolver import HttpSettings, Resolver, errors
from shaperesolver.models.raster import VSICURL_OPTIONS, gdal_options, open_model


@pytest.fixture
def tiffs(tmp_path):
    d = tmp_path / "www"
    d.mkdir()
    make_geotiff(d / "mars0005.tiff")
    make_geotiff(d / "threeband.tiff", bands=3)
    make_geotiff(d / "nogeo.tiff", georef=False)
    return d


def test_open_over_vsicurl_costs_two_requests(tiffs):
    with RangeServer(tiffs) as srv:
        gdal.VSICurlClearCache()
        ds = open_model("/vsicurl/" + srv.url("mars0005.tiff"))
        assert ds.RasterCount == 1 and ds.RasterXSize == 32
        assert len(srv.requests) <= 2, srv.requests
        assert ds.GetRasterBand(1).ReadAsArray()[0, 0] == pytest.approx(3396190.0)


def test_user_config_is_restored():
    gdal.SetConfigOption("GDAL_HTTP_TIMEOUT", "77")
    try:
        with gdal_options(VSICURL_OPTIONS):
            assert gdal.GetConfigOption("GDAL_HTTP_TIMEOUT") == VSICURL_OPTIONS["GDAL_HTTP_TIMEOUT"]
            assert gdal.GetConfigOption("GDAL_DISABLE_READDIR_ON_OPEN") == "EMPTY_DIR"
        assert gdal.GetConfigOption("GDAL_HTTP_TIMEOUT") == "77"
        assert gdal.GetConfigOption("GDAL_DISABLE_READDIR_ON_OPEN") is None
    finally:
        gdal.SetConfigOption("GDAL_HTTP_TIMEOUT", None)


@pytest.mark.parametrize("name,words", [("threeband.tiff", "3 bands"), ("nogeo.tiff", "no georeference"),
                                        ("missing.tiff", "GDAL cannot open")])
def test_verification_failures(tiffs, name, words):
    with RangeServer(tiffs) as srv:
        with pytest.raises(errors.ModelError) as info:
            open_model("/vsicurl/" + srv.url(name))
        assert words in str(info.value)


def test_failed_open_is_retried_after_clearing_gdal_cache(tiffs):
    with RangeServer(tiffs) as srv:
        url = "/vsicurl/" + srv.url("late.tiff")
        with pytest.raises(errors.ModelError):
            open_model(url)
        make_geotiff(tiffs / "late.tiff")  # now it exists: GDAL must not answer from its failure cache
        assert open_model(url).RasterCount == 1


def test_web_resolution_verifies_each_model_once(tiffs, tmp_path):
    with RangeServer(tiffs) as files:
        items = [item("mars0005", ["Mars"], "0005", href=files.url("mars0005.tiff")),
                 item("bad0001", ["Moon"], "0001", href=files.url("threeband.tiff"))]
        with StacServer(items) as srv:
            gdal.VSICurlClearCache()
            r = Resolver(url=srv.url, cache="no", verify=True, http=HttpSettings(retries=0),
                         isisdata=_empty_area(tmp_path))
            for t in ("Mars", "MARS", "mars"):
                res = r.resolve(target=t)
                assert res.source == "web" and res.shape_model == "/vsicurl/" + files.url("mars0005.tiff")
            opens = [q for q in files.requests if "mars0005" in q["path"]]
            # GDAL's HEAD + header, each relayed as one request under the API's address rules
            assert [q["method"] for q in opens] == ["HEAD", "GET"]
            moon = r.resolve(target="Moon")
            assert moon.source == "ellipsoid" and "failed verification" in moon.fallback_reasons[0]
            ds = r.open_model(res)
            assert ds.RasterCount == 1


def _empty_area(tmp_path):
    dems = tmp_path / "isisdata" / "base" / "dems"
    dems.mkdir(parents=True)
    (dems / "kernels.0001.db").write_text("Object = Dem\nEndObject\n")
    return tmp_path / "isisdata"
