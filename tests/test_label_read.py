"""Reading labels: the fast reader against pvl, attached and detached, bad input."""

import os

import cubes
import pvl
import pytest

from shaperesolver import errors
from shaperesolver.cube.label import read_label
from shaperesolver.cube.pvlscan import scan

ALL = ["viking_mars", "ctx_mars", "lro_moon", "galileo_io_detached", "cassini_titan"]


def _pvl_str(v):
    if v is None:
        return "Null"
    return str(v)


@pytest.mark.parametrize("name", ALL)
def test_fast_reader_agrees_with_pvl(name):
    text = cubes.label_text(name)
    fast = scan(text)
    full = pvl.loads(text)
    cube = full["IsisCube"]
    assert fast.find(("IsisCube", "Instrument"), "TargetName").value == str(cube["Instrument"]["TargetName"])
    # same aggregates, same keyword names in the same order
    def walk(module, path=()):
        for key, val in module.items():
            if isinstance(val, (pvl.collections.PVLObject, pvl.collections.PVLGroup)):
                yield from walk(val, path + (key,))
            else:
                yield path, key, val
    names = [(p, k) for p, k, _ in walk(full)]
    assert names == [(s.path, s.name) for s in fast.statements]
    # string values decode identically (quotes, continuation lines, comments stripped)
    for (p, k, v), s in zip(walk(full), fast.statements):
        if isinstance(v, str):
            assert s.value == v, (p, k)
        elif isinstance(v, list):
            assert len(s.value) == len(v), (p, k)
    if "Kernels" in cube:
        for key, val in cube["Kernels"].items():
            if isinstance(val, str) or val is None:
                assert fast.find(("IsisCube", "Kernels"), key).value == _pvl_str(val)


def test_dash_continuation_nul_padding_and_odd_casing(tmp_path):
    text = cubes.label_text("viking_mars").replace(
        "    Source                    = ale\n",
        "    Source                    = ale\n"
        "    ShapeModel                = /vsicurl/https://asc-isisdata.s3.us-west-2.am-\n"
        "                                azonaws.com/isis-stac/isis-dtm-collection/mol-\n"
        "                                aMarsPlanetaryRadius0005.tiff\n",
    ).replace("Group = Kernels", "GROUP = Kernels").replace("    TargetName   ", "    targetname   ")
    path = cubes.write_attached(tmp_path / "x.cub", text)
    lab = read_label(path)
    full = pvl.loads(text)
    assert lab.target == "MARS" == full["IsisCube"]["Instrument"]["targetname"]
    assert lab.shape_model == full["IsisCube"]["Kernels"]["ShapeModel"]
    assert lab.shape_model.endswith("molaMarsPlanetaryRadius0005.tiff")


def test_attached_label_properties(make_cube):
    path = make_cube("ctx_mars")
    lab = read_label(path)
    assert lab.attached and lab.label_bytes == 65536
    assert lab.target == "Mars"
    assert lab.shape_model == "$base/dems/molaMarsPlanetaryRadius0004.cub"
    assert lab.elevation_model == "$base/dems/molaMarsPlanetaryRadius0001.cub"
    assert lab.kernels["NaifFrameCode"] == "-74021"
    assert lab.kernels_text.startswith("  Group = Kernels\n") and lab.kernels_text.endswith("  End_Group\n")
    assert lab.text.endswith("End\n")
    assert lab.pvl()["IsisCube"]["Archive"]["ProductId"] == "P02_001916_2221_XI_42N027W"


def test_detached_label(make_cube):
    lab = read_label(make_cube("galileo_io_detached"))
    assert not lab.attached and lab.label_bytes is None
    assert lab.target == "IO" and lab.shape_model == "Null"


def test_mapping_target_does_not_win(make_cube):
    lab = read_label(make_cube("cassini_titan"))
    assert lab.target == "TITAN"
    assert lab.shape_model == "$base/dems/old titan model.cub"


def test_no_kernels_group(make_cube):
    lab = read_label(make_cube("lro_moon"))
    assert lab.kernels is None and lab.shape_model is None and lab.kernels_text is None


def test_reads_only_the_label_area(tmp_path):
    # a 4 GiB sparse cube: reading must not touch the data
    path = cubes.write_attached(tmp_path / "big.cub", cubes.label_text("viking_mars"))
    with open(path, "r+b") as f:
        f.truncate(4 * 2**30)
    lab = read_label(path)
    assert lab.target == "MARS" and lab.file_size == 4 * 2**30


def test_label_larger_than_first_chunk(tmp_path):
    extra = "".join(f"    # filler comment line {i:06d} to make the label long\n" for i in range(3000))
    text = cubes.label_text("viking_mars").replace("  Group = Archive\n", extra + "  Group = Archive\n")
    path = cubes.write_attached(tmp_path / "long.cub", text, label_bytes=len(text) + 1000)
    assert read_label(path).target == "MARS"


def test_text_the_reader_does_not_understand_is_a_one_line_error(tmp_path):
    # two statements on one line: legal for pvl, not what ISIS writes or reads
    text = cubes.label_text("lro_moon").replace("    OrbitNumber  = 2061\n", "    OrbitNumber  = 2061 ; Foo = 1\n")
    path = cubes.write_attached(tmp_path / "odd.cub", text)
    with pytest.raises(errors.LabelSyntaxError) as info:
        read_label(path)
    msg = str(info.value)
    assert msg.startswith(str(path)) and "line 38" in msg and "\n" not in msg and len(msg) < 250


BAD = {
    "missing": (lambda p: None, errors.NotACubeError, "no such file"),
    "directory": (lambda p: p.mkdir(), errors.NotACubeError, "directory"),
    "empty": (lambda p: p.write_bytes(b""), errors.NotACubeError, "empty"),
    "png": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + os.urandom(200)), errors.NotACubeError, "not an ISIS cube"),
    "random": (lambda p: p.write_bytes(bytes(range(1, 256)) * 50), errors.NotACubeError, "not an ISIS cube"),
    "no_end": (lambda p: p.write_bytes(b"Object = IsisCube\n" + b"  # padding\n" * 800_000), errors.LabelSyntaxError, "no End statement within"),
    "truncated": (lambda p: p.write_bytes(cubes.label_text("viking_mars")[:1500].encode()), errors.LabelSyntaxError, "truncated"),
    "no_instrument": (lambda p: cubes.write_attached(p, cubes.label_text("viking_mars").replace("Group = Instrument", "Group = Instrumentx")), errors.MissingTargetError, "no IsisCube > Instrument"),
    "no_target": (lambda p: cubes.write_attached(p, cubes.label_text("viking_mars").replace("    TargetName           = MARS\n", "")), errors.MissingTargetError, "no TargetName"),
    "empty_target": (lambda p: cubes.write_attached(p, cubes.label_text("viking_mars").replace("= MARS", '= ""')), errors.MissingTargetError, "no TargetName"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_error_naming_the_file(tmp_path, case):
    make, exc, words = BAD[case]
    path = tmp_path / "bad.cub"
    make(path)
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(exc) as info:
        read_label(path)
    msg = str(info.value)
    assert msg.startswith(str(path)) and words in msg and "\n" not in msg
    assert isinstance(info.value, errors.ShapeResolverError)
    if before is not None:
        assert path.read_bytes() == before
