"""The wheel: built from this checkout, installed into a fresh venv, it carries its configs
and console commands and runs the tiny preset from any folder."""

import glob
import os
import site
import subprocess
import sys
import zipfile

import pytest
from conftest import FASHION_DIR, REPO


def _sh(args, **kw):
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900, **kw)
    assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    _sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), REPO], cwd=str(out))
    (path,) = glob.glob(str(out / "tfdarts-*.whl"))
    return path


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    """A fresh venv with the wheel; the dependencies come from this interpreter's
    site-packages (a plain path entry: this checkout's editable hook is not loaded)."""
    root = tmp_path_factory.mktemp("venv")
    _sh([sys.executable, "-m", "venv", "--without-pip", str(root)])
    (purelib,) = glob.glob(str(root / "lib" / "python3.*" / "site-packages"))
    with open(os.path.join(purelib, "deps.pth"), "w") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")
    _sh([sys.executable, "-m", "pip", "--python", str(root / "bin" / "python"), "install",
         "--no-deps", "--no-index", "-q", wheel])
    return root


def test_wheel_carries_configs_and_commands(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for config in ("presets/cpu.yaml", "presets/tiny.yaml", "presets/paper.yaml",
                   "datasets/graphene_kirigami.yaml", "studies/cpu.yaml"):
        assert f"tfdarts/configs/{config}" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    for command in ("tfdarts-run", "tfdarts-study", "tfdarts-compare", "tfdarts-lineage",
                    "tfdarts-kubeflow", "tfdarts-step"):
        assert f"{command} = " in text


def test_installed_wheel_runs_the_tiny_preset(venv, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TFDARTS_CONFIG_DIR")}
    env.update(CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    where = _sh([str(venv / "bin" / "python"), "-c", "import tfdarts, pipeline.cli as c; "
                 "print(tfdarts.__file__); print(c.CONFIG_DIR)"], cwd=str(tmp_path), env=env)
    assert all(line.startswith(str(venv)) for line in where.stdout.split())  # not this checkout
    proc = _sh([str(venv / "bin" / "tfdarts-run"), "--preset", "tiny", "--dataset", "fashion_mnist",
                "--override", f"data.data_dir={FASHION_DIR}", "--override", "data.max_train=256",
                "--output_dir", str(tmp_path / "runs")], cwd=str(tmp_path), env=env)
    assert "accuracy" in proc.stdout.splitlines()[1]
    saved_model = next(l.split(None, 1)[1] for l in proc.stdout.splitlines() if l.startswith("SavedModel:"))
    assert os.path.isfile(os.path.join(saved_model, "saved_model.pb"))
