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
depth: {dataset: fashion, cells: [3]}
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
        ("default", 1), ("default", 2), ("depth_3", 1), ("depth_3", 2), ("tiny_resnet", 1), ("tiny_resnet", 2)]
    for r in records:  # every method retrained with the same settings; only the seed (and a depth) differs
        depth = {"cells": 0} if r["method"] == "depth_3" else {}
        assert {**r["retrain"], "seed": 0, **depth} == {**records[0]["retrain"], "seed": 0, **depth}
        assert r["retrain"]["seed"] == r["seed"] and 0 <= r["value"] <= 1
    searched = [r for r in records if r["method"] == "default"]
    assert all(r["genotype"] and r["alphas"]["normal"]["entropy_ratio"] > 0 for r in searched)
    depth = {r["seed"]: r for r in records if r["method"] == "depth_3"}
    for r in searched:  # the searched cell, retrained at another depth
        assert depth[r["seed"]]["genotype"] == r["genotype"] and depth[r["seed"]]["retrain"]["cells"] == 3

    text = (tmp_path / "results" / "study.md").read_text()
    assert "| fashion | default | 2 | accuracy" in text and "| fashion | tiny_resnet | 2 | accuracy" in text
    assert "4 of 4 runs finished" in text and "pipeline.run" in text
    assert "| fashion | 3 cells | 2 | accuracy" in text
    with open(tmp_path / "results" / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 6
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


GRID = {"seeds": [1, 2], "search_methods": {"default": []}, "baselines": ["random"],
        "datasets": {"a": {"dataset": "fashion_mnist"}, "b": {"dataset": "graphene_kirigami"}}}


@pytest.mark.parametrize("extra, named", [
    ({"transfer": {"between": ["a", "a"]}}, "transfer.between"),
    ({"transfer": {"between": ["a", "c"]}}, "transfer.between"),
    ({"transfer": {"between": ["a", "b"], "method": "nope"}}, "transfer.method"),
    ({"transfer": {"between": ["a", "b"], "random_cells": -1}}, "transfer.random_cells"),
    ({"transfer": ["a", "b"]}, "transfer must be a mapping"),
    ({"depth": {"dataset": "a", "cells": []}}, "depth.cells"),
    ({"depth": {"dataset": "a", "cells": [0]}}, "depth.cells"),
    ({"depth": {"dataset": "z", "cells": [5]}}, "depth.dataset"),
    ({"depth": {"dataset": "a", "cells": [5], "layers": 3}}, "layers"),
])
def test_bad_transfer_or_depth_section_is_named(extra, named):
    with pytest.raises(study.StudyError, match=named):
        study.parse_study({**GRID, **extra})


def _write_record(results, dataset, seed, method, genotype=None, value=0.5, cells=8, kind="search"):
    record = {"dataset": dataset, "seed": seed, "method": method, "kind": kind, "value": value,
              "metric": "accuracy", "params": 10, "genotype": genotype, "retrain": {"cells": cells}}
    path = study.record_path(str(results), dataset, seed, method)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Path(path).write_text(json.dumps(record))
    return record


def test_transfer_and_depth_plan_from_the_grid_records(tmp_path):
    from pipeline import study_cells
    from tfdarts.genotype import DARTS_V1, DARTS_V2

    spec = study.parse_study({**GRID, "transfer": {"between": ["a", "b"]},
                              "depth": {"dataset": "b", "cells": [5, 11]}})
    assert study_cells.planned(spec, str(tmp_path)) == []  # nothing searched yet
    _write_record(tmp_path, "a", 1, "default", DARTS_V1.to_dict())
    _write_record(tmp_path, "b", 2, "default", DARTS_V2.to_dict())
    cells = study_cells.planned(spec, str(tmp_path))
    assert [(c.dataset.key, c.seed, c.method) for c in cells] == [
        ("b", 1, "from_a"), ("a", 2, "from_b"), ("b", 2, "depth_5"), ("b", 2, "depth_11")]
    assert cells[0].genotype == DARTS_V1.to_dict() and cells[1].genotype == DARTS_V2.to_dict()
    assert cells[2].overrides == ("retrain.cells=5",)
    argv = study_cells.run_command(spec, cells[2], "/out", "g.json")
    assert argv[argv.index("--run_name") + 1] == "b-given" and argv[-2:] == ["--genotype", "g.json"]
    assert "retrain.cells=5" in argv and "search.seed=2" in argv and "--baselines" not in argv


def test_random_cells_are_one_sample_on_both_datasets():
    from pipeline import study_cells
    from tfdarts.config import Config

    spec = study.parse_study({**GRID, "transfer": {"between": ["a", "b"], "random_cells": 3}})
    cells = study_cells.random_cells(spec, Config())
    on = {key: [c.genotype for c in cells if c.dataset.key == key] for key in ("a", "b")}
    assert len(on["a"]) == 3 and on["a"] == on["b"]
    assert len({json.dumps(g, sort_keys=True) for g in on["a"]}) == 3
    assert all(c.seed == 1 and c.kind == "random_cell" for c in cells)


def test_transfer_tables_and_rank_correlation(tmp_path):
    from pipeline import study_cells

    spec = study.parse_study({**GRID, "transfer": {"between": ["a", "b"], "random_cells": 3},
                              "depth": {"dataset": "a", "cells": [5]}})
    grid = [_write_record(tmp_path, "a", s, "default", value=0.8 + s / 100) for s in (1, 2)]
    for i, (va, vb) in enumerate([(0.1, 0.3), (0.2, 0.2), (0.3, 0.1)]):
        for key, v in (("a", va), ("b", vb)):
            _write_record(tmp_path, key, 1, f"random_cell_{i}", value=v, kind="random_cell")
    _write_record(tmp_path, "a", 1, "depth_5", value=0.7, cells=5, kind="depth")
    text = "\n".join(study_cells.sections(spec, grid, str(tmp_path)))
    assert "| a | searched here (default) | 2 | accuracy 0.8150 ± 0.0071 |" in text
    assert "| b | searched on a | 0 | - |" in text
    assert "Spearman rank correlation over 3 cells: -1.00" in text
    assert "| a | 5 cells | 1 | accuracy 0.7000 |" in text and "| a | 8 cells | 2 |" in text
    assert study_cells.spearman([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)


def test_op_table_counts_chosen_ops_and_parameter_free_share(tmp_path):
    from tfdarts.genotype import DARTS_V1, DARTS_V2

    records = [_write_record(tmp_path, "a", s, "default", g.to_dict()) for s, g in ((1, DARTS_V1), (2, DARTS_V2))]
    text = study.op_table(records)
    normal = next(line for line in text.splitlines() if "| normal |" in line)
    # DARTS_V1 normal: 5 sep_conv_3x3, 3 skips (3/8 free); DARTS_V2: 5 sep_conv_3x3, 2 skips, 1 dil_conv_3x3
    assert normal == "| a | default | normal | 2 | 0.31 ± 0.09 | sep_conv_3x3 10, skip_connect 5, dil_conv_3x3 1 |"
