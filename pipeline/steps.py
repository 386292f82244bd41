"""One step in a container: ``python -m pipeline.steps STEP --config_json JSON ...``.

The Kubeflow tasks compiled by `pipeline.kubeflow` run this in the project's image.
It calls the same ``run`` function as the TFX component of the step, through the
same `pipeline.components.common.execute` (working folder, staged outputs,
``properties.json``)::

    python -m pipeline.steps search --config_json '{"data": ...}' --code_version abc \\
        --input dataset /path/to/dataset --output search /path/to/search [--work_root DIR]

The Kubeflow tasks add ``--view NAME PATH`` (extra outputs the Kubeflow UI shows,
`VIEWS`: the test metrics, the report as one HTML file) and ``--executor_input
'{{$}}'``, after which the outputs' properties and metrics are written to the
executor output file that the Kubeflow launcher records as artifact metadata. The
``given`` step takes ``--genotype_json`` and ``--origin``.

The pipeline's first Kubeflow task resolves the run parameters into each step's
config sections (`pipeline.kubeflow.run_config`) and checks the data::

    python -m pipeline.steps config --dataset fashion_mnist --preset cpu --search_epochs 10 \\
        --retrain_epochs 20 --seed 2 --overrides 'search.order=2' --data_dir fashion-mnist \\
        --data_mount /data --fingerprint FILE --step_config search FILE ...

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
import functools
import importlib
import json
import math
import os
import shlex
import shutil
import sys
import tempfile
import traceback
from typing import Any, Callable, Dict, List, Mapping, NoReturn, Optional, Sequence, Tuple, Type

from pipeline import cli
from tfdarts import contract

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
    parser.add_argument("--view", nargs=2, action="append", default=[], metavar=("NAME", "PATH"),
                        help=f"also write a view file for the Kubeflow UI ({', '.join(VIEWS)})")
    parser.add_argument("--executor_input", default="", help="kfp executor input JSON: write the "
                        "outputs' metadata to its outputs.outputFile")
    parser.add_argument("--genotype_json", default="", help="given step: the cell to retrain")
    parser.add_argument("--origin", default="", help="given step: where the cell came from")
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


# ----------------------------------------------------------------------------- views


def _json_value(value: Any) -> Any:
    """`value` as a JSON value the launcher's protobuf parser accepts (no NaN, no bool)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _metrics_view(props: Mapping[str, Any], folder: str, path: str) -> Dict[str, Any]:
    """Writes the test metrics (and the parameter count) to `path`; returns them."""
    from tfdarts import fileio

    del folder
    metrics: Dict[str, Any] = {k: _json_value(float(v)) for k, v in props.get("metrics", {}).items()}
    if props.get("params") is not None:
        metrics["params"] = int(props["params"])
    fileio.write_json(path, metrics)
    return metrics


def _html_view(props: Mapping[str, Any], folder: str, path: str) -> Dict[str, Any]:
    """Copies the report's HTML file to `path` (the UI renders one file, not a folder)."""
    del props
    shutil.copyfile(os.path.join(folder, contract.REPORT_FILE), path)
    return {}


ViewFn = Callable[[Mapping[str, Any], str, str], Dict[str, Any]]

VIEWS: Dict[str, Tuple[str, ViewFn]] = {
    "metrics": (contract.EVALUATION_TYPE, _metrics_view),
    "report_html": (contract.REPORT_TYPE, _html_view)}
"""View name -> (artifact type of the output it is made from, writer). A writer gets
that output's properties and folder and the view's path, and returns the view's
metadata (what the Kubeflow UI lists: the metrics table)."""


def step_views(step: Any) -> List[str]:
    """The views `step` can write (those made from one of its output types)."""
    types = {type_name for _, type_name in step.outputs}
    return [name for name, (type_name, _) in VIEWS.items() if type_name in types]


def _view_source(step: Any, name: str) -> str:
    """The output key a view of `step` is made from."""
    type_name = VIEWS[name][0]
    return next(key for key, t in step.outputs if t == type_name)


def _write_views(step: Any, views: Mapping[str, str], props: Mapping[str, Mapping[str, Any]],
                 outputs: Mapping[str, str]) -> Dict[str, Dict[str, Any]]:
    """Writes the requested views; their metadata by view name."""
    metadata = {}
    for name, path in views.items():
        key = _view_source(step, name)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        metadata[name] = VIEWS[name][1](props.get(key, {}), outputs[key], path)
    return metadata


def _executor_outputs(step: Any, executor_input: str) -> Tuple[str, Dict[str, Any]]:
    """``(outputs.outputFile, outputs.artifacts)`` of a kfp executor input."""
    try:
        outputs = json.loads(executor_input)["outputs"]
        return str(outputs["outputFile"]), dict(outputs.get("artifacts", {}))
    except (ValueError, KeyError, TypeError, AttributeError):
        cli.fail(f"step {step.name}: --executor_input is not a kfp executor input (a JSON object "
                 "with outputs.outputFile); pass the '{{$}}' placeholder")


def _write_executor_output(path: str, artifacts: Mapping[str, Any],
                           metadata: Mapping[str, Mapping[str, Any]]) -> None:
    """The kfp executor output: each output artifact with its metadata (which the
    launcher records in ML Metadata, where the UI reads metrics from)."""
    from tfdarts import fileio

    listing = {}
    for key, value in artifacts.items():
        runtime = (value.get("artifacts") or [{}])[0]
        listing[key] = {"artifacts": [{"name": runtime.get("name", ""), "uri": runtime.get("uri", ""),
                                       "metadata": dict(metadata.get(key, {}))}]}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    json.dumps(listing, allow_nan=False)  # the launcher's parser rejects NaN
    fileio.write_json(path, {"artifacts": listing})


def _scalars(props: Mapping[str, Any]) -> Dict[str, Any]:
    """The scalar properties of an output, as its artifact metadata."""
    return {k: _json_value(v) for k, v in props.items() if isinstance(v, (str, int, float))}


def _publish(step: Any, args: argparse.Namespace, props: Mapping[str, Mapping[str, Any]],
             outputs: Mapping[str, str]) -> None:
    """Writes the views and (with ``--executor_input``) the executor output file."""
    metadata = {key: _scalars(value) for key, value in props.items()}
    metadata.update(_write_views(step, dict(args.view), props, outputs))
    if args.executor_input:
        path, artifacts = _executor_outputs(step, args.executor_input)
        _write_executor_output(path, artifacts, metadata)


def _check_options(step: Any, args: argparse.Namespace) -> None:
    """``--view`` names, the executor input and the given cell against the step."""
    problems = [f"unknown view {name!r} (this step has: {', '.join(step_views(step)) or 'none'})"
                for name, _ in args.view if name not in step_views(step)]
    if step.name == "given" and not args.genotype_json:
        problems.append("--genotype_json is required (the cell to retrain)")
    if problems:
        cli.fail(f"step {step.name}: {'; '.join(problems)}")
    if args.executor_input:
        _executor_outputs(step, args.executor_input)


def _step_function(step: Any, args: argparse.Namespace) -> Callable[..., Any]:
    """The step's ``run`` function (the given cell bound for ``given``)."""
    fn = importlib.import_module(step.module).run
    if step.name == "given":
        return functools.partial(fn, genotype_json=args.genotype_json, origin=args.origin)
    return fn


# ----------------------------------------------------------------------------- config task


def _config_parser() -> argparse.ArgumentParser:
    from pipeline import kubeflow

    parser = cli.ArgumentParser(prog=f"python -m pipeline.steps {kubeflow.CONFIG_TASK}",
                                description="Resolve the Kubeflow run parameters into each "
                                "step's config sections.")
    for name in ("dataset", "preset"):
        parser.add_argument(f"--{name}", required=True)
    for name in ("search_epochs", "retrain_epochs", "seed"):
        parser.add_argument(f"--{name}", type=int, required=True)
    parser.add_argument("--overrides", default="", help="section.key=value entries, space-separated")
    parser.add_argument("--data_dir", default="", help="data path relative to the data volume")
    parser.add_argument("--data_mount", required=True, help="where the data volume is mounted")
    parser.add_argument("--fingerprint", required=True, metavar="PATH",
                        help="file for the data files' content hash")
    parser.add_argument("--step_config", nargs=2, action="append", default=[],
                        metavar=("STEP", "PATH"), help="file for a step's config JSON (repeatable)")
    return parser


def _resolve(args: argparse.Namespace) -> Any:
    """The run's config from the parameters (no TensorFlow); exits 2 on bad values."""
    from pipeline import kubeflow
    from tfdarts.config import ConfigError

    params = kubeflow.RunParameters(args.dataset, args.preset, args.search_epochs,
                                    args.retrain_epochs, args.seed, args.overrides, args.data_dir)
    try:
        config = kubeflow.run_config(params, args.data_mount)
    except (cli.UsageError, ConfigError) as err:
        cli.fail(f"step {kubeflow.CONFIG_TASK}: {err}")
    sys.stdout.write(f"{kubeflow.CONFIG_TASK}: {args.dataset} on preset {args.preset} with "
                     f"{shlex.join(kubeflow.run_overrides(params, args.data_mount))}\n")
    return config


def _check_data(config: Any, args: argparse.Namespace, baselines: bool) -> str:
    """Checks the data files (and the baselines' names); their content hash."""
    from pipeline import kubeflow
    from tfdarts import data as data_lib

    path = config.data.data_dir
    if path and not os.path.exists(path):
        cli.fail(f"step {kubeflow.CONFIG_TASK}: data_dir={args.data_dir!r}: {path} does not exist "
                 "on the data volume; copy the data there or change the data_dir parameter")
    try:
        data_lib.check_source(config.data)
        if baselines:
            from tfdarts import baselines as baselines_lib

            baselines_lib.check_include(config)
        return data_lib.source_fingerprint(config.data)
    except _user_errors() as err:
        cli.fail(f"step {kubeflow.CONFIG_TASK}: {err}")
    except OSError as err:
        cli.fail(f"step {kubeflow.CONFIG_TASK}: cannot read the data files: {err}")


def _write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def config_main(argv: Sequence[str]) -> int:
    """The Kubeflow config task: each step's config sections and the data fingerprint."""
    from pipeline import kubeflow
    from pipeline.pipeline import STEPS, step_config_json

    args = _config_parser().parse_args(argv)
    specs = {s.name: s for s in STEPS}
    unknown = [name for name, _ in args.step_config if name not in specs]
    if unknown:
        cli.fail(f"step {kubeflow.CONFIG_TASK}: unknown step {unknown[0]!r} in --step_config; "
                 f"known: {', '.join(specs)}")
    config = _resolve(args)
    cli.quiet_libraries(import_tensorflow=True)
    names = [name for name, _ in args.step_config]
    fingerprint = _check_data(config, args, "baselines" in names)
    for name, path in args.step_config:
        _write_text(path, step_config_json(config, specs[name]))
    _write_text(args.fingerprint, fingerprint)
    return 0


# ----------------------------------------------------------------------------- running


def _work_dir(step: str, args: argparse.Namespace, inputs: Mapping[str, str]) -> str:
    """The working folder `pipeline.components.common.execute` uses for this call."""
    from pipeline.components import common

    root = args.work_root or os.path.join(tempfile.gettempdir(), "tfdarts-work")
    return os.path.join(root, step, common.work_key(step, args.config_json, args.code_version,
                                                    inputs))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parses arguments, checks them against the step's spec and runs the step."""
    from pipeline import kubeflow
    from pipeline.pipeline import STEPS

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [kubeflow.CONFIG_TASK]:
        return config_main(argv[1:])
    args = _parser().parse_args(argv)
    step = {s.name: s for s in STEPS}[args.step]
    inputs, outputs = dict(args.input), dict(args.output)
    _check_arguments(step, inputs, outputs)
    _check_options(step, args)
    _check_config(step, args.config_json)
    cli.quiet_libraries(import_tensorflow=True)
    cli.configure_logging(None)
    from pipeline.components import common
    from tfdarts import runtime

    runtime.apply_threads(common.config_from_json(args.config_json).runtime)

    work_dir = _work_dir(step.name, args, inputs)
    try:
        props = common.execute(step.name, _step_function(step, args), args.config_json,
                               args.code_version, args.work_root, inputs, outputs)
        _publish(step, args, props, outputs)
    except KeyboardInterrupt:
        resume = "; rerun the task to resume from them" if args.work_root else ""
        cli.fail(f"step {step.name}: interrupted; checkpoints are in {work_dir}{resume}", 130)
    except Exception as err:  # noqa: BLE001  (one line; the traceback goes to a file)
        _report(step.name, err, inputs, work_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
