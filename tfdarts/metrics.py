"""Metrics from summed statistics: the one implementation for training and test (no TensorFlow).

`tfdarts.steps.batch_stats` sums, per batch, what the metrics need (``count``,
``loss_sum``; ``correct`` and ``top5`` for classification; per-output ``sse``,
``sum_y``, ``sum_y2`` for regression). Sums add across batches and replicas;
`summarize` turns them into metrics. Units: ``loss`` is the model's loss
(cross-entropy, or mean squared error of *standardised* targets); ``rmse`` and
``rmse_<i>`` are always in *target units* when the target scale is given.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from tfdarts.task import Task

Totals = Mapping[str, np.ndarray]


def summarize(task: Task, totals: Totals, target_std: Optional[Sequence[float]] = None) -> Dict[str, float]:
    """Turns summed batch statistics into ``loss`` and the task's metrics.

    Args:
        task: The task.
        totals: Summed statistics (see module docstring); regression arrays ``(K,)``.
        target_std: Regression: standard deviation of each target, so that
            ``rmse`` is in target units (None: standardised units).

    Returns:
        ``loss`` and ``accuracy`` (+ ``top5`` when summed), or ``r2`` (mean over
        outputs), ``rmse`` (mean over outputs) and, for several outputs, ``rmse_<i>``.
    """
    count = max(float(totals["count"]), 1.0)
    out = {"loss": float(totals["loss_sum"]) / count}
    if task.is_classification:
        out["accuracy"] = float(totals["correct"]) / count
        if "top5" in totals:
            out["top5"] = float(totals["top5"]) / count
        return out
    out.update(_regression(totals, count, target_std))
    return out


def _regression(totals: Totals, count: float, target_std: Optional[Sequence[float]]) -> Dict[str, float]:
    sse, sum_y, sum_y2 = (np.asarray(totals[k], np.float64) for k in ("sse", "sum_y", "sum_y2"))
    ss_tot = np.maximum(sum_y2 - sum_y ** 2 / count, 1e-12)
    scale = np.ones_like(sse) if target_std is None else np.asarray(target_std, np.float64)
    rmse = np.sqrt(sse / count) * scale
    out = {"r2": float(np.mean(1.0 - sse / ss_tot)), "rmse": float(np.mean(rmse))}
    if len(rmse) > 1:
        out.update({f"rmse_{i}": float(v) for i, v in enumerate(rmse)})
    return out


def add_totals(acc: Dict[str, np.ndarray], stats: Totals) -> None:
    """Adds one batch's statistics into `acc` in place."""
    for key, value in stats.items():
        acc[key] = acc.get(key, 0.0) + value


def confusion_matrix(logits: np.ndarray, y: np.ndarray, classes: int) -> np.ndarray:
    """``(K, K)`` counts, rows = true class, columns = predicted class.

    Args:
        logits: ``(N, K)`` scores.
        y: ``(N,)`` integer labels.
        classes: K.
    """
    cm = np.zeros((classes, classes), np.int64)
    np.add.at(cm, (y, logits.argmax(1)), 1)
    return cm
