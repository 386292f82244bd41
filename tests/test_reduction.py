"""Cross-replica reduction: one global update for any replica count, one collective each.

Equivalence tests feed every strategy the same global batch made of one small
batch repeated `COPIES` times: each replica (of 1, 2 or 3) then holds whole
copies, so per-replica batch-norm statistics equal the single-replica ones and
the only differences left are float round-off.
"""

import dataclasses
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdarts import config as C
from tfdarts import steps, trainer
from tfdarts.genotype import DARTS_V2
from tfdarts.network import Network
from tfdarts.task import Task

COPIES = 6  # divisible by 1, 2 and 3 replicas
TINY = ["search.cells=3", "search.channels=4", "search.nodes=1", "search.batch_size=16"]
ALPHA_LR = 1.0
TOLERANCE = {"rtol": 2e-4, "atol": 2e-6}


class CollectiveCounter:
    """Counts cross-replica sums: replica-side calls and tensors actually reduced.

    Attributes:
        calls: ``ReplicaContext.all_reduce`` calls (one per replica per collective).
        tensors: Tensors reduced by the strategy's cross-device ops.
    """

    def __init__(self, monkeypatch, cross_device_ops: tf.distribute.CrossDeviceOps) -> None:
        self.calls, self.tensors = 0, 0
        real_all_reduce = tf.distribute.ReplicaContext.all_reduce
        real_reduce = cross_device_ops.reduce_implementation

        def all_reduce(ctx, *args, **kwargs):
            self.calls += 1
            return real_all_reduce(ctx, *args, **kwargs)

        def reduce_implementation(*args, **kwargs):
            self.tensors += 1
            return real_reduce(*args, **kwargs)

        monkeypatch.setattr(tf.distribute.ReplicaContext, "all_reduce", all_reduce)
        monkeypatch.setattr(cross_device_ops, "reduce_implementation", reduce_implementation)


@pytest.fixture
def counted_three_replicas(make_mirrored, monkeypatch):
    """``(strategy, counter)``: 3 replicas whose collectives are counted."""
    cross_device_ops = tf.distribute.ReductionToOneDevice()
    strategy = make_mirrored(3, cross_device_ops)
    return strategy, CollectiveCounter(monkeypatch, cross_device_ops)


def _repeated(seed: int, n: int = 4):
    """``(x (COPIES * n, 12, 12, 1), y (COPIES * n,))``: one batch `COPIES` times."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12, 12, 1)).astype(np.float32)
    y = rng.integers(0, 3, size=n).astype(np.int32)
    return np.concatenate([x] * COPIES), np.concatenate([y] * COPIES)


def _distributed(strategy, element):
    dataset = tf.data.Dataset.from_tensors(element)
    return next(iter(strategy.experimental_distribute_dataset(dataset)))


def _search_step(order: int, strategy):
    """One search iteration.

    The alphas step with plain SGD instead of the job's Adam, whose first step
    (``lr * g / |g|``) would hide a wrongly scaled hypergradient.

    Returns:
        ``(summed stats, weights before, weights after, alpha steps)``.
    """
    cfg = C.load_config(overrides=TINY + [f"search.order={order}", "search.w_lr=0.1"]).search
    job = trainer.SearchJob(cfg, Task((12, 12, 1), 3), strategy)
    alphas = job.model.arch_variables
    with strategy.scope():
        job.a_rule = dataclasses.replace(
            job.a_rule, optimizer=steps.build_optimizer(keras.optimizers.SGD(ALPHA_LR), alphas))
    batch = _distributed(strategy, (_repeated(0), _repeated(1)))
    weights = job.model.weight_variables  # the alphas are compared by their steps
    before = [v.numpy() for v in weights]
    alphas_before = [a.numpy() for a in alphas]
    stats = {g: {k: v.numpy() for k, v in s.items()} for g, s in job.step(batch).items()}
    alpha_steps = [a.numpy() - b for a, b in zip(alphas, alphas_before)]
    return stats, before, [v.numpy() for v in weights], alpha_steps


def _retrain_step(strategy):
    """One retrain step: ``(loss_sum, variables after)``."""
    cfg = C.load_config(overrides=TINY).retrain
    job = trainer.TrainJob(cfg, lambda: Network(Task((12, 12, 1), 3), DARTS_V2, cells=3, channels=4,
                                                auxiliary_weight=0.4, drop_path=0.0), strategy)
    stats = job.step(_distributed(strategy, _repeated(2)))["train"]
    return float(stats["loss_sum"]), [v.numpy() for v in job.model.trainable_variables]


@pytest.mark.parametrize("order, replicas", [(1, (2, 3)), (2, (2,))])
def test_search_step_is_the_same_on_one_and_several_replicas(order, replicas, make_mirrored, monkeypatch):
    """Second order (four traced passes per replica count) compares 1 with 2 replicas only."""
    one = _search_step(order, tf.distribute.get_strategy())
    several = [_search_step(order, make_mirrored(n)) for n in replicas[:-1]]
    cross_device_ops = tf.distribute.ReductionToOneDevice()
    counter = CollectiveCounter(monkeypatch, cross_device_ops)
    several.append(_search_step(order, make_mirrored(replicas[-1], cross_device_ops)))
    stats1, init1, vars1, alpha_steps1 = one
    for stats, init, variables, alpha_steps in several:
        for group in ("train", "val"):
            np.testing.assert_allclose(stats[group]["loss_sum"], stats1[group]["loss_sum"],
                                       rtol=1e-5)
            assert stats[group]["count"] == stats1[group]["count"] == 4 * COPIES
        for a, b, c, d in zip(init1, init, vars1, variables):
            np.testing.assert_array_equal(a, b)  # same starting point
            np.testing.assert_allclose(d, c, **TOLERANCE)
        for got, want in zip(alpha_steps, alpha_steps1):  # the hypergradient itself
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=3e-4 * np.abs(want).max())
    moved = sum(not np.allclose(a, c) for a, c in zip(init1, vars1))
    assert moved > len(vars1) // 2  # the step really changed the variables
    # per replica: first order 1 (alphas) + 1 (weights); second order adds the
    # global training gradient and v
    per_replica = {1: 2, 2: 4}[order]
    assert counter.calls == replicas[-1] * per_replica


def test_retrain_step_is_the_same_on_one_two_and_three_replicas(make_mirrored):
    loss1, vars1 = _retrain_step(tf.distribute.get_strategy())
    for replicas in (2, 3):
        loss, variables = _retrain_step(make_mirrored(replicas))
        assert loss == pytest.approx(loss1, rel=1e-5)
        for a, b in zip(vars1, variables):
            np.testing.assert_allclose(b, a, **TOLERANCE)


def _variables(shapes):
    rng = np.random.default_rng(3)
    return [keras.Variable(rng.normal(size=s).astype(np.float32)) for s in shapes]


def _run_update(strategy, rule, grads_fn):
    """Runs `steps.apply_update` once in a traced replica function."""

    @tf.function
    def step():
        strategy.run(lambda: steps.apply_update(rule, grads_fn()))

    step()


@pytest.mark.parametrize("make_optimizer", [lambda: keras.optimizers.SGD(0.1, momentum=0.9),
                                            lambda: keras.optimizers.Adam(0.01)],
                         ids=["sgd", "adam"])
def test_apply_update_issues_exactly_one_collective(make_optimizer, counted_three_replicas):
    strategy, counter = counted_three_replicas
    with strategy.scope():
        variables = _variables([(3, 3, 2, 4), (4,), (5,)])
        rule = steps.UpdateRule(steps.build_optimizer(make_optimizer(), variables), variables,
                                clip_norm=1.0, weight_decay=3e-4)
    _run_update(strategy, rule, lambda: [tf.ones(v.shape) for v in variables])
    assert counter.calls == 3  # one call per replica, one collective
    assert counter.tensors == 1  # all variables travel as one flat tensor


def test_the_global_gradient_is_applied_exactly_once(counted_three_replicas):
    """SGD at lr 1 on three replicas moves ``w`` by exactly the summed gradient.

    Only replica 0 has a non-zero gradient, so the sum is exact in float32; the
    old "divide by the replica count, let Keras sum again" is not (checked).
    """
    strategy, _ = counted_three_replicas
    g = np.random.default_rng(4).normal(size=(64,)).astype(np.float32)
    with strategy.scope():
        (w,) = _variables([(64,)])
        rule = steps.UpdateRule(steps.build_optimizer(keras.optimizers.SGD(1.0), [w]), [w])
    w0 = w.numpy()

    def grads():
        first = tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group, 0)
        return [tf.where(first, tf.constant(g), tf.zeros_like(g))]

    _run_update(strategy, rule, grads)
    expected = w0 - g
    for local in strategy.experimental_local_results(w.value):
        np.testing.assert_array_equal(local.numpy(), expected)
    third = g / np.float32(3)
    assert not np.array_equal(w0 - ((third + third) + third), expected)


def test_a_plain_keras_optimizer_is_refused_on_several_replicas(two_replicas):
    with two_replicas.scope():
        (w,) = _variables([(3,)])
        opt = keras.optimizers.SGD(0.1)
        opt.build([w])
    with pytest.raises(TypeError, match="second time"):
        _run_update(two_replicas, steps.UpdateRule(opt, [w]), lambda: [tf.ones(3)])


def test_conversion_keeps_the_instance_and_its_type():
    opt = keras.optimizers.SGD(0.1, momentum=0.9)
    converted = steps.global_gradient_optimizer(opt)
    assert converted is opt and steps.global_gradient_optimizer(opt) is opt
    assert isinstance(opt, keras.optimizers.SGD) and isinstance(opt, steps.AppliesGlobalGradients)
    assert type(steps.global_gradient_optimizer(keras.optimizers.SGD(0.2))) is type(opt)
    assert opt.get_config() == keras.optimizers.SGD(0.1, momentum=0.9).get_config()
    with pytest.raises(TypeError, match="wraps another optimizer"):
        steps.global_gradient_optimizer(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD()))
    with pytest.raises(TypeError, match="no _all_reduce_sum_gradients"):
        steps._global_gradient_class(object)  # what a Keras without the hook looks like


def test_checkpoints_of_plain_and_converted_optimizers_are_interchangeable(tmp_path):
    variables = _variables([(2, 3), (3,)])
    plain = keras.optimizers.SGD(0.1, momentum=0.9)
    plain.build(variables)
    plain.apply_gradients(zip([tf.ones((2, 3)), tf.ones(3)], variables))
    path = tf.train.Checkpoint(opt=plain).save(os.path.join(tmp_path, "plain"))

    converted = steps.build_optimizer(keras.optimizers.SGD(0.1, momentum=0.9), variables)
    tf.train.Checkpoint(opt=converted).restore(path).assert_existing_objects_matched()
    assert int(converted.iterations.numpy()) == 1
    for var in variables:
        np.testing.assert_array_equal(steps.sgd_momentum(converted, var),
                                      steps.sgd_momentum(plain, var))
    back = tf.train.Checkpoint(opt=converted).save(os.path.join(tmp_path, "converted"))
    again = keras.optimizers.SGD(0.1, momentum=0.9)
    again.build(variables)
    tf.train.Checkpoint(opt=again).restore(back).assert_existing_objects_matched()
    assert int(again.iterations.numpy()) == 1


def test_sgd_momentum_is_keras_momentum_buffer():
    """After two known steps the adapter returns ``m = mu * m - lr * g`` per variable,
    and the variables moved by ``m`` each step (plain, non-Nesterov SGD)."""
    lr, mu = np.float32(0.1), np.float32(0.9)
    variables = _variables([(2, 3), (3,)])
    start = [v.numpy() for v in variables]
    opt = steps.build_optimizer(keras.optimizers.SGD(float(lr), momentum=float(mu)), variables)
    rng = np.random.default_rng(5)
    momenta = [np.zeros(v.shape, np.float32) for v in variables]
    moved = [np.zeros(v.shape, np.float32) for v in variables]
    for _ in range(2):
        grads = [rng.normal(size=v.shape).astype(np.float32) for v in variables]
        opt.apply_gradients(zip([tf.constant(g) for g in grads], variables))
        momenta = [mu * m - lr * g for m, g in zip(momenta, grads)]
        moved = [s + m for s, m in zip(moved, momenta)]
    for var, m, s, w0 in zip(variables, momenta, moved, start):
        got = steps.sgd_momentum(opt, var)
        assert got.shape == var.shape
        np.testing.assert_allclose(got.numpy(), m, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(var.numpy(), w0 + s, rtol=1e-6, atol=1e-6)


def test_sgd_momentum_errors_are_clear():
    variables = _variables([(3,)])
    no_momentum = steps.build_optimizer(keras.optimizers.SGD(0.1), variables)
    with pytest.raises(ValueError, match="no SGD momentum buffers"):
        steps.sgd_momentum(no_momentum, variables[0])
    with pytest.raises(ValueError, match="no SGD momentum buffers"):
        steps.sgd_momentum(keras.optimizers.SGD(0.1, momentum=0.9), variables[0])  # not built
    with pytest.raises(ValueError, match="no SGD momentum buffers"):
        steps.sgd_momentum(steps.build_optimizer(keras.optimizers.Adam(), variables), variables[0])
    opt = steps.build_optimizer(keras.optimizers.SGD(0.1, momentum=0.9), variables)
    with pytest.raises(ValueError, match="no momentum buffer for"):
        steps.sgd_momentum(opt, keras.Variable(np.zeros(3, np.float32)))


def _hvp(strategy):
    """Central-difference ``H v`` on the global batch, ``v`` fixed: one array per alpha."""
    cfg = C.load_config(overrides=TINY + ["search.order=2"]).search
    job = trainer.SearchJob(cfg, Task((12, 12, 1), 3), strategy)
    rng = np.random.default_rng(6)
    v = [tf.constant(rng.normal(size=w.shape), tf.float32) for w in job.model.weight_variables]

    def replica(batch):
        weights = [w.value for w in job.model.weight_variables]
        return steps.all_reduce_sum(job.architect.hessian_vector_product(batch, weights, v))

    out = strategy.run(tf.function(replica), args=(_distributed(strategy, _repeated(0)),))
    return [strategy.experimental_local_results(h)[0].numpy() for h in out]


def test_hessian_vector_product_shares_sum_to_the_global_product(make_mirrored):
    """The ``xi * H v`` term is too small to show in a whole search step, so alone:
    each replica returns its share and one sum gives the single-replica product."""
    one = _hvp(tf.distribute.get_strategy())
    three = _hvp(make_mirrored(3))
    for got, want in zip(three, one):
        assert np.linalg.norm(want) > 0
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 2e-3
