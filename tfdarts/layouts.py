"""Common scientific data layouts: image folders, CSV manifests and ``.npy`` pairs.

* **Image folder**: ``FOLDER/<class>/*.png|jpg|jpeg|tif|tiff`` (one subfolder per
  class, names sorted give the label order), or ``FOLDER/train/<class>/...`` and
  ``FOLDER/test/<class>/...`` for your own test split.
* **CSV manifest**: ``FILE.csv`` with a ``data.path_column`` of image or ``.npy`` files
  (relative to the CSV's folder) and either a ``data.label_column`` (classification)
  or ``data.target_columns`` (regression, one or more float columns). An optional
  ``split`` column (``train``/``test``) is your own test split.
* **.npy pairs**: ``FOLDER/x.npy`` and ``FOLDER/y.npy``, or ``x_train.npy, y_train.npy,
  x_test.npy, y_test.npy``.

Images are resized to ``data.image_size`` (bilinear) and kept grayscale when every
one is (``data.color=auto``). Every problem names the file (and the manifest line).
No TensorFlow here: images are decoded with Pillow.
"""

from __future__ import annotations

import csv
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from tfdarts.config import DataConfig
from tfdarts.sources import DataError, Raw, as_nhwc, hash_files

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NPY_NAMES = (("x.npy", "y.npy"), ("x_train.npy", "y_train.npy", "x_test.npy", "y_test.npy"))
SPLIT_COLUMN = "split"


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def detect(path: str) -> Optional[str]:
    """The layout at `path`: ``"manifest"``, ``"npy"``, ``"images"`` or None."""
    if os.path.isfile(path):
        return "manifest" if path.lower().endswith(".csv") else None
    if not os.path.isdir(path):
        return None
    names = set(os.listdir(path))
    if any(set(group) <= names for group in NPY_NAMES):
        return "npy"
    split = {"train", "test"} <= names and bool(_class_folders(os.path.join(path, "train")))
    return "images" if split or _class_folders(path) else None


def _class_folders(folder: str) -> List[str]:
    """Sorted subfolders of `folder` that hold at least one image."""
    out = []
    for name in sorted(os.listdir(folder)):
        sub = os.path.join(folder, name)
        if os.path.isdir(sub) and any(is_image(n) for n in os.listdir(sub)):
            out.append(name)
    return out


# ----------------------------------------------------------------------------- images


def read_image(path: str, size: Tuple[int, ...], color: str) -> np.ndarray:
    """One image as ``(H, W, C)`` uint8 (C = 1 for ``gray``, 3 for ``rgb``, native for ``auto``).

    Raises:
        DataError: The file cannot be decoded; the message names it.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            mode = {"gray": "L", "rgb": "RGB"}.get(color) or ("L" if img.mode in ("1", "L", "I;16", "I", "F") else "RGB")
            img = img.convert(mode)
            if size:
                img = img.resize((size[-1], size[0]), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataError(f"cannot read image {path}: {err}") from None
    return arr[..., None] if arr.ndim == 2 else arr


def stack_images(paths: Sequence[str], cfg: DataConfig) -> np.ndarray:
    """``(N, H, W, C)`` uint8 of `paths`; without ``data.image_size`` all must agree in size.

    With ``data.color=auto`` grayscale images are promoted to RGB when any image is colour.
    """
    images = [read_image(p, cfg.image_size, cfg.color) for p in paths]
    if any(im.shape[-1] == 3 for im in images):
        images = [np.repeat(im, 3, axis=-1) if im.shape[-1] == 1 else im for im in images]
    shapes = {im.shape[:2] for im in images}
    if len(shapes) > 1:
        first = images[0].shape[:2]
        odd = next(p for p, im in zip(paths, images) if im.shape[:2] != first)
        raise DataError(f"images differ in size ({paths[0]} is {first[0]}x{first[1]}, {odd} is "
                        f"{'x'.join(map(str, read_image(odd, (), cfg.color).shape[:2]))}); set "
                        "data.image_size=H,W to resize them all")
    return np.stack(images)


def _folder_split(folder: str, cfg: DataConfig) -> Tuple[np.ndarray, np.ndarray, List[str], Tuple[str, ...]]:
    """Images and labels of one ``<class>/`` folder tree, with the files read."""
    classes = tuple(_class_folders(folder))
    paths, labels = [], []
    for k, name in enumerate(classes):
        sub = os.path.join(folder, name)
        files = sorted(n for n in os.listdir(sub) if is_image(n))
        paths += [os.path.join(sub, n) for n in files]
        labels += [k] * len(files)
    return stack_images(paths, cfg), np.asarray(labels, np.int64), paths, classes


def load_image_folder(folder: str, cfg: DataConfig) -> Raw:
    """An image folder (see module docstring) as a `Raw` of uint8 images and int labels."""
    if detect(folder) == "images" and not _class_folders(folder):  # train/ and test/
        x, y, paths, classes = _folder_split(os.path.join(folder, "train"), cfg)
        xt, yt, test_paths, test_classes = _folder_split(os.path.join(folder, "test"), cfg)
        if test_classes != classes:
            raise DataError(f"{folder}: train/ has classes {list(classes)} but test/ has {list(test_classes)}")
        if xt.shape[1:] != x.shape[1:]:
            raise DataError(f"{folder}: test images are {xt.shape[1:]}, train images {x.shape[1:]}; "
                            "set data.image_size=H,W")
        return Raw(x, y, xt, yt, os.path.abspath(folder), hash_files(paths + test_paths), classes)
    x, y, paths, classes = _folder_split(folder, cfg)
    if len(classes) < 2:
        raise DataError(f"{folder}: found {len(classes)} class folder(s); an image folder needs one "
                        "subfolder per class (at least two)")
    return Raw(x, y, None, None, os.path.abspath(folder), hash_files(paths), classes)


# ----------------------------------------------------------------------------- manifest


def _manifest_rows(path: str) -> Tuple[List[str], List[Tuple[int, Dict[str, str]]]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = [(i + 2, row) for i, row in enumerate(reader)]  # line 1 is the header
            return list(reader.fieldnames or []), rows
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"cannot read manifest {path}: {err}") from None


def manifest_files(path: str, cfg: DataConfig) -> List[str]:
    """Absolute paths of the files a manifest lists (for fingerprints and checks)."""
    columns, rows = _manifest_rows(path)
    if cfg.path_column not in columns:
        raise DataError(f"{path}: no column {cfg.path_column!r} (data.path_column); columns are {columns}")
    base = os.path.dirname(os.path.abspath(path))
    out = []
    for line, row in rows:
        value = (row.get(cfg.path_column) or "").strip()
        file = os.path.join(base, os.path.expanduser(value))
        if not value or not os.path.isfile(file):
            raise DataError(f"{path} line {line}: {cfg.path_column}={value!r} is not a file")
        out.append(file)
    return out


def _read_item(file: str, cfg: DataConfig) -> np.ndarray:
    if not file.lower().endswith(".npy"):
        return read_image(file, cfg.image_size, cfg.color)
    try:
        arr = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read array {file}: {err}") from None
    if arr.ndim not in (2, 3) or not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{file}: expected a numeric (H, W) or (H, W, C) array, got {arr.dtype} {arr.shape}")
    return as_nhwc(arr[None].astype(np.float32))[0]


def _targets(path: str, rows, cfg: DataConfig) -> Tuple[np.ndarray, Tuple[str, ...]]:
    """``(N, K)`` float32 targets, or ``(N,)`` int64 labels with the class names."""
    if cfg.target_columns:
        out = np.zeros((len(rows), len(cfg.target_columns)), np.float32)
        for i, (line, row) in enumerate(rows):
            for j, col in enumerate(cfg.target_columns):
                try:
                    out[i, j] = float(row[col])
                except (TypeError, ValueError):
                    raise DataError(f"{path} line {line}: {col}={row.get(col)!r} is not a number") from None
        if not np.isfinite(out).all():
            raise DataError(f"{path}: a target is NaN or infinite; clean the manifest first")
        return out, tuple(cfg.target_columns)
    values = [(row.get(cfg.label_column) or "").strip() for _, row in rows]
    for (line, _), value in zip(rows, values):
        if not value:
            raise DataError(f"{path} line {line}: empty {cfg.label_column!r} (data.label_column)")
    numeric = all(v.lstrip("-").isdigit() for v in values)
    classes = sorted(set(values), key=int if numeric else str)
    index = {c: k for k, c in enumerate(classes)}
    return np.asarray([index[v] for v in values], np.int64), tuple(classes)


def load_manifest(path: str, cfg: DataConfig) -> Raw:
    """A CSV manifest (see module docstring) as a `Raw`."""
    columns, rows = _manifest_rows(path)
    if not rows:
        raise DataError(f"{path}: the manifest has no rows")
    needed = list(cfg.target_columns) or [cfg.label_column]
    missing = [c for c in [cfg.path_column, *needed] if c not in columns]
    if missing:
        raise DataError(f"{path}: no column(s) {missing}; columns are {columns} (set data.path_column, "
                        "data.label_column or data.target_columns=COL[,COL])")
    files = manifest_files(path, cfg)
    items = [_read_item(f, cfg) for f in files]
    shapes = {im.shape for im in items}
    if len(shapes) > 1:
        odd = next(f for f, im in zip(files, items) if im.shape != items[0].shape)
        raise DataError(f"{path}: items differ in shape ({files[0]} {items[0].shape}, {odd} "
                        f"{next(im.shape for im in items if im.shape != items[0].shape)}); set "
                        "data.image_size=H,W for images, or store arrays of one shape")
    x, (y, names) = np.stack(items), _targets(path, rows, cfg)
    content = hash_files([path, *files])
    if SPLIT_COLUMN not in columns:
        return Raw(x, y, None, None, os.path.abspath(path), content, names)
    split = np.asarray([(row.get(SPLIT_COLUMN) or "").strip().lower() for _, row in rows])
    bad = [(line, v) for (line, _), v in zip(rows, split) if v not in ("train", "test")]
    if bad:
        raise DataError(f"{path} line {bad[0][0]}: split={bad[0][1]!r}; use train or test")
    test = split == "test"
    if test.all() or not test.any():
        raise DataError(f"{path}: the split column needs both train and test rows")
    return Raw(x[~test], y[~test], x[test], y[test], os.path.abspath(path), content, names)


# ----------------------------------------------------------------------------- .npy


def _npy(folder: str, name: str) -> np.ndarray:
    path = os.path.join(folder, name)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {path}: {err}; expected an array saved with numpy.save") from None


def load_npy_folder(folder: str, name: str) -> Raw:
    """``x.npy``/``y.npy`` (or the four train/test arrays) as a `Raw`."""
    from tfdarts.sources import _as_targets, _check_xy, CLASS_NAMES

    names = os.listdir(folder)
    group = NPY_NAMES[1] if set(NPY_NAMES[1]) <= set(names) else NPY_NAMES[0]
    arrays = [_npy(folder, n) for n in group]
    for x, y, n in zip(arrays[::2], arrays[1::2], group[::2]):
        _check_xy(x, y, os.path.join(folder, n))
    paths = [os.path.join(folder, n) for n in group]
    x_test = as_nhwc(arrays[2]) if len(arrays) == 4 else None
    y_test = _as_targets(arrays[3]) if len(arrays) == 4 else None
    return Raw(as_nhwc(arrays[0]), _as_targets(arrays[1]), x_test, y_test, os.path.abspath(folder),
               hash_files(paths), CLASS_NAMES.get(name, ()))


def load(path: str, cfg: DataConfig) -> Raw:
    """Loads the layout `detect` finds at `path`.

    Raises:
        DataError: No known layout there, or a bad file (named).
    """
    kind = detect(path)
    if kind == "manifest":
        return load_manifest(path, cfg)
    if kind == "npy":
        return load_npy_folder(path, cfg.name)
    if kind == "images":
        return load_image_folder(path, cfg)
    raise DataError(f"data.data_dir={path}: no known layout (IDX files, an .npz, a .csv manifest, "
                    "x.npy/y.npy, or one image subfolder per class)")
