"""Discrete network and baselines: shapes, exact parameter counts, drop-path, saving."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdarts import ops, steps
from tfdarts.resnet import RESNETS as MODEL_BUILDERS
from tfdarts.resnet import BasicBlock, ResNet, resnet18, tiny_resnet
from tfdarts.sampler import random_genotype, random_genotypes
from tfdarts.genotype import DARTS_V1, DARTS_V2, NONE, PRIMITIVES, Genotype
from tfdarts.network import (AuxiliaryHead, Network, NetworkCell, build_network, count_params,
                             drop_path)
from tfdarts.space import reduction_layers
from tfdarts.task import Task

SHAPES = [(28, 28, 1), (32, 32, 3), (30, 80, 1)]
TASKS = [lambda s: Task(s, 10), lambda s: Task(s, 1, "regression"),
         lambda s: Task(s, 3, "regression")]
GENOTYPES = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2,
             "random0": random_genotypes(2, seed=0)[0], "random1": random_genotypes(2, seed=0)[1]}

# Every op kind, skip_connect on reduction-cell inputs (factorized reduce) and on
# a node (identity), and a partial concat.
MIXED = Genotype(
    normal=(("sep_conv_3x3", 0), ("skip_connect", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 2),
            ("avg_pool_3x3", 1), ("skip_connect", 3), ("dil_conv_3x3", 4), ("dil_conv_5x5", 0)),
    normal_concat=(2, 4, 5),
    reduce=(("skip_connect", 0), ("sep_conv_3x3", 1), ("max_pool_3x3", 2), ("skip_connect", 1),
            ("avg_pool_3x3", 0), ("dil_conv_5x5", 3), ("skip_connect", 4), ("max_pool_3x3", 1)),
    reduce_concat=(2, 3, 4, 5),
)


def _batch(task: Task, batch: int = 2, seed: int = 0) -> tf.Tensor:
    return tf.random.stateless_normal((batch,) + task.input_shape, seed=(seed, 1))


def _small(task: Task, genotype: Genotype = DARTS_V2, **kw) -> Network:
    kw = {"cells": 3, "channels": 4, "auxiliary_weight": 0.4, "drop_path": 0.2, **kw}
    return build_network(task, genotype, **kw)


# --- hand count ------------------------------------------------------------------------


def _op_params(op: str, c: int, strides: int) -> int:
    """Parameters of one op with C channels in and out (affine BN: 2C)."""
    if op.startswith("sep_conv"):
        k = int(op[-1])
        return 2 * (k * k * c + c * c + 2 * c)
    if op.startswith("dil_conv"):
        k = int(op[-1])
        return k * k * c + c * c + 2 * c
    if op == "skip_connect":
        return 0 if strides == 1 else c * c + 2 * c  # factorized reduce: two C/2 1x1 convs + BN
    return 0  # pools


def _hand_count(genotype: Genotype, task: Task, cells: int, c: int, aux: bool = False) -> int:
    c_in, k = task.input_shape[2], task.num_outputs
    total = 3 * 3 * c_in * 3 * c + 2 * 3 * c  # stem conv + BN
    c_pp = c_p = 3 * c
    c_aux = 0
    for i in range(cells):
        reduction = i in reduction_layers(cells)
        c = 2 * c if reduction else c
        gene = genotype.reduce if reduction else genotype.normal
        concat = genotype.reduce_concat if reduction else genotype.normal_concat
        # pre0 (ReLUConvBN 1x1 or factorized reduce: same count) and pre1
        total += (c_pp * c + 2 * c) + (c_p * c + 2 * c)
        total += sum(_op_params(op, c, 2 if reduction and src < 2 else 1) for op, src in gene)
        c_pp, c_p = c_p, len(concat) * c
        if i == 2 * cells // 3:
            c_aux = c_p
    total += c_p * k + k
    if aux:
        total += c_aux * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768 + 768 * k + k  # 8x8 map: 2x2 conv
    return total


def test_hand_count_formula_gives_reference_darts_v2_size():
    """The formula reproduces the reference's 3.349342 M (CIFAR-10, 20 cells, C=36)."""
    assert _hand_count(DARTS_V2, Task((32, 32, 3), 10), 20, 36) == 3_349_342


@pytest.mark.parametrize("genotype", [MIXED, DARTS_V1], ids=["mixed", "DARTS_V1"])
def test_parameter_count_matches_hand_count(genotype):
    task = Task((32, 32, 3), 10)  # 32 -> 16 -> 8: the aux head sees the reference's 8x8
    model = _small(task, genotype, channels=6)
    assert count_params(model) == _hand_count(genotype, task, 3, 6)
    assert count_params(model, include_auxiliary=True) == _hand_count(genotype, task, 3, 6, aux=True)
    no_aux = _small(task, genotype, channels=6, auxiliary_weight=0.0)
    assert no_aux.auxiliary_head is None
    assert count_params(no_aux) == count_params(no_aux, include_auxiliary=True) == count_params(model)


# --- shapes ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape_idx", range(len(SHAPES)), ids=["28x28x1", "32x32x3", "30x80x1"])
@pytest.mark.parametrize("name", list(GENOTYPES))
def test_network_runs_on_all_inputs_and_tasks(name, shape_idx):
    shape = SHAPES[shape_idx]
    # a Latin square: every genotype and every shape meets all three tasks
    task = TASKS[(list(GENOTYPES).index(name) + shape_idx) % 3](shape)
    model = _small(task, GENOTYPES[name])
    x = _batch(task)
    assert model.stem_conv.kernel.shape[2] == shape[2]
    assert tuple(model(x).shape) == (2, task.num_outputs)
    out, aux = model(x, training=True)
    assert tuple(out.shape) == (2, task.num_outputs) and tuple(aux.shape) == (2, task.num_outputs)
    assert np.all(np.isfinite(out.numpy())) and np.all(np.isfinite(aux.numpy()))


def test_training_without_aux_returns_single_tensor_and_loss_adds_aux():
    task = Task((28, 28, 1), 10)
    x, y = _batch(task), tf.constant([3, 7])
    plain = _small(task, auxiliary_weight=0.0)
    assert isinstance(plain(x, training=True), tf.Tensor)
    model = _small(task, drop_path=0.0)
    loss, out, losses = steps.forward_loss(model, x, y)
    _, aux = model(x, training=True)
    aux_loss = tf.reduce_mean(steps.per_example_loss(task, aux, y))
    np.testing.assert_allclose(loss.numpy(), tf.reduce_mean(losses).numpy() + 0.4 * aux_loss.numpy(),
                               rtol=1e-5)


def test_reduction_cells_and_aux_position():
    model = _small(Task((28, 28, 1), 10), cells=5)
    assert [c.reduction for c in model.cells] == [False, True, False, True, False]
    assert [c.reduction_prev for c in model.cells] == [False, False, True, False, True]
    assert isinstance(model.cells[2].pre0, ops.FactorizedReduce)
    assert model.auxiliary_index == 3  # the second reduction cell
    assert model.cells[3].out_channels == 4 * 16


@pytest.mark.parametrize("size,kernel", [((8, 8), 2), ((7, 7), 1), ((8, 20), 2), ((4, 4), 1),
                                         ((1, 1), 1), ((2, 9), 1), ((13, 13), 2)])
def test_auxiliary_head_any_size(size, kernel):
    head = AuxiliaryHead(5, name="aux")
    out = head(tf.random.normal((2,) + size + (6,)), training=True)
    assert tuple(out.shape) == (2, 5)
    assert head.pool_size == (min(5, size[0]), min(5, size[1]))
    assert tuple(head.conv2.kernel.shape) == (kernel, kernel, 128, 768)


# --- drop-path -------------------------------------------------------------------------


def test_drop_path_function():
    x = tf.ones((4000, 2, 3, 5))
    key = tf.constant([7, 1], tf.int64)
    y = drop_path(x, tf.constant(0.3), key).numpy()
    np.testing.assert_array_equal(drop_path(x, tf.constant(0.3), key).numpy(), y)  # keyed
    per_example = y.reshape(4000, -1)
    assert np.all(per_example == per_example[:, :1])  # one decision per example
    kept = per_example[:, 0] > 0
    np.testing.assert_allclose(per_example[kept], 1 / 0.7, rtol=1e-6)
    assert abs(kept.mean() - 0.7) < 0.03
    np.testing.assert_array_equal(drop_path(x, tf.constant(0.0), key).numpy(), x.numpy())


def test_drop_path_masks_follow_the_step_counter():
    """The masks depend only on (seed, drop_step): rewinding the counter replays them."""
    model = _small(Task((28, 28, 1), 10))
    model.set_drop_path(1, 2)
    x = tf.random.stateless_normal((8, 28, 28, 1), [1, 2])
    first, second = model(x, training=True), model(x, training=True)
    assert int(model.drop_step.numpy()) == 2
    assert not np.allclose(first[0].numpy(), second[0].numpy())
    model.drop_step.assign(0)
    np.testing.assert_array_equal(model(x, training=True)[0].numpy(), first[0].numpy())


def test_no_drop_path_leaves_the_masks_out_and_changes_nothing():
    task = Task((28, 28, 1), 10)
    plain, ramped = _small(task, drop_path=0.0), _small(task, drop_path=0.2)
    ramped.set_weights(plain.get_weights())
    ramped.drop_prob.assign(0.0)
    x = _batch(task)
    np.testing.assert_array_equal(plain(x, training=True)[0].numpy(), ramped(x, training=True)[0].numpy())
    def op_types(model):
        return {op.type for op in tf.function(lambda b: model(b, training=True))
                .get_concrete_function(x).graph.get_operations()}

    assert "StatelessRandomUniformV2" in op_types(ramped)  # the masks
    assert "StatelessRandomUniformV2" not in op_types(plain)


def test_drop_prob_variable_and_ramp():
    model = _small(Task((28, 28, 1), 10))
    assert model.drop_path_rate == 0.2 and isinstance(model.auxiliary_weight, float)
    assert model.drop_prob.dtype == "float32" and tuple(model.drop_prob.shape) == ()
    assert not model.drop_prob.trainable
    assert all(v is not model.drop_prob for v in model.trainable_variables)
    assert any(v is model.drop_prob for v in model.non_trainable_variables)
    assert model.set_drop_path(5, 10) == pytest.approx(0.1)
    assert float(model.drop_prob.numpy()) == pytest.approx(0.1)


def test_drop_path_only_in_training_and_random():
    task = Task((28, 28, 1), 10)
    model = _small(task)
    x = _batch(task)
    model.drop_prob.assign(0.0)
    ref = model(x).numpy()
    model.drop_prob.assign(0.5)
    for _ in range(2):  # inference: deterministic and unaffected by drop_prob
        np.testing.assert_array_equal(model(x).numpy(), ref)
    a, b = (model(x, training=True)[0].numpy() for _ in range(2))
    assert not np.allclose(a, b)  # fresh random masks on every training call
    model.drop_prob.assign(0.0)
    a, b = (model(x, training=True)[0].numpy() for _ in range(2))
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_drop_path_skips_identity_ops():
    s0, s1 = tf.random.normal((2, 6, 6, 8)), tf.random.normal((2, 6, 6, 8))
    identity = Genotype(normal=(("skip_connect", 0), ("skip_connect", 1)) * 2, normal_concat=(2, 3),
                        reduce=(("skip_connect", 0), ("skip_connect", 1)) * 2, reduce_concat=(2, 3))
    cell = NetworkCell(identity.normal, identity.normal_concat, 4, False, False, name="cell")
    assert all(cell.identity)
    key = tf.constant([3, 4], tf.int64)
    np.testing.assert_allclose(cell(s0, s1, drop_prob=tf.constant(0.9), training=True,
                                    drop_seed=key).numpy(),
                               cell(s0, s1, drop_prob=tf.constant(0.0), training=True,
                                    drop_seed=key).numpy(),
                               rtol=1e-6, atol=1e-6)
    reduce = NetworkCell(identity.reduce, identity.reduce_concat, 4, True, False, name="rcell")
    assert not any(reduce.identity)  # stride-2 skips are factorized reduces: dropped too
    out = [reduce(s0, s1, drop_prob=tf.constant(0.5), training=True,
                  drop_seed=tf.constant([3, k], tf.int64)).numpy() for k in range(4)]
    assert not all(np.allclose(out[0], o) for o in out[1:])


def test_set_drop_path_does_not_retrace():
    task = Task((28, 28, 1), 10)
    model = _small(task, cells=3, channels=4)
    step = tf.function(lambda x: model(x, training=True)[0])
    x = _batch(task)
    step(x)
    for epoch in range(1, 4):
        model.set_drop_path(epoch, 4)
        step(x)
    assert step.experimental_get_tracing_count() == 1


def test_drop_prob_under_mirrored_strategy(two_replicas):
    task = Task((28, 28, 1), 10)
    with two_replicas.scope():
        model = _small(task, cells=3, channels=4)
    model.set_drop_path(1, 2)
    values = two_replicas.experimental_local_results(model.drop_prob.value)
    assert len(values) == 2 and all(float(v.numpy()) == pytest.approx(0.1) for v in values)
    x, y = _batch(task, 4), tf.constant([1, 2, 3, 4])

    @tf.function
    def run():
        ds = two_replicas.experimental_distribute_values_from_function(
            lambda ctx: (x[2 * ctx.replica_id_in_sync_group:][:2],
                         y[2 * ctx.replica_id_in_sync_group:][:2]))
        return two_replicas.run(lambda b: steps.forward_loss(model, *b)[0], args=(ds,))

    loss = two_replicas.reduce("SUM", run(), axis=None)
    assert np.isfinite(loss.numpy())


# --- save / load -----------------------------------------------------------------------


def test_network_keras_round_trip(tmp_path):
    task = Task((30, 80, 1), 3, "regression")
    model = _small(task, MIXED)
    x = _batch(task)
    model(x, training=True)  # moves BN statistics away from their initial values
    model.set_drop_path(3, 4)
    json.dumps(model.get_config())
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, Network)
    assert loaded.genotype == MIXED and loaded.task == task
    assert float(loaded.drop_prob.numpy()) == pytest.approx(0.15)
    assert loaded.auxiliary_weight == pytest.approx(0.4) and loaded.drop_path_rate == 0.2
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    for a, b in zip(model.weights, loaded.weights):
        assert a.path == b.path
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    model.drop_prob.assign(0.0)
    loaded.drop_prob.assign(0.0)
    for a, b in zip(model(x, training=True), loaded(x, training=True)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6)


def test_resnet_keras_round_trip(tmp_path):
    task = Task((30, 80, 1), 10)
    model = tiny_resnet(task)
    x = _batch(task)
    model(x, training=True)
    path = str(tmp_path / "r.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, ResNet) and loaded.widths == model.widths
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


def test_custom_layers_serialize():
    layers = [NetworkCell(DARTS_V2.reduce, DARTS_V2.reduce_concat, 4, True, True, name="c"),
              AuxiliaryHead(3, name="a"), BasicBlock(8, 2, name="b")]
    for layer in layers:
        data = keras.saving.serialize_keras_object(layer)
        assert data["registered_name"] == f"tfdarts>{type(layer).__name__}"
        again = keras.saving.deserialize_keras_object(data)
        assert type(again) is type(layer) and again.get_config() == layer.get_config()


# --- baselines -------------------------------------------------------------------------


@pytest.mark.parametrize("shape_idx", range(len(SHAPES)), ids=["28x28x1", "32x32x3", "30x80x1"])
def test_resnets_run_on_all_inputs(shape_idx):
    shape = SHAPES[shape_idx]
    for k, builder in enumerate((resnet18, tiny_resnet)):
        task = TASKS[(shape_idx + k) % 3](shape)
        model = builder(task)
        x = _batch(task)
        assert tuple(model(x, training=True).shape) == (2, task.num_outputs)
        assert tuple(model(x).shape) == (2, task.num_outputs)
        assert model.auxiliary_weight == 0.0 and model.task == task
        assert model.stem_conv.kernel.shape[2] == shape[2]


def test_tiny_resnet_is_eight_times_narrower():
    task = Task((32, 32, 3), 10)
    big, tiny = resnet18(task), tiny_resnet(task)
    big.build_from_task()
    tiny.build_from_task()
    assert tuple(w // 8 for w in big.widths) == tiny.widths
    assert len(big.blocks) == 8 and len(tiny.blocks) == 4
    convs = [v for v in tiny.trainable_variables if len(v.shape) == 4 and v.shape[0] == 3]
    assert len(convs) == 9  # stem + 8 convs (+ dense = 10 layers)
    assert count_params(big) == 11_173_962  # the usual CIFAR ResNet-18 count
    assert count_params(big) / count_params(tiny) > 30
    assert set(MODEL_BUILDERS) == {"resnet18", "tiny_resnet"}
    assert MODEL_BUILDERS["tiny_resnet"] is tiny_resnet


def test_random_genotypes_deterministic_distinct_valid():
    a, b = random_genotypes(6, seed=3), random_genotypes(6, seed=3)
    assert a == b and len(set(a)) == 6
    assert random_genotypes(6, seed=4) != a
    for g in a:
        Genotype.from_dict(g.to_dict())  # validates
        for gene in (g.normal, g.reduce):
            assert all(op != NONE for op, _ in gene)
            for node in range(4):
                (_, i), (_, j) = gene[2 * node], gene[2 * node + 1]
                assert i != j and max(i, j) < node + 2
        assert g.normal_concat == g.reduce_concat == (2, 3, 4, 5)


def test_random_genotype_respects_primitives_and_nodes():
    g = random_genotype(np.random.default_rng(0), ("none", "skip_connect"), nodes=3)
    assert g.nodes == 3 and {op for op, _ in g.normal + g.reduce} == {"skip_connect"}
    ops_seen = {op for g in random_genotypes(20, seed=1) for op, _ in g.normal + g.reduce}
    assert ops_seen == set(PRIMITIVES) - {NONE}
    with pytest.raises(ValueError, match="other than 'none'"):
        random_genotype(np.random.default_rng(0), ("none",))
    with pytest.raises(ValueError, match="distinct"):
        random_genotypes(2, seed=0, primitives=("skip_connect",), nodes=1, max_tries=10)
