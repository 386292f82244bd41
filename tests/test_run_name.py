"""Default run folder names: different results, different folders; same command, same folder."""

from conftest import KIRIGAMI_DIR

from pipeline import cli


def _name(dataset, *overrides):
    config = cli.build_config(dataset, "tiny", overrides=list(overrides))
    return cli.run_name(dataset, "tiny", cli.config_changes(config, dataset, "tiny"))


def test_defaults_keep_the_plain_name():
    assert _name("fashion_mnist") == "fashion_mnist-tiny"


def test_where_and_how_do_not_change_the_folder():
    assert _name("fashion_mnist", "data.data_dir=/elsewhere", "runtime.log_every=1",
                 "runtime.devices=1") == "fashion_mnist-tiny"


def test_one_override_changes_the_folder_readably():
    grouped, random = (_name("graphene_kirigami", f"data.data_dir={KIRIGAMI_DIR}", f"data.split={s}")
                       for s in ("grouped", "random"))
    assert grouped == "graphene_kirigami-tiny-split=grouped" and random != grouped


def test_same_key_in_two_sections_does_not_collide():
    assert _name("fashion_mnist", "search.epochs=3") != _name("fashion_mnist", "retrain.epochs=3")


def test_long_changes_become_a_stable_hash():
    many = ["search.primitives=none,skip_connect,sep_conv_3x3", "search.alpha_lr=0.001",
            "retrain.epochs=3", "retrain.lr=0.01"]
    name = _name("fashion_mnist", *many)
    assert name.startswith("fashion_mnist-tiny-h") and len(name) < 40
    assert name == _name("fashion_mnist", *reversed(many))
    assert name != _name("fashion_mnist", *many[:-1], "retrain.lr=0.02")


def test_own_data_in_two_folders_gets_two_run_folders(tmp_path):
    """For the user's own data the folder is the data: its name and a hash of its path
    join the run's name; a built-in dataset's location does not."""
    a, b = tmp_path / "a" / "scans", tmp_path / "b" / "scans"
    parts = []
    for folder in (a, a, b):
        config = cli.build_config("my_scans", "tiny", overrides=[f"data.data_dir={folder}"])
        parts.append(cli.data_name_part(config, "my_scans"))
    assert parts[0] == parts[1] and parts[0] != parts[2]
    assert parts[0][0].startswith("data=scans.")
    config = cli.build_config("fashion_mnist", "tiny", overrides=["data.data_dir=/elsewhere"])
    assert cli.data_name_part(config, "fashion_mnist") == []
