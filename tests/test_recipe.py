"""The conda recipe parses, renders and says the same as pyproject.toml (offline)."""

import re
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "conda-recipe" / "recipe.yaml"
ORDER = ["schema_version", "context", "package", "source", "build", "requirements", "tests", "about", "extra"]

import rattler_build  # noqa: E402  (the test extra installs py-rattler-build)


def _rendered():
    recipe = rattler_build.Stage0Recipe.from_file(RECIPE)
    variants = rattler_build.VariantConfig()
    rendered = recipe.render(variants)
    assert len(rendered) >= 1
    return recipe, [v.recipe.to_dict() for v in rendered]


def _spec(req: str) -> tuple[str, str]:
    m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    assert m, req
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def test_recipe_renders_and_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    _, variants = _rendered()
    version = re.search(r'__version__ = "([^"]+)"', (ROOT / "shaperesolver" / "_version.py").read_text()).group(1)
    for d in variants:
        assert d["package"]["name"] == project["name"]
        assert d["package"]["version"] == version
        run = [_spec(r) for r in d["requirements"]["run"] if not r.startswith("python ")]
        assert sorted(run) == sorted(_spec(r) for r in project["dependencies"])
        eps = d["build"]["python"]["entry_points"]
        assert eps == [f"{k} = {v}" for k, v in project["scripts"].items()]
        assert d["build"]["noarch"] == "python"


def test_recipe_follows_conda_forge_lint_rules():
    text = RECIPE.read_text()
    present = re.findall(r"^([a-z_]+):", text, re.M)
    assert present == sorted(present, key=ORDER.index)
    _, variants = _rendered()
    for d in variants:
        about = d["about"]
        for key in ("homepage", "license", "summary", "license_file"):
            assert about.get(key), key
        assert (ROOT / about["license_file"] if isinstance(about["license_file"], str) else ROOT / about["license_file"][0]).exists()
        assert d["extra"]["recipe-maintainers"]
        host = d["requirements"]["host"]
        assert any(s.startswith("python ") and s.endswith(".*") for s in host)
        assert any(s.startswith("python >=") for s in d["requirements"]["run"])
    raw = rattler_build.Stage0Recipe.from_file(RECIPE).to_dict()
    for t in raw.get("tests", []):
        pv = t.get("python", {}).get("python_version") if isinstance(t, dict) else None
        if pv is not None:
            assert "*" in pv and any(str(v).endswith(".*") and v != "*" for v in pv)


def test_a_broken_recipe_is_rejected(tmp_path):
    broken = tmp_path / "recipe.yaml"
    broken.write_text(RECIPE.read_text().replace("  noarch: python\n", "  noarch: python\n  entry_points: [x = y:z]\n"))
    with pytest.raises(Exception):
        rattler_build.Stage0Recipe.from_file(broken).render(rattler_build.VariantConfig())
