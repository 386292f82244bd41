"""Study runs that retrain given cells: transfer between datasets, random cells on two
datasets, and depth.

Optional sections of a study file (see `pipeline.study`)::

    transfer:
      between: [fashion_mnist, kirigami_random]  # two dataset keys of the grid
      method: default        # the search method whose cells travel (default: the first)
      random_cells: 5        # random genotypes, one fixed sample, retrained on both
    depth:
      dataset: kirigami_random
      method: default
      cells: [5, 12]         # retrain.cells values besides the grid's own

Each run is ``python -m pipeline.run --genotype FILE`` with the grid's overrides and the
seed's, into ``<output_dir>/<dataset key>-given``, so every cell is retrained with the
same settings as the grid's methods (depth runs change only ``retrain.cells``). They run
after the grid (they need its searched cells) and leave records like the grid's:

* ``from_<source key>``: the cell searched on the other dataset with the same seed;
* ``random_cell_<i>``: the i-th random cell, retrained with the first seed;
* ``depth_<cells>``: the dataset's own searched cell at that depth.

The genotype files the runs read are kept in ``<results_dir>/genotypes/``.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from typing import Any, Dict, List, Optional, Sequence, Tuple

from pipeline import study
from tfdarts import fileio

RANDOM_CELLS_SEED = 0
"""Seed of the random cells' sample: the same cells on every dataset and study."""


@dataclasses.dataclass(frozen=True)
class Transfer:
    """Cells searched on one dataset retrained on the other, both ways."""

    between: Tuple[str, str]
    method: str
    random_cells: int = 0


@dataclasses.dataclass(frozen=True)
class Depth:
    """A dataset's searched cell retrained at other depths."""

    dataset: str
    method: str
    cells: Tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class GivenCell:
    """One run of a given genotype: the record it writes and what it retrains."""

    dataset: study.DatasetEntry
    seed: int
    method: str
    kind: str
    genotype: Dict[str, Any]
    overrides: Tuple[str, ...] = ()


def _int(value: Any, where: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise study.StudyError(f"{where} must be an integer in [{low}, {high}]")
    return value


def _keys(spec: study.StudySpec) -> List[str]:
    return [d.key for d in spec.datasets]


def _method(raw: Dict[str, Any], spec: study.StudySpec, where: str) -> str:
    method = str(raw.get("method", spec.search_methods[0][0]))
    if method not in dict(spec.search_methods):
        raise study.StudyError(f"{where}.method: {method!r} is not a search method of the study "
                               f"({', '.join(m for m, _ in spec.search_methods)})")
    return method


def _mapping(raw: Any, where: str, keys: Sequence[str]) -> Dict[str, Any]:
    if not isinstance(raw, dict):
        raise study.StudyError(f"{where} must be a mapping of {', '.join(keys)}")
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise study.StudyError(f"unknown {where} key(s) {', '.join(unknown)}; known: {', '.join(keys)}")
    return raw


def parse_transfer(raw: Any, spec: study.StudySpec) -> Optional[Transfer]:
    """The ``transfer`` section (None when absent).

    Raises:
        StudyError: A bad value, named.
    """
    if raw is None:
        return None
    raw = _mapping(raw, "transfer", ("between", "method", "random_cells"))
    between = raw.get("between")
    if (not isinstance(between, list) or len(between) != 2 or len(set(between)) != 2
            or not set(between) <= set(_keys(spec))):
        raise study.StudyError(f"transfer.between must name two different datasets of the study "
                               f"({', '.join(_keys(spec))})")
    return Transfer(tuple(between), _method(raw, spec, "transfer"),
                    _int(raw.get("random_cells", 0), "transfer.random_cells", 0, 50))


def parse_depth(raw: Any, spec: study.StudySpec) -> Optional[Depth]:
    """The ``depth`` section (None when absent).

    Raises:
        StudyError: A bad value, named.
    """
    if raw is None:
        return None
    raw = _mapping(raw, "depth", ("dataset", "method", "cells"))
    if raw.get("dataset") not in _keys(spec):
        raise study.StudyError(f"depth.dataset must be a dataset of the study ({', '.join(_keys(spec))})")
    cells = raw.get("cells")
    if not isinstance(cells, list) or not cells:
        raise study.StudyError("depth.cells must be a non-empty list of integers >= 1")
    return Depth(str(raw["dataset"]), _method(raw, spec, "depth"),
                 tuple(_int(c, "depth.cells", 1, 64) for c in cells))


# ----------------------------------------------------------------------------- planning


def _entry(spec: study.StudySpec, key: str) -> study.DatasetEntry:
    return next(d for d in spec.datasets if d.key == key)


def _searched(results_dir: str, dataset: str, seed: int, method: str) -> Optional[Dict[str, Any]]:
    """The genotype a finished grid run of `method` found, or None."""
    path = study.record_path(results_dir, dataset, seed, method)
    return fileio.read_json(path)["genotype"] if os.path.exists(path) else None


def transfer_cells(spec: study.StudySpec, results_dir: str) -> List[GivenCell]:
    """Every ``from_<source>`` run whose source cell has been searched."""
    t = spec.transfer
    out = []
    for source, target in (t.between, t.between[::-1]):
        for seed in spec.seeds:
            genotype = _searched(results_dir, source, seed, t.method)
            if genotype:
                out.append(GivenCell(_entry(spec, target), seed, f"from_{source}", "transfer", genotype))
    return out


def random_cells(spec: study.StudySpec, config: Any) -> List[GivenCell]:
    """The fixed sample of random cells, on both datasets of the transfer, first seed.

    Args:
        config: A `Config` of the study (its search space: primitives and nodes).
    """
    from tfdarts import sampler

    t = spec.transfer
    genotypes = sampler.random_genotypes(t.random_cells, RANDOM_CELLS_SEED, config.search.primitives,
                                         config.search.nodes)
    return [GivenCell(_entry(spec, key), spec.seeds[0], f"random_cell_{i}", "random_cell", g.to_dict())
            for key in t.between for i, g in enumerate(genotypes)]


def depth_cells(spec: study.StudySpec, results_dir: str) -> List[GivenCell]:
    """Every ``depth_<cells>`` run whose searched cell exists."""
    d = spec.depth
    out = []
    for seed in spec.seeds:
        genotype = _searched(results_dir, d.dataset, seed, d.method)
        for cells in d.cells if genotype else ():
            out.append(GivenCell(_entry(spec, d.dataset), seed, f"depth_{cells}", "depth", genotype,
                                 (f"retrain.cells={cells}",)))
    return out


def _study_config(spec: study.StudySpec) -> Any:
    from pipeline import cli

    entry = spec.datasets[0]
    return cli.build_config(entry.dataset, spec.preset, (), [*spec.overrides, *entry.overrides])


def planned(spec: study.StudySpec, results_dir: str) -> List[GivenCell]:
    """Every run of the optional sections that can run now (finished ones included)."""
    cells: List[GivenCell] = []
    if spec.transfer:
        cells += transfer_cells(spec, results_dir)
        if spec.transfer.random_cells:
            cells += random_cells(spec, _study_config(spec))
    if spec.depth:
        cells += depth_cells(spec, results_dir)
    return cells


# ----------------------------------------------------------------------------- running


def genotype_file(results_dir: str, cell: GivenCell) -> str:
    """Where the run's genotype is kept (a small file next to the records)."""
    name = f"{cell.dataset.key}-s{cell.seed}-{cell.method}.json"
    return os.path.join(results_dir, "genotypes", name)


def run_command(spec: study.StudySpec, cell: GivenCell, output_dir: str, genotype: str) -> List[str]:
    """The ``python -m pipeline.run --genotype`` argv of a given cell."""
    grid = study.Cell(cell.dataset, cell.seed, cell.method, cell.overrides)
    argv = study.run_command(spec, grid, output_dir)
    at = argv.index("--run_name") + 1
    argv[at] = f"{cell.dataset.key}-given"
    return argv + ["--genotype", genotype]


def given_record(cell: GivenCell, run_dir: str) -> Dict[str, Any]:
    """The record of a given cell's run: its evaluation and the genotype retrained."""
    from tfdarts import contract

    outputs = study.run_outputs(run_dir)
    result = fileio.read_json(os.path.join(outputs["evaluation"]["uri"], contract.METRICS_FILE))
    base = {"dataset": cell.dataset.key, "seed": cell.seed, "method": cell.method, "kind": cell.kind,
            "genotype": cell.genotype}
    return study.make_record(base, result, run_dir)


def run_cells(spec: study.StudySpec, output_dir: str, results_dir: str,
              command: Optional[Sequence[str]] = None) -> None:
    """Runs every planned given cell without a record, rewriting the results after each."""
    output_dir, results_dir = os.path.abspath(output_dir), os.path.abspath(results_dir)
    for cell in planned(spec, results_dir):
        path = study.record_path(results_dir, cell.dataset.key, cell.seed, cell.method)
        if os.path.exists(path):
            continue
        genotype = genotype_file(results_dir, cell)
        fileio.write_json(genotype, cell.genotype)
        study.say(f"study: {cell.dataset.key} seed {cell.seed}: {cell.method}")
        log_path = os.path.join(output_dir, "logs", f"{cell.dataset.key}-s{cell.seed}-{cell.method}.log")
        study.run_pipeline(run_command(spec, cell, output_dir, genotype), log_path)
        record = given_record(cell, os.path.join(output_dir, f"{cell.dataset.key}-given"))
        shown = os.path.relpath(genotype, os.path.dirname(results_dir))
        record["command"] = "python " + shlex.join(run_command(spec, cell, "OUTPUT_DIR", shown))
        fileio.write_json(path, record)
        study.write_results(spec, results_dir, command)


# ----------------------------------------------------------------------------- tables


def collect(spec: study.StudySpec, results_dir: str) -> List[Dict[str, Any]]:
    """The records of the optional sections that exist, in plan order."""
    found = []
    for key in _keys(spec):
        folder = os.path.join(results_dir, "records", key)
        for seed in sorted(os.listdir(folder), key=int) if os.path.isdir(folder) else ():
            for name in sorted(os.listdir(os.path.join(folder, seed))):
                record = fileio.read_json(os.path.join(folder, seed, name))
                if record.get("kind") in ("transfer", "random_cell", "depth"):
                    found.append(record)
    return found


def _rows(records: Sequence[Dict[str, Any]], dataset: str, method: str) -> List[Dict[str, Any]]:
    return [r for r in records if r["dataset"] == dataset and r["method"] == method]


def _row(records: Sequence[Dict[str, Any]], dataset: str, method: str, label: str) -> str:
    runs = _rows(records, dataset, method)
    if not runs:
        return f"| {dataset} | {label} | 0 | - | - | - |"
    value = study.mean_sd([r["value"] for r in runs])
    params = study.mean_sd([r["params"] for r in runs], "{:,.0f}")
    cpu = study.mean_sd([r.get("train_cpu_seconds") for r in runs], "{:.0f}")
    return f"| {dataset} | {label} | {len(runs)} | {runs[0]['metric']} {value} | {params} | {cpu} |"


HEADER = ["| dataset | cell | runs | test metric | params | retrain CPU s |", "|---|---|---|---|---|---|"]


def transfer_table(spec: study.StudySpec, grid: Sequence[Dict[str, Any]],
                   extra: Sequence[Dict[str, Any]]) -> str:
    """Markdown: on each dataset, its own searched cell, the other's, random and DARTS_V2."""
    t = spec.transfer
    records = [*grid, *extra]
    lines = list(HEADER)
    for source, target in (t.between[::-1], t.between):
        lines.append(_row(records, target, t.method, f"searched here ({t.method})"))
        lines.append(_row(records, target, f"from_{source}", f"searched on {source}"))
        for baseline in ("random", "darts_v2"):
            if baseline in spec.baselines:
                lines.append(_row(records, target, baseline, baseline))
    return "\n".join(lines) + "\n"


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Rank correlation of two equally long sequences (average ranks for ties)."""
    import numpy as np
    import pandas as pd

    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    if np.std(ra) == 0 or np.std(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def random_cells_table(spec: study.StudySpec, extra: Sequence[Dict[str, Any]]) -> str:
    """Markdown: each random cell's test metric on both datasets, and their rank correlation."""
    a, b = spec.transfer.between
    lines = [f"| cell | {a} | {b} |", "|---|---|---|"]
    pairs = []
    for i in range(spec.transfer.random_cells):
        va, vb = (_rows(extra, key, f"random_cell_{i}") for key in (a, b))
        values = [v[0]["value"] if v else None for v in (va, vb)]
        lines.append(f"| {i} | " + " | ".join("-" if v is None else f"{v:.4f}" for v in values) + " |")
        if None not in values:
            pairs.append(values)
    rho = spearman(*zip(*pairs)) if len(pairs) >= 3 else float("nan")
    lines += ["", f"Spearman rank correlation over {len(pairs)} cells: "
              + ("-" if rho != rho else f"{rho:.2f}")]
    return "\n".join(lines) + "\n"


def depth_table(spec: study.StudySpec, grid: Sequence[Dict[str, Any]],
                extra: Sequence[Dict[str, Any]]) -> str:
    """Markdown: the searched cell's test metric at each depth (the grid's depth included)."""
    d = spec.depth
    own = _rows(grid, d.dataset, d.method)
    depths = sorted({*d.cells, *(r["retrain"]["cells"] for r in own)})
    lines = list(HEADER)
    for cells in depths:
        rows = [r for r in [*own, *extra] if r["dataset"] == d.dataset and r["retrain"]["cells"] == cells
                and r["method"] in (d.method, f"depth_{cells}")]
        lines.append(_row(rows, d.dataset, rows[0]["method"] if rows else f"depth_{cells}", f"{cells} cells"))
    return "\n".join(lines) + "\n"


def sections(spec: study.StudySpec, grid: Sequence[Dict[str, Any]], results_dir: str) -> List[str]:
    """The ``study.md`` sections of the optional runs (none without them)."""
    extra = collect(spec, results_dir)
    out: List[str] = []
    if spec.transfer:
        out += ["## Transfer between datasets (mean ± sd over seeds)", "", transfer_table(spec, grid, extra)]
        if spec.transfer.random_cells:
            out += ["## Random cells on both datasets", "", random_cells_table(spec, extra)]
    if spec.depth:
        out += [f"## Depth: the {spec.depth.method} cell of {spec.depth.dataset} at "
                "other depths", "", depth_table(spec, grid, extra)]
    return out
