"""Retrain: train the searched genotype from scratch (`tfdarts.trainer.retrain`) and
export it for serving.

The output is TFX's standard Model artifact: the serving SavedModel in ``Format-Serving/``
(``tfx.utils.path_utils.serving_model_dir``, where TFX's Trainer writes it, so TFX's
Evaluator, Pusher or InfraValidator find it), next to ``model.keras``, ``history.json``
and ``genotype.json``.
"""

import os
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component

from pipeline import artifacts
from pipeline.components import common
from tfdarts import contract
from tfdarts.config import Config

if TYPE_CHECKING:
    from tfdarts.data import DataSpec
    from tfdarts.genotype import Genotype

FILES = (contract.MODEL_FILE, contract.HISTORY_FILE, contract.GENOTYPE_FILE)


def export_serving(model_file: str, model_dir: str, spec: "DataSpec",
                   genotype: Optional["Genotype"]) -> str:
    """Exports the Keras file `model_file` as the serving SavedModel of the Model artifact
    folder `model_dir` (`tfdarts.export.export_saved_model`, with spec and genotype).

    Returns:
        The SavedModel folder, ``<model_dir>/Format-Serving``.
    """
    from tfx.utils import path_utils

    from tfdarts import export

    model = export.load_model(model_file)
    return export.export_saved_model(model, spec, path_utils.serving_model_dir(model_dir), genotype)


def run(config: Config, inputs: Mapping[str, str], outputs: Mapping[str, str],
        work_dir: str) -> Dict[str, Dict[str, Any]]:
    """Retrains the genotype of ``inputs["search"]`` (resuming from `work_dir`).

    Under ``runtime.strategy=multi_worker`` every worker runs this step with the
    same arguments and only the chief writes the output artifact.

    Returns:
        Model properties: parameters, epochs, seconds, last train/test metrics, genotype
        and where the SavedModel is (relative to the artifact).
    """
    from tfdarts import data as data_lib
    from tfdarts import fileio, network, trainer
    from tfdarts.genotype import Genotype
    from tfdarts.model import count_params

    # first: a multi-worker strategy must exist before other TensorFlow work
    strategy = trainer.make_strategy(config.runtime.devices, config.runtime.strategy)
    genotype = Genotype.load(os.path.join(inputs["search"], contract.GENOTYPE_FILE))
    data = data_lib.load_prepared(inputs["dataset"])
    model_fn = network.model_fn(data.spec.task, genotype, config.retrain)
    result = trainer.retrain(config, data, model_fn, work_dir, strategy=strategy)
    role = trainer.worker_role(strategy)
    if role is not None:  # a non-chief worker: the chief writes the artifact
        return {"model": {"worker_role": role}}
    common.copy_files(work_dir, outputs["model"], FILES)
    serving = export_serving(os.path.join(work_dir, contract.MODEL_FILE), outputs["model"],
                             data.spec, genotype)
    history = fileio.read_json(os.path.join(work_dir, contract.HISTORY_FILE))
    return {"model": {
        "genotype": genotype.to_dict(), "dataset": data.spec.name,
        "fingerprint": data.spec.fingerprint, "metric": data.spec.task.metric_name,
        "params": int(count_params(result.model)), "trainable_params": int(result.params),
        "epochs": len(result.history),
        "cells": config.retrain.cells, "channels": config.retrain.channels,
        "seconds": float(result.seconds), "resumed_from_epoch": int(result.resumed_from),
        "train_loss": common.last_value(history, "train_loss"),
        "train_metric": common.last_value(history, "train_metric"),
        "test_metric": common.last_value(history, "test_metric"),
        "saved_model": os.path.relpath(serving, outputs["model"])}}


@component
def Retrain(dataset: InputArtifact[artifacts.Dataset], search: InputArtifact[artifacts.SearchResult],
            model: OutputArtifact[artifacts.Model], config_json: Parameter[str],
            code_version: Parameter[str], work_root: Parameter[str] = "") -> None:
    """TFX wrapper of `run`."""
    common.run_tfx("retrain", run, {"dataset": dataset, "search": search}, {"model": model},
                   config_json, code_version, work_root)
