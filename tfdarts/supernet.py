"""The DARTS supernet: mixed ops, search cells and the network owning the alphas."""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras.src.backend.common.stateless_scope import in_stateless_scope

from tfdarts import ops, space
from tfdarts.genotype import NONE, PRIMITIVES, Genotype, num_edges, parse_alphas
from tfdarts.model import TaskModel
from tfdarts.task import Task


def channel_shuffle(x: tf.Tensor, groups: int) -> tf.Tensor:
    """Interleaves `groups` equal channel groups: ``(B, H, W, C) -> (B, H, W, C)``.

    Channel ``g * (C / groups) + i`` moves to ``i * groups + g``, as in ShuffleNet
    and PC-DARTS, so the channels that bypassed an edge take part in the next one.
    """
    if groups == 1:
        return x
    shape = tf.shape(x)
    channels = x.shape[-1]
    y = tf.reshape(x, [shape[0], shape[1], shape[2], groups, channels // groups])
    y = tf.transpose(y, [0, 1, 2, 4, 3])
    return tf.reshape(y, [shape[0], shape[1], shape[2], channels])


class MixedOp(ops.Composite):
    """A mixed edge: ``sum_o w_o * o(x)`` over the candidate ops.

    ``none`` contributes zeros, so it is left out of the sum (the softmax still
    runs over all ops). Ops declared with ``search_bn`` (the pools) are followed
    by a non-affine BN, as in DARTS.

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
        primitives: Candidate op names (one weight per name).
        name: Layer name.
        partial_channels: K; 1 = every channel goes through the candidates.
        aux_skip: Build the auxiliary skip path.
    """

    def __init__(self, channels: int, strides: int, primitives: Sequence[str], name: str,
                 partial_channels: int = 1, aux_skip: bool = False, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        if channels % partial_channels:
            raise ValueError(f"{name}: {channels} channels do not split into "
                             f"partial_channels={partial_channels} groups")
        self.primitives = tuple(primitives)
        self.strides, self.partial = strides, partial_channels
        self.active = [k for k, p in enumerate(self.primitives) if p != NONE]
        width = channels // partial_channels
        self.candidates = [self._candidate(p, width, strides) for p in self.primitives if p != NONE]
        self.aux = self._aux_skip(channels, strides) if aux_skip else None

    def _candidate(self, primitive: str, channels: int, strides: int) -> keras.layers.Layer:
        op = ops.make_op(primitive, channels, strides, False, f"{self.name}_{primitive}")
        if space.info(primitive).search_bn:
            return ops.Sequence([op, ops.BatchNorm(False, False, name=f"{self.name}_{primitive}_bn")],
                                name=f"{self.name}_{primitive}_seq")
        return op

    def _aux_skip(self, channels: int, strides: int) -> keras.layers.Layer:
        if strides == 1:
            return ops.Identity(name=f"{self.name}_aux_skip")
        return ops.FactorizedReduce(channels, False, name=f"{self.name}_aux_skip", track_stats=False)

    def call(self, x: tf.Tensor, weights: tf.Tensor, training: bool = False,
             aux_weight: Optional[tf.Tensor] = None) -> tf.Tensor:
        """Mixes the candidates.

        Args:
            x: ``(B, H, W, C)``.
            weights: ``(len(primitives),)`` softmaxed alphas of this edge.
            training: Passed to BN.
            aux_weight: Scalar weight of the auxiliary skip (with ``aux_skip``).

        Returns:
            ``(B, H/s, W/s, C)``.
        """
        if self.partial == 1:
            out = self._mix(x, weights, training)
        else:
            width = x.shape[-1] // self.partial
            mixed = self._mix(x[..., :width], weights, training)
            out = channel_shuffle(tf.concat([mixed, self._bypass(x[..., width:])], axis=-1),
                                  self.partial)
        if self.aux is not None:
            out += aux_weight * self.aux(x, training=training)
        return out

    def _mix(self, x: tf.Tensor, weights: tf.Tensor, training: bool) -> tf.Tensor:
        if not self.candidates:
            return tf.zeros_like(x[:, ::self.strides, ::self.strides, :])
        per_op = tf.unstack(weights)  # one op, where indexing would add a slice per candidate
        outs = [per_op[k] * op(x, training=training) for k, op in zip(self.active, self.candidates)]
        return tf.add_n(outs)

    def _bypass(self, x: tf.Tensor) -> tf.Tensor:
        if self.strides == 1:
            return x
        return tf.nn.max_pool2d(x, 2, 2, "SAME")


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
        partial_channels: See `MixedOp`.
        aux_skip: See `MixedOp`.
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
        self.edges = [
            MixedOp(channels, 2 if reduction and j < 2 else 1, primitives, f"{name}_n{i}_e{j}",
                    partial_channels, aux_skip)
            for i in range(nodes) for j in range(i + 2)
        ]

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
        per_edge = tf.unstack(weights)  # one op for all edges (a slice each otherwise)
        per_edge_weight = None if edge_weights is None else tf.unstack(edge_weights)
        edge = 0
        for _ in range(self.nodes):
            terms = [self.edges[edge + j](h, per_edge[edge + j], training=training, aux_weight=aux_weight)
                     for j, h in enumerate(states)]
            if per_edge_weight is not None:
                terms = [per_edge_weight[edge + j] * t for j, t in enumerate(terms)]
            edge += len(states)
            states.append(tf.add_n(terms))
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
