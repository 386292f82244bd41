"""The search space: which ops exist, what each is, and where cells reduce (no TensorFlow).

This is the single list of op names. `tfdarts.ops.register_op` adds an op here
and its layer factory to `tfdarts.ops.OPS` in one call, so the genotype, the
config validation, the random sampler and the analysis colours accept it
without editing a second list. The eight ops of the DARTS paper are declared
below; their layers are registered by `tfdarts.ops`.
"""

from __future__ import annotations

import dataclasses
from typing import List, Sequence, Tuple

from tfdarts.registry import Registry

NONE = "none"
SKIP = "skip_connect"


@dataclasses.dataclass(frozen=True)
class OpInfo:
    """What the rest of the library needs to know about an op besides its layer.

    Attributes:
        name: Op name as it appears in genotypes and configs.
        parameter_free: The op has no trainable weights (pools, skip, none).
        search_bn: The supernet follows it with a non-affine batch norm
            (the paper does this for pools).
        colour: Matplotlib colour for figures; "" picks one from a palette.
    """

    name: str
    parameter_free: bool = False
    search_bn: bool = False
    colour: str = ""


OP_INFO: Registry[OpInfo] = Registry("op")
"""Every op name the search space knows, with its `OpInfo`."""

_PAPER_OPS = (
    OpInfo(NONE, parameter_free=True, colour="#7f7f7f"),
    OpInfo("max_pool_3x3", parameter_free=True, search_bn=True, colour="#1f77b4"),
    OpInfo("avg_pool_3x3", parameter_free=True, search_bn=True, colour="#ff7f0e"),
    OpInfo(SKIP, parameter_free=True, colour="#2ca02c"),
    OpInfo("sep_conv_3x3", colour="#d62728"),
    OpInfo("sep_conv_5x5", colour="#9467bd"),
    OpInfo("dil_conv_3x3", colour="#8c564b"),
    OpInfo("dil_conv_5x5", colour="#e377c2"),
)
for _info in _PAPER_OPS:
    OP_INFO.register(_info.name)(_info)

PRIMITIVES: Tuple[str, ...] = tuple(info.name for info in _PAPER_OPS)
"""The paper's 8 candidate ops in its column order: the default search space."""

_PALETTE = ("#17becf", "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")


def known_ops() -> Tuple[str, ...]:
    """Every declared op name: the paper's in column order, then later ones."""
    extra = [n for n in OP_INFO.names() if n not in PRIMITIVES]
    return PRIMITIVES + tuple(extra)


def info(name: str) -> OpInfo:
    """The `OpInfo` of `name` (KeyError listing the known ops otherwise)."""
    return OP_INFO.get(name)


def is_parameter_free(name: str) -> bool:
    """True for ops without weights (unknown names count as having weights)."""
    return name in OP_INFO and OP_INFO.get(name).parameter_free


def parameter_free_ops() -> Tuple[str, ...]:
    """Parameter-free ops that a genotype can contain (``none`` never is)."""
    return tuple(n for n in known_ops() if is_parameter_free(n) and n != NONE)


def colour(name: str) -> str:
    """A stable figure colour for `name` (declared, or from a palette by position)."""
    if name in OP_INFO and OP_INFO.get(name).colour:
        return OP_INFO.get(name).colour
    names = known_ops()
    index = names.index(name) if name in names else sum(map(ord, name))
    return _PALETTE[index % len(_PALETTE)]


def unknown_ops(names: Sequence[str]) -> List[str]:
    """The entries of `names` that are not declared ops."""
    return [n for n in names if n not in OP_INFO]


def check_primitives(primitives: Sequence[str]) -> Tuple[str, ...]:
    """Validates a candidate-op list; returns it as a tuple.

    Raises:
        ValueError: Unknown or duplicate names, or nothing besides ``none``.
    """
    primitives = tuple(primitives)
    unknown = unknown_ops(primitives)
    if unknown:
        raise ValueError(f"unknown ops {unknown}; known ops: {', '.join(known_ops())}")
    if len(set(primitives)) != len(primitives):
        raise ValueError(f"duplicate ops in {list(primitives)}")
    if all(p == NONE for p in primitives):
        raise ValueError("the candidate ops need at least one op other than 'none'")
    return primitives


# --- macro structure -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CellPlacement:
    """Where one cell sits in a cell-based network.

    Attributes:
        index: Position of the cell (0-based).
        channels: Channels C of its nodes (doubled at every reduction so far).
        reduction: It halves the spatial size.
        reduction_prev: The cell before it halved the size.
    """

    index: int
    channels: int
    reduction: bool
    reduction_prev: bool


def reduction_layers(cells: int) -> Tuple[int, ...]:
    """Indices of the reduction cells: at 1/3 and 2/3 of the depth."""
    return tuple(sorted({cells // 3, 2 * cells // 3})) if cells >= 3 else ()


def cell_placements(cells: int, channels: int) -> List[CellPlacement]:
    """Channels and reduction flags of every cell, shared by supernet and network.

    Args:
        cells: Number of cells.
        channels: Initial channels C.
    """
    reductions = reduction_layers(cells)
    out, reduction_prev = [], False
    for i in range(cells):
        reduction = i in reductions
        channels *= 2 if reduction else 1
        out.append(CellPlacement(i, channels, reduction, reduction_prev))
        reduction_prev = reduction
    return out
