"""Evaluation on the held-out test split, and the result record of a model.

A result record (one per model) is plain JSON, written as `contract.METRICS_FILE`::

    {"model": "darts", "params": int, "search_seconds": float | None,
     "search_cpu_seconds": float | None, "train_seconds": float,
     "train_cpu_seconds": float, "metrics": {...}, "seed": int, "dataset": str,
     "fingerprint": str}

``*_cpu_seconds`` are processor seconds of the training process (all threads): a
cost that barely changes when other work shares the machine, unlike wall seconds.

Metrics come from `tfdarts.metrics.summarize` over the same summed statistics
the training step produces (`tfdarts.steps.batch_stats`).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from tfdarts import contract, export, fileio, metrics, steps
from tfdarts import data as data_lib
from tfdarts.config import Config
from tfdarts.model import TaskModel, count_params

log = logging.getLogger("tfdarts")

EVAL_BATCH = 256


def predict(model: keras.Model, dataset: tf.data.Dataset) -> Tuple[np.ndarray, np.ndarray]:
    """Runs inference over a dataset of ``(x, y)``.

    Returns:
        ``(outputs (N, K) float32, targets (N,) or (N, K))`` as numpy.
    """
    fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    outs, ys = [], []
    for x, y in dataset:
        outs.append(fn(x).numpy())
        ys.append(y.numpy())
    return np.concatenate(outs), np.concatenate(ys)


def metrics_of(spec: data_lib.DataSpec, outputs: np.ndarray, y: np.ndarray) -> Dict[str, float]:
    """Test metrics of model outputs ``(N, K)`` against model-space targets.

    Returns:
        Loss and accuracy/top-5, or R^2 and RMSE in target units.
    """
    task = spec.task
    outputs = tf.constant(outputs, tf.float32)
    stats = steps.batch_stats(task, outputs, y, steps.per_example_loss(task, outputs, y))
    return metrics.summarize(task, {k: v.numpy() for k, v in stats.items()}, spec.target_std)


def evaluate(model: keras.Model, data: data_lib.PreparedData,
             batch_size: int = EVAL_BATCH) -> Dict[str, float]:
    """Test-split metrics of `model` (see `metrics_of`)."""
    out, y = predict(model, data_lib.eval_dataset(data, batch_size))
    return metrics_of(data.spec, out, y)


def result_record(name: str, model: TaskModel, test_metrics: Dict[str, float],
                  data: data_lib.PreparedData, config: Config, cost: Dict[str, Optional[float]]
                  ) -> Dict[str, Any]:
    """The result record of one model (see module docstring); `cost` holds
    ``search_seconds, search_cpu_seconds, train_seconds, train_cpu_seconds``."""
    return {"model": name, "params": count_params(model), **cost, "metrics": test_metrics,
            "seed": config.retrain.seed, "dataset": data.spec.name,
            "fingerprint": data.spec.fingerprint}


def _write_confusion(out_dir: str, spec: data_lib.DataSpec, out: np.ndarray, y: np.ndarray) -> None:
    cm = metrics.confusion_matrix(out, y.astype(np.int64), spec.task.num_outputs)
    fileio.write_json(os.path.join(out_dir, contract.CONFUSION_FILE),
                      {"classes": list(spec.task.output_names), "matrix": cm.tolist()})


def _write_predictions(out_dir: str, spec: data_lib.DataSpec, out: np.ndarray, y: np.ndarray) -> None:
    """True and predicted test targets in target units (model space is standardised)."""
    mean, std = np.asarray(spec.target_mean, np.float64), np.asarray(spec.target_std, np.float64)
    true = np.asarray(y, np.float64).reshape(len(y), -1) * std + mean
    pred = np.asarray(out, np.float64).reshape(len(out), -1) * std + mean
    fileio.write_json(os.path.join(out_dir, contract.PREDICTIONS_FILE),
                      {"targets": list(spec.task.output_names), "true": true.tolist(), "pred": pred.tolist()})


def evaluate_and_export(config: Config, data: data_lib.PreparedData, retrain_dir: str,
                        out_dir: str, search_seconds: Optional[float] = None,
                        name: str = "darts",
                        search_cpu_seconds: Optional[float] = None,
                        export_model: bool = True) -> Dict[str, Any]:
    """Evaluates a retrained model on the test split and, unless told not to, exports it.

    Writes `contract.METRICS_FILE` (the result record), `contract.CONFUSION_FILE`
    (classification) or `contract.PREDICTIONS_FILE` (regression) and `contract.GENOTYPE_FILE`
    (cell networks) to `out_dir`; with ``export_model`` also `contract.SAVED_MODEL_DIR` (with
    spec and genotype) and `contract.MODEL_FILE`. A caller whose retrain folder already
    holds the export (a pipeline's Model artifact) passes ``export_model=False``.

    Returns:
        The result record.
    """
    model = export.load_model(os.path.join(retrain_dir, contract.MODEL_FILE))
    history = fileio.read_json(os.path.join(retrain_dir, contract.HISTORY_FILE))
    out, y = predict(model, data_lib.eval_dataset(data, EVAL_BATCH))
    test_metrics = metrics_of(data.spec, out, y)
    if data.spec.task.is_classification:
        _write_confusion(out_dir, data.spec, out, y)
    else:
        _write_predictions(out_dir, data.spec, out, y)
    genotype = model.architecture()
    if export_model:
        export.export_saved_model(model, data.spec, os.path.join(out_dir, contract.SAVED_MODEL_DIR), genotype)
        export.save_model(model, os.path.join(out_dir, contract.MODEL_FILE))
    if genotype is not None:
        fileio.write_json(os.path.join(out_dir, contract.GENOTYPE_FILE), genotype.to_dict())
    cost = {"search_seconds": search_seconds, "search_cpu_seconds": search_cpu_seconds,
            "train_seconds": float(sum(r["seconds"] for r in history["epochs"])),
            "train_cpu_seconds": float(sum(r.get("cpu_seconds", 0.0) for r in history["epochs"]))}
    record = result_record(name, model, test_metrics, data, config, cost)
    fileio.write_json(os.path.join(out_dir, contract.METRICS_FILE), record)
    log.info("%s test %s", name, ", ".join(f"{k} {v:.4f}" for k, v in test_metrics.items()))
    return record
