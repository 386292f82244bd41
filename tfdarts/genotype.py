"""Genotypes: the discrete cells a search produces (no TensorFlow here).

A genotype lists, for each intermediate node of a normal and a reduction cell,
its two incoming edges as ``(op_name, input_index)`` pairs. Inputs 0 and 1 are
the outputs of the two previous cells; input ``j >= 2`` is intermediate node
``j - 2``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Mapping, Sequence, Tuple

import numpy as np

from tfdarts import space
from tfdarts.space import NONE, PRIMITIVES, SKIP

__all__ = ["NONE", "PRIMITIVES", "Gene", "GenotypeError", "Genotype", "num_edges", "edge_index",
           "parse_alphas", "DARTS_V1", "DARTS_V2", "PUBLISHED", "resolve"]

Gene = Tuple[Tuple[str, int], ...]


class GenotypeError(ValueError):
    """A genotype (or its JSON) is malformed."""


def num_edges(nodes: int) -> int:
    """Number of mixed edges in a cell with `nodes` intermediate nodes (14 for 4)."""
    return sum(i + 2 for i in range(nodes))


def edge_index(node: int, source: int) -> int:
    """Row of the alpha matrix for the edge `source -> node` (node 0-based)."""
    return sum(i + 2 for i in range(node)) + source


def _check_gene(gene: Gene, concat: Tuple[int, ...], cell: str, known: Sequence[str]) -> int:
    if len(gene) == 0 or len(gene) % 2:
        raise GenotypeError(f"{cell}: expected 2 edges per node, got {len(gene)} entries")
    nodes = len(gene) // 2
    for pos, entry in enumerate(gene):
        if len(entry) != 2:
            raise GenotypeError(f"{cell}[{pos}]: expected (op, input), got {entry!r}")
        op, src = entry
        if op == NONE or op not in known:
            raise GenotypeError(
                f"{cell}[{pos}]: unknown op {op!r}; known ops: {', '.join(k for k in known if k != NONE)}")
        node = pos // 2
        if isinstance(src, bool) or not isinstance(src, (int, np.integer)) or not 0 <= src < node + 2:
            raise GenotypeError(
                f"{cell}[{pos}]: input index {src!r} out of range for node {node} "
                f"(allowed 0..{node + 1})")
    for c in concat:
        if not 2 <= c < nodes + 2:
            raise GenotypeError(f"{cell}_concat: index {c} out of range 2..{nodes + 1}")
    if len(set(concat)) != len(concat) or not concat:
        raise GenotypeError(f"{cell}_concat: must be non-empty and unique, got {list(concat)}")
    return nodes


def _as_gene(value: Any) -> Gene:
    try:
        return tuple((str(op), src) for op, src in value)
    except (TypeError, ValueError) as err:
        raise GenotypeError(f"cannot read edges from {value!r}: {err}") from None


@dataclasses.dataclass(frozen=True)
class Genotype:
    """A discrete DARTS architecture, validated on construction.

    Attributes:
        normal: ``(op, input)`` pairs, two per intermediate node, normal cell.
        normal_concat: Node indices (>= 2) concatenated into the cell output.
        reduce: Same for the reduction cell.
        reduce_concat: Same for the reduction cell.
    """

    normal: Gene
    normal_concat: Tuple[int, ...]
    reduce: Gene
    reduce_concat: Tuple[int, ...]

    def __post_init__(self) -> None:
        for field in ("normal", "reduce"):
            object.__setattr__(self, field, _as_gene(getattr(self, field)))
            concat = tuple(int(c) for c in getattr(self, field + "_concat"))
            object.__setattr__(self, field + "_concat", concat)
        known = space.known_ops()
        n = _check_gene(self.normal, self.normal_concat, "normal", known)
        r = _check_gene(self.reduce, self.reduce_concat, "reduce", known)
        if n != r:
            raise GenotypeError(f"normal cell has {n} nodes but reduction cell has {r}")

    @property
    def nodes(self) -> int:
        """Number of intermediate nodes per cell."""
        return len(self.normal) // 2

    def to_dict(self) -> Dict[str, Any]:
        """Plain-JSON form: lists of ``[op, input]`` pairs."""
        return {
            "normal": [list(e) for e in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [list(e) for e in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    def to_json(self) -> str:
        """JSON text of `to_dict()`."""
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Genotype":
        """Builds a genotype from `to_dict()` output, validating it."""
        if not isinstance(data, Mapping):
            raise GenotypeError(f"genotype must be a JSON object, got {type(data).__name__}")
        keys = ("normal", "normal_concat", "reduce", "reduce_concat")
        missing = [k for k in keys if k not in data]
        if missing:
            raise GenotypeError(f"genotype is missing keys {missing}")
        return cls(**{k: data[k] for k in keys})

    @classmethod
    def from_json(cls, text: str) -> "Genotype":
        """Parses JSON text written by `to_json()`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise GenotypeError(f"genotype is not valid JSON: {err}") from None
        if isinstance(data, Mapping) and "genotype" in data:
            data = data["genotype"]
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str) -> "Genotype":
        """Reads a genotype JSON file; errors name the file."""
        try:
            with open(path, encoding="utf-8") as f:
                return cls.from_json(f.read())
        except GenotypeError as err:
            raise GenotypeError(f"{path}: {err}") from None
        except OSError as err:
            raise GenotypeError(f"cannot read genotype file {path}: {err.strerror}") from None


def _parse_cell(probs: np.ndarray, primitives: Sequence[str], nodes: int) -> Gene:
    none_idx = [k for k, p in enumerate(primitives) if p == NONE]
    keep = np.ones(len(primitives), dtype=bool)
    keep[none_idx] = False
    gene = []
    for node in range(nodes):
        rows = probs[edge_index(node, 0):edge_index(node, 0) + node + 2]
        masked = np.where(keep, rows, -np.inf)
        strength = masked.max(axis=1)
        # stable sort: on ties the earlier input wins, as in the reference
        best_edges = sorted(range(node + 2), key=lambda j: -strength[j])[:2]
        for j in best_edges:
            gene.append((primitives[int(np.argmax(masked[j]))], j))
    return tuple(gene)


def parse_alphas(normal: Any, reduce: Any, primitives: Sequence[str] = PRIMITIVES,
                 nodes: int = 4, *, edge_normal: Any = None, edge_reduce: Any = None,
                 max_skips: int = -1) -> Genotype:
    """Derives the genotype from architecture weights.

    For each intermediate node keeps the 2 incoming edges whose strongest
    non-``none`` op weight is largest, and on each the strongest non-``none`` op.
    With edge-normalisation weights (PC-DARTS) every op weight of an edge is
    first multiplied by its edge's weight. With ``max_skips >= 0`` (P-DARTS) the
    normal cell keeps at most that many ``skip_connect`` edges: while it has
    more, the weakest chosen skip is excluded on its edge and the cell derived
    again.

    Args:
        normal: Array-like ``[edges, len(primitives)]`` (softmaxed or raw alphas).
        reduce: Same for the reduction cell.
        primitives: Op name of each column.
        nodes: Intermediate nodes per cell.
        edge_normal: Optional ``[edges]`` edge weights of the normal cell.
        edge_reduce: Optional ``[edges]`` edge weights of the reduction cell.
        max_skips: Most ``skip_connect`` edges in the normal cell (-1 = no limit).

    Returns:
        The derived `Genotype`.
    """
    primitives = tuple(primitives)
    if all(p == NONE for p in primitives):
        raise GenotypeError("primitives must contain at least one op other than 'none'")
    normal = _cell_weights("normal", normal, edge_normal, primitives, nodes)
    reduce = _cell_weights("reduce", reduce, edge_reduce, primitives, nodes)
    concat = tuple(range(2, nodes + 2))
    return Genotype(_limit_skips(normal, primitives, nodes, max_skips), concat,
                    _parse_cell(reduce, primitives, nodes), concat)


def _cell_weights(cell: str, probs: Any, edges: Any, primitives: Sequence[str], nodes: int) -> np.ndarray:
    arr = np.asarray(probs, dtype=np.float64)
    expected = (num_edges(nodes), len(primitives))
    if arr.shape != expected:
        raise GenotypeError(f"{cell} alphas have shape {arr.shape}, expected {expected}")
    if edges is None:
        return arr
    edges = np.asarray(edges, dtype=np.float64)
    if edges.shape != expected[:1]:
        raise GenotypeError(f"{cell} edge weights have shape {edges.shape}, expected {expected[:1]}")
    return arr * edges[:, None]


def _limit_skips(probs: np.ndarray, primitives: Sequence[str], nodes: int, max_skips: int) -> Gene:
    gene = _parse_cell(probs, primitives, nodes)
    if max_skips < 0 or SKIP not in primitives:
        return gene
    probs, skip = probs.copy(), primitives.index(SKIP)
    others = np.array([p not in (NONE, SKIP) for p in primitives])
    while sum(op == SKIP for op, _ in gene) > max_skips:
        chosen = [_row(pos, src) for pos, (op, src) in enumerate(gene)
                  if op == SKIP and np.isfinite(probs[_row(pos, src), others]).any()]
        if not chosen:  # no other op left to put in a skip's place
            break
        weakest = min(chosen, key=lambda row: probs[row, skip])
        probs[weakest, skip] = -np.inf
        gene = _parse_cell(probs, primitives, nodes)
    return gene


def _row(position: int, source: int) -> int:
    """Alpha row of the edge at `position` of a gene (node ``position // 2``)."""
    return edge_index(position // 2, source)


DARTS_V1 = Genotype(
    normal=(("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)),
    normal_concat=(2, 3, 4, 5),
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)),
    reduce_concat=(2, 3, 4, 5),
)

DARTS_V2 = Genotype(
    normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)),
    normal_concat=(2, 3, 4, 5),
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)),
    reduce_concat=(2, 3, 4, 5),
)

PUBLISHED: Dict[str, Genotype] = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2}


def resolve(spec: str) -> Tuple[Genotype, str]:
    """A genotype by published name (``DARTS_V1``, ``DARTS_V2``) or JSON file path.

    Returns:
        ``(genotype, origin)``: origin is the name, or the file's absolute path.

    Raises:
        GenotypeError: Neither a known name nor a readable, valid genotype file.
    """
    if spec in PUBLISHED:
        return PUBLISHED[spec], spec
    if not os.path.exists(spec):
        raise GenotypeError(f"genotype {spec!r} is neither a published cell "
                            f"({', '.join(PUBLISHED)}) nor an existing JSON file")
    return Genotype.load(spec), os.path.abspath(spec)
