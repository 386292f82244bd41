"""Evaluate: test-split metrics (`tfdarts.evaluation`) and a check that the Model
artifact's serving SavedModel serves what the Keras model computes."""

import os
from typing import TYPE_CHECKING, Any, Dict, Mapping

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component

from pipeline import artifacts
from pipeline.components import common
from tfdarts import contract
from tfdarts.config import Config

if TYPE_CHECKING:
    from tfdarts.data import PreparedData

COST_KEYS = ("search_seconds", "search_cpu_seconds", "train_seconds", "train_cpu_seconds")
FILES = (contract.METRICS_FILE, contract.CONFUSION_FILE, contract.PREDICTIONS_FILE,
         contract.GENOTYPE_FILE)
"""What the evaluation artifact keeps of `tfdarts.evaluation.evaluate_and_export`'s folder
(those present); the export and the Keras file are the Model artifact's, so evaluate makes
neither."""
SERVING_CHECK_EXAMPLES = 256
"""Test inputs served through the SavedModel to check it."""
SERVING_TOLERANCE = 1e-3
"""Largest difference allowed between served and Keras outputs (probabilities, or
regression outputs in target standard deviations)."""


def check_serving(model_dir: str, data: "PreparedData",
                  examples: int = SERVING_CHECK_EXAMPLES) -> Dict[str, Any]:
    """Serves real test inputs through ``<model_dir>/Format-Serving`` and compares them
    with what the Keras file ``<model_dir>/model.keras`` gives for the same raw inputs.

    Args:
        model_dir: A retrained Model artifact folder.
        data: The prepared data (raw test inputs, spec).
        examples: How many test inputs to serve (the first ones, in file order).

    Returns:
        ``{"serving_checked": examples served, "serving_max_diff": largest difference}``.

    Raises:
        ValueError: The SavedModel is missing or unreadable (`tfdarts.export.Predictor`),
            or its outputs differ from the Keras model's by more than `SERVING_TOLERANCE`.
    """
    import numpy as np
    import tensorflow as tf

    from tfdarts import export

    path = os.path.join(model_dir, contract.SERVING_MODEL_DIR)
    predictor = export.Predictor(path)
    x = predictor.check_inputs(data.x_test[:examples])
    served = predictor(x)
    model = export.load_model(os.path.join(model_dir, contract.MODEL_FILE))
    expected = export.ServingModule(model, data.spec).serve(tf.constant(x))
    key = "probabilities" if data.spec.task.is_classification else "outputs"
    scale = 1.0 if key == "probabilities" else np.asarray(data.spec.target_std or (1.0,), np.float64)
    diff = float(np.max(np.abs(served[key] - expected[key].numpy()) / scale))
    if not diff <= SERVING_TOLERANCE:
        raise ValueError(f"the SavedModel {path} serves {key} that differ from the Keras model's by "
                         f"{diff:.3g} (> {SERVING_TOLERANCE}) on {len(x)} test inputs")
    return {"serving_checked": int(len(x)), "serving_max_diff": diff}


def run(config: Config, inputs: Mapping[str, str], outputs: Mapping[str, str],
        work_dir: str) -> Dict[str, Dict[str, Any]]:
    """Evaluates ``inputs["model"]`` on the test split and checks its serving SavedModel.

    Writes `contract.METRICS_FILE` (the result record), `contract.CONFUSION_FILE` or
    `contract.PREDICTIONS_FILE` and `contract.GENOTYPE_FILE` to ``outputs["evaluation"]``.

    Returns:
        Evaluation properties: one ``<metric>`` value per test metric, parameters,
        seconds, where the cell came from and the serving check (`check_serving`).
    """
    from tfdarts import data as data_lib
    from tfdarts import evaluation

    data = data_lib.load_prepared(inputs["dataset"])
    search = common.read_properties(inputs["search"])
    given = search.get("source") == "given"
    folder = os.path.join(work_dir, "evaluation")
    record = evaluation.evaluate_and_export(config, data, inputs["model"], folder,
                                            search_seconds=search.get("seconds"),
                                            search_cpu_seconds=search.get("cpu_seconds"),
                                            name="given" if given else "darts",
                                            export_model=False)
    common.copy_files(folder, outputs["evaluation"],
                      [n for n in FILES if os.path.exists(os.path.join(folder, n))])
    props: Dict[str, Any] = {
        "model": record["model"], "dataset": data.spec.name, "fingerprint": data.spec.fingerprint,
        "metric": data.spec.task.metric_name, "params": record["params"],
        **{key: record.get(key) for key in COST_KEYS},
        "cell_source": f"given: {search.get('origin')}" if given else f"searched on {data.spec.name}",
        "metrics": record["metrics"], **check_serving(inputs["model"], data)}
    props.update({name: float(value) for name, value in record["metrics"].items()})
    return {"evaluation": props}


@component
def Evaluate(dataset: InputArtifact[artifacts.Dataset], search: InputArtifact[artifacts.SearchResult],
             model: InputArtifact[artifacts.Model], evaluation: OutputArtifact[artifacts.Evaluation],
             config_json: Parameter[str], code_version: Parameter[str],
             work_root: Parameter[str] = "") -> None:
    """TFX wrapper of `run`."""
    common.run_tfx("evaluate", run, {"dataset": dataset, "search": search, "model": model},
                   {"evaluation": evaluation}, config_json, code_version, work_root)
