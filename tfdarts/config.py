"""Run settings as frozen dataclasses, loaded from YAML with typed overrides.

No TensorFlow here. A config has sections (``data``, ``search``, ``retrain``,
``baselines``, ``runtime``); YAML files and ``key=value`` overrides address
fields as ``section.field`` (e.g. ``search.epochs=10``).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import yaml

from tfdarts.genotype import PRIMITIVES


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
    include: Tuple[str, ...] = ("random", "resnet18", "tiny_resnet", "darts_v2")


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Where and how computation runs."""

    devices: int = 0  # replicas for MirroredStrategy; 0 = all visible, 1 = no strategy
    log_every: int = 50  # steps between progress lines within an epoch (0 = epoch lines only)


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
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
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
    """Checks value ranges that types alone cannot express."""
    s, r = config.search, config.retrain
    checks = [
        (s.order in (1, 2), f"search.order must be 1 or 2, got {s.order}"),
        (s.cells >= 1 and r.cells >= 1, "cells must be >= 1"),
        (s.channels >= 1 and r.channels >= 1, "channels must be >= 1"),
        (s.nodes >= 1, "search.nodes must be >= 1"),
        (s.batch_size >= 1 and r.batch_size >= 1, "batch_size must be >= 1"),
        (s.epochs >= 1 and r.epochs >= 1, "epochs must be >= 1"),
        (any(p != "none" for p in s.primitives), "search.primitives needs an op besides none"),
        (len(set(s.primitives)) == len(s.primitives), "search.primitives has duplicates"),
        (config.data.split in ("random", "grouped"), "data.split must be random or grouped"),
        (0.0 < config.data.test_fraction < 1.0, "data.test_fraction must be in (0, 1)"),
        (config.data.augment in ("auto", "none", "crop_flip"), "data.augment must be auto, none or crop_flip"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    unknown = [p for p in s.primitives if p not in PRIMITIVES]
    if unknown:
        raise ConfigError(f"search.primitives: unknown ops {unknown}; known ops: {', '.join(PRIMITIVES)}")


def from_dict(data: Mapping[str, Any]) -> Config:
    """Rebuilds a config from `Config.to_dict()` output."""
    config = _apply(Config(), data, "config")
    validate(config)
    return config
