"""TensorFlow's process settings from ``runtime.*``: thread pools and graph optimisation.

Both are process-wide in TensorFlow. Thread pools are fixed when TensorFlow runs its
first op, so entry points apply them first thing (`apply_threads`); the graph
optimisation setting is switched around a training job only (`graph_optimization`),
so a notebook's other work keeps TensorFlow's defaults.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import tensorflow as tf

from tfdarts.config import RuntimeConfig

log = logging.getLogger("tfdarts")

_NO_GRAPPLER = "disable_meta_optimizer"


def apply_threads(cfg: RuntimeConfig) -> bool:
    """Sizes TensorFlow's thread pools from ``runtime.intra_op_threads`` / ``inter_op_threads``.

    A size of 0 leaves that pool as it is. Call before any TensorFlow op runs.

    Args:
        cfg: The runtime section.

    Returns:
        True when both pools have the requested sizes; False when TensorFlow had
        already started with others (logged once per pool, nothing changed).
    """
    pools = (("intra_op_threads", cfg.intra_op_threads, tf.config.threading.get_intra_op_parallelism_threads,
              tf.config.threading.set_intra_op_parallelism_threads),
             ("inter_op_threads", cfg.inter_op_threads, tf.config.threading.get_inter_op_parallelism_threads,
              tf.config.threading.set_inter_op_parallelism_threads))
    applied = True
    for name, wanted, get, set_ in pools:
        if not wanted or get() == wanted:
            continue
        try:
            set_(wanted)
        except RuntimeError:
            log.warning("runtime.%s=%d not applied: TensorFlow started before it was set "
                        "(set it before the first TensorFlow op of the process)", name, wanted)
            applied = False
    return applied


def graph_optimization_on(cfg: RuntimeConfig) -> bool:
    """Whether grappler optimises the training graphs: ``auto`` is on only with GPUs."""
    if cfg.graph_optimization == "auto":
        return bool(tf.config.list_physical_devices("GPU"))
    return cfg.graph_optimization == "on"


@contextlib.contextmanager
def graph_optimization(cfg: RuntimeConfig) -> Iterator[None]:
    """Runs the block with grappler on or off as ``runtime.graph_optimization`` says.

    Functions are optimised when first called, with the setting of that moment; a
    function first called inside the block must be called inside it afterwards too
    (otherwise TensorFlow prepares it again with the setting outside).
    """
    before = tf.config.optimizer.get_experimental_options().get(_NO_GRAPPLER, False)
    tf.config.optimizer.set_experimental_options({_NO_GRAPPLER: not graph_optimization_on(cfg)})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({_NO_GRAPPLER: before})
