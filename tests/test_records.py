"""Outcomes you can trust (issue 15, items 5-8 and part of 9): every record says what
happened to its own cube, ordinary events end quietly, and a neighbour cannot hang a run.

Real parts only: the installed console script in subprocesses, a second user (uid
65534) holding a flock, real pipes closed under the writer, real SIGINT, kill -9, a
real Dask LocalCluster on 127.0.0.1 and a stac-server look-alike on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cubes
import pytest
from peak import PEAK_KIB
from servers import StacServer, item

from shaperesolver import CubeLockedError, Resolver, UsageError, read_label, write_batch, write_shape_model
from shaperesolver.cube import txn
from shaperesolver.cube.label import journal_path
from shaperesolver.policy import job

EXE = shutil.which("shaperesolver", path=os.path.dirname(sys.executable)) or shutil.which("shaperesolver")
ITEMS = [item("moonDem0002", ["Moon"], "0002"), item("titanDem0001", ["Titan"], "0001")]
MOON = "/vsicurl/https://dems.example.org/moonDem0002.tiff"
TITAN = "/vsicurl/https://dems.example.org/titanDem0001.tiff"
NOBODY = 65534
LABEL = 65536  # the test cubes' label area


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ, SHAPERESOLVER_CACHE_DIR=str(tmp_path / "cache"))
    for k in ("ISISDATA", "SHAPERESOLVER_STAC_URL", "SHAPERESOLVER_CLAIM_WAIT", "SHAPERESOLVER_LOCK_WAIT"):
        e.pop(k, None)
    return e


def run(*args, env, timeout=120, **kw):
    assert EXE, "the shaperesolver command is not installed"
    kw.setdefault("capture_output", True)
    return subprocess.run([EXE, *map(str, args)], text=True, env=env, timeout=timeout, **kw)


def _wchan(pid):
    """Where the process's main thread sleeps in the kernel (``pipe_write``: a full pipe)."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return ""


def jsonl(text):
    return [json.loads(line) for line in text.splitlines()]


def moon_titan(directory: Path, n: int) -> list[Path]:
    """``n`` small attached cubes, Moon and Titan in turn (no ShapeModel yet)."""
    directory.mkdir(parents=True, exist_ok=True)
    texts = [cubes.label_text("lro_moon"), cubes.label_text("cassini_titan")]
    return [cubes.write_attached(directory / f"c{i:05d}.cub", texts[i % 2], data_bytes=256) for i in range(n)]


def want(i: int) -> str:
    return MOON if i % 2 == 0 else TITAN


def write_list(path: Path, names) -> Path:
    path.write_text("".join(f"{n}\n" for n in names))
    return path


def old_or_new(cs: list[Path], old: dict[Path, bytes]) -> int:
    """Assert every cube holds exactly its old bytes or its new label; returns how many are new."""
    new = 0
    for i, c in enumerate(cs):
        raw = c.read_bytes()
        if raw == old[c]:
            continue
        assert read_label(c).shape_model == want(i) and raw[LABEL:] == old[c][LABEL:], c
        new += 1
    assert not list(cs[0].parent.glob(".shaperesolver-*")), "a journal or temporary file was left behind"
    return new


def no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr and "Exception ignored" not in stderr and "BrokenPipe" not in stderr, stderr



# ------------------------------------------------------------------ 5. a neighbour's flock


LOCKER = textwrap.dedent("""
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDONLY)   # opened as root, read-only
    os.setuid(int(sys.argv[2]))               # then a different user holds it
    fcntl.flock(fd, fcntl.LOCK_EX)
    print(os.getuid(), flush=True)
    sys.stdin.read()                          # until the test closes our stdin
""")


@pytest.fixture
def locked_by_nobody():
    procs = []

    def lock(path: Path) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", LOCKER, str(path), str(NOBODY)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == str(NOBODY)
        procs.append(p)
        return p

    yield lock
    for p in procs:
        p.stdin.close()
        p.wait(10)


def test_a_cube_locked_by_another_user_fails_after_the_wait_and_the_batch_goes_on(tmp_path, env, locked_by_nobody):
    cs = moon_titan(tmp_path / "cubes", 4)
    old = {c: c.read_bytes() for c in cs}
    holder = locked_by_nobody(cs[0])
    lenv = {**env, "SHAPERESOLVER_LOCK_WAIT": "1"}
    with StacServer(ITEMS) as srv:
        p = run(f"from={cs[0]}", f"url={srv.url}", "verify=no", "--json", env=lenv, timeout=60)
        assert p.returncode == 1, p.stderr
        [rec] = jsonl(p.stdout)
        assert rec["written"] is False and rec["would_write"] is False
        assert "locked by another process for 1 s; not modified" in rec["error"]
        lines = p.stderr.splitlines()  # (a cube without a Kernels group also gets a warning)
        assert lines[-1].startswith(f"shaperesolver: {cs[0]}: locked") and all(
            ln.startswith("shaperesolver: ") for ln in lines)
        # a batch: the locked cube fails, every other one is written (jobs=1 and jobs=4)
        lst = write_list(tmp_path / "list.txt", cs)
        for jobs in (4, 1):
            p = run(f"fromlist={lst}", f"url={srv.url}", "verify=no", f"jobs={jobs}", "--json", env=lenv, timeout=60)
            assert p.returncode == 1, p.stderr
            recs = jsonl(p.stdout)
            assert [r["cube"] for r in recs] == [str(c) for c in cs]
            assert "locked by another process" in recs[0]["error"] and all("error" not in r for r in recs[1:])
            assert "4 cubes: " in p.stderr and "1 failed" in p.stderr
        assert [r["written"] for r in recs] == [False, False, False, False]  # jobs=4 wrote them
        assert cs[0].read_bytes() == old[cs[0]]
        assert all(read_label(c).shape_model == want(i) for i, c in enumerate(cs) if i)
        # the API: a Resolver's lock_wait
        with pytest.raises(CubeLockedError), Resolver(url=srv.url, cache="no", verify=False, lock_wait=0.2) as r:
            r.write(r.resolve(cs[0]))
        [rec] = write_batch([cs[0]], url=srv.url, cache="no", verify=False, lock_wait=0.2)
        assert "locked by another process for 0.2 s" in rec["error"] and cs[0].read_bytes() == old[cs[0]]
        # released: the next run writes it
        holder.stdin.close()
        holder.wait(10)
        p = run(f"from={cs[0]}", f"url={srv.url}", "verify=no", "--json", env=lenv)
        assert p.returncode == 0 and jsonl(p.stdout)[0]["written"] is True


@pytest.mark.parametrize("name", ["SHAPERESOLVER_CLAIM_WAIT", "SHAPERESOLVER_LOCK_WAIT"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "soon"])
def test_waits_must_be_finite(tmp_path, env, name, value):
    [c] = moon_titan(tmp_path, 1)
    p = run(f"from={c}", "shape=ellipsoid", env={**env, name: value})
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and name in p.stderr, p.stderr
    no_traceback(p.stderr)
    kw = "claim_wait" if "CLAIM" in name else "lock_wait"
    with pytest.raises(UsageError):
        Resolver(cache="no", **{kw: float(value) if value != "soon" else value})


def test_waits_are_read_when_a_resolver_is_made(monkeypatch):
    monkeypatch.setenv("SHAPERESOLVER_LOCK_WAIT", "2.5")
    monkeypatch.setenv("SHAPERESOLVER_CLAIM_WAIT", "0")
    r = Resolver(cache="no")
    assert (r.lock_wait, r.claim_wait) == (2.5, 0.0)
    monkeypatch.setenv("SHAPERESOLVER_LOCK_WAIT", "7")
    assert Resolver(cache="no").lock_wait == 7 and r.lock_wait == 2.5


# ------------------------------------------------------------------ 6. records that tell the truth


class FailsAfterWriting(Resolver):
    """A Resolver (the API's door for custom policy) whose write of one cube raises an
    unexpected error after the cube was written, and whose resolve of another raises one."""

    write_bad = resolve_bad = ""

    def write(self, resolution, cube=None, **kw):
        out = super().write(resolution, cube, **kw)
        if str(cube).endswith(self.write_bad):
            raise RuntimeError("surprise after the write")
        return out

    def resolve(self, cube=None, **kw):
        if str(cube).endswith(self.resolve_bad):
            raise KeyError("surprise before the write")
        return super().resolve(cube, **kw)


def test_an_unexpected_error_stays_with_its_own_cube(tmp_path):
    cs = moon_titan(tmp_path, 12)
    old = {c: c.read_bytes() for c in cs}
    with StacServer(ITEMS) as srv:
        r = FailsAfterWriting(url=srv.url, cache="no", verify=False)
        r.write_bad, r.resolve_bad = cs[3].name, cs[4].name
        recs = write_batch(cs, jobs=2, resolver=r, chunk_size=6)
    assert [x["cube"] for x in recs] == [str(c) for c in cs]
    for i, x in enumerate(recs):
        if i == 3:  # written, then the surprise: the record says what the cube holds
            assert x["written"] is None and "unexpected RuntimeError: surprise after the write" in x["error"]
            assert f"its ShapeModel is now {TITAN}; whether this run wrote it is unknown" in x["error"]
        elif i == 4:  # raised before any write: provably not modified
            assert x["written"] is False and "unexpected KeyError" in x["error"] and "not modified" in x["error"]
            assert cs[4].read_bytes() == old[cs[4]]
        else:
            assert x["written"] is True and "error" not in x and read_label(cs[i]).shape_model == want(i)


class LosesOneWriteTask(ThreadPoolExecutor):
    """An Executor whose first write task runs on a worker that is then lost."""

    lost = False

    def submit(self, fn, *args, **kw):
        if fn is job.write_chunk and not self.lost:
            self.lost = True

            def dies():
                fn(*args, **kw)
                raise ConnectionResetError("the worker went away")

            return super().submit(dies)
        return super().submit(fn, *args, **kw)


def test_a_lost_task_never_claims_its_cubes_were_not_written(tmp_path):
    cs = moon_titan(tmp_path, 20)
    with StacServer(ITEMS) as srv, LosesOneWriteTask(2) as ex:
        r = Resolver(url=srv.url, cache="no", verify=False)
        r.web_model("Moon"), r.web_model("Titan")  # (known bodies: the lost task is one that writes its cubes)
        recs = write_batch(cs, ex, resolver=r, chunk_size=5)
    assert [x["cube"] for x in recs] == [str(c) for c in cs]
    assert all(read_label(c).shape_model == want(i) for i, c in enumerate(cs))
    lost = [x for x in recs if "error" in x]
    assert len(lost) == 5 and all(x["written"] is None for x in lost)
    assert all("worker failed (ConnectionResetError: the worker went away); its ShapeModel is now " in x["error"]
               for x in lost)
    assert all(x["written"] is True for x in recs if "error" not in x)


RSS = textwrap.dedent("""
    import sys
    from shaperesolver.cli import main
    code = main(sys.argv[2:])
    open(sys.argv[1], "w").write(str(PEAK_KIB))
    sys.exit(code)
""").replace("PEAK_KIB", PEAK_KIB)


def test_jobs4_memory_does_not_grow_with_the_list(tmp_path, env):
    """200,000 entries: finished results are streamed out, not kept (was 323 MiB against 67)."""
    lst = write_list(tmp_path / "list.txt", (f"{tmp_path}/none/c{i:06d}.cub" for i in range(200_000)))
    peak = {}
    for jobs in (1, 4):
        out = tmp_path / f"rss{jobs}"
        p = subprocess.run([sys.executable, "-c", RSS, str(out), f"fromlist={lst}", "shape=ellipsoid", "dryrun=yes",
                            "--json", f"jobs={jobs}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                           timeout=300)
        assert p.returncode == 1 and p.stderr.count(b"no such file") == 200_000
        peak[jobs] = int(out.read_text()) / 1024  # MiB
    assert peak[4] <= 1.5 * peak[1] + 16, peak


# ------------------------------------------------------------------ 7. closed pipes and Ctrl-C


def closed_pipe_run(args, env):
    """Run the console script with stdout a pipe nobody reads any more."""
    r, w = os.pipe()
    os.close(r)
    try:
        return run(*args, env=env, stdout=w, stderr=subprocess.PIPE, capture_output=False)
    finally:
        os.close(w)


@pytest.mark.parametrize("args", [["--version"], ["--help"]])
def test_version_and_help_into_a_closed_pipe(env, args):
    p = closed_pipe_run(args, env)
    assert p.returncode == 141 and p.stderr == ""


@pytest.mark.parametrize("jobs", [1, 4])
@pytest.mark.parametrize("fmt", ["--json", "-v"])
def test_a_closed_pipe_stops_the_batch_quietly(tmp_path, env, jobs, fmt):
    cs = moon_titan(tmp_path / "cubes", 300)
    old = {c: c.read_bytes() for c in cs}
    lst = write_list(tmp_path / "list.txt", cs)
    with StacServer(ITEMS) as srv:
        p = closed_pipe_run([f"fromlist={lst}", f"url={srv.url}", "verify=no", f"jobs={jobs}", fmt], env)
    assert p.returncode == 141
    no_traceback(p.stderr)
    assert old_or_new(cs, old) < len(cs)  # it stopped, at a cube boundary


def test_head_1_in_a_shell_pipeline(tmp_path, env):
    cs = moon_titan(tmp_path / "cubes", 400)
    old = {c: c.read_bytes() for c in cs}
    lst = write_list(tmp_path / "list.txt", cs)
    err = tmp_path / "err.txt"
    with StacServer(ITEMS) as srv:
        p = subprocess.run(["sh", "-c", '"$0" fromlist="$1" url="$2" verify=no jobs=4 --json 2>"$3" | head -1',
                            EXE, lst, srv.url, err], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0 and len(jsonl(p.stdout)) == 1
    no_traceback(err.read_text())
    assert old_or_new(cs, old) < len(cs)


@pytest.mark.parametrize("jobs,full_pipe", [(1, False), (4, False), (1, True), (4, True)])
def test_ctrl_c_mid_batch(tmp_path, env, jobs, full_pipe):
    """Ctrl-C mid-batch: 130, one line, every line on stdout whole and true, also when the
    interrupt lands in a write blocked on a full pipe."""
    cs = moon_titan(tmp_path / "cubes", 2000)
    old = {c: c.read_bytes() for c in cs}
    lst = write_list(tmp_path / "list.txt", cs)
    with StacServer(ITEMS) as srv:
        p = subprocess.Popen([EXE, f"fromlist={lst}", f"url={srv.url}", "verify=no", f"jobs={jobs}", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        head = [p.stdout.readline() for _ in range(30)]
        assert all(head)
        if full_pipe:  # stop reading until the writer is blocked on the full pipe
            deadline = time.monotonic() + 10
            while not _wchan(p.pid).endswith("pipe_write") and time.monotonic() < deadline:
                time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        # read on through the same buffered reader (communicate() would skip what it holds)
        with ThreadPoolExecutor(1) as pool:
            err_read = pool.submit(p.stderr.read)
            out = "".join(head) + p.stdout.read()
            err = err_read.result(timeout=120)
        p.wait(timeout=120)
    assert p.returncode == 130, err[-2000:]
    no_traceback(err)
    assert err.splitlines()[-1] == "shaperesolver: interrupted; every cube holds its old or its new label"
    assert 30 <= old_or_new(cs, old) < len(cs)
    assert all(read_label(r["cube"]).shape_model == r["shape_model"] for r in jsonl(out) if r["written"])


# ------------------------------------------------------------------ 8. would_write


def _prepared(directory: Path) -> tuple[list[Path], list[bool]]:
    """6 cubes: Moon and Titan without a ShapeModel, and two that already hold theirs."""
    cs = moon_titan(directory, 6)
    for i in (2, 5):
        write_shape_model(cs[i], want(i))
    return cs, [i not in (2, 5) for i in range(6)]


def test_would_write_through_from_fromlist_and_jobs4(tmp_path, env):
    with StacServer(ITEMS) as srv:
        common = [f"url={srv.url}", "verify=no", "--json"]
        for jobs in (1, 4):
            cs, would = _prepared(tmp_path / f"j{jobs}")
            before = [c.read_bytes() for c in cs]
            lst = write_list(tmp_path / f"list{jobs}.txt", cs)
            p = run(f"fromlist={lst}", "dryrun=yes", f"jobs={jobs}", *common, env=env)
            assert p.returncode == 0, p.stderr
            recs = jsonl(p.stdout)
            assert [r["would_write"] for r in recs] == would and not any(r["written"] for r in recs)
            assert "6 cubes: 4 would write, 2 unchanged, 0 fell back, 0 failed" in p.stderr
            assert [c.read_bytes() for c in cs] == before
            for c, w in zip(cs[:3], would):  # from=, a dry run and the human output
                p = run(f"from={c}", "dryrun=yes", *common, env=env)
                assert jsonl(p.stdout)[0]["would_write"] is w
                p = run(f"from={c}", "dryrun=yes", *common[:-1], env=env)
                assert ("dry run, would write" if w else "dry run, unchanged") in p.stdout
            p = run(f"fromlist={lst}", f"jobs={jobs}", *common, env=env)
            recs = jsonl(p.stdout)
            assert [r["written"] for r in recs] == would == [r["would_write"] for r in recs]
            assert "6 cubes: 4 written, 2 unchanged" in p.stderr


@pytest.mark.cluster
def test_would_write_on_dask_and_write_batch(tmp_path, env, dask_cluster):
    cluster, client = dask_cluster
    with StacServer(ITEMS) as srv:
        cs, would = _prepared(tmp_path / "cli")
        lst = write_list(tmp_path / "list.txt", cs)
        p = run(f"fromlist={lst}", f"url={srv.url}", "verify=no", "dryrun=yes", "--json",
                f"scheduler={cluster.scheduler_address}", env=env)
        assert p.returncode == 0, p.stderr[-2000:]
        assert [r["would_write"] for r in jsonl(p.stdout)] == would and "4 would write, 2 unchanged" in p.stderr
        kw = dict(url=srv.url, cache="no", verify=False)
        for name, ex in (("api", None), ("dask", client)):
            cs, would = _prepared(tmp_path / name)
            recs = write_batch(cs, ex, dryrun=True, **kw)
            assert [r["would_write"] for r in recs] == would and not any(r["written"] for r in recs)
            recs = write_batch(cs, ex, **kw)
            assert [r["written"] for r in recs] == would == [r["would_write"] for r in recs]
        # a lock held by another user on a Dask run: that cube fails, the others are written
        cs, _ = _prepared(tmp_path / "locked")
        holder = subprocess.Popen([sys.executable, "-c", LOCKER, str(cs[0]), str(NOBODY)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == str(NOBODY)
            recs = write_batch(cs, client, lock_wait=0.5, **kw)
        finally:
            holder.stdin.close()
            holder.wait(10)
        assert "locked by another process for 0.5 s" in recs[0]["error"] and recs[0]["written"] is False
        assert [r["written"] for r in recs[1:]] == [True, False, True, True, False]


# ------------------------------------------------------------------ 9. small traps


@pytest.mark.parametrize("jobs", [1, 4])
def test_an_empty_fromlist_is_zero_cubes(tmp_path, env, jobs):
    lst = tmp_path / "part.007"
    lst.write_text("# nothing in this part\n\n")
    p = run(f"fromlist={lst}", f"jobs={jobs}", "--json", env=env)
    assert p.returncode == 0 and p.stdout == "" and "0 cubes: 0 written" in p.stderr, p.stderr
    lst.write_text("")
    assert run(f"fromlist={lst}", f"jobs={jobs}", env=env).returncode == 0
    assert write_batch([], jobs=jobs, cache="no") == []


def test_a_long_error_chain_keeps_what_to_do(tmp_path, env):
    deep = tmp_path / ("a-static-catalog-snapshot-directory-with-a-long-name-" * 4)
    deep.mkdir()
    catalog = deep / "catalog.json"
    catalog.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    cs = moon_titan(tmp_path / "cubes", 2)
    p = run(f"fromlist={write_list(tmp_path / 'list.txt', cs)}", f"catalog={catalog}", "--json", env=env)
    assert p.returncode == 1
    lines = [line for line in p.stderr.splitlines() if "no ISIS data area" in line]
    assert len(lines) == 2
    for c, line in zip(cs, lines):
        assert line.startswith(f"shaperesolver: {c}: ") and len(line) <= len("shaperesolver: ") + 300
        assert line.endswith("no ISIS data area: set ISISDATA (export ISISDATA=/path/to/isisdata) or pass isisdata=DIR")
    assert all(str(catalog) in r["error"] for r in jsonl(p.stdout))  # the record keeps it all


def test_one_line_shortens_the_middle_of_earlier_stages():
    stages = ["web search failed: " + "x" * 400, "SYSTEM skipped: " + "y" * 200, "no ISIS data area: set ISISDATA"]
    line = job.one_line("; ".join(stages), "/data/c.cub")
    assert len(line) <= 300 and line.startswith("/data/c.cub: web search failed: ")
    assert line.endswith("; no ISIS data area: set ISISDATA") and line.count("; ") == 2 and "..." in line
    assert job.one_line("short", "/data/c.cub") == "/data/c.cub: short"


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from shaperesolver.cube.label import write_shape_model
    def hook(step):
        if step == "temp-durable":
            os.kill(os.getpid(), signal.SIGKILL)
    write_shape_model(sys.argv[1], sys.argv[2], _hook=hook)
    sys.exit(3)
""")


def test_a_killed_detached_write_leaves_nothing_after_a_rerun_that_writes_nothing(tmp_path, env):
    labels = []
    for i in range(6):
        d = tmp_path / f"d{i}"
        d.mkdir()
        labels.append(cubes.make(d, "galileo_io_detached", "io.lbl"))
        write_shape_model(labels[-1], "Null")  # they already hold what the rerun wants
    for lab in labels[:3]:  # a web run killed -9 between its temporary file and the rename
        p = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(lab), MOON])
        assert p.returncode == -signal.SIGKILL and txn.temp_path(lab).exists()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    txn.temp_path(labels[3]).symlink_to(victim)           # not a regular file: left alone
    theirs = txn.temp_path(labels[4])
    theirs.write_text("someone else's")
    os.chown(theirs, NOBODY, NOBODY)                      # not ours or the label's owner's: left alone
    before = {lab: lab.read_bytes() for lab in labels}
    p = run(f"fromlist={write_list(tmp_path / 'list.txt', labels)}", "shape=ellipsoid", "dryrun=yes", env=env)
    assert p.returncode == 0 and all(txn.temp_path(lab).exists() for lab in labels[:3])  # a dry run changes nothing
    p = run(f"fromlist={write_list(tmp_path / 'list.txt', labels)}", "shape=ellipsoid", "jobs=4", "--json", env=env)
    assert p.returncode == 0, p.stderr
    assert not any(r["written"] for r in jsonl(p.stdout))
    assert {lab: lab.read_bytes() for lab in labels} == before
    assert not any(os.path.lexists(txn.temp_path(lab)) for lab in labels[:3])
    assert txn.temp_path(labels[3]).is_symlink() and victim.read_text() == "keep me"
    assert theirs.read_text() == "someone else's"
    assert not any(journal_path(lab).exists() for lab in labels)
