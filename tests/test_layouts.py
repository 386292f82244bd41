"""Image folders, CSV manifests and .npy pairs, made from real Fashion-MNIST and kirigami
samples: loading, own splits, errors that name the file and line, and tiny end-to-end runs."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

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


def _manifest_rows(manifest):
    with open(manifest, newline="") as f:
        return list(csv.reader(f))


def test_manifest_split_column_is_the_users_split(manifest, tmp_path):
    rows = _manifest_rows(manifest)
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
    rows = _manifest_rows(manifest)[:10]
    rows[4] = edit(rows[4])
    (tmp_path / "arrays").symlink_to(os.path.join(os.path.dirname(manifest), "arrays"))
    out = tmp_path / "bad.csv"
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(sources.DataError, match=re.escape(str(out)) + " " + message):
        layouts.load_manifest(str(out), DataConfig(target_columns=("yield_strain",)))


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


# ----------------------------------------------------------------------------- synthetic layouts


def _png(path, pixels):
    """Saves `pixels` (2-D uint8/uint16/int32/float32) as an image, making its folder."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _classes(root, counts, size=(6, 6)):
    """``root/<class>/<i>.png`` with `counts` images per class, each of its own constant value."""
    for k, (name, count) in enumerate(counts.items()):
        for i in range(count):
            _png(root / name / f"{i}.png", np.full(size, 20 * k + i, np.uint8))
    return root


def _write_csv(path, rows, encoding="utf-8"):
    with open(path, "w", newline="", encoding=encoding) as f:
        csv.writer(f).writerows(rows)
    return path


def _arrays(folder, count, shape=(4, 5)):
    """``folder/<i>.npy`` arrays, each of its own constant value; their relative paths."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        np.save(folder / f"{i}.npy", np.full(shape, i, np.float32))
    return [f"{folder.name}/{i}.npy" for i in range(count)]


def test_moving_an_image_to_another_class_changes_labels_and_every_fingerprint(tmp_path):
    root = _classes(tmp_path / "cls", {"A": 4, "B": 5})
    cfg = DataConfig(name="mine", data_dir=str(root))

    def state():
        raw = layouts.load_image_folder(str(root), cfg)
        return np.bincount(raw.y_train).tolist(), raw.content_id, data_lib.source_fingerprint(cfg), \
            data_lib.prepare(cfg).spec.fingerprint

    before = state()
    assert state() == before  # deterministic
    (root / "B" / "4.png").rename(root / "A" / "4.png")  # same name, other class
    after = state()
    assert after[0] == [5, 4] and before[0] == [4, 5]
    assert all(a != b for a, b in zip(after[1:], before[1:]))


def test_settings_that_shape_the_arrays_are_part_of_the_fingerprint(tmp_path):
    root = _classes(tmp_path / "cls", {"A": 5, "B": 5})
    base = DataConfig(name="mine", data_dir=str(root))
    prints = {}
    for key, change in {"default": {}, "size": {"image_size": (4, 4)}, "square": {"image_size": (4,)},
                        "rgb": {"color": "rgb"}}.items():
        prints[key] = data_lib.prepare(dataclasses.replace(base, **change)).spec.fingerprint
    assert prints["size"] == prints["square"]  # the same arrays
    assert len({prints[k] for k in ("default", "size", "rgb")}) == 3
    items = _arrays(tmp_path / "arrays", 10)
    rows = [["path", "other", "label", "label2", "value"]]
    rows += [[p, items[-1 - i], i % 2, (i // 5) % 2, i / 10] for i, p in enumerate(items)]
    csv_cfg = DataConfig(name="mine", data_dir=str(_write_csv(tmp_path / "m.csv", rows)))
    changes = [{}, {"label_column": "label2"}, {"path_column": "other"}, {"target_columns": ("value",)}]
    csv_prints = {data_lib.prepare(dataclasses.replace(csv_cfg, **c)).spec.fingerprint for c in changes}
    assert len(csv_prints) == len(changes)
    assert data_lib.prepare(dataclasses.replace(csv_cfg, image_size=(3, 3))).spec.fingerprint in csv_prints


@pytest.mark.parametrize("make, message", [
    (lambda r: [_png(r / s / f"{i}.png", np.zeros((4, 4), np.uint8)) for s in ("train", "test") for i in (0, 1)],
     "train/ holds no class folders"),
    (lambda r: _classes(r / "train", {"A": 2, "B": 2}), "has train/ but no test/ folder"),
    (lambda r: (_classes(r / "train", {"A": 2, "B": 2}), _classes(r / "test", {"A": 1, "B": 1}),
                _classes(r, {"C": 1})), r"image folders \['C'\] sit beside train/ and test/"),
])
def test_train_and_test_are_reserved_for_the_users_split(tmp_path, make, message):
    root = tmp_path / "images"
    make(root)
    hint = re.escape("put images in train/<class>/ and test/<class>/")
    for call in (lambda: layouts.detect(str(root)), lambda: data_lib.check_source(DataConfig(data_dir=str(root))),
                 lambda: data_lib.prepare(DataConfig(name="mine", data_dir=str(root)))):
        with pytest.raises(sources.DataError, match=f"{re.escape(str(root))}: {message}.*{hint}"):
            call()


def test_train_and_test_files_are_not_folders(tmp_path):
    (tmp_path / "train").write_text("notes")
    (tmp_path / "test").write_text("notes")
    assert layouts.detect(str(tmp_path)) is None
    _classes(tmp_path, {"A": 1, "B": 1})
    assert layouts.detect(str(tmp_path)) == "images"


def test_an_unreadable_folder_is_a_data_error_naming_it(tmp_path, monkeypatch):
    root = _classes(tmp_path / "cls", {"A": 1, "B": 1})
    listdir = os.listdir

    def denied(path="."):
        if os.path.abspath(path) == str(root / "B"):
            raise PermissionError(13, "Permission denied", path)
        return listdir(path)

    monkeypatch.setattr(os, "listdir", denied)
    with pytest.raises(sources.DataError, match=f"cannot list {re.escape(str(root / 'B'))}: Permission denied"):
        layouts.detect(str(root))


def test_deep_images_keep_their_precision_on_the_8_bit_range(tmp_path):
    ramp = np.arange(0, 65536, 16, dtype=np.uint16).reshape(64, 64)
    cases = {"16.png": ramp, "16.tif": ramp, "32.tif": ramp.astype(np.int32),
             "f.tif": ramp.astype(np.float32) / 65535}
    for name, pixels in cases.items():
        got = layouts.read_image(str(_png(tmp_path / name, pixels)), (), "auto")
        assert got.dtype == np.float32 and got.shape == (64, 64, 1)
        np.testing.assert_allclose(got[..., 0], ramp * (255 / 65535), rtol=1e-6, atol=1e-4)
        assert len(np.unique(got)) == ramp.size  # none merged into 256 levels
    eight = layouts.read_image(str(_png(tmp_path / "8.png", (ramp // 257).astype(np.uint8))), (), "auto")
    assert eight.dtype == np.uint8 and abs(eight.astype(np.float32) - got).max() <= 1
    resized = layouts.read_image(str(tmp_path / "16.png"), (16, 8), "rgb")
    assert resized.shape == (16, 8, 3) and 0 <= resized.min() and resized.max() <= 255


@pytest.mark.parametrize("pixels", [np.full((4, 4), 2.5, np.float32), np.full((4, 4), -1, np.int32),
                                    np.full((4, 4), np.nan, np.float32)])
def test_deep_images_out_of_range_point_to_npy(tmp_path, pixels):
    path = _png(tmp_path / "odd.tif", pixels)
    with pytest.raises(sources.DataError, match=f"{re.escape(str(path))}: .* save it as .npy"):
        layouts.read_image(str(path), (), "auto")


def test_a_folder_of_16_bit_images_loads_as_float(tmp_path):
    for k, name in enumerate(("dim", "bright")):
        for i in range(3):
            _png(tmp_path / name / f"{i}.png", np.full((5, 5), 1000 + 30000 * k + i, np.uint16))
    raw = layouts.load_image_folder(str(tmp_path), DataConfig())
    assert raw.x_train.dtype == np.float32 and raw.x_train.max() <= 255
    assert len(np.unique(raw.x_train)) == 6 and raw.output_names == ("bright", "dim")


@pytest.mark.parametrize("labels, message", [
    (["0.5", "1.25", "2"], "line 2: label='0.5' is not a class label but a measurement; "
                           "set data.target_columns=label for regression"),
    (["cat", "cat", "cat"], "every row has label='cat'; classification needs at least two classes"),
])
def test_manifest_labels_must_be_classes(tmp_path, labels, message):
    items = _arrays(tmp_path / "arrays", len(labels))
    path = _write_csv(tmp_path / "m.csv", [["path", "label"], *zip(items, labels)])
    with pytest.raises(sources.DataError, match=re.escape(f"{path}: " if "every" in message else f"{path} ") + message):
        layouts.load_manifest(str(path), DataConfig())


def test_manifest_number_labels_sort_numerically(tmp_path):
    labels = ["10", "2", "1.0", "2", "10"]
    items = _arrays(tmp_path / "arrays", len(labels))
    raw = layouts.load_manifest(str(_write_csv(tmp_path / "m.csv", [["path", "label"], *zip(items, labels)])),
                                DataConfig())
    assert raw.output_names == ("1.0", "2", "10") and raw.y_train.tolist() == [2, 1, 0, 1, 2]


@pytest.mark.parametrize("layout", ["flat", "split"])
def test_image_folders_need_two_classes(tmp_path, layout):
    roots = [tmp_path] if layout == "flat" else [tmp_path / "train", tmp_path / "test"]
    for root in roots:
        _classes(root, {"only": 2})
    with pytest.raises(sources.DataError, match="found 1 class folder.*at least two"):
        layouts.load_image_folder(str(tmp_path), DataConfig())


def test_npy_labels_need_two_classes(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((6, 4, 4), np.float32))
    np.save(tmp_path / "y.npy", np.full(6, 3))
    with pytest.raises(sources.DataError, match=f"{re.escape(str(tmp_path / 'y.npy'))}: every label is 3"):
        layouts.load(str(tmp_path), DataConfig())


def test_manifest_with_a_byte_order_mark_and_multi_line_fields(tmp_path):
    items = _arrays(tmp_path / "arrays", 4)
    rows = [["path", "label", "note"], [items[0], "a", "two\nlines"], [items[1], "b", ""],
            [items[2], "a", "three\nmore\nlines"], ["arrays/gone.npy", "b", ""]]
    path = _write_csv(tmp_path / "excel.csv", rows, encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    with pytest.raises(sources.DataError, match=re.escape(
            f"{path} line 8: path='arrays/gone.npy' is not a file (paths are relative to {tmp_path})")):
        layouts.load_manifest(str(path), DataConfig())
    rows[-1][0] = items[3]
    raw = layouts.load_manifest(str(_write_csv(path, rows, encoding="utf-8-sig")), DataConfig())
    assert raw.y_train.tolist() == [0, 1, 0, 1] and raw.x_train.shape == (4, 4, 5, 1)


def test_a_manifest_is_parsed_and_its_files_hashed_once(tmp_path, monkeypatch):
    items = _arrays(tmp_path / "arrays", 6)
    path = _write_csv(tmp_path / "m.csv", [["path", "label"], *[[p, i % 2] for i, p in enumerate(items)]])
    cfg = DataConfig(name="mine", data_dir=str(path))
    monkeypatch.setattr(sources, "_SETTLED_NS", -1)  # the files are seconds old: reuse their digests
    parses, reads, real_parse = [], [], layouts.read_manifest
    monkeypatch.setattr(layouts, "read_manifest", lambda p: parses.append(p) or real_parse(p))
    monkeypatch.setattr(sources, "open", lambda p, *a: reads.append(p) or open(p, *a), raising=False)
    for call in (data_lib.check_source, data_lib.source_fingerprint, data_lib.prepare):
        del parses[:]
        call(cfg)
        assert parses == [str(path)], call.__name__
    assert sorted(reads) == sorted([str(path), *[str(tmp_path / p) for p in items]])


def test_a_file_edited_right_after_hashing_is_hashed_again(tmp_path):
    path = tmp_path / "a.npy"
    path.write_bytes(b"first")
    before = sources.hash_files([str(path)])
    stat = path.stat()
    path.write_bytes(b"other")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert sources.hash_files([str(path)]) != before


def test_images_of_different_sizes_are_reported_with_their_sizes(tmp_path):
    _png(tmp_path / "A" / "0.png", np.zeros((8, 8), np.uint8))
    _png(tmp_path / "B" / "0.png", np.zeros((10, 6), np.uint8))
    with pytest.raises(sources.DataError, match=re.escape(f"{tmp_path / 'A' / '0.png'} is 8x8, "
                                                          f"{tmp_path / 'B' / '0.png'} is 10x6)")):
        layouts.load_image_folder(str(tmp_path), DataConfig())


@pytest.mark.parametrize("name, instead", [("idx", "a folder of IDX files"), ("npz", "an .npz file")])
def test_idx_and_npz_names_say_they_cannot_read_a_manifest(manifest, name, instead):
    cfg = DataConfig(name=name, data_dir=manifest)
    message = re.escape(f"data.name={name} cannot read the .csv manifest {manifest}; set data.name to "
                        f"a name of your own (e.g. data.name=my_data) to load it as a manifest, or give {instead}")
    for call in (data_lib.check_source, data_lib.prepare):
        with pytest.raises(sources.DataError, match=message):
            call(cfg)


def _run(args, out):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "pipeline.run", "--preset", "tiny", "--output_dir",
                           str(out), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (folder,) = list(Path(out).iterdir())
    report = (folder / "report" / contract.REPORT_FILE).read_text()
    return json.loads((folder / "evaluation" / contract.METRICS_FILE).read_text()), report


def test_end_to_end_on_an_image_folder(image_folder, tmp_path):
    record, report = _run(["--dataset", "my_images", "--override", f"data.data_dir={image_folder}"], tmp_path)
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0 and record["dataset"] == "my_images"
    assert "Test set: confusion matrix" in report and "Trouser" in report


def test_end_to_end_on_a_regression_manifest(manifest, tmp_path):
    record, report = _run(["--dataset", "kiri", "--override", f"data.data_dir={manifest}",
                           "--override", "data.target_columns=yield_strain"], tmp_path)
    assert "r2" in record["metrics"] and np.isfinite(record["metrics"]["rmse"])
    assert "Test set: predictions" in report and "residual" in report
