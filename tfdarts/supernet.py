"""The DARTS supernet: mixed ops, search cells and the network owning the alphas."""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras.src.backend.common.stateless_scope import in_stateless_scope

from tfdarts import ops, space
from tfdarts.genotype import NONE, PRIMITIVES, Genotype, edge_index, num_edges, parse_alphas
from tfdarts.model import TaskModel
from tfdarts.task import Task


def channel_shuffle(x: tf.Tensor, groups: int) -> tf.Tensor:
    """Interleaves `groups` equal groups of the last axis: ``(..., C) -> (..., C)``.

    Channel ``g * (C / groups) + i`` moves to ``i * groups + g``, as in ShuffleNet
    and PC-DARTS, so the channels that bypassed an edge take part in the next one.
    """
    if groups == 1:
        return x
    shape, channels, rank = tf.shape(x), x.shape[-1], len(x.shape)
    y = tf.reshape(x, tf.concat([shape[:-1], [groups, channels // groups]], axis=0))
    y = tf.transpose(y, list(range(rank - 1)) + [rank, rank - 1])
    return tf.reshape(y, shape)


DENSE_POINTWISE_MAX = 192
"""Widest ``targets * channels`` at which `GroupedPointwise` runs its blocks as one dense
1x1 conv (zeros off the diagonal blocks). Measured on a 2-core AVX-512 CPU: the dense
conv beat one conv per block at 64 and 128 channels, lost from 256 (bench/README.md)."""


class GroupedPointwise(keras.layers.Layer):
    """The 1x1 convs of `targets` edges at once, each ``C -> C`` with its own kernel.

    Input and output channels are ordered ``(t, c)``: edge ``t``'s in block ``t``.

    Args:
        targets: Edges (blocks).
        channels: C, per edge.
        name: Layer name.
    """

    def __init__(self, targets: int, channels: int, name: Optional[str] = None, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.targets, self.channels = targets, channels

    def build(self, input_shape) -> None:
        # He init per block: fan_in C (Keras would count targets * C for this shape)
        init = keras.initializers.VarianceScaling(2.0 * self.targets, "fan_in", "truncated_normal")
        self.kernel = self.add_weight(shape=(self.targets, self.channels, self.channels),
                                      initializer=init, name="kernel")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        """``(B, H, W, T * C) -> (B, H, W, T * C)``."""
        t, c = self.targets, self.channels
        kernel = self.kernel.value
        if t == 1:
            return tf.nn.conv2d(x, tf.reshape(kernel, [1, 1, c, c]), 1, "VALID")
        if t * c <= DENSE_POINTWISE_MAX:
            return tf.nn.conv2d(x, self._dense(kernel), 1, "VALID")
        blocks = tf.split(x, t, axis=-1)
        per_target = tf.unstack(tf.reshape(kernel, [t, 1, 1, c, c]))
        return tf.concat([tf.nn.conv2d(b, k, 1, "VALID") for b, k in zip(blocks, per_target)], axis=-1)

    def _dense(self, kernel: tf.Tensor) -> tf.Tensor:
        """The ``(1, 1, T * C, T * C)`` kernel with the blocks on its diagonal."""
        t, c = self.targets, self.channels
        eye = np.eye(t, dtype=kernel.dtype.as_numpy_dtype)
        dense = tf.reshape(kernel, [t, c, 1, c]) * eye[:, None, :, None]  # rows (t, c), columns (u, d)
        return tf.reshape(dense, [1, 1, t * c, t * c])

    def get_config(self) -> dict:
        return {**super().get_config(), "targets": self.targets, "channels": self.channels}


def mix_edges(outputs: Sequence[tf.Tensor], weights: Sequence[tf.Tensor]) -> tf.Tensor:
    """``sum_i outputs[i] * weights[i]`` for every edge of a group.

    For the outputs that no grouped batch norm weights (shared and per-edge ops).
    Autodiff of the products would reduce ``g * y`` over the axes around the edge
    axis in one pass, which TensorFlow's CPU kernels do about 6x slower than over the
    channel axis first and then the rest; this gradient does the latter, in one
    custom gradient per group (it is itself differentiable, for the alpha Hessian).

    Args:
        outputs: ``(B, H, W, T, C)`` per-edge outputs, or ``(B, H, W, 1, C)`` ones
            shared by the edges.
        weights: ``(T,)`` per output: each edge's factor.

    Returns:
        ``(B, H, W, T, C)``.
    """
    count = len(outputs)

    @tf.custom_gradient
    def mix(*args: tf.Tensor):
        ys, ws = args[:count], [tf.reshape(w, [-1, 1]) for w in args[count:]]
        out = tf.add_n([y * w for y, w in zip(ys, ws)])

        def grad(g: tf.Tensor):
            g_ys, g_ws = [], []
            for y, w in zip(ys, ws):
                g_y = g * w
                if y.shape[-2] == 1 and g.shape[-2] != 1:  # y was broadcast over the edges
                    g_y = tf.reduce_sum(g_y, axis=-2, keepdims=True)
                g_ys.append(g_y)
                g_ws.append(tf.reduce_sum(tf.reduce_sum(g * y, axis=-1), axis=[0, 1, 2]))
            return g_ys + g_ws

        return out, grad

    return mix(*outputs, *weights)


def _reshape(x: tf.Tensor, last: Sequence[int], keep: int = 3) -> tf.Tensor:
    """Keeps the first `keep` axes of `x` and reshapes the rest to `last`.

    Static shapes (a traced step's) give one constant instead of shape arithmetic.
    """
    lead = x.shape[:keep]
    if lead.is_fully_defined():
        return tf.reshape(x, list(lead) + list(last))
    return tf.reshape(x, tf.concat([tf.shape(x)[:keep], last], axis=0))


def _targets_axis(x: tf.Tensor, targets: int) -> tf.Tensor:
    """``(B, H, W, T * C)`` ordered ``(t, c)`` -> ``(B, H, W, T, C)``."""
    return _reshape(x, [targets, x.shape[-1] // targets])


def _merge_targets(x: tf.Tensor) -> tf.Tensor:
    """``(B, H, W, T, C) -> (B, H, W, T * C)``."""
    return _reshape(x, [x.shape[-2] * x.shape[-1]])


class GroupedConv(ops.Composite):
    """``dil_conv`` or ``sep_conv`` of `targets` edges that read the same input.

    Each edge's op is the reference one (ReLU, depthwise, pointwise, BN; twice for
    sep_conv) with its own weights; the edges run as one depthwise conv over the
    input repeated once per edge (channels ordered ``(t, c)``; a channel
    multiplier would keep less but ran slower on CPU, bench/README.md), one
    grouped pointwise conv and one batch norm over all their channels, which
    normalises each channel alone as separate batch norms would.

    Args:
        channels: C of input and of each edge's output.
        kernel_size: Depthwise kernel side.
        strides: Stride of the first depthwise conv.
        dilation: 2 for dil_conv, 1 for sep_conv.
        separable: Two blocks (sep_conv) instead of one (dil_conv).
        targets: Edges.
        name: Layer name.
    """

    def __init__(self, channels: int, kernel_size: int, strides: int, dilation: int,
                 separable: bool, targets: int, name: str, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.targets = targets
        pad = dilation * (kernel_size // 2)
        self.dw_a = ops.DepthwiseConv(kernel_size, strides, pad, dilation, name=f"{name}_a_dw")
        self.pw_a = GroupedPointwise(targets, channels, name=f"{name}_a_pw")
        self.bn_a = ops.BatchNorm(False, False, name=f"{name}_a_bn")
        self.separable = separable
        if separable:
            self.dw_b = ops.DepthwiseConv(kernel_size, 1, pad, 1, name=f"{name}_b_dw")
            self.pw_b = GroupedPointwise(targets, channels, name=f"{name}_b_pw")
            self.bn_b = ops.BatchNorm(False, False, name=f"{name}_b_bn")

    def call(self, tiled_x: tf.Tensor, training: bool = False,
             scale: Optional[tf.Tensor] = None) -> tf.Tensor:
        """``(B, H, W, T * C)`` -> ``(B, H', W', T, C)``.

        Args:
            tiled_x: The group's input after ReLU, repeated once per edge on the
                channel axis (`EdgeGroup` shares it between the convs).
            training: Passed to BN.
            scale: ``(T * C,)`` factors of the output channels (each edge's alpha for
                this op over its channels), folded into the last batch norm; None = 1.
        """
        y = self.bn_a(self.pw_a(self.dw_a(tiled_x)), training=training,
                      scale=None if self.separable else scale)
        if self.separable:
            y = self.bn_b(self.pw_b(self.dw_b(tf.nn.relu(y))), training=training, scale=scale)
        return _targets_axis(y, self.targets)


class GroupedFactorizedReduce(ops.Composite):
    """`ops.FactorizedReduce` of `targets` edges that read the same input.

    Args:
        channels: Output channels of each edge.
        targets: Edges.
        name: Layer name.
    """

    def __init__(self, channels: int, targets: int, name: str, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.targets, self.half = targets, channels // 2
        self.conv_a = ops.Conv(targets * self.half, 1, strides=2, name=f"{name}_conv_a")
        self.conv_b = ops.Conv(targets * (channels - self.half), 1, strides=2, name=f"{name}_conv_b")
        self.bn = ops.BatchNorm(False, False, name=f"{name}_bn")

    def call(self, relu_x: tf.Tensor, training: bool = False,
             scale: Optional[tf.Tensor] = None) -> tf.Tensor:
        """``(B, H, W, C_in)`` (already through ReLU) -> ``(B, ceil(H/2), ceil(W/2), T, C)``.

        Args:
            relu_x: The group's input after ReLU.
            training: Passed to BN.
            scale: ``(T * C,)`` factors of the output channels, folded into the batch
                norm; None = 1.
        """
        y = tf.concat([_targets_axis(self.conv_a(relu_x), self.targets),
                       _targets_axis(self.conv_b(ops.offset_pixels(relu_x)), self.targets)], axis=-1)
        return _targets_axis(self.bn(_merge_targets(y), training=training, scale=scale), self.targets)


class PerEdge(ops.Composite):
    """An op without a grouped form: one layer per edge, outputs stacked on the target axis."""

    def __init__(self, layers: Sequence[keras.layers.Layer], name: str, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.edges = list(layers)

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """``(B, H, W, C) -> (B, H', W', T, C)``."""
        return tf.stack([edge(x, training=training) for edge in self.edges], axis=-2)


class Shared(ops.Composite):
    """A parameter-free op: the same output for every edge, computed once."""

    def __init__(self, layer: keras.layers.Layer, name: str, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.op = layer

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """``(B, H, W, C) -> (B, H', W', 1, C)`` (broadcast over the edges)."""
        return tf.expand_dims(self.op(x, training=training), axis=-2)


_CONVS = {"sep_conv_3x3": (3, 1, True), "sep_conv_5x5": (5, 1, True),
          "dil_conv_3x3": (3, 2, False), "dil_conv_5x5": (5, 2, False)}
"""Built-in ops with a grouped form: (kernel size, dilation, separable)."""


def _with_search_bn(primitive: str, op: keras.layers.Layer, name: str) -> keras.layers.Layer:
    if space.info(primitive).search_bn:
        return ops.Sequence([op, ops.BatchNorm(False, False, name=f"{name}_bn")], name=f"{name}_seq")
    return op


class EdgeGroup(ops.Composite):
    """Every candidate op of the mixed edges from one cell state to `targets` later nodes.

    Edge ``t`` computes ``sum_o w[t, o] * o_t(x)`` over the candidate ops, each edge
    with weights of its own, exactly as DARTS' mixed op; the edges are computed
    together (`GroupedConv`, `GroupedFactorizedReduce`, which take ``w[:, o]`` as
    the scale of their last, non-affine batch norm), parameter-free ops once for
    all of them (`Shared`), other ops one layer per edge (`PerEdge`; both weighted
    by `mix_edges`). ``none``
    contributes zeros and is left out of the sum (the softmax still runs over all
    ops); ops declared with ``search_bn`` (the pools) are followed by a non-affine
    BN, as in DARTS.

    Options (both off by default, which is the paper's mixed op):

    * partial channels (PC-DARTS): only the first ``C / partial_channels``
      channels go through the candidates, the others bypass the edge (2x2 max
      pooled on stride-2 edges), and the result is channel-shuffled;
    * auxiliary skip (DARTS-): ``aux_weight * skip(x)`` is added, with the
      identity on stride-1 edges and a factorized reduce on stride-2 edges. It
      is not a candidate: it never enters the genotype.

    Args:
        channels: Channels of input and output.
        strides: 1, or 2 on reduction-cell edges from the cell inputs.
        targets: Edges in the group (one per later node).
        primitives: Candidate op names (one weight per name).
        name: Layer name.
        partial_channels: K; 1 = every channel goes through the candidates.
        aux_skip: Build the auxiliary skip path.
    """

    def __init__(self, channels: int, strides: int, targets: int, primitives: Sequence[str],
                 name: str, partial_channels: int = 1, aux_skip: bool = False, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        if channels % partial_channels:
            raise ValueError(f"{name}: {channels} channels do not split into "
                             f"partial_channels={partial_channels} groups")
        self.primitives, self.targets = tuple(primitives), targets
        self.strides, self.partial = strides, partial_channels
        self.width = channels // partial_channels
        self.active = [k for k, p in enumerate(self.primitives) if p != NONE]
        self.branches = [self._branch(self.primitives[k]) for k in self.active]
        self.aux = self._aux_skip(channels) if aux_skip else None

    def _branch(self, primitive: str) -> keras.layers.Layer:
        name, width, strides = f"{self.name}_{primitive}", self.width, self.strides
        if primitive in _CONVS:
            kernel, dilation, separable = _CONVS[primitive]
            return GroupedConv(width, kernel, strides, dilation, separable, self.targets, name)
        if primitive == "skip_connect" and strides == 2:
            return GroupedFactorizedReduce(width, self.targets, name)
        if space.info(primitive).parameter_free:
            op = ops.make_op(primitive, width, strides, False, name)
            return Shared(_with_search_bn(primitive, op, name), name=f"{name}_shared")
        return PerEdge([_with_search_bn(primitive, ops.make_op(primitive, width, strides, False,
                                                               f"{name}_t{t}"), f"{name}_t{t}")
                        for t in range(self.targets)], name=name)

    def _aux_skip(self, channels: int) -> keras.layers.Layer:
        if self.strides == 1:
            return Shared(ops.Identity(name=f"{self.name}_aux_skip"), name=f"{self.name}_aux_shared")
        return GroupedFactorizedReduce(channels, self.targets, name=f"{self.name}_aux_skip")

    def _grouped(self, branch: keras.layers.Layer) -> bool:
        """Grouped branches read the input after ReLU and take their weights in their BN."""
        return isinstance(branch, (GroupedConv, GroupedFactorizedReduce))

    def call(self, x: tf.Tensor, weights: tf.Tensor, training: bool = False,
             edge_weights: Optional[tf.Tensor] = None,
             aux_weight: Optional[tf.Tensor] = None) -> tf.Tensor:
        """Mixes the candidates of every edge of the group.

        Args:
            x: ``(B, H, W, C)``, the source state.
            weights: ``(T, len(primitives))`` softmaxed alphas of the group's edges.
            training: Passed to BN.
            edge_weights: ``(T,)`` edge-normalisation weights, or None.
            aux_weight: Scalar weight of the auxiliary skip (with ``aux_skip``).

        Returns:
            ``(B, H/s, W/s, T, C)``: each edge's term of its node's sum (edge
            weight included).
        """
        if edge_weights is not None:
            weights = weights * edge_weights[:, None]
        part = x if self.partial == 1 else x[..., :self.width]
        out = self._mix(part, weights, training)
        if self.partial > 1:
            bypass = self._bypass(x[..., self.width:])[..., None, :]
            if edge_weights is not None:
                bypass = mix_edges([bypass], [edge_weights])
            else:
                bypass = tf.repeat(bypass, self.targets, axis=-2)
            out = channel_shuffle(tf.concat([out, bypass], axis=-1), self.partial)
        if self.aux is not None:
            skip = self.aux(tf.nn.relu(x) if self.strides == 2 else x, training=training)
            if edge_weights is None:
                out += skip * aux_weight
            else:
                out += mix_edges([skip], [aux_weight * edge_weights])
        return out

    def _mix(self, x: tf.Tensor, weights: tf.Tensor, training: bool) -> tf.Tensor:
        """``(B, H, W, c) -> (B, H', W', T, c)``: the weighted sum of the candidates."""
        if not self.branches:
            zeros = tf.zeros_like(ops.subsample(x, self.strides)[:, :, :, None, :])
            return tf.repeat(zeros, self.targets, axis=-2)
        grouped = [(k, b) for k, b in zip(self.active, self.branches) if self._grouped(b)]
        others = [(k, b) for k, b in zip(self.active, self.branches) if not self._grouped(b)]
        terms = []
        if grouped:
            relu = tf.nn.relu(x)
            tiled = tf.tile(relu, [1, 1, 1, self.targets]) if self.targets > 1 else relu
            # every op's (T * c,) batch-norm scale at once: edge t's weight over its c channels
            spread = np.kron(np.eye(self.targets), np.ones((1, self.width)))
            spread = spread.astype(weights.dtype.as_numpy_dtype)
            scales = tf.unstack(tf.matmul(weights, spread, transpose_a=True))
            terms = [branch(tiled if isinstance(branch, GroupedConv) else relu, training=training,
                            scale=scales[k]) for k, branch in grouped]
        if others:
            per_op = tf.unstack(weights, axis=1)  # (T,) each, in one op
            terms.append(mix_edges([branch(x, training=training) for _, branch in others],
                                   [per_op[k] for k, _ in others]))
        return tf.add_n(terms)

    def _bypass(self, x: tf.Tensor) -> tf.Tensor:
        if self.strides == 1:
            return x
        return tf.nn.max_pool2d(x, 2, 2, "SAME")


class SearchCell(ops.Composite):
    """A search cell: every intermediate node sums mixed edges from all earlier nodes.

    The edges leaving each state are computed together (`EdgeGroup`): the two
    cell inputs first (all nodes read them), then each node's output as soon as
    the node is complete.

    Args:
        channels: Channels C of each node; the cell outputs ``nodes * C``.
        reduction: Edges from the two inputs have stride 2.
        reduction_prev: The previous cell halved the size, so input 0 (from two
            cells back) is factorized-reduced to match input 1.
        nodes: Intermediate nodes.
        primitives: Candidate op names.
        name: Layer name.
        partial_channels: See `EdgeGroup`.
        aux_skip: See `EdgeGroup`.
    """

    def __init__(self, channels: int, reduction: bool, reduction_prev: bool, nodes: int,
                 primitives: Sequence[str], name: str, partial_channels: int = 1,
                 aux_skip: bool = False, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.reduction, self.nodes = reduction, nodes
        if reduction_prev:
            self.pre0 = ops.FactorizedReduce(channels, False, name=f"{name}_pre0", track_stats=False)
        else:
            self.pre0 = ops.relu_conv_bn(channels, 1, 1, 0, False, f"{name}_pre0", False)
        self.pre1 = ops.relu_conv_bn(channels, 1, 1, 0, False, f"{name}_pre1", False)
        self.groups = [
            EdgeGroup(channels, 2 if reduction and src < 2 else 1, len(self.targets(src)),
                      primitives, f"{name}_s{src}", partial_channels, aux_skip)
            for src in range(nodes + 1)]

    def targets(self, source: int) -> List[int]:
        """The nodes that read state `source` (0, 1: the inputs; 2 + i: node i)."""
        return list(range(max(source - 1, 0), self.nodes))

    def call(self, s0: tf.Tensor, s1: tf.Tensor, weights: tf.Tensor, training: bool = False,
             edge_weights: Optional[tf.Tensor] = None,
             aux_weight: Optional[tf.Tensor] = None) -> tf.Tensor:
        """Computes the cell.

        Args:
            s0: Output of the cell two back, ``(B, H0, W0, C0)``.
            s1: Output of the previous cell, ``(B, H, W, C1)``.
            weights: ``(edges, len(primitives))`` softmaxed alphas.
            training: Passed to BN.
            edge_weights: ``(edges,)`` edge-normalisation weights (softmaxed per
                node), or None for the plain sum.
            aux_weight: Scalar weight of the auxiliary skips, if built.

        Returns:
            ``(B, H/s, W/s, nodes * C)``.
        """
        states = [self.pre0(s0, training=training), self.pre1(s1, training=training)]
        terms: List[List[tf.Tensor]] = [[] for _ in range(self.nodes)]
        for src, group in enumerate(self.groups):
            nodes = self.targets(src)
            edges = [edge_index(node, src) for node in nodes]
            out = group(states[src], tf.gather(weights, edges), training=training,
                        edge_weights=None if edge_weights is None else tf.gather(edge_weights, edges),
                        aux_weight=aux_weight)
            for node, term in zip(nodes, tf.unstack(out, axis=-2)):
                terms[node].append(term)
            if src >= 1:  # node src - 1 has all its inputs now
                states.append(tf.add_n(terms[src - 1]))
        return tf.concat(states[2:], axis=-1)


def edge_softmax(beta: tf.Tensor, nodes: int) -> tf.Tensor:
    """Softmax of edge-normalisation logits over each node's incoming edges.

    Args:
        beta: ``(edges,)`` logits, edges ordered as in `SearchCell`.
        nodes: Intermediate nodes.

    Returns:
        ``(edges,)`` weights; those of node ``i`` (``i + 2`` edges) sum to 1.
    """
    sizes = [i + 2 for i in range(nodes)]
    return tf.concat([tf.nn.softmax(part) for part in tf.split(beta, sizes)], axis=0)


class SearchNetwork(TaskModel):
    """The DARTS supernet; the single owner of the architecture parameters.

    Architecture parameters: ``alpha_normal`` and ``alpha_reduce``, ``(edges, K)``
    logits over the candidate ops; with partial channels also ``beta_normal``
    and ``beta_reduce``, ``(edges,)`` edge-normalisation logits (PC-DARTS),
    which scale each op weight when the genotype is derived.

    Args:
        task: Input shape and outputs (classification logits or regression values).
        cells: Number of cells.
        channels: Initial channels C.
        nodes: Intermediate nodes per cell.
        stem_multiplier: The stem outputs ``stem_multiplier * C`` channels.
        primitives: Candidate op names, one alpha column each (default: all 8).
        seed: Seed of the alpha initialisation (1e-3 * N(0, 1)).
        name: Model name.
        partial_channels: K of PC-DARTS (1 = off: every channel, no edge weights).
        aux_skip: Build the DARTS- auxiliary skip on every edge; its weight is
            the non-trainable `aux_skip_weight`, set by the search schedule.
        max_skips: At most this many ``skip_connect`` edges in the derived normal
            cell (P-DARTS); -1 = no limit.
        recompute_cells: In training mode, keep only each cell's inputs for the
            backward pass and recompute the cell's activations there
            (``tf.recompute_grad``): less memory when activations dominate (large
            batches or images), one more forward pass of work and a larger graph.
            Not applied under `stateless_call` (the second-order architect's
            substituted weights), whose values a recomputation would not see.
    """

    def __init__(self, task: Task, cells: int = 8, channels: int = 16, nodes: int = 4,
                 stem_multiplier: int = 3, primitives: Sequence[str] = (), seed: int = 2,
                 name: str = "supernet", partial_channels: int = 1, aux_skip: bool = False,
                 max_skips: int = -1, recompute_cells: bool = False, **kwargs) -> None:
        super().__init__(task, 0.0, name=name, **kwargs)
        self.nodes, self.partial_channels, self.max_skips = nodes, partial_channels, max_skips
        self.recompute_cells = recompute_cells
        self.primitives = tuple(primitives) or PRIMITIVES
        ops.OPS.check(self.primitives)
        self.stem_conv = ops.Conv(stem_multiplier * channels, 3, 1, 1, name="stem_conv")
        self.stem_bn = ops.BatchNorm(True, False, name="stem_bn")
        self.cells = [SearchCell(p.channels, p.reduction, p.reduction_prev, nodes, self.primitives,
                                 f"cell{p.index}", partial_channels, aux_skip)
                      for p in space.cell_placements(cells, channels)]
        self.head = keras.layers.Dense(task.num_outputs, name="head")
        self.alpha_normal = self._arch_weight((num_edges(nodes), len(self.primitives)), "alpha_normal", seed)
        self.alpha_reduce = self._arch_weight((num_edges(nodes), len(self.primitives)), "alpha_reduce", seed + 1)
        self.beta_normal = self.beta_reduce = None
        if partial_channels > 1:
            self.beta_normal = self._arch_weight((num_edges(nodes),), "beta_normal", seed + 2)
            self.beta_reduce = self._arch_weight((num_edges(nodes),), "beta_reduce", seed + 3)
        self.aux_skip_weight = None
        if aux_skip:
            self.aux_skip_weight = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                                   aggregation="only_first_replica", name="aux_skip_weight")

    def _arch_weight(self, shape, name: str, seed: int) -> keras.Variable:
        return self.add_weight(shape=shape, name=name,
                               initializer=keras.initializers.RandomNormal(stddev=1e-3, seed=seed))

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """``(B, H, W, C) -> (B, num_outputs)`` logits or regression values."""
        weights = {False: tf.nn.softmax(self.alpha_normal.value, axis=-1),
                   True: tf.nn.softmax(self.alpha_reduce.value, axis=-1)}
        edges = {False: None, True: None}
        if self.beta_normal is not None:
            edges = {False: edge_softmax(self.beta_normal.value, self.nodes),
                     True: edge_softmax(self.beta_reduce.value, self.nodes)}
        aux = None if self.aux_skip_weight is None else tf.convert_to_tensor(self.aux_skip_weight)
        s0 = s1 = self.stem_bn(self.stem_conv(x), training=training)
        recompute = self.recompute_cells and training and not in_stateless_scope()
        for cell in self.cells:
            # every differentiated input is an argument: recompute_grad drops closures' gradients
            inputs = [s0, s1, weights[cell.reduction]] + [e for e in [edges[cell.reduction]] if e is not None]

            def run(a, b, w, *e, cell=cell):
                return cell(a, b, w, training=training, edge_weights=e[0] if e else None,
                            aux_weight=aux)

            s0, s1 = s1, (tf.recompute_grad(run) if recompute else run)(*inputs)
        return self.head(tf.reduce_mean(s1, axis=[1, 2]))

    @contextlib.contextmanager
    def plain_cells(self) -> Iterator[None]:
        """Traces the cells without recomputation inside the block (e.g. for nested tapes)."""
        saved, self.recompute_cells = self.recompute_cells, False
        try:
            yield
        finally:
            self.recompute_cells = saved

    def build_from_task(self) -> None:
        """Creates every variable by calling the network on one zero batch.

        Training mode: the supernet's batch norms keep no moving statistics.
        """
        self(tf.zeros((1,) + self.task.input_shape), training=True)
        self.built = True

    @property
    def arch_variables(self) -> List[keras.Variable]:
        """The architecture parameters: alphas, then edge-normalisation betas if any."""
        betas = [] if self.beta_normal is None else [self.beta_normal, self.beta_reduce]
        return [self.alpha_normal, self.alpha_reduce] + betas

    @property
    def alpha_variables(self) -> List[keras.Variable]:
        """The op logits ``[alpha_normal, alpha_reduce]``, ``(edges, K)`` each."""
        return [self.alpha_normal, self.alpha_reduce]

    @property
    def weight_variables(self) -> List[keras.Variable]:
        """All trainable variables except the architecture parameters."""
        arch = {id(v) for v in self.arch_variables}
        return [v for v in self.trainable_variables if id(v) not in arch]

    def set_aux_skip(self, value: float) -> None:
        """Sets the auxiliary-skip weight (no-op when the supernet has none)."""
        if self.aux_skip_weight is not None:
            self.aux_skip_weight.assign(value)

    def export_probs(self) -> Dict[str, object]:
        """Architecture weights as plain numpy.

        Returns:
            ``normal``/``reduce``: ``(E, K)`` softmaxed alphas; ``primitives``;
            with edge normalisation also ``edge_normal``/``edge_reduce``: ``(E,)``.
        """
        out: Dict[str, object] = {
            "normal": _softmax(np.asarray(self.alpha_normal.numpy(), np.float64)),
            "reduce": _softmax(np.asarray(self.alpha_reduce.numpy(), np.float64)),
            "primitives": list(self.primitives),
        }
        if self.beta_normal is not None:
            out["edge_normal"] = edge_softmax(self.beta_normal.value, self.nodes).numpy().astype(np.float64)
            out["edge_reduce"] = edge_softmax(self.beta_reduce.value, self.nodes).numpy().astype(np.float64)
        return out

    def genotype(self) -> Genotype:
        """The discrete architecture the current architecture weights select."""
        probs = self.export_probs()
        return parse_alphas(probs["normal"], probs["reduce"], self.primitives, self.nodes,
                            edge_normal=probs.get("edge_normal"), edge_reduce=probs.get("edge_reduce"),
                            max_skips=self.max_skips)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
