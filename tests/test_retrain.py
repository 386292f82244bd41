"""Retraining, evaluation, export and baselines on real Fashion-MNIST slices."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import FASHION_DIR

from tfdarts import config as C
from tfdarts import data as D
from tfdarts import baselines, contract, evaluation, export, network, trainer
from tfdarts.genotype import DARTS_V2, Genotype
from tfdarts.network import Network
from tfdarts.task import Task

TINY = ["retrain.cells=3", "retrain.channels=8", "retrain.batch_size=32", "runtime.log_every=0",
        "retrain.eval_every=1"]


@pytest.fixture(scope="module")
def fashion_small():
    cfg = C.DataConfig(data_dir=FASHION_DIR, max_train=384, max_test=128)
    return D.prepare(cfg)


@pytest.fixture(scope="module")
def retrained(fashion_small, tmp_path_factory):
    cfg = C.load_config(overrides=TINY + ["retrain.epochs=3"])
    out = str(tmp_path_factory.mktemp("retrain"))
    result = trainer.retrain(cfg, fashion_small, network.model_fn(fashion_small.spec.task, DARTS_V2, cfg.retrain), os.path.join(out, "train"))
    record = evaluation.evaluate_and_export(cfg, fashion_small, os.path.join(out, "train"),
                                            os.path.join(out, "eval"))
    return cfg, out, result, record


def test_retrain_lowers_loss_and_records_history(retrained):
    _, out, result, _ = retrained
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < losses[0]
    assert [r["drop_path"] for r in result.history] == pytest.approx([0.0, 0.2 / 3, 0.4 / 3])
    assert all("test_metric" in r for r in result.history)
    saved = json.load(open(os.path.join(out, "train", contract.HISTORY_FILE)))
    assert saved["genotype"] == DARTS_V2.to_dict() and len(saved["epochs"]) == 3


def test_record_and_files(retrained, fashion_small):
    _, out, result, record = retrained
    assert record["model"] == "darts" and record["dataset"] == "fashion_mnist"
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0 and "top5" in record["metrics"]
    assert record["params"] > 0 and record["train_seconds"] > 0
    assert record["fingerprint"] == fashion_small.spec.fingerprint
    cm = json.load(open(os.path.join(out, "eval", contract.CONFUSION_FILE)))["matrix"]
    assert np.sum(cm) == len(fashion_small.y_test)
    assert np.trace(cm) == round(record["metrics"]["accuracy"] * len(fashion_small.y_test))
    for name in (contract.METRICS_FILE, contract.MODEL_FILE, contract.GENOTYPE_FILE, "saved_model/saved_model.pb",
                 "saved_model/genotype.json", "saved_model/spec.json"):
        assert os.path.exists(os.path.join(out, "eval", name)), name


def test_evaluate_without_export_writes_the_same_record(retrained, fashion_small, tmp_path):
    cfg, out, _, record = retrained
    again = evaluation.evaluate_and_export(cfg, fashion_small, os.path.join(out, "train"), str(tmp_path),
                                           export_model=False)
    assert again["metrics"] == record["metrics"] and again["params"] == record["params"]
    assert sorted(os.listdir(tmp_path)) == sorted([contract.METRICS_FILE, contract.CONFUSION_FILE,
                                                   contract.GENOTYPE_FILE])


RELOAD = """
import json, sys, numpy as np
from tfdarts import data as D, export
data = D.load_prepared(sys.argv[1])
p = export.Predictor(sys.argv[2])
probs = p(data.x_test)["probabilities"]
np.save(sys.argv[3], probs)
"""


def test_saved_model_round_trip_in_fresh_process(retrained, fashion_small, tmp_path):
    _, out, result, record = retrained
    D.save_prepared(fashion_small, str(tmp_path / "data"))
    subprocess.run([sys.executable, "-c", RELOAD, str(tmp_path / "data"),
                    os.path.join(out, "eval", contract.SAVED_MODEL_DIR), str(tmp_path / "p.npy")],
                   check=True)
    probs = np.load(tmp_path / "p.npy")
    x = D.normalize_inputs(tf.constant(fashion_small.x_test), fashion_small.spec)
    expected = tf.nn.softmax(result.model(x, training=False)).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-5)
    accuracy = float((probs.argmax(1) == fashion_small.y_test).mean())
    assert accuracy == pytest.approx(record["metrics"]["accuracy"], abs=1e-9)


def test_predictor_rejects_wrong_shape(retrained):
    _, out, _, _ = retrained
    predictor = export.Predictor(os.path.join(out, "eval", contract.SAVED_MODEL_DIR))
    with pytest.raises(ValueError, match=r"expected inputs of shape \(N, 28, 28, 1\)"):
        predictor(np.zeros((2, 32, 32, 3)))


def test_retrain_resumes_after_interruption(fashion_small, tmp_path, monkeypatch):
    cfg = C.load_config(overrides=TINY + ["retrain.epochs=2", "retrain.eval_every=0"])
    out = str(tmp_path / "train")
    real = trainer._TestCurve.__call__

    def interrupted(self, epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt
        real(self, epoch, record)

    monkeypatch.setattr(trainer._TestCurve, "__call__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.retrain(cfg, fashion_small, network.model_fn(fashion_small.spec.task, DARTS_V2, cfg.retrain), out)
    monkeypatch.setattr(trainer._TestCurve, "__call__", real)
    result = trainer.retrain(cfg, fashion_small, network.model_fn(fashion_small.spec.task, DARTS_V2, cfg.retrain), out)
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert os.path.exists(os.path.join(out, contract.MODEL_FILE))


def _one_step(strategy):
    cfg = C.load_config(overrides=TINY).retrain
    job = trainer.TrainJob(cfg, lambda: Network(Task((12, 12, 1), 3), DARTS_V2, cells=3, channels=4,
                                                auxiliary_weight=0.4, drop_path=0.0), strategy)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 12, 12, 1)).astype(np.float32)
    y = rng.integers(0, 3, size=4).astype(np.int32)
    ds = tf.data.Dataset.from_tensors((np.concatenate([x, x]), np.concatenate([y, y])))
    batch = next(iter(strategy.experimental_distribute_dataset(ds)))
    stats = job.step(batch)["train"]
    return float(stats["loss_sum"]), [v.numpy() for v in job.model.trainable_variables]


def test_one_and_two_replica_retrain_steps_agree(two_replicas):
    loss1, vars1 = _one_step(tf.distribute.get_strategy())
    loss2, vars2 = _one_step(two_replicas)
    assert loss2 == pytest.approx(loss1, rel=1e-5)
    for a, b in zip(vars1, vars2):
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-6)


def test_baselines_share_the_record_format(fashion_small, tmp_path):
    cfg = C.load_config(overrides=TINY + ["retrain.epochs=1", "retrain.eval_every=0",
                                          "baselines.random_samples=2", "baselines.random_epochs=1",
                                          "baselines.include=random,tiny_resnet,darts_v2"])
    records = baselines.run_baselines(cfg, fashion_small, str(tmp_path))
    assert [r["model"] for r in records] == ["random_best", "tiny_resnet", "darts_v2"]
    for r in records:
        assert set(r) >= {"model", "params", "train_seconds", "metrics", "seed", "dataset"}
        assert 0.0 <= r["metrics"]["accuracy"] <= 1.0
    assert os.path.exists(tmp_path / "random" / "search" / contract.BEST_GENOTYPE_FILE)
    assert records[0]["search_seconds"] > 0 and records[1]["search_seconds"] is None


def test_random_search_stops_at_its_budget(fashion_small, tmp_path):
    """A processor-seconds budget smaller than one candidate's training: one candidate,
    both clocks recorded."""
    cfg = C.load_config(overrides=TINY + ["retrain.eval_every=0", "baselines.random_samples=3",
                                          "baselines.random_epochs=1",
                                          "baselines.random_budget_seconds=0.001",
                                          "baselines.random_budget_clock=cpu"])
    genotype, cost = baselines.random_search(cfg, fashion_small, str(tmp_path))
    selection = json.loads((tmp_path / contract.RANDOM_SELECTION_FILE).read_text())
    assert len(selection["candidates"]) == 1 and selection["clock"] == "cpu"
    assert cost["seconds"] == selection["seconds"] > 0
    assert cost["cpu_seconds"] == selection["cpu_seconds"] > 0
    assert Genotype.from_dict(selection["candidates"][0]["genotype"]) == genotype
    assert Genotype.load(str(tmp_path / contract.BEST_GENOTYPE_FILE)) == genotype
