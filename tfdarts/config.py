"""Run settings as frozen dataclasses, loaded from YAML with typed overrides.

No TensorFlow here. A config has sections (``data``, ``search``, ``retrain``,
``baselines``, ``runtime``); YAML files and ``key=value`` overrides address
fields as ``section.field`` (e.g. ``search.epochs=10``).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import yaml

from tfdarts import space
from tfdarts.contract import KNOWN_DATASETS
from tfdarts.space import PRIMITIVES

SPLITS: Tuple[str, ...] = ("random", "grouped")
AUGMENTS: Tuple[str, ...] = ("auto", "none", "crop_flip")


class ConfigError(ValueError):
    """A config file or override is invalid."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data and how to split, normalise and augment it."""

    name: str = "fashion_mnist"
    data_dir: str = ""  # local files (IDX folder, .npz, kirigami table); "" = automatic
    split: str = "random"  # graphene_kirigami: "random" or "grouped" (by mirror orbit)
    target: str = "yield_strain"  # graphene_kirigami: yield_strain, toughness, yield_stress
    test_fraction: float = 0.2  # for sources without a test split
    max_train: int = 0  # keep only the first N training examples (0 = all)
    max_test: int = 0  # keep only the first N test examples (0 = all)
    augment: str = "auto"  # auto, none, crop_flip
    download: bool = True  # let TFDS download datasets that are not prepared yet
    tfds_dir: str = ""  # TFDS data folder ("" = TFDS's default, ~/tensorflow_datasets)
    seed: int = 2
    # image folders and CSV manifests (tfdarts.layouts)
    image_size: Tuple[int, ...] = ()  # resize images to (H, W) or (S,) = S x S; () = keep (all equal)
    color: str = "auto"  # auto (gray if every image is), gray, rgb
    path_column: str = "path"  # manifest column of file paths (relative to the CSV's folder)
    label_column: str = "label"  # manifest column of class labels (classification)
    target_columns: Tuple[str, ...] = ()  # manifest columns of float targets: regression


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Supernet size and bilevel optimisation settings (reference defaults)."""

    cells: int = 8
    channels: int = 16
    nodes: int = 4
    stem_multiplier: int = 3
    primitives: Tuple[str, ...] = PRIMITIVES
    epochs: int = 50
    batch_size: int = 64
    steps_per_epoch: int = 0  # 0 = one pass over the w-train half
    order: int = 1  # 1 = first order, 2 = second order (unrolled)
    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    grad_clip: float = 5.0
    alpha_lr: float = 3e-4
    alpha_beta1: float = 0.5
    alpha_beta2: float = 0.999
    alpha_weight_decay: float = 1e-3
    seed: int = 2
    # --- remedies for collapse and for searches that do not move (all off = the paper) ---
    beta_decay: float = 0.0  # beta-DARTS: alpha loss + lambda_t * mean_edges logsumexp(alpha), lambda_t 0 -> this
    aux_skip: float = 0.0  # DARTS-: weight of an auxiliary skip on every edge, decayed linearly to 0
    partial_channels: int = 1  # PC-DARTS: 1/K of the channels through the mixed op, edge normalisation
    warmup_epochs: int = 0  # train the weights only for this many epochs before the alphas move
    max_skips: int = -1  # P-DARTS: at most this many skip_connect in the derived normal cell (-1 = any)
    eigen_batches: int = 1  # validation batches for the alpha-Hessian eigenvalue each epoch (0 = off)
    eigen_iters: int = 8  # power iterations for that eigenvalue
    early_stop: str = "none"  # "eigen": R-DARTS rule on the eigenvalue trace
    early_stop_window: int = 2  # epochs averaged on each side of the R-DARTS comparison
    early_stop_factor: float = 1.3  # stop when the windowed mean rises by more than this factor
    early_stop_min_epoch: int = 4  # never stop before this epoch
    # memory: keep only each cell's inputs for the backward pass and recompute the rest there
    # (same gradients; paper config 7.0 -> 4.0 GB peak for about 22 % more CPU per step)
    recompute_cells: bool = False


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
    """Training the discrete network from scratch (reference defaults)."""

    cells: int = 20
    channels: int = 36
    epochs: int = 600
    batch_size: int = 96
    steps_per_epoch: int = 0
    lr: float = 0.025
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    cutout: int = 16
    drop_path: float = 0.2
    auxiliary_weight: float = 0.4  # 0 disables the auxiliary head
    eval_every: int = 1  # evaluate on the test split every N epochs for learning curves (0 = never)
    seed: int = 2


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    """Comparison models trained in the same code path."""

    random_samples: int = 8
    random_epochs: int = 2
    resnet_epochs: int = 0  # 0 = same as retrain.epochs
    # random search stops sampling once its candidates' training has used this many
    # seconds (0 = no budget: all random_samples); a cost match for a search's seconds
    random_budget_seconds: float = 0.0
    # the clock of that budget: wall seconds, or cpu (processor seconds of the process,
    # nearly unchanged when other work shares the machine)
    random_budget_clock: str = "wall"
    include: Tuple[str, ...] = ("random", "resnet18", "tiny_resnet", "darts_v2")


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Where and how computation runs."""

    devices: int = 0  # replicas for MirroredStrategy; 0 = all visible, 1 = no strategy
    # mirrored: the devices of this host; multi_worker: MultiWorkerMirroredStrategy over the
    # hosts of TF_CONFIG (every worker runs the same command; the chief writes the files)
    strategy: str = "mirrored"
    log_every: int = 50  # steps between progress lines within an epoch (0 = epoch lines only)
    # TensorFlow's thread pools (0 = TensorFlow's choice: every core for each op, as many
    # ops at once as cores). One thread per op, ops side by side, was 1.15-1.55x faster on
    # 2 cores (bench/README.md); the cpu and tiny presets set intra_op_threads=1. Applied
    # when the process starts its first TensorFlow work (later: logged, not applied).
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    # grappler's graph passes on the search and retrain graphs: on, off, or auto (off on a
    # host without GPUs, where they cost most of a first step and bought no speed)
    graph_optimization: str = "auto"


@dataclasses.dataclass(frozen=True)
class Config:
    """A complete run configuration."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    search: SearchConfig = dataclasses.field(default_factory=SearchConfig)
    retrain: RetrainConfig = dataclasses.field(default_factory=RetrainConfig)
    baselines: BaselineConfig = dataclasses.field(default_factory=BaselineConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)

    def to_dict(self) -> Dict[str, Any]:
        """Plain nested dict (tuples become lists)."""
        return _to_plain(dataclasses.asdict(self))


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _section_types(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """Converts a YAML or string value to the field type `kind`."""
    origin = typing.get_origin(kind)
    if origin in (tuple, Tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = {a for a in typing.get_args(kind) if a is not Ellipsis}
        return tuple(_coerce(v, item, key) for v in value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported field type {kind}")


def _sections() -> Dict[str, type]:
    return {f.name: typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config)}


def _apply(config: Config, updates: Mapping[str, Mapping[str, Any]], origin: str) -> Config:
    sections = _sections()
    changed = {}
    for name, values in updates.items():
        if name not in sections:
            raise ConfigError(f"{origin}: unknown section {name!r}; known: {', '.join(sections)}")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{origin}: section {name!r} must be a mapping")
        types = _section_types(sections[name])
        fields = {}
        for key, value in values.items():
            if key not in types:
                raise ConfigError(f"{origin}: unknown key {name}.{key}; known keys in {name}: "
                                  f"{', '.join(types)}")
            fields[key] = _coerce(value, types[key], f"{origin}: {name}.{key}")
        changed[name] = dataclasses.replace(getattr(config, name), **fields)
    return dataclasses.replace(config, **changed)


def parse_override(text: str) -> Tuple[str, str, str]:
    """Splits ``section.key=value`` into its parts."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    path, value = text.split("=", 1)
    if path.count(".") != 1:
        raise ConfigError(f"override {text!r}: key must be section.key, e.g. search.epochs=10")
    section, key = path.strip().split(".")
    return section, key, value.strip()


def apply_overrides(config: Config, overrides: Iterable[str]) -> Config:
    """Applies ``section.key=value`` strings, rejecting unknown keys and bad types."""
    for text in overrides:
        section, key, value = parse_override(text)
        config = _apply(config, {section: {key: value}}, "override")
    return config


def load_yaml(path: str) -> Dict[str, Any]:
    """Reads a YAML config file into a dict (errors name the file)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(err).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return data


def load_config(paths: Sequence[str] = (), overrides: Iterable[str] = (),
                base: Optional[Config] = None) -> Config:
    """Builds a config from defaults, YAML files (in order) and overrides.

    Args:
        paths: YAML files, later ones overriding earlier ones.
        overrides: ``section.key=value`` strings applied last.
        base: Starting config (defaults when None).

    Returns:
        The validated, frozen `Config`.
    """
    config = base or Config()
    for path in paths:
        config = _apply(config, load_yaml(path), path)
    config = apply_overrides(config, overrides)
    validate(config)
    return config


def validate(config: Config) -> None:
    """Checks value ranges that types alone cannot express.

    Raises:
        ConfigError: The first problem, naming ``section.key`` and the allowed values.
    """
    validate_data(config.data)
    s = config.search
    _raise_first([(s.order in (1, 2), f"search.order must be 1 or 2, got {s.order}")])
    for section in ("search", "retrain", "baselines", "runtime"):
        _check_ranges(section, getattr(config, section))
    _raise_first([
        (s.w_lr_min <= s.w_lr, f"search.w_lr_min={s.w_lr_min} exceeds search.w_lr={s.w_lr}"),
        (config.retrain.lr_min <= config.retrain.lr,
         f"retrain.lr_min={config.retrain.lr_min} exceeds retrain.lr={config.retrain.lr}"),
    ])
    _validate_remedies(s)
    _raise_first([(config.runtime.strategy in STRATEGIES,
                   f"runtime.strategy={config.runtime.strategy!r}; use {' or '.join(STRATEGIES)}"),
                  (config.runtime.graph_optimization in GRAPH_OPTIMIZATION,
                   f"runtime.graph_optimization={config.runtime.graph_optimization!r}; "
                   f"use {', '.join(GRAPH_OPTIMIZATION)}"),
                  (config.baselines.random_budget_clock in CLOCKS,
                   f"baselines.random_budget_clock={config.baselines.random_budget_clock!r}; "
                   f"use {' or '.join(CLOCKS)}")])
    try:
        space.check_primitives(s.primitives)
    except ValueError as err:
        raise ConfigError(f"search.primitives: {err}") from None


def advisories(config: Config) -> Tuple[str, ...]:
    """Valid settings that likely do not do what the user expects, one sentence each.

    Returns:
        Messages to show before a run (empty when nothing applies).
    """
    r = config.retrain
    notes = []
    if r.epochs == 1 and r.lr > r.lr_min:
        notes.append(
            f"retrain.epochs=1: the cosine learning rate steps once per epoch, so the whole "
            f"retrain runs at retrain.lr={r.lr:g} and ends unannealed, and its final metric varies "
            f"from seed to seed (docs/results.md, K9-K10); to anneal a short retrain, split it into "
            f"a few epochs with retrain.steps_per_epoch")
    return tuple(notes)


EARLY_STOPS: Tuple[str, ...] = ("none", "eigen")
COLORS: Tuple[str, ...] = ("auto", "gray", "rgb")
STRATEGIES: Tuple[str, ...] = ("mirrored", "multi_worker")
CLOCKS: Tuple[str, ...] = ("wall", "cpu")
GRAPH_OPTIMIZATION: Tuple[str, ...] = ("auto", "on", "off")


def _validate_remedies(s: SearchConfig) -> None:
    _raise_first([
        (math.isfinite(s.beta_decay) and s.beta_decay >= 0.0,
         f"search.beta_decay={s.beta_decay}; use a finite value >= 0 (0 = off)"),
        (math.isfinite(s.aux_skip) and s.aux_skip >= 0.0,
         f"search.aux_skip={s.aux_skip}; use a finite value >= 0 (0 = off)"),
        (s.partial_channels >= 1, f"search.partial_channels={s.partial_channels}; use 1 (off) or more"),
        (s.channels % s.partial_channels == 0,
         f"search.partial_channels={s.partial_channels} must divide search.channels={s.channels}"),
        (0 <= s.warmup_epochs < s.epochs,
         f"search.warmup_epochs={s.warmup_epochs}; use 0 .. search.epochs - 1 ({s.epochs - 1})"),
        (s.max_skips >= -1, f"search.max_skips={s.max_skips}; use -1 (no limit) or a count >= 0"),
        (s.eigen_batches >= 0, f"search.eigen_batches={s.eigen_batches}; use 0 (off) or more"),
        (s.eigen_iters >= 1, f"search.eigen_iters={s.eigen_iters}; use 1 or more"),
        (s.early_stop in EARLY_STOPS, f"search.early_stop={s.early_stop!r}; use {' or '.join(EARLY_STOPS)}"),
        (s.early_stop != "eigen" or s.eigen_batches > 0,
         "search.early_stop=eigen needs search.eigen_batches >= 1"),
        (s.early_stop_window >= 1, f"search.early_stop_window={s.early_stop_window}; use 1 or more"),
        (math.isfinite(s.early_stop_factor) and s.early_stop_factor > 1.0,
         f"search.early_stop_factor={s.early_stop_factor}; use a finite value > 1"),
        (s.early_stop_min_epoch >= 2 * s.early_stop_window,
         f"search.early_stop_min_epoch={s.early_stop_min_epoch}; use at least 2 * "
         f"search.early_stop_window ({2 * s.early_stop_window})"),
    ])


def validate_data(cfg: DataConfig) -> None:
    """Checks the data settings (the one place they are validated).

    Raises:
        ConfigError: The first problem, naming ``data.key`` and the allowed values.
    """
    _check_ranges("data", cfg)
    _raise_first([
        (bool(cfg.name), "data.name is empty; use one of " + ", ".join(KNOWN_DATASETS)),
        (cfg.split in SPLITS, f"data.split={cfg.split!r}; use {' or '.join(SPLITS)}"),
        (cfg.augment in AUGMENTS, f"data.augment={cfg.augment!r}; use {', '.join(AUGMENTS)}"),
        (cfg.color in COLORS, f"data.color={cfg.color!r}; use {', '.join(COLORS)}"),
        (len(cfg.image_size) <= 2 and all(v >= 1 for v in cfg.image_size),
         f"data.image_size={','.join(map(str, cfg.image_size))}: give H,W or S (positive), or "
         "nothing to keep the images' size"),
    ])


# (low, high, low inclusive, high inclusive); None = unbounded on that side
_AT_LEAST_1 = (1, None, True, False)
_AT_LEAST_0 = (0, None, True, False)
_POSITIVE = (0, None, False, False)
_UNIT_OPEN = (0, 1, True, False)  # [0, 1)

RANGES: Dict[str, Dict[str, Tuple[Any, Any, bool, bool]]] = {
    "data": {"test_fraction": (0, 1, False, False), "max_train": _AT_LEAST_0,
             "max_test": _AT_LEAST_0, "seed": _AT_LEAST_0},
    "search": {"cells": _AT_LEAST_1, "channels": _AT_LEAST_1, "nodes": _AT_LEAST_1,
               "stem_multiplier": _AT_LEAST_1, "epochs": _AT_LEAST_1, "batch_size": _AT_LEAST_1,
               "steps_per_epoch": _AT_LEAST_0, "w_lr": _POSITIVE, "w_lr_min": _AT_LEAST_0,
               "w_momentum": _UNIT_OPEN, "w_weight_decay": _AT_LEAST_0, "grad_clip": _AT_LEAST_0,
               "alpha_lr": _POSITIVE, "alpha_beta1": _UNIT_OPEN, "alpha_beta2": _UNIT_OPEN,
               "alpha_weight_decay": _AT_LEAST_0, "seed": _AT_LEAST_0},
    "retrain": {"cells": _AT_LEAST_1, "channels": _AT_LEAST_1, "epochs": _AT_LEAST_1,
                "batch_size": _AT_LEAST_1, "steps_per_epoch": _AT_LEAST_0, "lr": _POSITIVE,
                "lr_min": _AT_LEAST_0, "momentum": _UNIT_OPEN, "weight_decay": _AT_LEAST_0,
                "grad_clip": _AT_LEAST_0, "cutout": _AT_LEAST_0, "drop_path": _UNIT_OPEN,
                "auxiliary_weight": _AT_LEAST_0, "eval_every": _AT_LEAST_0, "seed": _AT_LEAST_0},
    "baselines": {"random_samples": _AT_LEAST_1, "random_epochs": _AT_LEAST_1,
                  "resnet_epochs": _AT_LEAST_0, "random_budget_seconds": _AT_LEAST_0},
    "runtime": {"devices": _AT_LEAST_0, "log_every": _AT_LEAST_0, "intra_op_threads": _AT_LEAST_0,
                "inter_op_threads": _AT_LEAST_0},
}
"""Allowed interval of every numeric field, by section (checked by `validate`)."""


def _interval(low: Any, high: Any, low_in: bool, high_in: bool) -> str:
    if high is None:
        return f"{'>=' if low_in else '>'} {low}"
    return f"{'[' if low_in else '('}{low}, {high}{']' if high_in else ')'}"


def _in_range(value: float, low: Any, high: Any, low_in: bool, high_in: bool) -> bool:
    if not math.isfinite(value):
        return False
    above = value >= low if low_in else value > low
    below = high is None or (value <= high if high_in else value < high)
    return above and below


def _check_ranges(section: str, values: Any) -> None:
    """Raises ConfigError naming ``section.key``, the value and the allowed interval."""
    for key, bounds in RANGES[section].items():
        value = getattr(values, key)
        if not _in_range(float(value), *bounds):
            raise ConfigError(f"{section}.{key}={value} is out of range; allowed: {_interval(*bounds)}")


def _raise_first(checks: Sequence[Tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def from_dict(data: Mapping[str, Any]) -> Config:
    """Rebuilds a config from `Config.to_dict()` output."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config must be a mapping of sections, got {type(data).__name__}")
    config = _apply(Config(), data, "config")
    validate(config)
    return config
