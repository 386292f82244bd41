"""Comparison models trained in the same code path as the DARTS network.

* Random architectures from the DARTS search space (`random_genotype`,
  `random_genotypes`), retrained with `tfdarts.network.Network`.
* A small-input (CIFAR-style) ResNet: `resnet18` and a 10-layer `tiny_resnet`
  with 8x fewer filters. Like `Network`, a `ResNet` exposes ``task`` and
  ``auxiliary_weight`` (0: no auxiliary head) and a no-op ``set_drop_path``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from tfdarts import ops
from tfdarts.genotype import NONE, PRIMITIVES, Gene, Genotype
from tfdarts.network import PACKAGE
from tfdarts.task import Task


# --- random architectures ----------------------------------------------------------------


def _random_cell(rng: np.random.Generator, choices: Sequence[str], nodes: int) -> Gene:
    """Two distinct inputs per node (ascending), each with a uniform op."""
    gene = []
    for node in range(nodes):
        inputs = np.sort(rng.choice(node + 2, size=2, replace=False))
        for src in inputs:
            gene.append((choices[int(rng.integers(len(choices)))], int(src)))
    return tuple(gene)


def _op_choices(primitives: Sequence[str]) -> Tuple[str, ...]:
    choices = tuple(p for p in primitives if p != NONE)
    if not choices:
        raise ValueError("primitives must contain at least one op other than 'none'")
    unknown = [p for p in choices if p not in PRIMITIVES]
    if unknown:
        raise ValueError(f"unknown primitives {unknown}; known: {', '.join(PRIMITIVES)}")
    return choices


def random_genotype(rng: np.random.Generator, primitives: Sequence[str] = PRIMITIVES,
                    nodes: int = 4) -> Genotype:
    """A uniformly random genotype of the search space.

    For each intermediate node of the normal and the reduction cell: 2 distinct
    inputs among its ``node + 2`` predecessors (listed in ascending order), and
    on each a uniformly random op other than ``none``. All nodes are concatenated.

    Args:
        rng: Random generator (consumed).
        primitives: Candidate op names; ``none`` is never chosen.
        nodes: Intermediate nodes per cell.

    Returns:
        A validated `Genotype`.
    """
    if nodes < 1:
        raise ValueError(f"nodes must be >= 1, got {nodes}")
    choices = _op_choices(primitives)
    concat = tuple(range(2, nodes + 2))
    normal = _random_cell(rng, choices, nodes)
    reduce = _random_cell(rng, choices, nodes)
    return Genotype(normal, concat, reduce, concat)


def random_genotypes(n: int, seed: int, primitives: Sequence[str] = PRIMITIVES,
                     nodes: int = 4, max_tries: int = 1000) -> List[Genotype]:
    """`n` distinct random genotypes, deterministic given `seed`.

    Raises:
        ValueError: The space has fewer than `n` distinct genotypes reachable
            within ``max_tries * n`` draws.
    """
    rng = np.random.default_rng(seed)
    out: List[Genotype] = []
    seen = set()
    for _ in range(max_tries * max(n, 1)):
        if len(out) == n:
            break
        genotype = random_genotype(rng, primitives, nodes)
        if genotype not in seen:
            seen.add(genotype)
            out.append(genotype)
    if len(out) < n:
        raise ValueError(f"found only {len(out)} distinct genotypes of {n} requested")
    return out


# --- ResNet -----------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=PACKAGE)
class BasicBlock(keras.layers.Layer):
    """ResNet basic block: ``relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x))``.

    The shortcut is a 1x1 conv (with the block's stride) + BN when the stride
    is not 1 or the channels change, the identity otherwise.

    Args:
        filters: Output channels.
        strides: Stride of the first conv and the shortcut.
        name: Layer name.
    """

    def __init__(self, filters: int, strides: int = 1, name: str = "block", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.filters, self.strides = filters, strides
        self.conv1 = ops.Conv(filters, 3, strides, 1, name=f"{name}_conv1")
        self.bn1 = ops.BatchNorm(True, True, name=f"{name}_bn1")
        self.conv2 = ops.Conv(filters, 3, 1, 1, name=f"{name}_conv2")
        self.bn2 = ops.BatchNorm(True, True, name=f"{name}_bn2")
        self.project = False

    def build(self, input_shape) -> None:
        self.project = self.strides != 1 or int(input_shape[-1]) != self.filters
        if self.project:
            self.shortcut_conv = ops.Conv(self.filters, 1, self.strides, 0,
                                          name=f"{self.name}_shortcut_conv")
            self.shortcut_bn = ops.BatchNorm(True, True, name=f"{self.name}_shortcut_bn")
        self.built = True

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """``(B, H, W, C) -> (B, ceil(H/s), ceil(W/s), filters)``."""
        y = tf.nn.relu(self.bn1(self.conv1(x), training=training))
        y = self.bn2(self.conv2(y), training=training)
        shortcut = self.shortcut_bn(self.shortcut_conv(x), training=training) if self.project else x
        return tf.nn.relu(y + shortcut)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "filters": self.filters, "strides": self.strides}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResNet(keras.Model):
    """Small-input ResNet: 3x3 stem (stride 1, no max pool), basic-block stages, GAP, dense.

    Stage ``i > 0`` starts with a stride-2 block. Works for any input size and
    channel count (sizes shrink as ``ceil(H / 2)`` per downsampling stage).

    Args:
        task: Input shape and outputs.
        blocks_per_stage: Basic blocks in each stage.
        widths: Channels of each stage (the stem has ``widths[0]``).
        name: Model name.

    Attributes:
        task: The task.
        auxiliary_weight: Always 0.0 (no auxiliary head).
    """

    def __init__(self, task: Task, blocks_per_stage: Sequence[int] = (2, 2, 2, 2),
                 widths: Sequence[int] = (64, 128, 256, 512), name: str = "resnet18",
                 **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        if len(blocks_per_stage) != len(widths) or not widths:
            raise ValueError(f"blocks_per_stage {tuple(blocks_per_stage)} and widths "
                             f"{tuple(widths)} must be non-empty and of equal length")
        self.task = task
        self.blocks_per_stage = tuple(int(b) for b in blocks_per_stage)
        self.widths = tuple(int(w) for w in widths)
        self.auxiliary_weight = 0.0
        self.stem_conv = ops.Conv(self.widths[0], 3, 1, 1, name="stem_conv")
        self.stem_bn = ops.BatchNorm(True, True, name="stem_bn")
        self.blocks = [
            BasicBlock(width, 2 if stage > 0 and b == 0 else 1, name=f"stage{stage}_block{b}")
            for stage, (count, width) in enumerate(zip(self.blocks_per_stage, self.widths))
            for b in range(count)
        ]
        self.head = keras.layers.Dense(task.num_outputs, name="head")

    def build(self, input_shape) -> None:
        """No-op: sub-layers build on first call (avoids a symbolic pre-trace)."""
        self.built = True

    def set_drop_path(self, epoch: int, epochs: int) -> float:
        """No drop-path in a ResNet; present so trainers treat all models alike."""
        return 0.0

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """``(B, H, W, C_in) -> (B, num_outputs)`` logits or regression values."""
        x = tf.nn.relu(self.stem_bn(self.stem_conv(x), training=training))
        for block in self.blocks:
            x = block(x, training=training)
        return self.head(tf.reduce_mean(x, axis=[1, 2]))

    def build_from_task(self) -> None:
        """Creates every variable on one zero example (inference mode)."""
        self(tf.zeros((1,) + self.task.input_shape, self.compute_dtype), training=False)

    def get_build_config(self) -> Dict[str, Any]:
        return {"input_shape": list(self.task.input_shape)}

    def build_from_config(self, config: Dict[str, Any]) -> None:
        self.build_from_task()

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name, "trainable": self.trainable, "task": self.task.to_dict(),
                "blocks_per_stage": list(self.blocks_per_stage), "widths": list(self.widths)}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "ResNet":
        config = dict(config)
        task = Task.from_dict(config.pop("task"))
        return cls(task, **config)


def resnet18(task: Task) -> ResNet:
    """ResNet-18 for small inputs: blocks (2, 2, 2, 2), widths (64, 128, 256, 512)."""
    return ResNet(task, (2, 2, 2, 2), (64, 128, 256, 512), name="resnet18")


def tiny_resnet(task: Task) -> ResNet:
    """10 weight layers (stem + 8 convs + dense), 8x fewer filters than ResNet-18."""
    return ResNet(task, (1, 1, 1, 1), (8, 16, 32, 64), name="tiny_resnet")


MODEL_BUILDERS: Mapping[str, Callable[[Task], ResNet]] = {
    "resnet18": resnet18,
    "tiny_resnet": tiny_resnet,
}
