"""Image folders, CSV manifests and .npy pairs, made from real Fashion-MNIST and kirigami
samples: loading, own splits, errors that name the file and line, and tiny end-to-end runs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import FASHION_DIR, KIRIGAMI_DIR, REPO

from tfdarts import contract, kirigami, layouts, sources
from tfdarts import data as data_lib
from tfdarts.config import DataConfig

PER_CLASS = {"train": 40, "test": 10}
CLASSES = (0, 1, 7)  # T-shirt/top, Trouser, Sneaker


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """``train/<class>/*.png`` and ``test/<class>/*.png`` of real Fashion-MNIST images."""
    from PIL import Image

    raw = sources.load_idx_folder(FASHION_DIR, "fashion_mnist")
    root = tmp_path_factory.mktemp("images")
    for split, x, y in (("train", raw.x_train, raw.y_train), ("test", raw.x_test, raw.y_test)):
        for label in CLASSES:
            folder = root / split / sources.FASHION_MNIST_CLASSES[label].replace("/", "-")
            folder.mkdir(parents=True)
            for i in np.flatnonzero(y == label)[:PER_CLASS[split]]:
                Image.fromarray(x[i, ..., 0]).save(folder / f"{i}.png")
    return str(root)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """``manifest.csv`` of 240 kirigami cut patterns saved as .npy, with yield strain."""
    raw = kirigami.load(KIRIGAMI_DIR, "yield_strain")
    root = tmp_path_factory.mktemp("manifest")
    (root / "arrays").mkdir()
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "yield_strain"])
        for i in range(240):
            np.save(root / "arrays" / f"{i}.npy", raw.x_train[i, ..., 0])
            writer.writerow([f"arrays/{i}.npy", f"{raw.y_train[i, 0]:.6g}"])
    return str(root / "manifest.csv")


def test_image_folder_keeps_its_own_split_and_class_names(image_folder):
    data = data_lib.prepare(DataConfig(name="my_images", data_dir=image_folder))
    assert data.x_train.shape == (40 * 3, 28, 28, 1) and data.x_test.shape == (30, 28, 28, 1)
    assert data.spec.task.is_classification and data.spec.task.num_outputs == 3
    assert list(data.spec.task.output_names) == ["Sneaker", "T-shirt-top", "Trouser"]
    assert np.bincount(data.y_test).tolist() == [10, 10, 10]


def test_image_folder_resizes_and_promotes_to_rgb(image_folder):
    raw = layouts.load_image_folder(image_folder, DataConfig(image_size=(16, 20), color="rgb"))
    assert raw.x_train.shape[1:] == (16, 20, 3) and raw.x_train.dtype == np.uint8


def test_manifest_regression_matches_the_table(manifest):
    data = data_lib.prepare(DataConfig(name="kiri", data_dir=manifest, target_columns=("yield_strain",)))
    assert data.spec.task.kind == "regression" and data.x_train.shape[1:] == (30, 80, 1)
    assert len(data.y_train) + len(data.y_test) == 240
    assert list(data.spec.task.output_names) == ["yield_strain"]


def test_manifest_split_column_is_the_users_split(manifest, tmp_path):
    rows = list(csv.reader(open(manifest)))
    base = os.path.dirname(manifest)
    out = tmp_path / "m.csv"
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(rows[0] + ["split"])
        for i, row in enumerate(rows[1:]):
            writer.writerow([os.path.join(base, row[0]), row[1], "test" if i % 4 == 0 else "train"])
    raw = layouts.load_manifest(str(out), DataConfig(target_columns=("yield_strain",)))
    assert len(raw.x_test) == 60 and len(raw.x_train) == 180


@pytest.mark.parametrize("edit, message", [
    (lambda row: ["arrays/missing.npy", row[1]], "line 5: path='arrays/missing.npy' is not a file"),
    (lambda row: [row[0], "strong"], "line 5: yield_strain='strong' is not a number"),
])
def test_manifest_errors_name_file_and_line(manifest, tmp_path, edit, message):
    rows = list(csv.reader(open(manifest)))[:10]
    rows[4] = edit(rows[4])
    out = os.path.join(os.path.dirname(manifest), f"bad-{tmp_path.name}.csv")
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(sources.DataError, match=message):
        layouts.load_manifest(out, DataConfig(target_columns=("yield_strain",)))
    os.remove(out)


def test_npy_pair_and_a_fingerprint_that_sees_every_listed_file(manifest, tmp_path):
    x = np.stack([np.load(os.path.join(os.path.dirname(manifest), "arrays", f"{i}.npy")) for i in range(50)])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(50, dtype=np.float32))
    raw = layouts.load(str(tmp_path), DataConfig())
    assert raw.x_train.shape == (50, 30, 80, 1) and raw.y_train.shape == (50, 1)
    cfg = DataConfig(name="kiri", data_dir=manifest, target_columns=("yield_strain",))
    before = data_lib.source_fingerprint(cfg)
    item = os.path.join(os.path.dirname(manifest), "arrays", "0.npy")
    original = np.load(item)
    np.save(item, 1 - original)
    try:
        assert data_lib.source_fingerprint(cfg) != before
    finally:
        np.save(item, original)


def _run(args, out):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "pipeline.run", "--preset", "tiny", "--output_dir",
                           str(out), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (folder,) = [os.path.join(out, d) for d in os.listdir(out)]
    report = open(os.path.join(folder, "report", contract.REPORT_FILE)).read()
    return json.load(open(os.path.join(folder, "evaluation", contract.METRICS_FILE))), report


def test_end_to_end_on_an_image_folder(image_folder, tmp_path):
    record, report = _run(["--dataset", "my_images", "--override", f"data.data_dir={image_folder}"], tmp_path)
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0 and record["dataset"] == "my_images"
    assert "Test set: confusion matrix" in report and "Trouser" in report


def test_end_to_end_on_a_regression_manifest(manifest, tmp_path):
    record, report = _run(["--dataset", "kiri", "--override", f"data.data_dir={manifest}",
                           "--override", "data.target_columns=yield_strain"], tmp_path)
    assert "r2" in record["metrics"] and np.isfinite(record["metrics"]["rmse"])
    assert "Test set: predictions" in report and "residual" in report
