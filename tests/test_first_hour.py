"""What a new user touches in the first hour (issue 23): every record told, every output
where it belongs, help that shows the truth, warnings that apply, errors that lead somewhere.

Through the installed console script as a user types it (``from=``, ``fromlist=`` with
``jobs=4``, ``-batchlist``), with Moon, Titan, Io and Saturn's rings cubes; a real Dask
scheduler address with nothing listening, real SIGINT, a pty for the terminal.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cubes
import pvl
import pytest
from servers import StacServer, item

from shaperesolver import read_label, write_shape_model

EXE = shutil.which("shaperesolver", path=os.path.dirname(sys.executable)) or shutil.which("shaperesolver")
ITEMS = [item("moonDem0002", ["Moon"], "0002"), item("titanDem0001", ["Titan"], "0001")]
MOON = "/vsicurl/https://dems.example.org/moonDem0002.tiff"
TITAN = "/vsicurl/https://dems.example.org/titanDem0001.tiff"


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ, SHAPERESOLVER_CACHE_DIR=str(tmp_path / "cache"), HOME=str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    for k in ("ISISDATA", "SHAPERESOLVER_STAC_URL", "SHAPERESOLVER_CLAIM_WAIT", "SHAPERESOLVER_LOCK_WAIT"):
        e.pop(k, None)
    return e


def run(*args, env, timeout=300, **kw):
    assert EXE, "the shaperesolver command is not installed"
    kw.setdefault("capture_output", True)
    return subprocess.run([EXE, *map(str, args)], text=True, env=env, timeout=timeout, **kw)


def jsonl(text):
    return [json.loads(line) for line in text.splitlines()]


def moon_titan(directory: Path, n: int, data_bytes: int = 256) -> list[Path]:
    """``n`` small attached cubes, Moon and Titan in turn (no ShapeModel yet)."""
    directory.mkdir(parents=True, exist_ok=True)
    texts = [cubes.label_text("lro_moon"), cubes.label_text("cassini_titan")]
    return [cubes.write_attached(directory / f"c{i:05d}.cub", texts[i % 2], data_bytes=data_bytes) for i in range(n)]


def write_list(path: Path, names) -> Path:
    path.write_text("".join(f"{n}\n" for n in names))
    return path


def log_groups(path: Path) -> list:
    return pvl.load(str(path)).getall("Results")


def dead_address() -> str:
    """A loopback tcp:// address with nothing listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


# ---------------------------------------------------------------- 1. an unreachable Dask scheduler


def test_an_unreachable_scheduler_fails_every_cube_with_its_record_and_errlist_line(tmp_path, env):
    cs = moon_titan(tmp_path / "cubes", 6)
    before = [c.read_bytes() for c in cs]
    lst = write_list(tmp_path / "list.txt", cs)
    address = dead_address()
    errlist, log = tmp_path / "e.lis", tmp_path / "run.prt"
    p = run(f"fromlist={lst}", f"scheduler={address}", "--json", f"-errlist={errlist}", f"-log={log}", env=env)
    assert p.returncode == 1, p.stderr
    recs = jsonl(p.stdout)
    assert [r["cube"] for r in recs] == [str(c) for c in cs]
    assert all(r["written"] is False and f"cannot reach the Dask scheduler at {address}" in r["error"] for r in recs)
    assert errlist.read_text().splitlines() == [str(c) for c in cs]
    assert [g["Status"] for g in log_groups(log)] == ["failed"] * 6
    assert p.stderr.count("cannot reach the Dask scheduler") == 1, p.stderr  # one line, not one per cube
    assert "6 cubes: 0 written, 0 unchanged, 0 fell back, 6 failed" in p.stderr
    # -batchlist: each row fails with its cubes (the scheduler is tried once), the rows go to -errlist
    rows = write_list(tmp_path / "rows.lis", cs[:3])
    p = run(f"-batchlist={rows}", "from=$1", f"scheduler={address}", "-onerror=continue", f"-errlist={errlist}", env=env)
    assert p.returncode == 1 and "3 cubes: 0 written, 0 unchanged, 0 fell back, 3 failed" in p.stderr, p.stderr
    assert errlist.read_text().splitlines() == [str(c) for c in cs[:3]]
    assert [c.read_bytes() for c in cs] == before


# ---------------------------------------------------------------- 2. Ctrl-C with jobs=4


def _summary(stderr: str) -> dict[str, int]:
    line = [x for x in stderr.splitlines() if " cubes: " in x][-1]
    counts = {}
    for part in line.split(": ", 2)[-1].split(", "):
        n, _, what = part.partition(" ")
        counts[what] = int(n)
    return counts


def test_ctrl_c_with_jobs4_reports_every_completed_write(tmp_path, env):
    cs = moon_titan(tmp_path / "cubes", 2000)
    old = {c: c.read_bytes() for c in cs}
    lst = write_list(tmp_path / "list.txt", cs)
    log = tmp_path / "run.prt"
    with StacServer(ITEMS) as srv:
        p = subprocess.Popen([EXE, f"fromlist={lst}", f"url={srv.url}", "verify=no", "jobs=4", "--json", f"-log={log}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        head = [p.stdout.readline() for _ in range(40)]
        assert all(head)
        p.send_signal(signal.SIGINT)
        with ThreadPoolExecutor(1) as pool:
            err_read = pool.submit(p.stderr.read)
            out = "".join(head) + p.stdout.read()
            err = err_read.result(timeout=120)
        p.wait(timeout=120)
    assert p.returncode == 130, err[-2000:]
    assert err.splitlines()[-1] == "shaperesolver: interrupted; every cube holds its old or its new label"
    changed = [str(c) for c in cs if c.read_bytes() != old[c]]  # counted by their bytes
    assert 40 <= len(changed) < len(cs)
    recs = jsonl(out)
    assert sorted(r["cube"] for r in recs if r["written"]) == changed
    assert sorted(str(g["From"]) for g in log_groups(log) if g["Status"] == "written") == changed
    counts = _summary(err)
    assert counts["written"] == len(changed) and counts["failed"] == 0
    assert counts["written"] + counts["unchanged"] + counts["not run"] == 2000 == counts.get("cubes", 2000)
    assert counts["not run"] == 2000 - len(recs)
