"""One step in a container: ``python -m pipeline.steps STEP --config_json JSON ...``.

The Kubeflow tasks compiled by `pipeline.kubeflow` run this in the project's image.
It calls the same ``run`` function as the TFX component of the step, through the
same `pipeline.components.common.execute` (working folder, staged outputs,
``properties.json``)::

    python -m pipeline.steps search --config_json '{"data": ...}' --code_version abc \\
        --input dataset /path/to/dataset --output search /path/to/search [--work_root DIR]

The arguments, the config and the input folders are checked before TensorFlow is
imported. Exit codes, each failure reported as one ``error:`` line on stderr after
the step's progress lines:

* 0: done;
* 2: bad arguments or config, bad data (`tfdarts.sources.DataError`), a bad genotype
  (`tfdarts.genotype.GenotypeError`) or an input file that cannot be read; the line
  names the file or value. Rerunning the same task fails the same way;
* 1: any other failure: the exception and the project line that raised it; the full
  traceback is saved in the step's working folder, next to its checkpoints;
* 130: interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import traceback
from typing import Any, List, Mapping, NoReturn, Optional, Sequence, Tuple, Type

from pipeline import cli

TRACEBACK_FILE = "traceback.txt"
"""Written into the step's working folder when the step fails unexpectedly."""

_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PROJECT_CODE = tuple(os.path.join(_PROJECT_ROOT, package) + os.sep
                      for package in ("pipeline", "tfdarts"))


def _parser() -> argparse.ArgumentParser:
    from pipeline.pipeline import STEPS

    parser = cli.ArgumentParser(prog="python -m pipeline.steps",
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


# ----------------------------------------------------------------------------- checks


def _check_arguments(step: Any, inputs: Mapping[str, str], outputs: Mapping[str, str]) -> None:
    """Input and output keys against the step's spec; input paths must exist."""
    declared_in = {k for k, _ in step.inputs}
    problems: List[str] = []
    problems += [f"unknown input {k!r}" for k in inputs if k not in declared_in]
    problems += [f"missing input {k!r}" for k in declared_in
                 if k not in inputs and k not in step.optional_inputs]
    declared_out = {k for k, _ in step.outputs}
    problems += [f"unknown output {k!r}" for k in outputs if k not in declared_out]
    problems += [f"missing output {k!r}" for k in declared_out if k not in outputs]
    problems += [f"input {k} {path} does not exist" for k, path in inputs.items()
                 if k in declared_in and not os.path.exists(path)]
    if problems:
        cli.fail(f"step {step.name}: {'; '.join(problems)}")


def _check_config(step: Any, config_json: str) -> None:
    """``--config_json`` must be a JSON object of valid config sections."""
    from pipeline.components import common
    from tfdarts.config import ConfigError

    try:
        data = json.loads(config_json)
    except ValueError as err:
        cli.fail(f"step {step.name}: --config_json is not valid JSON: {err}")
    if not isinstance(data, dict):
        cli.fail(f"step {step.name}: --config_json must be a JSON object of config sections, "
                 f"got {type(data).__name__}")
    try:
        common.config_from_json(config_json)
    except ConfigError as err:
        cli.fail(f"step {step.name}: --config_json: {err}")


# ----------------------------------------------------------------------------- failures


def _user_errors() -> Tuple[Type[BaseException], ...]:
    """Library errors whose message already says which value or file to fix."""
    from tfdarts.config import ConfigError
    from tfdarts.genotype import GenotypeError
    from tfdarts.sources import DataError

    return (ConfigError, DataError, GenotypeError, cli.UsageError)


def _inside(path: str, folders: Sequence[str]) -> bool:
    """True when `path` lies inside one of `folders` (links resolved)."""
    real = os.path.realpath(path)
    return any(real.startswith(os.path.realpath(f).rstrip("/") + "/") for f in folders)


def _names_input(text: str, folders: Sequence[str]) -> bool:
    """True when `text` names a file inside one of `folders` (as given or absolute)."""
    spellings = {os.path.abspath(f) for f in folders} | {f for f in folders if os.sep in f}
    return any(s.rstrip(os.sep) + os.sep in text for s in spellings)


def _input_file(err: BaseException, folders: Sequence[str]) -> Optional[str]:
    """The input file `err` was raised while reading, if one can be told.

    That is the file an `OSError` names, else the innermost frame's string variable
    holding the path of a file inside an input folder (``path`` in
    ``tfdarts.fileio.read_json``, ``file`` in ``numpy.load``...).
    """
    filename = getattr(err, "filename", None)
    if isinstance(filename, str) and _inside(filename, folders):
        return filename
    frames = [frame for frame, _ in traceback.walk_tb(err.__traceback__)]
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            if isinstance(value, str) and _inside(value, folders) and os.path.isfile(value):
                return value
    return None


def _bad_input(err: BaseException, inputs: Mapping[str, str]) -> Optional[str]:
    """The one-line message when `err` is about the step's config, data or input files."""
    if isinstance(err, _user_errors()):
        return str(err)
    if not isinstance(err, cli.READ_ERRORS):
        return None
    folders = list(inputs.values())
    path = _input_file(err, folders)
    if path:
        return cli.file_error(path, err)
    return str(err) if _names_input(str(err), folders) else None


def _origin(err: BaseException) -> str:
    """``file:line in function`` of the innermost project frame that raised `err`."""
    frames = list(traceback.extract_tb(err.__traceback__))
    if not frames:
        return "unknown location"
    ours = [f for f in frames if os.path.abspath(f.filename).startswith(_PROJECT_CODE)]
    frame = (ours or frames)[-1]
    name = os.path.abspath(frame.filename)
    if name.startswith(_PROJECT_CODE):
        name = os.path.relpath(name, _PROJECT_ROOT)
    return f"{name}:{frame.lineno} in {frame.name}"


def _save_traceback(err: BaseException, work_dir: str) -> str:
    """Writes the traceback of `err` into `work_dir` (else a temporary file); its path."""
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    try:
        os.makedirs(work_dir, exist_ok=True)
        path = os.path.join(work_dir, TRACEBACK_FILE)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path
    except OSError:
        fd, path = tempfile.mkstemp(prefix="tfdarts-step-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return path


def _report(step: str, err: BaseException, inputs: Mapping[str, str], work_dir: str) -> NoReturn:
    """Ends the command for a failed step: exit 2 for bad inputs, else 1."""
    message = _bad_input(err, inputs)
    if message is not None:
        cli.fail(f"step {step}: {message}")
    detail = " ".join(str(err).split()) or "no message"
    cli.fail(f"step {step} failed: {type(err).__name__}: {detail} (raised at {_origin(err)}; "
             f"traceback in {_save_traceback(err, work_dir)})", 1)


# ----------------------------------------------------------------------------- running


def _work_dir(step: str, args: argparse.Namespace, inputs: Mapping[str, str]) -> str:
    """The working folder `pipeline.components.common.execute` uses for this call."""
    from pipeline.components import common

    root = args.work_root or os.path.join(tempfile.gettempdir(), "tfdarts-work")
    return os.path.join(root, step, common.work_key(step, args.config_json, args.code_version,
                                                    inputs))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parses arguments, checks them against the step's spec and runs the step."""
    from pipeline.pipeline import STEPS

    args = _parser().parse_args(argv)
    step = {s.name: s for s in STEPS}[args.step]
    inputs, outputs = dict(args.input), dict(args.output)
    _check_arguments(step, inputs, outputs)
    _check_config(step, args.config_json)
    cli.quiet_libraries(import_tensorflow=True)
    cli.configure_logging(None)
    from pipeline.components import common

    work_dir = _work_dir(step.name, args, inputs)
    try:
        fn = importlib.import_module(step.module).run
        common.execute(step.name, fn, args.config_json, args.code_version, args.work_root,
                       inputs, outputs)
    except KeyboardInterrupt:
        resume = "; rerun the task to resume from them" if args.work_root else ""
        cli.fail(f"step {step.name}: interrupted; checkpoints are in {work_dir}{resume}", 130)
    except Exception as err:  # noqa: BLE001  (one line; the traceback goes to a file)
        _report(step.name, err, inputs, work_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
