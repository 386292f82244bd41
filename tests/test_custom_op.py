"""An op registered once is accepted everywhere: genotype, config, sampler, figures, search, retrain."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
from conftest import FASHION_DIR

from tfdarts import analysis, contract, evaluation, network, ops, sampler, space, trainer
from tfdarts import config as C
from tfdarts import data as D
from tfdarts.genotype import Genotype, num_edges, parse_alphas

OP = "conv_1x1"
CANDIDATES = ("none", "skip_connect", OP)


@pytest.fixture
def conv_1x1():
    """Registers ``conv_1x1`` (ReLU, 1x1 conv, BN) for one test."""

    @ops.register_op(OP)
    def factory(channels: int, strides: int, affine: bool, name: str) -> keras.layers.Layer:
        return ops.relu_conv_bn(channels, 1, strides, 0, affine, name, affine)

    yield OP
    ops.unregister_op(OP)
    assert OP not in space.known_ops() and OP not in ops.OPS


@pytest.fixture(scope="module")
def tiny_data():
    return D.prepare(C.DataConfig(name="fashion_mnist", data_dir=FASHION_DIR, max_train=128, max_test=64))


def _config(*extra):
    return C.load_config(overrides=[
        "search.cells=3", "search.channels=4", "search.nodes=2", "search.batch_size=32",
        "search.epochs=1", f"search.primitives={','.join(CANDIDATES)}", "retrain.cells=3",
        "retrain.channels=4", "retrain.batch_size=32", "retrain.epochs=1", "retrain.eval_every=0",
        "retrain.auxiliary_weight=0", "runtime.log_every=0", *extra])


def test_unknown_op_is_rejected_until_registered(conv_1x1):
    ops.unregister_op(OP)
    with pytest.raises(C.ConfigError, match="unknown ops"):
        _config()
    with pytest.raises(ValueError, match="unknown op"):
        Genotype(((OP, 0), (OP, 1)), (2,), ((OP, 0), (OP, 1)), (2,))
    ops.register_op(OP)(lambda c, s, a, n: ops.relu_conv_bn(c, 1, s, 0, a, n, a))


def test_registered_op_is_known_everywhere(conv_1x1):
    assert OP in space.known_ops() and OP not in space.parameter_free_ops()
    assert _config().search.primitives == CANDIDATES
    drawn = {op for g in sampler.random_genotypes(10, 0, CANDIDATES, nodes=2) for op, _ in g.normal}
    assert OP in drawn
    assert space.colour(OP).startswith("#")
    assert OP in analysis._op_colors([OP])
    with pytest.raises(ValueError, match="already registered"):
        ops.register_op(OP)(lambda *a: None)


def test_search_parse_and_retrain_with_a_new_op(conv_1x1, tiny_data, tmp_path):
    config = _config()
    searched = trainer.search(config, tiny_data, str(tmp_path / "search"))
    with np.load(os.path.join(tmp_path, "search", contract.ALPHAS_FILE)) as f:
        assert list(f["primitives"]) == list(CANDIDATES)
    assert Genotype.load(os.path.join(tmp_path, "search", contract.GENOTYPE_FILE)) == searched.genotype
    alphas = np.zeros((num_edges(2), len(CANDIDATES)))
    alphas[:, CANDIDATES.index(OP)] = 1.0
    genotype = parse_alphas(alphas, alphas, CANDIDATES, nodes=2)
    assert {op for op, _ in genotype.normal + genotype.reduce} == {OP}
    model_fn = network.model_fn(tiny_data.spec.task, genotype, config.retrain)
    trainer.retrain(config, tiny_data, model_fn, str(tmp_path / "train"))
    record = evaluation.evaluate_and_export(config, tiny_data, str(tmp_path / "train"),
                                            str(tmp_path / "eval"))
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0
    assert Genotype.load(os.path.join(tmp_path, "eval", contract.GENOTYPE_FILE)) == genotype
