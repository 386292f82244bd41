"""The search loop: replicas agree, alphas move, checkpoints resume, divergence stops."""

import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import FASHION_DIR

from tfdarts import config as C
from tfdarts import data as D
from tfdarts import contract, trainer
from tfdarts.genotype import Genotype
from tfdarts.task import Task

TINY = ["search.cells=3", "search.channels=4", "search.nodes=2", "search.batch_size=16"]


def _job(order, strategy):
    # one node per cell keeps the (slow) two-replica second-order trace short
    cfg = C.load_config(overrides=TINY + [f"search.order={order}", "search.w_lr=0.1", "search.nodes=1",
                                          "search.alpha_lr=0.01"]).search
    return trainer.SearchJob(cfg, Task((12, 12, 1), 3), strategy)


def _duplicated_batch(seed):
    """A global batch made of the same half twice: each replica then sees exactly
    what one replica sees, so per-replica batch-norm statistics agree too."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(8, 12, 12, 1)).astype(np.float32)
    y = rng.integers(0, 3, size=8).astype(np.int32)
    return np.concatenate([x, x]), np.concatenate([y, y])


def _one_step(job, strategy):
    train, val = _duplicated_batch(0), _duplicated_batch(1)
    ds = tf.data.Dataset.from_tensors((train, val))
    batch = next(iter(strategy.experimental_distribute_dataset(ds)))
    before = [v.numpy() for v in job.model.trainable_variables]
    stats = {g: {k: v.numpy() for k, v in s.items()} for g, s in job.step(batch).items()}
    return stats, before, [v.numpy() for v in job.model.trainable_variables]


@pytest.mark.parametrize("order", [1, 2])
def test_two_replicas_match_one(order, two_replicas):
    one = tf.distribute.get_strategy()
    stats1, init1, vars1 = _one_step(_job(order, one), one)
    stats2, init2, vars2 = _one_step(_job(order, two_replicas), two_replicas)
    for group in ("train", "val"):
        np.testing.assert_allclose(stats2[group]["loss_sum"], stats1[group]["loss_sum"], rtol=1e-5)
        assert stats2[group]["count"] == stats1[group]["count"] == 16
    for a, b, c, d in zip(init1, init2, vars1, vars2):
        np.testing.assert_array_equal(a, b)  # same starting point
        np.testing.assert_allclose(d, c, rtol=2e-4, atol=2e-6)
    moved = sum(not np.allclose(a, c) for a, c in zip(init1, vars1))
    assert moved > len(vars1) // 2  # the step really changed the variables


@pytest.fixture(scope="module")
def fashion_small():
    cfg = C.DataConfig(name="fashion_mnist",
                       data_dir=FASHION_DIR,
                       max_train=320, max_test=64)
    return D.prepare(cfg)


def _search_config(epochs=2):
    return C.load_config(overrides=TINY + [f"search.epochs={epochs}", "search.batch_size=32",
                                           "search.alpha_lr=0.003", "runtime.log_every=0"])


def test_search_moves_alphas_and_resumes(fashion_small, tmp_path, monkeypatch, caplog):
    out = str(tmp_path / "search")
    cfg = _search_config()
    real_call = trainer.AlphaRecorder.__call__

    def interrupted(self, epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt("killed during epoch 2")
        real_call(self, epoch, record)

    monkeypatch.setattr(trainer.AlphaRecorder, "__call__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.search(cfg, fashion_small, out)
    first = json.load(open(os.path.join(out, contract.HISTORY_FILE)))["epochs"]
    assert [r["epoch"] for r in first] == [1]
    assert os.listdir(os.path.join(out, contract.CHECKPOINT_DIR))

    monkeypatch.setattr(trainer.AlphaRecorder, "__call__", real_call)
    with caplog.at_level(logging.INFO, logger="tfdarts"):
        result = trainer.search(cfg, fashion_small, out)
    assert "resuming" in caplog.text and "after epoch 1/2" in caplog.text
    history = json.load(open(os.path.join(out, contract.HISTORY_FILE)))
    assert [r["epoch"] for r in history["epochs"]] == [1, 2]
    assert history["epochs"][0] == first[0]
    assert history["fingerprint"] == fashion_small.spec.fingerprint
    for r in history["epochs"]:
        assert np.isfinite(r["train_loss"]) and 0 <= r["val_metric"] <= 1
        Genotype.from_dict(r["genotype"])

    with np.load(os.path.join(out, contract.ALPHAS_FILE)) as f:
        normal, reduce = f["normal"], f["reduce"]
        assert normal.shape == (2, 5, 8) and reduce.shape == (2, 5, 8)
        assert list(f["primitives"]) == list(C.SearchConfig().primitives)
    uniform = 1.0 / 8
    assert np.abs(normal[-1] - uniform).max() > 1e-3  # alphas left their 1e-3 init
    assert not np.allclose(normal[0], normal[1])  # and kept moving in epoch 2
    assert Genotype.load(os.path.join(out, contract.GENOTYPE_FILE)) == result.genotype
    assert result.params > 0 and result.seconds > 0


def test_nan_loss_stops_with_epoch_and_step(fashion_small, tmp_path):
    cfg = C.load_config(overrides=TINY + ["search.epochs=1", "search.batch_size=32",
                                          "search.w_lr=1e30", "search.grad_clip=0",
                                          "runtime.log_every=0"])
    with pytest.raises(trainer.TrainingDiverged, match=r"epoch 1, step \d+"):
        trainer.search(cfg, fashion_small, str(tmp_path / "nan"))


def test_batch_larger_than_half_is_rejected(fashion_small, tmp_path):
    cfg = C.load_config(overrides=TINY + ["search.batch_size=512"])
    with pytest.raises(ValueError, match="batch"):
        trainer.search(cfg, fashion_small, str(tmp_path / "big"))
