"""The traced search graph stays small and the second-order passes run in turn.

Trace time, graph-optimisation time and the memory the runtime holds for the
step grow with the number of graph nodes; these checks keep the per-op
overheads (one slice per alpha, constants per batch norm) out of it.
"""

import collections

import keras
import numpy as np
import tensorflow as tf

from tfdarts import architect, steps
from tfdarts.supernet import SearchNetwork
from tfdarts.task import Task


def _net(**kwargs):
    keras.utils.set_random_seed(0)
    net = SearchNetwork(Task((16, 16, 1), 3), cells=3, channels=4, nodes=2, **kwargs)
    net.build_from_task()
    return net


def _forward_graph(net, batch=4):
    fn = tf.function(lambda x, y: steps.forward_loss(net, x, y)[0])
    return fn.get_concrete_function(tf.TensorSpec((batch, 16, 16, 1)),
                                    tf.TensorSpec((batch,), tf.int32)).graph


def test_forward_graph_has_no_per_op_overheads():
    net = _net()
    counts = collections.Counter(op.type for op in _forward_graph(net).get_operations())
    groups = 3 * 3  # 3 cells, each with 3 states read by later nodes (2 inputs, node 0)
    # the edges leaving a state run together: one gather of their alphas, one unstack of the
    # grouped ops' batch-norm scales, one of the other ops' weights and one of the outputs by
    # edge, instead of a slice per candidate op
    assert counts["GatherV2"] == groups and counts["Unpack"] == 3 * groups
    # a batch norm per op and group (8, 9 with the factorized reduce of stride-2 groups),
    # two per cell for the preprocessing, one in the stem; 135 with a layer per edge
    assert counts["FusedBatchNormV3"] == 1 + 3 * 2 + 5 * 8 + 4 * 9
    assert counts["StridedSlice"] <= 20  # subsampling on reduction edges only
    # scale, offset and empty statistics of non-affine batch norms are shared
    assert counts["Fill"] <= 2 * 4 + 1  # ones and zeros per channel count, one empty
    # only the two pools of each stride-2 group (2 reduction cells x 2 groups) pad separately
    assert counts["Pad"] + counts["PadV2"] <= 2 * 2 * 2
    assert sum(counts.values()) < 1450  # 1,496 with a layer per edge at this size


def test_shared_constants_are_per_graph():
    """A constant cached while tracing one function is not reused in another graph."""
    net = _net()
    g1, g2 = _forward_graph(net), _forward_graph(net, batch=2)
    names1 = {op.name for op in g1.get_operations() if op.type == "Fill"}
    fills2 = [op for op in g2.get_operations() if op.type == "Fill"]
    assert fills2 and all(op.graph is g2 for op in fills2) and names1


def test_eager_forward_matches_traced():
    net = _net()
    x = tf.random.normal((4, 16, 16, 1))
    y = tf.constant(np.arange(4) % 3, tf.int32)
    eager = steps.forward_loss(net, x, y)[0]
    traced = tf.function(lambda x, y: steps.forward_loss(net, x, y)[0])(x, y)
    np.testing.assert_allclose(eager.numpy(), traced.numpy(), rtol=1e-5)


def _ancestors(tensors):
    seen, stack = set(), [t.op for t in tensors]
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return seen


def test_second_order_difference_passes_run_in_turn():
    """The w - r v pass waits for the w + r v gradients: their activations never coexist."""
    net = _net()
    opt = steps.build_optimizer(keras.optimizers.SGD(0.025, momentum=0.9), net.weight_variables)
    arch = architect.Architect(net, 2, steps.UpdateRule(opt, net.weight_variables, 5.0, 3e-4))
    weights = [w.value for w in net.weight_variables]
    batch = (tf.TensorSpec((4, 16, 16, 1)), tf.TensorSpec((4,), tf.int32))
    v_spec = [tf.TensorSpec(w.shape) for w in weights]

    def hvp(x, y, v):
        return arch.hessian_vector_product((x, y), [tf.convert_to_tensor(w) for w in weights], v)

    graph = tf.function(hvp).get_concrete_function(*batch, v_spec).graph
    ops = graph.get_operations()
    grad_ops = [op for op in ops if op.type == "FusedBatchNormGradV3"]
    half = len(grad_ops) // 2
    # the first pass's gradient ops are ancestors of every op of the second pass's forward
    second_forward = [op for op in ops if op.type == "FusedBatchNormV3"][-1]
    first_grads = {op.name for op in grad_ops[:half]}
    assert first_grads <= _ancestors(second_forward.outputs)
