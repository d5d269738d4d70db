import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import cubes  # noqa: E402


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
