"""The per-replica training step shared by search (both levels) and retraining.

Everything here runs inside ``strategy.run`` (replica context). Losses are
averaged over the *global* batch with ``tf.nn.compute_average_loss``, so summing
gradients across replicas gives the gradient of the global-batch mean.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from tfdarts.task import Task

Batch = Tuple[tf.Tensor, tf.Tensor]
Stats = Dict[str, tf.Tensor]
GradientFn = Callable[[Batch], Tuple[tf.Tensor, tf.Tensor, List[tf.Tensor]]]


@dataclasses.dataclass(frozen=True)
class UpdateRule:
    """How one group of variables is updated.

    Attributes:
        optimizer: A built Keras optimizer (no clipping or decay of its own).
        variables: The variables it updates.
        clip_norm: Global-norm clip of the summed gradient (0 = none).
        weight_decay: Coupled L2 added to the clipped gradient (``g + wd * w``).
    """

    optimizer: keras.optimizers.Optimizer
    variables: Sequence[keras.Variable]
    clip_norm: float = 0.0
    weight_decay: float = 0.0


def per_example_loss(task: Task, outputs: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Cross-entropy from logits or mean squared error, shape ``(B,)``."""
    if task.is_classification:
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int32),
                                                              logits=outputs)
    return tf.reduce_mean(tf.square(outputs - tf.cast(y, outputs.dtype)), axis=-1)


def forward_loss(model: keras.Model, x: tf.Tensor, y: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Runs the model in training mode.

    Models returning ``(main, auxiliary)`` add ``model.auxiliary_weight`` times
    the auxiliary loss.

    Returns:
        ``(loss, main_outputs, per_example_main_loss)``: loss averaged over the
        global batch (scalar), outputs ``(B, K)``, losses ``(B,)``.
    """
    outputs = model(x, training=True)
    aux = None
    if isinstance(outputs, (tuple, list)):
        outputs, aux = outputs
    losses = per_example_loss(model.task, outputs, y)
    loss = tf.nn.compute_average_loss(losses)
    if aux is not None:
        loss += model.auxiliary_weight * tf.nn.compute_average_loss(
            per_example_loss(model.task, aux, y))
    return loss, outputs, losses


def batch_stats(task: Task, outputs: tf.Tensor, y: tf.Tensor, losses: tf.Tensor) -> Stats:
    """Sums from which epoch metrics are computed after a cross-replica sum.

    Returns:
        ``count`` and ``loss_sum``; ``correct`` (classification) or per-output
        ``sse``, ``sum_y``, ``sum_y2`` of shape ``(K,)`` (regression).
    """
    stats = {"count": tf.cast(tf.shape(y)[0], tf.float32), "loss_sum": tf.reduce_sum(losses)}
    if task.is_classification:
        hits = tf.equal(tf.argmax(outputs, axis=-1, output_type=tf.int32), tf.cast(y, tf.int32))
        stats["correct"] = tf.reduce_sum(tf.cast(hits, tf.float32))
    else:
        y = tf.cast(y, tf.float32)
        stats["sse"] = tf.reduce_sum(tf.square(outputs - y), axis=0)
        stats["sum_y"] = tf.reduce_sum(y, axis=0)
        stats["sum_y2"] = tf.reduce_sum(tf.square(y), axis=0)
    return stats


def all_reduce_sum(values: List[tf.Tensor]) -> List[tf.Tensor]:
    """Sums tensors across replicas (identity without a strategy).

    The tensors travel as one flat vector: a single collective per call, so
    replicas can never disagree on the order of several independent ones.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx.num_replicas_in_sync == 1:
        return list(values)
    flat = tf.concat([tf.reshape(v, [-1]) for v in values], axis=0)
    summed = ctx.all_reduce(tf.distribute.ReduceOp.SUM, flat)
    sizes = [int(np.prod(v.shape)) for v in values]
    return [tf.reshape(part, v.shape) for part, v in zip(tf.split(summed, sizes), values)]


def plain_gradients(model: keras.Model, variables: Sequence[keras.Variable]) -> GradientFn:
    """A `GradientFn` differentiating the training loss w.r.t. `variables` only."""

    def fn(batch: Batch):
        x, y = batch
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch([v.value for v in variables])
            loss, outputs, losses = forward_loss(model, x, y)
        grads = tape.gradient(loss, [v.value for v in variables])
        return (outputs, losses), grads

    return fn


def apply_update(rule: UpdateRule, grads: List[tf.Tensor]) -> None:
    """Sums per-replica gradients, clips, adds L2 decay and applies the optimizer.

    Clipping must see the global gradient (as with one replica), so the sum is
    taken here. Keras' optimizer sums across replicas once more when it
    applies, so it gets the global gradient divided by the replica count
    (an exact division for power-of-two replica counts).
    """
    ctx = tf.distribute.get_replica_context()
    grads = all_reduce_sum(list(grads))
    if rule.clip_norm:
        grads, _ = tf.clip_by_global_norm(grads, rule.clip_norm)
    if rule.weight_decay:
        grads = [g + rule.weight_decay * v.value for g, v in zip(grads, rule.variables)]
    if ctx.num_replicas_in_sync > 1:
        grads = [g / ctx.num_replicas_in_sync for g in grads]
    rule.optimizer.apply_gradients(zip(grads, rule.variables))


def replica_step(model: keras.Model, rule: UpdateRule, batch: Batch,
                 gradient_fn: GradientFn) -> Stats:
    """One update of `rule.variables` on `batch`; the only training step there is.

    Search calls it twice per iteration (alphas on a validation batch with the
    architect's `gradient_fn`, then weights on a training batch); retraining
    calls it once with `plain_gradients`.

    Args:
        model: Model with a ``task`` attribute.
        rule: Optimizer, variables, clipping and decay.
        batch: ``(x (B, H, W, C), y (B,) or (B, K))`` of this replica.
        gradient_fn: Returns ``((outputs, per_example_losses), grads)``.

    Returns:
        Per-replica metric sums (see `batch_stats`).
    """
    (outputs, losses), grads = gradient_fn(batch)
    apply_update(rule, grads)
    return batch_stats(model.task, outputs, batch[1], losses)


def build_optimizer(optimizer: keras.optimizers.Optimizer,
                    variables: Sequence[keras.Variable]) -> keras.optimizers.Optimizer:
    """Builds optimizer slots for `variables` (call inside ``strategy.scope()``)."""
    optimizer.build(list(variables))
    return optimizer


def summarize(task: Task, totals: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Turns summed `batch_stats` into ``loss`` and the task's metric(s)."""
    count = float(totals["count"])
    out = {"loss": float(totals["loss_sum"]) / max(count, 1.0)}
    if task.is_classification:
        out["accuracy"] = float(totals["correct"]) / max(count, 1.0)
        return out
    sse, sum_y, sum_y2 = (np.asarray(totals[k], np.float64) for k in ("sse", "sum_y", "sum_y2"))
    ss_tot = np.maximum(sum_y2 - sum_y ** 2 / max(count, 1.0), 1e-12)
    out["r2"] = float(np.mean(1.0 - sse / ss_tot))
    out["rmse"] = float(np.sqrt(np.mean(sse) / max(count, 1.0)))
    return out
