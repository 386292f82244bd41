"""The DARTS supernet: mixed ops, search cells and the network owning the alphas."""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from tfdarts import ops
from tfdarts.genotype import NONE, PRIMITIVES, Genotype, num_edges, parse_alphas
from tfdarts.task import Task


class MixedOp(ops.Composite):
    """A mixed edge: ``sum_o w_o * o(x)`` over the candidate ops.

    ``none`` contributes zeros, so it is left out of the sum (the softmax still
    runs over all ops). Pools are followed by a non-affine BN, as in DARTS.

    Args:
        channels: Channels of input and output.
        strides: 1, or 2 on reduction-cell edges from the cell inputs.
        primitives: Candidate op names (one weight per name).
        name: Layer name.
    """

    def __init__(self, channels: int, strides: int, primitives: Sequence[str], name: str,
                 **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.primitives = tuple(primitives)
        self.active = [k for k, p in enumerate(self.primitives) if p != NONE]
        self.candidates = [self._candidate(p, channels, strides) for p in self.primitives if p != NONE]
        self.strides = strides

    def _candidate(self, primitive: str, channels: int, strides: int) -> keras.layers.Layer:
        op = ops.make_op(primitive, channels, strides, False, f"{self.name}_{primitive}")
        if "pool" in primitive:
            return ops.Sequence([op, ops.BatchNorm(False, False, name=f"{self.name}_{primitive}_bn")],
                                name=f"{self.name}_{primitive}_seq")
        return op

    def call(self, x: tf.Tensor, weights: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Mixes the candidates.

        Args:
            x: ``(B, H, W, C)``.
            weights: ``(len(primitives),)`` softmaxed alphas of this edge.
            training: Passed to BN.

        Returns:
            ``(B, H/s, W/s, C)``.
        """
        if not self.candidates:
            return tf.zeros_like(x[:, ::self.strides, ::self.strides, :])
        outs = [weights[k] * op(x, training=training) for k, op in zip(self.active, self.candidates)]
        return tf.add_n(outs)


class SearchCell(ops.Composite):
    """A search cell: every intermediate node sums mixed edges from all earlier nodes.

    Args:
        channels: Channels C of each node; the cell outputs ``nodes * C``.
        reduction: Edges from the two inputs have stride 2.
        reduction_prev: The previous cell halved the size, so input 0 (from two
            cells back) is factorized-reduced to match input 1.
        nodes: Intermediate nodes.
        primitives: Candidate op names.
        name: Layer name.
    """

    def __init__(self, channels: int, reduction: bool, reduction_prev: bool, nodes: int,
                 primitives: Sequence[str], name: str, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.reduction, self.nodes = reduction, nodes
        if reduction_prev:
            self.pre0 = ops.FactorizedReduce(channels, False, name=f"{name}_pre0", track_stats=False)
        else:
            self.pre0 = ops.relu_conv_bn(channels, 1, 1, 0, False, f"{name}_pre0", False)
        self.pre1 = ops.relu_conv_bn(channels, 1, 1, 0, False, f"{name}_pre1", False)
        self.edges = [
            MixedOp(channels, 2 if reduction and j < 2 else 1, primitives, f"{name}_n{i}_e{j}")
            for i in range(nodes) for j in range(i + 2)
        ]

    def call(self, s0: tf.Tensor, s1: tf.Tensor, weights: tf.Tensor,
             training: bool = False) -> tf.Tensor:
        """Computes the cell.

        Args:
            s0: Output of the cell two back, ``(B, H0, W0, C0)``.
            s1: Output of the previous cell, ``(B, H, W, C1)``.
            weights: ``(edges, len(primitives))`` softmaxed alphas.
            training: Passed to BN.

        Returns:
            ``(B, H/s, W/s, nodes * C)``.
        """
        states = [self.pre0(s0, training=training), self.pre1(s1, training=training)]
        edge = 0
        for _ in range(self.nodes):
            terms = [self.edges[edge + j](h, weights[edge + j], training=training)
                     for j, h in enumerate(states)]
            edge += len(states)
            states.append(tf.add_n(terms))
        return tf.concat(states[2:], axis=-1)


def reduction_layers(cells: int) -> Tuple[int, ...]:
    """Indices of the reduction cells: at 1/3 and 2/3 of the depth."""
    return tuple(sorted({cells // 3, 2 * cells // 3})) if cells >= 3 else ()


class SearchNetwork(keras.Model):
    """The DARTS supernet; the single owner of the architecture parameters.

    Args:
        task: Input shape and outputs (classification logits or regression values).
        cells: Number of cells.
        channels: Initial channels C.
        nodes: Intermediate nodes per cell.
        stem_multiplier: The stem outputs ``stem_multiplier * C`` channels.
        primitives: Candidate op names, one alpha column each (default: all 8).
        seed: Seed of the alpha initialisation (1e-3 * N(0, 1)).
        name: Model name.
    """

    def __init__(self, task: Task, cells: int = 8, channels: int = 16, nodes: int = 4,
                 stem_multiplier: int = 3, primitives: Sequence[str] = (), seed: int = 2,
                 name: str = "supernet", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.task, self.nodes = task, nodes
        self.primitives = tuple(primitives) or PRIMITIVES
        ops.OPS.check(self.primitives)
        self.stem_conv = ops.Conv(stem_multiplier * channels, 3, 1, 1, name="stem_conv")
        self.stem_bn = ops.BatchNorm(True, False, name="stem_bn")
        self.cells = self._make_cells(cells, channels)
        self.head = keras.layers.Dense(task.num_outputs, name="head")
        shape = (num_edges(nodes), len(self.primitives))
        self.alpha_normal = self.add_weight(
            shape=shape, name="alpha_normal",
            initializer=keras.initializers.RandomNormal(stddev=1e-3, seed=seed))
        self.alpha_reduce = self.add_weight(
            shape=shape, name="alpha_reduce",
            initializer=keras.initializers.RandomNormal(stddev=1e-3, seed=seed + 1))

    def _make_cells(self, cells: int, channels: int) -> List[SearchCell]:
        reductions = reduction_layers(cells)
        out, reduction_prev = [], False
        for i in range(cells):
            reduction = i in reductions
            channels *= 2 if reduction else 1
            out.append(SearchCell(channels, reduction, reduction_prev, self.nodes,
                                  self.primitives, name=f"cell{i}"))
            reduction_prev = reduction
        return out

    def build(self, input_shape) -> None:
        """Sub-layers build on first call (see `ops.Composite`)."""

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """``(B, H, W, C) -> (B, num_outputs)`` logits or regression values."""
        w_normal = tf.nn.softmax(self.alpha_normal.value, axis=-1)
        w_reduce = tf.nn.softmax(self.alpha_reduce.value, axis=-1)
        s0 = s1 = self.stem_bn(self.stem_conv(x), training=training)
        for cell in self.cells:
            weights = w_reduce if cell.reduction else w_normal
            s0, s1 = s1, cell(s0, s1, weights, training=training)
        return self.head(tf.reduce_mean(s1, axis=[1, 2]))

    def build_from_task(self) -> None:
        """Creates every variable by calling the network on one zero batch."""
        self(tf.zeros((1,) + self.task.input_shape), training=True)

    @property
    def arch_variables(self) -> List[keras.Variable]:
        """The architecture parameters ``[alpha_normal, alpha_reduce]``."""
        return [self.alpha_normal, self.alpha_reduce]

    @property
    def weight_variables(self) -> List[keras.Variable]:
        """All trainable variables except the alphas."""
        arch = {id(v) for v in self.arch_variables}
        return [v for v in self.trainable_variables if id(v) not in arch]

    def export_probs(self) -> Dict[str, object]:
        """Softmaxed alphas as plain numpy: ``{"normal": (E, K), "reduce": (E, K), "primitives"}``."""
        return {
            "normal": _softmax(np.asarray(self.alpha_normal.numpy(), np.float64)),
            "reduce": _softmax(np.asarray(self.alpha_reduce.numpy(), np.float64)),
            "primitives": list(self.primitives),
        }

    def genotype(self) -> Genotype:
        """The discrete architecture the current alphas select."""
        probs = self.export_probs()
        return parse_alphas(probs["normal"], probs["reduce"], self.primitives, self.nodes)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
