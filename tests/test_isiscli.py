"""The command as an ISIS user types it, through the installed console script."""

import fcntl
import json
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import cubes
import pvl
import pytest

EXE = shutil.which("shaperesolver", path=os.path.dirname(sys.executable)) or shutil.which("shaperesolver")
REAL = Path(__file__).resolve().parents[2] / "shared" / "realdata"
if not REAL.is_dir():
    REAL = Path("/work/shared/realdata")
PROVENANCE = Path(__file__).parent / "data" / "real" / "PROVENANCE.tsv"


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ, SHAPERESOLVER_CACHE_DIR=str(tmp_path / "cache"), HOME=str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    for k in ("ISISDATA", "SHAPERESOLVER_STAC_URL"):
        e.pop(k, None)
    return e


def run(*args, env=None, cwd=None):
    assert EXE, "the shaperesolver command is not installed"
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env, timeout=300, cwd=cwd)


def jsonl(p):
    return [json.loads(line) for line in p.stdout.splitlines()]


def shape_of(cube):
    from shaperesolver import read_label

    return read_label(cube).shape_model


def copy_real(name, dest):
    shutil.copy(REAL / name, dest)
    os.chmod(dest, 0o644)  # shared/ is read-only
    return dest


# ---------------------------------------------------------------- 2. names, prefixes


def test_prefixes_case_and_ambiguity(make_cube, env):
    cube = make_cube("lro_moon")
    p = run(f"FR={cube}", "sh=ELL", "dr=y", "--json", env=env)
    assert p.returncode == 0, p.stderr
    assert jsonl(p)[0]["shape_model"] == "Null" and jsonl(p)[0]["written"] is False
    p = run("fr", "=", cube, "SHAPE", "=ell", "--json", env=env)  # three tokens, two tokens
    assert p.returncode == 0 and jsonl(p)[0]["written"] is True, p.stderr
    p = run(f"from={cube}", "c=no", env=env)  # cache, catalog, collection
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert "ambiguous" in p.stderr and "catalog, collection, cache" in p.stderr
    p = run(f"from={cube}", "shpe=ellipsoid", env=env)
    assert p.returncode == 2 and "did you mean shape?" in p.stderr and "shpe=ellipsoid" in p.stderr
    p = run(f"from={cube}", "shape=e", env=env)  # ellipsoid is the only e...
    assert p.returncode == 0, p.stderr
    p = run(f"from={cube}", "shape=xyz", env=env)
    assert p.returncode == 2 and "web|system|ellipsoid|ringplane|user" in p.stderr


# ---------------------------------------------------------------- 3. reserved options


def test_help_lists_every_parameter_with_value_or_default(env, tmp_path):
    from shaperesolver.cli.isisargs import PARAMS

    for spelling in ("-help", "-HELP", "-he"):
        p = run("from=x.cub", spelling, env=env)
        assert p.returncode == 0, p.stderr
        for param in PARAMS:
            assert param.name.upper() in p.stdout
        assert "FROM       = x.cub" in p.stdout and "SHAPE      = web  (default)" in p.stdout
        assert "FALLBACK   = nomatch  (default)   [NOMATCH|ALWAYS|NEVER]" in p.stdout
    p = run("-help=SH", env=env)
    assert p.returncode == 0 and p.stdout.startswith("SHAPE") and "options: WEB, SYSTEM, ELLIPSOID, RINGPLANE, USER" in p.stdout
    assert "FROM" not in p.stdout
    p = run("-help=c", env=env)
    assert p.returncode == 2 and "ambiguous" in p.stderr


@pytest.mark.parametrize("option,hint", [
    ("-gui", "no GUI"), ("-g", "no GUI"), ("-webhelp", "-help"), ("-w", "-help"), ("-last", "history"),
    ("-la", "history"), ("-restore=x.par", "parameter files"), ("-r=x", "parameter files"),
    ("-save", "script"), ("-sa=x", "script"), ("-preference=p.pvl", "isisdata="), ("-pr=p", "isisdata="),
    ("-info", "-v"), ("-i=x", "-v")])
def test_refused_reserved_options_say_so_in_one_line(make_cube, env, option, hint):
    cube = make_cube("lro_moon")
    before = cube.read_bytes()
    p = run(f"from={cube}", "shape=ellipsoid", option, env=env)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "is not available" in p.stderr and hint in p.stderr
    assert cube.read_bytes() == before


def test_unknown_and_ambiguous_reserved_options(make_cube, env):
    cube = make_cube("lro_moon")
    p = run(f"from={cube}", "-l", env=env)  # -last, -log
    assert p.returncode == 2 and "ambiguous reserved option -l: -log, -last" in p.stderr
    p = run(f"from={cube}", "-bogus", env=env)
    assert p.returncode == 2 and "unknown reserved option -bogus" in p.stderr and "-batchlist" in p.stderr
    p = run(f"from={cube}", "-e=x.lis", env=env)  # -errlist without a list
    assert p.returncode == 2 and "-errlist needs -batchlist" in p.stderr
    p = run(f"from={cube}", "-o=continue", env=env)
    assert p.returncode == 2 and "-onerror needs -batchlist" in p.stderr
    p = run(f"from={cube}", "shape=ellipsoid", "-nogui", "-verb", env=env)  # harmless ones work
    assert p.returncode == 0, p.stderr


def test_batchlist_two_and_three_columns_quotes_commas_comments(make_cube, env, tmp_path):
    moon = make_cube("lro_moon", "moon one.cub")  # never reachable through a batchlist: blanks split columns
    a, b = make_cube("lro_moon", "a.cub"), make_cube("viking_mars", "b.cub")
    dem = tmp_path / "dems"
    dem.mkdir()
    (dem / "moon.cub").write_text("x")
    (dem / "mars.cub").write_text("x")
    lst = tmp_path / "two.lis"
    lst.write_text(f"# cube, model\n{tmp_path}/a , moon\n\n   # indented comment\n\"{tmp_path}/b\"\t'mars'\n")
    p = run(f"-batchlist={lst}", "from=$1.cub", f"model={dem}/$2.cub", "shape=user", "verify=no", "--json", env=env)
    assert p.returncode == 0, p.stderr
    assert [r["shape_model"] for r in jsonl(p)] == [str(dem / "moon.cub"), str(dem / "mars.cub")]
    assert p.stderr.count("shaperesolver from=") == 2  # each row's command line, as ISIS prints it
    three = tmp_path / "three.lis"
    three.write_text(f"{a},ellipsoid,no\n{b}, user ,  no\n")
    p = run(f"-ba={three}", "from=$1", "shape=$2", "verify=$3", f"model={dem}/mars.cub", env=env)
    # shape=ellipsoid with model= is a usage error for that row: found before any cube is touched
    assert p.returncode == 2 and "row" in p.stderr and "model= is only used with shape=user" in p.stderr
    bad = tmp_path / "ragged.lis"
    bad.write_text(f"{a} x\n{b}\n")
    p = run(f"-batchlist={bad}", "from=$1", env=env)
    assert p.returncode == 2 and "number of columns must be constant" in p.stderr
    (tmp_path / "empty.lis").write_text("# nothing\n")
    p = run(f"-batchlist={tmp_path / 'empty.lis'}", "from=$1", env=env)
    assert p.returncode == 2 and "no rows" in p.stderr
    p = run(f"-batchlist={lst}", "from=$3", env=env)
    assert p.returncode == 2 and "$3" in p.stderr
    assert not moon.read_bytes().count(b"ShapeModel = Null")


def test_errlist_after_abort_and_after_continue_finishes_the_job(make_cube, env, tmp_path):
    good = [make_cube("lro_moon", f"g{i}.cub") for i in range(4)]
    missing = tmp_path / "later.cub"  # appears after the first run
    lst = tmp_path / "rows.lis"
    rows = [str(good[0]), str(good[1]), str(missing), str(good[2]), str(good[3])]
    lst.write_text("\n".join(rows) + "\n")
    err = tmp_path / "err.lis"
    err.write_text("stale\n")  # deleted at start
    p = run(f"-batchlist={lst}", "from=$1", "shape=ellipsoid", f"-errlist={err}", "--json", env=env)
    assert p.returncode == 1 and "-onerror=abort" in p.stderr
    assert [r["cube"] for r in jsonl(p)] == rows[:3]
    assert err.read_text().splitlines() == rows[2:]  # the failing row and every row after it
    assert shape_of(good[2]) != "Null"
    p = run(f"-batchlist={lst}", "from=$1", "shape=ellipsoid", f"-errlist={err}", "-oner=c", "--json", env=env)
    assert p.returncode == 1 and len(jsonl(p)) == 5
    assert err.read_text().splitlines() == [str(missing)]
    cubes.write_attached(missing, cubes.label_text("lro_moon"))
    again = tmp_path / "again.lis"
    shutil.copy(err, again)
    p = run(f"-batchlist={again}", "from=$1", "shape=ellipsoid", f"-errlist={err}", env=env)
    assert p.returncode == 0, p.stderr
    assert not err.exists() or err.read_text() == ""
    assert all(shape_of(c) is None or shape_of(c) == "Null" for c in [*good, missing])


def test_errlist_with_fromlist(make_cube, env, tmp_path):
    ok = make_cube("lro_moon")
    lst = tmp_path / "list.txt"
    lst.write_text(f"{ok}\n{tmp_path / 'nope.cub'}\n")
    err = tmp_path / "failed.txt"
    p = run(f"fromlist={lst}", "shape=ellipsoid", f"-errlist={err}", env=env)
    assert p.returncode == 1 and err.read_text() == f"{tmp_path / 'nope.cub'}\n"


def test_log_appends_pvl_groups(make_cube, env, tmp_path):
    a, b = make_cube("lro_moon"), make_cube("galileo_io_detached")
    logf = tmp_path / "run.prt"
    lst = tmp_path / "l.txt"
    lst.write_text(f"{a}\n{b}\n{tmp_path / 'gone.cub'}\n")
    p = run(f"fromlist={lst}", "shape=ell", f"-log={logf}", env=env)
    assert p.returncode == 1
    p = run(f"from={a}", "shape=ringplane", f"-lo={logf}", env=env)
    assert p.returncode == 0
    got = pvl.load(str(logf))
    groups = got.getall("Results")
    assert [g["From"] for g in groups] == [str(a), str(b), str(tmp_path / "gone.cub"), str(a)]
    assert [g["Status"] for g in groups] == ["written", "unchanged", "failed", "written"]  # Io's label had Null
    assert groups[0]["ShapeModel"] == "Null" and groups[3]["ShapeModel"] == "RingPlane"
    assert "gone.cub" in groups[2]["Error"]
    p = run(f"from={a}", "shape=ell", "-log", env=env, cwd=tmp_path)  # ISIS's default file
    assert p.returncode == 0 and pvl.load(str(tmp_path / "print.prt"))["Results"]["Status"] == "written"


# ---------------------------------------------------------------- 1. RINGPLANE


def test_ringplane_on_a_real_ring_cube(tmp_path, env, isisdata):
    row = [line.split("\t") for line in PROVENANCE.read_text().splitlines() if line.startswith("rings1proj.cub\t")]
    assert row and row[0][5] == "isis/tests/data/rings/rings1proj.cub"
    cube = tmp_path / "rings.cub"
    copy_real("rings1proj.cub", cube)
    import hashlib

    assert hashlib.sha256(cube.read_bytes()).hexdigest() == row[0][7]
    p = run(f"from={cube}", "shape=ell", env=env)  # move it off RingPlane first
    assert p.returncode == 0 and shape_of(cube) == "Null"
    p = run(f"from={cube}", "shape=system", f"isisdata={isisdata}", "dryrun=yes", env=env)
    assert p.returncode == 0 and "ring observation" in p.stderr and "shape=ringplane" in p.stderr
    p = run(f"from={cube}", "shape=ringp", "url=http://127.0.0.1:9/", "--json", env=env)  # no search at all
    assert p.returncode == 0, p.stderr
    [rec] = jsonl(p)
    assert rec["shape_model"] == "RingPlane" and rec["source"] == "ringplane" and rec["written"]
    assert shape_of(cube) == "RingPlane" and b"ShapeModel                = RingPlane" in cube.read_bytes()


def test_a_ring_system_target_gets_the_note(env, tmp_path, isisdata):
    text = cubes.label_text("lro_moon")
    import re

    text = re.sub(r"TargetName\s*=\s*\S+", 'TargetName = "SATURN RINGS"', text, count=1)
    cube = cubes.write_attached(tmp_path / "r.cub", text)
    p = run(f"from={cube}", "shape=system", f"isisdata={isisdata}", env=env)
    assert "SATURN RINGS is a ring observation; shape=ringplane" in p.stderr


# ---------------------------------------------------------------- 7. combinations


@pytest.mark.parametrize("args,why", [
    (["shape=system", "version=5"], "version= pins a web model"),
    (["shape=ellipsoid", "version=5"], "version= pins a web model"),
    (["catalog=/x/catalog.json", "collection=c"], "collection= is for the STAC API"),
    (["version="], "version= is empty"),
    (["isisdata="], "isisdata= is empty"),
    (["-q", "-v"], "-q and -v"),
    (["shape=ellipsoid", "fallback=never"], "fallback= is about the web step"),
])
def test_parameters_that_do_not_go_together(make_cube, env, args, why):
    cube = make_cube("lro_moon")
    p = run(f"from={cube}", *args, env=env)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and why in p.stderr, p.stderr


def test_a_cube_without_kernels_gets_a_warning(tmp_path, env):
    cube = tmp_path / "marci.cub"
    copy_real("T02_001002_1200_MC_00N284W_cropped.cub", cube)
    p = run(f"from={cube}", "shape=user", "model=/vsicurl/https://x.org/mars.tif", "verify=no", env=env)
    assert p.returncode == 0, p.stderr
    assert "no Kernels group (not spiceinit'ed)" in p.stderr and "shape=user model=" in p.stderr


# ---------------------------------------------------------------- 4. file names


def test_isisdata_home_and_tilde_expansion(make_cube, env, tmp_path, isisdata):
    home = Path(env["HOME"])
    cube = make_cube("viking_mars")
    shutil.copy(cube, home / "m.cub")
    env = dict(env, ISISDATA=str(isisdata))
    p = run("from=~/m.cub", "shape=user", "model=$ISISDATA/base/dems/molaMarsPlanetaryRadius0004.cub", "verify=no",
            "--json", env=env)
    assert p.returncode == 0, p.stderr
    assert jsonl(p)[0]["cube"] == str(home / "m.cub")
    assert jsonl(p)[0]["shape_model"] == "$ISISDATA/base/dems/molaMarsPlanetaryRadius0004.cub"
    p = run("from=$HOME/m.cub", "shape=u", "model=$base/dems/molaMarsPlanetaryRadius0004.cub", "verify=no", env=env)
    assert p.returncode == 0 and "= $base/dems/molaMarsPlanetaryRadius0004.cub\n" in p.stdout, p.stderr
    (home / "my.cub").write_text("x")
    p = run("from=${HOME}/m.cub", "shape=user", "model=~/my.cub", "verify=no", "--json", env=env)
    assert jsonl(p)[0]["shape_model"] == str(home / "my.cub")  # ISIS does not expand ~: spelled out
    lst = home / "l.txt"
    lst.write_text(f"{home / 'm.cub'}\n")
    e2 = dict(env)
    e2.pop("ISISDATA")
    p = run("fromlist=$HOME/l.txt", "shape=system", f"isisdata=$HOME/../{isisdata.relative_to(tmp_path)}", "--json",
            env=e2)
    assert p.returncode == 0 and jsonl(p)[0]["shape_model"].startswith("$base/dems/"), p.stderr
    p = run("from=$NOPE_NOT_SET/m.cub", env=e2)
    assert p.returncode == 2 and "$NOPE_NOT_SET" in p.stderr


# ---------------------------------------------------------------- 6. DSK user models


def _dsk(path, center):
    import numpy as np
    import spiceypy as sp

    r = 0.25
    verts = np.array([[r, 0, 0], [-r, 0, 0], [0, r, 0], [0, -r, 0], [0, 0, r], [0, 0, -r]], float)
    plates = np.array([[1, 3, 5], [3, 2, 5], [2, 4, 5], [4, 1, 5], [3, 1, 6], [2, 3, 6], [4, 2, 6], [1, 4, 6]])
    spaixd, spaixi = sp.dskmi2(verts, plates, 5.0, 4, 10000, 1000, 10000, True, 200000)
    h = sp.dskopn(str(path), "test", 0)
    sp.dskw02(h, center, center, 1, "J2000", 1, np.zeros(10), -np.pi, np.pi, -np.pi / 2, np.pi / 2, 0.0, 1.0,
              -1e10, 1e10, verts, plates, spaixd, spaixi)
    sp.dskcls(h, True)
    return path


def _spk(path):
    import numpy as np
    import spiceypy as sp

    h = sp.spkopn(str(path), "x", 0)
    sp.spkw08(h, 2101955, 10, "J2000", 0.0, 100.0, "seg", 1, 2, np.zeros((2, 6)), 0.0, 100.0)
    sp.spkcls(h)
    return path


def _bennu(tmp_path):
    cube = tmp_path / "polycam.cub"
    copy_real("20190425T211232S312_map_iofL2pan-crop.cub", cube)
    return cube


def test_dsk_user_models(tmp_path, env):
    pytest.importorskip("spiceypy")
    cube = _bennu(tmp_path)
    good = _dsk(tmp_path / "bennu.bds", 2101955)
    p = run(f"from={cube}", "shape=user", f"model={good}", "--json", env=env)
    assert p.returncode == 0, p.stderr
    assert jsonl(p)[0]["shape_model"] == str(good) and shape_of(cube) == str(good)
    before = cube.read_bytes()
    other = _dsk(tmp_path / "itokawa.bds", 2025143)
    p = run(f"from={cube}", "shape=user", f"model={other}", env=env)
    assert p.returncode == 1 and p.stderr.count("\n") == 1
    assert "DSK segments are for Itokawa (NAIF ID 2025143), not Bennu" in p.stderr
    spk = _spk(tmp_path / "bennu.bsp")
    p = run(f"from={cube}", "shape=user", f"model={spk}", env=env)
    assert p.returncode == 1 and "a NAIF DAF/SPK file, not a DSK" in p.stderr and p.stderr.count("\n") == 1
    xfr = tmp_path / "bennu.xdsk"
    xfr.write_bytes(b"DASETF NAIF DAS ENCODED TRANSFER FILE\n'DAS/DSK '\n")
    p = run(f"from={cube}", "shape=user", f"model={xfr}", "verify=no", env=env)
    assert p.returncode == 1 and "transfer-format" in p.stderr and "tobin" in p.stderr
    empty = tmp_path / "trunc.bds"
    empty.write_bytes(good.read_bytes()[:1024])
    p = run(f"from={cube}", "shape=user", f"model={empty}", env=env)
    assert p.returncode != 0 and "DSK" in p.stderr and "Traceback" not in p.stderr
    assert cube.read_bytes() == before
    # verify=no checks only the file record: another body's DSK goes in
    p = run(f"from={cube}", "shape=user", f"model={other}", "verify=no", env=env)
    assert p.returncode == 0 and shape_of(cube) == str(other)


def test_dsk_model_in_a_fromlist_of_other_bodies(tmp_path, env, make_cube):
    pytest.importorskip("spiceypy")
    bennu = _bennu(tmp_path)
    moon = make_cube("lro_moon")
    lst = tmp_path / "l.txt"
    lst.write_text(f"{bennu}\n{moon}\n")
    good = _dsk(tmp_path / "bennu.bds", 2101955)
    p = run(f"fromlist={lst}", "shape=user", f"model={good}", "jobs=2", "--json", env=env)
    recs = jsonl(p)
    assert p.returncode == 1 and recs[0]["written"] and "not Moon" in recs[1]["error"]


def test_real_labels_that_name_dsks_keep_working(tmp_path, env):
    """The Bennu and Itokawa cubes name DSKs in ISIS's own test data; we replace them cleanly."""
    for name in ("20190425T211232S312_map_iofL2pan-crop.cub", "st_2530292409_v_DskElevationModel.lbl"):
        cube = tmp_path / name
        copy_real(name, cube)
        p = run(f"from={cube}", "shape=ell", "--json", env=env)
        assert p.returncode == 0, p.stderr
        prev = jsonl(p)[0]["previous"] or jsonl(p)[0]["removed_elevation_model"]
        assert prev.endswith(".bds")


# ---------------------------------------------------------------- 5. output


def _many(tmp_path, n):
    text = cubes.label_text("lro_moon")
    first = cubes.write_attached(tmp_path / "c0.cub", text)
    lst = tmp_path / "many.txt"
    lst.write_text("".join(f"{first}\n" for _ in range(n)))
    return lst


def test_two_thousand_cubes_without_a_terminal(tmp_path, env, isisdata):
    lst = _many(tmp_path, 2000)
    cubes.hold_lock(tmp_path / "c0.cub", 5)  # the first write waits for the lock: a run of some seconds
    p = run(f"fromlist={lst}", "shape=system", f"isisdata={isisdata}", env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.splitlines()
    assert len(lines) == 2000 and all(" -> Null (ellipsoid, fell back) [" in x for x in lines)
    err = p.stderr.splitlines()
    progress = [x for x in err if x.startswith("shaperesolver: progress ")]
    assert 5 <= len(progress) <= 40 and "2000/2000" not in progress[-1]  # (the summary follows)
    warns = [x for x in err if x.startswith(f"shaperesolver: {lst.parent}") and "no SYSTEM shape model" in x]
    assert len(warns) == 1
    assert "the warning above came for 2000 cubes in all" in p.stderr
    assert err[-1] == "shaperesolver: 2000 cubes: 1 written, 1999 unchanged, 2000 fell back, 0 failed"
    p = run(f"fromlist={lst}", "shape=ellipsoid", "dryrun=yes", "-v", env=env)
    assert p.stdout.count("Group = Kernels") == 2000  # the full group with -v
    assert "0 fell back" in p.stderr


def test_two_thousand_cubes_on_a_terminal(tmp_path, env):
    lst = _many(tmp_path, 2000)
    cubes.hold_lock(tmp_path / "c0.cub", 5)  # the first write waits for the lock: a run of some seconds
    out = tmp_path / "out.txt"
    pid, fd = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # the child: stdout to a file, stderr the terminal
        os.environ.clear()
        os.environ.update(env)
        o = os.open(out, os.O_WRONLY | os.O_CREAT)
        os.dup2(o, 1)
        os.execv(EXE, [EXE, f"fromlist={lst}", "shape=ellipsoid"])
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
    assert os.waitstatus_to_exitcode(status) == 0
    term = b"".join(chunks).decode("utf-8", "replace")
    assert "2000/2000" in term and "cube/s" in term and "\r" in term  # tqdm's bar
    assert "shaperesolver: progress" not in term
    assert "2000 cubes: 1 written, 1999 unchanged" in term
    assert len(out.read_text().splitlines()) == 2000


def test_system_answer_under_shape_system_is_not_a_fallback(make_cube, env, isisdata, tmp_path):
    mars = [make_cube("viking_mars", f"m{i}.cub") for i in range(3)]
    lst = tmp_path / "l.txt"
    lst.write_text("".join(f"{m}\n" for m in mars))
    p = run(f"fromlist={lst}", "shape=system", f"isisdata={isisdata}", env=env)
    assert p.returncode == 0 and "3 cubes: 3 written, 0 unchanged, 0 fell back, 0 failed" in p.stderr
    p = run(f"fromlist={lst}", "shape=system", f"isisdata={isisdata}", env=env)
    assert "3 cubes: 0 written, 3 unchanged, 0 fell back" in p.stderr
