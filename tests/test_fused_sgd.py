"""The fused momentum update equals Keras' SGD step for step (replicas: test_reduction)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdarts import steps


def _run(optimizer, strategy, traced, n_steps=4):
    rng = np.random.default_rng(0)
    init = [rng.normal(size=s).astype(np.float32) for s in ((3, 3, 2, 4), (4,), (5,))]
    grads = [[rng.normal(size=w.shape).astype(np.float32) for w in init] for _ in range(n_steps)]
    with strategy.scope():
        variables = [keras.Variable(w) for w in init]
        optimizer.build(variables)

    def update(g):
        optimizer.apply_gradients(zip(g, variables))

    fn = tf.function(update) if traced else update
    for g in grads:
        fn([tf.constant(x) for x in g])
    return [v.numpy() for v in variables], [m.numpy() for m in optimizer.momentums]


@pytest.mark.parametrize("traced", [False, True])
def test_fused_equals_keras_sgd(traced):
    strategy = tf.distribute.get_strategy()
    fused = steps.global_gradient_optimizer(keras.optimizers.SGD(0.05, momentum=0.9))
    assert isinstance(fused, steps.FusedMomentumUpdate)
    got = _run(fused, strategy, traced)
    want = _run(keras.optimizers.SGD(0.05, momentum=0.9), strategy, traced)
    for g, w in zip(got[0] + got[1], want[0] + want[1]):
        np.testing.assert_array_equal(g, w)


def test_nesterov_and_plain_sgd_keep_keras_path():
    for opt in (keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True), keras.optimizers.SGD(0.05)):
        got = _run(steps.global_gradient_optimizer(opt), tf.distribute.get_strategy(), True)
        want = _run(type(opt).from_config(opt.get_config()), tf.distribute.get_strategy(), True)
        for g, w in zip(got[0], want[0]):
            np.testing.assert_array_equal(g, w)


def test_fused_update_is_one_kernel_per_variable():
    opt = steps.global_gradient_optimizer(keras.optimizers.SGD(0.05, momentum=0.9))
    variables = [keras.Variable(np.ones((2, 2), np.float32)) for _ in range(3)]
    opt.build(variables)
    graph = tf.function(lambda g: opt.apply_gradients(zip(g, variables))).get_concrete_function(
        [tf.TensorSpec((2, 2))] * 3).graph
    types = [op.type for op in graph.get_operations()]
    assert types.count("ResourceApplyKerasMomentum") == 3
    # only the optimizer's own bookkeeping (iteration counter) assigns; nothing per variable
    assert types.count("AssignVariableOp") + types.count("AssignAddVariableOp") < 3
