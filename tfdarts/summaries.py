"""TensorBoard event files of a training job, written from Python between epochs.

A job's `EventLog` lives in ``<job folder>/tensorboard`` (`contract.TENSORBOARD_DIR`)
and uses the 1-based epoch as TensorBoard's step. Nothing is written inside the
traced training step: the loop writes an epoch's summaries only once the epoch is
checkpointed, so what the event files show is what a resumed job keeps.

Every ``(tag, step)`` pair is written at most once: on resume the log reads the
pairs already on disk and skips them, so the job can replay its recorded history
(filling in an epoch whose summaries a kill cut off) without duplicates. Event
files holding steps beyond the recorded epochs (a run whose checkpoints were
deleted) are removed before the replay.

Tags:

* ``train/<stat>``, ``val/<stat>``, ``test/<stat>``: loss and metrics of a history
  record (``<group>_metric`` under the task metric's own name);
* ``lr/weights``, ``lr/alphas`` (search), ``time/seconds``, ``time/cpu_seconds``;
  ``alphas/hessian_eigenvalue``; other numbers of a record as ``schedule/<key>``;
* search only: ``alphas_<cell>/<ee>_<edge>`` histograms of each edge's softmaxed op
  weights (``alphas_normal/00_c_{k-2}->0``: edge 0, input ``c_{k-2}`` to node 0),
  ``alphas/mean_entropy_<cell>`` (nats), an ``alphas/<cell>`` heatmap image per epoch
  (`analysis.plot_alpha_heatmap`, about half a second each on a CPU core),
  ``edge_weights/<cell>`` histograms (edge normalisation), and at the end ``cell/<cell>``
  diagrams of the derived cells (`analysis.plot_cell`) and the ``genotype`` as text.
"""

from __future__ import annotations

import glob
import math
import os
import tempfile
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Set, Tuple

import numpy as np
import tensorflow as tf

from tfdarts import analysis
from tfdarts.genotype import Genotype

GROUPS: Tuple[str, ...] = ("train", "val", "test")
"""Prefixes of history keys that become ``<group>/<stat>`` tags."""
RENAMES: Mapping[str, str] = {"lr": "lr/weights", "seconds": "time/seconds",
                              "cpu_seconds": "time/cpu_seconds",
                              "eigenvalue": "alphas/hessian_eigenvalue"}
"""Tags of the other well-known history keys."""
CELLS: Tuple[str, ...] = ("normal", "reduce")
EVENT_GLOB = "events.out.tfevents.*"


def scalar_tag(key: str, metric_name: str) -> str:
    """The TensorBoard tag of a history key (``val_metric`` -> ``val/accuracy``)."""
    group, _, stat = key.partition("_")
    if group in GROUPS and stat:
        return f"{group}/{metric_name if stat == 'metric' else stat}"
    return RENAMES.get(key, f"schedule/{key}")


def epoch_scalars(record: Mapping[str, Any], metric_name: str) -> Dict[str, float]:
    """The finite numbers of a history record by tag (``epoch`` and flags left out)."""
    out: Dict[str, float] = {}
    for key, value in record.items():
        if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            continue
        if math.isfinite(float(value)):
            out[scalar_tag(key, metric_name)] = float(value)
    return out


def event_files(logdir: str) -> List[str]:
    """The event files directly in `logdir`, oldest first."""
    return sorted(glob.glob(os.path.join(logdir, EVENT_GLOB)))


def written_pairs(logdir: str) -> Set[Tuple[str, int]]:
    """``(tag, step)`` of every summary value in `logdir`'s event files.

    A record cut short by a kill ends that file's reading (what precedes it counts).
    """
    pairs: Set[Tuple[str, int]] = set()
    for path in event_files(logdir):
        try:
            for raw in tf.data.TFRecordDataset(path):
                event = tf.compat.v1.Event.FromString(raw.numpy())
                pairs.update((v.tag, int(event.step)) for v in event.summary.value)
        except tf.errors.DataLossError:
            continue
    return pairs


class EventLog:
    """A job's TensorBoard event files; each ``(tag, step)`` is written at most once.

    Args:
        logdir: Folder of the event files (created by `open`).
        enabled: False = write nothing (the non-chief workers of a multi-worker job).
    """

    def __init__(self, logdir: str, enabled: bool = True) -> None:
        self.logdir, self.enabled = logdir, enabled
        self.seen: Set[Tuple[str, int]] = set()
        self._writer: Optional[Any] = None

    def open(self, done: int) -> None:
        """Starts writing after `done` recorded epochs.

        Reads the pairs already written; if any step exceeds `done` (the job
        restarted without its checkpoints) the old event files are removed.
        """
        if not self.enabled:
            return
        os.makedirs(self.logdir, exist_ok=True)
        self.seen = written_pairs(self.logdir)
        if any(step > done for _, step in self.seen):
            for path in event_files(self.logdir):
                os.remove(path)
            self.seen = set()
        self._writer = tf.summary.create_file_writer(self.logdir)

    def wants(self, tag: str, step: int) -> bool:
        """True when the log is open and `tag` at `step` is not written yet."""
        return self._writer is not None and (tag, step) not in self.seen

    def _write(self, tag: str, step: int, summary: Callable[[], Any]) -> None:
        if self.wants(tag, step):
            self.seen.add((tag, step))
            with self._writer.as_default(step=step):
                summary()

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """One scalar per tag at `step`."""
        for tag, value in values.items():
            self._write(tag, step, lambda: tf.summary.scalar(tag, float(value)))

    def histogram(self, tag: str, values: Any, step: int) -> None:
        """A histogram of `values` (any shape, flattened)."""
        flat = np.asarray(values, np.float64).ravel()
        self._write(tag, step, lambda: tf.summary.histogram(tag, flat))

    def image(self, tag: str, png: bytes, step: int) -> None:
        """A PNG image (RGBA)."""
        self._write(tag, step, lambda: tf.summary.image(tag, tf.io.decode_png(png, channels=4)[None]))

    def text(self, tag: str, text: str, step: int) -> None:
        """A text (rendered as Markdown by TensorBoard)."""
        self._write(tag, step, lambda: tf.summary.text(tag, text))

    def flush(self) -> None:
        """Pushes what was written to disk (once per epoch)."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flushes and releases the writer (the log can be opened again)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def figure_png(plot: Callable[..., Iterable[str]], *args: Any, **kwargs: Any) -> bytes:
    """Runs an `analysis` plotting function into a temporary folder; returns its PNG.

    Args:
        plot: E.g. `analysis.plot_cell`; called with ``path_stem=`` added.
        *args: Its positional arguments before ``path_stem``.
        **kwargs: Its other keyword arguments.
    """
    with tempfile.TemporaryDirectory(prefix="tfdarts-figure-") as tmp:
        paths = plot(*args, path_stem=os.path.join(tmp, "figure"), **kwargs)
        png = next(p for p in paths if p.endswith(".png"))
        with open(png, "rb") as f:
            return f.read()


def alpha_summaries(log: EventLog, step: int, probs: Mapping[str, np.ndarray],
                    primitives: Tuple[str, ...], nodes: int) -> None:
    """The architecture weights of one epoch.

    Args:
        log: Where to write.
        step: 1-based epoch.
        probs: ``normal``/``reduce``: ``(edges, K)`` softmaxed alphas; optionally
            ``edge_normal``/``edge_reduce``: ``(edges,)`` edge weights.
        primitives: ``(K,)`` op names.
        nodes: Intermediate nodes per cell.
    """
    labels = analysis.edge_labels(nodes)
    for cell in CELLS:
        p = np.asarray(probs[cell], np.float64)
        for edge, (label, row) in enumerate(zip(labels, p)):
            log.histogram(f"alphas_{cell}/{edge:02d}_{label}", row, step)
        log.scalars(step, {f"alphas/mean_entropy_{cell}": float(analysis.edge_entropy(p).mean())})
        if log.wants(f"alphas/{cell}", step):
            png = figure_png(analysis.plot_alpha_heatmap, p, primitives, nodes,
                             title=f"{cell} cell, epoch {step}")
            log.image(f"alphas/{cell}", png, step)
        if f"edge_{cell}" in probs:
            log.histogram(f"edge_weights/{cell}", probs[f"edge_{cell}"], step)


def cell_summaries(log: EventLog, step: int, genotype: Genotype, engine: str = "auto") -> None:
    """Diagrams of the derived cells (``cell/normal``, ``cell/reduce``) and the genotype text.

    Args:
        log: Where to write.
        step: The search's last epoch.
        genotype: The derived architecture.
        engine: Diagram engine of `analysis.plot_cell`.
    """
    for cell in CELLS:
        if log.wants(f"cell/{cell}", step):
            png = figure_png(analysis.plot_cell, getattr(genotype, cell),
                             getattr(genotype, f"{cell}_concat"), title=f"{cell} cell",
                             engine=engine)
            log.image(f"cell/{cell}", png, step)
    text = "  \n".join(f"{cell}: `{analysis.format_gene(getattr(genotype, cell))}`" for cell in CELLS)
    log.text("genotype", text, step)
