"""Search: bilevel DARTS search on the training split (`tfdarts.trainer.search`)."""

import os
from typing import Any, Dict, Mapping

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component

from pipeline import artifacts
from pipeline.components import common
from tfdarts import contract
from tfdarts.config import Config

FILES = (contract.GENOTYPE_FILE, contract.ALPHAS_FILE, contract.HISTORY_FILE)


def run(config: Config, inputs: Mapping[str, str], outputs: Mapping[str, str],
        work_dir: str) -> Dict[str, Dict[str, Any]]:
    """Searches (resuming from checkpoints in `work_dir`), then copies the results out.

    Under ``runtime.strategy=multi_worker`` every worker runs this step with the
    same arguments and only the chief writes the output artifact.

    Returns:
        Search properties: genotype, final metrics, supernet parameters, seconds.
    """
    from tfdarts import data as data_lib
    from tfdarts import fileio, trainer

    # first: a multi-worker strategy must exist before other TensorFlow work
    strategy = trainer.make_strategy(config.runtime.devices, config.runtime.strategy)
    data = data_lib.load_prepared(inputs["dataset"])
    result = trainer.search(config, data, work_dir, strategy)
    role = trainer.worker_role(strategy)
    if role is not None:  # a non-chief worker: the chief writes the artifact
        return {"search": {"worker_role": role}}
    common.copy_files(work_dir, outputs["search"], FILES)
    history = fileio.read_json(os.path.join(work_dir, contract.HISTORY_FILE))
    return {"search": {
        "genotype": result.genotype.to_dict(), "dataset": data.spec.name,
        "fingerprint": data.spec.fingerprint, "metric": data.spec.task.metric_name,
        "epochs": len(result.history), "order": config.search.order,
        "supernet_params": int(result.params), "seconds": float(result.seconds),
        "cpu_seconds": result.cpu_seconds,
        "resumed_from_epoch": int(result.resumed_from),
        "train_loss": common.last_value(history, "train_loss"),
        "train_metric": common.last_value(history, "train_metric"),
        "val_loss": common.last_value(history, "val_loss"),
        "val_metric": common.last_value(history, "val_metric")}}


@component
def Search(dataset: InputArtifact[artifacts.Dataset], search: OutputArtifact[artifacts.SearchResult],
           config_json: Parameter[str], code_version: Parameter[str],
           work_root: Parameter[str] = "") -> None:
    """TFX wrapper of `run`."""
    common.run_tfx("search", run, {"dataset": dataset}, {"search": search}, config_json,
                   code_version, work_root)
