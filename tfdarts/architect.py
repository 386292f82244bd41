"""Hypergradients of the validation loss w.r.t. the architecture parameters.

First order (xi = 0): ``grad_alpha L_val(w, alpha)``.
Second order (unrolled): with ``w' = w - xi * (momentum term + grad_w L_train + wd * w)``,
``grad_alpha L_val(w', alpha) - xi * H v`` where ``v = grad_w' L_val(w', alpha)`` and
``H v = grad^2_{alpha, w} L_train(w, alpha) v`` is approximated by central differences
``(grad_alpha L_train(w + r v) - grad_alpha L_train(w - r v)) / (2 r)``, ``r = 0.01 / ||v||``.
"""

from __future__ import annotations

from typing import List, Sequence

import keras
import tensorflow as tf

from tfdarts import steps

FD_SCALE = 0.01


class Architect:
    """Computes the alpha gradient for one search iteration.

    Args:
        model: The supernet (`SearchNetwork`).
        order: 1 (first order) or 2 (second order, unrolled).
        weight_rule: The weights' update rule; second order reads its
            optimizer's learning rate (xi), momentum slots and weight decay.
    """

    def __init__(self, model: keras.Model, order: int, weight_rule: steps.UpdateRule) -> None:
        if order not in (1, 2):
            raise ValueError(f"architect order must be 1 or 2, got {order}")
        self.model, self.order, self.weight_rule = model, order, weight_rule

    def gradient_fn(self, train_batch: steps.Batch) -> steps.GradientFn:
        """A `GradientFn` for the alpha step on a validation batch."""
        if self.order == 1:
            return steps.plain_gradients(self.model, self.model.arch_variables)
        return lambda val_batch: self.unrolled_gradients(val_batch, train_batch)

    def unrolled_gradients(self, val_batch: steps.Batch, train_batch: steps.Batch):
        """Second-order alpha gradient (per replica; cross-replica sums inside).

        Returns:
            ``((val_outputs, val_losses), alpha_grads)``; the grads are already
            global, so they are divided by the replica count before
            `steps.apply_update` sums them again.
        """
        model, rule = self.model, self.weight_rule
        weights = [v.value for v in model.weight_variables]
        xi = tf.cast(rule.optimizer.learning_rate, tf.float32)
        g_train = steps.all_reduce_sum(self._grads(train_batch, weights, weights, want_alpha=False))
        unrolled = self._virtual_step(weights, g_train, xi)
        (outputs, losses), d_alpha, v = self._val_grads(val_batch, unrolled)
        hv = self.hessian_vector_product(train_batch, weights, v)
        replicas = tf.cast(tf.distribute.get_replica_context().num_replicas_in_sync, tf.float32)
        grads = [(da - xi * h) / replicas for da, h in zip(d_alpha, hv)]
        return (outputs, losses), grads

    def _virtual_step(self, weights: List[tf.Tensor], grads: List[tf.Tensor],
                      xi: tf.Tensor) -> List[tf.Tensor]:
        """``w' = w + mu * m - xi * (g + wd * w)``: the optimizer's next SGD step.

        Keras' SGD keeps ``m = mu * m - lr * g`` and adds it to ``w``, so
        ``mu * m`` is the reference's ``-xi * mu * momentum_buffer`` term.
        """
        rule = self.weight_rule
        opt = rule.optimizer
        out = []
        for var, w, g in zip(rule.variables, weights, grads):
            step = w - xi * (g + rule.weight_decay * w)
            if getattr(opt, "momentum", 0.0):
                step += opt.momentum * opt.momentums[opt._get_variable_index(var)].value
            out.append(step)
        return out

    def _forward(self, batch: steps.Batch, weights: Sequence[tf.Tensor]):
        """Training-mode loss with the weight variables replaced by `weights`."""
        model = self.model
        mapping = dict(zip((id(v) for v in model.weight_variables), weights))
        values = [mapping.get(id(v), v.value) for v in model.trainable_variables]
        x, y = batch
        outputs, _ = model.stateless_call(values, [v.value for v in model.non_trainable_variables],
                                          x, training=True)
        losses = steps.per_example_loss(model.task, outputs, y)
        return tf.nn.compute_average_loss(losses), outputs, losses

    def _grads(self, batch: steps.Batch, weights, sources, want_alpha: bool) -> List[tf.Tensor]:
        alphas = [v.value for v in self.model.arch_variables]
        targets = alphas if want_alpha else list(sources)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(targets)
            loss, _, _ = self._forward(batch, weights)
        return tape.gradient(loss, targets)

    def _val_grads(self, batch: steps.Batch, unrolled: List[tf.Tensor]):
        alphas = [v.value for v in self.model.arch_variables]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(alphas + unrolled)
            loss, outputs, losses = self._forward(batch, unrolled)
        grads = steps.all_reduce_sum(tape.gradient(loss, alphas + unrolled))
        return (outputs, losses), grads[:len(alphas)], grads[len(alphas):]

    def hessian_vector_product(self, batch: steps.Batch, weights: List[tf.Tensor],
                               v: List[tf.Tensor]) -> List[tf.Tensor]:
        """Central-difference ``grad^2_{alpha, w} L_train(w, alpha) v``.

        Args:
            batch: Training batch of this replica.
            weights: Current weight values ``w``.
            v: Direction, one tensor per weight (global, already summed).

        Returns:
            One tensor per alpha variable, summed across replicas.
        """
        r = FD_SCALE / tf.linalg.global_norm(v)
        plus = [w + r * d for w, d in zip(weights, v)]
        minus = [w - r * d for w, d in zip(weights, v)]
        g_plus = self._grads(batch, plus, plus, want_alpha=True)
        g_minus = self._grads(batch, minus, minus, want_alpha=True)
        diff = [(p - m) / (2.0 * r) for p, m in zip(g_plus, g_minus)]
        return steps.all_reduce_sum(diff)
