"""The public value classes (issue 24's lean start made them slotted records, not
dataclasses): every use a processing chain made of them as dataclasses still works, and
the package's loggers lose no message while the command's handler is being set up."""

from __future__ import annotations

import copy
import dataclasses
import os
import pickle
import subprocess
import sys
import weakref

import cubes
import pytest

from shaperesolver import HttpSettings, Resolution, WriteOutcome, lookup, read_label, write_shape_model


def _values(tmp_path):
    cube = cubes.write_attached(tmp_path / "titan.cub", cubes.label_text("cassini_titan"), data_bytes=256)
    return {
        "Resolution": Resolution("TITAN", "Titan", "Null", "ellipsoid", cube=str(cube), fallback_reasons=("why",)),
        "HttpSettings": HttpSettings(deadline=5, retries=0),
        "Body": lookup("Enceladus"),
        "CubeLabel": read_label(cube),
        "WriteOutcome": write_shape_model(cube, "Null", dryrun=True),
    }


@pytest.mark.parametrize("name", ["Resolution", "HttpSettings", "Body", "CubeLabel", "WriteOutcome"])
def test_a_public_value_is_a_dataclass_to_every_function_of_dataclasses(tmp_path, name):
    value = _values(tmp_path)[name]
    assert value is not None
    cls = type(value)
    assert dataclasses.is_dataclass(value) and dataclasses.is_dataclass(cls)
    names = [f.name for f in dataclasses.fields(value)]
    assert names == [f.name for f in dataclasses.fields(cls)] and names
    first = names[0]
    # replace: a new value with one field changed, the rest kept
    other = dataclasses.replace(value, **{first: getattr(value, first)})
    assert other == value and other is not value
    as_dict = dataclasses.asdict(value)
    assert set(as_dict) == set(names)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, first, None)
    assert pickle.loads(pickle.dumps(value)) == value and copy.deepcopy(value) == value
    assert weakref.ref(value)() is value
    match value:
        case cls(same) if same == getattr(value, first):  # type: ignore[misc]
            pass
        case _:
            pytest.fail("no positional match")


def test_values_compare_hash_and_show_as_dataclasses_did(tmp_path):
    res = _values(tmp_path)["Resolution"]
    assert hash(res) == hash(dataclasses.replace(res))
    assert dataclasses.replace(res, shape_model="RingPlane") != res
    assert repr(res).startswith("Resolution(target='TITAN', body='Titan', shape_model='Null'")
    out = _values(tmp_path)["WriteOutcome"]
    assert "new_text" not in repr(out)  # (repr=False, as before)
    # a field left out of comparison: the label the outcome reads on first use
    assert [f.name for f in dataclasses.fields(out) if not f.compare] == ["_label"]
    assert out.label is not None and out == dataclasses.replace(out, _label=None)


def test_http_settings_keep_their_defaults_on_the_class():
    assert HttpSettings.deadline == HttpSettings().deadline == 120.0
    assert HttpSettings(deadline=HttpSettings.deadline * 2).deadline == 240.0
    assert dataclasses.replace(HttpSettings(), deadline=5).deadline == 5
    assert HttpSettings(retries=0) == HttpSettings(retries=0) != HttpSettings()


def test_the_settings_types_are_importable_where_they_were():
    from shaperesolver.policy.options import CacheMode, Fallback, ResolverOptions, Shape
    from shaperesolver.policy.resolver import ResolverOptions as again
    from shaperesolver.policy.types import Shape as same

    assert Shape is same and ResolverOptions is again and CacheMode and Fallback
    assert isinstance(WriteOutcome.__match_args__, tuple)


RACE = """
import sys, threading, time
from shaperesolver.base import log
shown = []
def setup(logging):
    time.sleep(0.3)  # a slow handler set-up: another thread logs meanwhile
    class Keep(logging.Handler):
        def emit(self, record):
            shown.append(record.getMessage())
    logger = logging.getLogger("shaperesolver")
    logger.handlers[:] = [Keep()]
    logger.setLevel(logging.WARNING)
    logger.propagate = False
log.configure(log.WARNING, setup)
a = threading.Thread(target=log.get("shaperesolver.a").warning, args=("first",))
a.start()
time.sleep(0.05)
log.get("shaperesolver.b").warning("second")  # while the first is still setting up
a.join()
print(sorted(shown))
"""


def test_no_message_is_lost_while_the_commands_handler_is_set_up():
    env = dict(os.environ)
    p = subprocess.run([sys.executable, "-c", RACE], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["['first',", "'second']"], p.stdout


def test_a_data_area_is_spelled_as_a_path_is(tmp_path):
    from shaperesolver.models import kerneldb
    from shaperesolver.models.isisfiles import expand_isis

    area = tmp_path / "isisdata"
    (area / "base").mkdir(parents=True)
    messy = f"{tmp_path}//isisdata/./"
    assert expand_isis("$ISISDATA/base/dems", messy) == f"{area}/base/dems"
    assert kerneldb.data_area(messy) == area  # (a Path, as before)
