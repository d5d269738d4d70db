"""The folders are the architecture: each room (subpackage) imports only the rooms below it.

Every module of the package is parsed (not imported) and each import it makes at run
time, at module level or inside a function, is checked against the ranks below, which
the rooms' ``__init__`` docstrings state in words.  Imports only for type checkers
(``if TYPE_CHECKING:``) are left out: they never run.  Inside the package the import
graph of modules has no cycle.
"""

import ast
import importlib
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "shaperesolver"

#: rank of each room; a room may import itself and any room of a lower rank
RANK = {"errors": 0, "_version": 0, "base": 1, "cube": 2, "net": 2, "catalog": 3, "models": 3,
        "policy": 4, "scale": 5, "mirror": 5, "cli": 6}
#: what each room's docstring must say it may import (the words and the rule agree)
ROOMS = ["base", "cube", "net", "catalog", "models", "policy", "scale", "mirror", "cli"]


def _modules():
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(PKG).with_suffix("")
        yield ".".join(("shaperesolver", *rel.parts)).removesuffix(".__init__"), f


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None  # None: the package's face


def _runtime_imports(path: Path, module: str):
    """(line, imported module) for every import that can run, resolved to absolute names."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    here = module if is_pkg else module.rsplit(".", 1)[0]
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("shaperesolver"):
                continue
            for alias in node.names:  # `from .x import y` may name a module y
                sub = f"{target}.{alias.name}"
                yield node.lineno, sub if _is_module(sub) else target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("shaperesolver"):
                    yield node.lineno, alias.name


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (PKG / rel).with_suffix(".py").is_file() or (PKG / rel / "__init__.py").is_file()


def test_every_room_imports_and_says_what_it_may_import():
    for room in ROOMS:
        mod = importlib.import_module(f"shaperesolver.{room}")
        doc = mod.__doc__ or ""
        assert re.search(r"Owns:", doc) and re.search(r"May import:", doc), f"{room}: docstring lacks Owns/May import"


def test_imports_run_one_way():
    wrong = []
    for module, path in _modules():
        room = _room(module)
        if room is None:  # the package's own __init__/__main__ face every room
            continue
        for line, target in _runtime_imports(path, module):
            other = _room(target)
            if other is None or other == room:
                continue
            if RANK[other] >= RANK[room]:
                wrong.append(f"{path.relative_to(PKG)}:{line}: {room} (rank {RANK[room]}) imports {target}")
    assert not wrong, "upward or sideways imports:\n" + "\n".join(wrong)


def test_no_import_cycles_between_modules():
    graph = {}
    for module, path in _modules():
        graph[module] = {t for _, t in _runtime_imports(path, module) if t != module}
    # a package's __init__ importing its own modules is how it re-exports them: not a cycle
    for module in graph:
        graph[module] = {t for t in graph[module] if not (module.startswith(t + ".") and t in graph)}
    seen, stack, cycles = set(), [], []

    def visit(node):
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt)
        stack.pop()

    for node in sorted(graph):
        visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("room", ROOMS)
def test_the_rule_can_fail(room, tmp_path):
    """The checker sees an upward import (a check that cannot fail proves nothing)."""
    f = tmp_path / "x.py"
    f.write_text("from ..cli import main\n")
    found = list(_runtime_imports(f, f"shaperesolver.{room}.x"))
    assert found == [(1, "shaperesolver.cli.main")]
    assert room == "cli" or RANK["cli"] > RANK[room]
