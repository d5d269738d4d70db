"""Issue 22, item 5: local files a run touches.

``-errlist`` and ``-log`` delete or replace only regular files: a character device
(``/dev/null``, made here with ``mknod`` in a temporary directory) is a sink, never
unlinked; a FIFO, socket or link is refused with one line and left where it is.  The
DSK reader's child process runs isolated (``python -I``) from a directory the user
owns, so a ``json.py`` another user left in the working directory never runs.
"""

import os
import socket
import stat
import sys
from pathlib import Path

import pytest
from test_isiscli import env, run  # noqa: F401  (the console-script fixture and runner)

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="mknod of a character device needs root")


def _null_device(path: Path) -> Path:
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
    return path


def _batch(make_cube, tmp_path):
    good = make_cube("lro_moon", "moon.cub")
    lst = tmp_path / "rows.lis"
    lst.write_text(f"{good}\n{tmp_path / 'missing.cub'}\n")
    return good, lst


@needs_root
@pytest.mark.parametrize("door", ["batchlist", "fromlist"])
def test_errlist_on_a_character_device_is_a_sink_never_unlinked(make_cube, env, tmp_path, door):  # noqa: F811
    _, lst = _batch(make_cube, tmp_path)
    dev = _null_device(tmp_path / "null")
    args = [f"-batchlist={lst}", "from=$1", "-onerror=continue"] if door == "batchlist" else [f"fromlist={lst}"]
    p = run(*args, "shape=ellipsoid", f"-errlist={dev}", env=env)
    assert p.returncode == 1, p.stderr  # one cube is missing
    st = os.lstat(dev)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3), "the device node was replaced"
    assert "Traceback" not in p.stderr


@needs_root
def test_log_on_a_character_device_is_a_sink(make_cube, env, tmp_path):  # noqa: F811
    good = make_cube("lro_moon", "moon.cub")
    dev = _null_device(tmp_path / "null")
    p = run(f"from={good}", "shape=ellipsoid", f"-log={dev}", env=env)
    assert p.returncode == 0, p.stderr
    assert stat.S_ISCHR(os.lstat(dev).st_mode)


@pytest.mark.parametrize("kind", ["fifo", "socket", "symlink"])
def test_errlist_that_is_not_a_regular_file_is_refused_in_one_line_and_kept(make_cube, env, tmp_path, kind):  # noqa: F811
    good, lst = _batch(make_cube, tmp_path)
    before = good.read_bytes()
    where = tmp_path / "err.lis"
    sock = None
    if kind == "fifo":
        os.mkfifo(where)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(where))
    else:
        (tmp_path / "target.txt").write_text("precious\n")
        where.symlink_to(tmp_path / "target.txt")
    try:
        mode = os.lstat(where).st_mode
        p = run(f"fromlist={lst}", "shape=ellipsoid", f"-errlist={where}", env=env)
        assert p.returncode == 2, p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and str(where) in lines[0] and "regular file" in lines[0], p.stderr
        assert os.lstat(where).st_mode == mode, "the file was replaced"
        assert good.read_bytes() == before, "a refused run wrote a cube"
        if kind == "symlink":
            assert (tmp_path / "target.txt").read_text() == "precious\n"
    finally:
        if sock is not None:
            sock.close()


def test_a_regular_errlist_is_still_deleted_at_start(make_cube, env, tmp_path):  # noqa: F811
    good = make_cube("lro_moon", "moon.cub")
    lst = tmp_path / "ok.lis"
    lst.write_text(f"{good}\n")
    err = tmp_path / "err.lis"
    err.write_text("stale\n")
    p = run(f"fromlist={lst}", "shape=ellipsoid", f"-errlist={err}", env=env)
    assert p.returncode == 0, p.stderr
    assert not err.exists()


def test_dsk_reader_child_ignores_modules_planted_in_the_working_directory(tmp_path):
    pytest.importorskip("spiceypy")
    from shaperesolver.models import dsk

    planted = tmp_path / "shared"
    planted.mkdir()
    marker = tmp_path / "ran"
    for name in ("json.py", "spiceypy.py", "sitecustomize.py"):
        (planted / name).write_text(f"open({str(marker)!r}, 'a').write({name!r} + '\\n')\n")
    not_a_dsk = tmp_path / "x.bds"
    not_a_dsk.write_bytes(b"DAS/DSK " + b"\0" * 2000)
    old = os.getcwd()
    os.chdir(planted)
    saved = list(sys.path)
    try:
        sys.path.insert(0, "")  # as `python -c` or an interactive session has it
        with pytest.raises(Exception):  # noqa: B017  (CSPICE refuses the file; which error is not the point)
            dsk._centers(str(not_a_dsk), "x.bds")
    finally:
        sys.path[:] = saved
        os.chdir(old)
    assert not marker.exists(), f"planted module ran: {marker.read_text()}"


@needs_root
@pytest.mark.parametrize("option", ["-errlist", "-log"])
def test_another_users_file_in_a_shared_directory_is_not_replaced_or_written_as_root(make_cube, env, tmp_path, option):  # noqa: F811
    """Attack round: root passes the sticky bit of /tmp, so a neighbour's -errlist was deleted
    and replaced, and a neighbour's -log (seeded with its own text) was appended to."""
    good, lst = _batch(make_cube, tmp_path)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o1777)
    shared.chmod(0o1777)
    theirs = shared / "theirs.txt"
    theirs.write_text("the neighbour's own text\n")
    os.chown(theirs, 65534, 65534)
    p = run(f"fromlist={lst}", "shape=ellipsoid", f"{option}={theirs}", env=env)
    assert p.returncode in (1, 2), p.stderr
    assert "belongs to uid 65534" in p.stderr and "Traceback" not in p.stderr, p.stderr
    st = os.lstat(theirs)
    assert st.st_uid == 65534 and theirs.read_text() == "the neighbour's own text\n"


def test_a_stopped_batch_names_its_errlist_only_when_the_rows_are_in_it(make_cube, env, tmp_path):  # noqa: F811
    """Attack round: with -errlist=/dev/full the summary said '... listed in /dev/full'."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    _, lst = _batch(make_cube, tmp_path)
    lst.write_text(f"{tmp_path / 'missing.cub'}\n{lst}\n")
    p = run(f"-batchlist={lst}", "from=$1", "shape=ellipsoid", "-errlist=/dev/full", env=env)
    assert p.returncode == 1, p.stderr
    assert "-errlist=/dev/full" in p.stderr and "listed in /dev/full" not in p.stderr, p.stderr
