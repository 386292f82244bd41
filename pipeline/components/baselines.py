"""Baselines: random search, ResNets and DARTS_V2 in the same code path
(`tfdarts.baselines.run_baselines`); only with ``--baselines``."""

import os
from typing import Any, Dict, Mapping

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component

from pipeline import artifacts
from pipeline.components import common
from tfdarts import contract
from tfdarts.config import Config


def run(config: Config, inputs: Mapping[str, str], outputs: Mapping[str, str],
        work_dir: str) -> Dict[str, Dict[str, Any]]:
    """Trains and evaluates ``config.baselines.include`` (resuming from `work_dir`).

    Writes `contract.RECORDS_FILE` (list of result records) and ``<name>/`` (each
    baseline's evaluation folder, with its SavedModel) to ``outputs["baselines"]``.
    """
    from tfdarts import data as data_lib
    from tfdarts import baselines, fileio

    data = data_lib.load_prepared(inputs["dataset"])
    records = baselines.run_baselines(config, data, work_dir)
    out = outputs["baselines"]
    for name in config.baselines.include:
        common.copy_files(os.path.join(work_dir, name), os.path.join(out, name), ["eval"])
    fileio.write_json(os.path.join(out, contract.RECORDS_FILE), records)
    props: Dict[str, Any] = {"dataset": data.spec.name, "fingerprint": data.spec.fingerprint,
                             "models": [r["model"] for r in records]}
    metric = data.spec.task.metric_name
    for r in records:
        if metric in r.get("metrics", {}):
            props[f"{r['model']}_{metric}"] = float(r["metrics"][metric])
    return {"baselines": props}


@component
def Baselines(dataset: InputArtifact[artifacts.Dataset],
              baselines: OutputArtifact[artifacts.Baselines], config_json: Parameter[str],
              code_version: Parameter[str], work_root: Parameter[str] = "") -> None:
    """TFX wrapper of `run`."""
    common.run_tfx("baselines", run, {"dataset": dataset}, {"baselines": baselines}, config_json,
                   code_version, work_root)
