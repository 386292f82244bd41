"""Module structure: no import cycles, the library above nothing, TF-free modules stay TF-free."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from typing import Dict, Set

import pytest
from conftest import REPO

TF_FREE = ("tfdarts.genotype", "tfdarts.config", "tfdarts.analysis", "tfdarts.report",
           "tfdarts.contract", "tfdarts.space", "tfdarts.metrics", "tfdarts.sampler",
           "tfdarts.progress", "tfdarts.task", "tfdarts.registry", "tfdarts.fileio")


def _imports(path: str, package: str) -> Set[str]:
    """Every module of `package` that the file imports, at top level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m == package or m.startswith(package + ".")}


def _graph(package: str) -> Dict[str, Set[str]]:
    folder = os.path.join(REPO, package)
    names = {f"{package}.{f[:-3]}" for f in os.listdir(folder) if f.endswith(".py") and f != "__init__.py"}
    return {name: _imports(os.path.join(REPO, *name.split(".")) + ".py", package) & names
            for name in names}


def _cycle(graph: Dict[str, Set[str]]):
    state: Dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path + [node, dep]
            if dep not in state:
                found = visit(dep, path + [node])
                if found:
                    return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def test_library_modules_have_no_import_cycle():
    assert _cycle(_graph("tfdarts")) is None


def test_library_never_imports_the_pipeline():
    folder = os.path.join(REPO, "tfdarts")
    for name in os.listdir(folder):
        if name.endswith(".py"):
            assert not _imports(os.path.join(folder, name), "pipeline"), name


def _loads_tensorflow(code: str) -> bool:
    probe = code + "\nimport sys\nprint('tensorflow' in sys.modules or 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip().splitlines()[-1] == "True"


@pytest.mark.parametrize("module", TF_FREE)
def test_module_imports_no_tensorflow(module):
    assert not _loads_tensorflow(f"import {module}")


def test_listing_datasets_imports_no_tensorflow():
    assert not _loads_tensorflow("from pipeline import cli\nprint(cli.known_datasets())")
