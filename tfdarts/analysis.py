"""Statistics, diagnostics, figures and tables from saved search results (no TensorFlow).

Everything here reads the plain files a search / retrain / evaluation writes:

* search folder: ``alphas.npz`` (``normal``/``reduce`` softmaxed alphas of shape
  ``(E, edges, K)``, ``primitives`` ``(K,)``, ``nodes``), ``history.json``, ``genotype.json``;
* retrain folder: ``history.json``;
* result records: one dict per model (see `results_table`).

Array shape conventions: ``E`` recorded epochs, ``edges = num_edges(nodes)`` mixed
edges per cell (14 for 4 nodes), ``K = len(primitives)`` candidate ops.

Figures use matplotlib's Agg canvas on a stand-alone ``Figure`` (no pyplot, no global
backend switch), so they work headless and never leak open figures. Nothing runs at
import time; matplotlib and pandas are imported inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import subprocess
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tfdarts.fileio import atomic_open, read_json
from tfdarts import contract, space
from tfdarts.genotype import NONE, Gene, Genotype, edge_index, num_edges, parse_alphas
from tfdarts.space import SKIP

# --- diagnostic thresholds ---------------------------------------------------------------
COLLAPSE_SKIP_SHARE = 0.5
"""Collapse when at least this share of a cell's chosen edges are ``skip_connect``
(4 of 8 for 4 nodes; the published DARTS cells have 2-3 in the normal cell)."""

COLLAPSE_TOP_EDGE_SHARE = 0.5
"""Collapse (trend rule) when ``skip_connect`` is the strongest non-none op on more than
this share of *all* edges (not only the chosen ones) ..."""

COLLAPSE_TREND_EPOCHS = 5
"""... and its mean weight over all edges rose during the last this-many epochs ..."""

COLLAPSE_MIN_RISE = 0.01
"""... by more than this (absolute probability), so float noise on flat alphas never counts."""

PARAM_FREE_WARN_SHARE = 0.75
"""Warn when at least this share of the chosen *normal* edges are parameter-free ops
(skip_connect or pools). Not applied to reduction cells, where all-pool cells are common
(DARTS_V2's reduction cell is entirely parameter-free)."""

UNIFORM_ENTROPY_RTOL = 0.01
"""'Not moved from uniform' when the final mean edge entropy is at least
``(1 - UNIFORM_ENTROPY_RTOL) * ln K`` ..."""

UNIFORM_MAX_WEIGHT_RTOL = 0.05
"""... or the final mean max weight is at most ``(1 + UNIFORM_MAX_WEIGHT_RTOL) / K``."""

PROB_SUM_ATOL = 1e-3
"""Alphas must be softmaxed: each edge's weights sum to 1 within this tolerance."""

MAX_PANELS = 12
"""Maximum number of epoch panels in the alpha-evolution figure."""

NOISE_MARGIN_FRACTION = 0.1
"""A chosen op is a guess, not a choice, when it beats the runner-up on its edge by less
than this fraction of the uniform weight ``1 / K`` (0.0125 with the paper's 8 ops): a
margin the 1e-3 initialisation noise and a few steps of minibatch noise produce."""

CELL_TYPES: Tuple[str, ...] = ("normal", "reduce")

# --- loading -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class SearchRun:
    """The plain files of one search folder.

    Attributes:
        path: The search folder.
        normal: ``(E, edges, K)`` softmaxed normal-cell alphas, one slice per epoch.
        reduce: ``(E, edges, K)`` same for the reduction cell.
        primitives: ``(K,)`` op names, one per alpha column.
        nodes: Intermediate nodes per cell.
        history: Parsed ``history.json`` or None when absent.
        genotype: Parsed ``genotype.json`` or None when absent.
    """

    path: str
    normal: np.ndarray
    reduce: np.ndarray
    primitives: Tuple[str, ...]
    nodes: int
    history: Optional[Dict[str, Any]] = None
    genotype: Optional[Genotype] = None

    @property
    def num_epochs(self) -> int:
        """Number of recorded alpha snapshots ``E``."""
        return int(self.normal.shape[0])

    @property
    def epochs(self) -> List[int]:
        """Epoch number of each snapshot: from history when it has one entry per snapshot,
        else ``1..E``."""
        rows = (self.history or {}).get("epochs") or []
        numbers = [r.get("epoch") for r in rows if isinstance(r, Mapping)]
        if len(numbers) == self.num_epochs and all(isinstance(n, int) for n in numbers):
            return numbers
        return list(range(1, self.num_epochs + 1))

    @property
    def metric(self) -> str:
        """Headline metric name from history (``accuracy`` when unknown)."""
        return str((self.history or {}).get("metric") or "accuracy")

    @property
    def dataset(self) -> str:
        """Dataset name from history (``dataset`` / ``task.dataset`` / ``task.name``),
        else the run folder's name."""
        hist = self.history or {}
        task = hist.get("task") if isinstance(hist.get("task"), Mapping) else {}
        for value in (hist.get("dataset"), task.get("dataset"), task.get("name")):
            if value:
                return str(value)
        return run_name(self.path)


def run_name(folder: str) -> str:
    """Name of a run from its folder: the parent's name for ``.../<run>/search`` or
    ``.../<run>/retrain`` folders, else the folder's own name."""
    folder = os.path.abspath(folder)
    base = os.path.basename(folder)
    if base in ("search", "retrain", "analysis", "report"):
        return os.path.basename(os.path.dirname(folder))
    return base


def read_history(folder: Optional[str]) -> Optional[Dict[str, Any]]:
    """Reads ``<folder>/history.json``; None when `folder` is None or the file is absent."""
    if not folder:
        return None
    path = os.path.join(folder, contract.HISTORY_FILE)
    if not os.path.exists(path):
        return None
    data = read_json(path)
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return dict(data)


def _nodes_from_edges(edges: int) -> int:
    nodes = 0
    while num_edges(nodes) < edges:
        nodes += 1
    if num_edges(nodes) != edges:
        raise ValueError(f"{edges} edges do not match any number of intermediate nodes")
    return nodes


def load_alphas(path: str) -> Tuple[np.ndarray, np.ndarray, Tuple[str, ...], int]:
    """Reads an ``alphas.npz`` snapshot file.

    Args:
        path: The ``.npz`` file.

    Returns:
        ``(normal, reduce, primitives, nodes)`` with ``normal``/``reduce`` float64 of shape
        ``(E, edges, K)`` (a single ``(edges, K)`` snapshot is promoted to ``E = 1``).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: arrays are missing or their shapes disagree.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"alpha snapshots not found: {path}")
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in ("normal", "reduce", "primitives") if k not in data.files]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing} (has {data.files})")
        cells = [np.asarray(data[k], dtype=np.float64) for k in CELL_TYPES]
        primitives = tuple(str(p) for p in np.atleast_1d(data["primitives"]))
        nodes = int(data["nodes"]) if "nodes" in data.files else None
    for i, arr in enumerate(cells):
        if arr.ndim == 2:
            cells[i] = arr = arr[None]
        if arr.ndim != 3 or arr.shape[-1] != len(primitives):
            raise ValueError(f"{path}: {CELL_TYPES[i]} has shape {arr.shape}, expected "
                             f"(epochs, edges, {len(primitives)})")
    if cells[0].shape != cells[1].shape:
        raise ValueError(f"{path}: normal {cells[0].shape} and reduce {cells[1].shape} differ")
    if nodes is None:
        nodes = _nodes_from_edges(cells[0].shape[1])
    if num_edges(nodes) != cells[0].shape[1]:
        raise ValueError(f"{path}: {cells[0].shape[1]} edges but nodes={nodes} needs "
                         f"{num_edges(nodes)}")
    return cells[0], cells[1], primitives, nodes


def load_search(folder: str) -> SearchRun:
    """Loads a search folder: ``alphas.npz`` (required), ``history.json`` and
    ``genotype.json`` (optional).

    Args:
        folder: The search output folder.

    Returns:
        A `SearchRun`.
    """
    normal, reduce, primitives, nodes = load_alphas(os.path.join(folder, contract.ALPHAS_FILE))
    genotype_path = os.path.join(folder, contract.GENOTYPE_FILE)
    genotype = Genotype.load(genotype_path) if os.path.exists(genotype_path) else None
    return SearchRun(folder, normal, reduce, primitives, nodes, read_history(folder), genotype)


# --- statistics --------------------------------------------------------------------------


def _as_probs(probs: Any) -> np.ndarray:
    """Float64 copy of softmaxed weights ``(..., K)``; raises on logits or non-finite values."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 0 or p.shape[-1] == 0:
        raise ValueError(f"expected weights of shape (..., K), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("alpha weights contain NaN or inf")
    if p.size and (p.min() < -PROB_SUM_ATOL or
                   np.abs(p.sum(axis=-1) - 1.0).max() > PROB_SUM_ATOL):
        sums = p.sum(axis=-1)
        raise ValueError(
            f"expected softmaxed alpha probabilities (non-negative, summing to 1 per edge); "
            f"got min {p.min():.3g}, sums in [{sums.min():.4g}, {sums.max():.4g}] "
            f"(raw logits? apply softmax first)")
    return np.clip(p, 0.0, None)


def _column(primitives: Sequence[str], name: str) -> Optional[int]:
    return list(primitives).index(name) if name in primitives else None


def _choosable(primitives: Sequence[str]) -> np.ndarray:
    """Boolean mask ``(K,)`` of ops that can be chosen (all but ``none``)."""
    mask = np.array([p != NONE for p in primitives], dtype=bool)
    if not mask.any():
        raise ValueError("primitives must contain at least one op other than 'none'")
    return mask


def uniform_entropy(k: int) -> float:
    """Entropy of the uniform distribution over `k` ops: ``ln k`` (nats)."""
    if k < 1:
        raise ValueError(f"need at least one op, got {k}")
    return math.log(k)


def edge_entropy(probs: Any) -> np.ndarray:
    """Natural-log entropy of each edge's op distribution.

    Args:
        probs: ``(..., K)`` softmaxed weights.

    Returns:
        ``(...)`` entropies in nats, in ``[0, ln K]``.
    """
    p = _as_probs(probs)
    logs = np.log(np.where(p > 0, p, 1.0))
    return -(p * logs).sum(axis=-1)


def strongest_ops(probs: Any, primitives: Sequence[str]) -> np.ndarray:
    """Index of the strongest non-``none`` op of each edge.

    Args:
        probs: ``(..., K)`` softmaxed weights.
        primitives: ``(K,)`` op names.

    Returns:
        ``(...)`` int column indices into `primitives` (never the ``none`` column).
    """
    p = _as_probs(probs)
    return np.argmax(np.where(_choosable(primitives), p, -np.inf), axis=-1)


def op_margins(probs: Any, primitives: Sequence[str]) -> np.ndarray:
    """Weight of the chosen op minus the runner-up, both among non-``none`` ops.

    Args:
        probs: ``(..., K)`` softmaxed weights.
        primitives: ``(K,)`` op names.

    Returns:
        ``(...)`` margins in ``[0, 1]``; with a single non-none op the runner-up is 0.
    """
    p = _as_probs(probs)
    if p.shape[-1] != len(primitives):
        raise ValueError(f"weights have {p.shape[-1]} columns, primitives {len(primitives)}")
    q = np.sort(p[..., _choosable(primitives)], axis=-1)
    if q.shape[-1] == 1:
        return q[..., -1]
    return q[..., -1] - q[..., -2]


def noise_margin(k: int) -> float:
    """The margin below which a chosen op counts as guessed, for `k` candidate ops."""
    return NOISE_MARGIN_FRACTION / max(k, 1)


def choice_confidence(probs: Any, primitives: Sequence[str], nodes: int) -> List[Dict[str, Any]]:
    """How clearly each chosen edge of one cell won its op.

    Args:
        probs: ``(edges, K)`` softmaxed weights of one cell.
        primitives: ``(K,)`` op names.
        nodes: Intermediate nodes.

    Returns:
        One dict per chosen edge (the `cell_gene` order): ``edge`` label, ``op``,
        ``weight``, ``runner_up``, ``runner_up_weight``, ``margin`` and ``guessed``
        (margin below `noise_margin`).
    """
    p = _as_probs(probs)
    choosable = [k for k in range(len(primitives)) if _choosable(primitives)[k]]
    threshold = noise_margin(len(primitives))
    out = []
    for pos, (op, src) in enumerate(cell_gene(p, primitives, nodes)):
        row = p[edge_index(pos // 2, src)]
        ranked = sorted(choosable, key=lambda k: -row[k])
        second = ranked[1] if len(ranked) > 1 else None
        runner = float(row[second]) if second is not None else 0.0
        margin = float(row[ranked[0]]) - runner
        out.append({"edge": f"{source_label(src)}->{pos // 2}", "op": op, "weight": float(row[ranked[0]]),
                    "runner_up": primitives[second] if second is not None else "",
                    "runner_up_weight": runner, "margin": margin, "guessed": margin < threshold})
    return out


def cell_gene(probs: Any, primitives: Sequence[str], nodes: int) -> Gene:
    """Discrete cell of one cell type, by `genotype.parse_alphas`'s rule.

    Args:
        probs: ``(edges, K)`` softmaxed weights of one cell at one epoch.
        primitives: ``(K,)`` op names.
        nodes: Intermediate nodes.

    Returns:
        ``((op, input), ...)``, two entries per node; ``none`` is never chosen.
    """
    p = _as_probs(probs)
    return parse_alphas(p, p, primitives, nodes).normal


def format_gene(gene: Gene) -> str:
    """One-line text of a cell, e.g. ``0: sep_conv_3x3<-c_{k-1}, skip_connect<-c_{k-2} | 1: ...``."""
    parts = []
    for node in range(len(gene) // 2):
        edges = ", ".join(f"{op}<-{source_label(src)}" for op, src in gene[2 * node:2 * node + 2])
        parts.append(f"{node}: {edges}")
    return " | ".join(parts)


def source_label(source: int) -> str:
    """Label of a cell input: ``c_{k-2}``, ``c_{k-1}`` or the intermediate node number."""
    return ("c_{k-2}", "c_{k-1}")[source] if source < 2 else str(source - 2)


def edge_labels(nodes: int) -> List[str]:
    """Label of each alpha row, e.g. ``c_{k-2}->0``, in `genotype.edge_index` order.

    Returns:
        ``(edges,)`` labels.
    """
    return [f"{source_label(src)}->{node}" for node in range(nodes) for src in range(node + 2)]


def cell_stats(probs: Any, primitives: Sequence[str], nodes: int) -> Dict[str, Any]:
    """Statistics of one cell type at one epoch.

    Args:
        probs: ``(edges, K)`` softmaxed weights.
        primitives: ``(K,)`` op names.
        nodes: Intermediate nodes.

    Returns:
        Dict with ``entropy_mean/min/max`` (nats), ``entropy_ratio`` (mean / ln K),
        ``max_weight_mean``, ``margin_mean``, ``skip_weight_mean`` and ``none_weight_mean``
        (mean over edges), ``skip_top_edges`` (edges whose strongest non-none op is
        skip_connect), ``gene`` (the chosen cell), ``skip_count`` and
        ``param_free_share`` (among the chosen ops), ``chosen_margin_mean`` and
        ``guessed_share`` (share of chosen ops within `noise_margin` of the runner-up).
    """
    p = _as_probs(probs)
    if p.shape != (num_edges(nodes), len(primitives)):
        raise ValueError(f"weights have shape {p.shape}, expected "
                         f"({num_edges(nodes)}, {len(primitives)})")
    ent = edge_entropy(p)
    max_entropy = uniform_entropy(len(primitives))
    skip, none = _column(primitives, SKIP), _column(primitives, NONE)
    gene = cell_gene(p, primitives, nodes)
    chosen = [op for op, _ in gene]
    confidence = choice_confidence(p, primitives, nodes)
    return {
        "entropy_mean": float(ent.mean()),
        "entropy_min": float(ent.min()),
        "entropy_max": float(ent.max()),
        "entropy_ratio": float(ent.mean() / max_entropy) if max_entropy > 0 else 0.0,
        "max_weight_mean": float(p.max(axis=-1).mean()),
        "margin_mean": float(op_margins(p, primitives).mean()),
        "skip_weight_mean": float(p[:, skip].mean()) if skip is not None else 0.0,
        "none_weight_mean": float(p[:, none].mean()) if none is not None else 0.0,
        "skip_top_edges": (int((strongest_ops(p, primitives) == skip).sum())
                           if skip is not None else 0),
        "skip_count": chosen.count(SKIP),
        "param_free_share": sum(space.is_parameter_free(op) for op in chosen) / len(chosen),
        "chosen_margin_mean": float(np.mean([c["margin"] for c in confidence])),
        "guessed_share": sum(c["guessed"] for c in confidence) / len(confidence),
        "gene": gene,
    }


def _as_epochs(probs: Any) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    return p[None] if p.ndim == 2 else p


def epoch_stats(normal: Any, reduce: Any, primitives: Sequence[str], nodes: int,
                epochs: Optional[Sequence[int]] = None) -> List[Dict[str, Any]]:
    """`cell_stats` of both cell types at every recorded epoch, as DataFrame rows.

    Args:
        normal: ``(E, edges, K)`` (or ``(edges, K)``) softmaxed normal-cell weights.
        reduce: Same for the reduction cell.
        primitives: ``(K,)`` op names.
        nodes: Intermediate nodes.
        epochs: ``(E,)`` epoch numbers; default ``1..E``.

    Returns:
        ``2 * E`` dicts ordered by epoch then cell: ``epoch``, ``cell``, the `cell_stats`
        scalars, ``genotype`` (`format_gene` text) and ``gene_changed`` (differs from the
        previous epoch's cell of the same type; False at the first epoch).
    """
    cells = {"normal": _as_epochs(normal), "reduce": _as_epochs(reduce)}
    count = cells["normal"].shape[0]
    if cells["reduce"].shape[0] != count:
        raise ValueError(f"normal has {count} epochs, reduce {cells['reduce'].shape[0]}")
    numbers = list(epochs) if epochs is not None else list(range(1, count + 1))
    if len(numbers) != count:
        raise ValueError(f"{len(numbers)} epoch numbers for {count} snapshots")
    rows: List[Dict[str, Any]] = []
    previous: Dict[str, Optional[Gene]] = {c: None for c in CELL_TYPES}
    for i, number in enumerate(numbers):
        for cell in CELL_TYPES:
            stats = cell_stats(cells[cell][i], primitives, nodes)
            gene = stats.pop("gene")
            rows.append({"epoch": int(number), "cell": cell, **stats, "genotype": format_gene(gene),
                         "gene_changed": previous[cell] is not None and gene != previous[cell]})
            previous[cell] = gene
    return rows


def finite_epochs(normal: Any, reduce: Any) -> int:
    """Number of leading epochs whose alphas are all finite (a diverged search ends in NaN).

    Args:
        normal: ``(E, edges, K)`` weights.
        reduce: ``(E, edges, K)`` weights.
    """
    n, r = _as_epochs(normal), _as_epochs(reduce)
    ok = np.isfinite(n).all(axis=(1, 2)) & np.isfinite(r).all(axis=(1, 2))
    bad = np.flatnonzero(~ok)
    return int(bad[0]) if bad.size else int(ok.size)


# --- diagnostics -------------------------------------------------------------------------


def _collapse_warning(probs: np.ndarray, primitives: Sequence[str], nodes: int,
                      cell: str) -> Optional[str]:
    final = cell_stats(probs[-1], primitives, nodes)
    reasons = []
    chosen = len(final["gene"])
    if final["skip_count"] >= COLLAPSE_SKIP_SHARE * chosen:
        reasons.append(f"{final['skip_count']} of {chosen} chosen edges are {SKIP} "
                       f"(threshold {COLLAPSE_SKIP_SHARE:.0%})")
    skip = _column(primitives, SKIP)
    edges = probs.shape[1]
    skip_on_top = final["skip_top_edges"] > COLLAPSE_TOP_EDGE_SHARE * edges
    if skip is not None and probs.shape[0] >= 2 and skip_on_top:
        start = max(0, probs.shape[0] - 1 - COLLAPSE_TREND_EPOCHS)
        before, after = probs[start, :, skip].mean(), probs[-1, :, skip].mean()
        if after - before > COLLAPSE_MIN_RISE:
            reasons.append(f"{SKIP} is the strongest op on {final['skip_top_edges']}/{edges} edges "
                           f"and its mean weight rose {before:.3f} -> {after:.3f} over the last "
                           f"{probs.shape[0] - 1 - start} epochs")
    if not reasons:
        return None
    return (f"{cell} cell: skip-connect collapse: " + "; ".join(reasons) +
            ". Consider early stopping (DARTS+), fewer search epochs, or a regularised variant "
            "(DARTS-, beta-DARTS, PC-DARTS).")


def _param_free_warning(final: Dict[str, Any], cell: str) -> Optional[str]:
    if cell != "normal" or final["param_free_share"] < PARAM_FREE_WARN_SHARE:
        return None
    return (f"{cell} cell: parameter-free ops dominate: {final['param_free_share']:.0%} of the "
            f"chosen edges are skip_connect or pools (threshold {PARAM_FREE_WARN_SHARE:.0%}).")


def _uniform_warning(final: Dict[str, Any], k: int, cell: str) -> Optional[str]:
    if k < 2:
        return None
    flat_entropy = final["entropy_ratio"] >= 1.0 - UNIFORM_ENTROPY_RTOL
    flat_weight = final["max_weight_mean"] <= (1.0 + UNIFORM_MAX_WEIGHT_RTOL) / k
    if not (flat_entropy or flat_weight):
        return None
    return (f"{cell} cell: alphas have not moved from uniform: final mean entropy is "
            f"{final['entropy_ratio']:.1%} of ln {k}, mean max weight {final['max_weight_mean']:.4f} "
            f"vs 1/{k} = {1.0 / k:.4f}; the derived genotype is close to arbitrary. Search longer, "
            f"raise the alpha learning rate, or check that the alphas are being updated.")


def diagnose_cell(probs: Any, primitives: Sequence[str], nodes: int,
                  cell: str = "normal") -> List[str]:
    """Warnings for one cell type from its alpha history.

    Args:
        probs: ``(E, edges, K)`` (or ``(edges, K)``) finite softmaxed weights.
        primitives: ``(K,)`` op names.
        nodes: Intermediate nodes.
        cell: ``"normal"`` or ``"reduce"`` (the parameter-free check is normal-only).

    Returns:
        Warning strings (empty when healthy): collapse, parameter-free dominance (only
        without a collapse or not-moved warning), not moved from uniform.
    """
    p = _as_epochs(probs)
    if p.shape[0] == 0:
        return [f"{cell} cell: no alpha snapshots recorded yet."]
    final = cell_stats(p[-1], primitives, nodes)
    collapse = _collapse_warning(p, primitives, nodes, cell)
    uniform = _uniform_warning(final, len(primitives), cell)
    # on (near-)uniform alphas the chosen ops are arbitrary (ties pick the first column,
    # a pool), so parameter-free dominance would be a false alarm
    param_free = None if collapse or uniform else _param_free_warning(final, cell)
    found = [collapse, param_free, uniform]
    return [w for w in found if w]


def _same_cell(a: Gene, b: Gene) -> bool:
    """Cells equal up to the order of the two edges of each node."""
    return len(a) == len(b) and all(
        sorted(a[i:i + 2]) == sorted(b[i:i + 2]) for i in range(0, len(a), 2))


def diagnose(normal: Any, reduce: Any, primitives: Sequence[str], nodes: int,
             genotype: Optional[Genotype] = None) -> List[str]:
    """Warnings about a search from its alpha history (see the module's threshold constants).

    Args:
        normal: ``(E, edges, K)`` (or ``(edges, K)``) softmaxed normal-cell weights.
        reduce: Same for the reduction cell.
        primitives: ``(K,)`` op names.
        nodes: Intermediate nodes.
        genotype: The saved final genotype; when given, a warning is added if it differs
            from the genotype derived from the last finite snapshot.

    Returns:
        Warning strings, each prefixed with its cell type ("normal cell: ...") except the
        divergence warning; empty when nothing is wrong.
    """
    n, r = _as_epochs(normal), _as_epochs(reduce)
    warnings: List[str] = []
    ok = finite_epochs(n, r)
    if ok < n.shape[0]:
        warnings.append(f"alphas are NaN/inf from snapshot {ok + 1} of {n.shape[0]} (diverged "
                        f"search); the analysis uses the first {ok} snapshots only.")
        n, r = n[:ok], r[:ok]
    for cell, probs in (("normal", n), ("reduce", r)):
        warnings.extend(diagnose_cell(probs, primitives, nodes, cell))
    if genotype is not None and ok > 0:
        for cell, probs in (("normal", n), ("reduce", r)):
            derived = cell_gene(probs[-1], primitives, nodes)
            if not _same_cell(getattr(genotype, cell), derived):
                warnings.append(f"{cell} cell: genotype.json differs from the genotype derived "
                                f"from the last finite alpha snapshot "
                                f"({format_gene(derived)}).")
    return warnings


# --- figures -----------------------------------------------------------------------------


def _new_figure(width: float, height: float) -> Any:
    """A stand-alone Figure on an Agg canvas (no pyplot state, no backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path_stem: str, formats: Sequence[str] = ("png", "svg")) -> List[str]:
    """Writes `fig` atomically as ``<path_stem>.<fmt>`` for each format.

    Returns:
        The written paths, in `formats` order.
    """
    paths = []
    for fmt in formats:
        path = f"{path_stem}.{fmt}"
        metadata = {"Date": None} if fmt == "svg" else None
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format=fmt, dpi=110, bbox_inches="tight", metadata=metadata)
        paths.append(path)
        fig.set_layout_engine("none")  # keep the first layout; skip recomputing it per format
    return paths


def _op_colors(ops: Iterable[str]) -> Dict[str, str]:
    return {op: space.colour(op) for op in set(ops) | set(space.known_ops())}


def cell_dot_source(gene: Gene, concat: Sequence[int], title: str = "") -> str:
    """Graphviz ``dot`` source of a cell diagram (inputs, intermediate nodes, output).

    Args:
        gene: ``((op, input), ...)``, two entries per node.
        concat: Node indices (>= 2) concatenated into the output.
        title: Graph label.
    """
    def q(text: str) -> str:
        return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'

    nodes = len(gene) // 2
    lines = ["digraph cell {", "  rankdir=LR;", f"  label={q(title)}; labelloc=t;",
             '  node [style="rounded,filled", shape=rect, fontname=helvetica, fontsize=14];',
             "  edge [fontname=helvetica, fontsize=11];"]
    for name in ("c_{k-2}", "c_{k-1}"):
        lines.append(f"  {q(name)} [fillcolor=darkseagreen2];")
    for node in range(nodes):
        lines.append(f"  {q(node)} [fillcolor=lightblue, shape=circle];")
    lines.append(f"  {q('c_{k}')} [fillcolor=palegoldenrod];")
    for pos, (op, src) in enumerate(gene):
        lines.append(f"  {q(source_label(src))} -> {q(pos // 2)} [label={q(op)}];")
    for c in concat:
        lines.append(f"  {q(c - 2)} -> {q('c_{k}')} [color=gray, style=dashed];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _plot_cell_dot(gene: Gene, concat: Sequence[int], path_stem: str, title: str) -> List[str]:
    source_path = path_stem + ".dot"
    with atomic_open(source_path) as f:
        f.write(cell_dot_source(gene, concat, title))
    paths = []
    for fmt in ("png", "svg"):
        path = f"{path_stem}.{fmt}"
        subprocess.run(["dot", f"-T{fmt}", "-o", path, source_path], check=True,
                       capture_output=True, timeout=60)
        paths.append(path)
    return paths


def _cell_layout(nodes: int) -> Dict[str, Tuple[float, float]]:
    """Inputs above and below the left end, intermediate nodes and output on one line."""
    pos = {"c_{k-2}": (0.0, 1.8), "c_{k-1}": (0.0, -1.8)}
    for node in range(nodes):
        pos[str(node)] = (2.4 * (node + 1), 0.0)
    pos["c_{k}"] = (2.4 * (nodes + 1), 0.0)
    return pos


def _edge_rad(source: int, node: int) -> float:
    """Curvature of an edge: inputs bend away from the node line, node-to-node edges that
    would pass through other nodes arc above it."""
    if source < 2:
        return -0.12 if source == 0 else 0.12
    return 0.0 if node - (source - 2) == 1 else -0.35


def _plot_cell_matplotlib(gene: Gene, concat: Sequence[int], path_stem: str,
                          title: str) -> List[str]:
    nodes = len(gene) // 2
    fig = _new_figure(2.4 * (nodes + 2), 4.6)
    _draw_cell(fig.add_subplot(), gene, concat, title)
    return save_figure(fig, path_stem)


def plot_cells(cells: Sequence[Tuple[str, Gene, Sequence[int]]], path_stem: str,
               columns: int = 2) -> List[str]:
    """Draws several discrete cells side by side in one figure (matplotlib).

    Args:
        cells: ``(title, gene, concat)`` per panel, in row-major order.
        path_stem: Output path without extension.
        columns: Panels per row.

    Returns:
        ``[<stem>.png]``.
    """
    nodes = max(len(gene) // 2 for _, gene, _ in cells)
    rows = -(-len(cells) // columns)
    fig = _new_figure(2.0 * (nodes + 2) * columns, 3.6 * rows)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (title, gene, concat) in zip(axes, cells):
        _draw_cell(ax, tuple((str(op), int(src)) for op, src in gene), concat, title)
    for ax in axes[len(cells):]:
        ax.axis("off")
    return save_figure(fig, path_stem, ("png",))


def _draw_cell(ax: Any, gene: Gene, concat: Sequence[int], title: str) -> None:
    """Draws one cell diagram on `ax` (inputs, nodes on a line, output)."""
    nodes = len(gene) // 2
    pos = _cell_layout(nodes)
    ax.set_aspect("equal")
    ax.axis("off")
    colors = _op_colors(op for op, _ in gene)
    arrow = dict(arrowstyle="-|>", shrinkA=16, shrinkB=16, mutation_scale=12)
    for c in concat:
        rad = 0.0 if c - 2 == nodes - 1 else 0.3
        ax.annotate("", xy=pos["c_{k}"], xytext=pos[str(c - 2)],
                    arrowprops=dict(arrow, color="0.6", lw=1.0, linestyle="--",
                                    connectionstyle=f"arc3,rad={rad}"))
    for i, (op, src) in enumerate(gene):
        (x1, y1), (x2, y2) = pos[source_label(src)], pos[str(i // 2)]
        rad = _edge_rad(src, i // 2)
        ax.annotate("", xy=(x2, y2), xytext=(x1, y1),
                    arrowprops=dict(arrow, color=colors[op], lw=1.8, connectionstyle=f"arc3,rad={rad}"))
        # midpoint of matplotlib's arc3 Bezier (exact with an equal aspect ratio)
        mx, my = (x1 + x2) / 2 + 0.5 * rad * (y2 - y1), (y1 + y2) / 2 - 0.5 * rad * (x2 - x1)
        ax.text(mx, my, op, fontsize=7.5, ha="center", va="center", color=colors[op], zorder=4,
                bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))
    fills = {"c_{k-2}": "#c1ffc1", "c_{k-1}": "#c1ffc1", "c_{k}": "#eee8aa"}
    for name, (x, y) in pos.items():
        label = f"${name}$" if name.startswith("c_") else name
        ax.text(x, y, label, fontsize=12, ha="center", va="center", zorder=5,
                bbox=dict(boxstyle="round,pad=0.45", fc=fills.get(name, "#add8e6"), ec="0.3"))
    xs, _ = zip(*pos.values())
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(-2.4, 2.4)
    ax.set_title(title)


def plot_cell(genotype_cell: Gene, concat: Sequence[int], path_stem: str, title: str = "",
              engine: str = "auto") -> List[str]:
    """Draws a discrete cell: inputs ``c_{k-2}``, ``c_{k-1}``, nodes ``0..N-1``, output ``c_{k}``.

    Args:
        genotype_cell: ``((op, input), ...)``, two entries per node (e.g. ``genotype.normal``).
        concat: Node indices (>= 2) concatenated into the output.
        path_stem: Output path without extension.
        title: Figure title.
        engine: ``"dot"`` (graphviz; also writes ``<stem>.dot``), ``"matplotlib"``, or
            ``"auto"``: dot when ``shutil.which("dot")`` finds it and it succeeds, else matplotlib.

    Returns:
        ``[<stem>.png, <stem>.svg]``.
    """
    gene = tuple((str(op), int(src)) for op, src in genotype_cell)
    if engine not in ("auto", "dot", "matplotlib"):
        raise ValueError(f"engine must be auto, dot or matplotlib, got {engine!r}")
    if engine == "dot" or (engine == "auto" and shutil.which("dot")):
        try:
            return _plot_cell_dot(gene, concat, path_stem, title)
        except (OSError, subprocess.SubprocessError):
            if engine == "dot":
                raise
    return _plot_cell_matplotlib(gene, concat, path_stem, title)


def _heatmap(ax: Any, probs: np.ndarray, primitives: Sequence[str], nodes: int, vmax: float,
             annotate: bool, ylabels: bool, xlabels: bool, vmin: float = 0.0,
             cmap: str = "viridis") -> Any:
    image = ax.imshow(probs, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    if ylabels:
        ax.set_yticks(range(probs.shape[0]), edge_labels(nodes), fontsize=7)
    else:
        ax.set_yticks([])
    if xlabels:
        ax.set_xticks(range(len(primitives)), primitives, rotation=60, ha="right", fontsize=7)
    else:
        ax.set_xticks([])
    if annotate:
        for (e, k), v in np.ndenumerate(probs):
            ax.text(k, e, f"{v:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if v < 0.6 * vmax else "black")
    return image


def _mark_gene(ax: Any, gene: Gene, primitives: Sequence[str]) -> None:
    from matplotlib.patches import Rectangle

    for i, (op, src) in enumerate(gene):
        row, col = edge_index(i // 2, src), list(primitives).index(op)
        ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, ec="red", lw=1.8))


def plot_alpha_heatmap(probs: Any, primitives: Sequence[str], nodes: int, path_stem: str,
                       title: str = "") -> List[str]:
    """Heatmap of one cell's op weights, values annotated, chosen ops outlined in red;
    coloured by departure from uniform (weight - 1/K) so near-uniform alphas do not
    come out as one solid colour.

    Args:
        probs: ``(edges, K)`` softmaxed weights.
        primitives: ``(K,)`` op names (columns).
        nodes: Intermediate nodes (rows are labelled ``c_{k-2}->0`` ...).
        path_stem: Output path without extension.
        title: Figure title.

    Returns:
        ``[<stem>.png, <stem>.svg]``.
    """
    p = _as_probs(probs)
    fig = _new_figure(1.0 + 0.75 * len(primitives), 1.2 + 0.32 * p.shape[0])
    ax = fig.add_subplot()
    departure = p - 1.0 / p.shape[-1]
    span = max(float(np.abs(departure).max()), 1e-6)
    image = _heatmap(ax, departure, primitives, nodes, span, False, True, True, vmin=-span, cmap="RdBu_r")
    for (e, k), v in np.ndenumerate(p):
        ax.text(k, e, f"{v:.2f}", ha="center", va="center", fontsize=6,
                color="white" if abs(departure[e, k]) > 0.6 * span else "black")
    _mark_gene(ax, cell_gene(p, primitives, nodes), primitives)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label=f"softmax weight - 1/{p.shape[-1]}")
    ax.set_title(title + ("\n" if title else "") + "red: chosen ops", fontsize=10)
    return save_figure(fig, path_stem)


def select_epochs(count: int, limit: int = MAX_PANELS) -> List[int]:
    """At most `limit` evenly spaced indices into ``range(count)``, always with first and last."""
    if count <= 0:
        return []
    if count <= limit:
        return list(range(count))
    return sorted(set(int(round(x)) for x in np.linspace(0, count - 1, limit)))


def plot_alpha_evolution(probs_over_epochs: Any, primitives: Sequence[str], nodes: int,
                         path_stem: str, title: str = "", epochs: Optional[Sequence[int]] = None,
                         max_panels: int = MAX_PANELS,
                         frames_dir: Optional[str] = None) -> List[str]:
    """Small multiples: one heatmap per selected epoch, coloured by each weight's
    departure from uniform (weight - 1/K) on a diverging scale shared by the panels and
    fitted to the largest departure, so small but real moves stay visible.

    Args:
        probs_over_epochs: ``(E, edges, K)`` softmaxed weights.
        primitives: ``(K,)`` op names.
        nodes: Intermediate nodes.
        path_stem: Output path without extension.
        title: Figure title.
        epochs: ``(E,)`` epoch numbers for panel titles; default ``1..E``.
        max_panels: At most this many evenly spaced epochs (first and last included).
        frames_dir: When given, also writes one annotated heatmap per epoch there
            (``frame_<epoch>.png/.svg``), e.g. for an animation.

    Returns:
        ``[<stem>.png, <stem>.svg]`` followed by any frame paths.
    """
    p = _as_probs(_as_epochs(probs_over_epochs))
    numbers = list(epochs) if epochs is not None else list(range(1, p.shape[0] + 1))
    chosen = select_epochs(p.shape[0], max_panels)
    if not chosen:
        raise ValueError("no epochs to plot")
    cols = min(4, len(chosen))
    rows = math.ceil(len(chosen) / cols)
    fig = _new_figure(0.6 + 2.6 * cols, 0.8 + 3.3 * rows)
    departure = p - 1.0 / p.shape[-1]
    span = max(float(np.abs(departure[chosen]).max()), 1e-6)
    axes = fig.subplots(rows, cols, squeeze=False)
    for slot, ax in enumerate(axes.flat):
        if slot >= len(chosen):
            ax.axis("off")
            continue
        i = chosen[slot]
        image = _heatmap(ax, departure[i], primitives, nodes, span, False, slot % cols == 0,
                         slot + cols >= len(chosen), vmin=-span, cmap="RdBu_r")
        ax.set_title(f"epoch {numbers[i]}", fontsize=9)
    bar = fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.02, pad=0.02)
    bar.set_label(f"weight - 1/{p.shape[-1]}")
    if title:
        fig.suptitle(title)
    paths = save_figure(fig, path_stem)
    if frames_dir:
        for i, number in enumerate(numbers):
            paths += plot_alpha_heatmap(p[i], primitives, nodes,
                                        os.path.join(frames_dir, f"frame_{number:04d}"),
                                        f"{title} epoch {number}".strip())
    return paths


def plot_op_trends(normal: Any, reduce: Any, primitives: Sequence[str], path_stem: str,
                   epochs: Optional[Sequence[int]] = None, title: str = "") -> List[str]:
    """Mean weight of each op over all edges, per epoch, for both cell types.

    A rising ``skip_connect`` line is the classic sign of collapse.

    Args:
        normal: ``(E, edges, K)`` softmaxed normal-cell weights.
        reduce: Same for the reduction cell.
        primitives: ``(K,)`` op names.
        path_stem: Output path without extension.
        epochs: ``(E,)`` epoch numbers; default ``1..E``.
        title: Figure title.

    Returns:
        ``[<stem>.png, <stem>.svg]``.
    """
    cells = {"normal": _as_probs(_as_epochs(normal)), "reduce": _as_probs(_as_epochs(reduce))}
    x = list(epochs) if epochs is not None else list(range(1, cells["normal"].shape[0] + 1))
    colors = _op_colors(primitives)
    fig = _new_figure(11, 3.6)
    axes = fig.subplots(1, 2, squeeze=False)[0]
    for ax, (cell, p) in zip(axes, cells.items()):
        means = p.mean(axis=1)
        for k, op in enumerate(primitives):
            ax.plot(x, means[:, k], marker="." if len(x) < 30 else None, color=colors[op],
                    lw=2.4 if op == SKIP else 1.4, label=op)
        ax.axhline(1.0 / len(primitives), color="0.5", lw=0.8, ls=":")
        ax.set_title(f"{cell} cell: mean op weight", fontsize=10)
        _epoch_axis(ax)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    if title:
        fig.suptitle(title)
    return save_figure(fig, path_stem)


def _epoch_axis(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows], dtype=float)


def plot_predictions(true: np.ndarray, pred: np.ndarray, names: Sequence[str],
                     path_stem: str) -> List[str]:
    """Predicted against true (with the identity line) and residual histograms.

    Args:
        true: ``(N, K)`` true targets in target units.
        pred: ``(N, K)`` predictions in target units.
        names: ``(K,)`` target names.
        path_stem: Output path without extension.

    Returns:
        ``[<stem>.png, <stem>.svg]``.
    """
    k = true.shape[1]
    fig = _new_figure(8, 3.6 * k)
    axes = fig.subplots(k, 2, squeeze=False)
    for (scatter, hist), j, name in zip(axes, range(k), names):
        lo, hi = float(min(true[:, j].min(), pred[:, j].min())), float(max(true[:, j].max(), pred[:, j].max()))
        scatter.scatter(true[:, j], pred[:, j], s=6, alpha=0.5)
        scatter.plot([lo, hi], [lo, hi], "k--", lw=1)
        scatter.set(xlabel=f"true {name}", ylabel=f"predicted {name}", title=f"{name}: test split")
        hist.hist(pred[:, j] - true[:, j], bins=40)
        hist.set(xlabel=f"residual (predicted - true) {name}", ylabel="examples")
    return save_figure(fig, path_stem)


def plot_learning_curves(search_history: Optional[Mapping[str, Any]],
                         retrain_history: Optional[Mapping[str, Any]],
                         path_stem: str) -> List[str]:
    """Loss, metric and learning rate per epoch; one row per phase present.

    Args:
        search_history: Search ``history.json`` content (train_* and val_* per epoch) or None.
        retrain_history: Retrain ``history.json`` content (train_* and test_*) or None.
        path_stem: Output path without extension.

    Returns:
        ``[<stem>.png, <stem>.svg]``, or ``[]`` when neither history has epochs.
    """
    phases = [(name, h) for name, h in (("search", search_history), ("retrain", retrain_history))
              if h and h.get("epochs")]
    if not phases:
        return []
    fig = _new_figure(13, 3.3 * len(phases))
    axes = fig.subplots(len(phases), 3, squeeze=False)
    for row, (name, hist) in zip(axes, phases):
        rows = [r for r in hist["epochs"] if isinstance(r, Mapping)]
        x = _series(rows, "epoch")
        metric = str(hist.get("metric") or "metric")
        held_out = "val" if name == "search" else "test"
        for ax, what in zip(row[:2], ("loss", "metric")):
            for split in ("train", held_out):
                y = _series(rows, f"{split}_{what}")
                if np.isfinite(y).any():
                    ax.plot(x, y, marker="." if len(x) < 30 else None, label=split)
            ax.set_title(f"{name}: {'loss' if what == 'loss' else metric}", fontsize=10)
            if ax.lines:
                ax.legend(fontsize=8)
        lr = _series(rows, "lr")
        if np.isfinite(lr).any():
            row[2].plot(x, lr, color="tab:gray")
        row[2].set_title(f"{name}: learning rate", fontsize=10)
        for ax in row:
            _epoch_axis(ax)
    return save_figure(fig, path_stem)


# --- results tables ----------------------------------------------------------------------

BASE_COLUMNS: Tuple[str, ...] = ("model", "params", "search_seconds", "train_seconds")
TAIL_COLUMNS: Tuple[str, ...] = ("seed", "dataset")
METRIC_ORDER: Tuple[str, ...] = ("accuracy", "top5", "r2", "rmse", "mae")


def results_table(records: Sequence[Mapping[str, Any]]) -> Any:
    """One row per result record.

    Args:
        records: Dicts ``{"model", "params", "search_seconds", "train_seconds",
            "metrics": {name: value}, "seed", "dataset", ...}``.

    Returns:
        pandas DataFrame with columns ``model, params, search_seconds, train_seconds``, one
        column per metric name found in any record (known metrics first, missing values
        NaN), ``seed, dataset``, then any other scalar keys of the records, in input order.
    """
    import pandas as pd

    metric_names: List[str] = []
    extras: List[str] = []
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping) or "model" not in rec:
            raise ValueError(f"result record {i} has no 'model': {rec!r}")
        for name in (rec.get("metrics") or {}):
            if name not in metric_names:
                metric_names.append(name)
        for key, value in rec.items():
            if (key not in BASE_COLUMNS + TAIL_COLUMNS + ("metrics",) and key not in extras
                    and (value is None or isinstance(value, (str, int, float, bool)))):
                extras.append(key)
    metric_names.sort(key=lambda m: METRIC_ORDER.index(m) if m in METRIC_ORDER else len(METRIC_ORDER))
    extras = [k for k in extras if k not in metric_names]
    columns = list(BASE_COLUMNS) + metric_names + list(TAIL_COLUMNS) + extras
    rows = []
    for rec in records:
        metrics = rec.get("metrics") or {}
        rows.append({c: (metrics.get(c) if c in metric_names else rec.get(c)) for c in columns})
    df = pd.DataFrame(rows, columns=columns)
    for col in ("params", "seed"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    for col in ("search_seconds", "train_seconds", *metric_names):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    return df


def format_value(value: Any) -> str:
    """Table text of one value: blank for None/NaN/NA, 4 significant digits for floats
    below 100, one decimal from 100 up, ints and strings as they are."""
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return ""
    if type(value).__name__ == "NAType":  # pandas.NA
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.4g}"
    return str(value)


def to_markdown(df: Any) -> str:
    """GitHub-flavoured Markdown table of a DataFrame (no tabulate needed).

    Floats show 4 significant digits (1 decimal from 100 up); missing values are blank.
    """
    def cell(value: Any) -> str:
        return format_value(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |"
            for row in df.itertuples(index=False, name=None)]
    return "\n".join([header, rule, *body]) + "\n"


def save_table(df: Any, folder: str, name: str = "results") -> Tuple[str, str]:
    """Writes `df` atomically as ``<folder>/<name>.csv`` and ``<folder>/<name>.md``.

    Returns:
        ``(csv_path, md_path)``.
    """
    csv_path = os.path.join(folder, f"{name}.csv")
    md_path = os.path.join(folder, f"{name}.md")
    with atomic_open(csv_path) as f:
        df.to_csv(f, index=False)
    with atomic_open(md_path) as f:
        f.write(to_markdown(df))
    return csv_path, md_path


# --- comparing runs ----------------------------------------------------------------------


def find_search_dir(run_dir: str) -> str:
    """The search folder of a run: `run_dir` itself when it holds ``alphas.npz``, else
    ``<run_dir>/search``."""
    for folder in (run_dir, os.path.join(run_dir, "search")):
        if os.path.exists(os.path.join(folder, contract.ALPHAS_FILE)):
            return folder
    raise FileNotFoundError(f"no alphas.npz in {run_dir} or {os.path.join(run_dir, 'search')}")


def _darts_results(run_dir: str, search_dir: str) -> Dict[str, Any]:
    """Metric columns of the ``darts`` row (else the first row) of a run's results.csv."""
    import pandas as pd

    for folder in dict.fromkeys([run_dir, os.path.dirname(os.path.abspath(search_dir))]):
        path = os.path.join(folder, contract.RESULTS_CSV)
        if not os.path.exists(path):
            continue
        df = pd.read_csv(path)
        if df.empty:
            return {}
        rows = df[df["model"] == "darts"] if "model" in df else df
        row = (rows if not rows.empty else df).iloc[0]
        skip = set(BASE_COLUMNS + TAIL_COLUMNS)
        return {f"darts_{c}": row[c] for c in df.columns
                if c not in skip and pd.api.types.is_numeric_dtype(df[c])}
    return {}


def compare_runs(run_dirs: Sequence[str]) -> Any:
    """One row per run and cell type, for comparing seeds or datasets.

    Args:
        run_dirs: Run folders, each a search folder (with ``alphas.npz``) or a folder
            with a ``search/`` subfolder. An optional ``results.csv`` (from `save_table`)
            in the run folder adds ``darts_<metric>`` columns from its ``darts`` row.

    Returns:
        pandas DataFrame with columns ``run, dataset, cell, epochs, entropy_ratio,
        skip_count, param_free_share, margin_mean, warnings, genotype`` (+ result
        columns). Statistics are of the last finite snapshot; ``warnings`` counts the
        `diagnose` warnings about that cell type.
    """
    import pandas as pd

    rows = []
    for run_dir in run_dirs:
        search_dir = find_search_dir(run_dir)
        run = load_search(search_dir)
        ok = finite_epochs(run.normal, run.reduce)
        warnings = diagnose(run.normal, run.reduce, run.primitives, run.nodes, run.genotype)
        results = _darts_results(run_dir, search_dir)
        for cell in CELL_TYPES:
            probs = getattr(run, cell)[:ok]
            stats = cell_stats(probs[-1], run.primitives, run.nodes) if ok else {}
            rows.append({
                "run": run_name(run_dir), "dataset": run.dataset, "cell": cell, "epochs": ok,
                "entropy_ratio": stats.get("entropy_ratio", np.nan),
                "skip_count": stats.get("skip_count", pd.NA),
                "param_free_share": stats.get("param_free_share", np.nan),
                "margin_mean": stats.get("margin_mean", np.nan),
                "warnings": sum(w.startswith(cell + " cell") for w in warnings),
                "genotype": format_gene(stats["gene"]) if stats else "",
                **results})
    return pd.DataFrame(rows)


__all__ = [
    "SKIP", "COLLAPSE_SKIP_SHARE", "COLLAPSE_TOP_EDGE_SHARE",
    "COLLAPSE_TREND_EPOCHS", "COLLAPSE_MIN_RISE", "PARAM_FREE_WARN_SHARE",
    "UNIFORM_ENTROPY_RTOL", "UNIFORM_MAX_WEIGHT_RTOL", "PROB_SUM_ATOL", "MAX_PANELS",
    "SearchRun", "load_search", "load_alphas", "read_history", "run_name",
    "edge_entropy", "uniform_entropy", "op_margins", "strongest_ops", "cell_gene", "cell_stats",
    "epoch_stats", "finite_epochs", "noise_margin", "choice_confidence", "NOISE_MARGIN_FRACTION", "diagnose", "diagnose_cell", "format_gene", "edge_labels",
    "source_label", "plot_cell", "cell_dot_source", "plot_alpha_heatmap", "plot_alpha_evolution",
    "plot_op_trends", "plot_learning_curves", "select_epochs", "save_figure", "results_table",
    "format_value", "to_markdown", "save_table", "compare_runs", "find_search_dir",
]
