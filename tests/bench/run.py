"""Benchmarks: prints figures, asserts nothing.  Run with ``bash .ci/dev bench``.

1. labels read per second (target only): shaperesolver's fast reader vs pvl.loads
2. write time (read-modify-write with journal and fsync) on a 1 MB and a 4 GB sparse cube
3. resolving 1,000 cubes over 5 targets against a stac-server look-alike on 127.0.0.1:
   cold cache, warm cache, and pystac-client doing the same job
4. ``shaperesolver fromlist=`` over 10,000 small cubes (warm cache, verify=no) with
   ``jobs=1, 2, 4, 8`` and on a 2-worker Dask LocalCluster; fsyncs per cube (strace)
5. checking a remote COG against the body (issue 11): HTTP requests to the DEM's server
   for today's open, a first check, a warm-cache check and a stale entry
6. 64 processes starting at once with a cold shared cache: searches sent, wall time
7. peak memory (RSS) of ``fromlist=`` over 200,000 entries: jobs=1, jobs=4 and Dask
8. ``mirror=`` (issue 17): throughput against curl on the same loopback file, the share
   fetched again when resuming after a kill at 50 %, and a 1000x1000 window read from the
   local copy against /vsicurl/ from a server adding 20 ms per request
9. start-up (issue 18): one-cube runs (ellipsoid; web from the cache) against
   ``python -c pass``, median of paired runs
10. scale (issue 26): ``fromlist=`` dry runs over 10,000, 100,000 and 1,000,000 hard links
   to a few real cubes (ms per cube and the child's own peak memory, jobs=1 and jobs=2),
   a real write run of 100,000 cubes, and ``pvl.loads`` on the same labels
   (``SHAPERESOLVER_BENCH_SCALE=10000,100000`` picks other list lengths)
11. audit (issue 25): ``audit=yes`` over 10,000 hard links to real cubes of two bodies that
   name current, stale and no models (verify=yes: real GeoTIFFs over /vsicurl/ from a Range
   server on 127.0.0.1), next to ``dryrun=yes`` on the same list; searches and model GETs
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import warnings  # noqa: E402

import cubes  # noqa: E402
import pvl  # noqa: E402
from peak import PEAK_KIB  # noqa: E402
from servers import StacServer, item  # noqa: E402

from shaperesolver import HttpSettings, Resolver, read_label, write_shape_model  # noqa: E402
from shaperesolver.cube.pvlscan import scan  # noqa: E402

TARGETS = ["MARS", "Mars", "MOON", "Ceres", "IO"]
BODIES = {"MARS": "Mars", "Mars": "Mars", "MOON": "Moon", "Ceres": "Ceres", "IO": "Io"}


def typical_label() -> str:
    """A ~10 KB label: the Cassini test label with a realistic NaifKeywords block."""
    text = cubes.label_text("cassini_titan")
    extra = "".join(f"  INS-82360_EXTRA_{i:03d}           = ({i}.0, 0.0125, -{i}.5)\n" for i in range(120))
    return text.replace("END_OBJECT\nEnd\n", extra + "END_OBJECT\nEnd\n")


def rate(fn, seconds=1.5) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


def bench_read(tmp: Path) -> None:
    text = typical_label()
    path = cubes.write_attached(tmp / "typical.cub", text)
    print(f"\n== 1. reading the target of a {len(text) / 1024:.1f} KB label ==")
    r_read = rate(lambda: read_label(path).target)
    r_scan = rate(lambda: scan(text))
    r_pvl = rate(lambda: pvl.loads(text)["IsisCube"]["Instrument"]["TargetName"], 3)
    print(f"read_label(path).target   {r_read:9.0f} labels/s  ({1000 / r_read:.3f} ms each, file I/O included)")
    print(f"fast reader on the text   {r_scan:9.0f} labels/s  ({1000 / r_scan:.3f} ms each)")
    print(f"pvl.loads                 {r_pvl:9.1f} labels/s  ({1000 / r_pvl:.1f} ms each)")
    print(f"speed-up over pvl.loads   {r_read / r_pvl:9.0f}x")


def bench_read_real(tmp: Path) -> None:
    """Reads per second over the real ISIS labels of tests/data/real (when present)."""
    sys.path.insert(0, str(HERE.parent))
    import test_real_labels as real  # noqa: E402 - the test module knows where the set is

    paths = []
    for row in real.ROWS:
        try:
            src = real._source(row["name"])
        except BaseException:  # noqa: BLE001 - pytest's skip when the set is absent
            print("\n== 1b. real labels: the real set is not on this machine; skipped ==")
            return
        if row["role"] == "positive" and src.suffix in (".cub", ".lbl"):
            paths.append(src)
    ok = [p for p in paths if read_label(p).target]
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 2.0:
        for p in ok:
            read_label(p).target
        n += len(ok)
    took = time.perf_counter() - t0
    print(f"\n== 1b. reading the {len(ok)} real ISIS cubes and labels of tests/data/real ==")
    print(f"read_label(path).target   {n / took:9.0f} labels/s  ({1000 * took / n:.3f} ms each)")


def bench_write(tmp: Path) -> None:
    print("\n== 2. writing ShapeModel (journal + fsync + lock, read back and checked) ==")
    text = cubes.label_text("viking_mars")
    for name, size in (("1 MB", 2**20), ("4 GB sparse", 4 * 2**30)):
        path = cubes.write_attached(tmp / f"w{size}.cub", text)
        with open(path, "r+b") as f:
            f.truncate(size)
        times = []
        for i in range(40):
            value = f"/vsicurl/https://dems.example.org/mars{i % 2}.tiff"
            t0 = time.perf_counter()
            out = write_shape_model(path, value)
            times.append(time.perf_counter() - t0)
            assert out.written
        times.sort()
        print(f"{name:12s} median {1000 * times[len(times) // 2]:.2f} ms, p90 {1000 * times[int(len(times) * 0.9)]:.2f} ms"
              f" over {len(times)} writes; file size still {os.path.getsize(path)} bytes")


def make_cubes(tmp: Path, n: int) -> list[str]:
    base = cubes.label_text("viking_mars").replace("Bytes = 65536", "Bytes = 8192")
    base = base.replace("StartByte   = 65537", "StartByte   = 8193")
    out = []
    for i in range(n):
        target = TARGETS[i % len(TARGETS)]
        p = tmp / f"c{i:05d}.cub"
        cubes.write_attached(p, base.replace("= MARS\n", f"= {target}\n"), label_bytes=8192, data_bytes=1024)
        out.append(str(p))
    return out


def stac_items():
    items = []
    for body in ("Mars", "Moon", "Ceres", "Io"):
        for v in range(1, 6):
            items.append(item(f"{body.lower()}dem{v:04d}", [body], f"{v:04d}", f"202{v}-01-01T00:00:00Z"))
    return items


def bench_web(tmp: Path) -> None:
    print("\n== 3. resolving 1,000 cubes over 5 targets (verify=no, stac-server look-alike on loopback) ==")
    (tmp / "web").mkdir()
    paths = make_cubes(tmp / "web", 1000)
    http = HttpSettings(retries=0)
    with StacServer(stac_items()) as srv:
        cache = tmp / "cache"
        for label in ("cold cache", "warm cache"):
            before = len(srv.requests)
            t0 = time.perf_counter()
            with Resolver(url=srv.url, cache_dir=cache, verify=False, http=http) as r:
                got = {r.resolve(p).shape_model for p in paths}
            took = time.perf_counter() - t0
            print(f"shaperesolver, {label:10s} {len(srv.requests) - before:4d} HTTP requests, {took:6.2f} s, "
                  f"{len(got)} distinct models")
        try:
            from pystac_client import Client
        except ImportError:
            print("pystac-client not installed (bash .ci/dev bench installs it)")
            return
        before = len(srv.requests)
        t0 = time.perf_counter()
        models = set()
        for p in paths:  # what a processing script does with pystac-client: open + search per cube
            target = read_label(p).target
            client = Client.open(srv.url)
            search = client.search(collections=["isis-global-dtms"], query={"ssys:targets": {"in": [BODIES[target]]}},
                                   sortby=[{"field": "properties.version", "direction": "desc"}], max_items=1, method="POST")
            found = list(search.items())
            models.add(found[0].assets["image"].href if found else None)
        took = time.perf_counter() - t0
        print(f"pystac-client, per cube  {len(srv.requests) - before:4d} HTTP requests, {took:6.2f} s, "
              f"{len(models)} distinct models (no version choice of its own, no cache)")
        before = len(srv.requests)
        t0 = time.perf_counter()
        client = Client.open(srv.url)
        memo: dict[str, object] = {}
        for p in paths:
            body = BODIES[read_label(p).target]
            if body not in memo:
                s = client.search(collections=["isis-global-dtms"], query={"ssys:targets": {"in": [body]}},
                                  sortby=[{"field": "properties.version", "direction": "desc"}], max_items=1, method="POST")
                memo[body] = next(iter(s.items()), None)
        took = time.perf_counter() - t0
        print(f"pystac-client, memoised  {len(srv.requests) - before:4d} HTTP requests, {took:6.2f} s")


def _env(tmp: Path, cache: str, **extra: str) -> dict[str, str]:
    root = str(HERE.parent.parent)
    path = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    return dict(os.environ, SHAPERESOLVER_CACHE_DIR=str(tmp / cache), PYTHONPATH=path, **extra)


def _cli(*args: str, env: dict[str, str], prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "shaperesolver", *args], env=env, capture_output=True, text=True)


def _versioned_items():
    return [item(f"{b.lower()}dem{v:04d}", [b], f"{v:04d}", f"202{v}-01-01T00:00:00Z")
            for b in ("Mars", "Moon", "Ceres", "Io") for v in (1, 2)]


def bench_fromlist(tmp: Path) -> None:
    print("\n== 4. shaperesolver fromlist= over 10,000 small cubes (warm cache, verify=no): jobs=N and Dask ==")
    (tmp / "batch").mkdir()
    paths = make_cubes(tmp / "batch", 10000)
    lst = tmp / "list.txt"
    lst.write_text("\n".join(paths) + "\n")
    env = _env(tmp, "cache10k")
    with StacServer(_versioned_items()) as srv:
        for t in TARGETS:  # warm the cache for every body and both pins
            for v in ("1", "2"):
                _cli(f"from={paths[TARGETS.index(t)]}", f"url={srv.url}", "verify=no", f"version={v}", "dryrun=yes", "-q",
                     env=env)
        runs: list[tuple[str, list[str]]] = [(f"jobs={j}", [f"jobs={j}"]) for j in (1, 2, 4, 8)]
        cluster = None
        try:
            from distributed import LocalCluster

            cluster = LocalCluster(n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1",
                                   dashboard_address=None)
            runs.append(("Dask, 2 workers", [f"scheduler={cluster.scheduler_address}"]))
        except ImportError:
            print("distributed not installed (pip install 'shaperesolver[dask]'): no Dask figure")
        base = None
        try:
            for n, (label, extra) in enumerate(runs):
                version = "2" if n % 2 == 0 else "1"  # every run rewrites every cube
                before = len(srv.requests)
                t0 = time.perf_counter()
                proc = _cli(f"fromlist={lst}", f"url={srv.url}", "verify=no", f"version={version}", "--json", *extra,
                            env=env)
                took = time.perf_counter() - t0
                recs = [json.loads(line) for line in proc.stdout.splitlines()]
                written = sum(r["written"] for r in recs)
                base = base or took
                print(f"{label:16s} {len(recs)} cubes in {took:6.2f} s  {1000 * took / max(1, len(recs)):6.3f} ms per cube"
                      f"  speed-up {base / took:4.2f}x  ({written} written, exit {proc.returncode}, "
                      f"{len(srv.requests) - before} HTTP requests)")
        finally:
            if cluster is not None:
                cluster.close()
        _fsyncs(tmp, paths[:1000], srv.url, env)
    print("(2 cores here, shared; on Lustre/NFS, where an fsync costs milliseconds, jobs=N hides the latency)")


def _fsyncs(tmp: Path, paths: list[str], url: str, env: dict[str, str]) -> None:
    import shutil

    strace = shutil.which("strace")
    if strace is None:
        print("fsyncs per cube: strace not installed")
        return
    lst = tmp / "list1000.txt"
    lst.write_text("\n".join(paths) + "\n")
    out = tmp / "strace.txt"
    proc = _cli(f"fromlist={lst}", f"url={url}", "verify=no", "shape=ellipsoid", "-q", env=env,
                prefix=(strace, "-f", "-c", "-o", str(out), "-e", "trace=fsync,fdatasync,sync_file_range"))
    calls = 0
    for line in out.read_text().splitlines():
        parts = line.split()
        if parts and parts[-1] in ("fsync", "fdatasync", "sync_file_range"):
            calls += int(parts[3])
    print(f"fsyncs per cube: {calls / len(paths):.2f} (strace -c -f over {len(paths)} writes, exit {proc.returncode})")


LAUNCH = "import sys; from shaperesolver.cli import main; sys.exit(main(sys.argv[1:]))"


def bench_cold_start(tmp: Path) -> None:
    print("\n== 6. 64 processes start at once with a cold shared cache (4 bodies; searches take 0.2 s) ==")
    (tmp / "cold").mkdir()
    paths = make_cubes(tmp / "cold", 64)  # MARS, Mars, MOON, Ceres, IO: 4 bodies

    class Slow(StacServer):
        def search(self, body):  # type: ignore[no-untyped-def]
            time.sleep(0.2)
            return super().search(body)

    for label, extra in (("claims off (SHAPERESOLVER_CLAIM_WAIT=0)", {"SHAPERESOLVER_CLAIM_WAIT": "0"}), ("with claims", {})):
        with Slow(stac_items()) as srv:
            env = _env(tmp, f"cold-{len(extra)}", **extra)
            t0 = time.perf_counter()
            procs = [subprocess.Popen([sys.executable, "-c", LAUNCH, f"from={p}", f"url={srv.url}", "verify=no",
                                       "dryrun=yes", "-q"], env=env) for p in paths]
            codes = [p.wait() for p in procs]
            took = time.perf_counter() - t0
            print(f"{label:42s} {len(srv.searches):3d} searches sent, wall time {took:5.2f} s, "
                  f"{sum(c != 0 for c in codes)} failed")


def make_cog(path: Path, width: int = 4096, height: int = 2048) -> Path:
    """A Mars radius COG (float32, 512x512 tiles, DEFLATE, overviews) written with GDAL."""
    import numpy as np
    from osgeo import gdal, osr

    lat = np.radians(np.linspace(89.9, -89.9, height))[:, None]
    lon = np.radians(np.linspace(-180, 180, width))[None, :]
    a, c = 3396190.0, 3376200.0
    r = a * c / np.sqrt((c * np.cos(lat)) ** 2 + (a * np.sin(lat)) ** 2) + 8000.0 * np.sin(3 * lon) * np.cos(2 * lat)
    mem = gdal.GetDriverByName("MEM").Create("", width, height, 1, gdal.GDT_Float32)
    mem.SetGeoTransform((-180.0, 360.0 / width, 0.0, 90.0, 0.0, -180.0 / height))
    srs = osr.SpatialReference()
    srs.SetGeogCS("Mars 2000", "D_Mars_2000", "Mars_2000_IAU_IAG", a, 0.0)
    mem.SetProjection(srs.ExportToWkt())
    mem.GetRasterBand(1).WriteArray(r.astype(np.float32))
    gdal.GetDriverByName("COG").CreateCopy(str(path), mem, options=["BLOCKSIZE=512", "COMPRESS=DEFLATE",
                                                                    "RESAMPLING=AVERAGE"])
    return path


def bench_modelcheck(tmp: Path) -> None:
    from osgeo import gdal
    from servers import RangeServer

    from shaperesolver.models.raster import open_model

    print("\n== 5. checking a remote COG against the body (4096x2048 float32, 512x512 tiles, overviews) ==")
    www = tmp / "www"
    www.mkdir()
    make_cog(www / "mars.tif")
    with RangeServer(www) as files, StacServer([item("mars0005", ["Mars"], "0005", href=files.url("mars.tif"))]) as srv:
        gdal.VSICurlClearCache()
        t0 = time.perf_counter()
        open_model("/vsicurl/" + files.url("mars.tif"))
        print(f"open and verify structure (before issue 11)  {len(files.requests):2d} HTTP requests, "
              f"{1000 * (time.perf_counter() - t0):6.1f} ms")
        rows = (("first check", {}), ("warm cache", {}), ("stale entry, same size/Last-Modified", {"cache_ttl": 0.0}))
        for label, kw in rows:
            gdal.VSICurlClearCache()
            before = len(files.requests)
            t0 = time.perf_counter()
            with Resolver(url=srv.url, cache_dir=tmp / "cache-check", http=HttpSettings(retries=0), **kw) as r:
                res = r.resolve(target="Mars")
            took = time.perf_counter() - t0
            print(f"{label:44s} {len(files.requests) - before:2d} HTTP requests to the DEM, {took * 1000:6.1f} ms "
                  f"({res.source}; {r.requests_sent} to the STAC API)")


# (the child's own peak, then its largest worker process's (jobs=N runs them; 0 when none ran))
RSS = ("import resource, sys; from shaperesolver.cli import main; code = main(sys.argv[2:]); "
       f"open(sys.argv[1], 'w').write(str({PEAK_KIB}) + ' ' + "
       "str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(code)")


def _peaks(out: Path) -> tuple[float, float]:
    """(the command's own peak, its largest worker's), MiB, as RSS wrote them."""
    own, workers = out.read_text().split()
    return int(own) / 1024, int(workers) / 1024


def _peak_text(own: float, workers: float, jobs: int) -> str:
    if not workers:
        return f"peak {own:5.0f} MiB"
    return f"peak {own:5.0f} MiB + {jobs} workers x {workers:3.0f} MiB = {own + jobs * workers:4.0f} MiB"


def bench_memory(tmp: Path) -> None:
    n = 200_000
    print(f"\n== 7. peak RSS of shaperesolver fromlist= over {n:,} entries (dry run, shape=ellipsoid, --json) ==")
    lst = tmp / "list200k.txt"
    lst.write_text("".join(f"{tmp}/none/c{i:06d}.cub\n" for i in range(n)))
    runs: list[tuple[str, list[str]]] = [("jobs=1", ["jobs=1"]), ("jobs=4", ["jobs=4"])]
    cluster = None
    try:
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1",
                               dashboard_address=None)
        runs.append(("Dask, 2 workers", [f"scheduler={cluster.scheduler_address}"]))
    except ImportError:
        print("distributed not installed: no Dask figure")
    try:
        for label, extra in runs:
            out = tmp / "rss.txt"
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", RSS, str(out), f"fromlist={lst}", "shape=ellipsoid",
                                   "dryrun=yes", "--json", *extra], env=_env(tmp, "cache-rss"),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            took = time.perf_counter() - t0
            own, workers = _peaks(out)
            jobs = 4 if label == "jobs=4" else 0
            print(f"{label:16s} peak RSS {own:6.0f} MiB (the client process)"
                  + (f" + 4 worker processes x {workers:.0f} MiB" if jobs and workers else "")
                  + f"  {took:6.1f} s  exit {proc.returncode}")
    finally:
        if cluster is not None:
            cluster.close()


BENCHES = {"read": bench_read, "real": bench_read_real, "write": bench_write, "web": bench_web, "fromlist": bench_fromlist,
           "modelcheck": bench_modelcheck, "coldstart": bench_cold_start, "memory": bench_memory}


def bench_mirror(tmp: Path) -> None:
    """Issue 17: mirror throughput vs curl, a resume after a kill at 50 %, a local vs remote window read."""
    import shutil
    import signal

    import dems
    from osgeo import gdal
    from servers import RangeServer

    from shaperesolver.mirror import Mirror

    www = tmp / "mirror-www"
    www.mkdir()
    dems.make_cog(www / "mars.tif", "Mars", 8192, 4096)  # 180 MB
    size = (www / "mars.tif").stat().st_size
    exe = str(Path(sys.executable).parent / "shaperesolver")
    env = {**os.environ, "SHAPERESOLVER_CLAIM_WAIT": "0"}
    print(f"\n== 8. mirroring a {size / 2**20:.0f} MB COG from 127.0.0.1 ==")
    with RangeServer(www) as rs, StacServer([item("molaMars0005", ["Mars"], "0005", href=rs.url("mars.tif"))]) as stac:
        t_curl = t_mirror = t_cli = float("inf")
        for n in range(3):  # best of three, taking turns (the machine is shared)
            t0 = time.perf_counter()
            subprocess.run(["curl", "-sf", "-o", str(tmp / "curl.tif"), rs.url("mars.tif")], check=True)
            t_curl = min(t_curl, time.perf_counter() - t0)
            shutil.rmtree(tmp / "m1", ignore_errors=True)
            t0 = time.perf_counter()
            subprocess.run([exe, "cache=no", f"url={stac.url}", "target=Mars", f"mirror={tmp / 'm1'}", "-q"],
                           check=True, env=env)
            t_cli = min(t_cli, time.perf_counter() - t0)
            shutil.rmtree(tmp / "m1", ignore_errors=True)
            with Resolver(url=stac.url, cache="no") as r:
                t0 = time.perf_counter()
                Mirror(tmp / "m1", r).add("Mars")
                t_mirror = min(t_mirror, time.perf_counter() - t0)
        print(f"curl:                      {size / t_curl / 2**20:7.0f} MB/s ({t_curl:.2f} s)")
        print(f"Mirror.add (API):          {size / t_mirror / 2**20:7.0f} MB/s ({t_mirror:.2f} s: search, download, "
              f"SHA-256, GDAL open and model check) = {t_curl / t_mirror:.2f}x curl")
        print(f"shaperesolver mirror=:     {size / t_cli / 2**20:7.0f} MB/s ({t_cli:.2f} s, the same plus starting "
              f"Python and GDAL) = {t_curl / t_cli:.2f}x curl")
        rs.rate = 64 * 2**20
        before = rs.served.get("mars.tif", 0)
        proc = subprocess.Popen([exe, "cache=no", f"url={stac.url}", "target=Mars", f"mirror={tmp / 'm2'}", "-q"], env=env)
        while rs.served.get("mars.tif", 0) - before < size // 2:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.3)
        first = rs.served["mars.tif"] - before
        rs.rate = None
        subprocess.run([exe, "cache=no", f"url={stac.url}", "target=Mars", f"mirror={tmp / 'm2'}", "-q"], check=True, env=env)
        again = rs.served["mars.tif"] - before - first
        print(f"killed at {100 * first / size:.0f} %, the resumed run fetched {100 * again / size:.0f} % of the file again")
    local = str(tmp / "m1" / "Mars" / "isis-global-dtms" / "molaMars0005" / "mars.tif")
    with RangeServer(www, delay=0.02) as slow:
        remote = "/vsicurl/" + slow.url("mars.tif")
        for name, path in (("local copy", local), ("/vsicurl/, +20 ms per request", remote)):
            gdal.VSICurlClearCache()
            t0 = time.perf_counter()
            ds = gdal.Open(path)
            ds.GetRasterBand(1).ReadRaster(3000, 1500, 1000, 1000)
            dt = time.perf_counter() - t0
            extra = f", {len(slow.requests)} requests" if path == remote else ""
            print(f"open + 1000x1000 window, {name + ':':32s} {1000 * dt:7.1f} ms{extra}")


BENCHES["mirror"] = bench_mirror


def _plain_venv(tmp: Path) -> Path:
    """A plain venv (no system site-packages) from /usr/bin/python3 with the wheel of this
    checkout installed, as a user installs it; GDAL is not needed for the runs timed here."""
    venv = tmp / "plain-venv"
    wheels = tmp / "wheels"
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(wheels), str(root)],
                   check=True, capture_output=True)
    base = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    subprocess.run([base, "-m", "venv", str(venv)], check=True, capture_output=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", *map(str, wheels.glob("*.whl"))], check=True, capture_output=True)
    subprocess.run([*pip, "requests>=2.28", "pvl>=1.3", "platformdirs>=3", "tqdm>=4.60"], check=True, capture_output=True)
    return venv


def _own_import_ms(python: str, args: list[str], env: dict[str, str]) -> tuple[float, int]:
    """-X importtime: the summed self time of the package's own modules (ms), and how many."""
    p = subprocess.run([python, "-X", "importtime", "-c", "import sys; from shaperesolver.cli import main; "
                        "sys.argv[0] = 'shaperesolver'; sys.exit(main(sys.argv[1:]))", *args],
                       env=env, capture_output=True, text=True, check=True)
    own = [int(line.split("|")[0].split(":")[1]) for line in p.stderr.splitlines()
           if line.startswith("import time:") and line.split("|")[-1].strip().startswith("shaperesolver")]
    return sum(own) / 1000, len(own)


def bench_startup(tmp: Path) -> None:
    """Issues 18 and 24: one cube per process, as a shell loop calls it; paired with ``python -c pass``,
    both run by the interpreter of a plain venv (no system site-packages) with the wheel installed."""
    import statistics

    print("\n== 9. start-up: one cube per process (median of 31 paired runs; a plain venv with the wheel) ==")
    try:
        venv = _plain_venv(tmp)
    except subprocess.CalledProcessError as exc:
        print(f"cannot build the plain venv ({exc.cmd[:3]}...): no figure\n{(exc.stderr or b'')[-400:]!r}")
        return
    python, exe = str(venv / "bin" / "python"), str(venv / "bin" / "shaperesolver")
    moon = cubes.write_attached(tmp / "startup_moon.cub", cubes.label_text("lro_moon"), data_bytes=256)
    env = _env(tmp, "cache-startup")
    env.pop("PYTHONPATH", None)
    with StacServer([item("moonDem0002", ["Moon"], "0002")]) as srv:
        subprocess.run([exe, f"from={moon}", f"url={srv.url}", "verify=no", "dryrun=yes"], env=env, check=True,
                       capture_output=True)
        url = srv.url
    runs = {
        "python -c pass": [python, "-c", "pass"],
        "shape=ellipsoid dryrun=yes": [exe, f"from={moon}", "shape=ellipsoid", "dryrun=yes"],
        "shape=ringplane dryrun=yes": [exe, f"from={moon}", "shape=ringplane", "dryrun=yes"],
        "shape=web, from the cache": [exe, f"from={moon}", f"url={url}", "verify=no", "dryrun=yes"],
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(31):
        for name, cmd in runs.items():  # taking turns: the machine's load hits all alike
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["python -c pass"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:28s} {med * 1000:7.1f} ms  {med / base:5.2f}x python -c pass")
    for name, cmd in runs.items():
        if cmd[0] == exe:
            ms, n = _own_import_ms(python, cmd[1:], env)
            print(f"-X importtime, shaperesolver's own modules ({name}): {ms:6.1f} ms in {n} modules")


BENCHES["startup"] = bench_startup

SCALE_LABELS = ("viking_mars", "ctx_mars", "lro_moon")  # attached Mars and Moon cubes of 84 KiB
SCALE_AREA, SCALE_DATA = 65536, 16384 + 2048


def _scale_cube(path: Path, text: str) -> None:
    """An 84 KiB attached cube whose label area and data are sparse (a hole reads as NULs)."""
    with open(path, "wb") as f:
        f.write(text.encode("latin-1"))
        f.truncate(SCALE_AREA + SCALE_DATA)


def _scale_run(tmp: Path, env: dict[str, str], lst: Path, *args: str) -> tuple[float, tuple[float, float], str]:
    """(seconds, (peak MiB of the child itself, of its largest worker), its summary line) of one ``fromlist=`` run."""
    out = tmp / "scale-peak.txt"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RSS, str(out), f"fromlist={lst}", *args], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    took = time.perf_counter() - t0
    summary = [line for line in proc.stderr.splitlines() if " cubes: " in line]
    return took, _peaks(out), (summary[-1].split(": ", 1)[1] if summary else proc.stderr[-300:])


def bench_scale(tmp: Path) -> None:
    """Issue 26: a million cubes on one machine."""
    sizes = [int(x) for x in os.environ.get("SHAPERESOLVER_BENCH_SCALE", "10000,100000,1000000").split(",")]
    print("\n== 10. scale: fromlist= dry runs (warm cache, verify=no) over hard links to "
          f"{16 * len(SCALE_LABELS)} real 84 KiB cubes; a real write run ==")
    texts = {name: cubes.label_text(name) for name in SCALE_LABELS}
    base_dir = tmp / "scale-base"
    base_dir.mkdir()
    base = []
    for i in range(16 * len(SCALE_LABELS)):
        name = SCALE_LABELS[i % len(SCALE_LABELS)]
        p = base_dir / f"b{i:03d}_{name}.cub"
        _scale_cube(p, texts[name])
        base.append(p)
    t0 = time.perf_counter()
    links, per_dir = tmp / "scale-links", 10_000
    names: list[str] = []
    for i in range(max(sizes)):
        d = links / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        p = d / f"l{i:07d}.cub"
        os.link(base[i % len(base)], p)
        names.append(str(p))
    print(f"data: {len(names):,} hard links in {time.perf_counter() - t0:.0f} s (each of the {len(base)} cubes has "
          f"{len(names) // len(base):,} names; a file's identity is shared, its name is not)")
    env = _env(tmp, "cache-scale")
    items = [item(f"{b.lower()}dem{v:04d}", [b], f"{v:04d}", f"202{v}-01-01T00:00:00Z")
             for b in ("Mars", "Moon") for v in (1, 2)]
    with StacServer(items) as srv:
        common = [f"url={srv.url}", "verify=no"]
        for pin in ([], ["version=1"], ["version=2"]):  # warm the cache for both bodies, unpinned and pinned
            _cli(f"from={base[0]}", *common, *pin, "dryrun=yes", "-q", env=env)
            _cli(f"from={base[2]}", *common, *pin, "dryrun=yes", "-q", env=env)
        per_cube: dict[tuple[int, int], float] = {}
        for n in sizes:
            lst = tmp / f"scale-{n}.txt"
            with open(lst, "w") as f:
                f.writelines(f"{x}\n" for x in names[:n])
            for jobs in (1, 2):
                took, peak, summary = _scale_run(tmp, env, lst, *common, "dryrun=yes", f"jobs={jobs}")
                per_cube[(n, jobs)] = 1000 * took / n
                speed = f"  speed-up {per_cube[(n, 1)] / per_cube[(n, 2)]:.2f}x" if jobs == 2 else ""
                print(f"dry run  {n:>9,} cubes  jobs={jobs}  {took:7.1f} s  {1000 * took / n:6.3f} ms/cube  "
                      f"{_peak_text(*peak, jobs)}{speed}  [{summary}]")
        del names
        n = min(100_000, max(sizes))
        wdir = tmp / "scale-write"
        t0 = time.perf_counter()
        wnames = []
        for i in range(n):
            d = wdir / f"d{i // per_dir:03d}"
            if i % per_dir == 0:
                d.mkdir(parents=True)
            p = d / f"w{i:07d}.cub"
            _scale_cube(p, texts[SCALE_LABELS[i % len(SCALE_LABELS)]])
            wnames.append(str(p))
        lst = tmp / "scale-write.txt"
        lst.write_text("".join(f"{x}\n" for x in wnames))
        print(f"data: {n:,} distinct sparse 84 KiB cubes in {time.perf_counter() - t0:.0f} s on "
              f"{_fs_type(wdir)}")
        for jobs, version in ((1, "2"), (2, "1")):  # each run rewrites every cube
            took, peak, summary = _scale_run(tmp, env, lst, *common, f"version={version}", f"jobs={jobs}")
            print(f"write    {n:>9,} cubes  jobs={jobs}  {took:7.1f} s  {1000 * took / n:6.3f} ms/cube  "
                  f"{_peak_text(*peak, jobs)}  [{summary}]")
        floor = _syscall_floor(wnames[: min(n, 20_000)])
        print(f"the write's system calls alone (lock, read, journal + fsync, directory fsync, label + fsync, "
              f"journal removal; no Python work): {floor:.3f} ms/cube over {min(n, 20_000):,} of the cubes")
    for name, text in texts.items():
        r_pvl = rate(lambda text=text: pvl.loads(text), 2)
        print(f"pvl.loads on the {name} label ({len(text) / 1024:.1f} KB): {1000 / r_pvl:6.2f} ms per label, "
              f"{1000 / r_pvl / per_cube[(sizes[0], 1)]:5.1f}x a whole dry-run cube at jobs=1")


def _syscall_floor(names: list[str]) -> float:
    """ms per cube of the crash-safe write's system calls, done bare over ``names``."""
    import fcntl

    t0 = time.perf_counter()
    for name in names:
        fd = os.open(name, os.O_RDWR | os.O_NOFOLLOW)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            area = os.pread(fd, SCALE_AREA, 0)
            head = area[: area.find(b"\0") if b"\0" in area else len(area)]
            journal = name + ".floor-journal"
            jfd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.posix_fallocate(jfd, 0, 2 * len(head) + 64)
                os.pwrite(jfd, head + head, 0)
                os.fsync(jfd)
            finally:
                os.close(jfd)
            dfd = os.open(os.path.dirname(name), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            os.pwrite(fd, head, 0)
            os.fsync(fd)
            os.unlink(journal)
        finally:
            os.close(fd)
    return 1000 * (time.perf_counter() - t0) / len(names)


def _fs_type(path: Path) -> str:
    try:
        proc = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True)
        return proc.stdout.strip() or "?"
    except OSError:
        return "?"


BENCHES["scale"] = bench_scale


def bench_audit(tmp: Path) -> None:
    """Issue 25: the audit time per cube next to a dry run over the same list."""
    from dems import make_cog as body_cog
    from servers import RangeServer

    n = int(os.environ.get("SHAPERESOLVER_BENCH_AUDIT", "10000"))
    print(f"\n== 11. audit: audit=yes vs dryrun=yes over {n:,} hard links to 48 real 84 KiB cubes "
          "(Mars and Moon; current, one version behind, Null), warm cache, verify=yes ==")
    models = tmp / "audit-models"
    models.mkdir()
    for body in ("Mars", "Moon"):
        for v in (1, 2):
            body_cog(models / f"{body.lower()}{v}.tif", body, 1024, 512)
    env = _env(tmp, "cache-audit")
    with RangeServer(models) as files:
        items = [item(f"{b.lower()}dem{v:04d}", [b], f"{v:04d}", f"202{v}-01-01T00:00:00Z",
                      href=files.url(f"{b.lower()}{v}.tif")) for b in ("Mars", "Moon") for v in (1, 2)]
        with StacServer(items) as srv:
            base_dir = tmp / "audit-base"
            base_dir.mkdir()
            base = []
            for i in range(48):
                name = ("viking_mars", "lro_moon")[i % 2]
                p = base_dir / f"b{i:03d}_{name}.cub"
                _scale_cube(p, cubes.label_text(name))
                how = ("version=2", "version=1", "shape=ellipsoid")[i % 3]  # current, stale, unset
                _cli(f"from={p}", f"url={srv.url}", how, "-q", env=env)
                base.append(p)
            links = tmp / "audit-links"
            links.mkdir()
            names = []
            for i in range(n):
                q = links / f"a{i:06d}.cub"
                os.link(base[i % len(base)], q)
                names.append(str(q))
            lst = tmp / "audit.txt"
            lst.write_text("".join(f"{x}\n" for x in names))
            common = [f"url={srv.url}", "verify=yes"]
            _cli(f"fromlist={lst}", *common, "audit=yes", "-q", env=env)  # warm: the checks are cached
            gets0, searches0 = len(files.requests), len(srv.searches)
            for label, extra in (("dryrun=yes", ("dryrun=yes",)), ("audit=yes ", ("audit=yes",))):
                for jobs in (1, 2):
                    took, peak, _ = _scale_run(tmp, env, lst, *common, *extra, f"jobs={jobs}")
                    print(f"{label}  {n:>7,} cubes  jobs={jobs}  {took:6.1f} s  {1000 * took / n:6.3f} ms/cube  "
                          f"{_peak_text(*peak, jobs)}")
            print(f"requests over the four warm runs: {len(srv.searches) - searches0} searches, "
                  f"{len(files.requests) - gets0} model requests")
            proc = _cli(f"fromlist={lst}", *common, "audit=yes", env=env)
            print("the audit's summary: " + proc.stderr.strip().splitlines()[-1])


BENCHES["audit"] = bench_audit


def main() -> None:
    """All benchmarks, or only those named on the command line (e.g. ``run.py modelcheck``)."""
    warnings.filterwarnings("ignore", module="pystac_client")
    chosen = sys.argv[1:] or list(BENCHES)
    unknown = [n for n in chosen if n not in BENCHES]
    if unknown:
        sys.exit(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    with tempfile.TemporaryDirectory(prefix="shaperesolver-bench-") as d:
        tmp = Path(d)
        for name in chosen:
            BENCHES[name](tmp)


if __name__ == "__main__":
    main()
