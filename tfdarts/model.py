"""The interface every trainable model of tfdarts implements.

`TaskModel` is a `keras.Model` that knows its `tfdarts.task.Task`, may carry an
auxiliary head (``auxiliary_weight > 0``), builds all its variables from the
task alone (`build_from_task`, also used when a saved model is loaded) and
hears about epochs (`on_epoch_begin`, e.g. a drop-path ramp). The trainer,
steps, evaluation and export rely on this interface only.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf

from tfdarts.genotype import Genotype
from tfdarts.task import Task

PACKAGE = "tfdarts"
"""Keras serialization package of every tfdarts layer and model."""


class TaskModel(keras.Model):
    """A model for one task: outputs ``(B, task.num_outputs)``.

    In training mode a model with an auxiliary head returns
    ``(outputs, auxiliary_outputs)``; the loss adds `auxiliary_weight` times the
    auxiliary loss.

    Args:
        task: Input shape and outputs.
        auxiliary_weight: Weight of the auxiliary loss (0 = no auxiliary head).
        name: Model name.
    """

    def __init__(self, task: Task, auxiliary_weight: float = 0.0, name: str = "model",
                 **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.task = task
        self.auxiliary_weight = float(auxiliary_weight)

    def build(self, input_shape) -> None:
        """No-op: sub-layers build on their first call.

        Without an own `build`, Keras 3 first runs `call` on symbolic inputs,
        which re-traces every nested level and makes building slow.
        """
        self.built = True

    def build_from_task(self) -> None:
        """Creates every variable on one zero example, in inference mode."""
        self(tf.zeros((1,) + self.task.input_shape, self.compute_dtype), training=False)
        self.built = True

    def on_epoch_begin(self, epoch: int, epochs: int) -> Dict[str, float]:
        """Called by the trainer before each 0-based epoch of `epochs`.

        Returns:
            Values set for this epoch, recorded in the history (none by default).
        """
        return {}

    def architecture(self) -> Optional[Genotype]:
        """The genotype the model is built from, or None (not a cell network)."""
        return None

    def auxiliary_variables(self) -> List[keras.Variable]:
        """Trainable variables of the auxiliary head (empty without one)."""
        return []

    def get_build_config(self) -> Dict[str, Any]:
        return {"input_shape": list(self.task.input_shape)}

    def build_from_config(self, config: Dict[str, Any]) -> None:
        self.build_from_task()

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name, "trainable": self.trainable, "task": self.task.to_dict()}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "TaskModel":
        config = dict(config)
        task = Task.from_dict(config.pop("task"))
        return cls(task, **config)


ModelFn = Callable[[], TaskModel]
"""Builds a fresh, unbuilt model (called inside the strategy scope)."""


def count_params(model: TaskModel, include_auxiliary: bool = False) -> int:
    """Trainable parameters of a built model.

    Args:
        model: A built model.
        include_auxiliary: Count the auxiliary head too. The reference reports
            parameters without it (the default).

    Returns:
        Number of trainable scalars.
    """
    exclude = set() if include_auxiliary else {id(v) for v in model.auxiliary_variables()}
    return int(sum(np.prod(v.shape) for v in model.trainable_variables if id(v) not in exclude))
