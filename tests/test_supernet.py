"""Supernet: mixed op semantics, variable ownership, sizing from the task."""

import numpy as np
import pytest
import tensorflow as tf

from tfdarts.genotype import PRIMITIVES, num_edges
from tfdarts.space import reduction_layers
from tfdarts.supernet import MixedOp, SearchNetwork
from tfdarts.task import Task


@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("chosen", [p for p in PRIMITIVES if p != "none"])
def test_one_hot_mixed_op_equals_chosen_op(chosen, strides):
    mixed = MixedOp(4, strides, PRIMITIVES, name="edge")
    x = tf.random.normal((2, 10, 9, 4))
    weights = tf.one_hot(PRIMITIVES.index(chosen), len(PRIMITIVES))
    out = mixed(x, weights, training=True)
    op = mixed.candidates[mixed.active.index(PRIMITIVES.index(chosen))]
    np.testing.assert_allclose(out.numpy(), op(x, training=True).numpy(), rtol=1e-6, atol=1e-6)


def test_one_hot_none_gives_zeros():
    mixed = MixedOp(4, 2, PRIMITIVES, name="edge")
    out = mixed(tf.random.normal((2, 10, 10, 4)), tf.one_hot(0, len(PRIMITIVES)), training=True)
    assert tuple(out.shape) == (2, 5, 5, 4) and not np.any(out.numpy())


def _net(task, **kw):
    net = SearchNetwork(task, cells=kw.pop("cells", 3), channels=kw.pop("channels", 4),
                        nodes=kw.pop("nodes", 2), **kw)
    net.build_from_task()
    return net


def test_variable_split_is_disjoint_and_complete():
    net = _net(Task((28, 28, 1), 10))
    w = {id(v) for v in net.weight_variables}
    a = {id(v) for v in net.arch_variables}
    assert not w & a
    assert w | a == {id(v) for v in net.trainable_variables}
    assert len(net.arch_variables) == 2 and net.alpha_normal.shape == (num_edges(2), len(PRIMITIVES))


@pytest.mark.parametrize("task", [Task((28, 28, 1), 10), Task((32, 32, 3), 100),
                                  Task((30, 80, 1), 1, "regression"), Task((30, 80, 1), 3, "regression")])
def test_sized_from_task(task):
    net = _net(task)
    out = net(tf.random.normal((2,) + task.input_shape), training=True)
    assert tuple(out.shape) == (2, task.num_outputs)
    assert net.stem_conv.kernel.shape[2] == task.input_shape[2]


def test_reference_parameter_count():
    """8 cells, C=16, 28x28x1: the original implementation's count minus the stem's 2 input channels."""
    net = _net(Task((28, 28, 1), 10), cells=8, channels=16, nodes=4)
    params = sum(int(np.prod(v.shape)) for v in net.weight_variables)
    assert params == 1_930_618 - 2 * 3 * 3 * 48


def test_reduction_positions():
    assert reduction_layers(8) == (2, 5) and reduction_layers(5) == (1, 3) and reduction_layers(20) == (6, 13)


def test_export_probs_and_alpha_init():
    net = _net(Task((28, 28, 1), 10), seed=5)
    probs = net.export_probs()
    assert probs["primitives"] == list(PRIMITIVES)
    np.testing.assert_allclose(probs["normal"].sum(-1), 1.0, rtol=1e-9)
    # 1e-3 * N(0, 1) initialisation, different draws for the two cell types
    assert np.abs(net.alpha_normal.numpy()).max() < 0.01
    assert not np.allclose(net.alpha_normal.numpy(), net.alpha_reduce.numpy())


def test_unknown_primitive_fails():
    with pytest.raises(KeyError, match="known ops"):
        SearchNetwork(Task((8, 8, 1), 2), primitives=("none", "conv_9x9"))
