"""The collapse signal: dominant eigenvalue of the alpha Hessian of the validation loss.

Zela et al. (ICLR 2020, "Understanding and Robustifying DARTS") show that the
largest eigenvalue of ``d^2 L_val / d alpha^2`` grows when a search starts to
collapse. It is estimated by power iteration on exact Hessian-vector products
(nested gradient tapes) over a few fixed validation batches; the alphas have a
few hundred entries, so a handful of iterations suffice.
"""

from __future__ import annotations

import contextlib
from typing import Callable, List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfdarts import steps

Vector = List[np.ndarray]
HvpFn = Callable[[Vector], Vector]


def _dot(a: Vector, b: Vector) -> float:
    return float(sum(np.vdot(x, y) for x, y in zip(a, b)))


def power_iteration(hvp: HvpFn, shapes: Sequence[Tuple[int, ...]], iters: int, seed: int = 0) -> float:
    """Dominant eigenvalue (largest in magnitude, with its sign) of a symmetric operator.

    Args:
        hvp: Maps a vector (list of arrays of `shapes`) to the operator applied to it.
        shapes: Shapes of the parts of a vector.
        iters: Iterations (each calls `hvp` once).
        seed: Seed of the random start vector.

    Returns:
        The Rayleigh quotient ``v . Hv`` at the last unit vector ``v``; 0 for the
        zero operator.
    """
    rng = np.random.default_rng(seed)
    v = [rng.normal(size=s) for s in shapes]
    norm = np.sqrt(_dot(v, v))
    v = [x / norm for x in v]
    value = 0.0
    for _ in range(iters):
        hv = [np.asarray(h, np.float64) for h in hvp(v)]
        value = _dot(v, hv)
        norm = np.sqrt(_dot(hv, hv))
        if norm == 0.0:
            return 0.0
        v = [h / norm for h in hv]
    return value


def _replica_hvp(model, x: tf.Tensor, y: tf.Tensor, v: List[tf.Tensor]) -> List[tf.Tensor]:
    """Per-replica ``H v`` of the (global-batch averaged) training-mode loss w.r.t. the alphas."""
    alphas = [a.value for a in model.alpha_variables]
    plain = getattr(model, "plain_cells", contextlib.nullcontext)  # recomputation: first order only
    with plain(), tf.GradientTape(watch_accessed_variables=False) as outer:
        outer.watch(alphas)
        with tf.GradientTape(watch_accessed_variables=False) as inner:
            inner.watch(alphas)
            loss, _, _ = steps.forward_loss(model, x, y)
        grads = inner.gradient(loss, alphas)
        dot = tf.add_n([tf.reduce_sum(g * tf.cast(d, g.dtype)) for g, d in zip(grads, v)])
    return outer.gradient(dot, alphas)


class AlphaHessian:
    """Estimates the dominant alpha-Hessian eigenvalue of a supernet on fixed batches.

    Args:
        model: The supernet (`tfdarts.supernet.SearchNetwork`).
        strategy: Its distribution strategy.
        dataset: Fixed validation batches (`tfdarts.data.probe_dataset`).
        iters: Power iterations.
    """

    def __init__(self, model, strategy: tf.distribute.Strategy, dataset: tf.data.Dataset,
                 iters: int) -> None:
        self.model, self.strategy, self.iters = model, strategy, iters
        self.batches = list(strategy.experimental_distribute_dataset(dataset))
        self._hvp = tf.function(self._distributed_hvp)

    def _distributed_hvp(self, batch, v: List[tf.Tensor]) -> List[tf.Tensor]:
        per_replica = self.strategy.run(lambda x, y: _replica_hvp(self.model, x, y, v), args=batch)
        return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None) for t in per_replica]

    def hvp(self, v: Vector) -> Vector:
        """``H v`` of the loss averaged over the batches; `v` as numpy arrays."""
        tensors = [tf.constant(x, tf.float32) for x in v]
        total = [np.zeros_like(x) for x in v]
        for batch in self.batches:
            total = [t + h.numpy() for t, h in zip(total, self._hvp(batch, tensors))]
        return [t / len(self.batches) for t in total]

    def eigenvalue(self, seed: int = 0) -> float:
        """The dominant eigenvalue at the current weights and alphas."""
        shapes = [tuple(a.shape) for a in self.model.alpha_variables]
        return power_iteration(self.hvp, shapes, self.iters, seed)


def rdarts_stop(trace: Sequence[float], window: int, factor: float, min_epoch: int) -> bool:
    """The R-DARTS early-stop rule on a per-epoch eigenvalue trace.

    Stop at epoch ``i = len(trace)`` (1-based) when ``i >= min_epoch`` and the
    mean of the last `window` eigenvalues exceeds `factor` times the mean of
    the `window` before them.

    Args:
        trace: Eigenvalues of epochs 1..i.
        window: Epochs per mean.
        factor: Rise that triggers the stop (1.3 in Zela et al.).
        min_epoch: First epoch at which a stop is allowed.
    """
    if len(trace) < max(min_epoch, 2 * window):
        return False
    recent = float(np.mean(trace[-window:]))
    before = float(np.mean(trace[-2 * window:-window]))
    return before > 0.0 and recent > factor * before
