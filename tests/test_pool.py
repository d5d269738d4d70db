"""The command's ``jobs=N`` on worker processes (issue 26: near-linear speed-up on N cores).

Through the installed console script as a user types it: Moon, Titan and Mars cubes, a
real STAC server on 127.0.0.1, real SIGINT to the whole process group (as a terminal's
Ctrl-C sends it), a real ``kill -9`` of the command.  The batch's own logic (a body a
worker meets first is resolved by the batch and the cube sent again) is also shown
in-process through the API with an executor, where the label reads can be counted.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cubes
import pytest
from servers import StacServer, item

from shaperesolver import read_label, write_batch
from shaperesolver.cube import label as labelmod
from shaperesolver.scale import pool

EXE = shutil.which("shaperesolver", path=os.path.dirname(sys.executable)) or shutil.which("shaperesolver")
ITEMS = [item("moonDem0002", ["Moon"], "0002"), item("titanDem0001", ["Titan"], "0001")]
MOON = "/vsicurl/https://dems.example.org/moonDem0002.tiff"
TITAN = "/vsicurl/https://dems.example.org/titanDem0001.tiff"
NAMES = ("lro_moon", "cassini_titan", "viking_mars")  # (Mars has no item here: it falls back, with a warning)
ISISDATA = f"isisdata={Path(__file__).resolve().parent.parent / 'data' / 'isisdata'}"  # (the bundled one: Moon only)


@pytest.fixture
def env(user_env):
    return user_env


def three_bodies(directory: Path, n: int) -> list[Path]:
    """``n`` small attached cubes: Moon, Titan and Mars in turn, no ShapeModel yet."""
    directory.mkdir(parents=True, exist_ok=True)
    texts = [cubes.label_text(name) for name in NAMES]
    return [cubes.write_attached(directory / f"c{i:05d}.cub", texts[i % 3], data_bytes=256) for i in range(n)]


def listing(path: Path, names) -> Path:
    path.write_text("".join(f"{n}\n" for n in names))
    return path


def children(pid: int) -> set[int]:
    """The processes ``pid`` started (its worker processes)."""
    out: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            out.update(int(x) for x in Path(f"/proc/{pid}/task/{task}/children").read_text().split())
        except OSError:
            pass
    return out


def workers_of(pid: int) -> set[int]:
    """The worker processes among them (not multiprocessing's resource tracker)."""
    out = set()
    for child in children(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                out.add(child)
        except OSError:
            pass
    return out


def alive(pids: set[int]) -> set[int]:
    left = set()
    for p in pids:
        try:
            state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            left.add(p)
    return left


def test_jobs_4_resolves_on_worker_processes_as_jobs_1_does(tmp_path, env):
    cs = three_bodies(tmp_path / "cubes", 300)
    lst = listing(tmp_path / "list.txt", cs)
    outs = {}
    with StacServer(ITEMS) as srv:
        for jobs in (1, 4):
            before = len(srv.searches)
            p = subprocess.run([EXE, f"fromlist={lst}", f"url={srv.url}", ISISDATA, "verify=no", f"jobs={jobs}",
                                "dryrun=yes", "--json", "cache=no"], capture_output=True, text=True, env=env, timeout=300)
            searched = sorted(json.dumps(r["body"], sort_keys=True) for r in srv.searches[before:])
            assert p.returncode == 0, p.stderr[-2000:]
            outs[jobs] = (p.stdout, p.stderr, searched)
    (out1, err1, s1), (out4, err4, s4) = outs[1], outs[4]
    assert out4 == out1  # every record the same, in input order
    recs = [json.loads(line) for line in out4.splitlines()]
    assert [r["shape_model"] for r in recs] == [MOON, TITAN, "Null"] * 100
    assert s4 == s1 and len(s4) == 3  # one search per body: the batch searches, never a worker
    # a worker's warnings are the run's: shown once, counted across every worker
    assert err4 == err1
    lines = err4.splitlines()
    assert len([line for line in lines if ".cub: no SYSTEM shape model for MARS" in line]) == 1
    assert len([line for line in lines if ".cub: no Kernels group" in line]) == 1
    assert len([line for line in lines if "the warning above came for 100 cubes in all" in line]) == 2, err4
    assert lines[-1] == "shaperesolver: 300 cubes: 300 would write, 0 unchanged, 100 fell back, 0 failed"


def test_jobs_4_writes_every_cube_once_and_reports_it(tmp_path, env):
    cs = three_bodies(tmp_path / "cubes", 600)
    lst = listing(tmp_path / "list.txt", [*cs, cs[0], tmp_path / "missing.cub"])  # (a cube twice; one that is not there)
    with StacServer(ITEMS) as srv:
        p = subprocess.run([EXE, f"fromlist={lst}", f"url={srv.url}", ISISDATA, "verify=no", "jobs=4", "--json"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 1 and "missing.cub" in p.stderr
    recs = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["cube"] for r in recs] == [str(c) for c in [*cs, cs[0], tmp_path / "missing.cub"]]
    assert [r["written"] for r in recs[:600]] == [True] * 600 and recs[600]["written"] is False
    assert [read_label(c).shape_model for c in cs] == [MOON, TITAN, "Null"] * 200
    assert not list((tmp_path / "cubes").glob("*journal*"))


def test_ctrl_c_to_the_process_group_stops_the_workers_between_two_cubes(tmp_path, env):
    cs = three_bodies(tmp_path / "cubes", 3000)
    old = {c: c.read_bytes() for c in cs}
    lst = listing(tmp_path / "list.txt", cs)
    with StacServer(ITEMS) as srv:
        p = subprocess.Popen([EXE, f"fromlist={lst}", f"url={srv.url}", ISISDATA, "verify=no", "jobs=4", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
        head = [p.stdout.readline() for _ in range(30)]
        assert all(head)
        workers = children(p.pid)
        assert len(workers_of(p.pid)) == 4
        os.killpg(p.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the command and its workers get it
        with cf.ThreadPoolExecutor(1) as ex:
            err_read = ex.submit(p.stderr.read)
            out = "".join(head) + p.stdout.read()
            err = err_read.result(timeout=120)
        p.wait(timeout=120)
    assert p.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert err.splitlines()[-1] == "shaperesolver: interrupted; every cube holds its old or its new label"
    recs = [json.loads(line) for line in out.splitlines()]
    changed = {str(c) for c in cs if c.read_bytes() != old[c]}
    written = {r["cube"] for r in recs if r.get("written")}
    assert 30 <= len(changed) < len(cs) and changed == written  # every completed write is reported
    deadline = time.monotonic() + 10
    while alive(workers) and time.monotonic() < deadline:  # (the resource tracker ends when its pipe closes)
        time.sleep(0.1)
    assert not alive(workers)


def test_kill_9_of_the_command_leaves_no_worker_behind_and_no_cube_torn(tmp_path, env):
    cs = three_bodies(tmp_path / "cubes", 4000)
    before = [read_label(c).shape_model for c in cs[:3]]
    lst = listing(tmp_path / "list.txt", cs)
    with StacServer(ITEMS) as srv:
        err = tmp_path / "stderr"
        with open(err, "w") as err_file:
            p = subprocess.Popen([EXE, f"fromlist={lst}", f"url={srv.url}", ISISDATA, "verify=no", "jobs=2", "--json"],
                                 stdout=subprocess.PIPE, stderr=err_file, text=True, env=env)
        head = [p.stdout.readline() for _ in range(50)]
        assert all(head)
        workers = children(p.pid)
        assert len(workers_of(p.pid)) == 2
        p.kill()
        p.wait(timeout=30)
        deadline = time.monotonic() + pool.WATCH_EVERY + pool.ORPHAN_GRACE + 10
        while alive(workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(workers)  # the workers saw their parent go and stopped (and so did the resource tracker)
        p.stdout.close()
        said = err.read_text()  # (what reached the terminal: the run's warnings, nothing after the kill)
        assert "Traceback" not in said and "leaked" not in said and "Warning" not in said, said[-2000:]
        # every cube reads as its old or its new label (an interrupted write is finished or rolled back)
        got = [read_label(c).shape_model for c in cs]
        new = [MOON, TITAN, "Null"] * 1333 + [MOON]
        assert all(g in (before[i % 3], new[i]) for i, g in enumerate(got)) and got != [before[i % 3] for i in range(len(cs))]
        done = subprocess.run([EXE, f"fromlist={lst}", f"url={srv.url}", ISISDATA, "verify=no", "jobs=2", "-q"],
                              capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [read_label(c).shape_model for c in cs] == [MOON, TITAN, "Null"] * 1333 + [MOON]
    assert not list((tmp_path / "cubes").glob("*journal*"))


def test_a_shipped_batch_learns_a_body_from_the_first_cube_and_reads_the_rest_once(tmp_path):
    """An executor's tasks carry the table; a web body is resolved here when a worker first
    meets it (no separate pass that reads every label to find the bodies first)."""
    cs = [cubes.make(tmp_path, NAMES[i % 2], f"c{i:03d}.cub") for i in range(96)]
    counts: dict[tuple[str, str], int] = {}
    labelmod.on_io = lambda event, path: counts.__setitem__((event, path), counts.get((event, path), 0) + 1)
    try:
        with StacServer(ITEMS) as srv, cf.ThreadPoolExecutor(2) as ex:
            recs = write_batch(cs, ex, url=srv.url, cache="no", verify=False, chunk_size=4)
            searches = len(srv.searches)
    finally:
        labelmod.on_io = None
    assert [r["shape_model"] for r in recs] == [MOON, TITAN] * 48 and all(r["written"] for r in recs)
    assert searches == 2
    reads = [counts.get(("read", str(c)), 0) for c in cs]
    assert set(reads) <= {1, 2}
    # (the tasks sent before the first came back met the bodies first: at most the window, 8 chunks of 4)
    assert reads[32:] == [1] * 64, reads


def test_the_api_runs_worker_processes_too_and_their_warnings_reach_the_program(tmp_path, caplog):
    cs = three_bodies(tmp_path / "cubes", 90)
    caplog.set_level("WARNING", logger="shaperesolver")
    with StacServer(ITEMS) as srv:
        recs = write_batch(cs, jobs=2, processes=True, url=srv.url, cache="no", verify=False,
                           isisdata=ISISDATA.split("=", 1)[1])
        assert len(srv.searches) == 3
    assert [r["shape_model"] for r in recs] == [MOON, TITAN, "Null"] * 30 and all(r["written"] for r in recs)
    assert [read_label(c).shape_model for c in cs] == [MOON, TITAN, "Null"] * 30
    mars = [r for r in caplog.records if "no SYSTEM shape model for MARS" in r.getMessage()]
    assert len(mars) == 30 and {r.args[0] for r in mars} == {str(c) for c in cs[2::3]}  # one per cube, from the workers


def test_a_worker_killed_mid_run_costs_only_its_tasks_cubes_and_the_batch_goes_on(tmp_path, env):
    cs = three_bodies(tmp_path / "cubes", 4000)
    before = [read_label(c).shape_model for c in cs[:3]]
    new = [MOON, TITAN, "Null"] * 1333 + [MOON]
    lst = listing(tmp_path / "list.txt", cs)
    with StacServer(ITEMS) as srv:
        p = subprocess.Popen([EXE, f"fromlist={lst}", f"url={srv.url}", ISISDATA, "verify=no", "jobs=2", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        head = [p.stdout.readline() for _ in range(50)]
        assert all(head)
        victim = min(workers_of(p.pid))
        os.kill(victim, signal.SIGKILL)
        with cf.ThreadPoolExecutor(1) as ex:
            err_read = ex.submit(p.stderr.read)
            out = "".join(head) + p.stdout.read()
            err = err_read.result(timeout=300)
        p.wait(timeout=300)
    recs = [json.loads(line) for line in out.splitlines()]
    assert [r["cube"] for r in recs] == [str(c) for c in cs]  # a record for every cube, in order
    lost = [i for i, r in enumerate(recs) if r.get("error")]
    assert p.returncode == (1 if lost else 0) and "Traceback" not in err, err[-2000:]
    assert all("worker failed" in recs[i]["error"] for i in lost)
    assert "a worker process died; starting new ones" in err
    assert len(lost) < 1000  # (the dead worker's tasks, and those queued when it died: a few chunks)
    got = [read_label(c).shape_model for c in cs]
    for i, r in enumerate(recs):  # each record says what its cube holds
        assert got[i] == (new[i] if r.get("written") or r.get("error") is None else got[i])
        assert got[i] in (before[i % 3], new[i])
    assert got[-1000:] == new[-1000:]  # the batch went on with fresh workers
