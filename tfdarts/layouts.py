"""Common scientific data layouts: image folders, CSV manifests and ``.npy`` pairs.

* **Image folder**: ``FOLDER/<class>/*.png|jpg|jpeg|tif|tiff`` (one subfolder per
  class, at least two, names sorted give the label order), or ``FOLDER/train/<class>/...``
  and ``FOLDER/test/<class>/...`` for your own test split (``train`` and ``test`` are
  reserved for that and cannot be class names).
* **CSV manifest**: ``FILE.csv`` (UTF-8, a byte-order mark is fine) with a
  ``data.path_column`` of image or ``.npy`` files (relative to the CSV's folder) and
  either a ``data.label_column`` (classification, at least two classes) or
  ``data.target_columns`` (regression, one or more float columns). An optional
  ``split`` column (``train``/``test``) is your own test split.
* **.npy pairs**: ``FOLDER/x.npy`` and ``FOLDER/y.npy``, or ``x_train.npy, y_train.npy,
  x_test.npy, y_test.npy``.

Images are resized to ``data.image_size`` (bilinear) and kept grayscale when every
one is (``data.color=auto``). 8-bit images stay uint8 0..255; 16-bit, 32-bit integer
and float grayscale images (scientific TIFFs, 16-bit PNGs) are read at full precision
and scaled onto the same 0..255 range as float32 (see `deep_to_float`). ``.npy`` items
keep their stored units. Every problem names the file (and the manifest line). No
TensorFlow here: images are decoded with Pillow.
"""

from __future__ import annotations

import csv
import math
import os
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from tfdarts.config import DataConfig
from tfdarts.sources import CLASS_NAMES, DataError, Raw, as_nhwc, as_targets, check_xy, hash_files

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NPY_NAMES = (("x.npy", "y.npy"), ("x_train.npy", "y_train.npy", "x_test.npy", "y_test.npy"))
SPLIT_COLUMN = "split"
SPLITS = ("train", "test")
FULL_SCALE = 255.0
"""The top of the range every image is read on (that of 8-bit images)."""
_SPLIT_HINT = ("train/ and test/ are reserved for your own split: put images in train/<class>/ and "
               "test/<class>/, or drop train/ and test/ and use one <class>/ folder per class")


def is_image(name: str) -> bool:
    """Whether `name` ends in one of `IMAGE_SUFFIXES` (any case).

    Args:
        name: A file name or path.

    Returns:
        True for image files tfdarts can decode.
    """
    return name.lower().endswith(IMAGE_SUFFIXES)


def detect(path: str) -> Optional[str]:
    """The layout at `path`.

    Args:
        path: ``data.data_dir``: a file or a folder.

    Returns:
        ``"manifest"`` (a ``.csv`` file), ``"npy"``, ``"images"``, or None for anything else.

    Raises:
        DataError: A folder cannot be listed, or it has ``train/``/``test/`` folders that
            are not both folders of class subfolders.
    """
    if os.path.isfile(path):
        return "manifest" if path.lower().endswith(".csv") else None
    if not os.path.isdir(path):
        return None
    names = set(_listdir(path))
    if any(set(group) <= names for group in NPY_NAMES):
        return "npy"
    return "images" if _has_split_folders(path) or _class_folders(path) else None


def _listdir(folder: str) -> List[str]:
    """Sorted entries of `folder`, with listing errors as `DataError`."""
    try:
        return sorted(os.listdir(folder))
    except OSError as err:
        raise DataError(f"cannot list {folder}: {err.strerror or err}; check that it is a "
                        "folder you can read") from None


def _class_folders(folder: str) -> List[str]:
    """Sorted subfolders of `folder` that hold at least one image."""
    out = []
    for name in _listdir(folder):
        sub = os.path.join(folder, name)
        if os.path.isdir(sub) and any(is_image(n) for n in _listdir(sub)):
            out.append(name)
    return out


def _has_split_folders(folder: str) -> bool:
    """True for ``train/<class>/`` + ``test/<class>/``, False with neither folder present.

    Raises:
        DataError: Only one of them, one without class folders, or class folders beside them.
    """
    present = [s for s in SPLITS if os.path.isdir(os.path.join(folder, s))]
    if not present:
        return False
    for split in SPLITS:
        if split not in present:
            raise DataError(f"{folder}: has {present[0]}/ but no {split}/ folder; {_SPLIT_HINT}")
        if not _class_folders(os.path.join(folder, split)):
            raise DataError(f"{folder}: {split}/ holds no class folders of images; {_SPLIT_HINT}")
    extra = [n for n in _class_folders(folder) if n not in SPLITS]
    if extra:
        raise DataError(f"{folder}: image folders {extra} sit beside train/ and test/; {_SPLIT_HINT}")
    return True


# ----------------------------------------------------------------------------- images


def read_image(path: str, size: Tuple[int, ...], color: str) -> np.ndarray:
    """One image as ``(H, W, C)``.

    Args:
        path: The image file.
        size: ``(H, W)``, ``(S,)`` for S x S, or ``()`` to keep the file's size.
        color: ``"gray"`` (C = 1), ``"rgb"`` (C = 3) or ``"auto"`` (the file's own).

    Returns:
        uint8 0..255 for 8-bit images; float32 on the same 0..255 range for 16-bit,
        32-bit integer and float grayscale images (Pillow modes ``I;16``, ``I``, ``F``).

    Raises:
        DataError: The file cannot be decoded, or its values do not fit `deep_to_float`.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            arr = _deep_pixels(img, path, size) if _is_deep(img.mode) else _pixels(img, size, color)
    except DataError:
        raise
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataError(f"cannot read image {path}: {err}; re-save it as PNG or TIFF, or as "
                        ".npy listed in a CSV manifest") from None
    if arr.ndim == 2:
        arr = arr[..., None]
    return np.repeat(arr, 3, axis=-1) if color == "rgb" and arr.shape[-1] == 1 else arr


def _is_deep(mode: str) -> bool:
    """Whether a Pillow mode holds more than 8 bits per pixel (grayscale)."""
    return mode.startswith("I;16") or mode in ("I", "F")


def _resized(img, size: Tuple[int, ...]):
    """`img` resized bilinearly to ``(H, W)`` (or S x S), or itself for ``()``."""
    from PIL import Image

    return img.resize((size[-1], size[0]), Image.BILINEAR) if size else img


def _pixels(img, size: Tuple[int, ...], color: str) -> np.ndarray:
    """uint8 ``(H, W)`` or ``(H, W, 3)`` of an 8-bit image."""
    mode = {"gray": "L", "rgb": "RGB"}.get(color) or ("L" if img.mode in ("1", "L") else "RGB")
    return np.asarray(_resized(img.convert(mode), size), dtype=np.uint8)


def _deep_pixels(img, path: str, size: Tuple[int, ...]) -> np.ndarray:
    """float32 ``(H, W)`` of a deep grayscale image, scaled by `deep_to_float`, then resized."""
    from PIL import Image

    scaled = deep_to_float(np.asarray(img), path)
    return np.asarray(_resized(Image.fromarray(scaled), size), dtype=np.float32)


def deep_to_float(pixels: np.ndarray, path: str) -> np.ndarray:
    """Scales deep grayscale pixels onto 0..255 (`FULL_SCALE`), the range of 8-bit images.

    The rule depends only on the pixel type, so every file of a data set is scaled
    alike and intensities stay comparable: integers (16-bit, or 32-bit holding
    0..65535) are multiplied by 255/65535; floats must lie in 0..1 (the usual
    convention for float images) and are multiplied by 255.

    Args:
        pixels: ``(H, W)`` integer or float pixel values.
        path: The file, named in errors.

    Returns:
        float32 ``(H, W)`` in 0..255.

    Raises:
        DataError: Values outside 0..65535 (integers) or 0..1 (floats), or NaN; the
            message points to ``.npy``, which keeps any units.
    """
    top = 1.0 if np.issubdtype(pixels.dtype, np.floating) else 65535.0
    low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
    if not (math.isfinite(low) and math.isfinite(high) and 0.0 <= low and high <= top):
        raise DataError(f"{path}: {pixels.dtype} image with values {low:g}..{high:g}, outside "
                        f"0..{top:g}; save it as .npy (kept in its own units) and list it in a "
                        "CSV manifest")
    return (pixels.astype(np.float64) * (FULL_SCALE / top)).astype(np.float32)


def stack_images(paths: Sequence[str], cfg: DataConfig) -> np.ndarray:
    """Reads and stacks images.

    With ``data.color=auto`` grayscale images are promoted to RGB when any image is colour.

    Args:
        paths: Image files (at least one).
        cfg: Gives ``data.image_size`` and ``data.color``.

    Returns:
        ``(N, H, W, C)`` uint8, or float32 on the same 0..255 range when any image
        is deeper than 8 bits (see `read_image`).

    Raises:
        DataError: An image cannot be read, or sizes differ without ``data.image_size``.
    """
    images = [read_image(p, cfg.image_size, cfg.color) for p in paths]
    if any(im.shape[-1] == 3 for im in images):
        images = [np.repeat(im, 3, axis=-1) if im.shape[-1] == 1 else im for im in images]
    (h, w) = images[0].shape[:2]
    odd = next(((p, im.shape) for p, im in zip(paths, images) if im.shape[:2] != (h, w)), None)
    if odd:
        raise DataError(f"images differ in size ({paths[0]} is {h}x{w}, {odd[0]} is "
                        f"{odd[1][0]}x{odd[1][1]}); set data.image_size=H,W to resize them all")
    return np.stack(images)


def image_settings(cfg: DataConfig) -> Dict[str, Any]:
    """The settings that shape decoded images, for the data fingerprint.

    Args:
        cfg: Data settings.

    Returns:
        ``{"image_size": [H, W] or [], "color": ...}``.
    """
    size = list(cfg.image_size) * 2 if len(cfg.image_size) == 1 else list(cfg.image_size)
    return {"image_size": size, "color": cfg.color}


def _folder_split(folder: str, cfg: DataConfig) -> Tuple[np.ndarray, np.ndarray, List[str], Tuple[str, ...]]:
    """Images and labels of one ``<class>/`` folder tree, with the files read.

    Raises:
        DataError: Fewer than two class folders, or an image cannot be read.
    """
    classes = tuple(_class_folders(folder))
    if len(classes) < 2:
        raise DataError(f"{folder}: found {len(classes)} class folder(s) {list(classes)}; "
                        "classification needs one subfolder of images per class, at least two")
    paths, labels = [], []
    for k, name in enumerate(classes):
        sub = os.path.join(folder, name)
        files = [n for n in _listdir(sub) if is_image(n)]
        paths += [os.path.join(sub, n) for n in files]
        labels += [k] * len(files)
    return stack_images(paths, cfg), np.asarray(labels, np.int64), paths, classes


def load_image_folder(folder: str, cfg: DataConfig) -> Raw:
    """Loads an image folder (see the module docstring).

    Args:
        folder: ``FOLDER`` with ``<class>/`` subfolders, or ``train/<class>/`` and ``test/<class>/``.
        cfg: Gives ``data.image_size`` and ``data.color``.

    Returns:
        A `Raw` of images (see `stack_images`) and int64 labels, the class names being
        the sorted subfolder names; with ``train/``/``test/`` it keeps that split.
        Files are hashed by their path relative to `folder`, so moving an image to
        another class changes the fingerprint.

    Raises:
        DataError: Fewer than two classes, different classes or sizes in train/ and
            test/, or an unreadable image; the message names the folder or file.
    """
    layout = image_settings(cfg)
    if not _has_split_folders(folder):
        x, y, paths, classes = _folder_split(folder, cfg)
        return Raw(x, y, None, None, os.path.abspath(folder), hash_files(paths, folder), classes,
                   layout=layout)
    x, y, paths, classes = _folder_split(os.path.join(folder, "train"), cfg)
    xt, yt, test_paths, test_classes = _folder_split(os.path.join(folder, "test"), cfg)
    if test_classes != classes:
        raise DataError(f"{folder}: train/ has classes {list(classes)} but test/ has {list(test_classes)}; "
                        "give both the same class folders")
    if xt.shape[1:] != x.shape[1:]:
        raise DataError(f"{folder}: test images are {xt.shape[1:]}, train images {x.shape[1:]}; "
                        "set data.image_size=H,W")
    return Raw(x, y, xt, yt, os.path.abspath(folder), hash_files(paths + test_paths, folder), classes,
               layout=layout)


# ----------------------------------------------------------------------------- manifest


class Manifest(NamedTuple):
    """A parsed CSV manifest.

    Attributes:
        path: The CSV file.
        columns: The header's column names.
        rows: ``(line, row)`` per record; `line` is the file line the record ends on.
    """

    path: str
    columns: List[str]
    rows: List[Tuple[int, Dict[str, str]]]


def read_manifest(path: str) -> Manifest:
    """Parses a CSV manifest (UTF-8, with or without the byte-order mark Excel writes).

    Args:
        path: The ``.csv`` file.

    Returns:
        Its columns and rows with their line numbers.

    Raises:
        DataError: The file cannot be read or is not UTF-8 CSV.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = [(reader.line_num, row) for row in reader]
            return Manifest(path, list(reader.fieldnames or []), rows)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"cannot read manifest {path}: {err}; save it as UTF-8 CSV") from None


def manifest_files(manifest: Manifest, cfg: DataConfig) -> List[str]:
    """Absolute paths of the files a manifest lists, in row order.

    Args:
        manifest: From `read_manifest`.
        cfg: Gives ``data.path_column``.

    Returns:
        One path per row, resolved against the CSV's folder.

    Raises:
        DataError: No path column, or a row whose path is empty or not a file (with its line).
    """
    if cfg.path_column not in manifest.columns:
        raise DataError(f"{manifest.path}: no column {cfg.path_column!r} (data.path_column); "
                        f"columns are {manifest.columns}")
    base = os.path.dirname(os.path.abspath(manifest.path))
    out = []
    for line, row in manifest.rows:
        value = (row.get(cfg.path_column) or "").strip()
        file = os.path.join(base, os.path.expanduser(value))
        if not value or not os.path.isfile(file):
            raise DataError(f"{manifest.path} line {line}: {cfg.path_column}={value!r} is not a file "
                            f"(paths are relative to {base})")
        out.append(file)
    return out


def check_manifest(path: str, cfg: DataConfig) -> Tuple[Manifest, List[str]]:
    """Parses a manifest once and checks its columns and listed files, decoding nothing.

    Args:
        path: The ``.csv`` file.
        cfg: Gives the path, label and target columns.

    Returns:
        The parsed manifest and its files (`manifest_files`).

    Raises:
        DataError: No rows, a missing column, or a listed path that is not a file.
    """
    manifest = read_manifest(path)
    if not manifest.rows:
        raise DataError(f"{path}: the manifest has no rows; list one file per row under a header")
    needed = list(cfg.target_columns) or [cfg.label_column]
    missing = [c for c in [cfg.path_column, *needed] if c not in manifest.columns]
    if missing:
        raise DataError(f"{path}: no column(s) {missing}; columns are {manifest.columns} (set "
                        "data.path_column, data.label_column or data.target_columns=COL[,COL])")
    return manifest, manifest_files(manifest, cfg)


def manifest_hash(path: str, files: Sequence[str]) -> str:
    """Content hash of a manifest and the files it lists.

    Args:
        path: The ``.csv`` file.
        files: Its listed files (`manifest_files`).

    Returns:
        `hash_files` of all of them, named relative to the CSV's folder.
    """
    return hash_files([path, *files], os.path.dirname(os.path.abspath(path)))


def _read_item(file: str, cfg: DataConfig) -> np.ndarray:
    """One manifest item: an image (`read_image`) or a float32 ``.npy`` array in its own units."""
    if not file.lower().endswith(".npy"):
        return read_image(file, cfg.image_size, cfg.color)
    try:
        arr = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read array {file}: {err}; save it with numpy.save") from None
    if arr.ndim not in (2, 3) or not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{file}: expected a numeric (H, W) or (H, W, C) array, got {arr.dtype} {arr.shape}")
    return as_nhwc(arr[None].astype(np.float32))[0]


def _stack_items(path: str, files: Sequence[str], cfg: DataConfig) -> np.ndarray:
    """``(N, H, W, C)`` of the manifest's items, which must agree in shape."""
    items = [_read_item(f, cfg) for f in files]
    odd = next(((f, im.shape) for f, im in zip(files, items) if im.shape != items[0].shape), None)
    if odd:
        raise DataError(f"{path}: items differ in shape ({files[0]} {items[0].shape}, {odd[0]} "
                        f"{odd[1]}); set data.image_size=H,W for images, or store arrays of one shape")
    return np.stack(items)


def _regression_targets(manifest: Manifest, columns: Sequence[str]) -> np.ndarray:
    """``(N, K)`` float32 targets from `columns`."""
    out = np.zeros((len(manifest.rows), len(columns)), np.float32)
    for i, (line, row) in enumerate(manifest.rows):
        for j, col in enumerate(columns):
            try:
                out[i, j] = float(row[col])
            except (TypeError, ValueError):
                raise DataError(f"{manifest.path} line {line}: {col}={row.get(col)!r} is not a number") from None
    if not np.isfinite(out).all():
        raise DataError(f"{manifest.path}: a target is NaN or infinite; clean the manifest first")
    return out


def _as_number(value: str) -> Optional[float]:
    """`value` as a finite float, or None."""
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _class_labels(manifest: Manifest, column: str) -> Tuple[np.ndarray, Tuple[str, ...]]:
    """``(N,)`` int64 labels of `column` and the sorted class names (numerically when numbers).

    Raises:
        DataError: An empty label, non-integer numbers (regression data), or one class only.
    """
    values = [(row.get(column) or "").strip() for _, row in manifest.rows]
    for (line, _), value in zip(manifest.rows, values):
        if not value:
            raise DataError(f"{manifest.path} line {line}: empty {column!r} (data.label_column)")
    numbers = [_as_number(v) for v in values]
    numeric = all(n is not None for n in numbers)
    fraction = next(((line, v) for (line, _), v, n in zip(manifest.rows, values, numbers)
                     if numeric and not n.is_integer()), None)
    if fraction:
        raise DataError(f"{manifest.path} line {fraction[0]}: {column}={fraction[1]!r} is not a class "
                        f"label but a measurement; set data.target_columns={column} for regression")
    classes = sorted(set(values), key=float if numeric else str)
    if len(classes) < 2:
        raise DataError(f"{manifest.path}: every row has {column}={classes[0]!r}; classification "
                        "needs at least two classes (or set data.target_columns=COL for regression)")
    index = {c: k for k, c in enumerate(classes)}
    return np.asarray([index[v] for v in values], np.int64), tuple(classes)


def _targets(manifest: Manifest, cfg: DataConfig) -> Tuple[np.ndarray, Tuple[str, ...]]:
    """``(N, K)`` float32 targets with their columns, or ``(N,)`` int64 labels with the class names."""
    if cfg.target_columns:
        return _regression_targets(manifest, cfg.target_columns), tuple(cfg.target_columns)
    return _class_labels(manifest, cfg.label_column)


def _test_rows(manifest: Manifest) -> Optional[np.ndarray]:
    """``(N,)`` bool test membership from the ``split`` column, or None without one."""
    if SPLIT_COLUMN not in manifest.columns:
        return None
    split = [(row.get(SPLIT_COLUMN) or "").strip().lower() for _, row in manifest.rows]
    bad = next(((line, v) for (line, _), v in zip(manifest.rows, split) if v not in SPLITS), None)
    if bad:
        raise DataError(f"{manifest.path} line {bad[0]}: split={bad[1]!r}; use train or test")
    test = np.asarray(split) == "test"
    if test.all() or not test.any():
        raise DataError(f"{manifest.path}: the split column needs both train and test rows")
    return test


def _manifest_settings(cfg: DataConfig, files: Sequence[str]) -> Dict[str, Any]:
    """The settings that shape a manifest's arrays, for the data fingerprint."""
    out: Dict[str, Any] = {"path_column": cfg.path_column}
    if cfg.target_columns:
        out["target_columns"] = list(cfg.target_columns)
    else:
        out["label_column"] = cfg.label_column
    if any(not f.lower().endswith(".npy") for f in files):
        out.update(image_settings(cfg))
    return out


def load_manifest(path: str, cfg: DataConfig) -> Raw:
    """Loads a CSV manifest (see the module docstring), parsing and hashing it once.

    Args:
        path: The ``.csv`` file.
        cfg: Gives the columns, ``data.image_size`` and ``data.color``.

    Returns:
        A `Raw` of the items (images or ``.npy`` arrays) with int64 labels or float32
        targets; with a ``split`` column it keeps that split.

    Raises:
        DataError: A bad column, row, label, split or item; the message names the file and line.
    """
    manifest, files = check_manifest(path, cfg)
    (y, names), test = _targets(manifest, cfg), _test_rows(manifest)
    x = _stack_items(path, files, cfg)
    source, content, layout = os.path.abspath(path), manifest_hash(path, files), _manifest_settings(cfg, files)
    if test is None:
        return Raw(x, y, None, None, source, content, names, layout=layout)
    return Raw(x[~test], y[~test], x[test], y[test], source, content, names, layout=layout)


# ----------------------------------------------------------------------------- .npy


def _npy(folder: str, name: str) -> np.ndarray:
    """One array of a ``.npy`` folder (no pickles)."""
    path = os.path.join(folder, name)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {path}: {err}; expected an array saved with numpy.save") from None


def _check_classes(labels: Sequence[np.ndarray], where: str) -> None:
    """Integer labels must hold at least two classes.

    Raises:
        DataError: A single class.
    """
    values = np.unique(np.concatenate([np.ravel(y) for y in labels]))
    if np.issubdtype(values.dtype, np.integer) and len(values) < 2:
        raise DataError(f"{where}: every label is {values[0] if len(values) else 'missing'}; "
                        "classification needs at least two classes (or save float y for regression)")


def load_npy_folder(folder: str, name: str) -> Raw:
    """Loads ``x.npy``/``y.npy`` (or the four train/test arrays) from `folder`.

    Args:
        folder: The folder of ``.npy`` files.
        name: Dataset name, used to look up class names.

    Returns:
        A `Raw` of the arrays in stored units; integer ``y`` is class labels, float ``y``
        regression targets.

    Raises:
        DataError: An unreadable array, mismatched shapes, or a single class.
    """
    names = set(_listdir(folder))
    group = NPY_NAMES[1] if set(NPY_NAMES[1]) <= names else NPY_NAMES[0]
    arrays = [_npy(folder, n) for n in group]
    for x, y, n in zip(arrays[::2], arrays[1::2], group[::2]):
        check_xy(x, y, os.path.join(folder, n))
    labels = [as_targets(y) for y in arrays[1::2]]
    _check_classes(labels, os.path.join(folder, group[1]))
    paths = [os.path.join(folder, n) for n in group]
    x_test = as_nhwc(arrays[2]) if len(arrays) == 4 else None
    y_test = labels[1] if len(arrays) == 4 else None
    return Raw(as_nhwc(arrays[0]), labels[0], x_test, y_test, os.path.abspath(folder),
               hash_files(paths, folder), CLASS_NAMES.get(name, ()))


def load(path: str, cfg: DataConfig, kind: Optional[str] = None) -> Raw:
    """Loads the layout `detect` finds at `path`.

    Args:
        path: ``data.data_dir``.
        cfg: Data settings.
        kind: The layout when already detected, else None.

    Returns:
        A `Raw` of the layout's arrays.

    Raises:
        DataError: No known layout there, or a bad file (named).
    """
    kind = kind or detect(path)
    if kind == "manifest":
        return load_manifest(path, cfg)
    if kind == "npy":
        return load_npy_folder(path, cfg.name)
    if kind == "images":
        return load_image_folder(path, cfg)
    raise DataError(f"data.data_dir={path}: no known layout (IDX files, an .npz, a .csv manifest, "
                    "x.npy/y.npy, or one image subfolder per class)")
