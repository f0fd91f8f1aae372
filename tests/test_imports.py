"""The core's import graph has no cycle, imports point down the layers, and every module imports
on its own."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

XDD = Path(__file__).resolve().parent.parent / "xdd"
# Bottom to top: a module may import its own layer's modules and those of the layers below.
LAYERS = ("core", "storage", "train", "report", "pipeline", "probe", "estimate", "jobs", "cli")
MODULES = sorted(".".join(p.relative_to(XDD).with_suffix("").parts) for p in XDD.rglob("*.py")
                 if p.stem not in ("__init__", "__main__"))


def _resolve(module: str, node: ast.ImportFrom) -> list[str]:
    """The xdd modules an ImportFrom names (package-relative dotted names)."""
    if node.level:
        here = module.split(".")[:-node.level] if node.level <= module.count(".") + 1 else []
        base = ".".join(here + ([node.module] if node.module else []))
    elif (node.module or "").startswith("xdd."):
        base = node.module[4:]
    elif node.module == "xdd":
        base = ""
    else:
        return []
    cands = [f"{base}.{a.name}".lstrip(".") for a in node.names] + [base]
    return [c for c in cands if c in MODULES][:1] if base in MODULES else \
        [c for c in cands if c in MODULES]


def _imports(module: str) -> set[str]:
    """xdd modules that ``module`` imports, at module level or inside a function."""
    tree = ast.parse((XDD / (module.replace(".", "/") + ".py")).read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            out |= set(_resolve(module, node))
        elif isinstance(node, ast.Import):
            out |= {a.name[4:] for a in node.names if a.name[4:] in MODULES
                    and a.name.startswith("xdd.")}
    return out - {module}


def _layer(module: str) -> int:
    top = module.split(".")[0]
    return LAYERS.index(top) if top in LAYERS else -1  # xdd/openblas.py: below everything


def test_every_module_is_in_a_layer():
    assert all(_layer(m) >= 0 or m == "openblas" for m in MODULES), MODULES


def test_imports_point_down_the_layers():
    graph = {m: _imports(m) for m in MODULES}
    assert "pipeline.experiment" in graph["jobs.api"]  # the graph is really read
    assert "core.config" in graph["train.retrain"]
    up = [(m, n) for m, deps in graph.items() for n in deps if _layer(n) > _layer(m)]
    assert not up, up


def test_no_import_cycle_in_the_core():
    graph = {m: _imports(m) for m in MODULES}
    assert graph["jobs.api"] and "jobs.worker" not in graph["jobs.api"]
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
