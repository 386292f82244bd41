"""Tests for tfdarts.data on the real Fashion-MNIST and graphene kirigami files."""

from __future__ import annotations

import dataclasses
import gzip
import os
import shutil
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import FASHION_DIR, KIRIGAMI_DIR

from tfdarts import contract, data, kirigami, sources
from tfdarts.config import DataConfig
from tfdarts.data import DataError

KIRIGAMI_FILE = os.path.join(KIRIGAMI_DIR, kirigami.TABLE_NAME)
IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
WEIGHTS = 1 << np.arange(14, -1, -1)


# ----------------------------------------------------------------------------- fixtures / helpers


@pytest.fixture(scope="module")
def fashion() -> data.PreparedData:
    return data.prepare(DataConfig(name="fashion_mnist", data_dir=FASHION_DIR))


@pytest.fixture(scope="module")
def fashion_small() -> data.PreparedData:
    return data.prepare(DataConfig(name="fashion_mnist", data_dir=FASHION_DIR, max_train=2000,
                                   max_test=500, augment="crop_flip", seed=7))


@pytest.fixture(scope="module")
def kiri() -> data.PreparedData:
    return data.prepare(DataConfig(name="graphene_kirigami", data_dir=KIRIGAMI_DIR))


@pytest.fixture(scope="module")
def kiri_grouped() -> data.PreparedData:
    return data.prepare(DataConfig(name="graphene_kirigami", data_dir=KIRIGAMI_DIR, split="grouped"))


def pattern_ids(x: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Recovers the 15-bit coarse pattern of kirigami images from block-local row 5."""
    x = np.asarray(x)
    bits = x[:, 5::10, 8::16, 0] > threshold  # (N, 3, 5): one pixel inside each cut band
    return (bits.reshape(len(x), 15) * WEIGHTS).sum(axis=1)


def norm_threshold(spec: data.DataSpec) -> float:
    """The 0/1 midpoint in normalised units."""
    return (0.5 - spec.mean[0]) / spec.std[0]


def epoch_ids(ds: tf.data.Dataset, spec: data.DataSpec) -> np.ndarray:
    return np.concatenate([pattern_ids(x.numpy(), norm_threshold(spec)) for x, _ in ds])


def batches(ds: tf.data.Dataset):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def same_batches(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(xa, xb) and np.array_equal(ya, yb)
                                    for (xa, ya), (xb, yb) in zip(a, b))


def idx_folder(tmp_path, **replace) -> str:
    """A folder of symlinks to the real Fashion-MNIST files; `replace` maps name -> bytes or path."""
    folder = tmp_path / "idx"
    folder.mkdir()
    for name in IDX_FILES:
        target = folder / name
        value = replace.get(name.split("-idx")[0].replace("-", "_"))
        if isinstance(value, bytes):
            target.write_bytes(value)
        else:
            os.symlink(os.path.abspath(value or os.path.join(FASHION_DIR, name)), target)
    return str(folder)


def real_lines(count: int) -> list:
    with open(KIRIGAMI_FILE) as f:
        return [line for line in f if not line.startswith("#")][:count]


def write_table(tmp_path, lines, name="table.dat") -> str:
    path = tmp_path / name
    path.write_text("# header\n" + "".join(lines))
    return str(path)


# ----------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_counts_shapes_labels(fashion):
    spec = fashion.spec
    assert (spec.num_train, spec.num_test) == (60000, 10000)
    assert fashion.x_train.shape == (60000, 28, 28, 1) and fashion.x_test.shape == (10000, 28, 28, 1)
    assert fashion.x_train.dtype == np.uint8 and fashion.y_train.dtype == np.int64
    assert spec.task.kind == "classification" and spec.task.num_outputs == 10
    assert spec.task.input_shape == (28, 28, 1)
    assert spec.task.output_names[0] == "T-shirt/top" and spec.task.output_names[9] == "Ankle boot"
    for y in (fashion.y_train, fashion.y_test):
        assert set(np.unique(y)) == set(range(10))
    assert np.bincount(fashion.y_train).tolist() == [6000] * 10
    assert spec.augment == "none" and spec.split["mode"] == "given"
    assert spec.target_mean == () and spec.target_std == ()
    assert os.path.samefile(spec.source, FASHION_DIR)


def test_fashion_mnist_uses_debian_folder_when_no_data_dir(fashion, monkeypatch):
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", FASHION_DIR)
    loaded = data.prepare(DataConfig(name="fashion_mnist"))
    assert loaded.spec.fingerprint == fashion.spec.fingerprint
    assert os.path.samefile(loaded.spec.source, FASHION_DIR)


def test_normalisation_uses_training_statistics(fashion):
    x = fashion.x_train.astype(np.float64)
    assert fashion.spec.mean[0] == pytest.approx(x.mean(), rel=1e-9)
    assert fashion.spec.std[0] == pytest.approx(x.std(), rel=1e-9)
    normed = data.normalize_inputs(tf.constant(fashion.x_train), fashion.spec).numpy()
    assert normed.dtype == np.float32
    assert abs(normed.mean()) < 1e-3 and normed.std() == pytest.approx(1.0, abs=1e-3)
    test_normed = data.normalize_inputs(tf.constant(fashion.x_test), fashion.spec).numpy()
    assert abs(test_normed.mean()) > 1e-3  # test statistics were not used


def test_max_train_keeps_balanced_subset_with_its_own_stats(fashion, fashion_small):
    spec = fashion_small.spec
    assert (spec.num_train, spec.num_test) == (2000, 500)
    assert np.bincount(fashion_small.y_train).tolist() == [200] * 10
    assert np.bincount(fashion_small.y_test).tolist() == [50] * 10
    assert spec.mean[0] == pytest.approx(fashion_small.x_train.astype(np.float64).mean())
    assert spec.split == {"mode": "given", "max_train": 2000, "max_test": 500, "seed": 7}
    assert spec.fingerprint != fashion.spec.fingerprint
    again = data.prepare(DataConfig(name="fashion_mnist", data_dir=FASHION_DIR, max_train=2000,
                                    max_test=500, augment="crop_flip", seed=7))
    assert np.array_equal(again.x_train, fashion_small.x_train)
    assert again.spec == spec


def test_eval_dataset_fixed_order_and_partial_batch(fashion):
    got = batches(data.eval_dataset(fashion, 3000))
    assert [len(y) for _, y in got] == [3000, 3000, 3000, 1000]
    assert np.array_equal(np.concatenate([y for _, y in got]), fashion.y_test)
    assert got[0][1].dtype == np.int32
    expected = data.normalize_inputs(tf.constant(fashion.x_test[:3000]), fashion.spec).numpy()
    assert np.array_equal(got[0][0], expected)


# ----------------------------------------------------------------------------- kirigami


def test_kirigami_counts_shape_targets(kiri):
    spec = kiri.spec
    assert spec.num_train + spec.num_test == 29791
    assert spec.num_test == round(0.2 * 29791)  # random split has the requested fraction
    assert kiri.x_train.shape[1:] == (30, 80, 1) and kiri.x_train.dtype == np.float32
    assert set(np.unique(kiri.x_train)) == {0.0, 1.0}
    assert spec.task.kind == "regression" and spec.task.num_outputs == 1
    assert spec.task.output_names == ("yield_strain",) and spec.augment == "none"
    assert kiri.y_train.shape == (spec.num_train, 1) and kiri.y_train.dtype == np.float32
    y = np.concatenate([kiri.y_train, kiri.y_test])
    assert y.min() == pytest.approx(0.161, abs=1e-3) and y.max() == pytest.approx(2.305, abs=1e-3)
    assert spec.target_mean[0] == pytest.approx(kiri.y_train.astype(np.float64).mean())
    ids = np.concatenate([pattern_ids(kiri.x_train), pattern_ids(kiri.x_test)])
    assert len(np.unique(ids)) == 29791  # every pattern exactly once


def test_render_follows_readme_rule():
    assert np.array_equal(kirigami.render(np.ones((1, 15))), np.ones((1, 30, 80, 1), np.float32))
    for i in range(3):
        for j in range(5):
            pattern = np.ones((3, 5))
            pattern[i, j] = 0
            image = kirigami.render(pattern[None])[0, :, :, 0]
            expected = np.ones((30, 80), np.float32)
            expected[10 * i + 4:10 * i + 7, 16 * j:16 * j + 16] = 0
            assert np.array_equal(image, expected), (i, j)


def test_render_of_first_file_row(kiri):
    bits = [1, 0, 0, 1, 1, 0, 1, 0, 1, 1, 1, 1, 0, 1, 0]  # first data row of the README/file
    assert real_lines(1)[0].split()[:15] == [str(b) for b in bits]
    image = kirigami.render(np.array([bits]))[0, :, :, 0]
    assert image.sum() == 30 * 80 - 6 * 3 * 16  # six cuts, each 3 rows x 16 columns
    assert image[10 * 0 + 5, 16 * 1] == 0 and image[10 * 0 + 3, 16 * 1] == 1
    assert image[10 * 2 + 6, 16 * 4 + 15] == 0 and image[10 * 2 + 7, 16 * 4 + 15] == 1
    target = (np.array(bits) * WEIGHTS).sum()
    all_x = np.concatenate([kiri.x_train, kiri.x_test])
    all_y = np.concatenate([kiri.y_train, kiri.y_test])
    row = np.flatnonzero(pattern_ids(all_x) == target)
    assert len(row) == 1 and all_y[row[0], 0] == pytest.approx(0.2772)
    assert np.array_equal(all_x[row[0], :, :, 0], image)


def test_kirigami_target_columns(tmp_path):
    path = write_table(tmp_path, real_lines(40))
    table = np.array([line.split() for line in real_lines(40)], dtype=np.float64)
    for target, column in kirigami.TARGET_COLUMNS.items():
        loaded = data.prepare(DataConfig(name="graphene_kirigami", data_dir=path, target=target))
        ys = np.concatenate([loaded.y_train, loaded.y_test])[:, 0]
        assert sorted(ys.tolist()) == pytest.approx(sorted(table[:, column].tolist()), rel=1e-6)
        assert loaded.spec.task.output_names == (target,) and loaded.spec.split["target"] == target


def test_grouped_split_keeps_orbits_on_one_side(kiri_grouped):
    spec = kiri_grouped.spec
    assert spec.split["mode"] == "grouped" and spec.num_train + spec.num_test == 29791
    train_keys = set(kirigami.orbit_keys(_bits(kiri_grouped.x_train)).tolist())
    test_keys = set(kirigami.orbit_keys(_bits(kiri_grouped.x_test)).tolist())
    assert not train_keys & test_keys
    assert len(train_keys | test_keys) == 7828  # the README's orbit count
    assert 0.15 < spec.num_test / 29791 < 0.25
    assert len(test_keys) == round(0.2 * 7828)


def test_random_split_shares_orbits_so_grouped_matters(kiri):
    train_keys = set(kirigami.orbit_keys(_bits(kiri.x_train)).tolist())
    test_keys = set(kirigami.orbit_keys(_bits(kiri.x_test)).tolist())
    assert len(train_keys & test_keys) > 1000


def _bits(x: np.ndarray) -> np.ndarray:
    return (x[:, 5::10, 8::16, 0] > 0.5).reshape(len(x), 15).astype(np.int64)


def test_orbit_keys_identify_mirror_images():
    p = np.array([[1, 0, 0, 1, 1], [0, 1, 0, 1, 1], [1, 1, 0, 1, 0]])
    mirrors = np.stack([p, p[::-1], p[:, ::-1], p[::-1, ::-1]])
    keys = kirigami.orbit_keys(mirrors)
    assert len(set(keys.tolist())) == 1
    assert keys[0] == min(int("".join(map(str, m.ravel())), 2) for m in mirrors)
    other = p.copy()
    other[0, 0] = 0
    assert kirigami.orbit_keys(other[None])[0] != keys[0]


# ----------------------------------------------------------------------------- pipelines


def test_search_halves_disjoint_cover_train_and_skip_test(kiri):
    spec, batch = kiri.spec, 512
    w_ds, a_ds = data.search_datasets(kiri, batch, seed=3)
    w_ids, a_ids = epoch_ids(w_ds, spec), epoch_ids(a_ds, spec)
    n = spec.num_train
    assert len(w_ids) == (n // 2) // batch * batch and len(a_ids) == (n - n // 2) // batch * batch
    assert len(np.unique(w_ids)) == len(w_ids) and len(np.unique(a_ids)) == len(a_ids)
    assert not set(w_ids.tolist()) & set(a_ids.tolist())
    train_ids, test_ids = set(pattern_ids(kiri.x_train).tolist()), set(pattern_ids(kiri.x_test).tolist())
    assert set(w_ids.tolist()) | set(a_ids.tolist()) <= train_ids
    assert not (set(w_ids.tolist()) | set(a_ids.tolist())) & test_ids
    w_idx, a_idx = data.search_split(n, 3)
    assert np.array_equal(np.sort(np.concatenate([w_idx, a_idx])), np.arange(n))
    assert set(pattern_ids(kiri.x_train[w_idx]).tolist()) >= set(w_ids.tolist())


def test_train_dataset_covers_training_set_only(kiri):
    ids = epoch_ids(data.train_dataset(kiri, 1000, seed=1), kiri.spec)
    assert len(ids) == kiri.spec.num_train // 1000 * 1000 and len(np.unique(ids)) == len(ids)
    assert set(ids.tolist()) <= set(pattern_ids(kiri.x_train).tolist())


def test_regression_targets_are_standardised(kiri):
    w_ds, a_ds = data.search_datasets(kiri, 256, seed=0)
    x, y = next(iter(w_ds))
    assert x.shape == (256, 30, 80, 1) and y.shape == (256, 1) and y.dtype == tf.float32
    ys = np.concatenate([y.numpy() for _, y in w_ds] + [y.numpy() for _, y in a_ds])
    assert abs(ys.mean()) < 0.05 and ys.std() == pytest.approx(1.0, abs=0.05)
    full = data.standardize_targets(kiri.y_train, kiri.spec)
    assert abs(full.mean()) < 1e-4 and full.std() == pytest.approx(1.0, abs=1e-4)
    back = data.destandardize_targets(tf.constant(full), kiri.spec).numpy()
    assert np.allclose(back, kiri.y_train, atol=1e-5)
    eval_y = np.concatenate([y.numpy() for _, y in data.eval_dataset(kiri, 4096)])
    assert np.allclose(eval_y, data.standardize_targets(kiri.y_test, kiri.spec))


def test_same_seed_same_batches_different_seed_different_order(fashion_small):
    assert fashion_small.spec.augment == "crop_flip"
    first = data.train_dataset(fashion_small, 128, seed=5, cutout=8)
    second = data.train_dataset(fashion_small, 128, seed=5, cutout=8)
    epoch1, epoch2 = batches(first), batches(first)
    assert same_batches(epoch1, batches(second))
    assert same_batches(epoch2, batches(second))  # epoch 2 is reproducible too...
    assert not same_batches(epoch1, epoch2)  # ...and reshuffled
    assert not np.array_equal(np.concatenate([y for _, y in epoch1]), np.concatenate([y for _, y in epoch2]))
    other = batches(data.train_dataset(fashion_small, 128, seed=6, cutout=8))
    assert not np.array_equal(other[0][1], epoch1[0][1])
    w1, a1 = data.search_datasets(fashion_small, 100, seed=11)
    w2, a2 = data.search_datasets(fashion_small, 100, seed=11)
    assert same_batches(batches(w1), batches(w2)) and same_batches(batches(a1), batches(a2))
    w3, _ = data.search_datasets(fashion_small, 100, seed=12)
    assert not np.array_equal(batches(w3)[0][1], batches(w1)[0][1])


def test_augmentation_is_redrawn_each_epoch_but_reproducible(fashion_small):
    same = np.repeat(fashion_small.x_train[:1], 64, axis=0)  # identical inputs: order cannot matter
    copies = dataclasses.replace(fashion_small, x_train=same, y_train=fashion_small.y_train[:64],
                                 spec=dataclasses.replace(fashion_small.spec, num_train=64))
    ds = data.train_dataset(copies, 64, seed=9, cutout=8)
    first, second = batches(ds)[0][0], batches(ds)[0][0]
    assert not np.array_equal(first, second)
    assert np.array_equal(first, batches(data.train_dataset(copies, 64, seed=9, cutout=8))[0][0])
    assert len({image.tobytes() for image in first}) > 32  # per-example randomness within a batch


def test_search_batches_have_fixed_shapes_and_types(fashion_small):
    w_ds, a_ds = data.search_datasets(fashion_small, 64, seed=0)
    for ds in (w_ds, a_ds):
        x_spec, y_spec = ds.element_spec
        assert x_spec.shape == (64, 28, 28, 1) and x_spec.dtype == tf.float32
        assert y_spec.shape == (64,) and y_spec.dtype == tf.int32
    assert sum(1 for _ in w_ds) == 1000 // 64


def test_crop_flip_is_a_shifted_or_mirrored_copy(fashion_small):
    tiny = dataclasses.replace(fashion_small, x_train=fashion_small.x_train[:32],
                               y_train=fashion_small.y_train[:32],
                               spec=dataclasses.replace(fashion_small.spec, num_train=32))
    x, _ = next(iter(data.train_dataset(tiny, 16, seed=2)))
    normed = data.normalize_inputs(tf.constant(tiny.x_train), tiny.spec).numpy()
    padded = np.pad(normed, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
    assert all(_is_crop(image, padded) for image in x.numpy())
    assert not all(any(np.array_equal(image, n) for n in normed) for image in x.numpy())


def _is_crop(image: np.ndarray, padded: np.ndarray) -> bool:
    """True when `image` equals some 28x28 window of a padded image, possibly mirrored."""
    for dy in range(9):
        for dx in range(9):
            windows = padded[:, dy:dy + 28, dx:dx + 28]
            for candidate in (image, image[:, ::-1]):
                if (windows == candidate).all(axis=(1, 2, 3)).any():
                    return True
    return False


def test_cutout_zeroes_one_clipped_square(fashion):
    plain = dataclasses.replace(fashion, spec=dataclasses.replace(fashion.spec, augment="none"))
    x, _ = next(iter(data.train_dataset(plain, 64, seed=0, cutout=8)))
    zero = x.numpy()[..., 0] == 0.0  # normalised pixels are never exactly 0 (mean is not an integer)
    for mask in zero:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        assert 4 <= len(rows) <= 8 and 4 <= len(cols) <= 8
        assert mask.sum() == len(rows) * len(cols)
        assert mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()


def test_batch_size_larger_than_half_fails(fashion_small):
    with pytest.raises(DataError, match="batch_size=1500"):
        data.search_datasets(fashion_small, 1500, seed=0)


# ----------------------------------------------------------------------------- save / load / fingerprint


def test_save_load_round_trip(tmp_path, kiri, fashion_small):
    for prepared, name in ((kiri, "k"), (fashion_small, "f")):
        folder = str(tmp_path / name)
        data.save_prepared(prepared, folder)
        loaded = data.load_prepared(folder)
        assert loaded.spec == prepared.spec
        for key in ("x_train", "y_train", "x_test", "y_test"):
            assert getattr(loaded, key).dtype == getattr(prepared, key).dtype
            assert np.array_equal(getattr(loaded, key), getattr(prepared, key))
    assert os.path.getsize(tmp_path / "k" / contract.ARRAYS_FILE) < kiri.x_train.nbytes / 2  # packed uint8


def test_load_prepared_missing_or_corrupt(tmp_path, fashion_small):
    with pytest.raises(DataError, match="spec.json is missing"):
        data.load_prepared(str(tmp_path / "nothing"))
    folder = str(tmp_path / "f")
    data.save_prepared(fashion_small, folder)
    with open(os.path.join(folder, contract.ARRAYS_FILE), "r+b") as f:
        f.truncate(1000)
    with pytest.raises(DataError, match="arrays.npz is corrupt"):
        data.load_prepared(folder)
    with open(os.path.join(folder, contract.SPEC_FILE), "w") as f:
        f.write("{not json")
    with pytest.raises(DataError, match="spec.json is corrupt"):
        data.load_prepared(folder)


def test_fingerprint_tracks_split_spec_and_file_content(tmp_path, kiri, kiri_grouped):
    assert kiri.spec.fingerprint != kiri_grouped.spec.fingerprint
    lines = real_lines(60)
    path = write_table(tmp_path, lines)
    base = DataConfig(name="graphene_kirigami", data_dir=path)
    prints = {data.prepare(base).spec.fingerprint}
    assert data.prepare(base).spec.fingerprint in prints  # deterministic
    for change in ({"test_fraction": 0.3}, {"seed": 3}, {"target": "toughness"}, {"max_train": 10}):
        prints.add(data.prepare(dataclasses.replace(base, **change)).spec.fingerprint)
    changed = write_table(tmp_path, lines[:-1] + [lines[-1].replace(".", "9", 1)], "changed.dat")
    prints.add(data.prepare(dataclasses.replace(base, data_dir=changed)).spec.fingerprint)
    assert len(prints) == 6


BUILT_IN_FINGERPRINTS = {  # (spec, source) as recorded by earlier releases: cached runs stay valid
    "fashion_mnist": ("255d49c5f0b07422b963f7aedb35b6a53db28eb197dddb86a00c5e32da62cb41",
                      "c907819fec4555da47df315d102e836dd186dacd6bd4a55ff2f31fbb1a8ba8f0"),
    "graphene_kirigami": ("b4788c52fb5ef32f080a9fe0af56affedae6161a2f5eee251b317fc53fdab7ce",
                          "e0140eb4aa63a24774c7c41d032075bf0199629f94543fd9e0cf434b7ec11663"),
}


def test_built_in_fingerprints_do_not_change(fashion, kiri, tmp_path):
    for prepared, folder in ((fashion, FASHION_DIR), (kiri, KIRIGAMI_DIR)):
        cfg = DataConfig(name=prepared.spec.name, data_dir=folder)
        assert (prepared.spec.fingerprint, data.source_fingerprint(cfg)) == BUILT_IN_FINGERPRINTS[cfg.name]
    (tmp_path / "b.bin").write_bytes(b"second")
    (tmp_path / "a.bin").write_bytes(b"first")  # files named by base name, as for IDX and .npz files
    assert sources.hash_files([str(tmp_path / "b.bin"), str(tmp_path / "a.bin")]) == \
        "92226bf965b0e1889beaac1dc748d5a3f4d78f55dbccc7fc0c77757bd55d6b26"


def test_spec_json_round_trip(kiri):
    spec = kiri.spec
    assert data.DataSpec.from_dict(spec.to_dict()) == spec
    assert len(spec.fingerprint) == 64 and int(spec.fingerprint, 16) >= 0


# ----------------------------------------------------------------------------- local npz


def test_npz_classification_and_regression(tmp_path, fashion_small):
    path = str(tmp_path / "c.npz")
    np.savez(path, x_train=fashion_small.x_train[..., 0], y_train=fashion_small.y_train.astype(np.uint8),
             x_test=fashion_small.x_test, y_test=fashion_small.y_test)
    loaded = data.prepare(DataConfig(name="npz", data_dir=path))
    assert loaded.spec.task.kind == "classification" and loaded.spec.task.num_outputs == 10
    assert loaded.x_train.shape == (2000, 28, 28, 1) and loaded.spec.augment == "none"
    path = str(tmp_path / "r.npz")
    np.savez(path, x=np.arange(400, dtype=np.float32).reshape(25, 4, 4), y=np.linspace(0, 1, 25))
    loaded = data.prepare(DataConfig(name="npz", data_dir=path))
    assert loaded.spec.task.kind == "regression" and loaded.y_train.shape == (20, 1)
    assert loaded.spec.num_test == 5 and loaded.spec.split["mode"] == "random"


def test_npz_missing_arrays_fail(tmp_path):
    path = str(tmp_path / "bad.npz")
    np.savez(path, images=np.zeros((3, 2, 2)))
    with pytest.raises(DataError, match=r"bad\.npz: needs arrays x_train"):
        data.prepare(DataConfig(name="npz", data_dir=path))


# ----------------------------------------------------------------------------- errors


def test_truncated_gz_idx_names_file(tmp_path):
    good = open(os.path.join(FASHION_DIR, "train-labels-idx1-ubyte.gz"), "rb").read()
    folder = idx_folder(tmp_path, train_labels=good[:len(good) // 2])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: compressed file is truncated"):
        data.prepare(DataConfig(name="idx", data_dir=folder))


def test_truncated_raw_idx_names_file(tmp_path):
    raw = gzip.decompress(open(os.path.join(FASHION_DIR, "t10k-labels-idx1-ubyte.gz"), "rb").read())
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(raw[:-10])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: 9998 bytes .* needs 10008"):
        sources.read_idx(str(path))
    path.write_bytes(b"\x00\x00\x07\x01" + raw[4:])
    with pytest.raises(DataError, match="not an IDX file"):
        sources.read_idx(str(path))


def test_mismatched_image_label_counts(tmp_path):
    folder = idx_folder(tmp_path, train_images=os.path.join(FASHION_DIR, "t10k-images-idx3-ubyte.gz"))
    with pytest.raises(DataError, match="has 10000 images but .*train-labels.* has 60000 labels"):
        data.prepare(DataConfig(name="fashion_mnist", data_dir=folder))


def test_missing_idx_file(tmp_path):
    folder = tmp_path / "partial"
    folder.mkdir()
    shutil.copy(os.path.join(FASHION_DIR, "t10k-labels-idx1-ubyte.gz"), folder)
    with pytest.raises(DataError, match="no train-images-idx"):
        data.prepare(DataConfig(name="idx", data_dir=str(folder)))


def test_kirigami_wrong_column_count_names_line(tmp_path):
    lines = real_lines(10)
    lines[6] = " ".join(lines[6].split()[:-1]) + "\n"
    path = write_table(tmp_path, lines)  # one header line, so data line 7 is file line 8
    with pytest.raises(DataError, match=r"table\.dat:8: 17 columns, expected 18"):
        data.prepare(DataConfig(name="graphene_kirigami", data_dir=path))


def test_kirigami_nan_target_fails(tmp_path):
    lines = real_lines(10)
    parts = lines[2].split()
    lines[2] = " ".join(parts[:15] + ["nan"] + parts[16:]) + "\n"
    path = write_table(tmp_path, lines)
    with pytest.raises(DataError, match=r"table\.dat:4: NaN"):
        data.prepare(DataConfig(name="graphene_kirigami", data_dir=path))


def test_kirigami_settings_errors(tmp_path):
    path = write_table(tmp_path, real_lines(20))
    with pytest.raises(DataError, match="yield_strain, toughness, yield_stress"):
        data.prepare(DataConfig(name="graphene_kirigami", data_dir=path, target="modulus"))
    with pytest.raises(DataError, match="crop_flip would change"):
        data.prepare(DataConfig(name="graphene_kirigami", data_dir=path, augment="crop_flip"))
    with pytest.raises(DataError, match="data.data_dir=PATH"):
        data.prepare(DataConfig(name="graphene_kirigami"))


def test_grouped_split_needs_kirigami():
    with pytest.raises(DataError, match="split=grouped"):
        data.prepare(DataConfig(name="fashion_mnist", data_dir=FASHION_DIR, split="grouped"))


def test_check_source_refuses_what_prepare_cannot_read(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "images" / name).mkdir(parents=True)
        (tmp_path / "images" / name / "0.png").write_bytes(b"")
    cfg = DataConfig(name="idx", data_dir=str(tmp_path / "images"))  # idx reads IDX files only
    with pytest.raises(DataError, match="no train-images-idx"):
        data.check_source(cfg)
    npz = tmp_path / "x.npz"
    np.savez(npz, x=np.zeros((2, 2, 2)), y=np.arange(2))
    with pytest.raises(DataError, match=r"data.name=idx needs a folder of IDX files .* data.name=npz"):
        data.check_source(dataclasses.replace(cfg, data_dir=str(npz)))


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(DataError, match="unknown dataset 'no_such_set'") as err:
        data.prepare(DataConfig(name="no_such_set"))
    for name in data.KNOWN_DATASETS:
        assert name in str(err.value)


def test_tfds_unavailable_offline_fails_fast_with_hint(tmp_path):
    start = time.monotonic()
    with pytest.raises(DataError, match=r"'cifar10' is not prepared.*data\.data_dir=PATH"):
        data.prepare(DataConfig(name="cifar10", download=False, tfds_dir=str(tmp_path)))
    assert time.monotonic() - start < 15


def test_tfds_loader_with_mocked_tfds(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(sources, "tfds_reachable", lambda *a, **k: True)  # the mock downloads nothing
    with tfds.testing.mock_data(num_examples=30):  # download_and_prepare is a no-op, examples are random
        digits = data.prepare(DataConfig(name="mnist", tfds_dir=str(tmp_path)))
        colour = data.prepare(DataConfig(name="cifar10", tfds_dir=str(tmp_path)))
    assert digits.spec.source.startswith("tfds:mnist:") and digits.x_train.shape[1:] == (28, 28, 1)
    assert digits.spec.task.num_outputs == 10 and digits.spec.augment == "none"
    assert digits.x_train.dtype == np.uint8 and digits.y_train.dtype == np.int64
    assert colour.spec.augment == "crop_flip" and colour.x_train.shape[1:] == (32, 32, 3)
    assert digits.spec.num_train + digits.spec.num_test == 30


def test_an_offline_tfds_name_fails_in_seconds(tmp_path):
    if sources.tfds_reachable():
        pytest.skip("the TFDS download server is reachable from here; nothing offline to test")
    started = time.time()
    with pytest.raises(DataError, match=r"cannot be reached.*data\.data_dir=PATH"):
        sources.load_tfds("mnist", str(tmp_path / "tfds"), download=True)
    assert time.time() - started < 30
