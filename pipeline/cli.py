"""Helpers shared by the command-line entry points: configs, errors, logging.

A run's config merges, in order: ``configs/presets/<preset>.yaml``,
``configs/datasets/<dataset>.yaml`` (when it exists), each ``--config`` file, then
each ``--override section.key=value``. ``data.name`` is the ``--dataset`` flag and a
non-empty ``data.data_dir`` is made absolute (so the cache key does not depend on
the current folder).
"""

from __future__ import annotations

import argparse
import logging
import os
import struct
import sys
import time
import zipfile
import zlib
from typing import Dict, List, NoReturn, Optional, Sequence, Tuple, Type

import tfdarts
from tfdarts.progress import format_duration

__all__ = ["UsageError", "CONFIG_DIR", "PRESETS", "known_datasets", "build_config", "run_name", "fail",
           "ArgumentParser", "READ_ERRORS", "file_error", "configure_logging", "EtaFilter"]

CONFIG_DIR = os.environ.get("TFDARTS_CONFIG_DIR") or os.path.join(
    os.path.dirname(os.path.abspath(tfdarts.__file__)), "configs")
"""Folder of ``presets/*.yaml`` and ``datasets/*.yaml``: the package's own (installed with
it; ``configs/`` in a checkout links there), or env ``TFDARTS_CONFIG_DIR``."""

PRESETS = ("cpu", "paper", "tiny")


class UsageError(ValueError):
    """Bad flags or arguments: reported in one line, exit code 2."""


def _yaml_names(folder: str) -> List[str]:
    path = os.path.join(CONFIG_DIR, folder)
    if not os.path.isdir(path):
        return []
    return sorted(n[:-5] for n in os.listdir(path) if n.endswith(".yaml"))


def known_datasets() -> List[str]:
    """Datasets with a config file plus the names the library knows (no TensorFlow)."""
    from tfdarts.contract import KNOWN_DATASETS

    return sorted(set(_yaml_names("datasets")) | set(KNOWN_DATASETS))


def build_config(dataset: str, preset: str = "cpu", config_paths: Sequence[str] = (),
                 overrides: Sequence[str] = (), absolute_data_dir: bool = True):
    """Merges preset, dataset file, ``--config`` files and overrides into a `Config`.

    Raises:
        UsageError: Unknown preset or dataset.
        tfdarts.config.ConfigError: Bad file, key or value.
    """
    import dataclasses

    from tfdarts.config import ConfigError, load_config

    presets = _yaml_names("presets")
    if preset not in presets:
        raise UsageError(f"unknown preset {preset!r}; known: {', '.join(presets) or 'none'} "
                         f"(in {os.path.join(CONFIG_DIR, 'presets')})")
    files = [os.path.join(CONFIG_DIR, "presets", preset + ".yaml")]
    dataset_file = os.path.join(CONFIG_DIR, "datasets", dataset + ".yaml")
    has_data_dir = any(o.split("=", 1)[0].strip() == "data.data_dir" and o.split("=", 1)[-1].strip()
                       for o in overrides)
    if os.path.exists(dataset_file):
        files.append(dataset_file)
    elif dataset not in known_datasets() and not has_data_dir:
        raise UsageError(f"unknown dataset {dataset!r}; known: {', '.join(known_datasets())} "
                         "(or give local files with --override data.data_dir=PATH)")
    for path in config_paths:
        if not os.path.isfile(path):
            raise ConfigError(f"--config {path}: no such file")
    config = load_config(files + list(config_paths), [f"data.name={dataset}", *overrides])
    if config.data.name != dataset:
        raise ConfigError(f"data.name={config.data.name} contradicts --dataset {dataset}; "
                          "drop data.name from the config or override")
    if config.data.data_dir and absolute_data_dir:
        path = os.path.abspath(os.path.expanduser(config.data.data_dir))
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, data_dir=path))
    return config


NAME_IGNORES = ("data.data_dir", "runtime.")
"""Settings that do not change a run's results (where the data lies, how computation is
spread and logged; the data's fingerprint guards its content) and so not its folder."""

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+=-")


def flat_settings(tree: Dict, prefix: str = "") -> Dict[str, object]:
    """A nested config dict as ``{"section.key": value}``."""
    out: Dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat_settings(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def config_changes(config, dataset: str, preset: str) -> Dict[str, object]:
    """``section.key -> value`` of `config` that differ from the dataset's file on the preset
    (leaving out `NAME_IGNORES`)."""
    base = build_config(dataset, preset, overrides=[f"data.data_dir={config.data.data_dir}"]
                        if config.data.data_dir else [])
    ours, theirs = flat_settings(config.to_dict()), flat_settings(base.to_dict())
    return {k: v for k, v in sorted(ours.items()) if theirs.get(k) != v
            and not any(k == i or (i.endswith(".") and k.startswith(i)) for i in NAME_IGNORES)}


def data_name_part(config, dataset: str) -> List[str]:
    """``data=<folder>.<hash8>`` for a dataset without a dataset file (the user's own data,
    where the folder *is* the data), else nothing: two folders of own data never share a
    run folder, and a built-in dataset's location does not change its name.

    Args:
        config: The run's `Config` (its ``data.data_dir``).
        dataset: The ``--dataset`` name.
    """
    import hashlib

    path = config.data.data_dir
    if not path or dataset in _yaml_names("datasets"):
        return []
    path = os.path.abspath(os.path.expanduser(path))
    stem = os.path.splitext(os.path.basename(path.rstrip(os.sep)))[0] or "data"
    return [f"data={stem}.{hashlib.sha256(path.encode()).hexdigest()[:8]}"]


def _name_part(key: str, value: object) -> str:
    if isinstance(value, (list, tuple)):
        value = "+".join(map(str, value))
    text = f"{key[len('data.'):] if key.startswith('data.') else key}={value}"
    return "".join(c if c in _NAME_CHARS else "_" for c in text)


def run_name(dataset: str, preset: str, changes: Dict[str, object], extra: Sequence[str] = ()) -> str:
    """The default run folder name: ``<dataset>-<preset>``, then the changed settings
    (``-split=grouped``, ``-search.epochs=3``, or ``-h<hash>`` of them when that would exceed 48 characters) and
    `extra` parts, so runs with different results never share a folder and the same
    command always finds its own.

    Args:
        changes: From `config_changes`.
        extra: Further ``key=value`` parts (e.g. the given genotype), in this order.
    """
    import hashlib
    import json

    parts = [_name_part(k, v) for k, v in changes.items()] + [_name_part(*e.split("=", 1)) for e in extra]
    suffix = ",".join(parts)
    if len(suffix) > 48:
        blob = json.dumps([changes, list(extra)], sort_keys=True, default=str)
        suffix = "h" + hashlib.sha256(blob.encode()).hexdigest()[:10]
    return f"{dataset}-{preset}" + (f"-{suffix}" if suffix else "")


def fail(message: str, code: int = 2) -> NoReturn:
    """Prints ``error: message`` as one line on stderr and exits."""
    text = " ".join(str(message).split())
    sys.stderr.write(f"error: {text}\n")
    sys.stderr.flush()
    raise SystemExit(code)


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose usage errors are one ``error:`` line (exit code 2)
    instead of the usage text followed by the message."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see {self.prog} --help)")


READ_ERRORS: Tuple[Type[BaseException], ...] = (
    OSError, EOFError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile,
    zlib.error, struct.error)
"""What reading a truncated or corrupt file raises: ``json``, ``numpy.load`` (zip,
pickle and header errors), ``pandas.read_csv`` (its parser errors are ValueErrors),
undecodable text, and missing keys or wrong types in the parsed content."""


def file_error(path: str, err: BaseException) -> str:
    """One line saying `path` cannot be used because of `err`, naming the file once.

    Messages that already name `path` (the library's own checks) are kept as they
    are; others (``File is not a zip file``, ``Expecting value: line 1 column 1``)
    get the file and the exception type in front.
    """
    if isinstance(err, OSError) and err.strerror:
        return f"cannot read {path}: {err.strerror}"
    text = str(err).strip() or "no details"
    if path in text:
        return text
    if isinstance(err, EOFError):
        return f"{path} is empty or truncated ({type(err).__name__}: {text})"
    return f"{path} is corrupt or not in the expected format ({type(err).__name__}: {text})"


def quiet_libraries(import_tensorflow: bool = False) -> None:
    """Silences Python warnings and TensorFlow's C++ start-up noise.

    Args:
        import_tensorflow: Also import TensorFlow now, with file descriptor 2
            pointed at /dev/null meanwhile: its CUDA plugin registration and device
            probing print lines (even on CPU-only machines) that no log level hides.
            Python exceptions still propagate.
    """
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="keras")
    if not import_tensorflow or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class EtaFilter(logging.Filter):
    """Appends the time left to ``tfdarts`` end-of-epoch lines.

    The library's epoch lines carry loss, metric and learning rate; this adds
    ``~1h02m03s left`` from the mean epoch time of the job so far.
    """

    _EPOCH_DONE = "%s epoch %d/%d done in"

    def __init__(self) -> None:
        super().__init__()
        self.seconds: Dict[str, List[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        if (isinstance(msg, str) and msg.startswith(self._EPOCH_DONE) and "left" not in msg
                and isinstance(record.args, tuple) and len(record.args) >= 4):
            name, epoch, epochs, seconds = record.args[:4]
            history = self.seconds.setdefault(str(name), [])
            if epoch == 1 or (history and len(history) >= epoch):
                history.clear()
            history.append(float(seconds))
            left = (int(epochs) - int(epoch)) * (sum(history) / len(history))
            record.msg = msg + " | %s left"
            record.args = tuple(record.args) + (format_duration(left),)
        return True


class Interrupted(Exception):
    """SIGINT/SIGTERM, raised as an ordinary exception so TFX records the step as FAILED."""


class _PropagateInterrupts:
    """Handler mix-in: a signal that lands while a line is written must not be
    swallowed by logging's error handler (which would print it and carry on)."""

    def handleError(self, record: logging.LogRecord) -> None:
        if isinstance(sys.exc_info()[1], Interrupted):
            raise sys.exc_info()[1]
        super().handleError(record)  # type: ignore[misc]


class _StreamHandler(_PropagateInterrupts, logging.StreamHandler):
    """Console handler that lets `Interrupted` through."""


class _FileHandler(_PropagateInterrupts, logging.FileHandler):
    """File handler that lets `Interrupted` through."""


def configure_logging(log_file: Optional[str] = None, verbose: bool = False) -> None:
    """INFO progress lines with timestamps on stderr for ``tfdarts`` (and the pipeline);
    everything (TFX's absl logs included) in `log_file` when given."""
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.INFO)
    console = _StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    console.setLevel(logging.INFO)
    console.addFilter(_ConsoleFilter(verbose))
    root.addHandler(console)
    if log_file:
        os.makedirs(os.path.dirname(log_file), exist_ok=True)
        handler = _FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    eta = EtaFilter()
    logging.getLogger("tfdarts").addFilter(eta)
    logging.getLogger("tfdarts").setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.INFO)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


class _ConsoleFilter(logging.Filter):
    """Console: tfdarts/pipeline INFO lines; TFX's component start / cache lines turned
    into short progress lines; other libraries' warnings and errors; no absl chatter."""

    _NOISE = ("ArtifactQuery.property_predicate", "Execution %d failed",
              "This execution has already succeeded")

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose
        self.component = ""
        self.started = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbose:
            return True
        name = record.name
        if name.startswith("tfdarts") or name.startswith("pipeline"):
            return True
        if name == "absl":
            return self._absl(record)
        return record.levelno >= logging.WARNING

    def _absl(self, record: logging.LogRecord) -> bool:
        msg = record.msg if isinstance(record.msg, str) else ""
        if record.levelno >= logging.WARNING:
            return not any(n in msg for n in self._NOISE)
        args = record.args if isinstance(record.args, tuple) else ()
        if msg == "Component %s is running." and args:
            self.component, self.started = str(args[0]), time.time()
            return False
        if msg == "A cached execution %d is used." and args:
            record.msg, record.args = "%s: reused from cache (execution %d)", (self.component, args[0])
            return True
        if msg == "Going to run a new execution %d" and args:
            record.msg, record.args = "%s: running (execution %d)", (self.component, args[0])
            return True
        if msg == "Component %s is finished." and args:
            return False
        return False
