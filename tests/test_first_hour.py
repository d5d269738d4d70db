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
def env(user_env):
    return user_env


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


# ---------------------------------------------------------------- 3. summaries that add up


def retargeted(directory: Path, name: str, target: str) -> Path:
    """A small attached Moon cube whose TargetName is ``target``."""
    directory.mkdir(parents=True, exist_ok=True)
    text = cubes.label_text("lro_moon").replace("= MOON\n", f"= {target}\n")
    return cubes.write_attached(directory / name, text, data_bytes=256)


def test_abort_summary_adds_up_and_sky_is_not_a_fallback(tmp_path, env):
    d = tmp_path / "cubes"
    moon, titan = retargeted(d, "moon.cub", "MOON"), retargeted(d, "titan.cub", "TITAN")
    sky, io = retargeted(d, "sky.cub", "SKY"), retargeted(d, "io.cub", "IO")
    later = [retargeted(d, f"later{i}.cub", "MOON") for i in range(3)]
    rows = write_list(tmp_path / "rows.lis", [moon, titan, sky, io, d / "gone.cub", *later])
    area = cubes.data_area(tmp_path / "isisdata")  # no SYSTEM model for Io: the ellipsoid
    with StacServer(ITEMS) as srv:
        common = [f"url={srv.url}", "verify=no", f"isisdata={area}", "dryrun=yes"]
        p = run(f"-batchlist={rows}", "from=$1", *common, env=env)
        assert p.returncode == 1
        assert "8 cubes: 4 would write, 0 unchanged, 1 fell back, 1 sky (no shape model), 1 failed, 3 not run" \
            in p.stderr, p.stderr
        assert f"{sky}: SKY -> Null (ellipsoid, sky: no shape model) [would write]" in p.stdout
        assert f"{io}: Io -> Null (ellipsoid, fell back) [would write]" in p.stdout
        # the same through fromlist= and jobs=4 (no abort: every cube is run)
        lst = write_list(tmp_path / "list.txt", [moon, titan, sky, io, d / "gone.cub", *later])
        p = run(f"fromlist={lst}", "jobs=4", *common, env=env)
        assert p.returncode == 1
        assert "8 cubes: 7 would write, 0 unchanged, 1 fell back, 1 sky (no shape model), 1 failed" in p.stderr, p.stderr
        assert "not run" not in p.stderr


# ---------------------------------------------------------------- 4, 5. what batches and -log say

OLD_TITAN = "$base/dems/old titan model.cub"  # the Titan test label's ShapeModel
ELEVATION = "$base/dems/titan_elevation_0001.cub"


def titan_with_elevation_model(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    text = cubes.label_text("cassini_titan").replace(
        '    shapemodel          = "$base/dems/old titan model.cub"\n',
        f'    shapemodel          = "{OLD_TITAN}"\n    ElevationModel      = {ELEVATION}\n')
    assert ELEVATION in text
    return cubes.write_attached(directory / name, text, data_bytes=256)


@pytest.mark.parametrize("door", ["fromlist", "batchlist", pytest.param("dask", marks=pytest.mark.cluster)])
def test_batches_and_log_say_the_elevation_model_was_removed(tmp_path, env, door, request):
    d = tmp_path / "cubes"
    titan, moon = titan_with_elevation_model(d, "titan.cub"), retargeted(d, "moon.cub", "MOON")
    lst = write_list(tmp_path / "list.txt", [titan, moon])
    log = tmp_path / "run.prt"
    with StacServer(ITEMS) as srv:
        common = [f"url={srv.url}", "verify=no", f"-log={log}"]
        door_args = {"fromlist": [f"fromlist={lst}", "jobs=4"], "batchlist": [f"-batchlist={lst}", "from=$1"]}.get(door) \
            or [f"fromlist={lst}", f"scheduler={request.getfixturevalue('dask_cluster')[0].scheduler_address}"]
        p = run(*door_args, "dryrun=yes", *common, env=env)
        assert p.returncode == 0, p.stderr
        assert f"{titan}: Titan -> {TITAN} (web) [would write]; would remove ElevationModel = {ELEVATION}" in p.stdout
        p = run(*door_args, *common, env=env)
        assert p.returncode == 0, p.stderr
    assert f"{titan}: Titan -> {TITAN} (web) [written]; removed ElevationModel = {ELEVATION}" in p.stdout
    assert "ElevationModel" not in [x for x in p.stdout.splitlines() if x.startswith(str(moon))][0]
    groups = log_groups(log)
    assert [g.get("RemovedElevationModel") for g in groups] == [ELEVATION, None, ELEVATION, None]
    assert read_label(titan).elevation_model is None


def test_log_says_a_failed_cube_failed_and_what_it_still_holds(tmp_path, env):
    d = tmp_path / "cubes"
    titan, moon = titan_with_elevation_model(d, "titan.cub"), retargeted(d, "moon.cub", "MOON")
    write_shape_model(moon, "$base/dems/ldem_0001.cub")
    lst = write_list(tmp_path / "list.txt", [titan, moon, d / "gone.cub"])
    log = tmp_path / "run.prt"
    p = run(f"fromlist={lst}", "jobs=4", f"url=http://127.0.0.1:{dead_address().rsplit(':', 1)[1]}/",
            f"-log={log}", env=env)
    assert p.returncode == 1
    groups = log_groups(log)
    assert [g["Status"] for g in groups] == ["failed"] * 3
    assert all("ShapeModel" not in g for g in groups)  # nothing was written: no ShapeModel = Null
    assert [g["KeptShapeModel"] for g in groups][:2] == [OLD_TITAN, "$base/dems/ldem_0001.cub"]
    assert groups[2]["KeptShapeModel"].startswith("(unknown: ") and "no such file" in groups[2]["KeptShapeModel"]
    assert read_label(titan).shape_model == OLD_TITAN


# ---------------------------------------------------------------- 6. -q quiets stderr only


def test_q_keeps_the_results_on_stdout(tmp_path, env):
    d = tmp_path / "cubes"
    moon, titan = retargeted(d, "moon.cub", "MOON"), retargeted(d, "titan.cub", "TITAN")
    lst = write_list(tmp_path / "list.txt", [moon, titan, d / "gone.cub"])
    out = tmp_path / "out.txt"
    with out.open("w") as fh:  # fromlist=... -q > out
        p = run(f"fromlist={lst}", "shape=ellipsoid", "jobs=4", "-q", env=env, stdout=fh, stderr=subprocess.PIPE,
                capture_output=False)
    assert p.returncode == 1
    assert out.read_text().splitlines() == [f"{moon}: Moon -> Null (ellipsoid) [written]",
                                            f"{titan}: Titan -> Null (ellipsoid) [written]"]
    assert p.stderr.splitlines() == [f"shaperesolver: {d / 'gone.cub'}: no such file"]  # errors stay, chatter goes
    p = run(f"from={moon}", "shape=ringplane", "-q", env=env)
    assert p.returncode == 0 and "ShapeModel: Null  ->  RingPlane  [written]" in p.stdout and p.stderr == ""
    rows = write_list(tmp_path / "rows.lis", [moon, titan])
    p = run(f"-batchlist={rows}", "from=$1", "shape=ellipsoid", "-q", env=env)
    assert p.returncode == 0 and p.stderr == ""
    assert p.stdout.splitlines() == [f"{moon}: Moon -> Null (ellipsoid) [written]",  # (it held RingPlane)
                                     f"{titan}: Titan -> Null (ellipsoid) [unchanged]"]
    p = run(f"fromlist={lst}", "shape=ellipsoid", "-q", "--json", env=env)
    assert len(jsonl(p.stdout)) == 3


# ---------------------------------------------------------------- 7. progress only for a long run


def many(tmp_path: Path, n: int) -> tuple[Path, Path]:
    """A list of ``n`` entries naming one Io cube."""
    cube = retargeted(tmp_path / "cubes", "io.cub", "IO")
    return cube, write_list(tmp_path / "many.txt", [cube] * n)


def test_a_short_run_prints_no_progress_into_a_pipe(tmp_path, env):
    _, lst = many(tmp_path, 200)
    for door in (["jobs=1"], ["jobs=4"]):
        p = run(f"fromlist={lst}", "shape=ellipsoid", "dryrun=yes", *door, env=env)
        assert p.returncode == 0 and "progress" not in p.stderr, p.stderr
        assert p.stderr.splitlines() == ["shaperesolver: 200 cubes: 200 would write, 0 unchanged, 0 fell back, 0 failed"]


def pty_run(args, env, out: Path) -> tuple[int, str]:
    """Run with stderr on a terminal (80 columns) and stdout to ``out``; (exit code, what the terminal showed)."""
    import fcntl
    import pty
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 80, 0, 0))
        os.environ.clear()
        os.environ.update(env)
        o = os.open(out, os.O_WRONLY | os.O_CREAT)
        os.dup2(o, 1)
        os.execv(EXE, [EXE, *map(str, args)])
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode("utf-8", "replace")


def test_on_a_terminal_no_bar_for_a_short_run_and_the_bar_closed_before_the_summary(tmp_path, env):
    cube, lst = many(tmp_path, 300)
    summary = "shaperesolver: 300 cubes: 300 would write, 0 unchanged, 0 fell back, 0 failed"
    code, term = pty_run([f"fromlist={lst}", "shape=ellipsoid", "dryrun=yes"], env, tmp_path / "out1")
    assert code == 0 and term.strip() == summary, term  # no bar at all
    cubes.hold_lock(cube, 6)  # the first write waits for the cube's lock: a run of some seconds
    code, term = pty_run([f"fromlist={lst}", "shape=ellipsoid"], env, tmp_path / "out2")
    assert code == 0
    assert "300/300" in term and "\r" in term  # tqdm's bar
    summary = "shaperesolver: 300 cubes: 1 written, 299 unchanged, 0 fell back, 0 failed"
    assert term.rstrip().splitlines()[-1] == summary, term[-500:]  # the last thing drawn
    assert len((tmp_path / "out2").read_text().splitlines()) == 300


def test_a_long_run_prints_progress_lines_into_a_pipe(tmp_path, env):
    cube, lst = many(tmp_path, 300)
    cubes.hold_lock(cube, 6)  # the first write waits for the cube's lock: a run of some seconds
    p = run(f"fromlist={lst}", "shape=ellipsoid", "jobs=4", env=env)
    assert p.returncode == 0
    progress = [x for x in p.stderr.splitlines() if x.startswith("shaperesolver: progress ")]
    assert 1 <= len(progress) <= 12 and all("/300 cubes" in x for x in progress), p.stderr
    assert p.stderr.splitlines()[-1] == "shaperesolver: 300 cubes: 1 written, 299 unchanged, 0 fell back, 0 failed"


# ---------------------------------------------------------------- 8. help that tells the truth


def test_help_shows_the_values_in_effect_and_where_they_came_from(tmp_path, env):
    from shaperesolver.policy.options import DEFAULT_URL

    area = cubes.data_area(tmp_path / "isisdata")
    p = run("-help", env=dict(env, SHAPERESOLVER_STAC_URL="http://127.0.0.1:9/stac/", ISISDATA=str(area)))
    assert p.returncode == 0
    assert "URL        = http://127.0.0.1:9/stac/  (from $SHAPERESOLVER_STAC_URL)" in p.stdout
    assert f"ISISDATA   = {area}  (from $ISISDATA)" in p.stdout
    p = run("-help", env=env)
    assert f"URL        = {DEFAULT_URL}  (default)" in p.stdout and "ISISDATA   = (none)" in p.stdout
    p = run("url=http://127.0.0.1:8/", "-help", env=dict(env, SHAPERESOLVER_STAC_URL="http://127.0.0.1:9/stac/"))
    assert "URL        = http://127.0.0.1:8/\n" in p.stdout  # the command line's own


def test_help_for_one_parameter_is_whole_and_usage_lists_fallback_and_every_exit_code(env):
    p = run("-help=SHAPE", env=env)
    text = " ".join(p.stdout.split())
    assert p.returncode == 0 and text.endswith("options: WEB, SYSTEM, ELLIPSOID, RINGPLANE, USER")
    assert "user: the DEM or NAIF DSK that model=PATH names." in text
    assert all(len(line) <= 80 for line in p.stdout.splitlines())
    p = run("--help", env=env)
    assert p.returncode == 0
    assert [x for x in p.stdout.splitlines() if x.lstrip().startswith("fallback=nomatch|always|never")]
    status = " ".join(p.stdout[p.stdout.index("Exit status"):].split())
    assert all(f"{code} " in status for code in (0, 1, 2, 130, 141)), status
    assert "results on stdout stay with -q" in p.stdout


# ---------------------------------------------------------------- 9. warnings that apply


def test_ringplane_on_saturn_rings_gives_no_unknown_body_warning(tmp_path, env):
    rings = [retargeted(tmp_path / "cubes", f"rings{i}.cub", '"SATURN RINGS"') for i in range(3)]
    lst = write_list(tmp_path / "list.txt", rings)
    for args in ([f"from={rings[0]}"], [f"fromlist={lst}", "jobs=4"], [f"-batchlist={lst}", "from=$1"]):
        p = run(*args, "shape=ringplane", env=env)
        assert p.returncode == 0, p.stderr
        assert "not a body shaperesolver knows" not in p.stderr, p.stderr
        assert read_label(rings[0]).shape_model == "RingPlane"
    with StacServer(ITEMS) as srv:  # a search does use the table: there the warning applies
        p = run(f"from={rings[1]}", "shape=web", f"url={srv.url}", "fallback=always", env=env)
    assert "SATURN RINGS is not a body shaperesolver knows; searched as written" in p.stderr


def test_from_and_fromlist_together_are_a_usage_error(tmp_path, env):
    moon, titan = retargeted(tmp_path, "moon.cub", "MOON"), retargeted(tmp_path, "titan.cub", "TITAN")
    before = [moon.read_bytes(), titan.read_bytes()]
    lst = write_list(tmp_path / "list.txt", [titan])
    for extra in ([], ["list=yes"], ["jobs=4"]):
        p = run(f"from={moon}", f"fromlist={lst}", "shape=ellipsoid", *extra, env=env)
        assert p.returncode == 2 and p.stderr == \
            "shaperesolver: give from=CUBE or fromlist=LIST, not both (add the cube to the list)\n"
    rows = write_list(tmp_path / "rows.lis", [f"{moon},{lst}"])
    p = run(f"-batchlist={rows}", "from=$1", "fromlist=$2", "shape=ellipsoid", env=env)
    assert p.returncode == 2 and "not both" in p.stderr
    assert [moon.read_bytes(), titan.read_bytes()] == before


def test_list_yes_with_a_body_that_has_no_items_is_a_note(tmp_path, env):
    moon, io = retargeted(tmp_path, "moon.cub", "MOON"), retargeted(tmp_path, "io.cub", "IO")
    lst = write_list(tmp_path / "list.txt", [moon, io])
    with StacServer(ITEMS) as srv:
        for args in (["target=Titan,Io"], [f"fromlist={lst}"], [f"fromlist={lst}", "--json"]):
            p = run(f"url={srv.url}", "list=yes", *args, env=env)
            assert p.returncode == 0, p.stderr
            assert p.stderr == f"shaperesolver: note: no items for Io in isis-global-dtms at {srv.url}\n"
            assert ("titanDem0001" if "target=Titan,Io" in args else "moonDem0002") in p.stdout


def test_the_data_file_of_a_detached_label_points_at_the_label(tmp_path, env):
    lbl = cubes.make(tmp_path, "galileo_io_detached")  # its data: galileo_io.cub
    data = tmp_path / "galileo_io.cub"
    p = run(f"from={data}", "shape=ellipsoid", env=env)
    assert p.returncode == 1 and p.stderr.count("\n") == 1
    assert f"{data}: not an ISIS cube label but the data file of the detached label {lbl.name} beside it: " \
        "give that .lbl instead" in p.stderr
    lst = write_list(tmp_path / "list.txt", [data])
    p = run(f"fromlist={lst}", "shape=ellipsoid", "jobs=4", env=env)
    assert p.returncode == 1 and f"detached label {lbl.name} beside it" in p.stderr


# ---------------------------------------------------------------- 11. a missing cube is a FileNotFoundError


def test_a_missing_cube_is_a_file_not_found_error_through_the_api(tmp_path):
    import errno
    import pickle

    from shaperesolver import CubeNotFoundError, NotACubeError, Resolver, resolve, write_batch

    missing = tmp_path / "gone.cub"
    calls = [lambda: read_label(missing), lambda: resolve(missing, shape="ellipsoid", cache="no"),
             lambda: write_shape_model(missing, "Null"),
             lambda: Resolver(cache="no").resolve(str(missing), shape="ringplane", target="Moon") and
             write_shape_model(missing, "RingPlane")]
    for call in calls:
        try:
            call()
        except OSError as exc:  # caught with ReadOnlyCubeError, as a missing file should be
            assert isinstance(exc, FileNotFoundError) and isinstance(exc, NotACubeError)
            assert isinstance(exc, ValueError)  # (as before)
            assert exc.errno == errno.ENOENT and exc.filename == str(missing) and str(exc) == f"{missing}: no such file"
            again = pickle.loads(pickle.dumps(exc))
            assert type(again) is CubeNotFoundError and str(again) == str(exc)
        else:
            raise AssertionError("no error for a missing cube")
    with pytest.raises(NotACubeError) as info:
        read_label(tmp_path)  # a directory: not a cube, and not a missing file
    assert not isinstance(info.value, OSError)
    assert "no such file" in write_batch([missing], shape="ellipsoid", cache="no")[0]["error"]


# ---------------------------------------------------------------- 10. errors that lead somewhere

UNCHECKED_FIX = "not modified: verify=no writes it unchecked, or mirror it (mirror=DIR) and resolve offline with catalog=DIR"
SEARCH_FIX = "not modified: check url= and the network, or resolve offline from a mirror (catalog=DIR)"


def test_offline_with_verify_yes_says_what_to_do_and_keeps_it_whole(tmp_path, env):
    d = tmp_path / "cubes"
    moon, titan = retargeted(d, "moon.cub", "MOON"), retargeted(d, "titan.cub", "TITAN")
    lst = write_list(tmp_path / "list.txt", [moon, titan])
    gone = dead_address().replace("tcp://", "http://")  # where the DEMs were: nothing answers
    offline = [item("moonDem0002", ["Moon"], "0002", href=f"{gone}/dems/moonDem0002.tiff"),
               item("titanDem0001", ["Titan"], "0001", href=f"{gone}/dems/titanDem0001.tiff")]
    with StacServer(offline) as srv:
        for args in ([f"from={moon}"], [f"fromlist={lst}", "jobs=4"], [f"-batchlist={lst}", "from=$1", "-onerror=continue"]):
            p = run(*args, f"url={srv.url}", "--json", env=env)
            assert p.returncode == 1
            lines = [x for x in p.stderr.splitlines() if ": web model " in x]
            assert len(lines) == (1 if args[0].startswith("from=") else 2), p.stderr
            assert all(x.endswith(UNCHECKED_FIX) and "fallback=always" not in x for x in lines), p.stderr
            assert all(r["error"].endswith(UNCHECKED_FIX) and "could not be checked" in r["error"] for r in jsonl(p.stdout))
    p = run(f"fromlist={lst}", "jobs=4", f"url={gone}/", env=env)  # the API itself is gone
    lines = [x for x in p.stderr.splitlines() if "web search failed" in x]
    assert len(lines) == 2 and all(x.endswith(SEARCH_FIX) for x in lines), p.stderr
    assert all(len(x) <= len("shaperesolver: ") + 300 for x in lines)


def test_one_line_cuts_between_words_and_never_the_last_stage():
    from shaperesolver.policy import job

    reason = "web search failed: " + " ".join(f"word{i:03d}" for i in range(80))
    line = job.one_line(f"{reason}; {SEARCH_FIX}", "/data/moon.cub")
    assert line.endswith(f"; {SEARCH_FIX}") and len(line) <= 300
    head, _, tail = line[: -len(SEARCH_FIX) - 2].partition(" ... ")
    assert tail and head.split()[-1].startswith("word") and len(head.split()[-1]) == 7  # whole words
    assert tail.split()[0].startswith("word") and len(tail.split()[0]) == 7


# ---------------------------------------------------------------- 12. a DEM without latitude and longitude


def titan_tif(path: Path, crs: str) -> Path:
    """A GeoTIFF whose values are Titan's radii (metres) on a LOCAL_CS or a CRS without an ellipsoid."""
    import numpy as np
    from osgeo import gdal, osr

    ds = gdal.GetDriverByName("GTiff").Create(str(path), 64, 32, 1, gdal.GDT_Float32)
    ds.SetGeoTransform((-180.0, 360.0 / 64, 0.0, 90.0, 0.0, -180.0 / 32))
    if crs == "local":
        srs = osr.SpatialReference()
        srs.SetLocalCS("arbitrary")
        ds.SetProjection(srs.ExportToWkt())
    else:  # an engineering CRS: no ellipsoid
        ds.SetProjection('ENGCRS["site",EDATUM["site datum"],CS[Cartesian,2],AXIS["x",east,LENGTHUNIT["metre",1]],'
                         'AXIS["y",north,LENGTHUNIT["metre",1]]]')
    ds.GetRasterBand(1).WriteArray(np.full((32, 64), 2575000.0, np.float32) + np.arange(64, dtype=np.float32))
    ds = None
    return path


@pytest.mark.parametrize("crs", ["local", "no ellipsoid"])
def test_a_dem_without_latitude_and_longitude_is_refused(tmp_path, env, crs):
    from servers import RangeServer

    www = tmp_path / "www"
    www.mkdir()
    dem = titan_tif(www / "titan.tif", crs)
    d = tmp_path / "cubes"
    titans = [retargeted(d, f"titan{i}.cub", "TITAN") for i in range(2)]
    lst = write_list(tmp_path / "list.txt", titans)
    area = cubes.data_area(tmp_path / "isisdata")  # Titan has a SYSTEM model: the next step
    p = run(f"from={titans[0]}", "shape=user", f"model={dem}", env=env)  # a user model: the cube fails
    assert p.returncode == 1 and "which gives no latitude and longitude" in p.stderr, p.stderr
    assert read_label(titans[0]).shape_model is None
    with RangeServer(www) as files, \
            StacServer([item("titanDem0002", ["Titan"], "0002", href=f"http://127.0.0.1:{files.port}/titan.tif")]) as srv:
        for args in ([f"from={titans[0]}"], [f"fromlist={lst}", "jobs=4"]):
            p = run(*args, f"url={srv.url}", f"isisdata={area}", "--json", env=env)
            assert p.returncode == 0, p.stderr
            for r in jsonl(p.stdout):  # nothing matches: SYSTEM follows
                assert r["source"] == "system" and r["shape_model"] == "$base/dems/titan_0001.cub"
                assert "which gives no latitude and longitude" in r["fallback_reason"]


# ---------------------------------------------------------------- 13. types the API's users see


def test_the_public_names_are_a_literal_all_that_type_checkers_read():
    import ast
    import inspect

    import shaperesolver
    from shaperesolver import errors, resolve, write_batch
    from shaperesolver.policy.resolver import Resolver
    from shaperesolver.policy.types import ResolverOptions

    tree = ast.parse(Path(shaperesolver.__file__).read_text())
    (node,) = [n for n in tree.body if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in n.targets)]
    assert isinstance(node.value, ast.List) and all(isinstance(e, ast.Constant) for e in node.value.elts)
    names = [e.value for e in node.value.elts]
    assert names == shaperesolver.__all__ and len(set(names)) == len(names)
    assert set(errors.__all__) | set(shaperesolver._LAZY) | {"__version__"} == set(names)
    for name in names:
        assert getattr(shaperesolver, name) is not None
    settings = [p for p in inspect.signature(Resolver).parameters]
    assert list(ResolverOptions.__annotations__) == settings  # resolve() and write_batch() take exactly these
    for fn in (resolve, write_batch):
        assert "Unpack[ResolverOptions]" in str(inspect.signature(fn).parameters[list(inspect.signature(fn).parameters)[-1]])
        assert "Shape" in str(inspect.signature(fn).parameters["shape"].annotation)


# ---------------------------------------------------------------- 14. the bundled SYSTEM DEM is a real DEM

DATA = Path(__file__).resolve().parent.parent / "data"


def test_every_bundled_model_path_opens_and_passes_the_model_check(tmp_path, env):
    from shaperesolver import Resolver

    area = DATA / "isisdata"
    moon = shutil.copy(DATA / "cubes" / "lro_moon.cub", tmp_path / "lro_moon.cub")
    dem = "$base/dems/ldem_128ppd_Mar2011_clon180_radius_pad.cub"
    assert 0 < (area / "base" / "dems" / dem.split("/")[-1]).stat().st_size <= 512 * 1024
    p = run(f"from={moon}", "shape=user", f"model={dem}", f"isisdata={area}", "verify=yes", "--json", env=env)
    assert p.returncode == 0, p.stderr
    assert jsonl(p.stdout)[0]["shape_model"] == dem and read_label(moon).shape_model == dem
    p = run(f"from={moon}", "shape=system", f"isisdata={area}", "--json", env=env)  # what the example writes
    assert p.returncode == 0 and jsonl(p.stdout)[0]["shape_model"] == dem, p.stderr
    with Resolver(isisdata=area, cache="no") as r:
        res = r.resolve(moon, shape="system")
        ds = r.open_model(res, verify=True)
        assert ds.GetDriver().ShortName == "ISIS3" and ds.RasterXSize >= 360
        assert "Moon" in ds.GetProjection()
        values = ds.GetRasterBand(1).ReadAsArray()
        assert values.min() >= 1728000 and values.max() <= 1748000  # radii in metres
        with pytest.raises(Exception, match="Titan"):  # and it is checked against the body like any DEM
            r.resolve(target="Titan", shape="user", model=dem)


# ---------------------------------------------------------------- 15. a model server without HTTP Range


@pytest.fixture
def plain_http_server(tmp_path):
    """``python -m http.server`` (no Range support) serving a 3 MB COG of Moon radii."""
    from dems import make_cog

    www = tmp_path / "www"
    www.mkdir()
    make_cog(www / "moonDem0003.tif", "Moon", 1024, 512)
    port = int(dead_address().rsplit(":", 1)[1])
    srv = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", www],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert srv.poll() is None, "python -m http.server did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/moonDem0003.tif"
    finally:
        srv.terminate()
        srv.wait(10)


RANGE_HINT = "the model's server must answer HTTP Range requests"


def test_a_model_server_without_range_support_is_named_as_the_cause(tmp_path, env, plain_http_server):
    d = tmp_path / "cubes"
    moons = [retargeted(d, f"moon{i}.cub", "MOON") for i in range(2)]
    lst = write_list(tmp_path / "list.txt", moons)
    p = run(f"from={moons[0]}", "shape=user", f"model=/vsicurl/{plain_http_server}", "--json", env=env)
    assert p.returncode == 1 and RANGE_HINT in p.stderr, p.stderr
    assert "Range downloading not supported" in jsonl(p.stdout)[0]["error"]
    assert "(python -m http.server does not): serve it from one that does, or download it (mirror=DIR)" in p.stderr
    with StacServer([item("moonDem0003", ["Moon"], "0003", href=plain_http_server)]) as srv:
        # a web model is read through the relay, which answers GDAL's ranges for such a host
        p = run(f"fromlist={lst}", "jobs=4", f"url={srv.url}", "dryrun=yes", "--json", env=env)
        assert p.returncode == 0, p.stderr
        assert all(r["source"] == "web" and r["item_id"] == "moonDem0003" for r in jsonl(p.stdout)), p.stdout
        mirror = tmp_path / "mirror"  # mirroring through such a server works
        p = run("target=Moon", f"mirror={mirror}", f"url={srv.url}", env=env)
        assert p.returncode == 0, p.stderr
    p = run(f"fromlist={lst}", "jobs=4", f"catalog={mirror / 'catalog.json'}", "--json", env=env)
    assert p.returncode == 0, p.stderr
    assert all(r["source"] == "web" and r["item_id"] == "moonDem0003" for r in jsonl(p.stdout))
