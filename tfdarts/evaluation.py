"""Evaluation on the held-out test split, export for serving, and baselines.

A result record (one per model) is plain JSON::

    {"model": "darts", "params": int, "search_seconds": float | None,
     "train_seconds": float, "metrics": {...}, "seed": int, "dataset": str}
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from typing import Any, Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf

from tfdarts import baselines, data as data_lib, fileio, steps, trainer
from tfdarts.config import Config
from tfdarts.genotype import DARTS_V2, Genotype
from tfdarts.task import Task

log = logging.getLogger("tfdarts")

SAVED_MODEL_DIR = "saved_model"
METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion.json"
SPEC_FILE = "spec.json"


def _predict_fn(model: keras.Model):
    @tf.function(reduce_retracing=True)
    def predict(x):
        return model(x, training=False)

    return predict


def predict(model: keras.Model, dataset: tf.data.Dataset):
    """Runs inference over a dataset of ``(x, y)``.

    Returns:
        ``(outputs (N, K) float32, targets (N,) or (N, K))`` as numpy.
    """
    fn = _predict_fn(model)
    outs, ys = [], []
    for x, y in dataset:
        outs.append(fn(x).numpy())
        ys.append(y.numpy())
    return np.concatenate(outs), np.concatenate(ys)


def classification_metrics(logits: np.ndarray, y: np.ndarray) -> Dict[str, float]:
    """Loss, accuracy and (for more than 5 classes) top-5 accuracy."""
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    out = {"loss": float(-logp[np.arange(len(y)), y].mean()),
           "accuracy": float((logits.argmax(1) == y).mean())}
    if logits.shape[1] > 5:
        top5 = np.argsort(-logits, axis=1)[:, :5]
        out["top5"] = float((top5 == y[:, None]).any(axis=1).mean())
    return out


def regression_metrics(pred: np.ndarray, y: np.ndarray, target_std: np.ndarray) -> Dict[str, float]:
    """Loss (standardised MSE), R^2 (mean over outputs) and RMSE in target units."""
    sse = ((pred - y) ** 2).sum(0)
    sst = ((y - y.mean(0)) ** 2).sum(0)
    rmse = np.sqrt(sse / len(y)) * target_std
    out = {"loss": float(((pred - y) ** 2).mean()), "r2": float(np.mean(1.0 - sse / np.maximum(sst, 1e-12))),
           "rmse": float(np.mean(rmse))}
    if len(rmse) > 1:
        out.update({f"rmse_{i}": float(v) for i, v in enumerate(rmse)})
    return out


def confusion_matrix(logits: np.ndarray, y: np.ndarray, classes: int) -> np.ndarray:
    """``(K, K)`` counts, rows = true class, columns = predicted class."""
    cm = np.zeros((classes, classes), np.int64)
    np.add.at(cm, (y, logits.argmax(1)), 1)
    return cm


def evaluate(model: keras.Model, data: data_lib.PreparedData, batch_size: int = 256) -> Dict[str, float]:
    """Test-split metrics of `model` (accuracy/top-5 or R^2/RMSE, and loss)."""
    out, y = predict(model, data_lib.eval_dataset(data, batch_size))
    spec = data.spec
    if spec.task.is_classification:
        return classification_metrics(out, y.astype(np.int64))
    return regression_metrics(out, y, np.asarray(spec.target_std, np.float64))


class ServingModule(tf.Module):
    """Raw inputs in, probabilities or target-unit outputs out.

    Normalisation with the training statistics (and, for regression, the
    inverse target standardisation) lives inside the exported graph.
    """

    def __init__(self, model: keras.Model, spec: data_lib.DataSpec) -> None:
        super().__init__(name="tfdarts_serving")
        self.model = model
        self.spec_dict = spec.to_dict()
        self._classification = spec.task.is_classification
        self._mean = tf.constant(spec.mean, tf.float32)
        self._std = tf.constant(spec.std, tf.float32)
        self._t_mean = tf.constant(spec.target_mean or (0.0,), tf.float32)
        self._t_std = tf.constant(spec.target_std or (1.0,), tf.float32)
        shape = [None, *spec.task.input_shape]
        self.serve = tf.function(self._serve, input_signature=[tf.TensorSpec(shape, tf.float32, "inputs")])

    def _serve(self, inputs: tf.Tensor) -> Dict[str, tf.Tensor]:
        out = self.model((inputs - self._mean) / self._std, training=False)
        if self._classification:
            return {"probabilities": tf.nn.softmax(out, axis=-1),
                    "classes": tf.argmax(out, axis=-1, output_type=tf.int32)}
        return {"outputs": out * self._t_std + self._t_mean}


def export_saved_model(model: keras.Model, spec: data_lib.DataSpec, path: str,
                       genotype: Optional[Genotype] = None) -> str:
    """Writes a SavedModel (``serving_default``) plus spec/genotype JSON, atomically.

    Args:
        model: Trained model.
        spec: Data spec (input shape, normalisation and target statistics).
        path: Destination folder; replaced only once the export is complete.
        genotype: Written as ``genotype.json`` beside the model when given.

    Returns:
        `path`.
    """
    tmp = path.rstrip("/") + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    module = ServingModule(model, spec)
    tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve})
    fileio.write_json(os.path.join(tmp, SPEC_FILE), spec.to_dict())
    if genotype is not None:
        fileio.write_json(os.path.join(tmp, trainer.GENOTYPE_FILE), genotype.to_dict())
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    return path


class Predictor:
    """Loads an exported SavedModel and checks inputs before serving them.

    Args:
        path: Folder written by `export_saved_model`.
    """

    def __init__(self, path: str) -> None:
        spec_path = os.path.join(path, SPEC_FILE)
        if not os.path.exists(spec_path):
            raise ValueError(f"{path} is not a tfdarts export (no {SPEC_FILE})")
        self.spec = data_lib.DataSpec.from_dict(fileio.read_json(spec_path))
        self._fn = tf.saved_model.load(path).signatures["serving_default"]

    def __call__(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        """Serves raw inputs ``(N, H, W, C)`` (or ``(N, H, W)`` for one channel)."""
        x = np.asarray(x, np.float32)
        shape = tuple(self.spec.task.input_shape)
        if x.ndim == 3 and shape[2] == 1:
            x = x[..., None]
        if x.ndim != 4 or tuple(x.shape[1:]) != shape:
            raise ValueError(f"expected inputs of shape (N, {', '.join(map(str, shape))}), "
                             f"got {tuple(x.shape)}")
        return {k: v.numpy() for k, v in self._fn(inputs=tf.constant(x)).items()}


def _record(name: str, model: keras.Model, metrics: Dict[str, float], data, config: Config,
            train_seconds: float, search_seconds: Optional[float]) -> Dict[str, Any]:
    from tfdarts.network import count_params

    return {"model": name, "params": int(count_params(model)), "search_seconds": search_seconds,
            "train_seconds": float(train_seconds), "metrics": metrics, "seed": config.retrain.seed,
            "dataset": data.spec.name, "fingerprint": data.spec.fingerprint}


def evaluate_and_export(config: Config, data: data_lib.PreparedData, retrain_dir: str,
                        out_dir: str, search_seconds: Optional[float] = None,
                        name: str = "darts") -> Dict[str, Any]:
    """Evaluates a retrained model on the test split and exports it.

    Writes ``metrics.json`` (the result record), ``confusion.json``
    (classification), ``saved_model/`` (with ``spec.json`` and
    ``genotype.json``), ``model.keras`` and ``genotype.json`` to `out_dir`.

    Returns:
        The result record.
    """
    model = keras.models.load_model(os.path.join(retrain_dir, trainer.MODEL_FILE))
    history = fileio.read_json(os.path.join(retrain_dir, trainer.HISTORY_FILE))
    out, y = predict(model, data_lib.eval_dataset(data, 256))
    spec = data.spec
    if spec.task.is_classification:
        metrics = classification_metrics(out, y.astype(np.int64))
        cm = confusion_matrix(out, y.astype(np.int64), spec.task.num_outputs)
        fileio.write_json(os.path.join(out_dir, CONFUSION_FILE),
                          {"classes": list(spec.task.output_names), "matrix": cm.tolist()})
    else:
        metrics = regression_metrics(out, y, np.asarray(spec.target_std, np.float64))
    genotype = getattr(model, "genotype", None)
    export_saved_model(model, spec, os.path.join(out_dir, SAVED_MODEL_DIR), genotype)
    trainer.save_model(model, os.path.join(out_dir, trainer.MODEL_FILE))
    if genotype is not None:
        fileio.write_json(os.path.join(out_dir, trainer.GENOTYPE_FILE), genotype.to_dict())
    seconds = sum(r["seconds"] for r in history["epochs"])
    record = _record(name, model, metrics, data, config, seconds, search_seconds)
    fileio.write_json(os.path.join(out_dir, METRICS_FILE), record)
    log.info("%s test %s", name, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return record


def _validation_view(data: data_lib.PreparedData, seed: int) -> data_lib.PreparedData:
    """Training split halves as (train, test) so selection never sees the test split."""
    a, b = data_lib.search_split(data.spec.num_train, seed)
    spec = dataclasses.replace(data.spec, num_train=len(a), num_test=len(b))
    return data_lib.PreparedData(spec, data.x_train[a], data.y_train[a], data.x_train[b], data.y_train[b])


def random_search(config: Config, data: data_lib.PreparedData, out_dir: str) -> Genotype:
    """Trains `baselines.random_samples` random genotypes briefly; returns the best.

    Candidates train on one half of the training split and are ranked on the
    other half; the test split is never used for the choice.
    """
    b, s = config.baselines, config.search
    view = _validation_view(data, config.data.seed)
    best, best_score = None, -np.inf
    for i, geno in enumerate(baselines.random_genotypes(b.random_samples, s.seed, s.primitives, s.nodes)):
        result = trainer.retrain(config, view, geno, os.path.join(out_dir, f"candidate_{i}"),
                                 name=f"random {i + 1}/{b.random_samples}", epochs=b.random_epochs)
        score = evaluate(result.model, view)[data.spec.task.metric_name]
        log.info("random candidate %d: validation %s %.4f", i + 1, data.spec.task.metric_name, score)
        if score > best_score:
            best, best_score = geno, score
    fileio.write_json(os.path.join(out_dir, "best_genotype.json"), best.to_dict())
    return best


def run_baselines(config: Config, data: data_lib.PreparedData, out_dir: str) -> List[Dict[str, Any]]:
    """Trains, evaluates and exports the comparison models in `baselines.include`.

    Returns:
        One result record per baseline (random_best, resnet18, tiny_resnet, darts_v2).
    """
    b = config.baselines
    records = []
    for name in b.include:
        folder = os.path.join(out_dir, name)
        kwargs: Dict[str, Any] = {"name": name}
        if name == "random":
            genotype, name = random_search(config, data, os.path.join(folder, "search")), "random_best"
        elif name == "darts_v2":
            genotype = DARTS_V2
        elif name in baselines.MODEL_BUILDERS:
            genotype = None
            task = data.spec.task
            kwargs.update(model_fn=lambda n=name: baselines.MODEL_BUILDERS[n](task),
                          epochs=b.resnet_epochs)
        else:
            raise ValueError(f"unknown baseline {name!r}; known: random, darts_v2, "
                             f"{', '.join(baselines.MODEL_BUILDERS)}")
        trainer.retrain(config, data, genotype, os.path.join(folder, "train"), **kwargs)
        records.append(evaluate_and_export(config, data, os.path.join(folder, "train"),
                                           os.path.join(folder, "eval"), name=name))
    return records
