"""Export for serving: the SavedModel with in-graph normalisation, and its client.

``export_saved_model`` writes a SavedModel whose ``serving_default`` signature
takes raw inputs ``(N, H, W, C)`` (normalised with the training statistics in
the graph) and returns ``probabilities``/``classes`` (classification) or
``outputs`` in target units (regression); `contract.SPEC_FILE` and
`contract.GENOTYPE_FILE` sit beside it. `Predictor` loads one and checks
inputs before serving them.
"""

from __future__ import annotations

import os
import shutil
from typing import Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from tfdarts import contract, fileio
from tfdarts.data import DataSpec
from tfdarts.genotype import Genotype

__all__ = ["ServingModule", "export_saved_model", "Predictor", "load_model", "save_model"]


class ServingModule(tf.Module):
    """Raw inputs in, probabilities or target-unit outputs out.

    Normalisation with the training statistics (and, for regression, the
    inverse target standardisation) lives inside the exported graph.
    """

    def __init__(self, model: keras.Model, spec: DataSpec) -> None:
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


def export_saved_model(model: keras.Model, spec: DataSpec, path: str,
                       genotype: Optional[Genotype] = None) -> str:
    """Writes a SavedModel (``serving_default``) plus spec/genotype JSON, atomically.

    Args:
        model: Trained model.
        spec: Data spec (input shape, normalisation and target statistics).
        path: Destination folder; replaced only once the export is complete.
        genotype: Written as `contract.GENOTYPE_FILE` beside the model when given.

    Returns:
        `path`.
    """
    tmp = path.rstrip("/") + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    module = ServingModule(model, spec)
    tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve})
    fileio.write_json(os.path.join(tmp, contract.SPEC_FILE), spec.to_dict())
    if genotype is not None:
        fileio.write_json(os.path.join(tmp, contract.GENOTYPE_FILE), genotype.to_dict())
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    return path


class Predictor:
    """Loads an exported SavedModel and checks inputs before serving them.

    Args:
        path: Folder written by `export_saved_model`.
    """

    def __init__(self, path: str) -> None:
        spec_path = os.path.join(path, contract.SPEC_FILE)
        if not os.path.exists(spec_path):
            raise ValueError(f"{path} is not a tfdarts export (no {contract.SPEC_FILE})")
        self.spec = DataSpec.from_dict(fileio.read_json(spec_path))
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


def load_model(path: str) -> keras.Model:
    """Loads a ``.keras`` file of any tfdarts model.

    The model modules are imported first: importing them registers their
    serializable classes, which a fresh process may not have done yet.
    """
    from tfdarts import network, resnet  # noqa: F401  (registration only)

    return keras.models.load_model(path)


def save_model(model: keras.Model, path: str) -> None:
    """Saves the native ``.keras`` file atomically."""
    tmp = os.path.join(os.path.dirname(path), ".tmp-" + os.path.basename(path))
    model.save(tmp)
    os.replace(tmp, path)
