"""The discrete DARTS network built from a genotype (retraining from scratch).

Follows the reference's retrain network: a 3x3 conv stem with
``stem_multiplier * C`` channels and affine BN, ``cells`` cells with reduction
cells at 1/3 and 2/3 of the depth (`tfdarts.space.cell_placements`), an
optional auxiliary head after the cell at 2/3 depth, global average pooling and
a dense head with ``task.num_outputs`` units. All tensors are NHWC.

Drop-path probability lives in a non-trainable scalar variable
(`Network.drop_prob`) so the trainer can ramp it each epoch without retracing a
``tf.function``.

Saving: `Network.get_config` stores the task and genotype as plain dicts;
`Network.from_config` re-runs the constructor, which re-creates every
sub-layer, and `keras.models.load_model` then restores the weights by
attribute path. `Network.build_from_config` builds the variables (including the
auxiliary head's) on a zero batch before the weights are loaded.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import keras
import tensorflow as tf

from tfdarts import ops, space
from tfdarts.config import RetrainConfig
from tfdarts.genotype import Gene, Genotype
from tfdarts.model import PACKAGE, ModelFn, TaskModel, count_params
from tfdarts.task import Task

__all__ = ["drop_path", "NetworkCell", "AuxiliaryHead", "Network", "build_network", "model_fn",
           "count_params"]
Outputs = Union[tf.Tensor, Tuple[tf.Tensor, tf.Tensor]]


def drop_path(x: tf.Tensor, drop_prob: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Zeros whole examples with probability `drop_prob`, rescaling the others.

    Args:
        x: ``(B, H, W, C)``.
        drop_prob: Scalar probability in ``[0, 1)``.
        seed: ``(2,)`` int64 key of the stateless mask, so a given key always
            drops the same examples (a resumed run replays the same masks).

    Returns:
        ``(B, H, W, C)``: ``x * (mask / keep)`` with a per-example Bernoulli(keep)
        mask of shape ``(B, 1, 1, 1)``, ``keep = 1 - drop_prob``. With
        ``drop_prob == 0`` the mask is all ones and `x` is returned unchanged.
    """
    keep = 1.0 - tf.cast(drop_prob, x.dtype)
    noise = tf.random.stateless_uniform([tf.shape(x)[0], 1, 1, 1], seed, dtype=x.dtype)
    mask = tf.floor(keep + noise)
    return x * (mask / keep)


def _replica_id() -> tf.Tensor:
    context = tf.distribute.get_replica_context()
    replica = context.replica_id_in_sync_group if context is not None else 0
    return tf.cast(replica, tf.int64)


def _gene_to_list(gene: Gene) -> List[List[Any]]:
    return [[str(op), int(src)] for op, src in gene]


@keras.saving.register_keras_serializable(package=PACKAGE)
class NetworkCell(keras.layers.Layer):
    """One discrete cell: each intermediate node sums two ops on earlier nodes.

    Args:
        gene: ``(op, input)`` pairs, two per intermediate node (a genotype's
            ``normal`` or ``reduce``).
        concat: Node indices (>= 2) concatenated into the output.
        channels: Channels C of every node; the output has ``len(concat) * C``.
        reduction: Edges from the two cell inputs have stride 2.
        reduction_prev: The previous cell halved the size, so input 0 is
            factorized-reduced to match input 1.
        name: Layer name.
    """

    def __init__(self, gene: Sequence[Sequence[Any]], concat: Sequence[int], channels: int,
                 reduction: bool, reduction_prev: bool, name: str = "cell", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.gene = tuple((str(op), int(src)) for op, src in gene)
        self.concat = tuple(int(c) for c in concat)
        self.channels, self.reduction, self.reduction_prev = channels, reduction, reduction_prev
        self.nodes = len(self.gene) // 2
        if reduction_prev:
            self.pre0 = ops.FactorizedReduce(channels, True, name=f"{name}_pre0")
        else:
            self.pre0 = ops.relu_conv_bn(channels, 1, 1, 0, True, f"{name}_pre0")
        self.pre1 = ops.relu_conv_bn(channels, 1, 1, 0, True, f"{name}_pre1")
        self.edges = [self._edge(op, src, pos) for pos, (op, src) in enumerate(self.gene)]
        self.identity = [isinstance(edge, ops.Identity) for edge in self.edges]

    def _edge(self, op: str, src: int, pos: int) -> keras.layers.Layer:
        strides = 2 if self.reduction and src < 2 else 1
        return ops.make_op(op, self.channels, strides, True, f"{self.name}_n{pos // 2}_{op}_{src}")

    def build(self, input_shape) -> None:
        """No-op: sub-layers build on their first call.

        Without an own `build`, Keras 3 first runs `call` on symbolic inputs,
        which re-traces every nested level and makes building slow.
        """
        self.built = True

    @property
    def out_channels(self) -> int:
        """Channels of the cell output, ``len(concat) * C``."""
        return len(self.concat) * self.channels

    def call(self, s0: tf.Tensor, s1: tf.Tensor, drop_prob: Optional[tf.Tensor] = None,
             training: bool = False, drop_seed: Optional[tf.Tensor] = None) -> tf.Tensor:
        """Computes the cell.

        Args:
            s0: Output of the cell two back, ``(B, H0, W0, C0)`` (``H0 = H`` or ``2H``).
            s1: Output of the previous cell, ``(B, H, W, C1)``.
            drop_prob: Scalar drop-path probability; used only in training,
                on every op output that is not an identity.
            training: Training mode (BN batch statistics, drop-path).
            drop_seed: ``(2,)`` int64 key of this cell's drop-path masks
                (folded with the edge index); needed when `drop_prob` is given.

        Returns:
            ``(B, H/s, W/s, len(concat) * C)`` with ``s = 2`` in a reduction cell.
        """
        states = [self.pre0(s0, training=training), self.pre1(s1, training=training)]
        for node in range(self.nodes):
            terms = []
            for pos in (2 * node, 2 * node + 1):
                h = self.edges[pos](states[self.gene[pos][1]], training=training)
                if training and drop_prob is not None and not self.identity[pos]:
                    h = drop_path(h, drop_prob, tf.random.experimental.stateless_fold_in(drop_seed, pos))
                terms.append(h)
            states.append(terms[0] + terms[1])
        return tf.concat([states[i] for i in self.concat], axis=-1)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "gene": _gene_to_list(self.gene),
                "concat": list(self.concat), "channels": self.channels,
                "reduction": self.reduction, "reduction_prev": self.reduction_prev}


@keras.saving.register_keras_serializable(package=PACKAGE)
class AuxiliaryHead(keras.layers.Layer):
    """The reference auxiliary head, adapted to any spatial size.

    Reference (8x8 input): ReLU, 5x5 average pool stride 3 (VALID) -> 2x2,
    1x1 conv 128 + BN + ReLU, 2x2 conv 768 (VALID) + BN + ReLU -> 1x1,
    flatten, dense. Adaptation, chosen once in `build` from the static size:

    * pool window ``min(5, H) x min(5, W)``, stride 3, VALID, so maps smaller
      than 5 pixels pool to one row/column instead of failing;
    * the 768-filter conv is ``k x k`` with ``k = min(2, H', W')`` on the
      pooled ``H' x W'`` map (1x1 when a pooled side is 1);
    * the result is global-average-pooled to ``(B, 768)`` instead of flattened,
      so the dense layer has 768 inputs whatever the size.

    On 8x8 maps this is exactly the reference (pool -> 2x2, conv -> 1x1, the
    pooling is then a no-op). Examples: 7x7 (28x28 input) -> pool 5 -> 1x1,
    1x1 conv; 8x20 (30x80 input) -> pool 5 -> 2x6, 2x2 conv -> 1x5, averaged;
    4x4 -> pool 4 -> 1x1, 1x1 conv.

    Args:
        num_outputs: Units of the dense layer.
        name: Layer name.
    """

    def __init__(self, num_outputs: int, name: str = "auxiliary_head", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.num_outputs = num_outputs
        self.conv1 = ops.Conv(128, 1, name=f"{name}_conv1")
        self.bn1 = ops.BatchNorm(True, True, name=f"{name}_bn1")
        self.conv2: Optional[ops.Conv] = None
        self.bn2 = ops.BatchNorm(True, True, name=f"{name}_bn2")
        self.dense = keras.layers.Dense(num_outputs, name=f"{name}_dense")
        self.pool_size: Tuple[int, int] = (5, 5)

    def build(self, input_shape) -> None:
        height, width = int(input_shape[1]), int(input_shape[2])
        self.pool_size = (min(5, height), min(5, width))
        pooled = [(n - p) // 3 + 1 for n, p in zip((height, width), self.pool_size)]
        self.conv2 = ops.Conv(768, min(2, *pooled), name=f"{self.name}_conv2")
        self.built = True

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """``(B, H, W, C) -> (B, num_outputs)``."""
        x = tf.nn.relu(x)
        x = tf.nn.avg_pool2d(x, self.pool_size, 3, "VALID")
        x = tf.nn.relu(self.bn1(self.conv1(x), training=training))
        x = tf.nn.relu(self.bn2(self.conv2(x), training=training))
        return self.dense(tf.reduce_mean(x, axis=[1, 2]))

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "num_outputs": self.num_outputs}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Network(TaskModel):
    """The discrete network of a genotype, for retraining and evaluation.

    Args:
        task: Input shape (any channels) and outputs.
        genotype: The normal and reduction cells.
        cells: Number of cells (reduction cells at ``cells // 3`` and
            ``2 * cells // 3`` when ``cells >= 3``).
        channels: Initial channels C (doubled at each reduction).
        auxiliary_weight: Weight of the auxiliary loss; 0 builds no auxiliary head.
        drop_path: Maximum drop-path probability (reached at the last epoch).
        stem_multiplier: The stem outputs ``stem_multiplier * C`` channels.
        seed: Key of the drop-path masks; with the training-step counter
            `drop_step` it fixes every mask, so a resumed run is exact.
        name: Model name.

    Attributes:
        task: The task.
        genotype: The genotype.
        auxiliary_weight: Float weight of the auxiliary loss.
        drop_path_rate: Float maximum drop-path probability.
        drop_prob: Non-trainable float32 scalar variable, current drop-path
            probability (set by `set_drop_path`).
        drop_step: Non-trainable int64 scalar variable, training forward
            passes so far (checkpointed with the weights; keys drop-path).
        auxiliary_head: `AuxiliaryHead` or None.
        auxiliary_index: Index of the cell the auxiliary head reads.
    """

    def __init__(self, task: Task, genotype: Genotype, cells: int = 20, channels: int = 36,
                 auxiliary_weight: float = 0.4, drop_path: float = 0.2, stem_multiplier: int = 3,
                 seed: int = 0, name: str = "network", **kwargs) -> None:
        super().__init__(task, auxiliary_weight, name=name, **kwargs)
        if cells < 1 or channels < 1:
            raise ValueError(f"cells and channels must be >= 1, got {cells} and {channels}")
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {drop_path}")
        self.genotype = genotype
        self.num_cells, self.channels, self.stem_multiplier = cells, channels, stem_multiplier
        self.drop_path_rate = float(drop_path)
        self.seed = int(seed)
        self.stem_conv = ops.Conv(stem_multiplier * channels, 3, 1, 1, name="stem_conv")
        self.stem_bn = ops.BatchNorm(True, True, name="stem_bn")
        self.cells = [self._make_cell(p) for p in space.cell_placements(cells, channels)]
        self.auxiliary_index = 2 * cells // 3
        self.auxiliary_head = (AuxiliaryHead(task.num_outputs, name="auxiliary_head")
                               if self.auxiliary_weight > 0 else None)
        self.head = keras.layers.Dense(task.num_outputs, name="head")
        self.drop_prob = self.add_weight(shape=(), initializer="zeros", dtype="float32",
                                         trainable=False, aggregation="only_first_replica",
                                         name="drop_prob")
        self.drop_step = self.add_weight(shape=(), initializer="zeros", dtype="int64",
                                         trainable=False, aggregation="only_first_replica",
                                         name="drop_step")

    def _make_cell(self, placement: space.CellPlacement) -> NetworkCell:
        g = self.genotype
        gene, concat = (g.reduce, g.reduce_concat) if placement.reduction else (g.normal, g.normal_concat)
        return NetworkCell(gene, concat, placement.channels, placement.reduction,
                           placement.reduction_prev, name=f"cell{placement.index}")

    def set_drop_path(self, epoch: int, epochs: int) -> float:
        """Sets `drop_prob` to ``drop_path_rate * epoch / epochs`` (the linear ramp).

        Returns:
            The value set.
        """
        value = self.drop_path_rate * epoch / epochs if epochs > 0 else 0.0
        self.drop_prob.assign(value)
        return value

    def on_epoch_begin(self, epoch: int, epochs: int) -> Dict[str, float]:
        """Ramps drop-path; returns ``{"drop_path": value}``."""
        return {"drop_path": float(self.set_drop_path(epoch, epochs))}

    def architecture(self) -> Genotype:
        """The genotype of the cells."""
        return self.genotype

    def auxiliary_variables(self) -> List[keras.Variable]:
        """Trainable variables of the auxiliary head."""
        return list(self.auxiliary_head.trainable_variables) if self.auxiliary_head else []

    def features(self, x: tf.Tensor, training: bool = False) -> Tuple[tf.Tensor, tf.Tensor]:
        """Stem and cells.

        Args:
            x: ``(B, H, W, C_in)``.
            training: Training mode.

        Returns:
            ``(last, auxiliary_input)``: the last cell's output ``(B, H', W', C')``
            and the output of cell `auxiliary_index`.
        """
        # without drop-path (rate 0) the masks would be all ones: leave them out of the graph
        drop_prob = tf.convert_to_tensor(self.drop_prob) if training and self.drop_path_rate > 0 else None
        key = self._next_drop_key() if training else None
        s0 = s1 = self.stem_bn(self.stem_conv(x), training=training)
        aux_in = s1
        for i, cell in enumerate(self.cells):
            cell_key = tf.random.experimental.stateless_fold_in(key, i) if training else None
            s0, s1 = s1, cell(s0, s1, drop_prob=drop_prob, training=training, drop_seed=cell_key)
            if i == self.auxiliary_index:
                aux_in = s1
        return s1, aux_in

    def _next_drop_key(self) -> tf.Tensor:
        """``(2,)`` int64 key of this forward pass: (seed, step, replica); counts the step."""
        step = tf.identity(self.drop_step.value)
        self.drop_step.assign_add(tf.constant(1, tf.int64))
        key = tf.stack([tf.constant(self.seed, tf.int64), step])
        return tf.random.experimental.stateless_fold_in(key, _replica_id())

    def call(self, x: tf.Tensor, training: bool = False) -> Outputs:
        """Runs the network.

        Args:
            x: ``(B, H, W, C_in)`` images.
            training: Training mode (BN batch statistics, drop-path, auxiliary head).

        Returns:
            ``(B, num_outputs)`` logits or regression values; in training with
            an auxiliary head, the pair ``(outputs, auxiliary_outputs)``.
        """
        last, aux_in = self.features(x, training=training)
        out = self.head(tf.reduce_mean(last, axis=[1, 2]))
        if training and self.auxiliary_head is not None:
            return out, self.auxiliary_head(aux_in, training=True)
        return out

    def build_from_task(self) -> None:
        """Creates every variable (auxiliary head included) on one zero example.

        Runs in inference mode, so BN moving statistics are left untouched.
        """
        x = tf.zeros((1,) + self.task.input_shape, self.compute_dtype)
        last, aux_in = self.features(x, training=False)
        self.head(tf.reduce_mean(last, axis=[1, 2]))
        if self.auxiliary_head is not None:
            self.auxiliary_head(aux_in, training=False)
        self.built = True

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "genotype": self.genotype.to_dict(),
                "cells": self.num_cells, "channels": self.channels,
                "auxiliary_weight": self.auxiliary_weight, "drop_path": self.drop_path_rate,
                "stem_multiplier": self.stem_multiplier, "seed": self.seed}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Network":
        config = dict(config)
        task = Task.from_dict(config.pop("task"))
        genotype = Genotype.from_dict(config.pop("genotype"))
        return cls(task, genotype, **config)


def build_network(task: Task, genotype: Genotype, cells: int = 20, channels: int = 36,
                  auxiliary_weight: float = 0.4, drop_path: float = 0.2,
                  name: str = "network") -> Network:
    """Creates a `Network` and builds all its variables on a zero batch."""
    model = Network(task, genotype, cells=cells, channels=channels,
                    auxiliary_weight=auxiliary_weight, drop_path=drop_path, name=name)
    model.build_from_task()
    return model


def model_fn(task: Task, genotype: Genotype, cfg: RetrainConfig) -> ModelFn:
    """A factory of the discrete network of `genotype` with the retrain settings."""
    return lambda: Network(task, genotype, cells=cfg.cells, channels=cfg.channels,
                           auxiliary_weight=cfg.auxiliary_weight, drop_path=cfg.drop_path,
                           seed=cfg.seed)
