"""The per-replica training step shared by search (both levels) and retraining.

Everything here runs inside ``strategy.run`` (replica context). Losses are
averaged over the *global* batch with ``tf.nn.compute_average_loss``, so summing
gradients across replicas gives the gradient of the global-batch mean. Gradient
functions return this replica's share; `apply_update` sums it once (one
collective) and the optimizer applies the result as is.
"""

from __future__ import annotations

import dataclasses
import functools
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
        optimizer: A Keras optimizer from `build_optimizer` (no clipping or
            decay of its own).
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

    `tfdarts.metrics.summarize` turns their totals into metrics.

    Args:
        task: The task.
        outputs: ``(B, K)`` logits or (standardised) regression outputs.
        y: ``(B,)`` labels or ``(B, K)`` standardised targets.
        losses: ``(B,)`` per-example losses.

    Returns:
        ``count`` and ``loss_sum``; ``correct`` and, with more than 5 classes,
        ``top5`` (classification); or per-output ``sse``, ``sum_y``, ``sum_y2``
        of shape ``(K,)`` (regression).
    """
    stats = {"count": tf.cast(tf.shape(y)[0], tf.float32), "loss_sum": tf.reduce_sum(losses)}
    if task.is_classification:
        labels = tf.cast(y, tf.int32)
        hits = tf.equal(tf.argmax(outputs, axis=-1, output_type=tf.int32), labels)
        stats["correct"] = tf.reduce_sum(tf.cast(hits, tf.float32))
        if task.num_outputs > 5:
            top5 = tf.math.in_top_k(labels, tf.cast(outputs, tf.float32), 5)
            stats["top5"] = tf.reduce_sum(tf.cast(top5, tf.float32))
    else:
        y = tf.cast(y, tf.float32)
        stats["sse"] = tf.reduce_sum(tf.square(outputs - y), axis=0)
        stats["sum_y"] = tf.reduce_sum(y, axis=0)
        stats["sum_y2"] = tf.reduce_sum(tf.square(y), axis=0)
    return stats


def all_reduce_sum(values: List[tf.Tensor]) -> List[tf.Tensor]:
    """Sums tensors across replicas (identity with a single replica).

    The tensors travel as one flat vector: a single collective per call, so
    replicas can never disagree on the order of several independent ones.

    Args:
        values: This replica's tensors, any shapes (float32).

    Returns:
        The cross-replica sums, same shapes as `values`.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx.num_replicas_in_sync == 1:
        return list(values)
    flat = tf.concat([tf.reshape(v, [-1]) for v in values], axis=0)
    summed = ctx.all_reduce(tf.distribute.ReduceOp.SUM, flat)
    sizes = [int(np.prod(v.shape)) for v in values]
    return [tf.reshape(part, v.shape) for part, v in zip(tf.split(summed, sizes), values)]


def plain_gradients(model: keras.Model, variables: Sequence[keras.Variable]) -> GradientFn:
    """A `GradientFn` differentiating the training loss w.r.t. `variables` only.

    The gradients are this replica's share (unreduced): their sum over replicas
    is the gradient of the global-batch loss.
    """

    def fn(batch: Batch):
        x, y = batch
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch([v.value for v in variables])
            loss, outputs, losses = forward_loss(model, x, y)
        grads = tape.gradient(loss, [v.value for v in variables],
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return (outputs, losses), grads

    return fn


def forward_stats(model: keras.Model, batch: Batch) -> Stats:
    """Batch statistics of a training-mode forward pass, without any update."""
    x, y = batch
    _, outputs, losses = forward_loss(model, x, y)
    return batch_stats(model.task, outputs, y, losses)


class AppliesGlobalGradients:
    """Optimizer mixin: `apply_gradients` takes gradients that are already global.

    Keras 3's TensorFlow optimizer sums the gradients it is given across
    replicas (``_backend_update_step`` -> ``_all_reduce_sum_gradients``).
    `apply_update` sums them itself, before clipping, so that second sum must
    not happen: here it is the identity. Slots, variables and checkpoints are
    those of the base optimizer. Use `global_gradient_optimizer` to get one.
    """

    def _all_reduce_sum_gradients(
            self, grads_and_vars: Sequence[Tuple[tf.Tensor, tf.Variable]]
    ) -> List[Tuple[tf.Tensor, tf.Variable]]:
        """Returns the ``(gradient, variable)`` pairs unchanged."""
        return list(grads_and_vars)


class FusedMomentumUpdate:
    """SGD mixin: the momentum update of each variable as one fused kernel.

    Keras' SGD traces about ten ops per variable (casts, two products, a
    difference, two assignments and reads); a supernet has hundreds of weight
    tensors, so that is a fifth of the search step's graph. The kernel
    ``ResourceApplyKerasMomentum`` computes the same ``m = m * mu - g * lr``
    then ``w = w + m`` on the same buffers. Nesterov, no momentum or sparse
    gradients take Keras' own path.
    """

    def update_step(self, gradient, variable, learning_rate) -> None:
        """Updates `variable` (and its momentum buffer) with `gradient`."""
        if not self.momentum or self.nesterov or isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        var = variable.value if isinstance(variable, keras.Variable) else variable
        momentum = self.momentums[self._get_variable_index(variable)]
        dtype = var.dtype.base_dtype
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=var.handle, accum=momentum.value.handle, lr=tf.cast(learning_rate, dtype),
            grad=tf.cast(gradient, dtype), momentum=tf.constant(self.momentum, dtype),
            use_locking=False, use_nesterov=False)
        return None


@functools.lru_cache(maxsize=None)
def _global_gradient_class(cls: type) -> type:
    """``cls`` with `AppliesGlobalGradients` in front of it (one class per `cls`).

    Keras' own SGD also gets `FusedMomentumUpdate`.
    """
    if not hasattr(cls, "_all_reduce_sum_gradients"):
        # the hook this relies on is private; fail loudly if Keras drops it
        raise TypeError(f"{cls.__name__} has no _all_reduce_sum_gradients to override; "
                        "this Keras version aggregates gradients differently")
    fused = (FusedMomentumUpdate,) if cls is keras.optimizers.SGD else ()
    return type(f"GlobalGradient{cls.__name__}", (AppliesGlobalGradients, *fused, cls),
                {"__doc__": f"{cls.__name__} applying already-summed gradients."})


def global_gradient_optimizer(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """Makes `optimizer` apply its gradients as given, without a cross-replica sum.

    The instance is converted in place (its class gets `AppliesGlobalGradients`
    in front), so references to it, its state and its checkpoint layout are
    unchanged. Idempotent.

    Args:
        optimizer: A Keras optimizer, built or not.

    Returns:
        `optimizer` itself.

    Raises:
        TypeError: For wrapper optimizers, or if Keras lacks the hook.
    """
    if hasattr(optimizer, "inner_optimizer"):
        # e.g. LossScaleOptimizer: the inner optimizer applies, and would still sum
        raise TypeError(f"{type(optimizer).__name__} wraps another optimizer; convert that one")
    if not isinstance(optimizer, AppliesGlobalGradients):
        optimizer.__class__ = _global_gradient_class(type(optimizer))
    return optimizer


def apply_update(rule: UpdateRule, grads: List[tf.Tensor]) -> None:
    """Sums per-replica gradients, clips, adds L2 decay and applies the optimizer.

    The sum is the only collective: clipping must see the global gradient (as
    with one replica), and the optimizer (see `AppliesGlobalGradients`) applies
    it without summing again, so the update is that of one replica on the
    global batch for any replica count.

    Args:
        rule: Optimizer, variables, clipping and decay.
        grads: This replica's unreduced gradients, one per variable (shapes of
            `rule.variables`).

    Raises:
        TypeError: With several replicas, if the optimizer would sum again.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx.num_replicas_in_sync > 1 and not isinstance(rule.optimizer, AppliesGlobalGradients):
        raise TypeError(f"{type(rule.optimizer).__name__} would sum the gradients across replicas "
                        "a second time; create it with steps.build_optimizer")
    grads = all_reduce_sum(list(grads))
    if rule.clip_norm:
        grads, _ = tf.clip_by_global_norm(grads, rule.clip_norm)
    if rule.weight_decay:
        grads = [g + rule.weight_decay * v.value for g, v in zip(grads, rule.variables)]
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
        gradient_fn: Returns ``((outputs, per_example_losses), grads)`` with
            this replica's unreduced grads.

    Returns:
        Per-replica metric sums (see `batch_stats`).
    """
    (outputs, losses), grads = gradient_fn(batch)
    apply_update(rule, grads)
    return batch_stats(model.task, outputs, batch[1], losses)


def build_optimizer(optimizer: keras.optimizers.Optimizer,
                    variables: Sequence[keras.Variable]) -> keras.optimizers.Optimizer:
    """Prepares `optimizer` for `apply_update` (call inside ``strategy.scope()``).

    Converts it with `global_gradient_optimizer` and builds its slots for
    `variables`.

    Args:
        optimizer: A plain Keras optimizer (no clipping or decay of its own).
        variables: The variables it will update.

    Returns:
        `optimizer` itself, converted and built.
    """
    optimizer = global_gradient_optimizer(optimizer)
    optimizer.build(list(variables))
    return optimizer


def sgd_momentum(optimizer: keras.optimizers.Optimizer, variable: keras.Variable) -> tf.Tensor:
    """The momentum buffer ``m`` Keras' SGD keeps for `variable`.

    Keras' (non-Nesterov) SGD updates ``m = mu * m - lr * g`` then ``w = w + m``.
    This is the one place that knows where the buffer lives.

    Args:
        optimizer: A built ``keras.optimizers.SGD`` with ``momentum > 0``.
        variable: One of the variables it was built for.

    Returns:
        ``m``, shape of `variable` (this replica's copy under a strategy).

    Raises:
        ValueError: If the optimizer keeps no momentum buffer for `variable`.
    """
    name = type(optimizer).__name__
    slots = getattr(optimizer, "momentums", None)
    if not getattr(optimizer, "built", False) or not slots:
        raise ValueError(f"{name} keeps no SGD momentum buffers (built: "
                         f"{getattr(optimizer, 'built', False)}, momentum: "
                         f"{getattr(optimizer, 'momentum', None)})")
    try:
        index = optimizer._get_variable_index(variable)
    except KeyError:
        raise ValueError(f"{name} keeps no momentum buffer for {variable.path}") from None
    slot = slots[index]
    if tuple(slot.shape) != tuple(variable.shape):
        raise ValueError(f"{name}'s momentum buffer {slot.path} has shape {tuple(slot.shape)}, "
                         f"not that of {variable.path} {tuple(variable.shape)}")
    return tf.convert_to_tensor(slot.value)
