"""What a model must do, derived from the data (no TensorFlow here)."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Tuple

CLASSIFICATION = "classification"
REGRESSION = "regression"


@dataclasses.dataclass(frozen=True)
class Task:
    """Input shape and output kind of a supervised problem.

    Attributes:
        input_shape: ``(height, width, channels)`` of one example.
        num_outputs: Number of classes (classification) or targets (regression).
        kind: ``"classification"`` or ``"regression"``.
        output_names: Class names or target names, one per output (may be empty).
    """

    input_shape: Tuple[int, int, int]
    num_outputs: int
    kind: str = CLASSIFICATION
    output_names: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        object.__setattr__(self, "output_names", tuple(str(n) for n in self.output_names))
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ValueError(f"input_shape must be (height, width, channels) > 0, got {self.input_shape}")
        if self.kind not in (CLASSIFICATION, REGRESSION):
            raise ValueError(f"task kind must be {CLASSIFICATION!r} or {REGRESSION!r}, got {self.kind!r}")
        minimum = 2 if self.kind == CLASSIFICATION else 1
        if self.num_outputs < minimum:
            raise ValueError(f"{self.kind} needs num_outputs >= {minimum}, got {self.num_outputs}")
        if self.output_names and len(self.output_names) != self.num_outputs:
            raise ValueError(f"{len(self.output_names)} output names for {self.num_outputs} outputs")

    @property
    def is_classification(self) -> bool:
        """True for classification tasks."""
        return self.kind == CLASSIFICATION

    @property
    def metric_name(self) -> str:
        """Name of the headline metric: ``accuracy`` or ``r2``."""
        return "accuracy" if self.is_classification else "r2"

    def to_dict(self) -> Dict[str, Any]:
        """Plain-JSON form."""
        return {"input_shape": list(self.input_shape), "num_outputs": self.num_outputs,
                "kind": self.kind, "output_names": list(self.output_names)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Task":
        """Inverse of `to_dict()`."""
        return cls(tuple(data["input_shape"]), int(data["num_outputs"]), data["kind"],
                   tuple(data.get("output_names", ())))
