"""The label write path under attack: layouts, planted journals, full disks, links, races.

Each test reproduces one defect of issue 7 for real (tmpfs, a second uid, FIFOs, links,
kill -9, a slow loopback server) and checks the cube ends with exactly its old bytes or
exactly its new label.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import cubes
import pvl
import pytest
from peak import PEAK_KIB
from servers import StacServer, item

from shaperesolver import Resolver, errors
from shaperesolver.cube import txn
from shaperesolver.cube.label import journal_path, read_label, write_shape_model

URL = "/vsicurl/https://asc-isisdata.s3.us-west-2.amazonaws.com/isis-stac/isis-dtm-collection/molaMarsPlanetaryRadius0005.tiff"
NOBODY = 65534
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (mount, setuid, chown)")


def _detached_with_label_bytes(tmp_path, name="r0200357.lbl"):
    """A detached label as ISIS writes it: ^Core and Object = Label / Bytes both present."""
    text = cubes.label_text("galileo_io_detached").replace(
        "End_Object\nEnd\n", "End_Object\n\nObject = Label\n  Bytes = 65536\nEnd_Object\nEnd\n")
    assert "^Core" in text and "Bytes = 65536" in text
    return cubes.write_detached(tmp_path / name, text, "galileo_io.cub")


def _as_user(uid, fn):
    """Run ``fn`` in a forked child as ``uid``; return its exit code."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(uid)
            os.setuid(uid)
            fn()
            os._exit(0)
        except BaseException:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@contextmanager
def tmpfs(tmp_path, size="1m"):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt):
    """Fill the file system to the brim (unbuffered, so nothing is pending at close)."""
    for name, chunk in (("filler", 65536), ("filler2", 4096), ("filler3", 512), ("filler4", 1)):
        fd = os.open(mnt / name, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while True:
                os.write(fd, b"x" * chunk)
        except OSError:
            pass
        finally:
            os.close(fd)


# ---------------------------------------------------------------- 1. detached layout


def test_detached_label_with_label_bytes_stays_plain_text(tmp_path):
    path = _detached_with_label_bytes(tmp_path)
    before = path.read_bytes()
    lab = read_label(path)
    assert not lab.attached and lab.label_bytes == 65536
    out = write_shape_model(path, URL)
    after = path.read_bytes()
    assert out.written and b"\0" not in after
    assert after == out.label.text.encode()  # exactly the new text
    assert abs(len(after) - len(before)) < 300
    assert pvl.loads(after.decode())["IsisCube"]["Kernels"]["ShapeModel"] == URL


# ---------------------------------------------------------------- 2. layout cross-check


def _attached(tmp_path, name, edit, label_bytes=65536):
    text = edit(cubes.label_text("viking_mars"))
    return cubes.write_attached(tmp_path / name, text, label_bytes=label_bytes)


LAYOUTS = {
    "no_label_bytes": (lambda t: t.replace("Object = Label\n  Bytes = 65536\nEnd_Object\n", ""), "without Label > Bytes"),
    "bytes_past_core": (lambda t: t.replace("Bytes = 65536", "Bytes = 70000"), "overlaps the data"),
    "huge_bytes": (lambda t: t.replace("Bytes = 65536", "Bytes = 1099511627776"), "beyond the end of the file"),
    "history_in_label": (lambda t: t.replace("StartByte = 81921", "StartByte = 30000"), "overlaps the data"),
    "core_in_label": (lambda t: t.replace("StartByte   = 65537", "StartByte   = 1025"), "overlaps the data"),
}


@pytest.mark.parametrize("case", sorted(LAYOUTS))
@pytest.mark.parametrize("dryrun", [True, False])
def test_bad_layout_is_refused_and_nothing_changes(tmp_path, case, dryrun):
    edit, words = LAYOUTS[case]
    assert edit(cubes.label_text("viking_mars")) != cubes.label_text("viking_mars")
    path = _attached(tmp_path, "x.cub", edit)
    before = path.read_bytes()
    assert read_label(path).target == "MARS"  # reading still works
    with pytest.raises(errors.LabelWriteError) as info:
        write_shape_model(path, URL, dryrun=dryrun)
    msg = str(info.value)
    assert words in msg and msg.startswith(str(path)) and "\n" not in msg and len(msg) < 250
    assert path.read_bytes() == before and not journal_path(path).exists()


# ---------------------------------------------------------------- 3. journals


def _planted_journal(path, new_area_text):
    """A well-formed journal for ``path`` as a hostile user can build one."""
    st = os.stat(path)
    old = path.read_bytes()[: len(new_area_text)]
    new = new_area_text.encode().ljust(len(old), b"\0")[: len(old)]
    return txn._encode(st, old, new)


@pytest.fixture
def shared_dir():
    """A world-writable sticky directory (a group project dir, /tmp) another uid can reach."""
    base = Path(tempfile.mkdtemp(prefix="shaperesolver-shared-", dir="/tmp"))
    base.chmod(0o755)
    shared = base / "group"
    shared.mkdir()
    shared.chmod(0o1777)
    yield shared
    shutil.rmtree(base, ignore_errors=True)


@needs_root
@pytest.mark.parametrize("opener", ["read", "dryrun", "write"])
def test_journal_planted_by_another_user_is_never_applied(shared_dir, opener):
    shared = shared_dir
    path = cubes.make(shared, "viking_mars")
    before = path.read_bytes()
    jp = journal_path(path)
    blob = _planted_journal(path, "Object = IsisCube\n  PWNED = 1\nEnd_Object\nEnd\n" + "X" * 3000)

    def plant():
        jp.write_bytes(blob)

    assert _as_user(NOBODY, plant) == 0 and jp.stat().st_uid == NOBODY
    with pytest.raises(errors.JournalError) as info:
        if opener == "read":
            read_label(path)
        else:
            write_shape_model(path, "Null", dryrun=opener == "dryrun")
    msg = str(info.value)
    assert jp.name in msg and "not changed" in msg and "\n" not in msg
    assert path.read_bytes() == before and jp.read_bytes() == blob


WRITER = textwrap.dedent("""
    import os, signal, sys
    from shaperesolver.cube.label import write_shape_model
    path, value, stop = sys.argv[1], sys.argv[2], sys.argv[3]
    def hook(step):
        if step == stop:
            os.kill(os.getpid(), signal.SIGKILL)
    write_shape_model(path, value, _hook=hook)
    sys.exit(3)
""")


def _killed_write(path, value, stop):
    proc = subprocess.run([sys.executable, "-c", WRITER, str(path), value, stop])
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("how", ["rename", "copy_over"])
def test_stale_journal_is_not_applied_to_a_replacement_cube(tmp_path, how):
    path = cubes.make(tmp_path, "viking_mars")
    _killed_write(path, URL, "journal-durable")
    jp = journal_path(path)
    assert jp.exists()
    # the user replaces the cube with another cube of the same name
    other = cubes.make(tmp_path, "ctx_mars", "other.cub")
    if how == "rename":  # a new file (inode) at the same name: the journal is not its
        os.replace(other, path)
        before = path.read_bytes()
        assert read_label(path).target == "Mars"
    else:  # cp over it: the same inode, other bytes: the journal matches neither
        shutil.copyfile(other, path)
        before = path.read_bytes()
        with pytest.raises(errors.JournalError) as info:
            read_label(path)
        assert "does not match" in str(info.value) and jp.name in str(info.value)
    assert path.read_bytes() == before and jp.exists()


@pytest.mark.parametrize("via", ["linked_dir", "linked_file"])
def test_a_crash_through_a_link_leaves_the_journal_beside_the_real_file(tmp_path, via):
    """The journal's place comes from the file the writer opened (/proc/self/fd), not
    from resolving the name again: beside the real cube, where a reader by any name finds it."""
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    real = cubes.make(real_dir, "viking_mars")
    old = real.read_bytes()
    if via == "linked_dir":
        (tmp_path / "view").symlink_to("real")
        name = tmp_path / "view" / real.name
    else:
        name = tmp_path / "link.cub"
        name.symlink_to(real)
    _killed_write(name, URL, "journal-durable")  # (the label untouched, the journal whole)
    journals = sorted(p.name for p in tmp_path.rglob(".shaperesolver-*"))
    assert [p.parent for p in tmp_path.rglob(".shaperesolver-*")] == [real_dir] and len(journals) == 1
    assert journal_path(name) == journal_path(real) == real_dir / journals[0]
    assert read_label(name).shape_model is None and real.read_bytes() == old  # (rolled back: old)
    write_shape_model(real, URL)
    assert read_label(name).shape_model == URL and not list(tmp_path.rglob(".shaperesolver-*"))


def test_hard_links_a_crash_via_one_name_never_undoes_a_later_write_via_another(tmp_path):
    a = cubes.make(tmp_path, "viking_mars", "a.cub")
    b = tmp_path / "b.cub"
    os.link(a, b)
    _killed_write(a, URL, "label-written")  # journal for a.cub left behind
    assert journal_path(a).exists()
    write_shape_model(b, "$base/dems/newer.cub")  # a later, successful write via b.cub
    after_b = b.read_bytes()
    try:
        lab = read_label(a)
    except errors.JournalError as exc:
        assert journal_path(a).name in str(exc)
    else:
        assert lab.shape_model == "$base/dems/newer.cub"
    assert a.read_bytes() == after_b  # the newer write stands


@pytest.mark.parametrize("kind", ["symlink_dev_zero", "fifo", "directory", "garbage"])
def test_hostile_journal_files_are_refused_at_once(tmp_path, kind):
    path = cubes.make(tmp_path, "viking_mars")
    before = path.read_bytes()
    jp = journal_path(path)
    if kind == "symlink_dev_zero":
        jp.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(jp)
    elif kind == "directory":
        jp.mkdir()
    else:
        jp.write_bytes(b"not a journal at all\n" * 10)
    t0 = time.monotonic()
    for call in (lambda: read_label(path), lambda: write_shape_model(path, URL, dryrun=True),
                 lambda: write_shape_model(path, URL)):
        with pytest.raises(errors.JournalError) as info:
            call()
        assert jp.name in str(info.value) and "\n" not in str(info.value)
    assert time.monotonic() - t0 < 10  # a hang would block forever
    assert path.read_bytes() == before and os.path.lexists(jp)


def test_journal_of_a_finished_write_rolls_forward(tmp_path):
    path = cubes.make(tmp_path, "viking_mars")
    _killed_write(path, URL, "label-durable")
    assert journal_path(path).exists()
    assert read_label(path).shape_model == URL
    assert not journal_path(path).exists()


# ---------------------------------------------------------------- 4. full disks


@needs_root
def test_full_disk_journal_cannot_be_written_cube_untouched(tmp_path):
    with tmpfs(tmp_path) as mnt:
        path = cubes.make(mnt, "viking_mars")
        before = path.read_bytes()
        _fill(mnt)
        with pytest.raises(errors.LabelWriteError) as info:
            write_shape_model(path, URL)
        assert "no space" in str(info.value) and "not modified" in str(info.value)
        assert path.read_bytes() == before and not journal_path(path).exists()
        assert read_label(path).shape_model is None


@needs_root
def test_sparse_label_area_on_a_full_disk_is_refused_before_any_byte_changes(tmp_path):
    with tmpfs(tmp_path) as mnt:
        text = cubes.label_text("viking_mars")
        pad = 4096 - 40 - len(text)  # the label text ends just before a page boundary
        text = text.replace("  Group = Archive\n", "  # " + "p" * (pad - 5) + "\n  Group = Archive\n")
        raw = text.encode()
        assert 4000 < len(raw) < 4096
        path = mnt / "sparse.cub"
        with open(path, "wb") as f:  # label, then a hole up to the pixels: what cp --sparse makes
            f.write(raw)
            f.seek(65536)
            f.write(cubes.payload(18432))
        before = path.read_bytes()
        assert os.stat(path).st_blocks * 512 < 65536  # really sparse
        _fill(mnt)
        with pytest.raises(errors.LabelWriteError) as info:
            write_shape_model(path, URL)
        assert "no space" in str(info.value)
        assert path.read_bytes() == before and not journal_path(path).exists()


# ---------------------------------------------------------------- 5, 6. hostile text, FIFOs

READER = textwrap.dedent("""
    import sys
    from shaperesolver import errors
    from shaperesolver.cube.label import read_label
    try:
        read_label(sys.argv[1])
        print("ok")
    except errors.ShapeResolverError as exc:
        print("error:", exc)
    print(PEAK_KIB)
""").replace("PEAK_KIB", PEAK_KIB)


def _many_comments():
    return ("PDS_VERSION_ID = PDS3\r\n" + "/* a PDS3 comment line */\r\n" * 20 + "RECORD_TYPE = FIXED_LENGTH\r\n")


HOSTILE = {
    "newlines": lambda: "\n" * 4000 + "x",
    "comment_lines": _many_comments,
    "odd_line_1_6_mb": lambda: cubes.label_text("viking_mars").replace(
        "  Group = Archive\n", "  Group = Archive\n" + "    Filler = 1\n" * 110_000 + "    odd line here ;\n"),
    "deep_20000": lambda: "Object = IsisCube\n" + "Object = A\n" * 20_000 + "End_Object\n" * 20_001 + "End\n",
    "many_slash_star": lambda: "Object = IsisCube\n" + "/*" * 200_000 + "\nEnd_Object\nEnd\n",
    "unterminated_quote": lambda: "Object = IsisCube\n  A = \"" + "x" * 7_000_000,
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_text_gets_an_answer_fast_in_bounded_memory(tmp_path, case):
    path = tmp_path / "hostile.cub"
    path.write_bytes(HOSTILE[case]().encode())
    proc = subprocess.run([sys.executable, "-c", READER, str(path)], capture_output=True, text=True, timeout=60)
    out = proc.stdout.splitlines()
    assert proc.returncode == 0 and out, proc.stderr
    assert out[0] == "ok" or (out[0].startswith("error: " + str(path)) and len(out[0]) < 260), out[0]
    assert int(out[1]) < 400_000  # KiB of peak memory: no blow-up


def test_the_memory_bound_measures_the_reader_not_the_process_that_started_it():
    """CI failed the bound above at 401,252 KiB for every case: ru_maxrss in a child of a big
    pytest keeps the parent's high-water mark across fork + exec. The reader's own peak is used."""
    parent = textwrap.dedent("""
        import resource, subprocess, sys
        ballast = bytearray(300 * 2**20)
        ballast[::4096] = b"x" * len(ballast[::4096])
        child = "import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, PEAK_KIB)"
        print(subprocess.run([sys.executable, "-c", child], capture_output=True, text=True).stdout)
    """).replace("PEAK_KIB", PEAK_KIB)
    out = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, timeout=60)
    maxrss, own = map(int, out.stdout.split())
    assert maxrss > 300_000, "the trap this guards against is gone; ru_maxrss would do"
    assert own < 100_000


def test_fifo_as_a_cube_is_refused_at_once(tmp_path):
    fifo = tmp_path / "x.cub"
    os.mkfifo(fifo)
    for call in (lambda: read_label(fifo), lambda: write_shape_model(fifo, "Null"),
                 lambda: write_shape_model(fifo, "Null", dryrun=True)):
        t = threading.Thread(target=lambda: pytest.raises(errors.NotACubeError, call), daemon=True)
        t.start()
        t.join(10)
        assert not t.is_alive(), "hung on a FIFO"
    with pytest.raises(errors.NotACubeError, match="FIFO"):
        read_label(fifo)


# ---------------------------------------------------------------- 7. swapped during the search


def test_cube_swapped_during_a_slow_search_is_not_written(tmp_path):
    path = cubes.make(tmp_path, "viking_mars", "x.cub")
    moon = cubes.make(tmp_path, "lro_moon", "moon.cub")
    moon_before = moon.read_bytes()
    mars = [item("molaMarsPlanetaryRadius0005", ["Mars"], "0005")]
    with StacServer(mars) as srv:
        status, answer = srv.search({"collections": ["isis-global-dtms"], "query": {"ssys:targets": {"in": ["Mars", "MARS"]}}})
        srv.fault(status, answer, delay=2.0)  # a slow answer
        env = dict(os.environ, SHAPERESOLVER_CACHE_DIR=str(tmp_path / "cache"))

        def swap():
            time.sleep(0.8)
            os.replace(moon, path)  # the Moon cube now sits at x.cub

        threading.Thread(target=swap).start()
        proc = subprocess.run([sys.executable, "-m", "shaperesolver", f"from={path}", f"url={srv.url}", "verify=no",
                               "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1, proc.stderr
    [rec] = [json.loads(line) for line in proc.stdout.splitlines()]
    assert rec["written"] is False and "changed since it was resolved" in rec["error"]
    assert path.read_bytes() == moon_before  # the Moon cube did not get the Mars DEM
    assert "Traceback" not in proc.stderr


def test_resolver_write_rechecks_the_target(tmp_path):
    path = cubes.make(tmp_path, "viking_mars", "x.cub")
    with Resolver(cache="no") as r:
        res = r.resolve(path, shape="ellipsoid")
        os.replace(cubes.make(tmp_path, "lro_moon", "m.cub"), path)
        before = path.read_bytes()
        with pytest.raises(errors.CubeChangedError):
            r.write(res)
    assert path.read_bytes() == before


# ---------------------------------------------------------------- 8. links and ownership


def test_detached_symlink_is_written_through(tmp_path):
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    real = cubes.make(real_dir, "galileo_io_detached")
    link = tmp_path / "io.lbl"
    link.symlink_to(os.path.relpath(real, tmp_path))
    write_shape_model(link, URL)
    assert link.is_symlink() and read_label(real).shape_model == URL
    assert (real.parent / "galileo_io.cub").exists()  # the relative ^Core still resolves
    assert [p.name for p in real_dir.iterdir() if p.name.startswith(".")] == []


@needs_root
def test_detached_write_as_root_keeps_owner_group_and_mode(tmp_path):
    path = cubes.make(tmp_path, "galileo_io_detached")
    os.chown(path, NOBODY, NOBODY)
    os.chmod(path, 0o664)
    write_shape_model(path, URL)
    st = os.stat(path)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (NOBODY, NOBODY, 0o664)


def test_hard_linked_detached_label_is_not_split(tmp_path):
    path = cubes.make(tmp_path, "galileo_io_detached")
    other = tmp_path / "same.lbl"
    os.link(path, other)
    before = path.read_bytes()
    with pytest.raises(errors.LabelWriteError, match="hard links"):
        write_shape_model(path, URL)
    assert os.path.samefile(path, other) and path.read_bytes() == before


def test_killed_detached_write_leaves_no_temporary_files_behind(tmp_path):
    path = cubes.make(tmp_path, "galileo_io_detached")
    for _ in range(3):
        _killed_write(path, URL, "temp-durable")
    assert txn.temp_path(path).exists()
    write_shape_model(path, URL)
    assert read_label(path).shape_model == URL
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ---------------------------------------------------------------- 9. labels ISIS reads

OLD_COMMENTS = """\
  Group = Radiometry
    CalibrationKernel = /usgs/cpkgs/isis3/data/mgs/calibration/moccal.ker.001
    CoefficientFile   = $MGS/calibration/mocRedWA.coef

    /* Radiometric equation in moccal
    /* r = (pixel - z + off) / a - g / ex - dc
    a                 = 16.03
    off               = 25.0

    /* Reflectance = r * iof, where iof = (s * s) / w0
    w0                = 3.991
  End_Group
"""


def test_old_isis_comment_lines_that_do_not_close_are_read_and_written(tmp_path):
    text = cubes.label_text("viking_mars").replace("  Group = Archive\n", OLD_COMMENTS + "\n  Group = Archive\n")
    path = cubes.write_attached(tmp_path / "old.cub", text)
    lab = read_label(path)
    assert lab.target == "MARS"
    assert lab.scan.find(("IsisCube", "Radiometry"), "w0").value == "3.991"
    write_shape_model(path, URL)
    new = read_label(path)
    assert new.shape_model == URL and OLD_COMMENTS in new.text


def test_errors_are_one_short_line(tmp_path):
    text = cubes.label_text("viking_mars").replace("  Group = Archive\n", "  Group = Archive\n" + "    ( ) = x\n" * 50)
    path = cubes.write_attached(tmp_path / "bad.cub", text)
    with pytest.raises(errors.LabelSyntaxError) as info:
        read_label(path)
    msg = str(info.value)
    assert "\n" not in msg and len(msg) <= 200 + len(str(path))


# ---------------------------------------------------------------- 10. values that read back

READ_BACK = [
    "/vsicurl/https://example.org/a/*b*/dem.tif",
    "/vsicurl/https://example.org/dem.tif#frag",
    "/vsicurl/https://example.org/dem.tif?x=1&y=%20",
    "/data/dems/my dem [v2].tif",
    "/vsicurl/https://example.org/" + "a" * 150 + ".tif",
    "/vsicurl/https://example.org/" + "b" * 150 + ".tif?sig=%2F",
    "/data/dems/" + "word " * 30 + "end.tif",
]


@pytest.mark.parametrize("value", READ_BACK)
def test_odd_values_read_back_exactly_everywhere(tmp_path, value):
    path = cubes.make(tmp_path, "viking_mars")
    dry = write_shape_model(path, value, dryrun=True)
    out = write_shape_model(path, value)
    assert out.written and dry.label.text == out.label.text
    text = path.read_bytes().split(b"\0", 1)[0].decode()
    assert read_label(path).shape_model == value
    assert pvl.loads(text)["IsisCube"]["Kernels"]["ShapeModel"] == value
    from osgeo import gdal

    ds = gdal.Open(str(path))
    if ds is not None:  # the test cube's pixels may not satisfy the driver; the label must
        meta = json.loads(ds.GetMetadata_List("json:ISIS3")[0])
        assert meta["IsisCube"]["Kernels"]["ShapeModel"] == value


@pytest.mark.parametrize("value", ["/data/dems/two  spaces.tif", "/vsicurl/https://例え.jp/dem.tif"])
def test_values_that_cannot_read_back_are_refused_alike_in_dry_and_real_runs(tmp_path, value):
    path = cubes.make(tmp_path, "viking_mars")
    before = path.read_bytes()
    for dry in (True, False):
        with pytest.raises(errors.InvalidValueError) as info:
            write_shape_model(path, value, dryrun=dry)
        assert "\n" not in str(info.value)
    assert path.read_bytes() == before
