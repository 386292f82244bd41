"""Compiles the pipeline for Kubeflow Pipelines (kfp v2 YAML) that runs as it is.

    python -m pipeline.kubeflow --dataset fashion_mnist --image IMAGE --output pipeline.yaml

The steps and their wiring come from `pipeline.pipeline.STEPS`, like the local TFX
run: each step becomes a container component running ``python -m pipeline.steps
<step>`` in IMAGE, which calls the same step function as the TFX component.

The run's settings are pipeline parameters (`RUN_PARAMETERS`: dataset, preset,
search and retrain epochs, seed, free-form ``section.key=value`` overrides, the data
path on the data volume) whose defaults are the compile-time config (preset, dataset
file, ``--config``, ``--override``). A first task, ``config``, resolves them inside
the container with the package's own presets (`pipeline.cli.build_config`), checks
the data and hands every step the config sections it depends on, so Kubeflow's cache
reuses a search when only retrain settings change; bad values fail that task with
one ``error:`` line (exit 2).

Two persistent volume claims are mounted: the data volume (read by ``config`` and
``ingest``) and the working volume (``work_root``: the steps' checkpoints, so a
rerun task resumes). Their claim names are pipeline parameters, their mount paths
compile flags. Artifacts are typed (`KFP_TYPES`, `pipeline.steps.VIEWS`): the
dataset, the trained model, the test metrics and the HTML report show in the
Kubeflow UI. Every task has CPU and memory requests (`RESOURCES`, ``--cpu``,
``--memory``), training tasks GPUs with ``--gpus``, and ``--genotype`` retrains a
given cell instead of searching. See docs/kubeflow.md.
"""

import argparse
import dataclasses
import os
import posixpath
import re
import shlex
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from pipeline import cli
from tfdarts import contract

GPU_STEPS = ("search", "retrain", "evaluate", "baselines")
"""Steps that get ``--gpus`` accelerators."""

CONFIG_TASK = "config"
"""The first task: resolves the run parameters into each step's config."""

DATA_PVC, WORK_PVC = "tfdarts-data", "tfdarts-work"
DATA_MOUNT, WORK_MOUNT = "/data", "/work"
TFDS_SUBDIR = "tensorflow_datasets"
"""Folder on the data volume for TFDS datasets (``data.tfds_dir`` unless overridden)."""

KFP_TYPES: Dict[str, str] = {contract.DATASET_TYPE: "Dataset", contract.MODEL_TYPE: "Model"}
"""kfp artifact type of each tfdarts output type; the others are ``Artifact``."""

VIEW_TYPES: Dict[str, str] = {"metrics": "Metrics", "report_html": "HTML"}
"""kfp artifact type of each extra output the UI displays (`pipeline.steps.VIEWS`)."""

RESOURCES: Dict[str, Tuple[str, str]] = {
    CONFIG_TASK: ("500m", "2Gi"), "ingest": ("1", "4Gi"), "search": ("4", "8Gi"),
    "given": ("500m", "2Gi"), "retrain": ("4", "8Gi"), "evaluate": ("2", "8Gi"),
    "baselines": ("4", "8Gi"), "analyze": ("1", "4Gi")}
"""Default ``(CPU request, memory request and limit)`` per task."""

RUN_PARAMETERS = ("dataset", "preset", "search_epochs", "retrain_epochs", "seed", "overrides",
                  "data_dir")
"""Pipeline parameters the config task resolves (`RunParameters` fields)."""

_CPU = re.compile(r"^([0-9]*[.])?[0-9]+m?$")
_MEMORY = re.compile(r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$")
_COMPILE_ONLY = ("data.data_dir", "runtime.log_every")


# ----------------------------------------------------------------------------- run parameters


@dataclasses.dataclass(frozen=True)
class RunParameters:
    """The run settings a Kubeflow user can change without recompiling.

    Attributes:
        dataset: Dataset name (``--dataset``).
        preset: Preset name (``--preset``).
        search_epochs: ``search.epochs``.
        retrain_epochs: ``retrain.epochs``.
        seed: ``search.seed`` and ``retrain.seed`` (``data.seed`` stays, so runs
            with different seeds share one ingest).
        overrides: Further ``section.key=value`` settings, separated by spaces
            (shell quoting for values with spaces), applied last.
        data_dir: ``data.data_dir`` relative to the data volume ("" = none: the
            dataset by name, TFDS data in `TFDS_SUBDIR` on the volume).
    """

    dataset: str
    preset: str
    search_epochs: int
    retrain_epochs: int
    seed: int
    overrides: str = ""
    data_dir: str = ""


def split_overrides(text: str) -> List[str]:
    """The ``section.key=value`` entries of the ``overrides`` parameter.

    Raises:
        cli.UsageError: Unbalanced quotes, or a setting that is not a run parameter.
    """
    try:
        entries = shlex.split(text)
    except ValueError as err:
        raise cli.UsageError(f"overrides {text!r}: {err}; separate section.key=value entries "
                             "with spaces, quote values that hold spaces") from None
    for entry in entries:
        key = entry.split("=", 1)[0].strip()
        if key == "data.data_dir":
            raise cli.UsageError("overrides: set data.data_dir with the data_dir parameter "
                                 "(a path relative to the data volume)")
        if key == "runtime.log_every":
            raise cli.UsageError("overrides: runtime.log_every is fixed when compiling "
                                 "(python -m pipeline.kubeflow --override runtime.log_every=N)")
    return entries


def volume_path(data_dir: str, mount: str) -> str:
    """``data_dir`` (relative to the data volume) as a path inside the container.

    Raises:
        cli.UsageError: An absolute path or one leaving the volume.
    """
    if not data_dir:
        return ""
    relative = posixpath.normpath(data_dir)
    if posixpath.isabs(data_dir) or relative == ".." or relative.startswith("../"):
        raise cli.UsageError(f"data_dir={data_dir!r} must be a path relative to the data volume "
                             f"(mounted at {mount}), e.g. fashion-mnist")
    return mount if relative == "." else posixpath.join(mount, relative)


def run_overrides(params: RunParameters, mount: str) -> List[str]:
    """The overrides `params` stand for, in the order they apply."""
    data_dir = volume_path(params.data_dir, mount)
    return [f"data.tfds_dir={posixpath.join(mount, TFDS_SUBDIR)}",
            f"search.epochs={params.search_epochs}", f"retrain.epochs={params.retrain_epochs}",
            f"search.seed={params.seed}", f"retrain.seed={params.seed}",
            *split_overrides(params.overrides), f"data.data_dir={data_dir}"]


def run_config(params: RunParameters, mount: str) -> Any:
    """The config of a run with `params` and the data volume at `mount`.

    Raises:
        cli.UsageError: Unknown dataset or preset, bad ``overrides`` or ``data_dir``.
        tfdarts.config.ConfigError: Bad key or value.
    """
    return cli.build_config(params.dataset, params.preset, (), run_overrides(params, mount),
                            absolute_data_dir=False)


def _override_text(value: Any) -> str:
    """A config value as the override string that parses back to it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return repr(value) if isinstance(value, float) else str(value)


def _result_settings(config: Any) -> Dict[str, Any]:
    """``section.key -> value`` of `config` without the compile-only settings."""
    return {k: v for k, v in cli.flat_settings(config.to_dict()).items() if k not in _COMPILE_ONLY}


def _data_dir_parameter(data_dir: str, mount: str) -> str:
    """The ``data_dir`` parameter default for the compile-time ``data.data_dir``."""
    if data_dir and posixpath.isabs(data_dir):
        if not (data_dir + "/").startswith(mount.rstrip("/") + "/"):
            raise cli.UsageError(f"data.data_dir={data_dir} is not on the data volume: give a "
                                 f"path relative to it (mounted at {mount}) or one under {mount}")
        return posixpath.relpath(data_dir, mount)
    volume_path(data_dir, mount)
    return posixpath.normpath(data_dir) if data_dir else ""


def default_parameters(config: Any, preset: str, mount: str) -> RunParameters:
    """The run parameters whose resolved config is `config` (the compile-time one).

    Raises:
        cli.UsageError: ``data.data_dir`` is not on the data volume.
        ValueError: `config` cannot be expressed as parameters (a bug).
    """
    params = RunParameters(config.data.name, preset, config.search.epochs, config.retrain.epochs,
                           config.search.seed, data_dir=_data_dir_parameter(config.data.data_dir, mount))
    wanted = _result_settings(config)
    if not config.data.tfds_dir:
        wanted["data.tfds_dir"] = posixpath.join(mount, TFDS_SUBDIR)
    base = _result_settings(run_config(params, mount))
    extra = [f"{k}={_override_text(v)}" for k, v in wanted.items() if base.get(k) != v]
    params = dataclasses.replace(params, overrides=shlex.join(extra))
    if _result_settings(run_config(params, mount)) != wanted:
        raise ValueError(f"the config cannot be expressed as overrides {params.overrides!r}")
    return params


# ----------------------------------------------------------------------------- components


def _output_types() -> Dict[Tuple[str, str], str]:
    """kfp type of every ``(step, output key)``."""
    from pipeline.pipeline import STEPS

    return {(s.name, key): KFP_TYPES.get(type_name, "Artifact")
            for s in STEPS for key, type_name in s.outputs}


def _step_parameters(step: Any) -> Tuple[List[Dict[str, Any]], List[Any]]:
    """Parameter inputs and their arguments of a step component."""
    inputs: List[Dict[str, Any]] = [
        {"name": "config_json", "type": "String", "description": "the step's config sections"},
        {"name": "code_version", "type": "String", "description": "hash of the sources"},
        {"name": "work_root", "type": "String", "description": "folder for checkpoints"}]
    args: List[Any] = ["--config_json", {"inputValue": "config_json"},
                       "--code_version", {"inputValue": "code_version"},
                       "--work_root", {"inputValue": "work_root"}]
    if step.name == "ingest":  # only in the cache key: edited data files rerun ingest
        inputs.append({"name": "source_fingerprint", "type": "String",
                       "description": "content hash of the data files"})
    if step.name == "given":
        inputs += [{"name": "genotype_json", "type": "String"}, {"name": "origin", "type": "String"}]
        args += ["--genotype_json", {"inputValue": "genotype_json"},
                 "--origin", {"inputValue": "origin"}]
    return inputs, args


def _step_artifacts(step: Any) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]], List[Any]]:
    """Artifact inputs, outputs (views included) and their arguments of a step component."""
    from pipeline import steps as steps_lib

    types = _output_types()
    inputs: List[Dict[str, Any]] = []
    args: List[Any] = []
    for key, _ in step.inputs:
        producer, output = step.producer(key)
        optional = key in step.optional_inputs
        inputs.append({"name": key, "type": types[(producer, output)], "optional": optional,
                       "description": f"output {output} of step {producer}"})
        flag = ["--input", key, {"inputPath": key}]
        args += [{"if": {"cond": {"isPresent": key}, "then": flag}}] if optional else flag
    outputs: List[Dict[str, Any]] = []
    for key, type_name in step.outputs:
        outputs.append({"name": key, "type": types[(step.name, key)], "description": type_name})
        args += ["--output", key, {"outputPath": key}]
    for view in steps_lib.step_views(step):
        outputs.append({"name": view, "type": VIEW_TYPES[view], "description": f"{view} view"})
        args += ["--view", view, {"outputPath": view}]
    return inputs, outputs, args


def component_spec(step: Any, image: str) -> Dict[str, Any]:
    """The kfp component definition (YAML structure) of one `StepSpec`."""
    parameters, parameter_args = _step_parameters(step)
    artifacts, outputs, artifact_args = _step_artifacts(step)
    return {"name": step.name,
            "description": f"tfdarts {step.name} step (pipeline.components.{step.name}.run)",
            "inputs": parameters + artifacts, "outputs": outputs,
            "implementation": {"container": {
                "image": image, "command": ["python", "-m", "pipeline.steps", step.name],
                "args": parameter_args + artifact_args + ["--executor_input", {"executorInput": None}]}}}


def config_component_spec(steps: Sequence[Any], image: str, data_mount: str) -> Dict[str, Any]:
    """The kfp component definition of the config task, with one output per step."""
    types = {"search_epochs": "Integer", "retrain_epochs": "Integer", "seed": "Integer"}
    inputs = [{"name": n, "type": types.get(n, "String")} for n in RUN_PARAMETERS]
    args: List[Any] = [x for n in RUN_PARAMETERS for x in (f"--{n}", {"inputValue": n})]
    args += ["--data_mount", data_mount, "--fingerprint", {"outputPath": "source_fingerprint"}]
    outputs = [{"name": "source_fingerprint", "type": "String"}]
    for step in steps:
        outputs.append({"name": f"{step.name}_config", "type": "String"})
        args += ["--step_config", step.name, {"outputPath": f"{step.name}_config"}]
    return {"name": CONFIG_TASK, "description": "resolve the run parameters into each step's config",
            "inputs": inputs, "outputs": outputs,
            "implementation": {"container": {
                "image": image, "command": ["python", "-m", "pipeline.steps", CONFIG_TASK],
                "args": args}}}


# ----------------------------------------------------------------------------- pipeline


@dataclasses.dataclass(frozen=True)
class Volumes:
    """The persistent volume claims (default names) and where tasks mount them."""

    data_pvc: str = DATA_PVC
    work_pvc: str = WORK_PVC
    data_mount: str = DATA_MOUNT
    work_mount: str = WORK_MOUNT


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything `compile_pipeline` turns into tasks."""

    steps: Tuple[Any, ...]
    image: str
    version: str
    log_every: int
    volumes: Volumes = Volumes()
    gpus: int = 0
    resources: Mapping[str, Tuple[str, str]] = dataclasses.field(default_factory=lambda: dict(RESOURCES))
    given: Optional[Tuple[str, str]] = None


def _set_resources(task: Any, name: str, plan: Plan) -> None:
    cpu, memory = plan.resources[name]
    task.set_cpu_request(cpu).set_memory_request(memory).set_memory_limit(memory)
    if plan.gpus and name in GPU_STEPS:
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(plan.gpus)


def _config_task(component: Any, run: Mapping[str, Any], plan: Plan) -> Any:
    """The config task: never cached, it rereads the data files for their fingerprint."""
    from kfp import kubernetes

    task = component(**{n: run[n] for n in RUN_PARAMETERS})
    task.set_display_name(CONFIG_TASK)
    task.set_caching_options(False)
    _set_resources(task, CONFIG_TASK, plan)
    kubernetes.mount_pvc(task, pvc_name=run["data_pvc"], mount_path=plan.volumes.data_mount)
    return task


def _step_kwargs(step: Any, config: Any, tasks: Mapping[str, Any], run: Mapping[str, Any],
                 plan: Plan) -> Dict[str, Any]:
    """A step task's arguments: its config from the config task, upstream artifacts."""
    kwargs: Dict[str, Any] = {"config_json": config.outputs[f"{step.name}_config"],
                              "code_version": plan.version, "work_root": run["work_root"]}
    if step.name == "ingest":
        kwargs["source_fingerprint"] = config.outputs["source_fingerprint"]
    if step.name == "given":
        kwargs["genotype_json"], kwargs["origin"] = plan.given
    for key, _ in step.inputs:
        producer, out = step.producer(key)
        kwargs[key] = tasks[producer].outputs[out]
    return kwargs


def _step_task(component: Any, step: Any, kwargs: Mapping[str, Any], run: Mapping[str, Any],
               plan: Plan) -> Any:
    from kfp import kubernetes

    from pipeline.pipeline import LOG_EVERY_ENV

    task = component(**kwargs)
    task.set_display_name(step.name)
    task.set_caching_options(True)
    # the logging cadence is left out of config_json (the cache key): it goes here
    task.set_env_variable(LOG_EVERY_ENV, str(plan.log_every))
    _set_resources(task, step.name, plan)
    kubernetes.mount_pvc(task, pvc_name=run["work_pvc"], mount_path=plan.volumes.work_mount)
    if step.name == "ingest":
        kubernetes.mount_pvc(task, pvc_name=run["data_pvc"], mount_path=plan.volumes.data_mount)
    return task


def _add_tasks(plan: Plan, components: Mapping[str, Any], run: Mapping[str, Any]) -> None:
    """The config task, then one task per step (inside the pipeline function)."""
    config = _config_task(components[CONFIG_TASK], run, plan)
    tasks: Dict[str, Any] = {}
    for step in plan.steps:
        kwargs = _step_kwargs(step, config, tasks, run, plan)
        tasks[step.name] = _step_task(components[step.name], step, kwargs, run, plan)


def _components(plan: Plan) -> Dict[str, Any]:
    from kfp.components import load_component_from_text

    specs = {s.name: component_spec(s, plan.image) for s in plan.steps}
    specs[CONFIG_TASK] = config_component_spec(plan.steps, plan.image, plan.volumes.data_mount)
    return {name: load_component_from_text(yaml.safe_dump(spec, sort_keys=False))
            for name, spec in specs.items()}


def _pipeline_function(plan: Plan, defaults: RunParameters, name: str, description: str) -> Any:
    """The ``@dsl.pipeline`` function; its parameters default to `defaults` and `plan.volumes`."""
    from kfp import dsl

    components, d, v = _components(plan), defaults, plan.volumes

    @dsl.pipeline(name=name, description=description)
    def tfdarts_pipeline(dataset: str = d.dataset, preset: str = d.preset,
                         search_epochs: int = d.search_epochs, retrain_epochs: int = d.retrain_epochs,
                         seed: int = d.seed, overrides: str = d.overrides, data_dir: str = d.data_dir,
                         work_root: str = v.work_mount, data_pvc: str = v.data_pvc,
                         work_pvc: str = v.work_pvc):
        _add_tasks(plan, components, locals())

    return tfdarts_pipeline


def _write(pipeline_fn: Any, output: str) -> str:
    """Compiles `pipeline_fn` into `output` atomically."""
    from kfp import compiler

    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(output)}.tmp-{os.getpid()}.yaml")
    try:
        compiler.Compiler().compile(pipeline_fn, tmp)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return output


def compile_pipeline(config: Any, image: str, output: str, *, preset: str = "cpu",
                     baselines: bool = False, gpus: int = 0, version: Optional[str] = None,
                     volumes: Volumes = Volumes(),
                     resources: Optional[Mapping[str, Tuple[str, str]]] = None,
                     given: Optional[Tuple[str, str]] = None) -> str:
    """Writes the Kubeflow pipeline YAML of the active steps.

    Args:
        config: Run configuration: the defaults of the run parameters.
        image: Container image with the project installed.
        output: YAML file to write.
        preset: The preset `config` was built on (the ``preset`` parameter's default).
        baselines: Include the baselines step.
        gpus: GPUs per training task (search, retrain, evaluate, baselines); 0 = none.
        version: Code version parameter (default `pipeline.pipeline.code_version()`).
        volumes: Claim names (parameter defaults) and mount paths.
        resources: ``(CPU, memory)`` per task (default `RESOURCES`).
        given: ``(genotype JSON, origin)`` of a cell to retrain instead of searching.

    Returns:
        `output`.
    """
    from pipeline.pipeline import active_steps, code_version, pipeline_name

    steps = tuple(active_steps(baselines, given=given is not None))
    plan = Plan(steps, image, version or code_version(), config.runtime.log_every, volumes, gpus,
                dict(resources or RESOURCES), given)
    defaults = default_parameters(config, preset, volumes.data_mount)
    description = (f"tfdarts DARTS on {config.data.name} (by default): "
                   + " -> ".join([CONFIG_TASK] + [s.name for s in steps]))
    return _write(_pipeline_function(plan, defaults, pipeline_name(config).replace("_", "-"),
                                     description), output)


# ----------------------------------------------------------------------------- command line


def parse_resources(cpu: Sequence[str], memory: Sequence[str]) -> Dict[str, Tuple[str, str]]:
    """`RESOURCES` with ``--cpu TASK=CORES`` and ``--memory TASK=SIZE`` applied.

    Raises:
        cli.UsageError: Unknown task or a value Kubernetes does not accept.
    """
    table = {name: list(values) for name, values in RESOURCES.items()}
    for flag, entries, pattern, slot, example in (("--cpu", cpu, _CPU, 0, "search=8 or config=500m"),
                                                  ("--memory", memory, _MEMORY, 1, "search=16Gi")):
        for entry in entries:
            name, _, value = entry.partition("=")
            if name not in table:
                raise cli.UsageError(f"{flag} {entry}: unknown task {name!r}; known: "
                                     f"{', '.join(table)} (e.g. {flag} {example})")
            if not pattern.match(value):
                raise cli.UsageError(f"{flag} {entry}: {value!r} is not a Kubernetes quantity "
                                     f"(e.g. {flag} {example})")
            table[name][slot] = value
    return {name: (values[0], values[1]) for name, values in table.items()}


def given_cell(spec: str) -> Tuple[str, str]:
    """``(canonical genotype JSON, origin)`` of ``--genotype`` (a published name or a file).

    Raises:
        tfdarts.genotype.GenotypeError: Neither a published cell nor a valid file.
    """
    import json

    from tfdarts.genotype import resolve

    genotype, origin = resolve(spec)
    return json.dumps(genotype.to_dict(), sort_keys=True), origin


def _parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m pipeline.kubeflow",
                                description="Compile the tfdarts pipeline for Kubeflow.")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--image", required=True, help="container image with tfdarts installed")
    parser.add_argument("--output", default="pipeline.yaml")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--config", action="append", default=[], help="extra YAML config file")
    parser.add_argument("--override", action="append", default=[], help="section.key=value")
    parser.add_argument("--baselines", action="store_true", help="include the baselines step")
    parser.add_argument("--genotype", default="", help="retrain this cell instead of searching: "
                        "DARTS_V1, DARTS_V2 or a genotype JSON file")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs per training task")
    parser.add_argument("--cpu", action="append", default=[], metavar="TASK=CORES",
                        help="CPU request of a task (repeatable)")
    parser.add_argument("--memory", action="append", default=[], metavar="TASK=SIZE",
                        help="memory request and limit of a task (repeatable)")
    parser.add_argument("--data_pvc", default=DATA_PVC, help="data claim (parameter default)")
    parser.add_argument("--work_pvc", default=WORK_PVC, help="working claim (parameter default)")
    parser.add_argument("--data_mount", default=DATA_MOUNT, help="where tasks mount the data")
    parser.add_argument("--work_mount", default=WORK_MOUNT, help="where tasks mount the work folder")
    return parser


def _volumes(args: argparse.Namespace) -> Volumes:
    for flag in ("data_pvc", "work_pvc"):
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", getattr(args, flag)):
            raise cli.UsageError(f"--{flag} {getattr(args, flag)!r} is not a claim name (lowercase "
                                 "letters, digits, '-' and '.', e.g. tfdarts-data)")
    for flag in ("data_mount", "work_mount"):
        path = getattr(args, flag)
        if not posixpath.isabs(path) or posixpath.normpath(path) == "/":
            raise cli.UsageError(f"--{flag} {path!r} must be an absolute folder other than /")
    if posixpath.normpath(args.data_mount) == posixpath.normpath(args.work_mount):
        raise cli.UsageError("--data_mount and --work_mount must differ")
    return Volumes(args.data_pvc, args.work_pvc, posixpath.normpath(args.data_mount),
                   posixpath.normpath(args.work_mount))


def _compile_config(args: argparse.Namespace) -> Any:
    """The compile-time config (the parameters' defaults), checked like a run's."""
    config = cli.build_config(args.dataset, args.preset, args.config, args.override,
                              absolute_data_dir=False)
    if args.baselines:
        from tfdarts import baselines as baselines_lib

        baselines_lib.check_include(config)
    return config


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point."""
    args = _parser().parse_args(argv)
    cli.quiet_libraries()
    from tfdarts.config import ConfigError
    from tfdarts.genotype import GenotypeError
    from tfdarts.sources import DataError

    if args.gpus < 0:
        cli.fail("--gpus must be >= 0")
    try:
        volumes = _volumes(args)
        resources = parse_resources(args.cpu, args.memory)
        config = _compile_config(args)
        given = given_cell(args.genotype) if args.genotype else None
        default_parameters(config, args.preset, volumes.data_mount)
    except (cli.UsageError, ConfigError, DataError, GenotypeError) as err:
        cli.fail(err)
    try:
        path = compile_pipeline(config, args.image, args.output, preset=args.preset,
                                baselines=args.baselines, gpus=args.gpus, volumes=volumes,
                                resources=resources, given=given)
    except OSError as err:
        cli.fail(f"cannot write {args.output}: {err.strerror or err}")
    sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
