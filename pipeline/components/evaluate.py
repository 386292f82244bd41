"""Evaluate: test-split metrics and the SavedModel export (`tfdarts.evaluation`)."""

from typing import Any, Dict, Mapping

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component

from pipeline import artifacts
from pipeline.components import common
from tfdarts import contract
from tfdarts.config import Config


COST_KEYS = ("search_seconds", "search_cpu_seconds", "train_seconds", "train_cpu_seconds")


def run(config: Config, inputs: Mapping[str, str], outputs: Mapping[str, str],
        work_dir: str) -> Dict[str, Dict[str, Any]]:
    """Evaluates ``inputs["model"]`` and exports it to ``outputs["evaluation"]``.

    Returns:
        Evaluation properties: one ``<metric>`` value per test metric, parameters,
        seconds, and where the SavedModel is.
    """
    from tfdarts import data as data_lib
    from tfdarts import evaluation

    data = data_lib.load_prepared(inputs["dataset"])
    search = common.read_properties(inputs["search"])
    given = search.get("source") == "given"
    record = evaluation.evaluate_and_export(config, data, inputs["model"], outputs["evaluation"],
                                            search_seconds=search.get("seconds"),
                                            search_cpu_seconds=search.get("cpu_seconds"),
                                            name="given" if given else "darts")
    props: Dict[str, Any] = {
        "model": record["model"], "dataset": data.spec.name, "fingerprint": data.spec.fingerprint,
        "metric": data.spec.task.metric_name, "params": record["params"],
        **{key: record.get(key) for key in COST_KEYS},
        "cell_source": f"given: {search.get('origin')}" if given else f"searched on {data.spec.name}",
        "saved_model": contract.SAVED_MODEL_DIR, "metrics": record["metrics"]}
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
