"""Hypergradients of the validation loss w.r.t. the architecture parameters.

First order (xi = 0): ``grad_alpha L_val(w, alpha)``.
Second order (unrolled): with ``w' = w - xi * (momentum term + grad_w L_train + wd * w)``,
``grad_alpha L_val(w', alpha) - xi * H v`` where ``v = grad_w' L_val(w', alpha)`` and
``H v = grad^2_{alpha, w} L_train(w, alpha) v`` is approximated by central differences
``(grad_alpha L_train(w + r v) - grad_alpha L_train(w - r v)) / (2 r)``, ``r = 0.01 / ||v||``.

Under a strategy every loss is averaged over the global batch, so each term is a
sum of per-replica shares. ``w'`` and ``v`` must be global before they are used
(one flat collective each); the final ``d_alpha - xi * H v`` is linear in the
shares, so each replica returns its own and `steps.apply_update` sums them.

Beta-Decay regularisation (Ye et al., beta-DARTS, CVPR 2022), in either order:
the alpha loss adds ``lambda_t * mean over edges of logsumexp(alpha_edge)`` (the
edges of both cell types), whose gradient is ``lambda_t * softmax(alpha) / edges``;
``lambda_t`` is set each epoch by the search schedule.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

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
            optimizer's learning rate (xi), momentum buffers and weight decay.
    """

    def __init__(self, model: keras.Model, order: int, weight_rule: steps.UpdateRule,
                 regularise: bool = False) -> None:
        if order not in (1, 2):
            raise ValueError(f"architect order must be 1 or 2, got {order}")
        if order == 2 and getattr(weight_rule.optimizer, "nesterov", False):
            raise ValueError("search.order=2 unrolls plain SGD momentum; use a weight optimizer "
                             "without Nesterov momentum")
        self.model, self.order, self.weight_rule = model, order, weight_rule
        self.beta_decay = (tf.Variable(0.0, trainable=False, name="beta_decay",
                                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                           if regularise else None)

    def set_regularisation(self, value: float) -> None:
        """Sets ``lambda_t`` of the Beta-Decay term (needs ``regularise=True``)."""
        self.beta_decay.assign(value)

    def gradient_fn(self, train_batch: steps.Batch) -> steps.GradientFn:
        """A `GradientFn` for the alpha step on a validation batch."""
        if self.order == 1:
            fn = steps.plain_gradients(self.model, self.model.arch_variables)
        else:
            fn = lambda val_batch: self.unrolled_gradients(val_batch, train_batch)  # noqa: E731
        if self.beta_decay is None:
            return fn
        return lambda val_batch: self._regularised(*fn(val_batch))

    def _regularised(self, stats, grads: List[tf.Tensor]):
        """Adds the Beta-Decay gradient to the alpha gradients, on the first replica only.

        Added once (not shared), the cross-replica sum of `apply_update`
        contains it exactly once for any replica count.
        """
        first = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group == 0, tf.float32)
        extra = self.regulariser_gradients()
        return stats, [g + first * e for g, e in zip(grads, extra)]

    def regulariser(self) -> tf.Tensor:
        """``lambda_t * mean over all edges of logsumexp(alpha_edge)`` (scalar)."""
        alphas = [a.value for a in self.model.alpha_variables]
        edges = sum(int(a.shape[0]) for a in alphas)
        total = tf.add_n([tf.reduce_sum(tf.reduce_logsumexp(a, axis=-1)) for a in alphas])
        return tf.convert_to_tensor(self.beta_decay) * total / edges

    def regulariser_gradients(self) -> List[tf.Tensor]:
        """Gradient of `regulariser` w.r.t. each architecture variable (zeros for edge betas)."""
        arch = [v.value for v in self.model.arch_variables]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(arch)
            value = self.regulariser()
        return tape.gradient(value, arch, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    def unrolled_gradients(self, val_batch: steps.Batch, train_batch: steps.Batch):
        """Second-order alpha gradient, this replica's share.

        Two collectives inside: the training gradient (for ``w'``) and ``v``.

        Args:
            val_batch: ``(x, y)`` validation batch of this replica.
            train_batch: ``(x, y)`` training batch of this replica.

        Returns:
            ``((val_outputs (B, K), val_losses (B,)), alpha_grads)``: one
            unreduced ``d_alpha_r - xi * hv_r`` per alpha variable (its shape);
            their sum over replicas is the hypergradient.
        """
        weights = [v.value for v in self.model.weight_variables]
        xi = tf.cast(self.weight_rule.optimizer.learning_rate, tf.float32)
        g_train = steps.all_reduce_sum(self._weight_grads(train_batch, weights))
        unrolled = self._virtual_step(weights, g_train, xi)
        (outputs, losses), d_alpha, v = self._val_grads(val_batch, unrolled)
        hv = self.hessian_vector_product(train_batch, weights, v)
        return (outputs, losses), [da - xi * h for da, h in zip(d_alpha, hv)]

    def _virtual_step(self, weights: List[tf.Tensor], grads: List[tf.Tensor],
                      xi: tf.Tensor) -> List[tf.Tensor]:
        """``w' = w + mu * m - xi * (g + wd * w)``: the optimizer's next SGD step.

        Keras' SGD keeps ``m = mu * m - lr * g`` and adds it to ``w``, so
        ``mu * m`` is the reference's ``-xi * mu * momentum_buffer`` term.

        Args:
            weights: Current weights ``w``, shapes of the weight variables.
            grads: Global training gradient, same shapes.
            xi: Scalar learning rate.

        Returns:
            ``w'``, same shapes.
        """
        rule = self.weight_rule
        mu = getattr(rule.optimizer, "momentum", 0.0)
        out = []
        for var, w, g in zip(rule.variables, weights, grads):
            step = w - xi * (g + rule.weight_decay * w)
            if mu:
                step += mu * steps.sgd_momentum(rule.optimizer, var)
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

    def _weight_grads(self, batch: steps.Batch, weights: Sequence[tf.Tensor]) -> List[tf.Tensor]:
        """This replica's ``grad_w L_train(w)`` at ``w = weights`` (weight shapes)."""
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(list(weights))
            loss, _, _ = self._forward(batch, weights)
        return tape.gradient(loss, list(weights))

    def _alpha_grads(self, batch: steps.Batch, weights: Sequence[tf.Tensor]) -> List[tf.Tensor]:
        """This replica's ``grad_alpha L_train(w)`` at ``w = weights`` (alpha shapes)."""
        alphas = [v.value for v in self.model.arch_variables]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(alphas)
            loss, _, _ = self._forward(batch, weights)
        return tape.gradient(loss, alphas)

    def _val_grads(self, batch: steps.Batch, unrolled: List[tf.Tensor]
                   ) -> Tuple[Tuple[tf.Tensor, tf.Tensor], List[tf.Tensor], List[tf.Tensor]]:
        """Validation gradients at ``w'``.

        Returns:
            ``((outputs, losses), d_alpha, v)``: ``d_alpha`` this replica's
            share (alpha shapes), ``v`` global (weight shapes).
        """
        alphas = [v.value for v in self.model.arch_variables]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(alphas + unrolled)
            loss, outputs, losses = self._forward(batch, unrolled)
        grads = tape.gradient(loss, alphas + unrolled)
        return (outputs, losses), grads[:len(alphas)], steps.all_reduce_sum(grads[len(alphas):])

    def hessian_vector_product(self, batch: steps.Batch, weights: List[tf.Tensor],
                               v: List[tf.Tensor]) -> List[tf.Tensor]:
        """Central-difference ``grad^2_{alpha, w} L_train(w, alpha) v``, this replica's share.

        Args:
            batch: Training batch of this replica.
            weights: Current weight values ``w``.
            v: Direction, one tensor per weight; global (the same on every
                replica), so ``r`` is too.

        Returns:
            One unreduced tensor per alpha variable (its shape); their sum
            over replicas is the product on the global batch.
        """
        r = FD_SCALE / tf.linalg.global_norm(v)
        g_plus = self._alpha_grads(batch, [w + r * d for w, d in zip(weights, v)])
        # the two passes are independent: run them in turn so their activations never coexist
        with tf.control_dependencies(g_plus):
            minus = [w - r * d for w, d in zip(weights, v)]
        g_minus = self._alpha_grads(batch, minus)
        return [(p - m) / (2.0 * r) for p, m in zip(g_plus, g_minus)]
