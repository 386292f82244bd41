"""A study: a grid of (dataset, method, seed) pipeline runs, aggregated.

    python -m pipeline.study --study configs/studies/cpu.yaml \\
        --data_root ../shared/data --output_dir runs/study --results_dir docs/study

The study file (YAML) fixes the grid: a preset and overrides shared by every run,
the seeds, the datasets (each a dataset name plus overrides, e.g. a split), the
search methods (overrides of the search) and the baselines. Every cell of the
grid is one ``python -m pipeline.run``; the runs of a dataset share one run folder
``<output_dir>/<dataset key>`` and so one ML Metadata store and one ingest.

Per (dataset, seed), the search methods run first (no baselines); then the first
search method's run is repeated with ``--baselines`` (its own steps come from the
cache), random search getting ``baselines.random_budget_seconds`` equal to that
search's seconds: it is matched in cost to the search it is compared with. Every
model is retrained with the same ``retrain`` settings and seed.

Each finished cell leaves a small record ``<results_dir>/records/<dataset>/<seed>/
<method>.json`` (test metrics, parameters, seconds, genotype, alpha statistics,
the retrain settings used); rerunning the command skips cells that have a record,
and an interrupted pipeline run resumes from its checkpoints. After every cell
``<results_dir>`` gets ``study.md`` (tables of mean ± sd and every run, the exact
commands), ``results.csv`` and figures (``figures/``).

Optional ``transfer`` and ``depth`` sections add runs that retrain the grid's cells
on the other dataset or at other depths, and random cells on two datasets, after the
grid (`pipeline.study_cells`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from pipeline import cli
from tfdarts import contract, fileio

__all__ = ["StudySpec", "StudyError", "load_study", "run_study", "aggregate", "main"]


class StudyError(ValueError):
    """A bad study file or a failed run: one line, with what to do."""


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
    """One dataset of the grid: a dataset name and the overrides that define it."""

    key: str
    dataset: str
    overrides: Tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """The grid of a study (see the module docstring)."""

    preset: str
    seeds: Tuple[int, ...]
    datasets: Tuple[DatasetEntry, ...]
    search_methods: Tuple[Tuple[str, Tuple[str, ...]], ...]
    baselines: Tuple[str, ...] = ()
    overrides: Tuple[str, ...] = ()
    transfer: Any = None  # pipeline.study_cells.Transfer
    depth: Any = None  # pipeline.study_cells.Depth

    @property
    def methods(self) -> List[str]:
        """Every method name, search methods first."""
        return [m for m, _ in self.search_methods] + list(self.baselines)


def _strings(value: Any, where: str) -> Tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise StudyError(f"{where} must be a list of strings")
    return tuple(value)


def _dataset_entries(raw: Any) -> Tuple[DatasetEntry, ...]:
    if not isinstance(raw, dict) or not raw:
        raise StudyError("datasets must map a key to {dataset: NAME, overrides: [...]}")
    out = []
    for key, value in raw.items():
        value = value if isinstance(value, dict) else {"overrides": value}
        out.append(DatasetEntry(str(key), str(value.get("dataset", key)),
                                _strings(value.get("overrides"), f"datasets.{key}.overrides")))
    return tuple(out)


def _search_methods(raw: Any) -> Tuple[Tuple[str, Tuple[str, ...]], ...]:
    if not isinstance(raw, dict) or not raw:
        raise StudyError("search_methods must map a name to a list of overrides (at least one)")
    return tuple((str(k), _strings(v, f"search_methods.{k}")) for k, v in raw.items())


def _seeds(raw: Any) -> Tuple[int, ...]:
    if not isinstance(raw, list) or not raw or not all(isinstance(s, int) and s >= 0 for s in raw):
        raise StudyError("seeds must be a non-empty list of integers >= 0")
    return tuple(raw)


STUDY_KEYS = ("preset", "seeds", "datasets", "search_methods", "baselines", "overrides", "transfer",
              "depth")


def parse_study(raw: Mapping[str, Any], data_root: str = "") -> StudySpec:
    """Builds a `StudySpec` from the study file's mapping; ``{data_root}`` in an
    override is replaced by `data_root` (made absolute).

    Raises:
        StudyError: An unknown key or a badly typed value, named.
    """
    if not isinstance(raw, Mapping):
        raise StudyError("a study file is a mapping of " + ", ".join(STUDY_KEYS))
    unknown = sorted(set(raw) - set(STUDY_KEYS))
    if unknown:
        raise StudyError(f"unknown study key(s) {', '.join(unknown)}; known: {', '.join(STUDY_KEYS)}")
    spec = StudySpec(str(raw.get("preset", "cpu")), _seeds(raw.get("seeds")),
                     _dataset_entries(raw.get("datasets")), _search_methods(raw.get("search_methods")),
                     _strings(raw.get("baselines"), "baselines"), _strings(raw.get("overrides"), "overrides"))
    if len(set(spec.methods)) != len(spec.methods):
        raise StudyError(f"method names must be unique: {', '.join(spec.methods)}")
    from pipeline import study_cells

    spec = dataclasses.replace(spec, transfer=study_cells.parse_transfer(raw.get("transfer"), spec),
                               depth=study_cells.parse_depth(raw.get("depth"), spec))
    root = os.path.abspath(data_root) if data_root else ""
    fill = lambda items: tuple(o.replace("{data_root}", root) for o in items)  # noqa: E731
    return dataclasses.replace(
        spec, overrides=fill(spec.overrides),
        datasets=tuple(dataclasses.replace(d, overrides=fill(d.overrides)) for d in spec.datasets))


def load_study(path: str, data_root: str = "") -> StudySpec:
    """Reads and checks a study file (see `parse_study`)."""
    from tfdarts.config import ConfigError, load_yaml

    try:
        return parse_study(load_yaml(path), data_root)
    except (ConfigError, StudyError) as err:
        raise StudyError(f"{path}: {err}" if str(path) not in str(err) else str(err)) from None


# ----------------------------------------------------------------------------- one cell


@dataclasses.dataclass(frozen=True)
class Cell:
    """One pipeline run of the study: a search method, or the baselines run."""

    dataset: DatasetEntry
    seed: int
    method: str  # a search method name, or "" for the baselines run
    overrides: Tuple[str, ...]
    baselines: bool = False


def seed_overrides(seed: int) -> List[str]:
    """The study seed sets the search, retrain (and random search's sampling) seeds;
    ``data.seed`` stays fixed so the runs of a dataset share one ingest."""
    return [f"search.seed={seed}", f"retrain.seed={seed}"]


def run_command(spec: StudySpec, cell: Cell, output_dir: str) -> List[str]:
    """The ``python -m pipeline.run`` argv of a cell."""
    argv = ["-m", "pipeline.run", "--dataset", cell.dataset.dataset, "--preset", spec.preset,
            "--output_dir", output_dir, "--run_name", cell.dataset.key]
    overrides = [*spec.overrides, *cell.dataset.overrides, *seed_overrides(cell.seed), *cell.overrides]
    for item in overrides:
        argv += ["--override", item]
    return argv + (["--baselines"] if cell.baselines else [])


def run_pipeline(argv: List[str], log_path: str) -> None:
    """Runs one pipeline run, its output in `log_path`; a failure raises `StudyError`."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ python {shlex.join(argv)}\n")
        log.flush()
        proc = subprocess.Popen([sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT)
        try:
            proc.wait()
        except BaseException:  # interrupted: the run records its step as FAILED and stops
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=300)
            raise
    if proc.returncode:
        raise StudyError(f"a pipeline run failed (exit {proc.returncode}); its output is in "
                         f"{log_path}; fix the cause and rerun the study to resume")


def run_outputs(run_dir: str) -> Dict[str, Dict[str, Any]]:
    """Output artifacts (uri, properties) by key, from the run's ``outputs.json``."""
    run = fileio.read_json(os.path.join(run_dir, contract.OUTPUTS_FILE))
    return {key: art for step in run["steps"] for key, art in step["outputs"].items()}


def _alpha_stats(search_dir: str) -> Dict[str, Any]:
    from tfdarts import analysis

    run = analysis.load_search(search_dir)
    out = {}
    for cell, probs in (("normal", run.normal[-1]), ("reduce", run.reduce[-1])):
        stats = analysis.cell_stats(probs, run.primitives, run.nodes)
        out[cell] = {k: stats[k] for k in ("max_weight_mean", "entropy_ratio", "guessed_share",
                                           "skip_count") if k in stats}
        out[cell]["max_weights"] = [float(max(row)) for row in probs]
    return out


def make_record(base: Dict[str, Any], result: Dict[str, Any], run_dir: str) -> Dict[str, Any]:
    from tfdarts.config import load_yaml

    config = load_yaml(os.path.join(run_dir, "config.yaml"))
    metric = "accuracy" if "accuracy" in result["metrics"] else "r2"
    return {**base, "model": result["model"], "metric": metric, "value": result["metrics"][metric],
            "metrics": result["metrics"], "params": result["params"],
            "search_seconds": result.get("search_seconds"), "train_seconds": result["train_seconds"],
            "search_cpu_seconds": result.get("search_cpu_seconds"),
            "train_cpu_seconds": result.get("train_cpu_seconds"),
            "retrain": config["retrain"], "fingerprint": result.get("fingerprint")}


def search_record(cell: Cell, run_dir: str) -> Dict[str, Any]:
    """The record of a search method's run: its evaluation, genotype and alphas."""
    outputs = run_outputs(run_dir)
    result = fileio.read_json(os.path.join(outputs["evaluation"]["uri"], contract.METRICS_FILE))
    search_dir = outputs["search"]["uri"]
    base = {"dataset": cell.dataset.key, "seed": cell.seed, "method": cell.method, "kind": "search",
            "genotype": fileio.read_json(os.path.join(search_dir, contract.GENOTYPE_FILE)),
            "alphas": _alpha_stats(search_dir)}
    return make_record(base, result, run_dir)


def baseline_records(cell: Cell, names: Sequence[str], run_dir: str) -> Dict[str, Dict[str, Any]]:
    """The records of the baselines run, by baseline name."""
    folder = run_outputs(run_dir)["baselines"]["uri"]
    results = fileio.read_json(os.path.join(folder, contract.RECORDS_FILE))
    out = {}
    for name, result in zip(names, results):
        geno_path = os.path.join(folder, name, "eval", contract.GENOTYPE_FILE)
        base = {"dataset": cell.dataset.key, "seed": cell.seed, "method": name, "kind": "baseline",
                "genotype": fileio.read_json(geno_path) if os.path.exists(geno_path) else None}
        out[name] = make_record(base, result, run_dir)
    return out


# ----------------------------------------------------------------------------- the grid


def record_path(results_dir: str, dataset: str, seed: int, method: str) -> str:
    """Where the record of (dataset, seed, method) is kept."""
    return os.path.join(results_dir, "records", dataset, str(seed), f"{method}.json")


def say(message: str) -> None:
    """One timestamped progress line on stderr."""
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} {message}\n")
    sys.stderr.flush()


def _cells(spec: StudySpec, entry: DatasetEntry, seed: int,
           results_dir: str) -> List[Tuple[Cell, List[str]]]:
    """The cells of (dataset, seed) still to run, with the methods each records."""
    todo = []
    for method, overrides in spec.search_methods:
        if not os.path.exists(record_path(results_dir, entry.key, seed, method)):
            todo.append((Cell(entry, seed, method, overrides), [method]))
    missing = [b for b in spec.baselines if not os.path.exists(record_path(results_dir, entry.key, seed, b))]
    if missing:
        todo.append((Cell(entry, seed, "", spec.search_methods[0][1], baselines=True), missing))
    return todo


def _baselines_overrides(spec: StudySpec, entry: DatasetEntry, seed: int, results_dir: str,
                         names: Sequence[str]) -> List[str]:
    """``baselines.include`` and random search's budget: the first search method's processor
    seconds (its wall seconds for records without them), which other work on the machine
    barely changes."""
    first = fileio.read_json(record_path(results_dir, entry.key, seed, spec.search_methods[0][0]))
    cpu = first.get("search_cpu_seconds")
    budget, clock = (cpu, "cpu") if cpu else (first["search_seconds"] or 0, "wall")
    return [f"baselines.include={','.join(names)}",
            f"baselines.random_budget_seconds={float(budget):.1f}", f"baselines.random_budget_clock={clock}"]


def run_study(spec: StudySpec, output_dir: str, results_dir: str,
              command: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    """Runs every missing cell of the grid, writing records and the aggregate after each.

    Returns:
        Every record of the grid.
    """
    output_dir, results_dir = os.path.abspath(output_dir), os.path.abspath(results_dir)
    for entry in spec.datasets:
        for seed in spec.seeds:
            for cell, names in _cells(spec, entry, seed, results_dir):
                extra = _baselines_overrides(spec, entry, seed, results_dir, names) if cell.baselines else []
                cell = dataclasses.replace(cell, overrides=cell.overrides + tuple(extra))
                label = cell.method or "baselines " + ",".join(names)
                say(f"study: {entry.key} seed {seed}: {label}")
                log_path = os.path.join(output_dir, "logs", f"{entry.key}-s{seed}-{cell.method or 'baselines'}.log")
                run_pipeline(run_command(spec, cell, output_dir), log_path)
                run_dir = os.path.join(output_dir, entry.key)
                records = (baseline_records(cell, names, run_dir) if cell.baselines
                           else {cell.method: search_record(cell, run_dir)})
                for method, rec in records.items():
                    rec["command"] = "python " + shlex.join(run_command(spec, cell, "OUTPUT_DIR"))
                    fileio.write_json(record_path(results_dir, entry.key, seed, method), rec)
                write_results(spec, results_dir, command)
    from pipeline import study_cells

    study_cells.run_cells(spec, output_dir, results_dir, command)
    write_results(spec, results_dir, command)
    return collect(spec, results_dir)


def collect(spec: StudySpec, results_dir: str) -> List[Dict[str, Any]]:
    """The records of the grid that exist, in grid order."""
    out = []
    for entry in spec.datasets:
        for method in spec.methods:
            for seed in spec.seeds:
                path = record_path(results_dir, entry.key, seed, method)
                if os.path.exists(path):
                    out.append(fileio.read_json(path))
    return out


# ----------------------------------------------------------------------------- aggregate


def mean_sd(values: Sequence[Optional[float]], fmt: str = "{:.4f}") -> str:
    import numpy as np

    values = [float(v) for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(np.mean(values))} ± {fmt.format(np.std(values, ddof=1))}"


def summary_rows(records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per (dataset, method): runs, metric mean ± sd, params, seconds."""
    rows = []
    keys = list(dict.fromkeys((r["dataset"], r["method"]) for r in records))
    for dataset, method in keys:
        runs = [r for r in records if r["dataset"] == dataset and r["method"] == method]
        rows.append({"dataset": dataset, "method": method, "runs": len(runs), "metric": runs[0]["metric"],
                     "value": mean_sd([r["value"] for r in runs]),
                     "params": mean_sd([r["params"] for r in runs], "{:,.0f}"),
                     **{f"{k}_s": mean_sd([r.get(f"{k}_seconds") for r in runs], "{:.0f}")
                        for k in COSTS}})
    return rows


COSTS = ("search", "search_cpu", "train", "train_cpu")
COST_HEADER = "search s | search CPU s | retrain s | retrain CPU s"


def _seconds(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.0f}"


def aggregate(records: Sequence[Dict[str, Any]]) -> str:
    """Markdown: the mean ± sd table, every run, and the learned cells side by side."""
    from tfdarts import analysis
    from tfdarts.genotype import Genotype

    lines = ["| dataset | method | runs | test metric | params | " + COST_HEADER + " |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in summary_rows(records):
        costs = " | ".join(row[f"{k}_s"] for k in COSTS)
        lines.append(f"| {row['dataset']} | {row['method']} | {row['runs']} | {row['metric']} "
                     f"{row['value']} | {row['params']} | {costs} |")
    lines += ["", "### Every run", "", "| dataset | method | seed | model | test metric | params | "
              + COST_HEADER + " |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        costs = " | ".join(_seconds(r.get(f"{k}_seconds")) for k in COSTS)
        lines.append(f"| {r['dataset']} | {r['method']} | {r['seed']} | {r['model']} | "
                     f"{r['metric']} {r['value']:.4f} | {r['params']:,} | {costs} |")
    lines += ["", "### Cells", "", "| dataset | method | seed | normal cell | reduce cell |",
              "|---|---|---|---|---|"]
    for r in records:
        if r.get("genotype"):
            g = Genotype.from_dict(r["genotype"])
            cells = [analysis.format_gene(c).replace(" | ", "; ") for c in (g.normal, g.reduce)]
            lines.append(f"| {r['dataset']} | {r['method']} | {r['seed']} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def alpha_table(records: Sequence[Dict[str, Any]]) -> str:
    """Markdown: sparsity of the learned alphas per dataset and search method."""
    lines = ["| dataset | method | cell | runs | top-op mass | entropy / ln K | guessed | skips |",
             "|---|---|---|---|---|---|---|---|"]
    searched = [r for r in records if r.get("alphas")]
    for dataset, method in dict.fromkeys((r["dataset"], r["method"]) for r in searched):
        runs = [r["alphas"] for r in searched if r["dataset"] == dataset and r["method"] == method]
        for cell in ("normal", "reduce"):
            stat = lambda k: mean_sd([a[cell].get(k) for a in runs], "{:.3f}")  # noqa: E731
            lines.append(f"| {dataset} | {method} | {cell} | {len(runs)} | {stat('max_weight_mean')} | "
                         f"{stat('entropy_ratio')} | {stat('guessed_share')} | {stat('skip_count')} |")
    return "\n".join(lines) + "\n"


def _cell_ops(record: Dict[str, Any], cell: str) -> List[str]:
    return [op for op, _ in record["genotype"][cell]]


def op_table(records: Sequence[Dict[str, Any]]) -> str:
    """Markdown: which ops the searches chose per dataset, method and cell type, and the
    share of parameter-free ops (skip, pools) among them."""
    import collections

    from tfdarts import space

    lines = ["| dataset | method | cell | runs | parameter-free share | chosen ops (count over runs) |",
             "|---|---|---|---|---|---|"]
    searched = [r for r in records if r.get("kind") == "search" and r.get("genotype")]
    for dataset, method in dict.fromkeys((r["dataset"], r["method"]) for r in searched):
        runs = [r for r in searched if r["dataset"] == dataset and r["method"] == method]
        for cell in ("normal", "reduce"):
            ops = [_cell_ops(r, cell) for r in runs]
            free = mean_sd([sum(map(space.is_parameter_free, o)) / len(o) for o in ops], "{:.2f}")
            counts = collections.Counter(op for o in ops for op in o).most_common()
            lines.append(f"| {dataset} | {method} | {cell} | {len(runs)} | {free} | "
                         + ", ".join(f"{op} {n}" for op, n in counts) + " |")
    return "\n".join(lines) + "\n"


def write_results(spec: StudySpec, results_dir: str, command: Optional[Sequence[str]] = None) -> None:
    """``study.md``, ``results.csv`` and the figures from the records that exist."""
    from pipeline import study_cells

    records = collect(spec, results_dir)
    os.makedirs(results_dir, exist_ok=True)
    _write_csv(os.path.join(results_dir, "results.csv"), [*records, *study_cells.collect(spec, results_dir)])
    figures = plot_study(records, os.path.join(results_dir, "figures")) if records else []
    text = ["# Study results", "",
            f"Grid: datasets {', '.join(d.key for d in spec.datasets)}; methods "
            f"{', '.join(spec.methods)}; seeds {', '.join(map(str, spec.seeds))}; preset `{spec.preset}`"
            + (f" with {', '.join(f'`{o}`' for o in spec.overrides)}" if spec.overrides else "") + ".",
            f"{len(records)} of {len(spec.datasets) * len(spec.methods) * len(spec.seeds)} runs finished.", ""]
    if command:
        text += ["Command:", "", "    " + shlex.join(command), ""]
    text += ["## Test metric, parameters and cost (mean ± sd over seeds)", "", aggregate(records),
             "## Learned alphas", "", alpha_table(records), "## Chosen ops", "", op_table(records),
             *study_cells.sections(spec, records, results_dir), "## Figures", ""]
    text += [f"![{os.path.basename(p)}](figures/{os.path.basename(p)})" for p in figures if p.endswith(".png")]
    text += ["", "## Pipeline commands", "", "Each record holds the `pipeline.run` command of its run:", ""]
    text += [f"- {r['dataset']} {r['method']} seed {r['seed']}: `{r['command']}`" for r in records]
    with fileio.atomic_open(os.path.join(results_dir, "study.md")) as f:
        f.write("\n".join(text) + "\n")


CSV_FIELDS = ("dataset", "method", "seed", "model", "metric", "value", "params", "search_seconds",
              "train_seconds", "search_cpu_seconds", "train_cpu_seconds")


def _write_csv(path: str, records: Sequence[Dict[str, Any]]) -> None:
    import csv

    with fileio.atomic_open(path) as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)


def _cost(record: Dict[str, Any], clock: str) -> float:
    """Search + retrain seconds on `clock` (``cpu`` or ``wall``); a method without a
    search costs its retrain only."""
    suffix = "_cpu_seconds" if clock == "cpu" else "_seconds"
    return float((record.get("search" + suffix) or 0.0) + record["train" + suffix])


def _clock(records: Sequence[Dict[str, Any]]) -> str:
    """``cpu`` when every record has processor seconds for what it ran, else ``wall``."""
    complete = all(r.get("train_cpu_seconds") is not None
                   and (r.get("search_seconds") is None or r.get("search_cpu_seconds") is not None)
                   for r in records)
    return "cpu" if complete else "wall"


def plot_study(records: Sequence[Dict[str, Any]], folder: str) -> List[str]:
    """Metric vs cost (mean ± sd per method) and the alphas' sparsity, one panel per dataset."""
    import numpy as np

    from tfdarts.analysis import _new_figure, save_figure

    os.makedirs(folder, exist_ok=True)
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    fig = _new_figure(5 * len(datasets), 4)
    for ax, dataset in zip(fig.subplots(1, len(datasets), squeeze=False)[0], datasets):
        rows = [r for r in records if r["dataset"] == dataset]
        clock = _clock(rows)
        for method in dict.fromkeys(r["method"] for r in rows):
            runs = [r for r in rows if r["method"] == method]
            cost = [_cost(r, clock) for r in runs]
            value = [r["value"] for r in runs]
            ax.errorbar(np.mean(cost), np.mean(value), xerr=np.std(cost), yerr=np.std(value),
                        fmt="o", capsize=3, label=method)
        ax.set(title=dataset, xlabel=f"search + retrain {'CPU' if clock == 'cpu' else 'wall'} seconds",
               ylabel=f"test {rows[0]['metric']}")
        ax.legend(fontsize=7)
    paths = save_figure(fig, os.path.join(folder, "metric_vs_cost"), ("png",))
    searched = [r for r in records if r.get("alphas")]
    if searched:
        paths += _plot_edge_weights(searched, datasets, folder)
        paths += _plot_cells([r for r in searched if r["method"] == searched[0]["method"]], folder)
    return paths


def _plot_edge_weights(searched: Sequence[Dict[str, Any]], datasets: Sequence[str],
                       folder: str) -> List[str]:
    """Histograms of the top op's weight per edge: a row per cell type, a column per
    dataset, one outline per search method (all seeds pooled)."""
    import numpy as np

    from tfdarts.analysis import _new_figure, save_figure

    fig = _new_figure(4.5 * len(datasets), 6)
    axes = fig.subplots(2, len(datasets), squeeze=False)
    bins = np.linspace(0, 1, 21)
    for col, dataset in enumerate(datasets):
        rows = [r for r in searched if r["dataset"] == dataset]
        for row, cell in enumerate(("normal", "reduce")):
            ax = axes[row][col]
            for method in dict.fromkeys(r["method"] for r in rows):
                weights = [w for r in rows if r["method"] == method for w in r["alphas"][cell]["max_weights"]]
                ax.hist(weights, bins=bins, histtype="step", lw=1.5, label=method)
            ax.set(title=f"{dataset}: {cell}", xlabel="weight of the top op on an edge", ylabel="edges")
            ax.legend(fontsize=7)
    return save_figure(fig, os.path.join(folder, "edge_weights"), ("png",))


def _plot_cells(searched: Sequence[Dict[str, Any]], folder: str) -> List[str]:
    """One figure per dataset: each seed's normal and reduce cell side by side."""
    from tfdarts.analysis import plot_cells

    paths = []
    for dataset in dict.fromkeys(r["dataset"] for r in searched):
        cells = [(f"{r['method']} seed {r['seed']}: {cell}", r["genotype"][cell], r["genotype"][f"{cell}_concat"])
                 for r in searched if r["dataset"] == dataset for cell in ("normal", "reduce")]
        paths += plot_cells(cells, os.path.join(folder, f"cells_{dataset}"))
    return paths


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = cli.ArgumentParser(prog="python -m pipeline.study", description=__doc__.split("\n")[0])
    p.add_argument("--study", required=True, help="study file (YAML), e.g. configs/studies/cpu.yaml")
    p.add_argument("--data_root", default="", help="replaces {data_root} in the study's overrides")
    p.add_argument("--output_dir", default="./runs/study", help="parent of the run folders")
    p.add_argument("--results_dir", default="", help="records, tables and figures (default "
                   "<output_dir>/results)")
    p.add_argument("--aggregate_only", action="store_true", help="rewrite the results from the records")
    return p.parse_args(argv)


def _interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse_args(argv)
        spec = load_study(args.study, args.data_root)
    except (cli.UsageError, StudyError) as err:
        cli.fail(err)
    results_dir = args.results_dir or os.path.join(args.output_dir, "results")
    command = ["python", "-m", "pipeline.study", *argv]
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.aggregate_only:
            write_results(spec, results_dir, command)
        else:
            run_study(spec, args.output_dir, results_dir, command)
    except StudyError as err:
        cli.fail(err, 1)
    except KeyboardInterrupt:
        cli.fail("interrupted; rerun the same command to resume", 130)
    sys.stdout.write(f"results: {os.path.join(results_dir, 'study.md')}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
