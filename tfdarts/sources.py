"""Raw data sources: IDX folders, ``.npz`` files and TensorFlow Datasets.

No TensorFlow at import time; ``tensorflow_datasets`` is imported lazily inside
`load_tfds`. Every loader returns a `Raw` holding numpy arrays in their stored
units (images ``(N, H, W, C)``), and raises `DataError` with a one-line message
naming the file or dataset and what to do about it.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import struct
import time
import zlib
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np


class DataError(ValueError):
    """Bad input data or data settings; the message says what to fix."""


DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
"""Where Debian's ``dataset-fashion-mnist`` package installs the IDX files."""

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
MNIST_CLASSES = tuple(str(d) for d in range(10))
CLASS_NAMES: Dict[str, Tuple[str, ...]] = {"fashion_mnist": FASHION_MNIST_CLASSES,
                                           "mnist": MNIST_CLASSES}

IDX_PARTS = ("train-images", "train-labels", "t10k-images", "t10k-labels")
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_LOCAL_HINT = ("point tfdarts at local files with data.data_dir=PATH (a folder of IDX files "
               "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
               "t10k-labels-idx1-ubyte[.gz], or an .npz with x_train, y_train, x_test, y_test)")


@dataclasses.dataclass
class Raw:
    """Arrays from one source before splitting.

    Attributes:
        x_train: ``(N, H, W, C)`` inputs in stored units.
        y_train: ``(N,)`` integer labels or ``(N, K)`` float targets.
        x_test: ``(M, H, W, C)`` or None when the source has no test split.
        y_test: Labels/targets of `x_test`, or None.
        source: Human-readable origin (path or ``tfds:NAME:VERSION``).
        content_id: Identity of the content (sha256 of the files, or TFDS name+version).
        output_names: Class or target names (may be empty).
        groups: ``(N,)`` group keys for grouped splits, or None.
        from_tfds: True when loaded through TensorFlow Datasets.
        layout: Settings of a `tfdarts.layouts` layout that shaped the arrays (image
            size, colour, manifest columns); part of the data fingerprint. Empty for
            the built-in sources.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: Optional[np.ndarray]
    y_test: Optional[np.ndarray]
    source: str
    content_id: str
    output_names: Tuple[str, ...] = ()
    groups: Optional[np.ndarray] = None
    from_tfds: bool = False
    layout: Dict[str, Any] = dataclasses.field(default_factory=dict)


_DIGESTS: Dict[Tuple[object, ...], bytes] = {}
_DIGESTS_MAX = 1 << 18
_SETTLED_NS = 2_000_000_000


def file_digest(path: str) -> bytes:
    """Sha256 digest of one file's bytes, read once per process while the file is unchanged.

    A digest is reused while the file's inode, size, modification and change times
    stay the same; files touched in the last two seconds are always read again
    (timestamps are too coarse to tell edits that close apart).

    Args:
        path: The file.

    Returns:
        The 32-byte digest.

    Raises:
        DataError: The file cannot be read; the message names it.
    """
    try:
        st = os.stat(path)
        key = (os.path.abspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key in _DIGESTS:
            return _DIGESTS[key]
        inner = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                inner.update(block)
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}; check that it is a readable file") from None
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > _SETTLED_NS:
        if len(_DIGESTS) >= _DIGESTS_MAX:
            _DIGESTS.clear()
        _DIGESTS[key] = inner.digest()
    return inner.digest()


def hash_files(paths: Sequence[str], root: Optional[str] = None) -> str:
    """Sha256 hex over the names and contents of `paths` (order independent).

    Args:
        paths: The files.
        root: Names are the paths relative to this folder, so moving a file between
            subfolders changes the hash; None names each file by its base name.

    Returns:
        64 hex digits.

    Raises:
        DataError: A file cannot be read.
    """
    named = [(os.path.relpath(p, root) if root is not None else os.path.basename(p), p) for p in paths]
    outer = hashlib.sha256()
    for name, path in sorted(named, key=lambda item: item[0]):
        outer.update(os.fsencode(name) + b"\0" + file_digest(path))
    return outer.hexdigest()


def read_bytes(path: str) -> bytes:
    """Reads a file, transparently gunzipping it when it starts with the gzip magic."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror}") from None
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except EOFError:
        raise DataError(f"{path}: compressed file is truncated; re-download or re-copy it") from None
    except (OSError, zlib.error) as err:
        raise DataError(f"{path}: corrupt gzip data ({err}); re-download or re-copy it") from None


def _idx_header(raw: bytes, path: str) -> Tuple[np.dtype, Tuple[int, ...], int]:
    """Parses an IDX header into (dtype, dims, header length), validating the magic number."""
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataError(f"{path}: not an IDX file (magic number {raw[:4].hex() or 'missing'}); "
                        "expected 0x0000 + type byte + ndim byte, as in the MNIST files")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: IDX header is truncated ({len(raw)} bytes); re-download or re-copy it")
    dims = struct.unpack(">" + "I" * ndim, raw[4:header])
    return np.dtype(_IDX_DTYPES[raw[2]]), dims, header


def read_idx(path: str) -> np.ndarray:
    """Reads one IDX file (optionally gzipped).

    Args:
        path: The file.

    Returns:
        Array of the header's shape and type, in native byte order.

    Raises:
        DataError: Bad magic number, or a size that disagrees with the header.
    """
    raw = read_bytes(path)
    dtype, dims, header = _idx_header(raw, path)
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: {len(raw)} bytes after decompression but the IDX header "
                        f"{list(dims)} needs {expected}; the file is truncated or corrupt, re-download it")
    array = np.frombuffer(raw, dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def find_idx_files(folder: str) -> Dict[str, str]:
    """Maps each of `IDX_PARTS` to its file in `folder` (``.gz`` or not, ``-idx`` or ``.idx``)."""
    if not os.path.isdir(folder):
        raise DataError(f"data.data_dir={folder} is not a folder; {_LOCAL_HINT}")
    names = sorted(os.listdir(folder))
    found = {}
    for part in IDX_PARTS:
        hits = [n for n in names if n.startswith(part) and "idx" in n
                and n.endswith(("ubyte", "ubyte.gz"))]
        if not hits:
            raise DataError(f"{folder}: no {part}-idx*-ubyte[.gz] file; {_LOCAL_HINT}")
        found[part] = os.path.join(folder, hits[0])
    return found


def _idx_pair(images_path: str, labels_path: str) -> Tuple[np.ndarray, np.ndarray]:
    """Reads matching image and label IDX files into ``(N, H, W, C)`` uint8-ish and ``(N,)`` int64."""
    labels = read_idx(labels_path)
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: labels must be 1-D, got shape {labels.shape}")
    images = read_idx(images_path)
    if images.ndim not in (3, 4):
        raise DataError(f"{images_path}: images must be (N, H, W) or (N, H, W, C), got {images.shape}")
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} has "
                        f"{len(labels)} labels; use files from the same release")
    return as_nhwc(images), labels.astype(np.int64)


def load_idx_folder(folder: str, name: str) -> Raw:
    """Loads the four MNIST-style IDX files in `folder`.

    Args:
        folder: Folder holding train/t10k images and labels.
        name: Dataset name, used to look up class names.

    Returns:
        A `Raw` with the given train/test split.
    """
    files = find_idx_files(folder)
    x_train, y_train = _idx_pair(files["train-images"], files["train-labels"])
    x_test, y_test = _idx_pair(files["t10k-images"], files["t10k-labels"])
    return Raw(x_train, y_train, x_test, y_test, os.path.abspath(folder),
               hash_files(list(files.values())), CLASS_NAMES.get(name, ()))


def as_nhwc(x: np.ndarray) -> np.ndarray:
    """Adds a channel axis to ``(N, H, W)`` inputs; passes ``(N, H, W, C)`` through."""
    return x[..., None] if x.ndim == 3 else x


def _npz_arrays(path: str) -> Dict[str, np.ndarray]:
    """Reads every array of an ``.npz`` file (no pickles)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zlib.error) as err:
        raise DataError(f"cannot read {path}: {err}; expected an .npz made with numpy.savez") from None
    except Exception as err:  # zipfile.BadZipFile and friends
        raise DataError(f"cannot read {path}: {type(err).__name__}: {err}; expected an .npz "
                        "made with numpy.savez") from None


def load_npz(path: str, name: str) -> Raw:
    """Loads ``x_train, y_train, x_test, y_test`` (or just ``x, y``) from an ``.npz``.

    Args:
        path: The ``.npz`` file. ``x`` arrays are ``(N, H, W)`` or ``(N, H, W, C)``;
            integer ``y`` means class labels, float ``y`` regression targets.
        name: Dataset name, used to look up class names.

    Returns:
        A `Raw`; without test arrays, ``x_test``/``y_test`` are None (split later).
    """
    arrays = _npz_arrays(path)
    keys = set(arrays)
    if {"x_train", "y_train", "x_test", "y_test"} <= keys:
        parts = [arrays[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    elif {"x", "y"} <= keys:
        parts = [arrays["x"], arrays["y"], None, None]
    else:
        raise DataError(f"{path}: needs arrays x_train, y_train, x_test, y_test (or x, y); "
                        f"found {sorted(keys)}")
    for x, y, label in ((parts[0], parts[1], "train"), (parts[2], parts[3], "test")):
        if x is not None:
            check_xy(x, y, f"{path} ({label})")
    x_test = None if parts[2] is None else as_nhwc(parts[2])
    return Raw(as_nhwc(parts[0]), as_targets(parts[1]), x_test,
               None if parts[3] is None else as_targets(parts[3]),
               os.path.abspath(path), hash_files([path]), CLASS_NAMES.get(name, ()))


def check_xy(x: np.ndarray, y: np.ndarray, where: str) -> None:
    """Validates one pair of input/target arrays (``.npz`` or ``.npy``).

    Args:
        x: Inputs, numeric ``(N, H, W)`` or ``(N, H, W, C)``.
        y: Integer labels or float targets, ``(N,)`` or ``(N, K)``.
        where: The file (and part) named in errors.

    Raises:
        DataError: Wrong shape or type, or NaN/infinite values.
    """
    if x.ndim not in (3, 4) or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{where}: x must be numeric (N, H, W) or (N, H, W, C), got {x.dtype} {x.shape}")
    if y.ndim not in (1, 2) or len(y) != len(x):
        raise DataError(f"{where}: y must be (N,) or (N, K) with N={len(x)}, got shape {y.shape}")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise DataError(f"{where}: x contains NaN or infinite values; clean the data first")
    if np.issubdtype(y.dtype, np.floating) and not np.isfinite(y).all():
        raise DataError(f"{where}: y contains NaN or infinite values; clean the data first")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise DataError(f"{where}: y must be integer labels or float targets, got {y.dtype}")


def as_targets(y: np.ndarray) -> np.ndarray:
    """Labels or targets in their training form.

    Args:
        y: Integer labels or float targets, ``(N,)`` or ``(N, K)``.

    Returns:
        Integer labels as int64 ``(N,)`` (``(N, K)`` when K > 1); float targets as float32 ``(N, K)``.
    """
    if np.issubdtype(y.dtype, np.integer):
        return y.reshape(len(y)).astype(np.int64) if y.ndim == 1 or y.shape[1] == 1 else y.astype(np.int64)
    return y.reshape(len(y), -1).astype(np.float32)


def tfds_builder_names() -> Tuple[str, ...]:
    """Names of the TFDS builders shipped with the installed package (no network)."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    return tuple(tfds.list_builders(with_community_datasets=False))


TFDS_HOST = "storage.googleapis.com"
"""Where TFDS downloads most datasets from; probed before a download is attempted."""


def tfds_reachable(host: str = TFDS_HOST, timeout: float = 5.0) -> bool:
    """True when a TCP connection to `host`:443 opens within `timeout` seconds.

    Without it an offline download spends minutes in TFDS's retries before failing.
    """
    import socket  # pylint: disable=import-outside-toplevel

    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _tfds_builder(name: str, tfds_dir: str, download: bool):
    """Creates the TFDS builder, preparing it only when it is missing and allowed."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    try:
        builder = tfds.builder(name, data_dir=tfds_dir or None)
    except Exception as err:  # TFDS raises many types (DatasetNotFoundError, ...)
        raise DataError(f"TFDS dataset {name!r} is unavailable ({type(err).__name__}); "
                        f"{_LOCAL_HINT}") from None
    if builder.is_prepared():
        return builder
    if not download:
        raise DataError(f"TFDS dataset {name!r} is not prepared in {builder.data_dir} and "
                        f"downloads are off (data.download=false); {_LOCAL_HINT}")
    if not tfds_reachable():
        raise DataError(f"TFDS dataset {name!r} is not prepared in {builder.data_dir} and its "
                        f"download server cannot be reached (offline?); {_LOCAL_HINT}")
    try:
        builder.download_and_prepare()
    except Exception as err:  # network, checksum and disk errors all end here
        raise DataError(f"TFDS could not download/prepare {name!r} ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:200]}); offline? {_LOCAL_HINT}") from None
    return builder


def _tfds_split(builder, split: str) -> Tuple[np.ndarray, np.ndarray]:
    """Loads one TFDS split as ``(x (N, H, W, C), y (N,) int64)``."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    images, labels = [], []
    for batch in tfds.as_numpy(builder.as_dataset(split=split).batch(4096)):
        images.append(batch["image"])
        labels.append(batch["label"])
    if not images:
        raise DataError(f"TFDS dataset {builder.name!r} split {split!r} is empty; "
                        f"prepare it again or {_LOCAL_HINT}")
    return as_nhwc(np.concatenate(images)), np.concatenate(labels).astype(np.int64)


def load_tfds(name: str, tfds_dir: str = "", download: bool = True) -> Raw:
    """Loads a TFDS image-classification dataset (``image`` and ``label`` features).

    Args:
        name: TFDS name, optionally with config/version (``"cifar10:3.0.2"``).
        tfds_dir: TFDS data folder ("" = TFDS's default).
        download: Download and prepare the dataset when it is missing.

    Returns:
        A `Raw`; datasets without a ``test`` split get ``x_test=None``.

    Raises:
        DataError: Not prepared and cannot be downloaded, or not image classification.
    """
    builder = _tfds_builder(name, tfds_dir, download)
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise DataError(f"TFDS dataset {name!r} has no image/label features; only image "
                        f"classification is supported, or {_LOCAL_HINT}")
    if None in tuple(features["image"].shape):
        raise DataError(f"TFDS dataset {name!r} has images of varying size {features['image'].shape}; "
                        "resize them into an .npz and use data.data_dir=FILE.npz")
    x_train, y_train = _tfds_split(builder, "train")
    x_test = y_test = None
    if "test" in builder.info.splits:
        x_test, y_test = _tfds_split(builder, "test")
    return Raw(x_train, y_train, x_test, y_test, f"tfds:{builder.name}:{builder.info.version}",
               f"tfds:{builder.name}:{builder.info.version}",
               tuple(features["label"].names), from_tfds=True)
