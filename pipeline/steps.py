"""One step in a container: ``python -m pipeline.steps STEP --config_json JSON ...``.

The Kubeflow tasks compiled by `pipeline.kubeflow` run this in the project's image.
It calls the same ``run`` function as the TFX component of the step, through the
same `pipeline.components.common.execute` (working folder, staged outputs,
``properties.json``)::

    python -m pipeline.steps search --config_json '{"data": ...}' --code_version abc \\
        --input dataset /path/to/dataset --output search /path/to/search [--work_root DIR]

Exit codes: 0 done, 2 bad arguments, config or data (one ``error:`` line), 1 other
failures (with the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import List, Optional, Sequence

from pipeline import cli


def _parser() -> argparse.ArgumentParser:
    from pipeline.pipeline import STEPS

    parser = argparse.ArgumentParser(prog="python -m pipeline.steps",
                                     description="Run one tfdarts pipeline step.")
    parser.add_argument("step", choices=[s.name for s in STEPS])
    parser.add_argument("--config_json", required=True, help="the step's config sections as JSON")
    parser.add_argument("--code_version", default="", help="code hash recorded with the outputs")
    parser.add_argument("--work_root", default="", help="parent of the working folders "
                        "(checkpoints for resuming); default: the system's temporary folder")
    parser.add_argument("--input", nargs=2, action="append", default=[], metavar=("KEY", "PATH"),
                        help="an input artifact folder (repeatable)")
    parser.add_argument("--output", nargs=2, action="append", default=[], metavar=("KEY", "PATH"),
                        help="an output artifact folder (repeatable)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parses arguments, checks them against the step's spec and runs the step."""
    from pipeline.pipeline import STEPS

    args = _parser().parse_args(argv)
    cli.quiet_libraries(import_tensorflow=True)
    cli.configure_logging(None)
    from pipeline.components import common
    from tfdarts.config import ConfigError
    from tfdarts.sources import DataError

    step = {s.name: s for s in STEPS}[args.step]
    inputs, outputs = dict(args.input), dict(args.output)
    declared_in = {k for k, _ in step.inputs}
    problems: List[str] = []
    problems += [f"unknown input {k!r}" for k in inputs if k not in declared_in]
    problems += [f"missing input {k!r}" for k in declared_in
                 if k not in inputs and k not in step.optional_inputs]
    declared_out = {k for k, _ in step.outputs}
    problems += [f"unknown output {k!r}" for k in outputs if k not in declared_out]
    problems += [f"missing output {k!r}" for k in declared_out if k not in outputs]
    if problems:
        cli.fail(f"step {step.name}: {'; '.join(problems)}")
    try:
        json.loads(args.config_json)
        fn = importlib.import_module(step.module).run
        common.execute(step.name, fn, args.config_json, args.code_version, args.work_root,
                       inputs, outputs)
    except (ConfigError, DataError, json.JSONDecodeError) as err:
        cli.fail(f"step {step.name}: {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
