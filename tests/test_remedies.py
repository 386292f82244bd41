"""The search remedies: each is off by default, matches the paper when off, and does what it says."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import FASHION_DIR
from edges import reference_op

from tfdarts import config as C
from tfdarts import contract, hessian, ops, trainer
from tfdarts import data as D
from tfdarts.genotype import PRIMITIVES, edge_index, num_edges, parse_alphas
from tfdarts.supernet import EdgeGroup, SearchNetwork, channel_shuffle, edge_softmax
from tfdarts.task import Task

TASK = Task((12, 12, 1), 3)


# --- auxiliary skip (DARTS-) ----------------------------------------------------------------


@pytest.mark.parametrize("strides", [1, 2])
def test_one_hot_edges_with_aux_skip_at_zero_equal_the_op(strides):
    x = tf.random.normal((2, 9, 10, 4))
    k = PRIMITIVES.index("sep_conv_3x3")
    group = EdgeGroup(4, strides, 2, PRIMITIVES, name="group", aux_skip=True)
    out = group(x, tf.one_hot([k, k], len(PRIMITIVES)), training=True, aux_weight=tf.constant(0.0))
    for t in range(2):
        np.testing.assert_allclose(out[..., t, :].numpy(), reference_op(group, k, t, x)(x, training=True).numpy(),
                                   rtol=1e-6, atol=1e-6)


def test_aux_skip_adds_the_scaled_input_on_stride_one_edges():
    x = tf.random.normal((2, 8, 8, 4))
    group = EdgeGroup(4, 1, 2, ("none", "sep_conv_3x3"), name="group", aux_skip=True)
    out = group(x, tf.constant([[1.0, 0.0]] * 2), training=True, aux_weight=tf.constant(0.7))
    for t in range(2):
        np.testing.assert_allclose(out[..., t, :].numpy(), 0.7 * x.numpy(), rtol=1e-6, atol=1e-6)


def test_aux_skip_on_stride_two_edges_is_each_edges_factorized_reduce():
    x = tf.random.normal((2, 9, 9, 4))
    group = EdgeGroup(4, 2, 3, ("none", "skip_connect"), name="group", aux_skip=True)
    edge_weights = tf.constant([0.2, 0.5, 0.3])
    out = group(x, tf.constant([[1.0, 0.0]] * 3), training=True, edge_weights=edge_weights,
                aux_weight=tf.constant(0.5)).numpy()
    for t in range(3):  # the aux path's kernels are laid out as a skip_connect branch's
        aux = group.aux
        reference = ops.FactorizedReduce(4, False, name=f"aux_{t}", track_stats=False)
        reference(x, training=True)
        h = aux.half
        reference.conv_a.kernel.assign(aux.conv_a.kernel.numpy()[..., t * h:(t + 1) * h])
        reference.conv_b.kernel.assign(aux.conv_b.kernel.numpy()[..., t * (4 - h):(t + 1) * (4 - h)])
        expected = 0.5 * float(edge_weights[t]) * reference(x, training=True).numpy()
        np.testing.assert_allclose(out[..., t, :], expected, rtol=1e-5, atol=1e-5)


# --- partial channels and edge normalisation (PC-DARTS) -----------------------------------


def test_partial_channels_one_is_the_plain_supernet_bit_for_bit():
    x = tf.random.normal((2, 12, 12, 1), seed=1)
    outs = []
    for kwargs in ({}, {"partial_channels": 1}):
        tf.keras.utils.set_random_seed(3)
        net = SearchNetwork(TASK, cells=3, channels=4, nodes=2, **kwargs)
        net.build_from_task()
        outs.append(net(x, training=True).numpy())
        assert len(net.arch_variables) == 2
    np.testing.assert_array_equal(outs[0], outs[1])


def test_channel_shuffle_interleaves_groups():
    x = tf.reshape(tf.range(6, dtype=tf.float32), (1, 1, 1, 6))
    assert channel_shuffle(x, 2).numpy().ravel().tolist() == [0, 3, 1, 4, 2, 5]
    assert channel_shuffle(x, 1).numpy().ravel().tolist() == list(range(6))


@pytest.mark.parametrize("strides", [1, 2])
def test_partial_edges_keep_shape_and_bypass_channels(strides):
    x = tf.random.normal((2, 9, 9, 8))
    group = EdgeGroup(8, strides, 2, ("none", "skip_connect"), name="group", partial_channels=4)
    out = group(x, tf.constant([[1.0, 0.0]] * 2), training=True)  # candidates give zeros
    size = 5 if strides == 2 else 9
    assert tuple(out.shape) == (2, size, size, 2, 8)
    bypassed = x[..., 2:] if strides == 1 else tf.nn.max_pool2d(x[..., 2:], 2, 2, "SAME")
    expected = channel_shuffle(tf.concat([tf.zeros_like(bypassed[..., :2]), bypassed], -1), 4)
    for t in range(2):
        np.testing.assert_allclose(out[..., t, :].numpy(), expected.numpy(), rtol=1e-6)


def test_partial_edges_scale_by_their_edge_weights():
    """With edge normalisation each edge's whole term (mixed and bypassed channels) is scaled."""
    x = tf.random.normal((2, 6, 6, 8))
    group = EdgeGroup(8, 1, 2, PRIMITIVES, name="group", partial_channels=2)
    weights = tf.nn.softmax(tf.random.normal((2, len(PRIMITIVES))), axis=-1)
    plain = group(x, weights, training=True).numpy()
    scaled = group(x, weights, training=True, edge_weights=tf.constant([0.25, 2.0])).numpy()
    np.testing.assert_allclose(scaled[..., 0, :], 0.25 * plain[..., 0, :], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scaled[..., 1, :], 2.0 * plain[..., 1, :], rtol=1e-5, atol=1e-6)


def test_edge_weights_are_a_softmax_per_node_and_enter_the_genotype():
    w = edge_softmax(tf.constant([0.0, 1.0, 2.0, 0.0, 0.0]), nodes=2).numpy()
    assert w[:2].sum() == pytest.approx(1.0) and w[2:].sum() == pytest.approx(1.0)
    net = SearchNetwork(TASK, cells=3, channels=4, nodes=2, partial_channels=2)
    net.build_from_task()
    assert len(net.arch_variables) == 4 and "edge_normal" in net.export_probs()
    probs = np.full((num_edges(2), len(PRIMITIVES)), 1.0 / len(PRIMITIVES))
    probs[edge_index(0, 1), PRIMITIVES.index("sep_conv_3x3")] = 0.3  # strongest op, weak edge
    probs[edge_index(0, 0), PRIMITIVES.index("dil_conv_3x3")] = 0.2
    edges = np.ones(num_edges(2))
    edges[edge_index(0, 1)] = 0.1
    plain = parse_alphas(probs, probs, PRIMITIVES, 2)
    normalised = parse_alphas(probs, probs, PRIMITIVES, 2, edge_normal=edges, edge_reduce=edges)
    assert plain.normal[0] == ("sep_conv_3x3", 1) and normalised.normal[0] == ("dil_conv_3x3", 0)


# --- max skips (P-DARTS) ------------------------------------------------------------------


def test_max_skips_replaces_the_weakest_skips():
    probs = np.full((num_edges(2), len(PRIMITIVES)), 0.05)
    skip, conv = PRIMITIVES.index("skip_connect"), PRIMITIVES.index("sep_conv_3x3")
    probs[:, skip] = [0.9, 0.8, 0.7, 0.6, 0.5]
    probs[:, conv] = 0.3
    free = parse_alphas(probs, probs, PRIMITIVES, 2)
    assert sum(op == "skip_connect" for op, _ in free.normal) == 4
    limited = parse_alphas(probs, probs, PRIMITIVES, 2, max_skips=1)
    assert [op for op, _ in limited.normal].count("skip_connect") == 1
    assert limited.normal[0] == ("skip_connect", 0)  # the strongest skip stays
    assert limited.reduce == free.reduce  # only the normal cell is limited


# --- the collapse signal and early stop ---------------------------------------------------


def test_power_iteration_recovers_the_dominant_eigenvalue_of_a_quadratic():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a = q @ np.diag([5.0, -1.0, 2.0, 0.5, 0.1, 1.5]) @ q.T
    value = hessian.power_iteration(lambda v: [a @ v[0]], [(6,)], iters=60)
    assert value == pytest.approx(5.0, rel=1e-4)


def test_alpha_hessian_matches_the_explicit_hessian():
    tf.keras.utils.set_random_seed(0)
    net = SearchNetwork(TASK, cells=3, channels=4, nodes=1, primitives=("none", "skip_connect", "avg_pool_3x3"))
    net.build_from_task()
    x = tf.random.normal((8, 12, 12, 1), seed=2)
    y = tf.constant(np.arange(8) % 3, tf.int32)
    probe = hessian.AlphaHessian(net, tf.distribute.get_strategy(),
                                 tf.data.Dataset.from_tensors((x, y)), iters=80)
    alphas = [a.value for a in net.alpha_variables]
    with tf.GradientTape(persistent=True) as outer:
        outer.watch(alphas)
        with tf.GradientTape() as inner:
            inner.watch(alphas)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, net(x, training=True)))
        flat = tf.concat([tf.reshape(g, [-1]) for g in inner.gradient(loss, alphas)], 0)
    blocks = outer.jacobian(flat, alphas, experimental_use_pfor=False)
    full = tf.concat([tf.reshape(b, (flat.shape[0], -1)) for b in blocks], axis=1).numpy()
    eig = np.linalg.eigvalsh(0.5 * (full + full.T).astype(np.float64))
    dominant = eig[np.argmax(np.abs(eig))]
    assert probe.eigenvalue() == pytest.approx(dominant, rel=2e-2, abs=1e-6)


def test_rdarts_rule_stops_on_a_rising_trace_only():
    rising = [1.0, 1.0, 1.0, 1.05, 1.6, 1.9]
    assert not hessian.rdarts_stop(rising[:4], window=2, factor=1.3, min_epoch=4)
    assert hessian.rdarts_stop(rising[:6], window=2, factor=1.3, min_epoch=4)
    assert not hessian.rdarts_stop([1.0, 1.1, 1.2, 1.3, 1.4, 1.5], window=2, factor=1.3, min_epoch=4)
    assert not hessian.rdarts_stop(rising, window=2, factor=1.3, min_epoch=7)


# --- the search with every remedy ---------------------------------------------------------


@pytest.fixture(scope="module")
def fashion_small():
    return D.prepare(C.DataConfig(name="fashion_mnist", data_dir=FASHION_DIR, max_train=256, max_test=64))


REMEDIES = ["search.beta_decay=0.5", "search.aux_skip=1.0", "search.partial_channels=2",
            "search.max_skips=1"]


def _search_config(*extra):
    return C.load_config(overrides=[
        "search.cells=3", "search.channels=4", "search.nodes=2", "search.batch_size=32",
        "search.alpha_lr=0.01", "runtime.log_every=0", *extra])


def test_warmup_trains_weights_only_then_alphas_move(fashion_small, tmp_path):
    cfg = _search_config("search.epochs=2", "search.warmup_epochs=1", "search.eigen_batches=0")
    trainer.search(cfg, fashion_small, str(tmp_path))
    with np.load(os.path.join(tmp_path, contract.ALPHAS_FILE)) as f:
        normal = f["normal"]
    init = SearchNetwork(fashion_small.spec.task, 3, 4, 2, seed=cfg.search.seed)
    init.build_from_task()
    np.testing.assert_allclose(normal[0], init.export_probs()["normal"], rtol=1e-6)
    assert not np.allclose(normal[1], normal[0])
    history = json.load(open(os.path.join(tmp_path, contract.HISTORY_FILE)))["epochs"]
    assert all("val_loss" in r for r in history)


def test_search_with_every_remedy_records_schedules_and_eigenvalues(fashion_small, tmp_path):
    cfg = _search_config("search.epochs=3", *REMEDIES)
    result = trainer.search(cfg, fashion_small, str(tmp_path))
    history = result.history
    assert [r["aux_skip"] for r in history] == pytest.approx([1.0, 0.5, 0.0])
    assert [r["beta_decay"] for r in history] == pytest.approx([0.0, 0.25, 0.5])
    assert all(np.isfinite(r["eigenvalue"]) for r in history)
    assert sum(op == "skip_connect" for op, _ in result.genotype.normal) <= 1
    with np.load(os.path.join(tmp_path, contract.ALPHAS_FILE)) as f:
        assert f["edge_normal"].shape == (3, num_edges(2))


def test_eigen_early_stop_keeps_the_genotype_of_the_stop_epoch(fashion_small, tmp_path, monkeypatch):
    trace = iter([1.0, 1.0, 3.0, 3.0, 3.0])
    monkeypatch.setattr(hessian.AlphaHessian, "eigenvalue", lambda self, seed=0: next(trace))
    cfg = _search_config("search.epochs=5", "search.early_stop=eigen", "search.early_stop_window=1",
                         "search.early_stop_min_epoch=2")
    result = trainer.search(cfg, fashion_small, str(tmp_path))
    assert len(result.history) == 3 and result.history[-1]["early_stop"]
    saved = json.load(open(os.path.join(tmp_path, contract.GENOTYPE_FILE)))
    assert saved == result.genotype.to_dict() == result.history[-1]["genotype"]
    again = trainer.search(cfg, fashion_small, str(tmp_path))  # a rerun stays stopped
    assert len(again.history) == 3


def _remedy_job(order, strategy):
    cfg = C.load_config(overrides=[
        "search.cells=3", "search.channels=4", "search.nodes=1", "search.batch_size=16",
        f"search.order={order}", "search.w_lr=0.1", "search.alpha_lr=0.01", *REMEDIES]).search
    job = trainer.SearchJob(cfg, TASK, strategy)
    job.begin_epoch(1)
    return job


def _duplicated_batch(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(8, 12, 12, 1)).astype(np.float32)
    y = rng.integers(0, 3, size=8).astype(np.int32)
    return np.concatenate([x, x]), np.concatenate([y, y])


def test_one_and_two_replicas_agree_with_every_remedy(two_replicas):
    """First order; the second order's replica sums are checked in test_reduction."""
    results = []
    for strategy in (tf.distribute.get_strategy(), two_replicas):
        job = _remedy_job(1, strategy)
        ds = tf.data.Dataset.from_tensors((_duplicated_batch(0), _duplicated_batch(1)))
        stats = job.step(next(iter(strategy.experimental_distribute_dataset(ds))))
        results.append((float(stats["val"]["loss_sum"]), [v.numpy() for v in job.model.trainable_variables]))
    (loss1, vars1), (loss2, vars2) = results
    assert loss2 == pytest.approx(loss1, rel=1e-5)
    for a, b in zip(vars1, vars2):
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-6)


# --- Beta-Decay (beta-DARTS) --------------------------------------------------------------


def test_beta_decay_adds_lambda_softmax_over_edges_to_the_alpha_gradient():
    from tfdarts import architect, steps

    tf.keras.utils.set_random_seed(0)
    net = SearchNetwork(TASK, cells=3, channels=4, nodes=2)
    net.build_from_task()
    net.alpha_normal.assign(tf.random.normal(net.alpha_normal.shape, seed=1))
    opt = steps.build_optimizer(tf.keras.optimizers.SGD(0.1, momentum=0.9), net.weight_variables)
    rule = steps.UpdateRule(opt, net.weight_variables)
    plain = architect.Architect(net, 1, rule)
    reg = architect.Architect(net, 1, rule, regularise=True)
    reg.set_regularisation(0.5)
    batch = (tf.random.normal((4, 12, 12, 1), seed=2), tf.constant([0, 1, 2, 0]))
    _, g_plain = plain.gradient_fn(batch)(batch)
    _, g_reg = reg.gradient_fn(batch)(batch)
    edges = 2 * num_edges(2)
    for alpha, a, b in zip(net.alpha_variables, g_plain, g_reg):
        logits = alpha.numpy().astype(np.float64)
        softmax = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        np.testing.assert_allclose((b - a).numpy(), 0.5 * softmax / edges, rtol=1e-4, atol=1e-7)
    lse = sum(np.log(np.exp(a.numpy().astype(np.float64)).sum(-1)).sum() for a in net.alpha_variables)
    assert float(reg.regulariser()) == pytest.approx(0.5 * lse / edges, rel=1e-5)


# --- confidence of the choice -------------------------------------------------------------


def test_choice_confidence_flags_margins_within_noise():
    from tfdarts import analysis

    k = len(PRIMITIVES)
    probs = np.full((num_edges(2), k), 1.0 / k)
    conv, dil = PRIMITIVES.index("sep_conv_3x3"), PRIMITIVES.index("dil_conv_3x3")
    probs[edge_index(0, 0), conv] += 0.2  # clearly chosen
    probs[edge_index(0, 1), dil] += 0.005  # within noise
    probs /= probs.sum(-1, keepdims=True)
    rows = analysis.choice_confidence(probs, PRIMITIVES, 2)
    first = {r["edge"]: r for r in rows}
    clear = next(r for r in rows if r["op"] == "sep_conv_3x3")
    assert clear["margin"] == pytest.approx(0.2 / 1.2) and not clear["guessed"]
    assert first[rows[1]["edge"]]["guessed"]
    stats = analysis.cell_stats(probs, PRIMITIVES, 2)
    assert stats["guessed_share"] == pytest.approx(sum(r["guessed"] for r in rows) / len(rows))
    assert 0.0 < stats["guessed_share"] < 1.0


def test_second_order_step_runs_with_every_remedy():
    job = _remedy_job(2, tf.distribute.get_strategy())
    ds = tf.data.Dataset.from_tensors((_duplicated_batch(0), _duplicated_batch(1)))
    before = [v.numpy() for v in job.model.arch_variables]
    stats = job.step(next(iter(ds)))
    assert np.isfinite(float(stats["val"]["loss_sum"]))
    assert all(not np.allclose(a, b.numpy()) for a, b in zip(before, job.model.arch_variables))
