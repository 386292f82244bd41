"""Serving export: in-graph input checks, Predictor checks, and export-folder validation."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tfdarts import contract, export
from tfdarts.data import DataSpec
from tfdarts.resnet import tiny_resnet
from tfdarts.task import REGRESSION, Task

SHAPE = (8, 8, 1)
CLASSES = 3


def _spec(task: Task, target_mean=(), target_std=()) -> DataSpec:
    """A hand-made spec: raw pixels with mean 100 and std 50."""
    return DataSpec(name="tiny", task=task, fingerprint="0" * 64, source="test", mean=(100.0,),
                    std=(50.0,), target_mean=tuple(target_mean), target_std=tuple(target_std),
                    augment="none", num_train=4, num_test=2, split={"mode": "given"})


def _export(task: Task, spec: DataSpec, path: str):
    """Exports a freshly built tiny ResNet for `task`; returns ``(path, model)``."""
    tf.keras.utils.set_random_seed(0)
    model = tiny_resnet(task)
    model.build_from_task()
    return export.export_saved_model(model, spec, path), model


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> str:
    """A classification export (8x8x1 inputs, 3 classes)."""
    task = Task(SHAPE, CLASSES)
    return _export(task, _spec(task), str(tmp_path_factory.mktemp("export") / "saved_model"))[0]


@pytest.fixture(scope="module")
def predictor(exported) -> export.Predictor:
    return export.Predictor(exported)


@pytest.fixture(scope="module")
def loaded(exported):
    """The export loaded with plain TensorFlow, no tfdarts code involved."""
    return tf.saved_model.load(exported)


@pytest.fixture(scope="module")
def signature(loaded):
    return loaded.signatures["serving_default"]


def _good_batch(n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, size=(n, *SHAPE)).astype(np.float32)


def _with(value: float, index=(1, 2, 3, 0)) -> np.ndarray:
    x = _good_batch()
    x[index] = value
    return x


# ----------------------------------------------------------------------------- good inputs


def test_good_batch_gives_probabilities_identical_via_predictor_and_signature(predictor, signature):
    x = _good_batch()
    out = predictor(x)
    raw = {k: v.numpy() for k, v in signature(inputs=tf.constant(x)).items()}
    assert out["probabilities"].shape == (4, CLASSES) and out["classes"].shape == (4,)
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(out["probabilities"], raw["probabilities"])
    np.testing.assert_array_equal(out["classes"], raw["classes"])
    np.testing.assert_array_equal(out["classes"], out["probabilities"].argmax(axis=1))


def test_one_channel_model_accepts_batch_without_channel_axis(predictor):
    x = _good_batch()
    np.testing.assert_array_equal(predictor(x[..., 0])["probabilities"], predictor(x)["probabilities"])


def test_integer_pixels_are_accepted(predictor):
    x = _good_batch()
    np.testing.assert_allclose(predictor(x.round().astype(np.uint8))["probabilities"],
                               predictor(x.round())["probabilities"])


# ----------------------------------------------------------------------------- in-graph checks


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_signature_rejects_non_finite_inputs(signature, value):
    with pytest.raises(tf.errors.InvalidArgumentError, match=export.NON_FINITE_MESSAGE):
        signature(inputs=tf.constant(_with(value)))


def test_signature_rejects_empty_batch(signature):
    with pytest.raises(tf.errors.InvalidArgumentError, match=export.EMPTY_BATCH_MESSAGE):
        signature(inputs=tf.zeros((0, *SHAPE)))


def test_signature_still_rejects_wrong_shape(signature):
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        signature(inputs=tf.zeros((2, 8, 8, 3)))


# ----------------------------------------------------------------------------- Predictor checks


def test_predictor_rejects_nan_saying_how_many_and_where(predictor):
    x = _with(np.nan)
    x[3, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"2 NaN or inf value\(s\) out of 256; "
                                         r"the first is nan at index \(1, 2, 3, 0\)"):
        predictor(x)


def test_predictor_rejects_inf(predictor):
    with pytest.raises(ValueError, match=r"1 NaN or inf value\(s\).*the first is -inf at index \(0, 0, 1, 0\)"):
        predictor(_with(-np.inf, (0, 0, 1, 0)))


def test_predictor_rejects_float64_overflowing_float32(predictor):
    x = _good_batch().astype(np.float64)
    x[0, 0, 0, 0] = 1e39
    with pytest.raises(ValueError, match="the first is inf at index"):
        predictor(x)


@pytest.mark.parametrize("shape", [(0, *SHAPE), (0, 8, 8)])
def test_predictor_rejects_empty_batch(predictor, shape):
    with pytest.raises(ValueError, match=r"^empty batch: inputs must have at least one example"):
        predictor(np.zeros(shape, np.float32))


def test_predictor_rejects_wrong_channel_count(predictor):
    with pytest.raises(ValueError, match=r"^expected inputs of shape \(N, 8, 8, 1\), got \(2, 8, 8, 3\): "
                                         r"expected 1 channel, got 3$"):
        predictor(np.zeros((2, 8, 8, 3)))


def test_predictor_rejects_wrong_height_and_width(predictor):
    with pytest.raises(ValueError, match=r"^expected inputs of shape \(N, 8, 8, 1\), got \(2, 9, 7, 3\): "
                                         r"expected 8x8 pixels, got 9x7; expected 1 channel, got 3$"):
        predictor(np.zeros((2, 9, 7, 3)))


@pytest.mark.parametrize("shape", [(64,), (8, 8), (1, 1, 8, 8, 1)])
def test_predictor_rejects_wrong_rank(predictor, shape):
    with pytest.raises(ValueError, match=r"^expected inputs of shape \(N, 8, 8, 1\), got .*: "
                                         r"expected rank 4 \(or 3 for a one-channel model\), got rank"):
        predictor(np.zeros(shape))


def test_predictor_hints_at_missing_batch_axis(predictor):
    with pytest.raises(ValueError, match=r"one example without a batch axis; add one"):
        predictor(np.zeros(SHAPE))


def test_predictor_messages_are_one_line(predictor):
    for bad in (np.zeros((2, 8, 8, 3)), np.zeros((0, *SHAPE)), _with(np.nan)):
        with pytest.raises(ValueError) as info:
            predictor(bad)
        assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- export folders


@pytest.fixture
def copy(exported, tmp_path) -> str:
    """A writable copy of the export, to damage."""
    return shutil.copytree(exported, str(tmp_path / "copy"))


def _spec_path(folder: str) -> str:
    return os.path.join(folder, contract.SPEC_FILE)


def _rewrite_spec(folder: str, edit) -> None:
    with open(_spec_path(folder)) as f:
        data = json.load(f)
    edit(data)
    with open(_spec_path(folder), "w") as f:
        json.dump(data, f)


def test_missing_spec_names_the_file(copy):
    os.remove(_spec_path(copy))
    with pytest.raises(ValueError, match=rf"{re.escape(_spec_path(copy))} is missing"):
        export.Predictor(copy)


def test_truncated_spec_names_the_file_and_json_error(copy):
    text = open(_spec_path(copy)).read()
    with open(_spec_path(copy), "w") as f:
        f.write(text[:len(text) // 2])
    with pytest.raises(ValueError, match=rf"{re.escape(_spec_path(copy))} is corrupt: not valid JSON \(.*line \d+"):
        export.Predictor(copy)


def test_empty_spec_file_is_corrupt(copy):
    open(_spec_path(copy), "w").close()
    with pytest.raises(ValueError, match=rf"{re.escape(_spec_path(copy))} is corrupt"):
        export.Predictor(copy)


@pytest.mark.parametrize("key", ["mean", "num_train", "task"])
def test_spec_missing_key_names_file_and_key(copy, key):
    _rewrite_spec(copy, lambda d: d.pop(key))
    with pytest.raises(ValueError, match=rf"{re.escape(_spec_path(copy))} is incomplete: missing key\(s\) {key};"):
        export.Predictor(copy)


def test_spec_missing_task_key_names_it(copy):
    _rewrite_spec(copy, lambda d: d["task"].pop("input_shape"))
    with pytest.raises(ValueError, match=r"missing key\(s\) task.input_shape"):
        export.Predictor(copy)


def test_spec_with_bad_values_is_invalid(copy):
    _rewrite_spec(copy, lambda d: d["task"].update(kind="clustering"))
    with pytest.raises(ValueError, match=rf"{re.escape(_spec_path(copy))} is invalid \(ValueError: task kind"):
        export.Predictor(copy)


def test_spec_not_an_object_is_invalid(copy):
    with open(_spec_path(copy), "w") as f:
        json.dump([1, 2], f)
    with pytest.raises(ValueError, match=r"is invalid: expected a JSON object, got list"):
        export.Predictor(copy)


def test_spec_disagreeing_with_signature_shape(copy):
    _rewrite_spec(copy, lambda d: d["task"].update(input_shape=[8, 8, 3]))
    with pytest.raises(ValueError, match=r"says inputs are \(8, 8, 3\) but the SavedModel takes \(8, 8, 1\)"):
        export.Predictor(copy)


def test_folder_that_is_not_a_saved_model(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / contract.SPEC_FILE).write_text("{}")
    with pytest.raises(ValueError, match=rf"{re.escape(str(folder))} is not a tfdarts export: no saved_model.pb"):
        export.Predictor(str(folder))


def test_missing_folder(tmp_path):
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path / 'nowhere'))} is not a tfdarts export: no such folder"):
        export.Predictor(str(tmp_path / "nowhere"))


def test_corrupt_saved_model_pb(copy):
    with open(os.path.join(copy, "saved_model.pb"), "wb") as f:
        f.write(b"not a protobuf")
    with pytest.raises(ValueError, match=rf"{re.escape(copy)} is not a loadable SavedModel"):
        export.Predictor(copy)


# ----------------------------------------------------------------------------- regression


def test_regression_export_serves_target_units_and_checks_inputs(tmp_path):
    task = Task(SHAPE, 2, REGRESSION, ("a", "b"))
    spec = _spec(task, target_mean=(5.0, -1.0), target_std=(2.0, 0.5))
    path, model = _export(task, spec, str(tmp_path / "regression"))
    predictor = export.Predictor(path)
    x = _good_batch(3)
    out = predictor(x)["outputs"]
    normalised = model((x - 100.0) / 50.0, training=False).numpy()
    np.testing.assert_allclose(out, normalised * [2.0, 0.5] + [5.0, -1.0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="NaN or inf"):
        predictor(_with(np.nan)[:3])
    signature = tf.saved_model.load(path).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=export.NON_FINITE_MESSAGE):
        signature(inputs=tf.constant(_with(np.inf)))


# ----------------------------------------------------------------------------- other clients


def _real_export(tmp_path, name: str):
    """A tiny ResNet exported for real data: Fashion-MNIST or kirigami yield strain."""
    from conftest import FASHION_DIR, KIRIGAMI_DIR

    from tfdarts import config as C
    from tfdarts import data as D

    folder = FASHION_DIR if name == "fashion_mnist" else KIRIGAMI_DIR
    data = D.prepare(C.DataConfig(name=name, data_dir=folder, max_train=64, max_test=8))
    path, _ = _export(data.spec.task, data.spec, str(tmp_path / "saved_model"))
    return path, data


def _saved_model_cli(path: str, x: np.ndarray, tmp_path):
    """Runs TensorFlow's own ``saved_model_cli run`` (a TF1-style session loader)."""
    import subprocess
    import sys

    out = tmp_path / "cli"
    np.save(tmp_path / "x.npy", x)
    args = ["run", "--dir", path, "--tag_set", "serve", "--signature_def", "serving_default",
            "--outdir", str(out), "--overwrite", "--inputs", f"inputs={tmp_path / 'x.npy'}"]
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    proc = subprocess.run([cli, *args], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES=""))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {p.stem: np.load(p, allow_pickle=True) for p in out.glob("*.npy")}


@pytest.mark.parametrize("name", ["fashion_mnist", "graphene_kirigami"])
def test_saved_model_cli_serves_what_predictor_serves(name, tmp_path):
    path, data = _real_export(tmp_path, name)
    x = data.x_test.astype(np.float32)
    cli = _saved_model_cli(path, x, tmp_path)
    ours = export.Predictor(path)(x)
    tf2 = {k: v.numpy() for k, v in tf.saved_model.load(path).signatures["serving_default"](
        inputs=tf.constant(x)).items()}
    assert sorted(cli) == sorted(ours) == sorted(tf2)
    for key in ours:
        if ours[key].dtype.kind in "fi":
            np.testing.assert_allclose(cli[key], ours[key], rtol=1e-5, atol=1e-6, err_msg=key)
            np.testing.assert_allclose(tf2[key], ours[key], rtol=1e-5, atol=1e-6, err_msg=key)
        else:
            assert [str(v, "utf-8") if isinstance(v, bytes) else str(v) for v in cli[key]] == \
                [v.decode() for v in ours[key]]
    names = data.spec.task.output_names
    if data.spec.task.is_classification:
        assert "class_names" in ours and [v.decode() for v in ours["class_names"]] == \
            [names[c] for c in ours["classes"]]
    else:  # each named target is an output of its own, in target units
        for i, key in enumerate(export.output_keys(names)):
            np.testing.assert_allclose(ours[key], ours["outputs"][:, i], rtol=1e-6)
    meta = {k: v.numpy() for k, v in tf.saved_model.load(path).signatures["metadata"]().items()}
    assert "raw float32 inputs" in meta["input_scale"].decode()
    assert json.loads(meta["spec_json"].decode())["mean"] == list(data.spec.mean)
