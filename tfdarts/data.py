"""Datasets for search and training: loading, splitting, statistics and tf.data pipelines.

`prepare` turns a `DataConfig` into `PreparedData` (raw arrays plus a JSON-able
`DataSpec`); `search_datasets`, `train_dataset` and `eval_dataset` build
deterministic ``tf.data`` pipelines from it.

Sources (``DataConfig.name`` / ``DataConfig.data_dir``):

* ``fashion_mnist``, ``mnist``, ``cifar10``, ``cifar100``, ``svhn_cropped`` or any
  TFDS image-classification dataset name (``image``/``label`` features), with
  ``data_dir=""``: TensorFlow Datasets (``fashion_mnist`` first tries Debian's
  `sources.DEBIAN_FASHION_MNIST`). Offline, a missing TFDS dataset fails fast
  with a hint to use local files. Set ``data.download=false`` to never download.
* ``idx`` (or any name) with ``data_dir=FOLDER``: MNIST-style IDX files
  ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
  ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``.
* ``npz`` (or any name) with ``data_dir=FILE.npz``: arrays ``x_train, y_train,
  x_test, y_test`` (or ``x, y``, split with ``test_fraction``); integer ``y`` is
  classification, float ``y`` regression.
* ``graphene_kirigami`` with ``data_dir`` = folder of ``alldata_15G.dat``:
  30x80x1 rendered cut patterns regressed on ``target``; ``split`` is ``random``
  or ``grouped`` (whole mirror orbits on one side).

Determinism: shuffles and augmentation draw from ``tf.data`` ops seeded with
values derived from the ``seed`` argument (plus the TF global seed, if a caller
set one), and augmentation uses stateless random ops keyed per batch, so the
same seed gives identical batches, epoch after epoch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from typing import Any, Dict, Mapping, Tuple, Union

import numpy as np
import tensorflow as tf

from tfdarts import kirigami, layouts, sources
from tfdarts.config import DataConfig, validate_data
from tfdarts.contract import ARRAYS_FILE, KNOWN_DATASETS, SPEC_FILE, TFDS_DATASETS
from tfdarts.fileio import atomic_open, write_json
from tfdarts.sources import DataError
from tfdarts.task import CLASSIFICATION, REGRESSION, Task

__all__ = ["DataError", "KNOWN_DATASETS", "DataSpec", "PreparedData", "prepare", "save_prepared",
           "load_prepared", "normalize_inputs", "standardize_targets", "destandardize_targets",
           "source_fingerprint", "check_source", "search_split", "search_datasets", "probe_dataset", "train_dataset", "eval_dataset"]

log = logging.getLogger(__name__)

CROP_PAD = 4
_NATURAL_IMAGES = ("cifar10", "cifar100")
_ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")

ArrayLike = Union[np.ndarray, tf.Tensor]


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Plain-JSON description of prepared data.

    Attributes:
        name: Dataset name from the config.
        task: Input shape and output kind.
        fingerprint: Sha256 hex of the source content (file hashes or TFDS
            name+version), the split spec and, for image folders and manifests,
            the settings that shaped the arrays (image size, colour, columns).
        source: Human-readable origin: a path or ``tfds:NAME:VERSION``.
        mean: Per-channel training-set mean, raw input units, ``(C,)``.
        std: Per-channel training-set standard deviation (1.0 where constant), ``(C,)``.
        target_mean: Per-target training mean, ``(K,)``; empty for classification.
        target_std: Per-target training std, ``(K,)``; empty for classification.
        augment: ``"crop_flip"`` or ``"none"``.
        num_train: Training examples.
        num_test: Test examples.
        split: How train/test were formed (mode, seed, test_fraction, max_train, ...).
    """

    name: str
    task: Task
    fingerprint: str
    source: str
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    target_mean: Tuple[float, ...]
    target_std: Tuple[float, ...]
    augment: str
    num_train: int
    num_test: int
    split: Dict[str, Any]

    def to_dict(self) -> Dict[str, Any]:
        """Plain-JSON form (tuples become lists)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["task"] = self.task.to_dict()
        for key in ("mean", "std", "target_mean", "target_std"):
            out[key] = list(out[key])
        out["split"] = dict(self.split)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DataSpec":
        """Inverse of `to_dict()`."""
        fields = dict(data)
        fields["task"] = Task.from_dict(fields["task"])
        for key in ("mean", "std", "target_mean", "target_std"):
            fields[key] = tuple(float(v) for v in fields[key])
        fields["num_train"], fields["num_test"] = int(fields["num_train"]), int(fields["num_test"])
        fields["split"] = dict(fields["split"])
        return cls(**fields)


@dataclasses.dataclass
class PreparedData:
    """Split, validated arrays plus their spec.

    Attributes:
        spec: Metadata and statistics.
        x_train: ``(N, H, W, C)`` raw inputs (uint8 images; float32 0/1 for kirigami).
        y_train: ``(N,)`` int64 labels or ``(N, K)`` float32 raw targets.
        x_test: ``(M, H, W, C)`` raw inputs.
        y_test: ``(M,)`` int64 labels or ``(M, K)`` float32 raw targets.
    """

    spec: DataSpec
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


# ----------------------------------------------------------------------------- prepare


def prepare(cfg: DataConfig) -> PreparedData:
    """Loads, validates and splits the data described by `cfg`.

    Args:
        cfg: Data settings.

    Returns:
        `PreparedData` with raw arrays, training-set statistics and a fingerprint.

    Raises:
        DataError: Unknown dataset, unreadable/corrupt files, bad settings.
    """
    validate_data(cfg)
    raw = _load_source(cfg)
    arrays, split = _split(raw, cfg)
    arrays = _limit(arrays, cfg)
    task = _make_task(raw, arrays)
    spec = _make_spec(cfg, raw, task, arrays, split)
    return PreparedData(spec, *arrays)


def source_fingerprint(cfg: DataConfig) -> str:
    """Sha256 of the local source files' contents (what `prepare` will read), or "".

    Hashes every regular file under ``cfg.data_dir`` (a file or a folder, relative
    paths and contents, in sorted order), so an edit of any byte changes it; a
    ``.csv`` manifest hashes itself and every file it lists (named relative to its
    folder, so moving a file changes it too). With
    no ``data_dir`` (TFDS, or Debian's Fashion-MNIST folder) it hashes Debian's
    folder when `prepare` would read it, and is "" otherwise.
    """
    path = os.path.expanduser(cfg.data_dir) or (
        sources.DEBIAN_FASHION_MNIST if cfg.name == "fashion_mnist" else "")
    if not path or not os.path.exists(path):
        return ""
    if os.path.isfile(path) and path.lower().endswith(".csv"):  # the manifest and every file it lists
        try:
            files = layouts.check_manifest(path, cfg)[1]
        except DataError:
            files = []  # prepare reports the bad line
        return layouts.manifest_hash(path, files)
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(root, name) for root, _, names in os.walk(path) for name in names)
    h = hashlib.sha256()
    for file in files:
        h.update(os.path.relpath(file, path).encode())
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def check_source(cfg: DataConfig) -> None:
    """Cheap up-front check that `prepare` can find its local source files.

    Finds the kirigami table, the four IDX files, the ``.npz`` file or a
    `tfdarts.layouts` layout, and checks a manifest's columns and listed files
    (decoding no data), so a run can refuse bad paths before it writes anything.

    Raises:
        DataError: The files are missing or of the wrong kind; the message says what to give.
    """
    validate_data(cfg)
    if cfg.name == "graphene_kirigami":
        kirigami.find_table(cfg.data_dir)
    elif cfg.data_dir:
        path = os.path.expanduser(cfg.data_dir)
        kind = _local_kind(cfg, path)
        if kind == "idx":
            sources.find_idx_files(path)
        elif kind == "manifest":
            layouts.check_manifest(path, cfg)
    elif cfg.name in ("idx", "npz"):
        _load_source(cfg)  # raises: these need data.data_dir


def _load_source(cfg: DataConfig) -> sources.Raw:
    """Dispatches to the loader for `cfg.name` / `cfg.data_dir`."""
    if cfg.name == "graphene_kirigami":
        return kirigami.load(cfg.data_dir, cfg.target)
    if cfg.data_dir:
        return _load_local(cfg, os.path.expanduser(cfg.data_dir))
    if cfg.name in ("idx", "npz"):
        raise DataError(f"data.name={cfg.name} needs data.data_dir=PATH "
                        f"({'a folder of IDX files' if cfg.name == 'idx' else 'an .npz file'})")
    if cfg.name == "fashion_mnist" and os.path.isdir(sources.DEBIAN_FASHION_MNIST):
        return sources.load_idx_folder(sources.DEBIAN_FASHION_MNIST, cfg.name)
    if cfg.name not in TFDS_DATASETS and _tfds_base(cfg.name) not in sources.tfds_builder_names():
        raise DataError(f"unknown dataset {cfg.name!r}; known: {', '.join(KNOWN_DATASETS)}, any TFDS "
                        "image-classification name, or data.data_dir=PATH to IDX files / an .npz")
    return sources.load_tfds(cfg.name, os.path.expanduser(cfg.tfds_dir), cfg.download)


def _tfds_base(name: str) -> str:
    """``"cifar10/config:3.0.2"`` -> ``"cifar10"``."""
    return name.split(":")[0].split("/")[0]


def _load_local(cfg: DataConfig, path: str) -> sources.Raw:
    """Loads an IDX folder, an ``.npz`` file or a `tfdarts.layouts` layout."""
    kind = _local_kind(cfg, path)
    if kind == "idx":
        return sources.load_idx_folder(path, cfg.name)
    if kind == "npz":
        return sources.load_npz(path, cfg.name)
    return layouts.load(path, cfg, kind)


def _local_kind(cfg: DataConfig, path: str) -> str:
    """What `_load_local` reads at `path`: ``"idx"``, ``"npz"`` or a `layouts.detect` layout.

    Raises:
        DataError: Nothing there that data.name can read; the message says what to give.
    """
    name = cfg.name
    if not os.path.exists(path):
        raise DataError(f"data.data_dir={path} does not exist; point it at a folder of IDX files, "
                        "an .npz file, a .csv manifest, x.npy/y.npy or an image folder")
    if os.path.isdir(path):
        if name == "npz":
            raise DataError(f"data.name=npz but data.data_dir={path} is a folder; give the .npz file")
        return (name != "idx" and layouts.detect(path)) or "idx"
    if path.lower().endswith(".csv"):
        if name in ("idx", "npz"):
            raise DataError(f"data.name={name} cannot read the .csv manifest {path}; set data.name to a "
                            "name of your own (e.g. data.name=my_data) to load it as a manifest, or "
                            f"give {'a folder of IDX files' if name == 'idx' else 'an .npz file'}")
        return "manifest"
    if name == "idx":
        raise DataError(f"data.name=idx needs a folder of IDX files but data.data_dir={path} is a "
                        "file; give the folder (or use data.name=npz for an .npz file)")
    if not path.endswith(".npz"):
        raise DataError(f"data.data_dir={path} is a file; give a folder of IDX files, an .npz file "
                        "or a .csv manifest")
    return "npz"


def derive_seed(seed: int, tag: str) -> int:
    """A 31-bit seed derived from `seed` and a purpose `tag` (independent streams)."""
    digest = hashlib.sha256(f"{int(seed)}:{tag}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of a training pipeline built for 0-based `epoch` (`seed` itself for epoch 0).

    A pipeline built this way and iterated once gives the same batches whether
    the job ran uninterrupted or was resumed at `epoch`.
    """
    return int(seed) if epoch == 0 else derive_seed(seed, f"epoch{epoch}")


Arrays = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _split(raw: sources.Raw, cfg: DataConfig) -> Tuple[Arrays, Dict[str, Any]]:
    """Keeps a source's own test split, or makes one (random or grouped)."""
    split: Dict[str, Any] = {"mode": "given", "max_train": cfg.max_train, "max_test": cfg.max_test}
    if cfg.name == "graphene_kirigami":
        split["target"] = cfg.target
    if raw.x_test is not None:
        if cfg.split == "grouped":
            raise DataError(f"data.split=grouped needs a source without its own test split "
                            f"(graphene_kirigami); {cfg.name} has one, use data.split=random")
        return (raw.x_train, raw.y_train, raw.x_test, raw.y_test), _with_seed(split, cfg)
    split.update(mode=cfg.split, seed=cfg.seed, test_fraction=cfg.test_fraction)
    test = holdout_mask(raw, cfg)
    arrays = (raw.x_train[~test], raw.y_train[~test], raw.x_train[test], raw.y_train[test])
    return arrays, split


def _with_seed(split: Dict[str, Any], cfg: DataConfig) -> Dict[str, Any]:
    """Adds the seed to a given-split spec when subsetting makes it matter."""
    if cfg.max_train or cfg.max_test:
        split["seed"] = cfg.seed
    return split


def holdout_mask(raw: sources.Raw, cfg: DataConfig) -> np.ndarray:
    """Test membership of a source without its own test split.

    Args:
        raw: The whole pool, ``x_train (N, ...)``; ``groups (N,)`` for a grouped split.
        cfg: `split`, `test_fraction` and `seed` decide the split.

    Returns:
        ``(N,)`` bool, True for the test examples.
    """
    n = len(raw.x_train)
    rng = np.random.default_rng(derive_seed(cfg.seed, f"split:{cfg.split}"))
    if cfg.split == "random":
        mask = np.zeros(n, bool)
        mask[rng.permutation(n)[:int(round(cfg.test_fraction * n))]] = True
    else:
        if raw.groups is None:
            raise DataError(f"data.split=grouped is only defined for graphene_kirigami, not "
                            f"{cfg.name}; use data.split=random")
        keys = np.unique(raw.groups)
        chosen = rng.permutation(keys)[:int(round(cfg.test_fraction * len(keys)))]
        mask = np.isin(raw.groups, chosen)
    if mask.all() or not mask.any():
        raise DataError(f"{cfg.name}: data.test_fraction={cfg.test_fraction} leaves an empty "
                        f"train or test set from {n} examples; choose a value nearer 0.2")
    return mask


def subset_indices(y: np.ndarray, keep: int, seed: int) -> np.ndarray:
    """Deterministic subset of `keep` rows, class-balanced for integer labels.

    Classification interleaves classes round-robin over a seeded permutation,
    so any ``keep >= num_classes`` contains every class.

    Args:
        y: ``(N,)`` labels or ``(N, K)`` targets.
        keep: Rows to keep; 0 or ``>= N`` keeps all.
        seed: Permutation seed.

    Returns:
        Sorted ``(min(keep, N),)`` int64 row indices.
    """
    n = len(y)
    if keep <= 0 or keep >= n:
        return np.arange(n)
    perm = np.random.default_rng(seed).permutation(n)
    if y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
        labels = y[perm]
        order = np.argsort(labels, kind="stable")
        starts = np.searchsorted(labels[order], labels[order])
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n) - starts
        perm = perm[np.lexsort((np.arange(n), rank))]
    return np.sort(perm[:keep])


def _limit(arrays: Arrays, cfg: DataConfig) -> Arrays:
    """Applies ``max_train`` / ``max_test`` subsets (logged, never silent)."""
    x_tr, y_tr, x_te, y_te = arrays
    tr = subset_indices(y_tr, cfg.max_train, derive_seed(cfg.seed, "max_train"))
    te = subset_indices(y_te, cfg.max_test, derive_seed(cfg.seed, "max_test"))
    if len(tr) < len(y_tr) or len(te) < len(y_te):
        log.info("%s: keeping %d of %d training and %d of %d test examples (max_train=%d, max_test=%d)",
                 cfg.name, len(tr), len(y_tr), len(te), len(y_te), cfg.max_train, cfg.max_test)
        return x_tr[tr], y_tr[tr], x_te[te], y_te[te]
    return arrays


def _make_task(raw: sources.Raw, arrays: Arrays) -> Task:
    """Derives the `Task` from the split arrays."""
    x_tr, y_tr, x_te, y_te = arrays
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(f"{raw.source}: train inputs are {x_tr.shape[1:]} but test inputs "
                        f"{x_te.shape[1:]}; both splits need the same shape")
    if not np.issubdtype(y_tr.dtype, np.integer):
        return Task(x_tr.shape[1:], y_tr.shape[1], REGRESSION, raw.output_names)
    num = _num_classes(raw, y_tr, y_te)
    return Task(x_tr.shape[1:], num, CLASSIFICATION, raw.output_names if raw.output_names else ())


def _num_classes(raw: sources.Raw, y_train: np.ndarray, y_test: np.ndarray) -> int:
    """Number of classes, checking that labels are in ``0..K-1`` with ``K >= 2``."""
    if y_train.ndim != 1:
        raise DataError(f"{raw.source}: integer labels must be (N,), got {y_train.shape}")
    low, high = min(y_train.min(), y_test.min()), max(y_train.max(), y_test.max())
    num = len(raw.output_names) or int(high) + 1
    if low < 0 or high >= num or num < 2:
        raise DataError(f"{raw.source}: labels span {low}..{high}; classification needs labels "
                        f"0..K-1 with K >= 2{f' (K={num})' if raw.output_names else ''}")
    return num


def _make_spec(cfg: DataConfig, raw: sources.Raw, task: Task, arrays: Arrays,
               split: Dict[str, Any]) -> DataSpec:
    """Computes statistics and the fingerprint."""
    x_tr, y_tr, x_te, _ = arrays
    mean, std = channel_stats(x_tr)
    t_mean, t_std = ((), ()) if task.is_classification else _target_stats(y_tr)
    identity: Dict[str, Any] = {"content": raw.content_id, "split": split}
    if raw.layout:  # built-in sources have none: their fingerprints stay as they were
        identity["layout"] = raw.layout
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return DataSpec(cfg.name, task, fingerprint, raw.source, mean, std, t_mean, t_std,
                    _resolve_augment(cfg, raw, task), len(x_tr), len(x_te), split)


def _resolve_augment(cfg: DataConfig, raw: sources.Raw, task: Task) -> str:
    """Maps ``auto`` to ``crop_flip`` for natural colour images, else ``none``."""
    if cfg.name == "graphene_kirigami" and cfg.augment == "crop_flip":
        raise DataError("data.augment=crop_flip would change kirigami cut patterns (and their "
                        "targets); use data.augment=auto or none")
    if cfg.augment != "auto":
        return cfg.augment
    natural = cfg.name in _NATURAL_IMAGES or (
        raw.from_tfds and cfg.name not in TFDS_DATASETS and task.input_shape[2] >= 3)
    return "crop_flip" if natural else "none"


def channel_stats(x: np.ndarray, chunk: int = 2048) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel mean and std of ``(N, H, W, C)`` inputs, in float64, chunked.

    Returns:
        ``(mean (C,), std (C,))``; a constant channel gets std 1.0.
    """
    channels = x.shape[-1]
    total, squares = np.zeros(channels), np.zeros(channels)
    for start in range(0, len(x), chunk):
        block = x[start:start + chunk].reshape(-1, channels).astype(np.float64)
        total += block.sum(axis=0)
        squares += (block * block).sum(axis=0)
    count = float(np.prod(x.shape[:3]))
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
    return tuple(mean.tolist()), tuple(np.where(std > 1e-8, std, 1.0).tolist())


def _target_stats(y: np.ndarray) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-target mean and std (1.0 where constant) of ``(N, K)`` targets."""
    y64 = y.astype(np.float64)
    std = y64.std(axis=0)
    return tuple(y64.mean(axis=0).tolist()), tuple(np.where(std > 1e-12, std, 1.0).tolist())


# ----------------------------------------------------------------------------- save / load


def save_prepared(data: PreparedData, folder: str) -> None:
    """Atomically writes ``arrays.npz`` then ``spec.json`` into `folder`.

    Float inputs that are exactly integers in 0..255 (kirigami's 0/1 images) are
    stored as uint8 and restored to their dtype by `load_prepared`.
    """
    arrays: Dict[str, np.ndarray] = {}
    for key in _ARRAY_KEYS:
        value = getattr(data, key)
        if key.startswith("x") and _fits_uint8(value):
            arrays[key + "_dtype"] = np.array(value.dtype.str)
            value = value.astype(np.uint8)
        arrays[key] = value
    with atomic_open(os.path.join(folder, ARRAYS_FILE), "wb") as f:
        np.savez(f, **arrays)
    write_json(os.path.join(folder, SPEC_FILE), data.spec.to_dict())


def _fits_uint8(x: np.ndarray) -> bool:
    """True for float arrays whose values are all integers in 0..255."""
    if not np.issubdtype(x.dtype, np.floating) or x.size == 0:
        return False
    return bool(np.array_equal(x.astype(np.uint8), x))


def load_prepared(folder: str) -> PreparedData:
    """Reads what `save_prepared` wrote.

    Raises:
        DataError: Missing, unreadable or inconsistent files.
    """
    spec_path, arrays_path = os.path.join(folder, SPEC_FILE), os.path.join(folder, ARRAYS_FILE)
    for path in (spec_path, arrays_path):
        if not os.path.isfile(path):
            raise DataError(f"{path} is missing; run data preparation again (save_prepared)")
    try:
        with open(spec_path, encoding="utf-8") as f:
            spec = DataSpec.from_dict(json.load(f))
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"{spec_path} is corrupt ({type(err).__name__}: {err}); "
                        "delete the folder and prepare again") from None
    data = PreparedData(spec, *_read_arrays(arrays_path))
    _check_loaded(data, arrays_path)
    return data


def _read_arrays(path: str) -> Arrays:
    """Reads the four arrays, restoring packed input dtypes."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            out = []
            for key in _ARRAY_KEYS:
                value = npz[key]
                if key + "_dtype" in npz.files:
                    value = value.astype(np.dtype(str(npz[key + "_dtype"])))
                out.append(value)
            return tuple(out)  # type: ignore[return-value]
    except Exception as err:  # zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError
        raise DataError(f"{path} is corrupt ({type(err).__name__}: {err}); "
                        "delete the folder and prepare again") from None


def _check_loaded(data: PreparedData, path: str) -> None:
    """Checks loaded array shapes against the spec."""
    spec = data.spec
    expected = (spec.num_train, spec.num_test, tuple(spec.task.input_shape))
    actual = (len(data.x_train), len(data.x_test), data.x_train.shape[1:])
    if expected != actual or len(data.y_train) != spec.num_train or len(data.y_test) != spec.num_test:
        raise DataError(f"{path} does not match {SPEC_FILE} (spec {expected}, arrays {actual}); "
                        "delete the folder and prepare again")


# ----------------------------------------------------------------------------- transforms


def normalize_inputs(x: tf.Tensor, spec: DataSpec) -> tf.Tensor:
    """Casts to float32 and normalises with the training statistics.

    Args:
        x: ``(B, H, W, C)`` inputs in raw units, any numeric dtype.
        spec: Provides per-channel ``mean`` and ``std``.

    Returns:
        ``(B, H, W, C)`` float32 ``(x - mean) / std``.
    """
    mean = tf.constant(spec.mean, tf.float32)
    std = tf.constant(spec.std, tf.float32)
    return (tf.cast(x, tf.float32) - mean) / std


def _target_arrays(spec: DataSpec) -> Tuple[np.ndarray, np.ndarray]:
    """``(target_mean (K,), target_std (K,))`` as float32; regression only."""
    if spec.task.is_classification:
        raise DataError(f"{spec.name} is a classification task; targets are not standardised")
    return np.asarray(spec.target_mean, np.float32), np.asarray(spec.target_std, np.float32)


def standardize_targets(y: ArrayLike, spec: DataSpec) -> ArrayLike:
    """``(y - target_mean) / target_std`` for ``(N, K)`` raw targets (numpy or tf, float32)."""
    mean, std = _target_arrays(spec)
    if isinstance(y, (tf.Tensor, tf.Variable)):
        return (tf.cast(y, tf.float32) - mean) / std
    return ((np.asarray(y, np.float32) - mean) / std).astype(np.float32)


def destandardize_targets(y: ArrayLike, spec: DataSpec) -> ArrayLike:
    """Inverse of `standardize_targets`: ``y * target_std + target_mean``."""
    mean, std = _target_arrays(spec)
    if isinstance(y, (tf.Tensor, tf.Variable)):
        return tf.cast(y, tf.float32) * std + mean
    return (np.asarray(y, np.float32) * std + mean).astype(np.float32)


def _model_targets(y: np.ndarray, spec: DataSpec) -> np.ndarray:
    """Targets as fed to models: int32 ``(N,)`` labels or standardised float32 ``(N, K)``."""
    if spec.task.is_classification:
        return y.astype(np.int32)
    return standardize_targets(y, spec)


def random_crop(x: tf.Tensor, seed: tf.Tensor, pad: int = CROP_PAD) -> tf.Tensor:
    """Reflect-pads by `pad` pixels and crops back at a random offset per example.

    Args:
        x: ``(B, H, W, C)`` float32.
        seed: ``(2,)`` stateless seed.
        pad: Padding on each side (clipped to ``H - 1`` and ``W - 1``).

    Returns:
        ``(B, H, W, C)`` float32.
    """
    h, w = x.shape[1], x.shape[2]
    pad = min(pad, h - 1, w - 1)
    padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    offsets = tf.random.stateless_uniform([tf.shape(x)[0], 2], seed, 0, 2 * pad + 1, tf.int32)
    rows = offsets[:, :1] + tf.range(h)[None]
    cols = offsets[:, 1:] + tf.range(w)[None]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, cols, axis=2, batch_dims=1)


def random_flip(x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Mirrors each ``(B, H, W, C)`` example left-right with probability 1/2."""
    flip = tf.random.stateless_uniform([tf.shape(x)[0]], seed) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)


def random_cutout(x: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
    """Zeroes a ``size`` x ``size`` square (clipped at borders) at a random centre per example.

    Args:
        x: ``(B, H, W, C)`` float32 (already normalised, so 0 is the mean).
        size: Side of the square in pixels.
        seed: ``(2,)`` stateless seed.

    Returns:
        ``(B, H, W, C)`` float32.
    """
    h, w = x.shape[1], x.shape[2]
    seeds = tf.random.experimental.stateless_split(seed, 2)
    cy = tf.random.stateless_uniform([tf.shape(x)[0], 1], seeds[0], 0, h, tf.int32) - size // 2
    cx = tf.random.stateless_uniform([tf.shape(x)[0], 1], seeds[1], 0, w, tf.int32) - size // 2
    rows, cols = tf.range(h)[None], tf.range(w)[None]
    in_rows = (rows >= cy) & (rows < cy + size)
    in_cols = (cols >= cx) & (cols < cx + size)
    mask = in_rows[:, :, None, None] & in_cols[:, None, :, None]
    return tf.where(mask, tf.zeros_like(x), x)


def _augment(x: tf.Tensor, key: tf.Tensor, seed: int, augment: str, cutout_size: int) -> tf.Tensor:
    """Applies crop/flip and cutout to a normalised batch, keyed by ``(key, seed)``."""
    seeds = tf.random.experimental.stateless_split(tf.stack([key, tf.constant(seed, tf.int64)]), 3)
    if augment == "crop_flip":
        x = random_flip(random_crop(x, seeds[0]), seeds[1])
    if cutout_size > 0:
        x = random_cutout(x, cutout_size, seeds[2])
    return x


# ----------------------------------------------------------------------------- pipelines


def search_split(num_train: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Disjoint halves of ``range(num_train)`` from a seeded permutation.

    Returns:
        ``(w_train (N//2,), alpha_val (N - N//2,))`` int64 indices.
    """
    perm = np.random.default_rng(derive_seed(seed, "search_halves")).permutation(num_train)
    return perm[:num_train // 2], perm[num_train // 2:]


def _tensors(x: np.ndarray, y: np.ndarray, spec: DataSpec) -> Tuple[tf.Tensor, tf.Tensor]:
    """Normalised inputs and model targets as tensors, computed once per pipeline."""
    return normalize_inputs(tf.convert_to_tensor(x), spec), tf.convert_to_tensor(_model_targets(y, spec))


def _check_batch(batch_size: int, count: int, what: str) -> None:
    """Rejects batch sizes that would yield no full batch."""
    if batch_size < 1 or batch_size > count:
        raise DataError(f"batch_size={batch_size} does not fit the {count} {what} examples; "
                        f"use 1..{count}")


def _training_pipeline(x: tf.Tensor, y: tf.Tensor, indices: np.ndarray, batch_size: int,
                       seed: int, augment: str, cutout_size: int = 0) -> tf.data.Dataset:
    """Shuffled (reshuffled per epoch), optionally augmented batches gathered from `x`, `y`.

    Args:
        x: ``(N, H, W, C)`` normalised float32.
        y: ``(N,)`` int32 or ``(N, K)`` float32.
        indices: Rows to use.
        batch_size: Batch size; the last partial batch is dropped.
        seed: Seed for the shuffle and augmentation streams.
        augment: ``"crop_flip"`` or ``"none"``.
        cutout_size: Cutout side; 0 disables.

    Returns:
        Dataset of ``(x (B, H, W, C) float32, y)`` batches, one pass per iteration.
    """
    ds = tf.data.Dataset.from_tensor_slices(indices.astype(np.int64))
    ds = ds.shuffle(len(indices), seed=derive_seed(seed, "shuffle"), reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    if augment == "none" and cutout_size <= 0:
        ds = ds.map(lambda idx: (tf.gather(x, idx), tf.gather(y, idx)),
                    num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)
    keys = tf.data.Dataset.random(seed=derive_seed(seed, "augment"), rerandomize_each_iteration=True)
    aug_seed = derive_seed(seed, "stateless")

    def gather_augment(idx: tf.Tensor, key: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        return _augment(tf.gather(x, idx), key, aug_seed, augment, cutout_size), tf.gather(y, idx)

    ds = tf.data.Dataset.zip((ds, keys)).map(gather_augment, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def search_datasets(data: PreparedData, batch_size: int, seed: int,
                    epoch: int = 0) -> Tuple[tf.data.Dataset, tf.data.Dataset]:
    """Bilevel-search data: disjoint 50/50 halves of the training set.

    Args:
        data: Prepared data; the test split is not touched.
        batch_size: Batch size (last partial batch dropped, fixed shapes).
        seed: Seeds the halves, the per-epoch shuffles and the augmentation.
        epoch: 0-based epoch the pipeline is built for (see `epoch_seed`); the
            halves depend on `seed` only.

    Returns:
        ``(w_train, alpha_val)`` datasets of ``(x (B, H, W, C) float32 normalised,
        y)`` with ``y`` int32 ``(B,)`` or standardised float32 ``(B, K)``.
    """
    w_idx, a_idx = search_split(data.spec.num_train, seed)
    _check_batch(batch_size, len(w_idx), "search half")
    x, y = _tensors(data.x_train, data.y_train, data.spec)
    augment, stream = data.spec.augment, epoch_seed(seed, epoch)
    return (_training_pipeline(x, y, w_idx, batch_size, derive_seed(stream, "w_train"), augment),
            _training_pipeline(x, y, a_idx, batch_size, derive_seed(stream, "alpha_val"), augment))


def probe_dataset(data: PreparedData, batch_size: int, seed: int, batches: int) -> tf.data.Dataset:
    """The first `batches` batches of the alpha-validation half, in a fixed order.

    The same examples every time (no shuffle, no augmentation), so a statistic
    measured on them each epoch (e.g. the alpha-Hessian eigenvalue) is comparable
    across epochs.

    Returns:
        Dataset of ``(x (B, H, W, C), y)`` as in `search_datasets`.
    """
    _, a_idx = search_split(data.spec.num_train, seed)
    _check_batch(batch_size, len(a_idx), "search half")
    idx = np.sort(a_idx)[:batch_size * batches]
    x, y = _tensors(data.x_train[idx], data.y_train[idx], data.spec)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True)


def train_dataset(data: PreparedData, batch_size: int, seed: int, cutout: int = 0,
                  epoch: int = 0) -> tf.data.Dataset:
    """Full training set: shuffled each epoch, augmented per spec, optional cutout.

    Args:
        data: Prepared data.
        batch_size: Batch size (last partial batch dropped).
        seed: Seeds the shuffles and augmentation.
        cutout: Side of the zeroed square (after normalisation); 0 disables.
        epoch: 0-based epoch the pipeline is built for (see `epoch_seed`).

    Returns:
        Dataset of ``(x (B, H, W, C) float32, y)`` as in `search_datasets`.
    """
    _check_batch(batch_size, data.spec.num_train, "training")
    x, y = _tensors(data.x_train, data.y_train, data.spec)
    return _training_pipeline(x, y, np.arange(data.spec.num_train), batch_size,
                              derive_seed(epoch_seed(seed, epoch), "train"), data.spec.augment, int(cutout))


def eval_dataset(data: PreparedData, batch_size: int) -> tf.data.Dataset:
    """Test split in file order, no augmentation, last partial batch kept.

    Returns:
        Dataset of ``(x (B, H, W, C) float32 normalised, y)`` with ``y`` int32
        ``(B,)`` or standardised float32 ``(B, K)`` (use `destandardize_targets`
        for raw units).
    """
    if batch_size < 1:
        raise DataError(f"batch_size={batch_size}; use a positive batch size")
    x, y = _tensors(data.x_test, data.y_test, data.spec)
    ds = tf.data.Dataset.range(data.spec.num_test).batch(batch_size)
    ds = ds.map(lambda idx: (tf.gather(x, idx), tf.gather(y, idx)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)

