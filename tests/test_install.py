"""What users install is what is tested.

Builds the sdist and the wheel with ``python -m build`` (from a copy of the checkout,
so the checkout stays clean), checks both with ``twine check``, installs the wheel into
a fresh virtual environment with pip, and runs the installed ``shaperesolver`` outside
the checkout: ``--help``, ``--version`` and the README's bundled-data example.

No network: the fresh venv gets the wheel's run dependencies (GDAL's bindings included,
which PyPI only has as a source to build) from this environment, exposed read-only
through a ``.pth`` file, so pip resolves the wheel's ``Requires-Dist`` against them with
``--no-index``.  When this environment itself sees the system site-packages (Debian's
``python3-gdal``), the fresh venv does too.

Needs the ``build`` extra (``pip install '.[build]'``); skipped without it unless
``SHAPERESOLVER_REQUIRE_INSTALL_TEST=1`` (set by ``.ci/dev test``), then it fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
_missing = [m for m in ("build", "twine", "packaging") if importlib.util.find_spec(m) is None]
if _missing and not os.environ.get("SHAPERESOLVER_REQUIRE_INSTALL_TEST"):
    pytest.skip(f"needs {', '.join(_missing)}: pip install '.[build]'", allow_module_level=True)

from packaging.markers import default_environment  # noqa: E402
from packaging.requirements import Requirement  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402

VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "shaperesolver" / "_version.py").read_text()).group(1)
SKIP_COPY = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache")


def _run(cmd, **kw):
    kw.setdefault("timeout", 600)
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert p.returncode == 0, f"{cmd}\nexit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def _clean_env(tmp: Path) -> dict[str, str]:
    """The environment of a user's shell: nothing pointing at the checkout or this venv."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "ISISDATA", "SHAPERESOLVER_STAC_URL")}
    env["SHAPERESOLVER_CACHE_DIR"] = str(tmp / "cache")
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """sdist and wheel built from a copy of the checkout, both passing twine check."""
    tmp = tmp_path_factory.mktemp("build")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=SKIP_COPY, symlinks=True)
    out = tmp / "dist"
    # --no-isolation: the build extra provides setuptools, so no download is needed
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, src], cwd=tmp, env=_clean_env(tmp))
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    assert [p.name for p in sdists] == [f"shaperesolver-{VERSION}.tar.gz"]
    assert [p.name for p in wheels] == [f"shaperesolver-{VERSION}-py3-none-any.whl"]
    p = _run([sys.executable, "-m", "twine", "check", "--strict", *sdists, *wheels], env=_clean_env(tmp))
    assert p.stdout.count("PASSED") == 2, p.stdout
    return sdists[0], wheels[0]


def test_wheel_holds_the_package_and_its_metadata(dists):
    _, wheel = dists
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = f"shaperesolver-{VERSION}.dist-info"
        meta = z.read(f"{info}/METADATA").decode()
        entry_points = z.read(f"{info}/entry_points.txt").decode()
    sources = {f"shaperesolver/{p.name}" for p in (ROOT / "shaperesolver").iterdir()
               if p.suffix in (".py", ".json", ".typed")}
    assert sources <= names, sources - names
    assert not [n for n in names if n.startswith(("tests/", "data/"))]
    assert "shaperesolver = shaperesolver.cli:main" in entry_points
    requires = sorted(line.split(": ", 1)[1] for line in meta.splitlines()
                      if line.startswith("Requires-Dist:") and "extra ==" not in line)
    assert [Requirement(r).name.lower() for r in requires] == sorted(
        Requirement(r).name.lower() for r in project["dependencies"])
    assert "Description-Content-Type: text/markdown" in meta


def test_sdist_holds_the_sources_and_licence(dists):
    import tarfile

    sdist, _ = dists
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for need in ("pyproject.toml", "README.md", "LICENSE", "shaperesolver/__init__.py", "shaperesolver/base/bodytable.py"):
        assert need in names, need


def _closure(requirements: list[str]) -> list[metadata.Distribution]:
    """The installed distributions these requirements need, transitively (no extras)."""
    env = default_environment()
    seen: dict[str, metadata.Distribution] = {}
    todo = list(requirements)
    while todo:
        req = Requirement(todo.pop())
        if req.marker and not req.marker.evaluate(dict(env, extra="")):
            continue
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        dist = metadata.distribution(req.name)  # raises if this environment lacks it
        seen[name] = dist
        todo += list(dist.requires or [])
    return list(seen.values())


def _top_level(dist: metadata.Distribution) -> set[str]:
    """The entries a distribution puts directly into its site-packages directory."""
    names = {f.parts[0] for f in (dist.files or []) if f.parts and f.parts[0] != ".."}
    top = dist.read_text("top_level.txt")
    names |= {n.strip() for n in (top or "").split() if n.strip()}
    return names


@pytest.fixture(scope="module")
def installed(dists, tmp_path_factory):
    """A fresh venv with the wheel installed by pip; returns its bin directory."""
    _, wheel = dists
    tmp = tmp_path_factory.mktemp("venv")
    venv = tmp / "venv"
    system_site = sys.prefix != sys.base_prefix and \
        "include-system-site-packages = true" in (Path(sys.prefix) / "pyvenv.cfg").read_text().lower()
    _run([sys.executable, "-m", "venv", *(["--system-site-packages"] if system_site else []), venv])
    py = venv / "bin" / "python"
    # this environment's copies of the wheel's run dependencies (and their dependencies),
    # linked into one directory the fresh venv sees through a .pth file; what the fresh
    # venv sees anyway (the system site-packages) is left out
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(f"shaperesolver-{VERSION}.dist-info/METADATA").decode()
    requires = [line.split(": ", 1)[1] for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    requires.append("numpy")  # osgeo.gdal_array
    own_site = Path(sysconfig.get_paths()["purelib"]).resolve()
    shim = tmp / "deps"
    shim.mkdir()
    deps = _closure(requires)
    for dist in deps:
        site = Path(dist.locate_file("")).resolve()
        if system_site and site != own_site:
            continue
        info_dir = getattr(dist, "_path", None)  # the .dist-info/.egg-info directory (not in every RECORD)
        for name in _top_level(dist) | ({Path(str(info_dir)).name} if info_dir else set()):
            target = site / name
            if not target.exists():
                target = site / f"{name}.py"
            if target.exists() and not (shim / target.name).exists():
                (shim / target.name).symlink_to(target)
    fresh_site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (fresh_site / "zz-test-deps.pth").write_text(f"{shim}\n")
    env = _clean_env(tmp)
    p = _run([py, "-m", "pip", "install", "--no-index", "--no-cache-dir", wheel], cwd=tmp, env=env)
    assert "Successfully installed shaperesolver" in p.stdout, p.stdout
    # pip check, for what the wheel brings in (a system site-packages may hold unrelated
    # broken distributions)
    check = subprocess.run([py, "-m", "pip", "check"], cwd=tmp, env=env, capture_output=True, text=True)
    ours = {canonicalize_name(d.metadata["Name"]) for d in deps} | {"shaperesolver"}
    broken = [line for line in check.stdout.splitlines() if line.split() and canonicalize_name(line.split()[0]) in ours]
    assert not broken, check.stdout
    where = _run([py, "-c", "import shaperesolver, osgeo; print(shaperesolver.__file__)"], cwd=tmp, env=env).stdout
    assert Path(where.strip()).resolve().is_relative_to(fresh_site.resolve()), where
    return venv / "bin"


def test_installed_help_and_version(installed, tmp_path):
    env = _clean_env(tmp_path)
    p = _run([installed / "shaperesolver", "--help"], cwd=tmp_path, env=env)
    assert "shape=web|system|ellipsoid|ringplane|user" in p.stdout
    p = _run([installed / "shaperesolver", "--version"], cwd=tmp_path, env=env)
    assert f"shaperesolver {VERSION}" in p.stdout and "GDAL 3." in p.stdout


def test_installed_runs_the_bundled_example(installed, tmp_path):
    """The README's example (what `bash .ci/dev example` runs), from outside the checkout."""
    work = tmp_path / "cubes"
    shutil.copytree(ROOT / "data" / "cubes", work)
    lst = work / "cubes.lst"
    lst.write_text("".join(f"{work / n}\n" for n in ("viking_mars.cub", "lro_moon.cub", "galileo_io.lbl")))
    p = _run([installed / "shaperesolver", f"fromlist={lst}", "shape=web",
              f"catalog={ROOT / 'data' / 'catalog' / 'catalog.json'}", f"isisdata={ROOT / 'data' / 'isisdata'}",
              "verify=no", "cache=no", "--json"], cwd=tmp_path, env=_clean_env(tmp_path))
    recs = {Path(r["cube"]).name: r for r in map(json.loads, p.stdout.splitlines())}
    assert recs["viking_mars.cub"]["source"] == "web"
    assert recs["viking_mars.cub"]["item_id"] == "molaMarsPlanetaryRadius0005"
    assert recs["lro_moon.cub"]["source"] == "system"
    assert recs["galileo_io.lbl"]["source"] == "ellipsoid"
    assert recs["galileo_io.lbl"]["shape_model"] == "Null"
    assert recs["viking_mars.cub"]["written"] and recs["lro_moon.cub"]["written"]
    # and the label now says so, read back by the installed package
    code = "import sys; from shaperesolver import read_label; print(read_label(sys.argv[1]).shape_model)"
    p = _run([installed / "python", "-c", code, work / "viking_mars.cub"], cwd=tmp_path, env=_clean_env(tmp_path))
    assert p.stdout.strip() == recs["viking_mars.cub"]["shape_model"]
    assert p.stdout.strip().endswith("/molaMarsPlanetaryRadius0005.tiff")


# ---------------------------------------------------------------- types a user's editor and mypy understand

@pytest.fixture(scope="module")
def editable(tmp_path_factory):
    """A fresh venv with the checkout installed editable, as the development set-up does
    (``pip install -e .``, here offline: setuptools, pip and the run dependencies come from
    this environment through a ``.pth`` file); returns its python."""
    tmp = tmp_path_factory.mktemp("editable")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=SKIP_COPY, symlinks=True)
    venv = tmp / "venv"
    system_site = sys.prefix != sys.base_prefix and \
        "include-system-site-packages = true" in (Path(sys.prefix) / "pyvenv.cfg").read_text().lower()
    _run([sys.executable, "-m", "venv", "--without-pip", *(["--system-site-packages"] if system_site else []), venv])
    py = venv / "bin" / "python"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    shim = tmp / "deps"
    shim.mkdir()
    own_site = Path(sysconfig.get_paths()["purelib"]).resolve()
    for dist in _closure([*project["dependencies"], "numpy", "setuptools", "pip"]):
        site = Path(dist.locate_file("")).resolve()
        if system_site and site != own_site:
            continue
        info_dir = getattr(dist, "_path", None)
        for name in _top_level(dist) | ({Path(str(info_dir)).name} if info_dir else set()):
            target = site / name
            if not target.exists():
                target = site / f"{name}.py"
            if target.exists() and not (shim / target.name).exists():
                (shim / target.name).symlink_to(target)
    fresh_site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (fresh_site / "zz-test-deps.pth").write_text(f"{shim}\n")
    _run([py, "-m", "pip", "install", "--no-index", "--no-build-isolation", "-e", src], cwd=tmp, env=_clean_env(tmp))
    where = _run([py, "-c", "import shaperesolver; print(shaperesolver.__file__)"], cwd=tmp, env=_clean_env(tmp)).stdout
    assert Path(where.strip()).resolve() == (src / "shaperesolver" / "__init__.py").resolve()
    return py


def _mypy(py: Path, code: str, tmp: Path) -> subprocess.CompletedProcess:
    user = tmp / "pipeline.py"
    user.write_text(code)
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--python-executable", py,
                           user], capture_output=True, text=True, cwd=tmp, env=_clean_env(tmp), timeout=600)


def test_mypy_strict_sees_the_public_api_of_an_editable_install(editable, tmp_path):
    pytest.importorskip("mypy")
    good = (
        "from shaperesolver import CubeNotFoundError, NoAnswerError, Resolver, Shape, resolve, write_batch\n"
        "from shaperesolver.policy.inventory import ItemInfo\n\n\n"
        "def run(cubes: list[str], shape: Shape) -> list[ItemInfo]:\n"
        "    try:\n"
        "        resolve(cubes[0], shape='ellipsoid', url='http://127.0.0.1:9/', verify=False, fallback='always')\n"
        "    except (CubeNotFoundError, NoAnswerError):\n"
        "        pass\n"
        "    write_batch(cubes, shape=shape, catalog='/data/catalog.json', cache='no')\n"
        "    with Resolver(cache='refresh') as r:\n"
        "        return r.items('Moon')\n")
    p = _mypy(editable, good, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    bad = good.replace("cache='no'", "catlog='/data/catalog.json'").replace("shape='ellipsoid'", "shape='elipsoid'")
    bad += "\n\nx: int = Resolver().items('Moon')[0].item_id\n"
    p = _mypy(editable, bad, tmp_path)
    assert p.returncode == 1
    assert 'Unexpected keyword argument "catlog" for "write_batch"' in p.stdout, p.stdout
    assert "Literal['elipsoid']" in p.stdout, p.stdout
    assert 'Incompatible types in assignment (expression has type "str", variable has type "int")' in p.stdout
    assert "does not explicitly export" not in p.stdout and "import-not-found" not in p.stdout
