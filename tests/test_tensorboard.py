"""TensorBoard event files and default progress lines: `examples/quickstart.py` run as a
plain script (no logging set-up), its event files read back with TensorBoard's own
readers, and reruns of the finished search that must neither duplicate nor lose epochs."""

import collections
import io
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import FASHION_DIR, REPO

from tfdarts import contract, progress, summaries

QUICKSTART = os.path.join(REPO, "examples", "quickstart.py")
EPOCHS = 2
OVERRIDES = [f"search.epochs={EPOCHS}", f"retrain.epochs={EPOCHS}"]
SEARCH_SCALARS = ("train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr/weights",
                  "lr/alphas", "time/seconds", "time/cpu_seconds", "alphas/mean_entropy_normal",
                  "alphas/mean_entropy_reduce")
RETRAIN_SCALARS = ("train/loss", "train/accuracy", "test/loss", "test/accuracy", "lr/weights",
                   "time/seconds")


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """Runs the quickstart once; returns its output folder and stdout."""
    out = str(tmp_path_factory.mktemp("quickstart"))
    env = dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, QUICKSTART, FASHION_DIR, out, *OVERRIDES], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout, proc.stderr


def _accumulator(logdir):
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(logdir, size_guidance={ea.TENSORS: 0})
    acc.Reload()
    return acc


def _steps_by_plugin(logdir):
    """``{plugin: {tag: [steps]}}`` as TensorBoard loads them."""
    acc = _accumulator(logdir)
    out = collections.defaultdict(dict)
    for tag in acc.Tags()["tensors"]:
        plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
        out[plugin][tag] = [e.step for e in acc.Tensors(tag)]
    return out


def _raw_pairs(logdir):
    """How often each ``(tag, step)`` occurs across every event file (no de-duplication)."""
    from tensorboard.backend.event_processing import event_file_loader

    counts = collections.Counter()
    for path in summaries.event_files(logdir):
        for event in event_file_loader.EventFileLoader(path).Load():
            counts.update((v.tag, event.step) for v in event.summary.value)
    return counts


def test_progress_lines_reach_stdout_without_logging_setup(quickstart):
    _, stdout, stderr = quickstart
    for job in ("search", "retrain"):
        for epoch in range(1, EPOCHS + 1):
            assert f"{job} epoch {epoch}/{EPOCHS} done" in stdout
    assert "darts test loss" in stdout
    assert "INFO:tfdarts" not in stderr  # absl's own root handler does not print them again


def test_search_events_every_epoch(quickstart):
    logdir = os.path.join(quickstart[0], "search", contract.TENSORBOARD_DIR)
    found = _steps_by_plugin(logdir)
    every = list(range(1, EPOCHS + 1))
    for tag in SEARCH_SCALARS:
        assert found["scalars"].get(tag) == every, tag
    edges = [t for t in found["histograms"] if t.startswith("alphas_normal/")]
    assert len(edges) == 5 and len([t for t in found["histograms"] if t.startswith("alphas_reduce/")]) == 5
    assert all(found["histograms"][t] == every for t in found["histograms"])
    assert found["images"]["alphas/normal"] == every and found["images"]["alphas/reduce"] == every
    assert found["images"]["cell/normal"] == [EPOCHS] and found["images"]["cell/reduce"] == [EPOCHS]
    assert found["text"]["genotype"] == [EPOCHS]
    assert max(_raw_pairs(logdir).values()) == 1


def test_search_event_values_match_history(quickstart):
    import tensorflow as tf

    from tfdarts import fileio

    search = os.path.join(quickstart[0], "search")
    history = fileio.read_json(os.path.join(search, contract.HISTORY_FILE))["epochs"]
    acc = _accumulator(os.path.join(search, contract.TENSORBOARD_DIR))
    logged = [float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors("val/loss")]
    assert np.allclose(logged, [r["val_loss"] for r in history])
    entropy = [float(tf.make_ndarray(e.tensor_proto))
               for e in acc.Tensors("alphas/mean_entropy_normal")]
    assert all(0 < h <= np.log(8) + 1e-6 for h in entropy)
    image = acc.Tensors("cell/normal")[0]
    width, height = (int(v) for v in tf.make_ndarray(image.tensor_proto)[:2])
    assert width > 100 and height > 100


def test_retrain_events_every_epoch(quickstart):
    logdir = os.path.join(quickstart[0], "retrain", contract.TENSORBOARD_DIR)
    found = _steps_by_plugin(logdir)
    for tag in RETRAIN_SCALARS:
        assert found["scalars"].get(tag) == list(range(1, EPOCHS + 1)), tag
    assert max(_raw_pairs(logdir).values()) == 1


def _search_again(folder):
    from tfdarts import config, data, trainer

    presets = os.path.join(REPO, "tfdarts", "configs")
    cfg = config.load_config([f"{presets}/presets/tiny.yaml", f"{presets}/datasets/fashion_mnist.yaml"],
                             [f"data.data_dir={FASHION_DIR}", *OVERRIDES])
    return trainer.search(cfg, data.prepare(cfg.data), folder)


def test_rerun_neither_duplicates_nor_loses_epochs(quickstart, tmp_path):
    """A rerun of the finished search whose event files a kill cut short (some of the
    summaries written, the rest missing) writes each missing pair once and no other."""
    folder = str(tmp_path / "search")
    shutil.copytree(os.path.join(quickstart[0], "search"), folder)
    logdir = os.path.join(folder, contract.TENSORBOARD_DIR)
    before = _raw_pairs(logdir)
    shutil.rmtree(logdir)
    with summaries.EventLog(logdir) as log:
        log.open(EPOCHS)
        log.scalars(1, {"train/loss": 2.0})
        log.histogram("alphas_normal/00_c_{k-2}->0", np.full(8, 1 / 8), 1)
        log.text("genotype", "cut short", EPOCHS)
    assert _search_again(folder).resumed_from == EPOCHS
    assert _raw_pairs(logdir) == before


def test_event_log_skips_written_pairs_and_drops_a_lost_run(tmp_path):
    logdir = str(tmp_path / "tb")
    with summaries.EventLog(logdir) as log:
        log.open(0)
        for step in (1, 2, 3):
            log.scalars(step, {"train/loss": 1.0 / step})
    with summaries.EventLog(logdir) as log:
        log.open(3)  # a resume after epoch 3: epochs 1-3 stay, rewrites are skipped
        for step in (1, 2, 3, 4):
            log.scalars(step, {"train/loss": 1.0 / step})
    assert set(_raw_pairs(logdir).values()) == {1} and len(_raw_pairs(logdir)) == 4
    with summaries.EventLog(logdir) as log:
        log.open(1)  # checkpoints lost after epoch 1: the later steps must go
        log.scalars(1, {"train/loss": 1.0})
        log.scalars(2, {"train/loss": 0.5})
    assert _raw_pairs(logdir) == {("train/loss", 1): 1, ("train/loss", 2): 1}
    with summaries.EventLog(logdir, enabled=False) as log:  # a non-chief worker
        log.open(0)
        log.scalars(9, {"train/loss": 1.0})
    assert ("train/loss", 9) not in _raw_pairs(logdir)


def test_scalar_tags():
    record = {"epoch": 3, "train_loss": 1.0, "train_accuracy": 0.5, "train_metric": 0.5,
              "test_metric": 0.4, "lr": 0.1, "seconds": 2.0, "drop_path": 0.1, "early_stop": True,
              "genotype": {"normal": []}, "val_loss": float("nan")}
    assert summaries.epoch_scalars(record, "accuracy") == {
        "train/loss": 1.0, "train/accuracy": 0.5, "test/accuracy": 0.4, "lr/weights": 0.1,
        "time/seconds": 2.0, "schedule/drop_path": 0.1}


def test_show_progress_only_when_logging_is_unconfigured(monkeypatch):
    root, lib = logging.getLogger(), logging.getLogger(progress.LOGGER)
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(lib, "handlers", [])
    monkeypatch.setattr(lib, "level", logging.NOTSET)
    monkeypatch.setattr(lib, "propagate", True)
    stream = io.StringIO()
    try:
        assert progress.show_progress(stream) is not None
        assert progress.show_progress(stream) is None  # attached once
        logging.getLogger("tfdarts.test").info("epoch %d done", 1)
        assert stream.getvalue().endswith("epoch 1 done\n")
    finally:
        progress.hide_progress()
    assert lib.handlers == [] and lib.propagate and lib.level == logging.NOTSET
    monkeypatch.setattr(root, "handlers", [logging.NullHandler()])  # e.g. the command line's
    assert progress.show_progress(stream) is None and lib.handlers == []
    lib.setLevel(logging.WARNING)  # the documented off switch
    monkeypatch.setattr(root, "handlers", [])
    assert progress.show_progress(stream) is None
