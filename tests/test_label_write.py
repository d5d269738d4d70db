"""Writing ShapeModel: minimal splices, ISIS formatting, byte preservation, refusals."""

import os
import stat
import subprocess
import sys
import textwrap

import cubes
import pvl
import pytest

from shaperesolver import errors
from shaperesolver.cube.label import journal_path, read_label, write_shape_model

URL = "/vsicurl/https://asc-isisdata.s3.us-west-2.amazonaws.com/isis-stac/isis-dtm-collection/molaMarsPlanetaryRadius0005.tiff"
USGS_LINES = [
    "    ShapeModel                = /vsicurl/https://asc-isisdata.s3.us-west-2.am-",
    "                                azonaws.com/isis-stac/isis-dtm-collection/mol-",
    "                                aMarsPlanetaryRadius0005.tiff",
]


def _diff_outside(old: bytes, new: bytes, old_text: str, new_text: str):
    """The label texts differ only by one splice; everything after the text is kept."""
    assert len(old) == len(new)
    tail = max(len(old_text), len(new_text))
    assert old[tail:] == new[tail:]
    return old_text, new_text


def test_insert_after_instrument_addendum_reproduces_usgs_lines(make_cube):
    path = make_cube("viking_mars")
    before = path.read_bytes()
    old = read_label(path)
    out = write_shape_model(path, URL)
    after = path.read_bytes()
    assert out.written and out.previous is None
    new_text = after[: after.index(b"\0")].decode()
    lines = new_text.splitlines()
    i = lines.index(USGS_LINES[0])
    assert lines[i : i + 3] == USGS_LINES
    assert lines[i - 1].startswith("    InstrumentAddendum ")
    # exactly the three lines were added: nothing else moved or changed
    assert new_text == old.text.replace(
        "vikingAddendum003.ti\n", "vikingAddendum003.ti\n" + "\n".join(USGS_LINES) + "\n")
    _diff_outside(before, after, old.text, new_text)
    assert len(after) == len(before) and after[65536:] == before[65536:]
    assert pvl.loads(new_text)["IsisCube"]["Kernels"]["ShapeModel"] == URL
    # the bytes ISIS cares about are intact
    for keep in (b"ProductId       = 0038582", b"SpacecraftClockCount = 1023406812.230",
                 b"1977-07-09T20:05:51.123456", b"# spiceinit wrote this group"):
        assert keep in after


def test_replace_keeps_position_and_removes_elevation_model(make_cube):
    path = make_cube("ctx_mars")
    old = read_label(path)
    out = write_shape_model(path, URL)
    assert out.previous == "$base/dems/molaMarsPlanetaryRadius0004.cub"
    assert out.removed_elevation_model == "$base/dems/molaMarsPlanetaryRadius0001.cub"
    new = read_label(path)
    assert new.shape_model == URL and new.elevation_model is None
    expected = old.text.replace(
        "    ShapeModel                = $base/dems/molaMarsPlanetaryRadius0004.cub\n"
        "    ElevationModel            = $base/dems/molaMarsPlanetaryRadius0001.cub\n",
        "\n".join(USGS_LINES) + "\n")
    assert new.text == expected


def test_replace_a_wrapped_value_including_continuation_lines(make_cube):
    path = make_cube("viking_mars")
    write_shape_model(path, URL)
    out = write_shape_model(path, "$base/dems/molaMarsPlanetaryRadius0004.cub")
    assert out.previous == URL and out.written
    lab = read_label(path)
    assert "azonaws" not in lab.text
    assert "    ShapeModel                = $base/dems/molaMarsPlanetaryRadius0004.cub\n" in lab.text


def test_insert_at_end_of_group_without_addendum(make_cube):
    path = make_cube("galileo_io_detached")
    # remove ShapeModel to force an insert into a group with no InstrumentAddendum
    text = path.read_text().replace("    ShapeModel          = Null\n", "")
    path.write_text(text)
    write_shape_model(path, "$base/dems/io_model.cub")
    new = path.read_text()
    assert new == text.replace(
        "    TargetAttitudeShape = $base/kernels/pck/pck00009.tpc\n",
        "    TargetAttitudeShape = $base/kernels/pck/pck00009.tpc\n"
        "    ShapeModel          = $base/dems/io_model.cub\n")


def test_create_kernels_group(make_cube):
    path = make_cube("lro_moon")
    before = path.read_bytes()
    old = read_label(path).text
    out = write_shape_model(path, "Null")
    assert out.written
    assert out.kernels_text == "  Group = Kernels\n    ShapeModel = Null\n  End_Group\n"
    new = read_label(path).text
    assert new == old.replace("  End_Group\nEnd_Object\n\nObject = Label",
                              "  End_Group\n\n  Group = Kernels\n    ShapeModel = Null\n  End_Group\nEnd_Object\n\nObject = Label", 1)
    assert "1_1514284191.13981" in new and "2009-11-29T14:51:40.000183" in new
    after = path.read_bytes()
    assert len(after) == len(before) and after[65536:] == before[65536:]


def test_quoted_odd_cased_shapemodel_replaced(make_cube):
    path = make_cube("cassini_titan")
    old = read_label(path).text
    out = write_shape_model(path, "$base/dems/titan.cub")
    assert out.previous == "$base/dems/old titan model.cub"
    new = read_label(path).text
    assert new == old.replace('    shapemodel          = "$base/dems/old titan model.cub"\n',
                              "    ShapeModel          = $base/dems/titan.cub\n")


def test_value_with_space_is_quoted(make_cube):
    path = make_cube("galileo_io_detached")
    write_shape_model(path, "/data/dems/io model.cub")
    assert '    ShapeModel          = "/data/dems/io model.cub"\n' in path.read_text()
    assert read_label(path).shape_model == "/data/dems/io model.cub"


def test_same_value_is_not_rewritten(make_cube):
    path = make_cube("galileo_io_detached")
    ino = os.stat(path).st_ino
    out = write_shape_model(path, "Null")
    assert not out.written and out.previous == "Null"
    assert os.stat(path).st_ino == ino  # not even replaced by an identical file


def test_dryrun_writes_nothing(make_cube):
    path = make_cube("viking_mars")
    before = path.read_bytes()
    out = write_shape_model(path, URL, dryrun=True)
    assert not out.written and USGS_LINES[0] in out.kernels_text
    assert path.read_bytes() == before and not journal_path(path).exists()


def test_detached_replace_is_atomic_and_keeps_mode(make_cube):
    path = make_cube("galileo_io_detached")
    os.chmod(path, 0o640)
    ino = os.stat(path).st_ino
    write_shape_model(path, URL)
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_ino != ino
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []
    assert read_label(path).shape_model == URL


@pytest.mark.parametrize("value", ['a"b', "a\nb", "x\x07y", "it's", " lead"])
def test_values_that_would_break_the_label_are_refused(make_cube, value):
    path = make_cube("viking_mars")
    before = path.read_bytes()
    with pytest.raises(errors.InvalidValueError):
        write_shape_model(path, value)
    assert path.read_bytes() == before


def test_label_area_full(tmp_path):
    text = cubes.label_text("viking_mars")
    text = text.replace("Bytes = 65536", f"Bytes = {len(text) + 20}")
    path = cubes.write_attached(tmp_path / "tight.cub", text, label_bytes=len(text) + 20)
    before = path.read_bytes()
    with pytest.raises(errors.LabelFullError) as info:
        write_shape_model(path, URL)
    assert str(info.value).startswith(str(path)) and "label space is full" in str(info.value)
    assert path.read_bytes() == before and not journal_path(path).exists()


def test_exact_fit_is_refused_one_byte_less_is_fine(tmp_path):
    text = cubes.label_text("galileo_io_detached").replace("^Core = galileo_io.cub", "StartByte = 4097")
    text = text.replace("End_Object\nEnd\n", "End_Object\n\nObject = Label\n  Bytes = 4096\nEnd_Object\nEnd\n")
    path = cubes.write_attached(tmp_path / "fit.cub", text, label_bytes=4096)
    new_len = len(write_shape_model(path, "x" * 20, dryrun=True).label.text)
    for size, ok in ((new_len, False), (new_len + 1, True)):
        p = cubes.write_attached(tmp_path / f"fit{size}.cub", text.replace("Bytes = 4096", f"Bytes = {size:<4}"), label_bytes=size)
        if ok:
            assert write_shape_model(p, "x" * 20).written
        else:
            with pytest.raises(errors.LabelFullError):
                write_shape_model(p, "x" * 20)


def test_read_only_file_refused_even_as_root(make_cube):
    path = make_cube("viking_mars")
    before = path.read_bytes()
    os.chmod(path, 0o444)
    with pytest.raises(errors.ReadOnlyCubeError) as info:
        write_shape_model(path, URL)
    assert "read-only" in str(info.value) and str(info.value).startswith(str(path))
    assert path.read_bytes() == before


def test_unwritable_journal_location_is_an_error(make_cube):
    path = make_cube("viking_mars")
    before = path.read_bytes()
    journal_path(path).mkdir()  # something in the way of the journal file
    try:
        with pytest.raises(errors.LabelWriteError) as info:
            write_shape_model(path, URL)
    finally:
        journal_path(path).rmdir()
    assert "journal" in str(info.value)
    assert path.read_bytes() == before


def test_read_only_directory_refused(make_cube, tmp_path):
    path = make_cube("viking_mars")
    before = path.read_bytes()
    os.chmod(tmp_path, 0o555)
    try:
        with pytest.raises(errors.ReadOnlyCubeError):
            write_shape_model(path, URL)
    finally:
        os.chmod(tmp_path, 0o755)
    assert path.read_bytes() == before


@pytest.mark.parametrize("name", ["viking_mars", "ctx_mars", "lro_moon", "cassini_titan", "galileo_io_detached"])
@pytest.mark.parametrize("value", [URL, "Null", "$base/dems/x0001.cub"])
def test_every_statement_other_than_shapemodel_is_unchanged_per_pvl(make_cube, name, value):
    path = make_cube(name)
    old = read_label(path).pvl()
    write_shape_model(path, value)
    new = read_label(path).pvl()
    old_k = old["IsisCube"].get("Kernels") or {}
    new_k = new["IsisCube"]["Kernels"]
    got = new_k["ShapeModel"]
    assert (got is None and value == "Null") or got == value
    for key in old_k.keys():
        if key.lower() not in ("shapemodel", "elevationmodel"):
            assert new_k[key] == old_k[key]
    del new["IsisCube"]["Kernels"]
    if "Kernels" in old["IsisCube"]:
        del old["IsisCube"]["Kernels"]
    assert new == old


def test_concurrent_writers_do_not_interleave(make_cube, tmp_path):
    """Two processes write different values at once; the file ends as exactly one of them."""
    path = make_cube("viking_mars")
    script = textwrap.dedent(f"""
        import sys
        from shaperesolver.cube.label import write_shape_model
        for i in range(40):
            write_shape_model({str(path)!r}, sys.argv[1] + str(i % 7))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, v]) for v in ("$base/dems/a", "/vsicurl/https://example.org/long/" + "b" * 90)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    lab = read_label(path)
    assert lab.shape_model in {f"$base/dems/a{i}" for i in range(7)} | {
        "/vsicurl/https://example.org/long/" + "b" * 90 + str(i) for i in range(7)}
    assert lab.text.count("    ShapeModel ") == 1
    data = path.read_bytes()
    assert set(data[len(lab.text) : 65536]) == {0}
