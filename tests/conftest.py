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
