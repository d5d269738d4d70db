"""Crash safety: kill -9 the writer between every pair of steps, and mid-write."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from shaperesolver.cube.label import journal_path, read_label, write_shape_model

URL = "/vsicurl/https://asc-isisdata.s3.us-west-2.amazonaws.com/isis-stac/isis-dtm-collection/molaMarsPlanetaryRadius0005.tiff"

WRITER = textwrap.dedent("""
    import os, signal, sys
    from shaperesolver.cube.label import write_shape_model
    path, value, stop, torn = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "torn"

    def hook(step):
        if step != stop:
            return
        if torn:  # a torn write: the first half of what changes reaches the disk
            new = os.environ["NEW_AREA_FILE"]
            data = open(new, "rb").read()
            fd = os.open(path, os.O_RDWR)
            cur = os.pread(fd, len(data), 0)
            first = next(i for i in range(len(data)) if cur[i] != data[i])
            half = first + (len(data) - first) // 2
            os.pwrite(fd, data[first:half], first)
            os.fsync(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    write_shape_model(path, value, _hook=hook)
    sys.exit(3)  # the hook should have killed us
""")


def _run(path, stop, torn=False, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    proc = subprocess.run([sys.executable, "-c", WRITER, str(path), URL, stop, "torn" if torn else "whole"], env=env)
    assert proc.returncode == -signal.SIGKILL


# (step the writer dies after, which label a later open must find)
STEPS = [
    ("journal-open", "old"),      # empty journal file exists
    ("journal-header", "old"),    # journal half written
    ("journal-durable", "old"),   # journal complete, label not touched
    ("label-written", "new"),     # label written, not yet fsynced, journal present: it is whole, keep it
    ("label-durable", "new"),     # label on disk, journal not yet removed: keep it
    ("journal-removed", "new"),   # finished
]


@pytest.mark.parametrize("stop,expect", STEPS)
@pytest.mark.parametrize("opener", ["read", "dryrun", "write"])
def test_kill_between_steps_leaves_old_or_new_label(make_cube, stop, expect, opener):
    path = make_cube("viking_mars")
    old = path.read_bytes()
    new_area = write_shape_model(path, URL, dryrun=True).label.text.encode()
    new = new_area + b"\0" * (65536 - len(new_area)) + old[65536:]
    _run(path, stop)
    if opener == "read":
        read_label(path)
    elif opener == "dryrun":
        write_shape_model(path, "Null", dryrun=True)
    else:
        write_shape_model(path, URL)
        assert path.read_bytes() == new and not journal_path(path).exists()
        return
    assert path.read_bytes() == (old if expect == "old" else new)
    assert not journal_path(path).exists()


def test_torn_label_write_is_rolled_back(make_cube, tmp_path):
    path = make_cube("ctx_mars")
    old = path.read_bytes()
    new_text = write_shape_model(path, URL, dryrun=True).label.text.encode()
    area = tmp_path / "area"
    area.write_bytes(new_text)  # the hook writes half of it: a torn label
    _run(path, "journal-durable", torn=True, env_extra={"NEW_AREA_FILE": str(area)})
    assert path.read_bytes() != old  # the torn write really happened
    assert read_label(path).target == "Mars"
    assert path.read_bytes() == old


@pytest.mark.parametrize("stop", ["temp-durable", "renamed"])
def test_detached_label_is_old_or_new(make_cube, stop):
    path = make_cube("galileo_io_detached")
    old = path.read_bytes()
    _run(path, stop)
    lab = read_label(path)
    if stop == "renamed":
        assert lab.shape_model == URL
    else:
        assert path.read_bytes() == old
