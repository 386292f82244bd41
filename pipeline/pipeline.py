"""The pipeline's steps and wiring, defined once, and the pure TFX pipeline builder.

`STEPS` lists every step with its inputs (``key -> "producer.output"``), outputs
(``key -> artifact type name``) and the config sections it depends on. Both runners
read it: `create_pipeline` turns it into TFX components for LocalDagRunner, and
`pipeline.kubeflow` into Kubeflow tasks that run `pipeline.steps` in the project's
image. Either way a step runs the same function, ``run`` in
``pipeline.components.<step>``.

Each step receives only the config sections it depends on (as a JSON string
parameter), so changing e.g. ``retrain.epochs`` reuses the cached ingest and search.
A ``code_version`` parameter (a hash of the tfdarts and pipeline sources) makes any
code edit invalidate TFX's cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple

from tfdarts import contract
from tfdarts.config import Config
from tfdarts.contract import METADATA_FILE, PIPELINE_ROOT_DIR, WORK_DIR

__all__ = ["StepSpec", "STEPS", "active_steps", "step_config_json", "code_version",
           "pipeline_name", "create_pipeline", "METADATA_FILE", "PIPELINE_ROOT_DIR", "WORK_DIR"]

ALL_SECTIONS = ("data", "search", "retrain", "baselines", "runtime")


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """One pipeline step.

    Attributes:
        name: Step name (``ingest``); also the module ``pipeline.components.<name>``
            and the Kubeflow task name.
        component: TFX component (function) name in that module; also the TFX node id.
        sections: Config sections passed to the step (its cache key).
        inputs: ``(input key, "producer_step.output_key")`` pairs.
        outputs: ``(output key, artifact type name)`` pairs.
        optional_inputs: Input keys that may be absent (their producer is not active).
        optional: The step only runs when asked for (baselines).
    """

    name: str
    component: str
    sections: Tuple[str, ...]
    inputs: Tuple[Tuple[str, str], ...] = ()
    outputs: Tuple[Tuple[str, str], ...] = ()
    optional_inputs: Tuple[str, ...] = ()
    optional: bool = False

    @property
    def module(self) -> str:
        """Module holding the step's ``run`` function and TFX component."""
        return f"pipeline.components.{self.name}"

    def producer(self, key: str) -> Tuple[str, str]:
        """``(producer step, output key)`` of input `key`."""
        step, output = dict(self.inputs)[key].split(".")
        return step, output


_TRAINING = ("data", "search", "retrain", "runtime")

STEPS: Tuple[StepSpec, ...] = (
    StepSpec("ingest", "Ingest", ("data",), outputs=(("dataset", contract.DATASET_TYPE),)),
    StepSpec("search", "Search", ("data", "search", "runtime"),
             inputs=(("dataset", "ingest.dataset"),),
             outputs=(("search", contract.SEARCH_RESULT_TYPE),)),
    StepSpec("given", "Given", ("data",), inputs=(("dataset", "ingest.dataset"),),
             outputs=(("search", contract.SEARCH_RESULT_TYPE),), optional=True),
    StepSpec("retrain", "Retrain", _TRAINING,
             inputs=(("dataset", "ingest.dataset"), ("search", "search.search")),
             outputs=(("model", contract.MODEL_TYPE),)),
    StepSpec("evaluate", "Evaluate", _TRAINING,
             inputs=(("dataset", "ingest.dataset"), ("search", "search.search"),
                     ("model", "retrain.model")),
             outputs=(("evaluation", contract.EVALUATION_TYPE),)),
    StepSpec("baselines", "Baselines", ALL_SECTIONS,
             inputs=(("dataset", "ingest.dataset"),),
             outputs=(("baselines", contract.BASELINES_TYPE),), optional=True),
    StepSpec("analyze", "Analyze", ALL_SECTIONS,
             inputs=(("dataset", "ingest.dataset"), ("search", "search.search"),
                     ("model", "retrain.model"), ("evaluation", "evaluate.evaluation"),
                     ("baselines", "baselines.baselines")),
             outputs=(("report", contract.REPORT_TYPE),), optional_inputs=("baselines",)),
)
"""Every step in topological order. The five core steps always run; ``baselines``
only with ``--baselines``; ``given`` (a cell from a file or a paper) replaces
``search`` with ``--genotype``."""


def active_steps(baselines: bool = False, given: bool = False) -> List[StepSpec]:
    """The steps to run, with inputs from inactive steps dropped.

    Args:
        baselines: Include the baselines step (random search, ResNets, DARTS_V2).
        given: Retrain a given cell: the ``given`` step replaces ``search`` (and
            feeds the steps that read ``search.search``).

    Returns:
        Steps in topological order.
    """
    wanted = {"baselines": baselines, "given": given, "search": not given}
    chosen = [s for s in STEPS if wanted.get(s.name, not s.optional)]
    names = {s.name for s in chosen}
    out = []
    for step in chosen:
        rewired = [(k, "given.search" if given and src == "search.search" else src) for k, src in step.inputs]
        inputs = tuple((k, src) for k, src in rewired if src.split(".")[0] in names)
        missing = [k for k, src in rewired if (k, src) not in inputs]
        if any(k not in step.optional_inputs for k in missing):
            raise ValueError(f"step {step.name} needs inputs {missing} from inactive steps")
        out.append(dataclasses.replace(step, inputs=inputs))
    return out


NON_RESULT_KEYS: Dict[str, Tuple[str, ...]] = {"runtime": ("log_every",)}
"""Settings that change no result; left out of the steps' config (their cache key).
The local runner hands them to the steps through `LOG_EVERY_ENV` instead."""

LOG_EVERY_ENV = "TFDARTS_LOG_EVERY"


def step_config_json(config: Config, step: StepSpec) -> str:
    """The config sections `step` depends on, as canonical JSON (its cache key).

    `NON_RESULT_KEYS` are left out, so changing the logging cadence reuses the cache.
    """
    full = config.to_dict()
    sections = {s: {k: v for k, v in full[s].items() if k not in NON_RESULT_KEYS.get(s, ())}
                for s in step.sections}
    return json.dumps(sections, sort_keys=True, separators=(",", ":"))


def _source_files(package_dir: str) -> List[str]:
    files = []
    for root, dirs, names in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        files += [os.path.join(root, n) for n in sorted(names) if n.endswith(".py")]
    return files


def code_version() -> str:
    """Short sha256 of the tfdarts and pipeline Python sources (paths and contents).

    Any edit to either package changes it, which invalidates TFX's cache for every step.
    """
    import tfdarts
    import pipeline as pipeline_pkg

    h = hashlib.sha256()
    for package in (tfdarts, pipeline_pkg):
        base = os.path.dirname(os.path.abspath(package.__file__))
        for path in _source_files(base):
            h.update(os.path.relpath(path, os.path.dirname(base)).encode())
            with open(path, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:16]


def pipeline_name(config: Config) -> str:
    """``tfdarts_<dataset>`` with characters TFX and Kubeflow accept."""
    return "tfdarts_" + re.sub(r"[^A-Za-z0-9_]+", "_", config.data.name).strip("_")


def _component_factory(step: StepSpec) -> Any:
    return getattr(importlib.import_module(step.module), step.component)


def create_pipeline(config: Config, pipeline_root: str, metadata_path: str, *,
                    baselines: bool = False, work_root: Optional[str] = None,
                    version: Optional[str] = None, name: Optional[str] = None,
                    enable_cache: bool = True, source_fingerprint: str = "",
                    given: Optional[Tuple[str, str]] = None) -> Any:
    """Builds the TFX pipeline (pure: reads no flags, runs nothing).

    Args:
        config: The run configuration.
        pipeline_root: Folder for TFX's artifact folders.
        metadata_path: SQLite file of the ML Metadata store.
        baselines: Also run the baselines step and add its records to the report.
        work_root: Folder for the steps' working folders (checkpoints used to resume
            an interrupted step); default ``<pipeline_root>/../work``.
        version: Code version parameter (default `code_version()`).
        name: Pipeline name (default `pipeline_name(config)`).
        enable_cache: Reuse outputs of finished executions with identical inputs.
        source_fingerprint: Content hash of the local data files
            (`tfdarts.data.source_fingerprint`), a parameter of the ingest step so
            that an edited data file invalidates its cache and everything downstream.
        given: ``(genotype JSON, origin)`` of a cell to retrain instead of searching
            (`pipeline.components.given`); origin names its file or paper.

    Returns:
        A ``tfx.orchestration.pipeline.Pipeline``.
    """
    from tfx.orchestration import metadata
    from tfx.orchestration import pipeline as tfx_pipeline

    version = version or code_version()
    if work_root is None:
        work_root = os.path.join(os.path.dirname(os.path.abspath(pipeline_root)), WORK_DIR)
    components: Dict[str, Any] = {}
    for step in active_steps(baselines, given=given is not None):
        kwargs: Dict[str, Any] = {"source_fingerprint": source_fingerprint} if step.name == "ingest" else {}
        if step.name == "given":
            kwargs.update(genotype_json=given[0], origin=given[1])
        for key, _ in step.inputs:
            producer, output = step.producer(key)
            kwargs[key] = components[producer].outputs[output]
        components[step.name] = _component_factory(step)(
            config_json=step_config_json(config, step), code_version=version,
            work_root=os.path.abspath(work_root), **kwargs)
    return tfx_pipeline.Pipeline(
        pipeline_name=name or pipeline_name(config),
        pipeline_root=os.path.abspath(pipeline_root),
        components=list(components.values()),
        enable_cache=enable_cache,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(
            os.path.abspath(metadata_path)))

