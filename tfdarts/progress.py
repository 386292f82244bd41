"""Progress lines: human-readable durations and a default console handler (no TensorFlow).

The library logs its progress on the ``tfdarts`` logger. A program that configures
logging itself (the command line does) decides where those lines go; a notebook or
plain script that does not gets them on stdout: `show_progress`, called when a
search or retrain starts, attaches one INFO handler to ``tfdarts`` when nobody
configured logging (no handler on ``tfdarts`` or the root logger, no level set on
``tfdarts``). The lines then stay off the root logger, so the root handler that
TensorFlow's absl logging adds by itself the first time it logs does not print
them a second time.

To keep the library quiet, set a level before (or after) training, e.g.
``logging.getLogger("tfdarts").setLevel(logging.WARNING)``; to route its lines
through your own logging set-up, configure logging before the first search or
retrain, or call `hide_progress` afterwards.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional, TextIO

LOGGER = "tfdarts"
"""The logger of the library's progress lines."""


def format_duration(seconds: float) -> str:
    """``3723.4 -> "1h02m03s"`` (rounded to whole seconds, negatives as 0)."""
    seconds = int(round(max(seconds, 0.0)))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


class ProgressHandler(logging.StreamHandler):
    """The default console handler: ``HH:MM:SS message`` lines, INFO and above."""

    def __init__(self, stream: Optional[TextIO] = None) -> None:
        super().__init__(stream if stream is not None else sys.stdout)
        self.setLevel(logging.INFO)
        self.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))


def show_progress(stream: Optional[TextIO] = None) -> Optional[logging.Handler]:
    """Makes the ``tfdarts`` progress lines visible when nobody configured logging.

    Does nothing when the ``tfdarts`` logger has a handler (e.g. this one, from an
    earlier call) or a level, or the root logger has a handler (the command line's,
    a ``logging.basicConfig``). Otherwise attaches a `ProgressHandler` to
    ``tfdarts``, sets that logger to INFO and stops it propagating to the root.

    Args:
        stream: Where the lines go (default ``sys.stdout`` at call time).

    Returns:
        The attached handler, or None when logging was configured already.
    """
    logger = logging.getLogger(LOGGER)
    if logger.handlers or logger.level != logging.NOTSET or logging.getLogger().handlers:
        return None
    handler = ProgressHandler(stream)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handler


def hide_progress() -> None:
    """Undoes `show_progress`: removes its handler; ``tfdarts`` propagates to the root
    logger again with its level unset."""
    logger = logging.getLogger(LOGGER)
    ours = [h for h in logger.handlers if isinstance(h, ProgressHandler)]
    for handler in ours:
        logger.removeHandler(handler)
    if ours:
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
