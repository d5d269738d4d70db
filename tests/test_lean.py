"""Lean start (issue 18): a run loads only what its job needs.

The console script runs in a fresh interpreter with a ``sitecustomize`` hook that writes
``sys.modules`` at exit; no timing is asserted here (the benchmark prints the start-up
ratio: ``tests/bench/run.py startup``).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import cubes
import pvl
import pytest
from servers import StacServer, item

from shaperesolver.cube.pvlformat import _KNOWN_GOOD, check_round_trip, format_statement

EXE = shutil.which("shaperesolver", path=os.path.dirname(sys.executable)) or shutil.which("shaperesolver")
#: what a run that sends nothing, opens no model and reads no label with pvl must not load
HEAVY = ("requests", "urllib3", "osgeo", "numpy", "distributed", "pvl")
HOOK = """\
import atexit, os, sys
def _dump():
    mp = sys.modules.get("multiprocessing.process")
    if mp is not None and mp.parent_process() is not None:
        return  # a worker process of jobs=N: the command's own list is the run's
    if "multiprocessing.resource_tracker" in sys.modules and "shaperesolver" not in sys.modules:
        return  # multiprocessing's resource tracker (it exits after the command)
    with open(os.environ["LEAN_MODULES_OUT"], "w") as fh:
        fh.write("\\n".join(sorted(sys.modules)))
atexit.register(_dump)
"""


@pytest.fixture
def lean_env(tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    env = dict(os.environ, PYTHONPATH=str(hook), SHAPERESOLVER_CACHE_DIR=str(tmp_path / "cache"),
               LEAN_MODULES_OUT=str(tmp_path / "modules.txt"))
    for k in ("ISISDATA", "SHAPERESOLVER_STAC_URL"):
        env.pop(k, None)
    return env


def loaded(env: dict[str, str], *args: str, full: bool = False) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run the console script; (the process, the top-level modules loaded at its exit; with
    ``full``, every module's full name)."""
    assert EXE, "the shaperesolver command is not installed"
    out = Path(env["LEAN_MODULES_OUT"])
    out.unlink(missing_ok=True)
    p = subprocess.run([EXE, *args], env=env, capture_output=True, text=True, timeout=120)
    names = set(out.read_text().split())
    assert "shaperesolver" in names  # the hook saw the run
    return p, names if full else {m.split(".")[0] for m in names}


#: what a single-cube run that needs no network, catalog or DSK must not load (issue 24)
MACHINERY = ("shaperesolver.scale", "shaperesolver.scale.batch", "shaperesolver.net.transport",
             "shaperesolver.net.relay", "shaperesolver.catalog.stac", "shaperesolver.models.dsk",
             "shaperesolver.mirror", "concurrent.futures", "subprocess", "importlib.resources")


#: the standard library a one-cube ellipsoid or ringplane run does without (issue 24: each costs
#: milliseconds at start-up; a message to show loads logging, so the test runs with -q too)
STDLIB_UNUSED = ("logging", "dataclasses", "inspect", "typing", "pathlib", "json", "threading", "urllib.parse",
                 "textwrap", "copy", "importlib.resources")


def _interpreter_baseline(env: dict[str, str]) -> set[str]:
    """What this interpreter loads for ``python -c pass`` (site hooks of a development venv)."""
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True, timeout=60)
    return set(Path(env["LEAN_MODULES_OUT"]).read_text().split())


@pytest.mark.parametrize("shape", ["ellipsoid", "ringplane"])
def test_a_single_cube_run_loads_no_batch_network_catalog_or_dsk_machinery(tmp_path, lean_env, shape):
    moon, titan = moon_titan(tmp_path / "cubes")
    base = _interpreter_baseline(lean_env)
    for dry in ("yes", "no"):
        p, names = loaded(lean_env, f"from={moon}", f"shape={shape}", f"dryrun={dry}", full=True)
        assert p.returncode == 0, p.stderr
        extra = (names - base).intersection(MACHINERY)
        assert not extra, sorted(extra)
    # and none of the standard library's heavier modules (a cube whose label warns: -q)
    for args in ([f"from={titan}", "dryrun=yes"], [f"from={moon}", "dryrun=yes", "-q"], [f"from={titan}"]):
        p, names = loaded(lean_env, *args, f"shape={shape}", full=True)
        assert p.returncode == 0, p.stderr
        extra = (names - base).intersection(STDLIB_UNUSED)
        assert not extra, (args, sorted(extra))
    # a list of two still works (and is what loads the batch machinery)
    lst = tmp_path / "two.txt"
    lst.write_text(f"{moon}\n{titan}\n")
    p, names = loaded(lean_env, f"fromlist={lst}", f"shape={shape}", "dryrun=yes", full=True)
    assert p.returncode == 0, p.stderr
    assert "shaperesolver.scale.batch" in names  # the check above can fail


def test_a_single_cube_system_or_cached_web_run_loads_no_batch_network_catalog_or_dsk_machinery(tmp_path, lean_env):
    moon, titan = moon_titan(tmp_path / "cubes")
    base = _interpreter_baseline(lean_env)
    area = Path(__file__).resolve().parents[1] / "data" / "isisdata"
    p, names = loaded(lean_env, f"from={moon}", "shape=system", f"isisdata={area}", full=True)
    assert p.returncode == 0 and "$base/dems/" in p.stdout, p.stdout + p.stderr
    extra = (names - base).intersection(MACHINERY)
    assert not extra, ("system", sorted(extra))
    with StacServer([item("moonDem0002", ["Moon"], "0002")]) as srv:
        url = srv.url
        p, names = loaded(lean_env, f"from={titan}", f"url={url}", "verify=no", "dryrun=yes", f"isisdata={area}",
                          full=True)
        assert p.returncode == 0, p.stderr
        assert "shaperesolver.net.transport" in names  # this one searched (Titan has no web model here)
        p, names = loaded(lean_env, f"from={moon}", f"url={url}", "verify=no", "dryrun=yes", full=True)
        assert p.returncode == 0 and "moonDem0002" in p.stdout, p.stderr
    # the server is gone: answered by the cache alone
    p, names = loaded(lean_env, f"from={moon}", f"url={url}", "verify=no", "dryrun=yes", full=True)
    assert p.returncode == 0 and "moonDem0002" in p.stdout, p.stderr
    extra = (names - base).intersection(MACHINERY)
    assert not extra, ("cached web", sorted(extra))


def moon_titan(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return [cubes.write_attached(directory / f"{name}.cub", cubes.label_text(name), data_bytes=256)
            for name in ("lro_moon", "cassini_titan")]



def test_an_ellipsoid_dry_run_loads_no_network_gdal_or_pvl(tmp_path, lean_env):
    moon, titan = moon_titan(tmp_path / "cubes")
    before = moon.read_bytes()
    p, mods = loaded(lean_env, f"from={moon}", "shape=ellipsoid", "dryrun=yes")
    assert p.returncode == 0, p.stderr
    assert "ShapeModel = Null" in p.stdout and moon.read_bytes() == before
    assert not mods.intersection(HEAVY), sorted(mods.intersection(HEAVY))
    # a real write, RingPlane, a list and the JSON output: still none of them
    lst = tmp_path / "list.txt"
    lst.write_text(f"{moon}\n{titan}\n")
    for args in ([f"fromlist={lst}", "shape=ellipsoid", "--json"], [f"from={titan}", "shape=ringplane"]):
        p, mods = loaded(lean_env, *args)
        assert p.returncode == 0, p.stderr
        assert not mods.intersection(HEAVY), (args, sorted(mods.intersection(HEAVY)))
    assert "ShapeModel = Null" in moon.read_text(encoding="latin-1", errors="replace")


def test_a_web_run_answered_from_the_cache_loads_no_network_stack(tmp_path, lean_env):
    moon, titan = moon_titan(tmp_path / "cubes")
    items = [item("moonDem0002", ["Moon"], "0002"), item("titanDem0001", ["Titan"], "0001")]
    lst = tmp_path / "list.txt"
    lst.write_text(f"{moon}\n{titan}\n")
    with StacServer(items) as srv:
        url = srv.url
        p, mods = loaded(lean_env, f"fromlist={lst}", f"url={url}", "verify=no", "dryrun=yes")
        assert p.returncode == 0, p.stderr
        assert {"requests", "urllib3"} <= mods  # the first run searched
    # the server is gone: the second run must be answered by the cache alone
    p, mods = loaded(lean_env, f"fromlist={lst}", f"url={url}", "verify=no", "--json", "jobs=4")
    assert p.returncode == 0, p.stderr
    recs = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["shape_model"] for r in recs] == ["/vsicurl/https://dems.example.org/moonDem0002.tiff",
                                                "/vsicurl/https://dems.example.org/titanDem0001.tiff"]
    assert all(r["source"] == "web" and r["written"] for r in recs)
    assert not mods.intersection(HEAVY), sorted(mods.intersection(HEAVY))


def test_importing_the_package_loads_none_of_them(lean_env):
    code = "import shaperesolver, shaperesolver.cli, shaperesolver.scale.batch, shaperesolver.policy.resolver"
    p = subprocess.run([sys.executable, "-c", code], env=lean_env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    mods = {m.split(".")[0] for m in Path(lean_env["LEAN_MODULES_OUT"]).read_text().split()}
    assert not mods.intersection(HEAVY), sorted(mods.intersection(HEAVY))


def test_the_values_written_without_asking_pvl_read_back_exactly():
    """check_round_trip skips pvl for paths and URLs: pvl agrees on a sample, wrapped lines included."""
    rng = random.Random(18)
    alphabet = "abcXYZ019_$./:@?-"
    values = ["Null", "RingPlane", "/vsicurl/https://astrogeology.usgs.gov/dems/Mars_MGS_MOLA_DEM_mosaic_global_463m.tif",
              "$base/dems/ldem_128ppd_Mar2011_clon180_radius_pad.cub", "/a//b", "/-", "$1", "/x:2020-01-01"]
    values += [rng.choice("/$") + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 160))) + rng.choice("aZ9/")
               for _ in range(2000)]
    checked = wrapped = 0
    for value in values:
        text = format_statement("ShapeModel", value, 4, 25)
        if not _KNOWN_GOOD.fullmatch(value):
            continue
        wrapped += "\n" in text.rstrip("\n")
        got = pvl.loads(f"Group = Kernels\n{text}End_Group\nEnd\n")["Kernels"]["ShapeModel"]
        assert got == value or (value == "Null" and got is None), (value, got)
        assert check_round_trip(value) == value
        checked += 1
    assert checked > 1500 and wrapped > 500


LOGGING_CASES = {
    # program: what it does before resolving, and what stderr must then hold
    "no logging imported": ("", False),
    "logging imported, not configured": ("import logging", False),
    "logging configured after the import": ("import logging; logging.basicConfig()", True),
}


@pytest.mark.parametrize("case", sorted(LOGGING_CASES))
def test_the_api_logs_as_through_logging_whenever_logging_is_loaded(tmp_path, lean_env, case):
    """The package's warnings reach a program that configures logging (even after importing
    shaperesolver), stay silent otherwise (the NullHandler), and never load logging for a
    program that has not."""
    moon = moon_titan(tmp_path / "cubes")[0]  # (its label has no Kernels group: resolving warns)
    before, should_show = LOGGING_CASES[case]
    code = ("import sys, shaperesolver\n"
            f"{before}\n"
            "r = shaperesolver.resolve(sys.argv[1], shape='ringplane')\n"
            "print(r.shape_model, 'logging' in sys.modules)\n")
    p = subprocess.run([sys.executable, "-c", code, str(moon)], env=lean_env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["RingPlane", str(bool(before))]
    assert ("no Kernels group" in p.stderr) == should_show, p.stderr
    if should_show:  # through the package's own logger, named by module
        assert p.stderr.startswith("WARNING:shaperesolver.policy.resolver:")


def test_the_command_shows_warnings_at_its_level_and_loads_logging_only_to_show_one(tmp_path, lean_env):
    moon = moon_titan(tmp_path / "cubes")[0]
    p, names = loaded(lean_env, f"from={moon}", "shape=ringplane", "dryrun=yes", full=True)
    assert p.returncode == 0 and "shaperesolver: " in p.stderr and "no Kernels group" in p.stderr, p.stderr
    assert "logging" in names  # a message to show loads logging
    p, names = loaded(lean_env, f"from={moon}", "shape=ringplane", "dryrun=yes", "-q", full=True)
    assert p.returncode == 0 and "no Kernels group" not in p.stderr, p.stderr
    assert "logging" not in names  # below the level shown: dropped where it is made
