"""The Kubeflow YAML: five tasks wired like the TFX pipeline, each running the project's
image; and its task commands, run here as plain processes, complete the tiny pipeline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any, Dict, List

import pytest
import yaml
from conftest import FASHION_DIR, REPO

from tfdarts import contract

IMAGE = "registry.example/tfdarts:test"
CORE = {"ingest": [], "search": ["ingest"], "retrain": ["ingest", "search"],
        "evaluate": ["ingest", "retrain", "search"],
        "analyze": ["evaluate", "ingest", "retrain", "search"]}


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    return env


def _compile(tmp_path, *extra: str) -> Dict[str, Any]:
    out = tmp_path / "pipeline.yaml"
    proc = subprocess.run([sys.executable, "-m", "pipeline.kubeflow", "--dataset", "fashion_mnist",
                           "--image", IMAGE, "--output", str(out), *extra], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return yaml.safe_load(out.read_text())


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return _compile(tmp_path_factory.mktemp("kfp"))


def test_five_tasks_with_the_right_dependencies(compiled):
    tasks = compiled["root"]["dag"]["tasks"]
    assert set(tasks) == set(CORE)
    for name, deps in CORE.items():
        assert sorted(tasks[name].get("dependentTasks", [])) == deps, name


def test_each_task_runs_its_step_in_the_image(compiled):
    executors = compiled["deploymentSpec"]["executors"]
    tasks = compiled["root"]["dag"]["tasks"]
    for name, task in tasks.items():
        component = compiled["components"][task["componentRef"]["name"]]
        container = executors[component["executorLabel"]]["container"]
        assert container["image"] == IMAGE
        assert container["command"] == ["python", "-m", "pipeline.steps", name]


def test_tasks_get_only_their_config_sections(compiled):
    tasks = compiled["root"]["dag"]["tasks"]

    def config(name):
        return json.loads(tasks[name]["inputs"]["parameters"]["config_json"]["runtimeValue"]["constant"])

    assert set(config("ingest")) == {"data"}
    assert set(config("search")) == {"data", "search", "runtime"}
    assert "baselines" not in config("retrain")
    assert config("search")["search"]["cells"] == 5  # the cpu preset
    versions = {tasks[n]["inputs"]["parameters"]["code_version"]["runtimeValue"]["constant"] for n in tasks}
    assert len(versions) == 1


def test_tasks_get_the_logging_cadence_outside_their_cache_key(compiled):
    """``runtime.log_every`` (100 in the cpu preset) is an environment variable of every
    task, not part of config_json."""
    executors = compiled["deploymentSpec"]["executors"]
    assert len(executors) == len(CORE)
    for executor in executors.values():
        env = {e["name"]: e["value"] for e in executor["container"].get("env", [])}
        assert env.get("TFDARTS_LOG_EVERY") == "100", executor
    for task in compiled["root"]["dag"]["tasks"].values():
        config = task["inputs"]["parameters"]["config_json"]["runtimeValue"]["constant"]
        assert "log_every" not in config


def test_unknown_baseline_is_refused_at_compile_time(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline.kubeflow", "--image", IMAGE, "--baselines",
                           "--override", "baselines.include=nope", "--output", str(tmp_path / "p.yaml")],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "baselines.include: unknown baseline 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "p.yaml").exists()


def test_same_wiring_as_the_tfx_pipeline(tmp_path):
    from pipeline import cli
    from pipeline.pipeline import create_pipeline

    for baselines in (False, True):
        config = cli.build_config("fashion_mnist", "tiny", (), [f"data.data_dir={FASHION_DIR}"])
        tfx = create_pipeline(config, str(tmp_path / "root"), str(tmp_path / "m.sqlite"),
                              baselines=baselines, version="test")
        tfx_deps = {c.id.lower(): sorted(u.id.lower() for u in c.upstream_nodes) for c in tfx.components}
        extra = ("--baselines",) if baselines else ()
        kfp_tasks = _compile(tmp_path, "--preset", "tiny", *extra)["root"]["dag"]["tasks"]
        kfp_deps = {n: sorted(t.get("dependentTasks", [])) for n, t in kfp_tasks.items()}
        assert tfx_deps == kfp_deps
        assert ("baselines" in kfp_deps["analyze"]) == baselines


def test_bad_dataset_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline.kubeflow", "--dataset", "nope", "--image",
                           IMAGE, "--output", str(tmp_path / "p.yaml")], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown dataset")
    assert len(proc.stderr.strip().splitlines()) == 1


def _resolve(arg: Any, params: Dict[str, str], paths: Dict[str, str]) -> List[str]:
    """Substitutes kfp placeholders the way the Kubeflow launcher does (subset we use)."""
    if isinstance(arg, str) and arg.startswith("{\"IfPresent\""):
        spec = json.loads(arg)["IfPresent"]
        if spec["InputName"] not in paths:
            return []
        return [x for item in spec["Then"] for x in _resolve(item, params, paths)]

    def sub(match):
        kind, name = match.group(1), match.group(2)
        return params[name] if kind == "inputs.parameters" else paths[name]

    return [re.sub(r"\{\{\$\.(inputs\.parameters|inputs\.artifacts|outputs\.artifacts)\['(\w+)'\]"
                   r"(?:\.path)?\}\}", sub, arg)]


def test_compiled_commands_run_the_tiny_pipeline(tmp_path):
    """Runs each task's container command as a local process, in dependency order, with
    local folders standing in for Kubeflow's artifact paths: the step entry point and the
    component code work outside TFX."""
    spec = _compile(tmp_path, "--preset", "tiny", "--override", f"data.data_dir={FASHION_DIR}")
    tasks = spec["root"]["dag"]["tasks"]
    executors = spec["deploymentSpec"]["executors"]
    artifacts: Dict[str, Dict[str, str]] = {}
    for name in CORE:
        task = tasks[name]
        params = {k: v["runtimeValue"]["constant"] for k, v in task["inputs"].get("parameters", {}).items()
                  if "runtimeValue" in v}
        params["work_root"] = str(tmp_path / "work")
        paths = {k: artifacts[v["taskOutputArtifact"]["producerTask"]][v["taskOutputArtifact"]["outputArtifactKey"]]
                 for k, v in task["inputs"].get("artifacts", {}).items()}
        component = spec["components"][task["componentRef"]["name"]]
        outs = {k: str(tmp_path / "artifacts" / name / k)
                for k in component["outputDefinitions"]["artifacts"]}
        artifacts[name] = outs
        container = executors[component["executorLabel"]]["container"]
        argv = [x for a in container["args"] for x in _resolve(a, params, {**paths, **outs})]
        cmd = [sys.executable] + container["command"][1:] + argv
        proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, (name, proc.stderr[-3000:])
        for path in outs.values():
            assert os.path.isfile(os.path.join(path, contract.PROPERTIES_FILE))
    metrics = json.load(open(os.path.join(artifacts["evaluate"]["evaluation"], contract.METRICS_FILE)))
    assert metrics["dataset"] == "fashion_mnist" and 0.0 <= metrics["metrics"]["accuracy"] <= 1.0
    assert os.path.isfile(os.path.join(artifacts["analyze"]["report"], contract.REPORT_FILE))
    props = json.load(open(os.path.join(artifacts["search"]["search"], contract.PROPERTIES_FILE)))
    dataset = json.load(open(os.path.join(artifacts["ingest"]["dataset"], contract.PROPERTIES_FILE)))
    assert props["fingerprint"] == dataset["fingerprint"]
