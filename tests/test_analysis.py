"""Tests of tfdarts.analysis and tfdarts.report on hand-built alpha snapshots (no TensorFlow)."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from conftest import REPO

from tfdarts import analysis, contract, report
from tfdarts.genotype import PRIMITIVES, edge_index, num_edges, parse_alphas

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
K = len(PRIMITIVES)
NODES = 4
EDGES = num_edges(NODES)
SKIP = PRIMITIVES.index("skip_connect")
NONE = PRIMITIVES.index("none")


# --- builders ----------------------------------------------------------------------------


def uniform(epochs: int = 1) -> np.ndarray:
    """(epochs, edges, K) uniform weights."""
    return np.full((epochs, EDGES, K), 1.0 / K)


def peaked(ops, weight: float) -> np.ndarray:
    """(edges, K): edge e puts `weight` on column ops[e], the rest spread evenly."""
    p = np.full((EDGES, K), (1.0 - weight) / (K - 1))
    p[np.arange(EDGES), ops] = weight
    return p


def one_hot_ops() -> np.ndarray:
    """(edges,) a distinct non-none op on neighbouring edges: columns 1..7 cycling."""
    return 1 + np.arange(EDGES) % (K - 1)


def one_hot(epochs: int = 1) -> np.ndarray:
    return np.repeat(peaked(one_hot_ops(), 1.0)[None], epochs, axis=0)


def skip_dominated(epochs: int = 6) -> np.ndarray:
    """Skip weight on every edge rising from 0.3 to 0.8."""
    return np.stack([peaked(np.full(EDGES, SKIP), w) for w in np.linspace(0.3, 0.8, epochs)])


def write_search(folder, normal, reduce, history_extra=None, genotype=True, float32=True):
    """Writes alphas.npz / history.json / genotype.json as the search code does."""
    os.makedirs(folder, exist_ok=True)
    dtype = np.float32 if float32 else np.float64
    np.savez(os.path.join(folder, contract.ALPHAS_FILE), normal=normal.astype(dtype),
             reduce=reduce.astype(dtype), primitives=np.array(PRIMITIVES), nodes=np.int64(NODES))
    epochs = []
    for i in range(normal.shape[0]):
        epochs.append({"epoch": i + 1, "train_loss": 2.0 / (i + 1), "train_metric": 0.5 + 0.05 * i,
                       "val_loss": 2.1 / (i + 1), "val_metric": 0.45 + 0.05 * i, "lr": 0.025,
                       "seconds": 1.5,
                       "genotype": parse_alphas(normal[i], reduce[i]).to_dict()})
    history = {"task": {"input_shape": [28, 28, 1], "num_outputs": 10, "kind": "classification",
                        "output_names": []},
               "metric": "accuracy", "epochs": epochs, **(history_extra or {})}
    with open(os.path.join(folder, contract.HISTORY_FILE), "w") as f:
        json.dump(history, f)
    if genotype:
        with open(os.path.join(folder, contract.GENOTYPE_FILE), "w") as f:
            json.dump(parse_alphas(normal[-1], reduce[-1]).to_dict(), f)
    return folder


RECORDS = [
    {"model": "darts", "params": 3_300_000, "search_seconds": 86400.0, "train_seconds": 1200.5,
     "metrics": {"accuracy": 0.957, "top5": 0.999}, "seed": 2, "dataset": "fashion_mnist"},
    {"model": "resnet18", "params": 11_000_000, "search_seconds": None, "train_seconds": 900.0,
     "metrics": {"accuracy": 0.949, "top5": 0.998}, "seed": 2, "dataset": "fashion_mnist"},
    {"model": "tiny_resnet", "params": 80_000, "search_seconds": None, "train_seconds": 60.0,
     "metrics": {"r2": 0.92, "rmse": 0.031}, "seed": 3, "dataset": "graphene_kirigami"},
]


# --- statistics --------------------------------------------------------------------------


def test_uniform_alphas_have_max_entropy_zero_margin_and_warn_not_moved():
    probs = uniform(3)
    ent = analysis.edge_entropy(probs)
    assert ent.shape == (3, EDGES)
    assert np.allclose(ent, math.log(K)) and np.isclose(analysis.uniform_entropy(K), math.log(K))
    assert np.allclose(analysis.op_margins(probs, PRIMITIVES), 0.0)
    stats = analysis.cell_stats(probs[-1], PRIMITIVES, NODES)
    assert np.isclose(stats["entropy_ratio"], 1.0)
    assert np.isclose(stats["max_weight_mean"], 1.0 / K)
    warnings = analysis.diagnose(probs, probs, PRIMITIVES, NODES)
    assert len(warnings) == 2
    assert all("not moved from uniform" in w for w in warnings)
    assert warnings[0].startswith("normal cell") and warnings[1].startswith("reduce cell")
    # ties pick pools, but on uniform alphas that is no parameter-free alarm
    assert stats["param_free_share"] == 1.0
    assert not any("parameter-free" in w or "collapse" in w for w in warnings)


def test_near_uniform_initial_alphas_also_warn():
    rng = np.random.default_rng(0)
    logits = 1e-3 * rng.standard_normal((2, EDGES, K))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert any("not moved" in w for w in analysis.diagnose_cell(probs, PRIMITIVES, NODES))


def test_one_hot_alphas_have_zero_entropy_unit_margin_and_no_warnings():
    probs = np.concatenate([uniform(1), one_hot(2)])  # a search that moved away from uniform
    assert np.allclose(analysis.edge_entropy(probs[-1]), 0.0)
    assert np.allclose(analysis.op_margins(probs[-1], PRIMITIVES), 1.0)
    stats = analysis.cell_stats(probs[-1], PRIMITIVES, NODES)
    assert stats["entropy_mean"] == 0.0 and stats["margin_mean"] == 1.0
    assert stats["max_weight_mean"] == 1.0
    # all strengths tie at 1, so each node keeps its first two inputs
    expected = tuple((PRIMITIVES[one_hot_ops()[edge_index(n, s)]], s)
                     for n in range(NODES) for s in (0, 1))
    assert stats["gene"] == expected
    assert stats["skip_count"] == 2 and stats["param_free_share"] == 0.5
    assert analysis.diagnose(probs, probs, PRIMITIVES, NODES) == []


def test_skip_dominated_cell_is_flagged_as_collapse():
    normal, reduce = skip_dominated(6), one_hot(6)
    stats = analysis.cell_stats(normal[-1], PRIMITIVES, NODES)
    assert stats["skip_count"] == 8
    assert stats["param_free_share"] == 1.0
    assert stats["skip_top_edges"] == EDGES
    warnings = analysis.diagnose(normal, reduce, PRIMITIVES, NODES)
    assert len(warnings) == 1, warnings  # no extra parameter-free warning on top of collapse
    assert warnings[0].startswith("normal cell") and "collapse" in warnings[0]
    assert "8 of 8" in warnings[0] and "rose" in warnings[0]
    # the same weights in the reduction cell are flagged there
    assert any(w.startswith("reduce cell") and "collapse" in w
               for w in analysis.diagnose(reduce, normal, PRIMITIVES, NODES))


def _trend_case(skip_weights):
    """Skip is the top op on 9/14 edges but weaker than convs on most nodes: 3 chosen skips."""
    conv = PRIMITIVES.index("sep_conv_3x3")
    skip_edges = {edge_index(0, 0), edge_index(1, 0), edge_index(1, 1), edge_index(2, 0),
                  edge_index(2, 1), edge_index(2, 2), edge_index(3, 0), edge_index(3, 1),
                  edge_index(3, 2)}
    snaps = []
    for w in skip_weights:
        p = np.empty((EDGES, K))
        for e in range(EDGES):
            p[e] = peaked(np.full(EDGES, SKIP if e in skip_edges else conv),
                          w if e in skip_edges else 0.6)[e]
        snaps.append(p)
    return np.stack(snaps)


def test_collapse_trend_rule_needs_rising_skip_weight():
    rising = _trend_case(np.linspace(0.2, 0.35, 6))
    stats = analysis.cell_stats(rising[-1], PRIMITIVES, NODES)
    assert stats["skip_top_edges"] == 9 and stats["skip_count"] == 3  # below the 50 % rule
    healthy = one_hot(6)
    assert any("collapse" in w and "strongest op on 9/14" in w
               for w in analysis.diagnose(rising, healthy, PRIMITIVES, NODES))
    flat = _trend_case(np.full(6, 0.35))
    assert not any("collapse" in w for w in analysis.diagnose(flat, healthy, PRIMITIVES, NODES))


def test_parameter_free_dominance_without_skip_collapse():
    pool = PRIMITIVES.index("max_pool_3x3")
    probs = np.stack([peaked(np.full(EDGES, pool), w) for w in (0.5, 0.7)])
    warnings = analysis.diagnose(probs, probs, PRIMITIVES, NODES)
    assert [w.split(":")[0] for w in warnings] == ["normal cell"]  # reduce cells may be all-pool
    assert "parameter-free" in warnings[0]


def test_none_is_never_chosen_even_when_strongest():
    ops = one_hot_ops()
    p = np.full((EDGES, K), 0.0)
    p[:, NONE] = 0.6
    p[np.arange(EDGES), ops] = 0.3
    p[np.arange(EDGES), 1 + (ops % (K - 1))] = 0.1  # runner-up: next op
    assert np.allclose(p.sum(-1), 1.0)
    assert np.array_equal(analysis.strongest_ops(p, PRIMITIVES), ops)
    assert np.allclose(analysis.op_margins(p, PRIMITIVES), 0.2)  # 0.3 - 0.1, none ignored
    stats = analysis.cell_stats(p, PRIMITIVES, NODES)
    assert all(op != "none" for op, _ in stats["gene"])
    assert np.isclose(stats["none_weight_mean"], 0.6)
    assert np.isclose(stats["max_weight_mean"], 0.6)  # max over all ops, none included


def test_logits_are_rejected():
    with pytest.raises(ValueError, match="softmax"):
        analysis.edge_entropy(np.random.default_rng(0).standard_normal((EDGES, K)))


def test_epoch_stats_rows_and_gene_changes():
    normal = np.concatenate([one_hot(2), skip_dominated(2)])
    reduce = one_hot(4)
    rows = analysis.epoch_stats(normal, reduce, PRIMITIVES, NODES, epochs=[5, 10, 15, 20])
    assert len(rows) == 8
    assert [(r["epoch"], r["cell"]) for r in rows[:4]] == [(5, "normal"), (5, "reduce"),
                                                           (10, "normal"), (10, "reduce")]
    changed = [(r["epoch"], r["cell"]) for r in rows if r["gene_changed"]]
    assert changed == [(15, "normal")]
    assert rows[-2]["skip_count"] == 8 and "skip_connect<-c_{k-2}" in rows[-2]["genotype"]
    df = pd.DataFrame(rows)
    assert {"entropy_ratio", "margin_mean", "param_free_share", "skip_count"} <= set(df.columns)


def test_diverged_alphas_and_genotype_mismatch_are_reported():
    normal = np.concatenate([one_hot(2), np.full((1, EDGES, K), np.nan)])
    assert analysis.finite_epochs(normal, one_hot(3)) == 2
    other = parse_alphas(skip_dominated(1)[0], one_hot(1)[0])
    warnings = analysis.diagnose(normal, one_hot(3), PRIMITIVES, NODES, genotype=other)
    assert any("NaN" in w and "first 2 snapshots" in w for w in warnings)
    assert any(w.startswith("normal cell: genotype.json differs") for w in warnings)
    assert not any(w.startswith("reduce cell: genotype.json") for w in warnings)


def test_select_epochs_caps_panels():
    assert analysis.select_epochs(5) == [0, 1, 2, 3, 4]
    picked = analysis.select_epochs(50, 12)
    assert len(picked) == 12 and picked[0] == 0 and picked[-1] == 49
    assert picked == sorted(set(picked))


def test_edge_labels_follow_edge_index():
    labels = analysis.edge_labels(NODES)
    assert len(labels) == EDGES
    assert labels[edge_index(0, 0)] == "c_{k-2}->0"
    assert labels[edge_index(3, 4)] == "2->3"


# --- figures -----------------------------------------------------------------------------


def _assert_png(path):
    import matplotlib.image

    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50


def test_plot_cell_falls_back_to_matplotlib_without_dot(tmp_path, monkeypatch):
    monkeypatch.setattr(analysis.shutil, "which", lambda name: None)
    gene = parse_alphas(one_hot(1)[0], one_hot(1)[0]).normal
    paths = analysis.plot_cell(gene, (2, 3, 4, 5), str(tmp_path / "cell"), "normal")
    assert paths == [str(tmp_path / "cell.png"), str(tmp_path / "cell.svg")]
    _assert_png(paths[0])
    assert "<svg" in (tmp_path / "cell.svg").read_text()
    assert not (tmp_path / "cell.dot").exists()


def _fake_dot(folder, body):
    folder.mkdir()
    script = folder / "dot"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return str(folder)


def test_plot_cell_uses_graphviz_dot_when_available(tmp_path, monkeypatch):
    # a stand-in for graphviz: `dot -T<fmt> -o <out> <src>` writes "fake-<fmt>"
    bin_dir = _fake_dot(tmp_path / "bin", 'fmt=${1#-T}\nprintf "fake-%s" "$fmt" > "$3"\n')
    monkeypatch.setenv("PATH", bin_dir + os.pathsep + os.environ["PATH"])
    gene = (("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_5x5", 2), ("sep_conv_5x5", 0))
    paths = analysis.plot_cell(gene, (2, 3), str(tmp_path / "out" / "cell"), "reduce")
    assert (tmp_path / "out" / "cell.png").read_bytes() == b"fake-png"
    assert (tmp_path / "out" / "cell.svg").read_bytes() == b"fake-svg"
    source = (tmp_path / "out" / "cell.dot").read_text()
    assert '"c_{k-2}" -> "0" [label="sep_conv_3x3"]' in source
    assert '"0" -> "1" [label="dil_conv_5x5"]' in source
    assert source.count("-> \"c_{k}\"") == 2 and len(paths) == 2


def test_plot_cell_falls_back_when_dot_fails(tmp_path, monkeypatch):
    bin_dir = _fake_dot(tmp_path / "bin", "exit 1\n")
    monkeypatch.setenv("PATH", bin_dir + os.pathsep + os.environ["PATH"])
    gene = parse_alphas(one_hot(1)[0], one_hot(1)[0]).reduce
    paths = analysis.plot_cell(gene, (2, 3, 4, 5), str(tmp_path / "cell"))
    _assert_png(paths[0])
    with pytest.raises(subprocess.CalledProcessError):
        analysis.plot_cell(gene, (2, 3, 4, 5), str(tmp_path / "cell2"), engine="dot")


def test_learning_curves_need_a_history(tmp_path):
    assert analysis.plot_learning_curves(None, {"epochs": []}, str(tmp_path / "lc")) == []
    assert not (tmp_path / "lc.png").exists()


# --- results tables ----------------------------------------------------------------------


def test_results_table_one_row_per_record(tmp_path):
    df = analysis.results_table(RECORDS)
    assert len(df) == len(RECORDS)
    assert list(df.columns) == ["model", "params", "search_seconds", "train_seconds", "accuracy",
                                "top5", "r2", "rmse", "seed", "dataset"]
    assert list(df["model"]) == ["darts", "resnet18", "tiny_resnet"]
    assert df.loc[0, "accuracy"] == 0.957 and np.isnan(df.loc[2, "accuracy"])
    assert df.loc[2, "r2"] == 0.92 and pd.isna(df.loc[1, "search_seconds"])
    assert int(df.loc[1, "params"]) == 11_000_000

    csv_path, md_path = analysis.save_table(df, str(tmp_path / "tables"))
    back = pd.read_csv(csv_path)
    assert list(back.columns) == list(df.columns) and len(back) == len(RECORDS)
    assert back.loc[2, "rmse"] == 0.031
    lines = open(md_path).read().splitlines()
    assert len(lines) == 2 + len(RECORDS)
    assert lines[0].startswith("| model | params |") and lines[1].startswith("|---|")
    assert "| darts | 3300000 | 86400.0 | 1200.5 | 0.957 | 0.999 |  |  | 2 | fashion_mnist |" in lines


def test_results_table_rejects_records_without_model():
    with pytest.raises(ValueError, match="record 1"):
        analysis.results_table([RECORDS[0], {"params": 1}])


# --- report and comparison ---------------------------------------------------------------


def test_build_report_from_saved_folder_without_tensorflow(tmp_path):
    run = tmp_path / "run"
    search = write_search(str(run / "search"), skip_dominated(3), one_hot(3))
    retrain = run / "retrain"
    retrain.mkdir()
    (retrain / contract.HISTORY_FILE).write_text(json.dumps({"metric": "accuracy", "epochs": [
        {"epoch": 1, "train_loss": 1.0, "train_metric": 0.6, "lr": 0.02, "seconds": 3.0},
        {"epoch": 2, "train_loss": 0.5, "train_metric": 0.8, "test_loss": None,
         "test_metric": None, "lr": 0.01, "seconds": 3.0}]}))
    (tmp_path / contract.RECORDS_FILE).write_text(json.dumps(RECORDS))
    out = tmp_path / "report"
    script = textwrap.dedent(f"""
        import json, sys
        import tfdarts.analysis, tfdarts.report
        assert 'tensorflow' not in sys.modules
        assert 'matplotlib' not in sys.modules and 'pandas' not in sys.modules  # lazy imports
        records = json.load(open({str(tmp_path / 'records.json')!r}))
        path = tfdarts.report.build_report({str(out)!r}, {search!r}, {str(retrain)!r}, records,
                                           engine="matplotlib")
        assert 'tensorflow' not in sys.modules, 'tensorflow was imported'
        print(path)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode == 0, proc.stderr
    report = out / contract.REPORT_FILE
    assert proc.stdout.strip() == str(report)
    text = report.read_text()
    for heading in ("Summary", "Genotype", "Final alpha weights", "Alpha evolution", "Statistics",
                    "Learning curves", "Results"):
        assert f"<h2>{heading}</h2>" in text
    assert "skip-connect collapse" in text
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(embedded) == 8  # 2 cells, 2 heatmaps, op trends, 2 evolutions, learning curves
    assert all(base64.b64decode(data)[:8] == PNG_SIGNATURE for data in embedded)
    pngs = sorted((out / "figures").glob("*.png"))
    assert len(pngs) == 8 and len(list((out / "figures").glob("*.svg"))) == 8
    for png in pngs:
        assert png.stat().st_size > 0
        _assert_png(str(png))
    stats = pd.read_csv(out / contract.STATS_CSV)
    assert len(stats) == 2 * 3 and list(stats["epoch"].unique()) == [1, 2, 3]
    summary = json.loads((out / contract.STATS_JSON).read_text())
    assert summary["final"][0]["skip_count"] == 8 and any("collapse" in w for w in summary["warnings"])
    assert len(pd.read_csv(out / contract.RESULTS_CSV)) == len(RECORDS)
    assert (out / contract.RESULTS_MD).read_text().count("\n") == 2 + len(RECORDS)


def test_build_report_with_search_files_only(tmp_path):
    search = write_search(str(tmp_path / "search"), one_hot(1), one_hot(1), genotype=False)
    os.remove(os.path.join(search, contract.HISTORY_FILE))
    path = report.build_report(str(tmp_path / "out"), search, engine="matplotlib")
    text = open(path).read()
    assert "No warnings" in text and "derived from the last snapshot" in text
    assert "No training history found." in text and "No result records given." in text
    assert not (tmp_path / "out" / contract.RESULTS_CSV).exists()


def test_compare_runs(tmp_path):
    collapsed = tmp_path / "seed2"
    write_search(str(collapsed / "search"), skip_dominated(3), one_hot(3),
                 history_extra={"dataset": "fashion_mnist"})
    analysis.save_table(analysis.results_table(RECORDS), str(collapsed))
    healthy = write_search(str(tmp_path / "seed3"), one_hot(2), one_hot(2))
    df = analysis.compare_runs([str(collapsed), healthy])
    assert len(df) == 4
    assert list(df[["run", "cell"]].itertuples(index=False, name=None)) == [
        ("seed2", "normal"), ("seed2", "reduce"), ("seed3", "normal"), ("seed3", "reduce")]
    assert list(df["dataset"]) == ["fashion_mnist"] * 2 + ["seed3"] * 2  # history, else folder
    assert list(df["warnings"]) == [1, 0, 0, 0]
    assert list(df["skip_count"]) == [8, 2, 2, 2]
    assert df.loc[0, "param_free_share"] == 1.0 and np.isclose(df.loc[2, "entropy_ratio"], 0.0)
    assert df.loc[0, "darts_accuracy"] == 0.957 and pd.isna(df.loc[2, "darts_accuracy"])
    with pytest.raises(FileNotFoundError):
        analysis.compare_runs([str(tmp_path / "missing")])
