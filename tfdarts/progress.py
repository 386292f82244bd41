"""Human-readable durations for progress lines (no TensorFlow)."""

from __future__ import annotations


def format_duration(seconds: float) -> str:
    """``3723.4 -> "1h02m03s"`` (rounded to whole seconds, negatives as 0)."""
    seconds = int(round(max(seconds, 0.0)))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"
