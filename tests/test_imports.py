"""The core's import graph has no cycle, and every module imports on its own."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

XDD = Path(__file__).resolve().parent.parent / "xdd"
MODULES = sorted(p.stem for p in XDD.glob("*.py") if p.stem not in ("__init__", "__main__"))


def _imports(module: str) -> set[str]:
    """xdd modules that ``module`` imports, at module level or inside a function."""
    tree = ast.parse((XDD / f"{module}.py").read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1 and not base:  # from . import x, y
                out |= {a.name for a in node.names}
            elif node.level == 1:  # from .x import y
                out.add(base.split(".")[0])
            elif base.startswith("xdd."):
                out.add(base.split(".")[1])
            elif base == "xdd":
                out |= {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("xdd.")}
    return out & set(MODULES)


def test_no_import_cycle_in_the_core():
    graph = {m: _imports(m) for m in MODULES}
    assert graph["jobs"] and "worker" not in graph["jobs"]  # the graph is really read
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(path[path.index(n):] + [n] if n in path else [m, n])
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in MODULES:
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


@pytest.mark.slow
def test_every_core_module_imports_alone():
    code = ("import importlib, sys\n"
            f"for m in {MODULES!r}:\n"
            "    for k in [k for k in sys.modules if k == 'xdd' or k.startswith('xdd.')]:\n"
            "        del sys.modules[k]\n"
            "    importlib.import_module('xdd.' + m)\n"
            "    assert 'streamlit' not in sys.modules, m\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=XDD.parent, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
