"""Scale-out with real processes: jobs=N, one search per body across processes, Dask.

Every process here is real: ``python -m shaperesolver`` subprocesses sharing one cache
directory, processes killed with SIGKILL, and a ``distributed.LocalCluster`` with worker
processes on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cubes
import pytest
from servers import StacServer, item

from shaperesolver import Resolver, read_label, write_batch, write_shape_model
from shaperesolver.cube.label import journal_path
from shaperesolver.scale.batch import BatchOptions, run_batch

ROOT = Path(__file__).resolve().parent.parent
BODIES = {"MARS": "Mars", "MOON": "Moon", "Ceres": "Ceres", "IO": "Io"}
TARGETS = list(BODIES)
LABEL_BYTES = 8192


def model(body: str) -> str:
    return f"/vsicurl/https://dems.example.org/{body.lower()}dem0003.tiff"


def stac_items():
    return [item(f"{b.lower()}dem{v:04d}", [b], f"{v:04d}", f"202{v}-01-01T00:00:00Z")
            for b in BODIES.values() for v in (1, 2, 3)]


class SlowStac(StacServer):
    """A stac-server look-alike whose searches take ``delay`` seconds (the first ``slow_first`` take ``first_delay``)."""

    def __init__(self, *a, delay=0.0, first_delay=None, **kw):
        super().__init__(*a, **kw)
        self.delay, self.first_delay = delay, first_delay
        self._n = 0
        self._nlock = threading.Lock()

    def search(self, body):
        with self._nlock:
            self._n += 1
            first = self._n == 1
        time.sleep(self.first_delay if first and self.first_delay is not None else self.delay)
        return super().search(body)


def small_label(target: str) -> str:
    text = cubes.label_text("viking_mars").replace("Bytes = 65536", f"Bytes = {LABEL_BYTES}")
    return text.replace("StartByte   = 65537", f"StartByte   = {LABEL_BYTES + 1}").replace("= MARS\n", f"= {target}\n")


def make_cubes(directory: Path, n: int, prefix: str = "c") -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    labels = {t: small_label(t) for t in TARGETS}
    out = []
    for i in range(n):
        p = directory / f"{prefix}{i:05d}.cub"
        cubes.write_attached(p, labels[TARGETS[i % 4]], label_bytes=LABEL_BYTES, data_bytes=512)
        out.append(p)
    return out


def body_of(i: int) -> str:
    return BODIES[TARGETS[i % 4]]


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ, SHAPERESOLVER_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    for k in ("ISISDATA", "SHAPERESOLVER_STAC_URL", "SHAPERESOLVER_CLAIM_WAIT"):
        e.pop(k, None)
    return e


def cli(*args, env, timeout=120):
    return subprocess.run([sys.executable, "-m", "shaperesolver", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def jsonl(text):
    return [json.loads(line) for line in text.splitlines()]


# ------------------------------------------------------------------ jobs=N


def test_jobs4_duplicates_hard_link_and_bad_cube_match_jobs1(tmp_path, env):
    def layout(d: Path):
        cs = make_cubes(d, 8)
        os.link(cs[3], d / "link3.cub")
        bad = d / "broken.cub"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(500))
        names = [cs[0], cs[1], cs[0], d / "link3.cub", cs[2], cs[3], bad, cs[4], cs[5], cs[1], cs[6], cs[7]]
        lst = d / "list.txt"
        lst.write_text("".join(f"{p}\n" for p in names))
        return cs, bad, lst, names

    with StacServer(stac_items()) as srv:
        recs = {}
        for jobs in (1, 4):
            d = tmp_path / f"j{jobs}"
            cs, bad, lst, names = layout(d)
            p = cli(f"fromlist={lst}", f"url={srv.url}", "verify=no", f"jobs={jobs}", "--json", env=env)
            assert p.returncode == 1, p.stderr
            recs[jobs] = jsonl(p.stdout.replace(str(d), "DIR"))
            names = [str(n).replace(str(d), "DIR") for n in names]
            assert [r["cube"] for r in recs[jobs]] == names
            assert f"{bad}: not an ISIS cube" in p.stderr and "12 cubes: 8 written, 3 unchanged, 0 fell back, 1 failed" in p.stderr
            for i, c in enumerate(cs):
                assert read_label(c).shape_model == model(body_of(i))
            assert bad.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert not list(d.glob(".*journal*"))
        assert recs[4] == recs[1]
        # the first entry naming a file writes it, the later ones (same path, hard link) find it done
        written = [r["written"] for r in recs[4]]
        assert written == [True, True, False, True, True, False, False, True, True, False, True, True]
        assert recs[4][2]["previous"] == model("Mars") and recs[4][5]["previous"] == model("Io")
        assert "error" in recs[4][6] and recs[4][6]["source"] is None
        assert len(srv.searches) == 4  # j1 filled the cache; j4 searched nothing
        p = cli(f"fromlist={lst}", f"url={srv.url}", "verify=no", "jobs=0", "-q", env=env)
        assert p.returncode == 1 and p.stdout.count("[unchanged]") == 11  # -q quiets stderr only
        assert p.stderr.splitlines() == [f"shaperesolver: {bad}: not an ISIS cube label (it does not start with "
                                         "'Object = IsisCube')"]


def test_jobs_usage_errors(tmp_path, env):
    [c] = make_cubes(tmp_path, 1)
    for args in (["jobs=-1"], ["jobs=many"], ["jobs=2", "scheduler=tcp://127.0.0.1:1"]):
        p = cli(f"from={c}", "shape=ellipsoid", *args, env=env)
        assert p.returncode == 2 and p.stderr.startswith("shaperesolver: ") and p.stderr.count("\n") == 1, p.stderr


def test_api_threads_and_process_pool_match_sequential(tmp_path):
    from concurrent.futures import ProcessPoolExecutor

    with StacServer(stac_items()) as srv:
        kw = dict(url=srv.url, cache="no", verify=False)
        seq = write_batch(make_cubes(tmp_path / "a", 40), **kw)
        assert len(srv.searches) == 4
        thr = write_batch(make_cubes(tmp_path / "b", 40), jobs=4, **kw)
        assert len(srv.searches) == 8
        with ProcessPoolExecutor(2) as pool, Resolver(**kw) as r:
            prc = write_batch(make_cubes(tmp_path / "c", 40), pool, resolver=r)
        assert len(srv.searches) == 12  # the pool's processes never search
    names = lambda recs: [{**r, "cube": Path(r["cube"]).name} for r in recs]  # noqa: E731
    assert names(seq) == names(thr) == names(prc)
    assert all(r["written"] and r["shape_model"] == model(body_of(i)) for i, r in enumerate(seq))


def test_resolver_and_results_pickle(tmp_path):
    with StacServer(stac_items()) as srv:
        r = Resolver(url=srv.url, cache_dir=tmp_path / "cache", verify=False, claim_wait=5)
        res = r.resolve(target="MARS")
        r2 = pickle.loads(pickle.dumps(r))
        assert r2.resolve(target="MARS") == res and len(srv.searches) == 1  # the table travelled
        assert r2.claim_wait == 5 and r2.cache.directory == r.cache.directory and r2.url == r.url
        assert pickle.loads(pickle.dumps(res)) == res
        [c] = make_cubes(tmp_path, 1)
        [rec] = write_batch([c], resolver=r2)
        assert pickle.loads(pickle.dumps(rec)) == rec
    from shaperesolver import NotACubeError, ResolutionError

    e = pickle.loads(pickle.dumps(ResolutionError(["web failed", "no ISISDATA"])))
    assert e.reasons == ("web failed", "no ISISDATA")
    e = pickle.loads(pickle.dumps(NotACubeError("/x.cub", "not a cube")))
    assert str(e) == "/x.cub: not a cube" and e.path == "/x.cub"


# ------------------------------------------------------------------ one search per body across processes

LAUNCHER = """
import os, sys, time
from shaperesolver.cli import main
ready, gate = sys.argv[1], sys.argv[2]
open(ready, "w").close()
while not os.path.exists(gate):
    time.sleep(0.005)
sys.exit(main(sys.argv[3:]))
"""


def start_gated(tmp_path, argvs, env):
    """Start processes that import shaperesolver, then wait at a gate; returns (procs, open_gate)."""
    (tmp_path / "ready").mkdir(exist_ok=True)
    gate = tmp_path / "gate"
    procs = [subprocess.Popen([sys.executable, "-c", LAUNCHER, str(tmp_path / "ready" / str(i)), str(gate), *argv],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i, argv in enumerate(argvs)]
    deadline = time.time() + 120
    while len(os.listdir(tmp_path / "ready")) < len(procs):
        assert time.time() < deadline, "processes did not start"
        time.sleep(0.05)
    return procs, gate


def test_64_processes_with_a_cold_shared_cache_send_one_search_per_body(tmp_path, env):
    cs = make_cubes(tmp_path / "cubes", 64)
    with SlowStac(stac_items(), delay=0.5) as srv:
        procs, gate = start_gated(tmp_path, [[f"from={c}", f"url={srv.url}", "verify=no", "--json"] for c in cs], env)
        t0 = time.time()
        gate.touch()  # all 64 start their batch now
        outs = [p.communicate(timeout=120) for p in procs]
        took = time.time() - t0
        assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
        searched = sorted(s["body"]["query"]["ssys:targets"]["in"][0] for s in srv.searches)
    assert searched == ["Ceres", "Io", "Mars", "Moon"]
    for i, (out, _) in enumerate(outs):
        [rec] = jsonl(out)
        assert rec["shape_model"] == model(body_of(i)) and rec["written"]
    assert took < 60


def test_a_killed_claim_holder_does_not_block_the_others(tmp_path, env):
    cs = make_cubes(tmp_path / "cubes", 6)
    mars = [c for i, c in enumerate(cs) if body_of(i) == "Mars"]
    with SlowStac(stac_items(), first_delay=300) as srv:  # the holder's search hangs
        holder = subprocess.Popen([sys.executable, "-m", "shaperesolver", f"from={mars[0]}", f"url={srv.url}", "verify=no"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while not srv.searches:
            assert time.time() < deadline and holder.poll() is None
            time.sleep(0.02)
        waiters = [subprocess.Popen([sys.executable, "-m", "shaperesolver", f"from={mars[1]}", f"url={srv.url}",
                                     "verify=no", "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True) for _ in range(3)]
        time.sleep(1.5)  # they are waiting on the holder's claim
        assert all(w.poll() is None for w in waiters) and len(srv.searches) == 1
        t0 = time.time()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        outs = [w.communicate(timeout=30) for w in waiters]
        took = time.time() - t0
        assert all(w.returncode == 0 for w in waiters), outs
        assert len(srv.searches) == 2  # one waiter took the claim over; the others used its entry
    assert took < 10  # far below the 60 s bound
    assert all(jsonl(o)[0]["shape_model"] == model("Mars") for o, _ in outs)
    assert read_label(mars[0]).shape_model is None  # the killed holder wrote nothing


def test_a_stuck_claim_holder_is_waited_for_only_up_to_the_bound(tmp_path, env):
    cs = make_cubes(tmp_path / "cubes", 2)
    with SlowStac(stac_items(), first_delay=300) as srv:
        holder = subprocess.Popen([sys.executable, "-m", "shaperesolver", f"from={cs[0]}", f"url={srv.url}", "verify=no"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 60
            while not srv.searches:
                assert time.time() < deadline and holder.poll() is None
                time.sleep(0.02)
            os.kill(holder.pid, signal.SIGSTOP)  # alive, holding its claim, doing nothing
            t0 = time.time()
            p = cli(f"from={cs[0]}", f"url={srv.url}", "verify=no", "--json", env={**env, "SHAPERESOLVER_CLAIM_WAIT": "2"})
            took = time.time() - t0
        finally:
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait()
    assert p.returncode == 0 and jsonl(p.stdout)[0]["shape_model"] == model("Mars"), p.stderr
    assert "searching myself" in p.stderr and 2 <= took < 15


def test_a_failed_search_is_shared_with_the_waiters(tmp_path, env, isisdata):
    cs = make_cubes(tmp_path / "cubes", 1)
    with SlowStac(stac_items(), delay=1.0) as srv:
        srv.fault(status=503, body={"message": "down"}, delay=1.0, times=100)
        argv = [f"from={cs[0]}", f"url={srv.url}", "verify=no", f"isisdata={isisdata}", "dryrun=yes", "--json"]
        procs, gate = start_gated(tmp_path, [argv] * 6, {**env})
        gate.touch()
        outs = [p.communicate(timeout=120) for p in procs]
        n = len(srv.requests)
    recs = [jsonl(o)[0] for o, _ in outs]
    assert all(r["source"] is None and "503" in r["error"] for r in recs), recs  # no answer: each cube fails
    assert n <= 4 * 2  # one process's retries (3 + 1), not six processes' one after the other (plus stragglers)


# ------------------------------------------------------------------ Dask



def _listening_only_on_loopback():
    import psutil

    me = psutil.Process()
    pids = {me.pid, *(c.pid for c in me.children(recursive=True))}
    bad = [c for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.pid in pids
           and c.laddr.ip not in ("127.0.0.1", "::1")]
    return bad


@pytest.mark.cluster
def test_dask_1000_cubes_via_scheduler_and_api(tmp_path, env, dask_cluster):
    cluster, client = dask_cluster
    assert not _listening_only_on_loopback()
    assert all(a.startswith("tcp://127.0.0.1:") for a in [cluster.scheduler_address, *client.scheduler_info()["workers"]])
    with StacServer(stac_items()) as srv:
        cs = make_cubes(tmp_path / "cli", 1000)
        lst = tmp_path / "list.txt"
        lst.write_text("".join(f"{c}\n" for c in cs))
        t0 = time.time()
        p = cli(f"fromlist={lst}", f"url={srv.url}", "verify=no", f"scheduler={cluster.scheduler_address}", "--json", env=env)
        took_cli = time.time() - t0
        assert p.returncode == 0, p.stderr[-2000:]
        assert len(srv.searches) == 4
        recs = jsonl(p.stdout)
        assert [r["cube"] for r in recs] == [str(c) for c in cs]
        for i, (c, r) in enumerate(zip(cs, recs)):
            want = model(body_of(i))
            assert r["shape_model"] == want and r["written"] and r["source"] == "web" and r["body"] == body_of(i)
            assert set(r) >= {"cube", "target", "body", "shape_model", "source", "item_id", "version",
                              "fallback_reason", "db", "written", "previous", "removed_elevation_model"}
        assert all(read_label(c).shape_model == model(body_of(i)) for i, c in enumerate(cs))
        assert "1000 cubes: 1000 written" in p.stderr
        # the API, with a fresh cold cache
        cs2 = make_cubes(tmp_path / "api", 1000)
        before = len(srv.searches)
        t0 = time.time()
        recs = write_batch(cs2, client, url=srv.url, cache_dir=tmp_path / "cache-api", verify=False)
        took_api = time.time() - t0
        assert len(srv.searches) - before == 4
        assert [r["cube"] for r in recs] == [str(c) for c in cs2] and all("error" not in r for r in recs)
        assert all(read_label(c).shape_model == model(body_of(i)) for i, c in enumerate(cs2))
        again = write_batch(cs2, client, url=srv.url, cache_dir=tmp_path / "cache-api", verify=False)
        assert not any(r["written"] for r in again) and len(srv.searches) - before == 4
    assert took_cli < 60 and took_api < 60


@pytest.mark.cluster
def test_dask_worker_killed_mid_batch(tmp_path, dask_cluster):
    cluster, client = dask_cluster
    n = 1500
    cs = make_cubes(tmp_path / "cubes", n)
    old = {t: cubes.write_attached(tmp_path / f"ref-{t}.cub", small_label(t), label_bytes=LABEL_BYTES, data_bytes=512)
           for t in TARGETS}
    old_bytes = {t: p.read_bytes()[:LABEL_BYTES] for t, p in old.items()}
    new_bytes = {}
    for t, p in old.items():
        write_shape_model(p, model(BODIES[t]))
        new_bytes[t] = p.read_bytes()[:LABEL_BYTES]
    data = {c: c.read_bytes()[LABEL_BYTES:] for c in cs}
    pids = client.run(os.getpid)
    with StacServer(stac_items()) as srv:
        out: dict = {}
        opts = BatchOptions()

        def go():
            with Resolver(url=srv.url, cache="no", verify=False) as r:
                out["recs"] = [x.record for x in run_batch(r, cs, opts, executor=client, chunk_size=25)]

        th = threading.Thread(target=go)
        th.start()
        deadline = time.time() + 60
        probe = cs[n // 10]
        while read_label(probe).shape_model is None:
            assert time.time() < deadline and th.is_alive()
            time.sleep(0.005)
        victim = sorted(pids.values())[0]
        os.kill(victim, signal.SIGKILL)
        # right after the kill: every cube holds its old label, its new one, or a journal the next reader replays
        torn, still_old = [], 0
        for i, c in enumerate(cs):
            head = c.read_bytes()[:LABEL_BYTES]
            t = TARGETS[i % 4]
            still_old += head == old_bytes[t]
            if head not in (old_bytes[t], new_bytes[t]) and not journal_path(c).exists():
                torn.append(c)
        th.join(120)
        assert not th.is_alive()
        assert len(srv.searches) == 4
    assert not torn and still_old > n // 4  # the kill came mid-batch
    recs = out["recs"]
    assert [r["cube"] for r in recs] == [str(c) for c in cs] and all("error" not in r for r in recs), \
        [r for r in recs if "error" in r][:3]
    for i, c in enumerate(cs):
        raw = c.read_bytes()
        assert raw[:LABEL_BYTES] == new_bytes[TARGETS[i % 4]] and raw[LABEL_BYTES:] == data[c]
    assert not any(journal_path(c).exists() for c in cs)
    assert victim not in client.run(os.getpid).values()  # it really died (and the nanny replaced it)


def test_a_files_key_is_the_same_in_every_process(tmp_path):
    """Scan tasks run in other processes (a process pool, Dask workers): the key that keeps
    entries naming one file in order must not depend on the process's hash seed."""
    cube = cubes.write_attached(tmp_path / "a.cub", small_label("Moon"), label_bytes=LABEL_BYTES)
    os.link(cube, tmp_path / "b.cub")
    code = ("import sys; from shaperesolver.scale.batch import scan_chunk; "
            "print([k for _, k, _, _ in scan_chunk([(0, sys.argv[1]), (1, sys.argv[2]), (2, sys.argv[3])], False)])")
    keys = []
    for seed in ("1", "2"):
        proc = subprocess.run([sys.executable, "-c", code, str(cube), str(tmp_path / "b.cub"), str(tmp_path / "gone.cub")],
                              env=dict(os.environ, PYTHONHASHSEED=seed), capture_output=True, text=True, check=True)
        keys.append(proc.stdout)
    assert keys[0] == keys[1], keys
    first = json.loads(keys[0])
    assert first[0] == first[1] != first[2]
