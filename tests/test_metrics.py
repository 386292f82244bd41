"""One metric implementation from summed statistics: training and test agree, units are explicit."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfdarts import metrics, steps
from tfdarts.task import Task


def _sums(task, outputs, y, chunks=3):
    """Batch statistics summed over `chunks` batches, as the epoch loop does."""
    acc = {}
    for out_b, y_b in zip(np.array_split(outputs, chunks), np.array_split(y, chunks)):
        out_b = tf.constant(out_b, tf.float32)
        stats = steps.batch_stats(task, out_b, y_b, steps.per_example_loss(task, out_b, y_b))
        metrics.add_totals(acc, {k: v.numpy() for k, v in stats.items()})
    return acc


def test_classification_from_sums_matches_direct_computation():
    rng = np.random.default_rng(0)
    task = Task((4, 4, 1), 10)
    logits, y = rng.normal(size=(90, 10)), rng.integers(0, 10, 90)
    out = metrics.summarize(task, _sums(task, logits, y))
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    assert out["loss"] == pytest.approx(-logp[np.arange(90), y].mean(), rel=1e-5)
    assert out["accuracy"] == pytest.approx((logits.argmax(1) == y).mean())
    top5 = (np.argsort(-logits, 1)[:, :5] == y[:, None]).any(1).mean()
    assert out["top5"] == pytest.approx(top5)


def test_regression_rmse_is_in_target_units():
    rng = np.random.default_rng(1)
    task = Task((4, 4, 1), 2, "regression")
    pred, y = rng.normal(size=(60, 2)), rng.normal(size=(60, 2))
    std = np.array([2.0, 0.5])
    out = metrics.summarize(task, _sums(task, pred, y), target_std=std)
    rmse = np.sqrt(((pred - y) ** 2).mean(0)) * std
    sst = ((y - y.mean(0)) ** 2).sum(0)
    assert out["rmse"] == pytest.approx(rmse.mean(), rel=1e-5)
    assert [out["rmse_0"], out["rmse_1"]] == pytest.approx(list(rmse), rel=1e-5)
    assert out["r2"] == pytest.approx(np.mean(1 - ((pred - y) ** 2).sum(0) / sst), rel=1e-5)
    assert out["loss"] == pytest.approx(((pred - y) ** 2).mean(), rel=1e-5)
    standardised = metrics.summarize(task, _sums(task, pred, y))
    assert standardised["rmse"] == pytest.approx(np.sqrt(((pred - y) ** 2).mean(0)).mean(), rel=1e-5)


def test_confusion_matrix_counts():
    logits = np.eye(3)[[0, 1, 2, 2]]
    cm = metrics.confusion_matrix(logits, np.array([0, 1, 1, 2]), 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
