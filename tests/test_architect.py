"""Second-order hypergradient: finite-difference Hessian-vector product vs nested tapes."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdarts import architect, steps
from tfdarts.supernet import SearchNetwork
from tfdarts.task import Task

# Smooth candidates only: finite differences of a gradient step across ReLU and
# max-pool kinks (whose second derivative is a Dirac term), while the nested-tape
# Hessian is the almost-everywhere one; with softplus in place of ReLU both
# measure the same thing and any error is in the implementation.
SMOOTH = ("none", "skip_connect", "avg_pool_3x3", "sep_conv_3x3", "dil_conv_3x3")


@pytest.fixture
def smooth_setup(monkeypatch):
    monkeypatch.setattr(tf.nn, "relu", tf.nn.softplus)
    keras.utils.set_random_seed(0)
    net = SearchNetwork(Task((16, 16, 1), 3), cells=3, channels=8, nodes=2, primitives=SMOOTH)
    net.build_from_task()
    opt = steps.build_optimizer(keras.optimizers.SGD(0.025, momentum=0.9), net.weight_variables)
    rule = steps.UpdateRule(opt, net.weight_variables, 5.0, 3e-4)
    train = (tf.random.normal((16, 16, 16, 1)), tf.constant(np.arange(16) % 3))
    val = (tf.random.normal((16, 16, 16, 1)), tf.constant((np.arange(16) + 1) % 3))
    return net, architect.Architect(net, 2, rule), train, val


def _exact_hvp(net, batch, v):
    weights = [w.value for w in net.weight_variables]
    alphas = [a.value for a in net.arch_variables]
    with tf.GradientTape() as outer:
        outer.watch(alphas)
        with tf.GradientTape() as inner:
            inner.watch(weights)
            loss, _, _ = steps.forward_loss(net, *batch)
        grads = inner.gradient(loss, weights)
        dot = tf.add_n([tf.reduce_sum(g * d) for g, d in zip(grads, v)])
    return outer.gradient(dot, alphas)


def test_finite_difference_hvp_matches_exact(smooth_setup):
    net, arch, train, val = smooth_setup
    weights = [w.value for w in net.weight_variables]
    with tf.GradientTape() as tape:
        loss, _, _ = steps.forward_loss(net, *val)
    v = tape.gradient(loss, weights)  # the direction the algorithm uses
    approx = arch.hessian_vector_product(train, weights, v)
    exact = _exact_hvp(net, train, v)
    for a, e in zip(approx, exact):
        assert float(tf.norm(e)) > 0
        assert float(tf.norm(a - e) / tf.norm(e)) < 1e-2


def test_wrong_scaling_would_be_caught(smooth_setup):
    """The port's bug (multiplying by r/2 instead of dividing by 2r) is far off."""
    net, arch, train, val = smooth_setup
    weights = [w.value for w in net.weight_variables]
    v = [tf.random.normal(w.shape) for w in weights]
    r = architect.FD_SCALE / float(tf.linalg.global_norm(v))
    exact = _exact_hvp(net, train, v)
    correct = arch.hessian_vector_product(train, weights, v)
    buggy = [c * (2 * r) * (r / 2) for c in correct]
    assert all(float(tf.norm(b - e) / tf.norm(e)) > 0.5 for b, e in zip(buggy, exact))
    assert all(float(tf.norm(c - e) / tf.norm(e)) < 1e-2 for c, e in zip(correct, exact))


def test_unrolled_gradient_matches_formula(smooth_setup):
    """grad_alpha L_val(w') - xi * Hv, with w' one SGD step of the training loss."""
    net, arch, train, val = smooth_setup
    xi = float(arch.weight_rule.optimizer.learning_rate)
    weights = [w.value for w in net.weight_variables]
    alphas = [a.value for a in net.arch_variables]
    with tf.GradientTape() as tape:
        loss, _, _ = steps.forward_loss(net, *train)
    g = tape.gradient(loss, weights)
    unrolled = [w - xi * (gi + 3e-4 * w) for w, gi in zip(weights, g)]  # momentum buffer is 0
    with tf.GradientTape() as tape:
        tape.watch(alphas + unrolled)
        lval, _, _ = arch._forward(val, unrolled)
    grads = tape.gradient(lval, alphas + unrolled)
    d_alpha, v = grads[:2], grads[2:]
    hv = _exact_hvp(net, train, v)
    expected = [da - xi * h for da, h in zip(d_alpha, hv)]
    _, got = arch.unrolled_gradients(val, train)
    for a, e in zip(got, expected):
        assert float(tf.norm(a - e) / tf.norm(e)) < 1e-2


def test_virtual_step_is_the_optimizers_next_step(smooth_setup):
    """w' (momentum buffer non-zero after a real step) is where SGD would move w."""
    net, arch, train, _ = smooth_setup
    rule = arch.weight_rule
    variables = list(rule.variables)

    def train_grads():
        with tf.GradientTape() as tape:
            loss, _, _ = steps.forward_loss(net, *train)
        return tape.gradient(loss, [w.value for w in variables])

    steps.apply_update(rule, train_grads())
    momenta = [steps.sgd_momentum(rule.optimizer, v) for v in variables]
    assert float(tf.linalg.global_norm(momenta)) > 0
    g = train_grads()
    xi = tf.constant(float(rule.optimizer.learning_rate))
    unrolled = arch._virtual_step([w.value for w in variables], g, xi)
    decayed = [gi + rule.weight_decay * w.value for gi, w in zip(g, variables)]
    rule.optimizer.apply_gradients(zip(decayed, variables))  # unclipped, like the reference's w'
    for u, w in zip(unrolled, variables):
        np.testing.assert_allclose(u.numpy(), w.numpy(), rtol=1e-5, atol=1e-7)


def test_nesterov_is_refused(smooth_setup):
    net, _, train, val = smooth_setup
    opt = steps.build_optimizer(keras.optimizers.SGD(0.025, momentum=0.9, nesterov=True),
                                net.weight_variables)
    with pytest.raises(ValueError, match="Nesterov"):
        architect.Architect(net, 2, steps.UpdateRule(opt, net.weight_variables))


def test_first_order_is_plain_alpha_gradient(smooth_setup):
    net, _, train, val = smooth_setup
    first = architect.Architect(net, 1, steps.UpdateRule(keras.optimizers.SGD(0.1), net.weight_variables))
    (_, _), grads = first.gradient_fn(train)(val)
    with tf.GradientTape() as tape:
        loss, _, _ = steps.forward_loss(net, *val)
    expected = tape.gradient(loss, [a.value for a in net.arch_variables])
    for a, e in zip(grads, expected):
        np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=1e-5, atol=1e-7)


def test_bad_order():
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        architect.Architect(None, 3, None)
