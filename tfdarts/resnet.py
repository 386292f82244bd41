"""Small-input (CIFAR-style) ResNets: `resnet18` and a 10-layer `tiny_resnet`.

Baselines trained in the same code path as the DARTS network (both are
`tfdarts.model.TaskModel`).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Sequence

import keras
import tensorflow as tf

from tfdarts import ops
from tfdarts.model import PACKAGE, TaskModel
from tfdarts.task import Task

__all__ = ["BasicBlock", "ResNet", "resnet18", "tiny_resnet", "RESNETS"]


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
class ResNet(TaskModel):
    """Small-input ResNet: 3x3 stem (stride 1, no max pool), basic-block stages, GAP, dense.

    Stage ``i > 0`` starts with a stride-2 block. Works for any input size and
    channel count (sizes shrink as ``ceil(H / 2)`` per downsampling stage).

    Args:
        task: Input shape and outputs.
        blocks_per_stage: Basic blocks in each stage.
        widths: Channels of each stage (the stem has ``widths[0]``).
        name: Model name.

    It has no auxiliary head (``auxiliary_weight`` is 0) and no drop-path.
    """

    def __init__(self, task: Task, blocks_per_stage: Sequence[int] = (2, 2, 2, 2),
                 widths: Sequence[int] = (64, 128, 256, 512), name: str = "resnet18",
                 **kwargs) -> None:
        super().__init__(task, 0.0, name=name, **kwargs)
        if len(blocks_per_stage) != len(widths) or not widths:
            raise ValueError(f"blocks_per_stage {tuple(blocks_per_stage)} and widths "
                             f"{tuple(widths)} must be non-empty and of equal length")
        self.blocks_per_stage = tuple(int(b) for b in blocks_per_stage)
        self.widths = tuple(int(w) for w in widths)
        self.stem_conv = ops.Conv(self.widths[0], 3, 1, 1, name="stem_conv")
        self.stem_bn = ops.BatchNorm(True, True, name="stem_bn")
        self.blocks = [
            BasicBlock(width, 2 if stage > 0 and b == 0 else 1, name=f"stage{stage}_block{b}")
            for stage, (count, width) in enumerate(zip(self.blocks_per_stage, self.widths))
            for b in range(count)
        ]
        self.head = keras.layers.Dense(task.num_outputs, name="head")

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """``(B, H, W, C_in) -> (B, num_outputs)`` logits or regression values."""
        x = tf.nn.relu(self.stem_bn(self.stem_conv(x), training=training))
        for block in self.blocks:
            x = block(x, training=training)
        return self.head(tf.reduce_mean(x, axis=[1, 2]))

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "blocks_per_stage": list(self.blocks_per_stage),
                "widths": list(self.widths)}


def resnet18(task: Task) -> ResNet:
    """ResNet-18 for small inputs: blocks (2, 2, 2, 2), widths (64, 128, 256, 512)."""
    return ResNet(task, (2, 2, 2, 2), (64, 128, 256, 512), name="resnet18")


def tiny_resnet(task: Task) -> ResNet:
    """10 weight layers (stem + 8 convs + dense), 8x fewer filters than ResNet-18."""
    return ResNet(task, (1, 1, 1, 1), (8, 16, 32, 64), name="tiny_resnet")


RESNETS: Dict[str, Callable[[Task], ResNet]] = {"resnet18": resnet18, "tiny_resnet": tiny_resnet}
"""The ResNet factories by name (each a baseline in `tfdarts.baselines`)."""
