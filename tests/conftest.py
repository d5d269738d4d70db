import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import cubes  # noqa: E402

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover - the test extra installs it
    pass
else:
    # property-based tests (tests/test_stac_fuzz.py): a fixed budget for CI, the same examples
    # on every run (derandomized, no example database), no per-example deadline
    settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True, database=None,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                     HealthCheck.filter_too_much], print_blob=True)
    settings.load_profile("ci")


@pytest.fixture
def make_cube(tmp_path):
    def factory(name, filename=None, **kw):
        return cubes.make(tmp_path, name, filename, **kw)

    return factory


@pytest.fixture
def isisdata(tmp_path):
    """An ISIS data area whose DEM database has a versioned Mars DEM (0004 on disk)."""
    dems = tmp_path / "isisdata" / "base" / "dems"
    dems.mkdir(parents=True)
    (dems / "kernels.0002.db").write_text(
        'Object = Dem\n  Group = Selection\n    Match = ("Instrument","TargetName","Mars")\n'
        '    File = ("base", "dems/molaMarsPlanetaryRadius????.cub")\n  EndGroup\nEndObject\n')
    (dems / "molaMarsPlanetaryRadius0004.cub").write_bytes(b"")
    return tmp_path / "isisdata"


@pytest.fixture
def env(tmp_path):
    """The environment of a console-script run: its own cache, a 5 s deadline, no claim
    wait, and no ISISDATA or STAC URL from the caller (modules that need others define their own)."""
    e = dict(os.environ, SHAPERESOLVER_CACHE_DIR=str(tmp_path / "cache"), SHAPERESOLVER_HTTP_DEADLINE="5",
             SHAPERESOLVER_CLAIM_WAIT="0")
    for k in ("ISISDATA", "SHAPERESOLVER_STAC_URL"):
        e.pop(k, None)
    return e


@pytest.fixture
def user_env(tmp_path):
    """A new user's environment: their own HOME and cache, and nothing of ours (no
    ISISDATA, STAC URL, claim or lock wait from the caller)."""
    e = dict(os.environ, SHAPERESOLVER_CACHE_DIR=str(tmp_path / "cache"), HOME=str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    for k in ("ISISDATA", "SHAPERESOLVER_STAC_URL", "SHAPERESOLVER_CLAIM_WAIT", "SHAPERESOLVER_LOCK_WAIT"):
        e.pop(k, None)
    return e


@pytest.fixture
def cache_dir(tmp_path):
    """Where the test's cache lives (not created: the tool makes it)."""
    return tmp_path / "cache"


@pytest.fixture
def resolver_factory(request, cache_dir):
    """Make Resolvers (closed at the end) with the test module's FAST HTTP settings."""
    from shaperesolver import Resolver

    made = []

    def make(url=None, **kw):
        kw.setdefault("cache_dir", cache_dir)
        kw.setdefault("verify", False)
        if hasattr(request.module, "FAST"):
            kw.setdefault("http", request.module.FAST)
        r = Resolver(url=url, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture(scope="module")
def dask_cluster():
    """A real Dask LocalCluster on 127.0.0.1 (2 worker processes of 2 threads) and a client."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1",
                                  dashboard_address=None, protocol="tcp") as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        yield cluster, client
