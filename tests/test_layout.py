"""The import graph: imports flow one way, from the entry points down, with no cycles.

Reads every module's imports with `ast` (lazy imports inside functions included; importing `a.b.c` counts as
importing the packages `a` and `a.b` too, since Python runs their `__init__` first) and checks:
- no cycle among the package's modules;
- the streaming core (`streamer/*.py` below the entry points) imports neither the adapters
  (`streamer.models`), the UI (`streamer.app`) nor the synthetic world (`streamer.world`);
- the adapters import neither the session, the CLI, the UI nor the world.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"streamer": ROOT / "streamer", "streamer.models": ROOT / "models", "streamer.app": ROOT / "app",
            "streamer.world": ROOT / "world"}
ENTRY_POINTS = {"streamer.cli"}  # the CLI loads a model by name: it may import the adapters' registry


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.glob("*.py"):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The package modules that `path` imports (a `from pkg import name` counts as pkg.name when that is a module),
    with the packages above each of them."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        out |= {n for n in names if n in known}
    return out | {parent for n in out for parent in _parents(n) if parent in known}


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def test_a_module_imports_the_packages_above_it():
    assert {"streamer.models", "streamer"} <= imports(ROOT / "streamer" / "cli.py", set(modules()))


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) - {name} for name, path in found.items()}


def test_graph_sees_the_package():
    g = graph()
    assert {"streamer.session", "streamer.kv_window", "streamer.models.base", "streamer.app.ui"} <= set(g)
    assert "streamer.shared_types" in g["streamer.session"] and "streamer.shared_types" in g["streamer.models.base"]


def test_no_import_cycles():
    g = graph()
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(node):] + [node]))
        if node in done:
            return
        for nxt in sorted(g[node]):
            visit(nxt, path + [node])
        done.add(node)

    for name in sorted(g):
        visit(name, [])


def test_core_does_not_import_adapters_ui_or_world():
    upward = ("streamer.models", "streamer.app", "streamer.world")
    for name, deps in graph().items():
        if name.startswith(upward) or name in ENTRY_POINTS:
            continue
        assert not {d for d in deps if d.startswith(upward)}, f"{name} imports {sorted(deps)}"


def test_adapters_do_not_import_session_cli_ui_or_world():
    above = ("streamer.session", "streamer.cli", "streamer.app", "streamer.world")
    for name, deps in graph().items():
        if name.startswith("streamer.models"):
            assert not {d for d in deps if d.startswith(above)}, f"{name} imports {sorted(deps)}"
