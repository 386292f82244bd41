"""Ingest: load, validate, split and fingerprint the data (`tfdarts.data.prepare`)."""

from typing import Any, Dict, Mapping

from tfx.dsl.component.experimental.annotations import OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component

from pipeline import artifacts
from pipeline.components import common
from tfdarts.config import Config


def run(config: Config, inputs: Mapping[str, str], outputs: Mapping[str, str],
        work_dir: str) -> Dict[str, Dict[str, Any]]:
    """Prepares ``config.data`` and saves it to ``outputs["dataset"]``.

    Returns:
        Dataset properties: name, fingerprint, source, task, sizes, statistics.
    """
    from tfdarts import data as data_lib

    prepared = data_lib.prepare(config.data)
    data_lib.save_prepared(prepared, outputs["dataset"])
    spec = prepared.spec
    return {"dataset": {
        "name": spec.name, "fingerprint": spec.fingerprint, "source": spec.source,
        "task": spec.task.kind, "metric": spec.task.metric_name,
        "input_shape": "x".join(str(d) for d in spec.task.input_shape),
        "num_outputs": spec.task.num_outputs, "num_train": spec.num_train,
        "num_test": spec.num_test, "augment": spec.augment, "split": spec.split}}


@component
def Ingest(dataset: OutputArtifact[artifacts.Dataset], config_json: Parameter[str],
           code_version: Parameter[str], work_root: Parameter[str] = "",
           source_fingerprint: Parameter[str] = "") -> None:
    """TFX wrapper of `run`.

    ``source_fingerprint`` (the local files' content hash) is unused here: it is a
    parameter only so that TFX's cache key changes when the data files do.
    """
    common.run_tfx("ingest", run, {}, {"dataset": dataset}, config_json, code_version, work_root)
