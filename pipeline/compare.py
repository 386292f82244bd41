"""Compares finished runs: ``python -m pipeline.compare RUN_DIR [RUN_DIR ...]``.

Each RUN_DIR is a run folder written by `pipeline.run` (its ``search`` link and
``results.csv``) or a plain search folder. Prints, as Markdown tables, the alpha
statistics of every run and cell type (`tfdarts.analysis.compare_runs`) and then each
run's results table (DARTS, and baselines when the run had them). ``--csv FILE``
also writes the comparison table.

A missing, truncated or corrupt input file (``alphas.npz``, ``history.json``,
``genotype.json``, ``results.csv``) is reported as one ``error:`` line naming the
file, with exit code 2.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, List, Optional, Sequence

from pipeline import cli
from tfdarts import contract


def _check_file(path: str, read: Callable[[str], Any]) -> None:
    """Reads `path` with `read`; a read error ends the command naming the file."""
    try:
        read(path)
    except cli.READ_ERRORS as err:
        cli.fail(cli.file_error(path, err))


def _results_files(run_dir: str, search_dir: str) -> List[str]:
    """The ``results.csv`` files `tfdarts.analysis.compare_runs` may read for a run."""
    folders = dict.fromkeys([run_dir, os.path.dirname(os.path.abspath(search_dir))])
    paths = [os.path.join(folder, contract.RESULTS_CSV) for folder in folders]
    return [p for p in paths if os.path.exists(p)]


def _check_run(run_dir: str) -> str:
    """Reads every input file of one run, so that a bad one is named; returns the
    search folder."""
    import pandas as pd

    from tfdarts import analysis
    from tfdarts.genotype import Genotype

    try:
        search_dir = analysis.find_search_dir(run_dir)
    except FileNotFoundError as err:
        cli.fail(err)
    _check_file(os.path.join(search_dir, contract.ALPHAS_FILE), analysis.load_alphas)
    _check_file(os.path.join(search_dir, contract.HISTORY_FILE),
                lambda path: analysis.read_history(os.path.dirname(path)))
    genotype = os.path.join(search_dir, contract.GENOTYPE_FILE)
    if os.path.exists(genotype):
        _check_file(genotype, Genotype.load)
    for path in _results_files(run_dir, search_dir):
        _check_file(path, pd.read_csv)
    return search_dir


def cell_source(run_dir: str) -> str:
    """Where a run's cell came from (``searched on <dataset>``, ``given: <origin>``), from
    its report's summary; ``searched`` for runs without one."""
    path = os.path.join(run_dir, "report", contract.SUMMARY_FILE)
    if not os.path.exists(path):
        return "searched"
    from tfdarts import fileio

    return str(fileio.read_json(path).get("cell_source") or "searched")


def _run_table(run_dir: str) -> Any:
    """The comparison rows of one run (`tfdarts.analysis.compare_runs`); None for a
    given cell (it has no alphas).

    The files are checked first; what fails after that is the statistics of the
    alphas (e.g. raw logits instead of probabilities), reported against ``alphas.npz``.
    """
    from tfdarts import analysis

    if cell_source(run_dir).startswith("given"):
        return None
    search_dir = _check_run(run_dir)
    try:
        return analysis.compare_runs([run_dir])
    except cli.READ_ERRORS as err:
        cli.fail(cli.file_error(os.path.join(search_dir, contract.ALPHAS_FILE), err))


def _write_csv(table: Any, path: str) -> None:
    """Writes the comparison table to `path`; a write error ends the command."""
    try:
        with open(path, "w", encoding="utf-8") as f:
            table.to_csv(f, index=False)
    except OSError as err:
        cli.fail(f"cannot write {path}: {err.strerror or err}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point."""
    parser = cli.ArgumentParser(prog="python -m pipeline.compare",
                                description="Compare tfdarts runs (alpha statistics and results).")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--csv", default="", help="also write the comparison table to this CSV file")
    args = parser.parse_args(argv)
    cli.quiet_libraries()
    import pandas as pd

    from tfdarts import analysis

    missing = [d for d in args.run_dirs if not os.path.isdir(d)]
    if missing:
        cli.fail(f"not a folder: {', '.join(missing)}")
    tables = [t for t in (_run_table(d) for d in args.run_dirs) if t is not None]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    out = ["## Cells", "", "| run | cell |", "|---|---|"]
    out += [f"| {analysis.run_name(d)} | {cell_source(d)} |" for d in args.run_dirs]
    out += ["", "## Search statistics (last snapshot per run and cell)", "",
            analysis.to_markdown(table) if tables else "No searched runs."]
    for run_dir in args.run_dirs:
        path = os.path.join(run_dir, contract.RESULTS_CSV)
        if os.path.exists(path):
            out += [f"## Results: {analysis.run_name(run_dir)}", "",
                    analysis.to_markdown(pd.read_csv(path))]
    if args.csv:
        _write_csv(table, args.csv)
    sys.stdout.write("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
