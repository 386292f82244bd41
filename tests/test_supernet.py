"""Supernet: grouped edges compute DARTS' mixed op, variable ownership, sizing from the task."""

import numpy as np
import pytest
import tensorflow as tf
from edges import reference_op

from tfdarts import ops
from tfdarts.genotype import PRIMITIVES, num_edges
from tfdarts.space import reduction_layers
from tfdarts.supernet import DENSE_POINTWISE_MAX, EdgeGroup, SearchCell, SearchNetwork, mix_edges
from tfdarts.task import Task

# (channels, targets): one edge; blocks run as one dense 1x1 conv; blocks run one by one
SHAPES = [(4, 1), (4, 3), (80, 3)]
assert 80 * 3 > DENSE_POINTWISE_MAX >= 4 * 3


@pytest.mark.parametrize("channels, targets", SHAPES)
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("chosen", [p for p in PRIMITIVES if p != "none"])
def test_one_hot_edges_equal_the_chosen_op(chosen, strides, channels, targets):
    """Every edge of a group, with all weight on one op, is the paper's op with that edge's weights."""
    group = EdgeGroup(channels, strides, targets, PRIMITIVES, name="group")
    x = tf.random.normal((2, 10, 9, channels))
    k = PRIMITIVES.index(chosen)
    out = group(x, tf.one_hot([k] * targets, len(PRIMITIVES)), training=True).numpy()
    assert out.shape == ((2, 5, 5) if strides == 2 else (2, 10, 9)) + (targets, channels)
    for t in range(targets):
        expected = reference_op(group, k, t, x)(x, training=True).numpy()
        np.testing.assert_allclose(out[..., t, :], expected, rtol=1e-5, atol=1e-5)


def test_edges_mix_with_their_own_weights():
    """Edge t is sum_o w[t, o] * o_t(x): weights differ per edge and per op."""
    group = EdgeGroup(4, 1, 3, PRIMITIVES, name="group")
    x = tf.random.normal((2, 8, 8, 4))
    weights = tf.nn.softmax(tf.random.normal((3, len(PRIMITIVES))), axis=-1)
    out = group(x, weights, training=True).numpy()
    for t in range(3):
        expected = sum(float(weights[t, k]) * reference_op(group, k, t, x)(x, training=True).numpy()
                       for k in group.active)
        np.testing.assert_allclose(out[..., t, :], expected, rtol=1e-5, atol=1e-5)


def test_one_hot_none_gives_zeros():
    group = EdgeGroup(4, 2, 2, PRIMITIVES, name="group")
    out = group(tf.random.normal((2, 10, 10, 4)), tf.one_hot([0, 0], len(PRIMITIVES)), training=True)
    assert tuple(out.shape) == (2, 5, 5, 2, 4) and not np.any(out.numpy())


def test_ops_without_a_grouped_form_get_a_layer_per_edge():
    name = "conv_3x3_own"
    ops.register_op(name)(lambda c, s, affine, n: ops.relu_conv_bn(c, 3, s, 1, affine, n))
    try:
        group = EdgeGroup(4, 2, 3, ("none", name), name="group")
        x = tf.random.normal((2, 8, 8, 4))
        out = group(x, tf.constant([[0.0, 1.0]] * 3), training=True).numpy()
        for t in range(3):
            np.testing.assert_allclose(out[..., t, :], reference_op(group, 1, t, x)(x, training=True).numpy(),
                                       rtol=1e-6, atol=1e-6)
    finally:
        ops.unregister_op(name)


def test_cell_sums_each_nodes_edges():
    """Node i of a cell is the sum of its i + 2 edges, each read from its own group."""
    cell = SearchCell(4, False, False, 3, PRIMITIVES, name="cell")
    s0, s1 = tf.random.normal((2, 6, 6, 4)), tf.random.normal((2, 6, 6, 4))
    weights = tf.nn.softmax(tf.random.normal((num_edges(3), len(PRIMITIVES))), axis=-1)
    out = cell(s0, s1, weights, training=True).numpy()
    states = [cell.pre0(s0, training=True), cell.pre1(s1, training=True)]
    for node in range(3):
        total = 0
        for src in range(node + 2):
            group = cell.groups[src]
            t = cell.targets(src).index(node)
            edge = sum(i + 2 for i in range(node)) + src
            total += sum(float(weights[edge, k]) * reference_op(group, k, t, states[src])(states[src], training=True)
                         for k in group.active)
        states.append(total)
        np.testing.assert_allclose(out[..., node * 4:(node + 1) * 4], total.numpy(), rtol=1e-4, atol=1e-4)


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


def test_edge_mixing_gradients_match_autodiff_to_second_order():
    """Per-edge and shared (broadcast) outputs, one column unused."""
    ys = [tf.random.normal((2, 4, 5, 3, 6), dtype=tf.float64), tf.random.normal((2, 4, 5, 1, 6), dtype=tf.float64)]
    w = tf.random.normal((3, 3), dtype=tf.float64)
    g = tf.random.normal((2, 4, 5, 3, 6), dtype=tf.float64)
    columns = [2, 0]

    def reference(outputs, weights, cols):
        return sum(y * weights[:, k:k + 1] for y, k in zip(outputs, cols))

    def grouped(outputs, weights, cols):
        return mix_edges(outputs, [weights[:, k] for k in cols])

    def grads(fn):
        with tf.GradientTape(persistent=True) as outer:
            outer.watch([w] + ys)
            with tf.GradientTape() as inner:
                inner.watch([w] + ys)
                out = fn(ys, w, columns)
                loss = tf.reduce_sum(out * g) + tf.reduce_sum(out ** 2)
            first = inner.gradient(loss, [w] + ys)
            total = sum(tf.reduce_sum(f ** 2) for f in first)
        return first + outer.gradient(total, [w] + ys)

    for mine, expected in zip(grads(grouped), grads(reference)):
        np.testing.assert_allclose(mine.numpy(), expected.numpy(), rtol=1e-10)
