"""The search loop: alphas move, files are written, divergence stops (replicas agreeing:
test_reduction; resume after a kill: test_kill)."""

import json
import os

import numpy as np
import pytest
from conftest import FASHION_DIR

from tfdarts import config as C
from tfdarts import data as D
from tfdarts import contract, trainer
from tfdarts.genotype import Genotype

TINY = ["search.cells=3", "search.channels=4", "search.nodes=2", "search.batch_size=16"]


@pytest.fixture(scope="module")
def fashion_small():
    cfg = C.DataConfig(name="fashion_mnist",
                       data_dir=FASHION_DIR,
                       max_train=320, max_test=64)
    return D.prepare(cfg)


def _search_config(epochs=2):
    return C.load_config(overrides=TINY + [f"search.epochs={epochs}", "search.batch_size=32",
                                           "search.alpha_lr=0.003", "runtime.log_every=0"])


def test_search_moves_alphas_and_writes_its_files(fashion_small, tmp_path):
    """Resume after a kill is `tests/test_kill.py`'s; this is one uninterrupted search."""
    out = str(tmp_path / "search")
    result = trainer.search(_search_config(), fashion_small, out)
    history = json.load(open(os.path.join(out, contract.HISTORY_FILE)))
    assert [r["epoch"] for r in history["epochs"]] == [1, 2] and result.resumed_from == 0
    assert history["fingerprint"] == fashion_small.spec.fingerprint
    assert os.listdir(os.path.join(out, contract.CHECKPOINT_DIR))
    for r in history["epochs"]:
        assert np.isfinite(r["train_loss"]) and 0 <= r["val_metric"] <= 1
        Genotype.from_dict(r["genotype"])

    with np.load(os.path.join(out, contract.ALPHAS_FILE)) as f:
        normal, reduce = f["normal"], f["reduce"]
        assert normal.shape == (2, 5, 8) and reduce.shape == (2, 5, 8)
        assert list(f["primitives"]) == list(C.SearchConfig().primitives)
    uniform = 1.0 / 8
    assert np.abs(normal[-1] - uniform).max() > 1e-3  # alphas left their 1e-3 init
    assert not np.allclose(normal[0], normal[1])  # and kept moving in epoch 2
    assert Genotype.load(os.path.join(out, contract.GENOTYPE_FILE)) == result.genotype
    assert result.params > 0 and result.seconds > 0


def test_nan_loss_stops_with_epoch_and_step(fashion_small, tmp_path):
    cfg = C.load_config(overrides=TINY + ["search.epochs=1", "search.batch_size=32",
                                          "search.w_lr=1e30", "search.grad_clip=0",
                                          "runtime.log_every=0"])
    with pytest.raises(trainer.TrainingDiverged, match=r"epoch 1, step \d+"):
        trainer.search(cfg, fashion_small, str(tmp_path / "nan"))


def test_batch_larger_than_half_is_rejected(fashion_small, tmp_path):
    cfg = C.load_config(overrides=TINY + ["search.batch_size=512"])
    with pytest.raises(ValueError, match="batch"):
        trainer.search(cfg, fashion_small, str(tmp_path / "big"))


def test_a_checkpoint_of_another_supernet_is_refused_with_advice(fashion_small, tmp_path):
    out = str(tmp_path / "search")
    trainer.search(_search_config(epochs=1), fashion_small, out)
    other = C.load_config(overrides=TINY + ["search.nodes=3", "search.epochs=2", "search.batch_size=32",
                                            "runtime.log_every=0"])
    with pytest.raises(ValueError, match="does not match this job's model.*move .* away"):
        trainer.search(other, fashion_small, out)
