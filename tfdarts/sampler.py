"""Uniformly random architectures of the search space (no TensorFlow).

The random-search baseline draws its candidates here; any op declared in
`tfdarts.space` (the paper's or one added with `tfdarts.ops.register_op`) can be
drawn when it is among the candidate ops.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from tfdarts import space
from tfdarts.genotype import NONE, PRIMITIVES, Gene, Genotype

__all__ = ["random_genotype", "random_genotypes"]


def _random_cell(rng: np.random.Generator, choices: Sequence[str], nodes: int) -> Gene:
    """Two distinct inputs per node (ascending), each with a uniform op."""
    gene = []
    for node in range(nodes):
        inputs = np.sort(rng.choice(node + 2, size=2, replace=False))
        for src in inputs:
            gene.append((choices[int(rng.integers(len(choices)))], int(src)))
    return tuple(gene)


def _op_choices(primitives: Sequence[str]) -> Tuple[str, ...]:
    return tuple(p for p in space.check_primitives(primitives) if p != NONE)


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
