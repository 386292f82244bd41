"""Export for serving: the SavedModel with in-graph normalisation, and its client.

``export_saved_model`` writes a SavedModel whose ``serving_default`` signature
takes raw inputs ``(N, H, W, C)`` (normalised with the training statistics in
the graph) and returns ``probabilities``/``classes``/``class_names``
(classification) or ``outputs`` and one output per named target in target units
(regression); a ``metadata`` signature returns the spec, the expected input scale
and the output names. `contract.SPEC_FILE` and
`contract.GENOTYPE_FILE` sit beside it. `Predictor` loads one and checks
inputs before serving them.

Bad inputs are refused, never served: the graph itself rejects an empty batch
or a NaN/inf value with ``tf.errors.InvalidArgumentError`` (the signature
already fixes rank, height, width and channels), and `Predictor` rejects the
same inputs, plus wrong shapes, with a one-line ``ValueError`` before calling
the graph. A missing, corrupt or incomplete export folder is a ``ValueError``
naming the file and the problem.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from tfdarts import contract, fileio
from tfdarts.data import DataSpec
from tfdarts.genotype import Genotype

__all__ = ["ServingModule", "export_saved_model", "Predictor", "load_model", "save_model",
           "EMPTY_BATCH_MESSAGE", "NON_FINITE_MESSAGE"]

EMPTY_BATCH_MESSAGE = "empty batch: inputs must have at least one example"
"""Error message of the in-graph (and `Predictor`) empty-batch check."""
NON_FINITE_MESSAGE = "inputs contain NaN or inf"
"""Error message of the in-graph non-finite-input check."""

_SPEC_KEYS = tuple(f.name for f in dataclasses.fields(DataSpec)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
_TASK_KEYS = ("input_shape", "num_outputs", "kind")
_SAVED_MODEL_PB = "saved_model.pb"


class ServingModule:
    """Raw inputs in, probabilities or target-unit outputs out.

    Normalisation with the training statistics (and, for regression, the
    inverse target standardisation) lives inside the exported graph, after
    checks that fail the call with ``tf.errors.InvalidArgumentError`` on an
    empty batch or a NaN/inf input. Outputs:

    - classification: ``probabilities`` ``(N, K)``, ``classes`` ``(N,)`` int32
      and, when the data names its classes, ``class_names`` ``(N,)`` string;
    - regression: ``outputs`` ``(N, T)`` in target units and one ``(N,)``
      output per named target (e.g. ``yield_strain``).

    Args:
        model: The trained model (logits or standardised targets).
        spec: Data spec (input shape, normalisation, target statistics, names).
    """

    def __init__(self, model: keras.Model, spec: DataSpec) -> None:
        self.model = model
        self.spec = spec
        self._classification = spec.task.is_classification
        self._mean = tf.constant(spec.mean, tf.float32)
        self._std = tf.constant(spec.std, tf.float32)
        self._t_mean = tf.constant(spec.target_mean or (0.0,), tf.float32)
        self._t_std = tf.constant(spec.target_std or (1.0,), tf.float32)
        self._names = tuple(spec.task.output_names)
        self.input_signature = [tf.TensorSpec([None, *spec.task.input_shape], tf.float32, "inputs")]

    def serve(self, inputs: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Checks, normalises and runs one raw ``(N, H, W, C)`` float32 batch."""
        inputs = _checked_inputs(inputs)
        out = self.model((inputs - self._mean) / self._std, training=False)
        if self._classification:
            classes = tf.argmax(out, axis=-1, output_type=tf.int32)
            result = {"probabilities": tf.nn.softmax(out, axis=-1), "classes": classes}
            if self._names:
                result["class_names"] = tf.gather(tf.constant(self._names), classes)
            return result
        outputs = out * self._t_std + self._t_mean
        result = {"outputs": outputs}
        for i, name in enumerate(output_keys(self._names)):
            result[name] = outputs[:, i]
        return result

    def metadata(self) -> Dict[str, tf.Tensor]:
        """What a client needs besides the graph: the input scale and the names."""
        return {"spec_json": tf.constant(json.dumps(self.spec.to_dict(), sort_keys=True)),
                "input_scale": tf.constant(input_scale(self.spec)),
                "output_names": tf.constant(list(self._names) or [""])}


def output_keys(names: Sequence[str]) -> List[str]:
    """Signature keys for named regression targets (letters, digits and ``_``)."""
    keys = [re.sub(r"[^A-Za-z0-9_]+", "_", n).strip("_") or f"output_{i}" for i, n in enumerate(names)]
    return [k if k not in ("outputs", "inputs") else f"{k}_target" for k in keys]


def input_scale(spec: DataSpec) -> str:
    """One sentence on what `serving_default` expects, for the metadata signature."""
    shape = "x".join(map(str, spec.task.input_shape))
    return (f"serving_default takes raw float32 inputs (N, {shape.replace('x', ', ')}) in the units of "
            f"the training files (e.g. 0-255 pixels), not normalised: the graph subtracts mean "
            f"{list(spec.mean)} and divides by std {list(spec.std)} per channel")


def _checked_inputs(inputs: tf.Tensor) -> tf.Tensor:
    """`inputs`, gated on in-graph checks that the batch is non-empty and finite.

    Args:
        inputs: ``(N, H, W, C)`` float32 raw inputs.

    Returns:
        The same values; anything computed from them runs only after both checks.

    Raises:
        tf.errors.InvalidArgumentError: When run on an empty batch
            (`EMPTY_BATCH_MESSAGE`) or on NaN/inf values (`NON_FINITE_MESSAGE`).
    """
    not_empty = tf.debugging.assert_greater(tf.shape(inputs)[0], 0, message=EMPTY_BATCH_MESSAGE)
    with tf.control_dependencies([not_empty]):
        inputs = tf.identity(inputs)
    return tf.debugging.assert_all_finite(inputs, NON_FINITE_MESSAGE)


def export_saved_model(model: keras.Model, spec: DataSpec, path: str,
                       genotype: Optional[Genotype] = None) -> str:
    """Writes a SavedModel (``serving_default``, ``metadata``) plus spec/genotype JSON, atomically.

    The SavedModel is written by ``keras.export.ExportArchive``, so TF2
    (``tf.saved_model.load``), TF Serving and TF1-style session loaders
    (``saved_model_cli run``) all serve it.

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
    archive = keras.export.ExportArchive()  # loads in TF1-style session loaders as well
    archive.track(model)
    archive.add_endpoint("serving_default", module.serve, input_signature=module.input_signature)
    archive.add_endpoint("metadata", module.metadata, input_signature=[])
    archive.write_out(tmp, verbose=False)
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

    Raises:
        ValueError: `path` is not a SavedModel with a ``serving_default``
            signature, or its `contract.SPEC_FILE` is missing, invalid JSON,
            incomplete or inconsistent with the signature.
    """

    def __init__(self, path: str) -> None:
        _check_saved_model_folder(path)
        self.spec = _read_spec(os.path.join(path, contract.SPEC_FILE))
        self._fn = _load_signature(path)
        _check_signature_shape(self._fn, self.spec, path)

    def __call__(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        """Serves raw inputs ``(N, H, W, C)`` (or ``(N, H, W)`` for one channel).

        Args:
            x: Raw inputs in training units (e.g. 0..255 pixels), any real dtype.

        Returns:
            ``probabilities`` ``(N, K)`` and ``classes`` ``(N,)`` (classification)
            or ``outputs`` ``(N, K)`` in target units (regression), as numpy.

        Raises:
            ValueError: Wrong rank, height/width or channel count, an empty
                batch, or NaN/inf values.
        """
        x = self.check_inputs(x)
        return {k: v.numpy() for k, v in self._fn(inputs=tf.constant(x)).items()}

    def check_inputs(self, x: np.ndarray) -> np.ndarray:
        """The float32 ``(N, H, W, C)`` array `__call__` would serve, or a ValueError."""
        with np.errstate(over="ignore"):  # values beyond float32 become inf, reported below
            x = np.asarray(x, np.float32)
        shape = tuple(self.spec.task.input_shape)
        given = tuple(x.shape)
        if x.ndim == 3 and shape[2] == 1:
            x = x[..., None]
        _check_shape(tuple(x.shape), shape, given)
        _check_finite(x)
        return x


# ----------------------------------------------------------------------------- input checks


def _check_shape(got: Tuple[int, ...], expected: Tuple[int, int, int],
                 given: Tuple[int, ...]) -> None:
    """Rejects a batch shape other than ``(N >= 1, *expected)``, saying what differs.

    Args:
        got: Shape after adding the channel axis of a one-channel ``(N, H, W)`` batch.
        expected: The model's ``(H, W, C)``.
        given: Shape as passed by the caller (reported in the message).
    """
    problems = _shape_problems(got, expected)
    if problems and given == expected:
        problems = ["one example without a batch axis; add one (x[None])"]
    if problems:
        raise ValueError(f"expected inputs of shape (N, {', '.join(map(str, expected))}), "
                         f"got {given}: {'; '.join(problems)}")
    if got[0] == 0:
        raise ValueError(f"{EMPTY_BATCH_MESSAGE}, got shape {given}")


def _shape_problems(got: Tuple[int, ...], expected: Tuple[int, int, int]) -> List[str]:
    """Human-readable differences between a batch shape and ``(N, *expected)``."""
    if len(got) != 4:
        one_channel = " (or 3 for a one-channel model)" if expected[2] == 1 else ""
        return [f"expected rank 4{one_channel}, got rank {len(got)}"]
    problems = []
    if got[1:3] != expected[:2]:
        problems.append(f"expected {expected[0]}x{expected[1]} pixels, got {got[1]}x{got[2]}")
    if got[3] != expected[2]:
        plural = "" if expected[2] == 1 else "s"
        problems.append(f"expected {expected[2]} channel{plural}, got {got[3]}")
    return problems


def _check_finite(x: np.ndarray) -> None:
    """Rejects NaN/inf values, saying how many there are and where the first is."""
    bad = ~np.isfinite(x)
    if not bad.any():
        return
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    raise ValueError(f"inputs contain {int(bad.sum())} NaN or inf value(s) out of {x.size}; "
                     f"the first is {x[first]} at index {first}")


# ----------------------------------------------------------------------------- loading


def _check_saved_model_folder(path: str) -> None:
    """Rejects a path that is not a SavedModel folder."""
    if not os.path.isdir(path):
        raise ValueError(f"{path} is not a tfdarts export: no such folder")
    if not os.path.exists(os.path.join(path, _SAVED_MODEL_PB)):
        raise ValueError(f"{path} is not a tfdarts export: no {_SAVED_MODEL_PB} in the folder "
                         "(give the folder written by export_saved_model)")


def _read_spec(spec_path: str) -> DataSpec:
    """Reads and validates `contract.SPEC_FILE`, every problem a ValueError naming the file."""
    if not os.path.exists(spec_path):
        raise ValueError(f"{spec_path} is missing: not a tfdarts export (no {contract.SPEC_FILE})")
    try:
        data = fileio.read_json(spec_path)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{spec_path} is corrupt: not valid JSON ({err}); export the model again") from None
    _check_spec_keys(data, spec_path)
    try:
        return DataSpec.from_dict(data)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{spec_path} is invalid ({type(err).__name__}: {err}); "
                         "export the model again") from None


def _check_spec_keys(data: Any, spec_path: str) -> None:
    """Rejects a spec that is not an object or lacks a `DataSpec` or task key."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{spec_path} is invalid: expected a JSON object, got {type(data).__name__}")
    missing = [k for k in _SPEC_KEYS if k not in data]
    task = data.get("task")
    if isinstance(task, Mapping):
        missing += [f"task.{k}" for k in _TASK_KEYS if k not in task]
    elif "task" in data:
        raise ValueError(f"{spec_path} is invalid: 'task' must be an object, got {type(task).__name__}")
    if missing:
        raise ValueError(f"{spec_path} is incomplete: missing key(s) {', '.join(missing)}; "
                         "export the model again")


def _load_signature(path: str) -> Any:
    """The ``serving_default`` concrete function of the SavedModel in `path`."""
    try:
        loaded = tf.saved_model.load(path)
    except (OSError, ValueError, tf.errors.OpError) as err:
        raise ValueError(f"{path} is not a loadable SavedModel ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from None
    if "serving_default" not in loaded.signatures:
        raise ValueError(f"{path} has no serving_default signature "
                         f"(signatures: {', '.join(loaded.signatures) or 'none'})")
    return loaded.signatures["serving_default"]


def _check_signature_shape(fn: Any, spec: DataSpec, path: str) -> None:
    """Rejects a spec whose input shape disagrees with the signature's."""
    specs = fn.structured_input_signature[1]
    if "inputs" not in specs:
        raise ValueError(f"{path}: serving_default takes {sorted(specs)}, not 'inputs'")
    graph_shape = tuple(specs["inputs"].shape.as_list()[1:])
    if graph_shape != tuple(spec.task.input_shape):
        raise ValueError(f"{os.path.join(path, contract.SPEC_FILE)} says inputs are "
                         f"{tuple(spec.task.input_shape)} but the SavedModel takes {graph_shape}")


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
