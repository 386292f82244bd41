"""Per-edge reference ops with the weights of a grouped supernet edge (`EdgeGroup`)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfdarts import ops
from tfdarts.supernet import EdgeGroup, GroupedConv, PerEdge, Shared, _with_search_bn


def _grouped_weights(branch, target: int, width: int):
    """The kernels edge `target` uses, in the order of the reference op's weights."""
    t, c = target, width
    if isinstance(branch, GroupedConv):
        weights = [branch.dw_a.kernel.numpy()[:, :, t * c:(t + 1) * c, :], branch.pw_a.kernel.numpy()[t][None, None]]
        if branch.separable:
            weights += [branch.dw_b.kernel.numpy()[:, :, t * c:(t + 1) * c, :],
                        branch.pw_b.kernel.numpy()[t][None, None]]
        return weights
    h = branch.half
    return [branch.conv_a.kernel.numpy()[..., t * h:(t + 1) * h],
            branch.conv_b.kernel.numpy()[..., t * (c - h):(t + 1) * (c - h)]]


def reference_op(group: EdgeGroup, k: int, target: int, x: tf.Tensor) -> keras.layers.Layer:
    """The paper's op `k` of edge `target` (built by `ops.make_op`) with the group's weights.

    Args:
        group: A built group.
        k: Column of the op in ``group.primitives``.
        target: The edge.
        x: An input, to build the reference op.
    """
    branch = group.branches[group.active.index(k)]
    if isinstance(branch, PerEdge):
        return branch.edges[target]
    if isinstance(branch, Shared):
        return branch.op
    primitive = group.primitives[k]
    name = f"reference_{primitive}_{target}"
    layer = _with_search_bn(primitive, ops.make_op(primitive, group.width, group.strides, False, name), name)
    layer(x, training=True)
    weights = _grouped_weights(branch, target, group.width)
    assert [w.shape for w in weights] == [tuple(v.shape) for v in layer.trainable_weights]
    for variable, value in zip(layer.trainable_weights, weights):
        variable.assign(value)
    return layer
