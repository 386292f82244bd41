"""Recomputed cells (``recompute_cells``) give the plain step's gradients and update."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdarts import architect, hessian, steps, trainer
from tfdarts import config as C
from tfdarts.supernet import SearchNetwork
from tfdarts.task import Task


def _net(recompute, **kwargs):
    keras.utils.set_random_seed(0)
    net = SearchNetwork(Task((16, 16, 1), 3), cells=3, channels=4, nodes=1,
                        recompute_cells=recompute, **kwargs)
    net.build_from_task()
    return net


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.normal(size=(8, 16, 16, 1)).astype(np.float32)),
            tf.constant(rng.integers(0, 3, size=8).astype(np.int32)))


def _grads(net, variables):
    fn = steps.plain_gradients(net, variables)
    return tf.function(lambda b: fn(b)[1])(_batch())


def _close(got, want):
    for g, w in zip(got, want):
        g, w = np.asarray(g), np.asarray(w)
        scale = max(1e-6, float(np.abs(w).max()))
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("partial", [1, 2])
def test_recomputed_gradients_equal_plain(partial):
    """Weights and architecture parameters (alphas, and edge betas with partial channels)."""
    plain, recomputed = _net(False, partial_channels=partial), _net(True, partial_channels=partial)
    for level in ("weight_variables", "arch_variables"):
        want = _grads(plain, getattr(plain, level))
        got = _grads(recomputed, getattr(recomputed, level))
        assert all(float(tf.norm(w)) > 0 for w in want)
        _close(got, want)


def test_recomputed_step_equals_plain_update():
    nets = [_net(False), _net(True)]
    after = []
    for net in nets:
        opt = steps.build_optimizer(keras.optimizers.SGD(0.1, momentum=0.9), net.weight_variables)
        rule = steps.UpdateRule(opt, net.weight_variables, 5.0, 3e-4)
        fn = steps.plain_gradients(net, net.weight_variables)
        tf.function(lambda b: steps.replica_step(net, rule, b, fn))(_batch())
        after.append([v.numpy() for v in net.weight_variables])
    _close(after[1], after[0])


def _custom_gradients(net, fn) -> int:
    """IdentityN ops (one per custom gradient: the edge mixing, tf.recompute_grad) of `fn`'s graph."""
    graph = tf.function(fn).get_concrete_function(_batch()).graph
    return sum(op.type == "IdentityN" for op in graph.get_operations())


def test_recomputation_is_traced_only_where_it_is_safe():
    plain, net = _net(False), _net(True)
    gradients = lambda model: lambda b: steps.plain_gradients(model, model.weight_variables)(b)[1]  # noqa: E731
    forward = lambda model: lambda b: steps.forward_loss(model, *b)[0]  # noqa: E731
    # recompute_grad's custom gradients (and the recomputed cells') on top of the edge mixing's
    assert _custom_gradients(net, gradients(net)) > _custom_gradients(plain, gradients(plain))
    with net.plain_cells():
        assert _custom_gradients(net, forward(net)) == _custom_gradients(plain, forward(plain))
    assert net.recompute_cells


def test_second_order_and_hessian_unchanged():
    """Substituted weights (stateless_call) and nested tapes take the plain cells."""
    results = []
    for recompute in (False, True):
        net = _net(recompute)
        opt = steps.build_optimizer(keras.optimizers.SGD(0.025, momentum=0.9), net.weight_variables)
        arch = architect.Architect(net, 2, steps.UpdateRule(opt, net.weight_variables, 5.0, 3e-4))
        _, unrolled = tf.function(lambda v, t: arch.unrolled_gradients(v, t))(_batch(1), _batch(2))
        x, y = _batch(3)
        v = [tf.ones_like(a) for a in net.alpha_variables]
        hv = tf.function(lambda: hessian._replica_hvp(net, x, y, v))()
        results.append(list(unrolled) + list(hv))
    _close(results[1], results[0])


def test_search_config_turns_it_on():
    cfg = C.load_config(overrides=["search.cells=3", "search.channels=4", "search.nodes=1",
                                   "search.recompute_cells=true"]).search
    job = trainer.SearchJob(cfg, Task((12, 12, 1), 3), tf.distribute.get_strategy())
    assert job.model.recompute_cells and not C.load_config().search.recompute_cells
