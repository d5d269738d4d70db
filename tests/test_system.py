"""SHAPE=SYSTEM: real ISIS-style data areas built in temp dirs."""

import pytest

from shaperesolver import Resolver, errors
from shaperesolver.models.kerneldb import find_system_model, highest_version
from shaperesolver.policy.resolver import ResolutionError

MARS = {("INSTRUMENT", "TARGETNAME"): "MARS"}


def area(tmp_path, files):
    root = tmp_path / "isisdata"
    dems = root / "base" / "dems"
    dems.mkdir(parents=True)
    for name, text in files.items():
        (dems / name).write_text(text)
    return root


def sel(target, file, extra=""):
    return f'  Group = Selection\n    Match = ("Instrument","TargetName","{target}")\n    File  = {file}\n{extra}  EndGroup\n'


def db(*selections):
    return "Object = Dem\n" + "".join(selections) + "EndObject\n"


def test_highest_db_version_and_highest_dem_on_disk(tmp_path):
    root = area(tmp_path, {
        "kernels.0001.db": db(sel("Mars", '("base", "dems/old????.cub")')),
        "kernels.0004.db": db(sel("Mars", '("base", "dems/molaMarsPlanetaryRadius????.cub")')),
        "kernels.00x5.db": db(sel("Mars", '("base", "dems/never.cub")')),  # not a number: skipped
        "molaMarsPlanetaryRadius0002.cub": "", "molaMarsPlanetaryRadius0005.cub": "",
        "molaMarsPlanetaryRadius0004.cub": "", "molaMarsPlanetaryRadiusABCD.cub": "",
    })
    m = find_system_model(MARS, root)
    assert m.path == "$base/dems/molaMarsPlanetaryRadius0005.cub"
    assert m.db.endswith("kernels.0004.db")


def test_match_is_case_and_whitespace_insensitive_and_last_match_wins(tmp_path):
    root = area(tmp_path, {"kernels.0001.db": db(
        sel("  mars ", '("base", "dems/first.cub")'),
        "  # Group = Selection\n  #   Match = (\"Instrument\",\"TargetName\",\"Mars\")\n  #   File = (\"base\", \"dems/commented.cub\")\n  # EndGroup\n",
        sel("MARS", '("base", "dems/second.cub")'),
        sel("Moon", '("base", "dems/moon.cub")'),
    ), "first.cub": "", "second.cub": "", "moon.cub": ""})
    assert find_system_model(MARS, root).path == "$base/dems/second.cub"
    assert find_system_model({("INSTRUMENT", "TARGETNAME"): "Mars  "}, root).path == "$base/dems/second.cub"


def test_no_alias_lookup_and_no_match_gives_none(tmp_path):
    root = area(tmp_path, {"kernels.0001.db": db(sel("Mars", '("base", "dems/m.cub")'))})
    assert find_system_model({("INSTRUMENT", "TARGETNAME"): "Mars I"}, root).path is None
    assert find_system_model({}, root).path is None  # a missing keyword never matches


def test_multi_match_selection(tmp_path):
    root = area(tmp_path, {"kernels.0001.db": db(sel(
        "Mars", '("base", "dems/ctx.cub")', '    Match = ("Instrument","InstrumentId","CTX")\n')), "ctx.cub": ""})
    assert find_system_model(MARS, root).path is None
    both = {**MARS, ("INSTRUMENT", "INSTRUMENTID"): "ctx"}
    assert find_system_model(both, root).path == "$base/dems/ctx.cub"


def test_conf_names_the_db_files(tmp_path):
    root = area(tmp_path, {
        "kernels.0002.db": db(sel("Mars", '("base", "dems/from_db.cub")')),
        "special.0003.db": db(sel("Mars", '("base", "dems/from_conf.cub")')),
        "special.0001.db": db(sel("Mars", '("base", "dems/old_conf.cub")')),
        "kernels.0001.conf": 'Object = Instrument\n  Group = Selection\n    File = ("base", "dems/special.????.db")\n  EndGroup\nEndObject\n',
        "from_conf.cub": "", "from_db.cub": "",
    })
    m = find_system_model(MARS, root)
    assert m.path == "$base/dems/from_conf.cub" and m.db.endswith("special.0003.db")


def test_one_value_file_used_as_is(tmp_path):
    mars = tmp_path / "isisdata" / "base" / "dems" / "mars.cub"
    root = area(tmp_path, {"kernels.0001.db": db(sel("Mars", f'"{mars}"')), "mars.cub": ""})
    assert find_system_model(MARS, root).path == str(mars)


def test_missing_and_empty_data_area(tmp_path, monkeypatch):
    monkeypatch.delenv("ISISDATA", raising=False)
    with pytest.raises(errors.DataAreaError) as info:
        find_system_model(MARS)
    assert "ISISDATA" in str(info.value)
    with pytest.raises(errors.DataAreaError) as info:
        find_system_model(MARS, tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)
    empty = area(tmp_path, {})
    with pytest.raises(errors.DataAreaError) as info:
        find_system_model(MARS, empty)
    assert "kernels.????.db" in str(info.value) and str(empty / "base" / "dems") in str(info.value)


def test_isisdata_from_environment_at_call_time(tmp_path, monkeypatch):
    root = area(tmp_path, {"kernels.0001.db": db(sel("Mars", '("base", "dems/m.cub")')), "m.cub": ""})
    monkeypatch.setenv("ISISDATA", str(root))
    assert find_system_model(MARS).path == "$base/dems/m.cub"


def test_malformed_db_names_file_and_line(tmp_path):
    root = area(tmp_path, {"kernels.0001.db": 'Object = Dem\n  Group = Selection\n    Match = ("Instrument", "TargetName"\n    File = )\n  EndGroup\nEndObject\n'})
    with pytest.raises(errors.KernelDbError) as info:
        find_system_model(MARS, root)
    assert "kernels.0001.db" in str(info.value) and "line" in str(info.value)


def test_missing_versioned_dem_falls_back_with_the_reason(tmp_path):
    root = area(tmp_path, {"kernels.0001.db": db(sel("Mars", '("base", "dems/gone????.cub")'))})
    m = find_system_model(MARS, root)
    assert m.path is None and "gone????.cub" in m.reasons[0]


def test_highest_version_handles_several_runs(tmp_path):
    for n in ("a01_0003.x", "a02_0001.x", "a01_0010.x"):
        (tmp_path / n).write_text("")
    assert highest_version(tmp_path / "a??_????.x").name == "a02_0001.x"


def test_system_policy_through_the_resolver(make_cube, tmp_path):
    root = area(tmp_path, {"kernels.0001.db": db(sel("Mars", '("base", "dems/molaMarsPlanetaryRadius????.cub")')),
                           "molaMarsPlanetaryRadius0004.cub": ""})
    r = Resolver(isisdata=root, cache="no")
    res = r.resolve(make_cube("viking_mars"), shape="system")
    assert (res.source, res.shape_model, res.item_id, res.version) == ("system", "$base/dems/molaMarsPlanetaryRadius0004.cub", None, None)
    assert res.db.endswith("kernels.0001.db")
    moon = r.resolve(make_cube("lro_moon"), shape="system")
    assert moon.source == "ellipsoid" and moon.shape_model == "Null" and "no SYSTEM shape model" in moon.fallback_reasons[0]
    with pytest.raises(ResolutionError):
        Resolver(isisdata=tmp_path / "nope", cache="no").resolve(make_cube("viking_mars"), shape="system")


def test_user_shapes(make_cube, tmp_path):
    root = area(tmp_path, {"mine.cub": "x"})
    r = Resolver(isisdata=root, cache="no", verify=False)
    assert r.resolve(target="Mars", shape="user", model="$base/dems/mine.cub").shape_model == "$base/dems/mine.cub"
    local = tmp_path / "local.tif"
    local.write_text("x")
    res = r.resolve(target="Mars", shape="user", model=str(local))
    assert res.source == "user" and res.shape_model == str(local)
    for bad in ("$base/dems/none.cub", str(tmp_path / "none.tif")):
        with pytest.raises(errors.UsageError):
            r.resolve(target="Mars", shape="user", model=bad)
    with pytest.raises(errors.ModelError):
        Resolver(isisdata=root, cache="no", verify=True).resolve(target="Mars", shape="user", model=str(local))
    assert r.resolve(target="Mars", shape="ellipsoid").source == "ellipsoid"
