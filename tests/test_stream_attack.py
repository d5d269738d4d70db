"""Issue 26, attacked: what a long, repetitive, hostile or growing list and Ctrl-C did to the
streamed batch (an attack round by a helper).  Each test failed before its fix: a list naming
one cube 900 times hung a real run at 100 % CPU; a remembered "nothing matches" grew its
traceback by every cube that met it (90 KB a cube); lines that name no cube were read ahead
without limit with jobs=4; Ctrl-C dropped a failed cube from -errlist, or a -batchlist run's
failed rows; a row whose list grew after it was counted ran only its first cube.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cubes
from peak import PEAK_KIB

from shaperesolver.base.memo import Memo
from shaperesolver.errors import NoMatchError

ROOT = Path(__file__).resolve().parent.parent
EXE = str(Path(sys.executable).parent / "shaperesolver")
OFFLINE = [f"catalog={ROOT / 'data' / 'catalog' / 'catalog.json'}", f"isisdata={ROOT / 'data' / 'isisdata'}",
           "verify=no"]


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_a_list_naming_one_cube_900_times_is_written_once_and_ends(tmp_path, env):
    cube = cubes.make(tmp_path, "viking_mars")
    lst = tmp_path / "l.txt"
    lst.write_text(f"{cube}\n" * 900)
    proc = cli(f"fromlist={lst}", "jobs=2", "shape=ellipsoid", "--json", *OFFLINE, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-500:]
    recs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(recs) == 900 and recs[0]["written"] and not any(r["written"] for r in recs[1:])


def test_a_remembered_error_does_not_grow_with_every_caller():
    memo = Memo()

    def make():
        raise NoMatchError("no web shape model for Moon")

    depths = []
    for _ in range(50):
        try:
            memo.get(("Moon", None), make)
        except NoMatchError as exc:
            tb, n = exc.__traceback__, 0
            while tb is not None:
                tb, n = tb.tb_next, n + 1
            depths.append(n)
    assert max(depths) <= 3 and depths[-1] == depths[1], depths  # (before: one more frame per caller, for good)


PEAK = textwrap.dedent("""
    import sys
    from shaperesolver.cli import main
    code = main(sys.argv[2:])
    open(sys.argv[1], "w").write(str(PEAK_KIB))
    sys.exit(code)
""").replace("PEAK_KIB", PEAK_KIB)


def test_lines_that_name_no_cube_are_not_read_ahead_without_limit(tmp_path, env):
    cube = cubes.make(tmp_path, "viking_mars")
    lst = tmp_path / "bad.txt"
    with open(lst, "wb") as f:
        f.write(f"{cube}\n".encode())
        f.write(b"bad\x00name\n" * 150_000)
    peaks = {}
    for jobs in (1, 4):
        out = tmp_path / f"peak{jobs}"
        proc = subprocess.run([sys.executable, "-c", PEAK, str(out), f"fromlist={lst}", "dryrun=yes", f"jobs={jobs}",
                               "-q", *OFFLINE], capture_output=True, env=env, timeout=600)
        assert proc.returncode == 1
        peaks[jobs] = int(out.read_text()) / 1024
    assert peaks[4] < 2 * peaks[1] + 10, peaks


def _interrupt(argv: list[str], env: dict[str, str], cwd: Path, after: float) -> tuple[int, list[str]]:
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=cwd, text=True,
                         start_new_session=True)
    t0 = time.monotonic()
    first = p.stdout.readline()  # (a loaded machine starts slower: interrupt a run that has begun)
    time.sleep(max(0.0, after - (time.monotonic() - t0)))
    os.killpg(p.pid, signal.SIGINT)
    out = p.stdout.read()  # (not communicate(timeout=): it would skip what readline buffered)
    p.wait(timeout=120)
    return p.returncode, [json.loads(line)["cube"] for line in (first + out).splitlines()]


def test_ctrl_c_keeps_errlist_with_stdout(tmp_path, env):
    lst = tmp_path / "miss.txt"
    lst.write_text("".join(f"/nonexistent/m{i}.cub\n" for i in range(20_000)))
    for after in (0.8, 1.1, 1.4):
        err = tmp_path / f"e{after}.lis"
        rc, recs = _interrupt([EXE, f"fromlist={lst}", "jobs=4", "--json", f"-errlist={err}", *OFFLINE], env, tmp_path,
                              after)
        listed = err.read_text().splitlines() if err.exists() else []
        assert rc in (0, 1, 130) and listed == recs, (after, rc, len(recs), len(listed))


def test_ctrl_c_keeps_a_batchlists_failed_rows_in_errlist(tmp_path, env):
    rows = tmp_path / "rows.txt"
    rows.write_text("".join(f"/nonexistent/r{i}.cub\n" for i in range(20_000)))
    err = tmp_path / "rows.err"
    rc, recs = _interrupt([EXE, f"-batchlist={rows}", "from=$1", "jobs=4", "--json", "-onerror=continue",
                           f"-errlist={err}", "-q", *OFFLINE], env, tmp_path, 1.2)
    assert rc == 130 and recs, rc
    assert err.exists() and err.read_text().splitlines() == recs


def test_a_row_whose_list_grew_after_it_was_counted_runs_every_cube(tmp_path, env):
    made = [cubes.make(tmp_path, name, f"c{i}.cub") for i, name in enumerate(("viking_mars", "lro_moon", "ctx_mars"))]
    first, grows = tmp_path / "a.lst", tmp_path / "b.lst"
    first.write_text(f"{made[0]}\n")
    grows.write_text(f"{made[1]}\n")
    rows = tmp_path / "rows.txt"
    rows.write_text(f"ellipsoid {first}\nsystem {grows}\n")  # (two groups: each row a run of its own)
    lock = cubes.hold_lock(made[0], 2.0)  # the first row waits; meanwhile the second row's list grows
    try:
        p = subprocess.Popen([EXE, f"-batchlist={rows}", "shape=$1", "fromlist=$2", "dryrun=yes", "--json", *OFFLINE],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        time.sleep(0.8)
        with open(grows, "a") as f:
            f.write(f"{made[2]}\n")
        out, err = p.communicate(timeout=60)
    finally:
        lock.join()
    cubes_seen = [json.loads(line)["cube"] for line in out.splitlines()]
    assert cubes_seen == [str(c) for c in made], (cubes_seen, err[-300:])
