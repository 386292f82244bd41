"""Config loading, typed overrides and their errors."""

import pytest

from tfdarts import config as C


def test_defaults_match_reference():
    cfg = C.Config()
    s, r = cfg.search, cfg.retrain
    assert (s.cells, s.channels, s.epochs, s.batch_size) == (8, 16, 50, 64)
    assert (s.w_lr, s.w_lr_min, s.w_momentum, s.w_weight_decay, s.grad_clip) == (0.025, 0.001, 0.9, 3e-4, 5.0)
    assert (s.alpha_lr, s.alpha_beta1, s.alpha_beta2, s.alpha_weight_decay) == (3e-4, 0.5, 0.999, 1e-3)
    assert (r.cells, r.channels, r.batch_size, r.epochs, r.cutout, r.drop_path, r.auxiliary_weight) == \
        (20, 36, 96, 600, 16, 0.2, 0.4)


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("search:\n  epochs: 7\n  order: 2\ndata:\n  name: mnist\n")
    cfg = C.load_config([str(path)], ["search.epochs=3", "search.primitives=none,skip_connect",
                                      "search.w_lr=0.1"])
    assert cfg.search.epochs == 3 and cfg.search.order == 2 and cfg.data.name == "mnist"
    assert cfg.search.primitives == ("none", "skip_connect") and cfg.search.w_lr == 0.1
    assert C.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("override, message", [
    ("search.epoch=3", "unknown key search.epoch"),
    ("serch.epochs=3", "unknown section 'serch'"),
    ("search.epochs=three", "expected an integer"),
    ("search.w_lr=fast", "expected a number"),
    ("search.order=3", "search.order must be 1 or 2"),
    ("search.primitives=none,conv_9x9", "unknown ops"),
    ("baselines.random_budget_clock=cpu_time", "use wall or cpu"),
    ("epochs", "section.key=value"),
])
def test_bad_overrides(override, message):
    with pytest.raises(C.ConfigError, match=message):
        C.load_config(overrides=[override])


def test_bad_yaml_names_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("search: [1, 2\n")
    with pytest.raises(C.ConfigError, match="bad.yaml"):
        C.load_config([str(path)])
    path.write_text("search:\n  cells: many\n")
    with pytest.raises(C.ConfigError, match="bad.yaml: search.cells: expected an integer"):
        C.load_config([str(path)])


def test_config_is_frozen():
    cfg = C.Config()
    with pytest.raises(Exception):
        cfg.search.epochs = 1  # type: ignore[misc]


@pytest.mark.parametrize("override, allowed", [
    ("search.seed=-1", ">= 0"), ("runtime.devices=-2", ">= 0"), ("search.stem_multiplier=0", ">= 1"),
    ("search.w_lr=nan", "> 0"), ("retrain.lr=inf", "> 0"), ("retrain.drop_path=1.5", "[0, 1)"),
    ("retrain.cutout=-3", ">= 0"), ("search.steps_per_epoch=-1", ">= 0"),
    ("data.test_fraction=1", "(0, 1)"), ("search.alpha_beta2=1", "[0, 1)"),
    ("baselines.random_samples=0", ">= 1"), ("runtime.log_every=-5", ">= 0"),
    ("search.partial_channels=3", "divide search.channels"), ("search.warmup_epochs=50", "0 .. search.epochs"),
    ("runtime.intra_op_threads=-1", ">= 0"), ("runtime.graph_optimization=maybe", "auto, on, off"),
])
def test_out_of_range_values_name_key_value_and_range(override, allowed):
    key, value = override.split("=")
    with pytest.raises(C.ConfigError) as err:
        C.load_config(overrides=[override])
    message = str(err.value)
    assert key in message and allowed in message
    assert "\n" not in message


def test_every_numeric_field_has_a_range():
    import dataclasses
    import typing

    for section, ranges in C.RANGES.items():
        cls = typing.get_type_hints(C.Config)[section]
        numeric = {f.name for f in dataclasses.fields(cls)
                   if typing.get_type_hints(cls)[f.name] in (int, float)}
        special = {"order", "partial_channels", "warmup_epochs", "max_skips", "eigen_batches",
                   "eigen_iters", "early_stop_window", "early_stop_factor", "early_stop_min_epoch",
                   "beta_decay", "aux_skip"}  # checked with their own rules
        assert numeric - special <= set(ranges), (section, numeric - special - set(ranges))


def test_advisories_name_an_unannealed_one_epoch_retrain():
    assert C.advisories(C.Config()) == ()
    one = C.apply_overrides(C.Config(), ["retrain.epochs=1"])
    (note,) = C.advisories(one)
    assert note.startswith("retrain.epochs=1") and "retrain.steps_per_epoch" in note
    assert C.advisories(C.apply_overrides(one, ["retrain.lr_min=0.025"])) == ()
