"""Compares finished runs: ``python -m pipeline.compare RUN_DIR [RUN_DIR ...]``.

Each RUN_DIR is a run folder written by `pipeline.run` (its ``search`` link and
``results.csv``) or a plain search folder. Prints, as Markdown tables, the alpha
statistics of every run and cell type (`tfdarts.analysis.compare_runs`) and then each
run's results table (DARTS, and baselines when the run had them). ``--csv FILE``
also writes the comparison table.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from pipeline import cli
from tfdarts import contract


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.compare",
                                     description="Compare tfdarts runs (alpha statistics and results).")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--csv", default="", help="also write the comparison table to this CSV file")
    args = parser.parse_args(argv)
    cli.quiet_libraries()
    from tfdarts import analysis

    missing = [d for d in args.run_dirs if not os.path.isdir(d)]
    if missing:
        cli.fail(f"not a folder: {', '.join(missing)}")
    try:
        table = analysis.compare_runs(args.run_dirs)
    except (FileNotFoundError, ValueError) as err:
        cli.fail(err)
    out = ["## Search statistics (last snapshot per run and cell)", "",
           analysis.to_markdown(table)]
    import pandas as pd

    for run_dir in args.run_dirs:
        path = os.path.join(run_dir, contract.RESULTS_CSV)
        if os.path.exists(path):
            out += [f"## Results: {analysis.run_name(run_dir)}", "",
                    analysis.to_markdown(pd.read_csv(path))]
    if args.csv:
        try:
            with open(args.csv, "w", encoding="utf-8") as f:
                table.to_csv(f, index=False)
        except OSError as err:
            cli.fail(f"cannot write {args.csv}: {err.strerror or err}")
    sys.stdout.write("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
