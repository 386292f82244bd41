"""Compiles the pipeline for Kubeflow Pipelines (kfp v2 YAML).

    python -m pipeline.kubeflow --dataset fashion_mnist --image IMAGE --output pipeline.yaml

The steps and their wiring come from `pipeline.pipeline.STEPS`, like the local TFX
run: each step becomes a container component running ``python -m pipeline.steps
<step>`` in IMAGE, which calls the same step function as the TFX component. The
config is merged exactly as `pipeline.run` does (preset, dataset file, ``--config``,
``--override``) and each task receives the sections its step depends on, so Kubeflow's
cache reuses a search when only retrain settings change. The compiled pipeline has one
parameter, ``work_root``: a folder shared by the tasks (a mounted volume or a bucket
path) for the steps' checkpoints, so a retried task resumes; empty means the
container's temporary folder.
"""

import argparse
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import yaml

from pipeline import cli

GPU_STEPS = ("search", "retrain", "evaluate", "baselines")
"""Steps that get ``--gpus`` accelerators."""


def component_spec(step: Any, image: str) -> Dict[str, Any]:
    """The kfp component definition (YAML structure) of one `StepSpec`."""
    inputs: List[Dict[str, Any]] = [
        {"name": "config_json", "type": "String", "description": "the step's config sections"},
        {"name": "code_version", "type": "String", "description": "hash of the sources"},
        {"name": "work_root", "type": "String", "default": "", "optional": True,
         "description": "shared folder for checkpoints ('' = container temporary folder)"}]
    args: List[Any] = ["--config_json", {"inputValue": "config_json"},
                       "--code_version", {"inputValue": "code_version"},
                       "--work_root", {"inputValue": "work_root"}]
    for key, _ in step.inputs:
        producer, output = step.producer(key)
        optional = key in step.optional_inputs
        inputs.append({"name": key, "type": "Artifact", "optional": optional,
                       "description": f"output {output} of step {producer}"})
        flag = ["--input", key, {"inputPath": key}]
        args += [{"if": {"cond": {"isPresent": key}, "then": flag}}] if optional else flag
    outputs = []
    for key, type_name in step.outputs:
        outputs.append({"name": key, "type": "Artifact", "description": type_name})
        args += ["--output", key, {"outputPath": key}]
    return {"name": step.name,
            "description": f"tfdarts {step.name} step (pipeline.components.{step.name}.run)",
            "inputs": inputs, "outputs": outputs,
            "implementation": {"container": {
                "image": image, "command": ["python", "-m", "pipeline.steps", step.name],
                "args": args}}}


def compile_pipeline(config: Any, image: str, output: str, *, baselines: bool = False,
                     gpus: int = 0, version: Optional[str] = None) -> str:
    """Writes the Kubeflow pipeline YAML of the active steps.

    Args:
        config: Run configuration.
        image: Container image with the project installed.
        output: YAML file to write.
        baselines: Include the baselines step.
        gpus: GPUs per training task (search, retrain, evaluate, baselines); 0 = none.
        version: Code version parameter (default `pipeline.pipeline.code_version()`).

    Returns:
        `output`.
    """
    from kfp import compiler, dsl
    from kfp.components import load_component_from_text

    from pipeline.pipeline import (LOG_EVERY_ENV, active_steps, code_version, pipeline_name,
                                   step_config_json)

    version = version or code_version()
    steps = active_steps(baselines)
    components = {s.name: load_component_from_text(yaml.safe_dump(component_spec(s, image),
                                                                   sort_keys=False))
                  for s in steps}
    name = pipeline_name(config).replace("_", "-")

    @dsl.pipeline(name=name, description=f"tfdarts DARTS search on {config.data.name}: "
                  + " -> ".join(s.name for s in steps))
    def tfdarts_pipeline(work_root: str = ""):
        tasks: Dict[str, Any] = {}
        for step in steps:
            kwargs = {}
            for key, _ in step.inputs:
                producer, out = step.producer(key)
                kwargs[key] = tasks[producer].outputs[out]
            task = components[step.name](config_json=step_config_json(config, step),
                                         code_version=version, work_root=work_root, **kwargs)
            task.set_display_name(step.name)
            task.set_caching_options(True)
            # the logging cadence is left out of config_json (the cache key): it goes here
            task.set_env_variable(LOG_EVERY_ENV, str(config.runtime.log_every))
            if gpus and step.name in GPU_STEPS:
                task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)
            tasks[step.name] = task

    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(output)}.tmp-{os.getpid()}.yaml")
    try:
        compiler.Compiler().compile(tfdarts_pipeline, tmp)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return output


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.kubeflow",
                                     description="Compile the tfdarts pipeline for Kubeflow.")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--image", required=True, help="container image with tfdarts installed")
    parser.add_argument("--output", default="pipeline.yaml")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--config", action="append", default=[], help="extra YAML config file")
    parser.add_argument("--override", action="append", default=[], help="section.key=value")
    parser.add_argument("--baselines", action="store_true", help="include the baselines step")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs per training task")
    args = parser.parse_args(argv)
    cli.quiet_libraries()
    from tfdarts.config import ConfigError
    from tfdarts.sources import DataError

    if args.gpus < 0:
        cli.fail("--gpus must be >= 0")
    try:
        config = cli.build_config(args.dataset, args.preset, args.config, args.override,
                                  absolute_data_dir=False)
    except (cli.UsageError, ConfigError, DataError) as err:
        cli.fail(err)
    if args.baselines:
        from tfdarts import baselines as baselines_lib

        try:
            baselines_lib.check_include(config)
        except ConfigError as err:
            cli.fail(err)
    try:
        path = compile_pipeline(config, args.image, args.output, baselines=args.baselines,
                                gpus=args.gpus)
    except OSError as err:
        cli.fail(f"cannot write {args.output}: {err.strerror or err}")
    sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
