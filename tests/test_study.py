"""The study command: a tiny grid end to end, interrupted and resumed; the study file checks."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, SHARED_DATA

from pipeline import study

TINY_STUDY = """
preset: tiny
seeds: [1, 2]
datasets:
  fashion: {dataset: fashion_mnist, overrides: ["data.data_dir={data_root}/fashion-mnist"]}
search_methods:
  default: []
baselines: [tiny_resnet]
"""


def _env():
    env = dict(os.environ)
    env.update(PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    return env


def _study(tmp_path: Path):
    spec = tmp_path / "study.yaml"
    spec.write_text(TINY_STUDY)
    argv = [sys.executable, "-m", "pipeline.study", "--study", str(spec), "--data_root", SHARED_DATA,
            "--output_dir", str(tmp_path / "runs"), "--results_dir", str(tmp_path / "results")]
    return subprocess.Popen(argv, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _wait_for_group(pgid: int) -> None:
    """Waits until every process of the group has exited (the run folder's lock is free)."""
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    raise AssertionError("the interrupted pipeline run did not exit")


def test_tiny_study_is_interrupted_resumed_and_aggregated(tmp_path):
    first = tmp_path / "results" / "records" / "fashion" / "1" / "default.json"
    proc = _study(tmp_path)
    deadline = time.time() + 600
    while not first.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # the study stops the pipeline run it started, then itself
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    _wait_for_group(proc.pid)
    finished = first.stat().st_mtime_ns
    proc = _study(tmp_path)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    assert first.stat().st_mtime_ns == finished  # a finished cell is not rerun
    assert "study: fashion seed 1: default" not in err

    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "results" / "records").rglob("*.json"))]
    assert sorted((r["method"], r["seed"]) for r in records) == [
        ("default", 1), ("default", 2), ("tiny_resnet", 1), ("tiny_resnet", 2)]
    for r in records:  # every method retrained with the same settings; only the seed differs
        assert {**r["retrain"], "seed": 0} == {**records[0]["retrain"], "seed": 0}
        assert r["retrain"]["seed"] == r["seed"] and 0 <= r["value"] <= 1
    searched = [r for r in records if r["method"] == "default"]
    assert all(r["genotype"] and r["alphas"]["normal"]["entropy_ratio"] > 0 for r in searched)

    text = (tmp_path / "results" / "study.md").read_text()
    assert "| fashion | default | 2 | accuracy" in text and "| fashion | tiny_resnet | 2 | accuracy" in text
    assert "4 of 4 runs finished" in text and "pipeline.run" in text
    with open(tmp_path / "results" / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    assert (tmp_path / "results" / "figures" / "metric_vs_cost.png").stat().st_size > 0


@pytest.mark.parametrize("text, named", [
    ("seeds: [1]\ndatasets: {a: []}\nsearch_methods: {d: []}\ncolour: red\n", "colour"),
    ("seeds: []\ndatasets: {a: []}\nsearch_methods: {d: []}\n", "seeds"),
    ("seeds: [1]\ndatasets: {a: []}\nsearch_methods: {}\n", "search_methods"),
    ("seeds: [1]\ndatasets: {a: []}\nsearch_methods: {d: [1]}\n", "search_methods.d"),
    ("seeds: [1]\ndatasets: {a: []}\nsearch_methods: {d: []}\nbaselines: [d]\n", "unique"),
    ("seeds: [1\n", "invalid YAML"),
])
def test_bad_study_file_is_one_line_naming_it(tmp_path, text, named):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(study.StudyError, match=named) as info:
        study.load_study(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_data_root_fills_the_overrides(tmp_path):
    spec = study.parse_study({"seeds": [3], "datasets": {"k": {"dataset": "graphene_kirigami",
                              "overrides": ["data.data_dir={data_root}/graphene-kirigami"]}},
                              "search_methods": {"default": []}}, str(tmp_path))
    assert spec.datasets[0].overrides == (f"data.data_dir={tmp_path}/graphene-kirigami",)
    cell = study.Cell(spec.datasets[0], 3, "default", ())
    argv = study.run_command(spec, cell, "/out")
    assert argv[argv.index("--run_name") + 1] == "k" and "search.seed=3" in argv
