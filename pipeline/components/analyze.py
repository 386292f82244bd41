"""Analyze: HTML report, alpha statistics and the results table (`tfdarts.report`)."""

import os
from typing import Any, Dict, Mapping, Optional

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component

from pipeline import artifacts
from pipeline.components import common
from tfdarts import contract
from tfdarts.config import Config


def _context(config: Config, dataset_dir: str) -> Dict[str, Any]:
    """The report's data-and-settings facts: data spec, config, code version."""
    import tfdarts
    from tfdarts import fileio

    from pipeline.pipeline import code_version

    return {"spec": fileio.read_json(os.path.join(dataset_dir, contract.SPEC_FILE)),
            "config": config.to_dict(), "code_version": code_version(),
            "version": getattr(tfdarts, "__version__", "")}


def cell_source(search_props: Dict[str, Any]) -> str:
    """Where the retrained cell came from: ``searched on <dataset>`` or ``given: <origin>``."""
    if search_props.get("source") == "given":
        return f"given: {search_props.get('origin')}"
    return f"searched on {search_props.get('dataset')}"


def run(config: Config, inputs: Mapping[str, str], outputs: Mapping[str, str],
        work_dir: str) -> Dict[str, Dict[str, Any]]:
    """Builds the report from the search, retrain, evaluation (and baselines) folders.

    Writes ``report.html``, ``figures/``, ``stats.csv|json``, ``results.csv|md`` and
    ``summary.json`` (dataset, fingerprint, genotype, metrics, warnings).
    """
    from tfdarts import fileio, report

    out = outputs["report"]
    darts = fileio.read_json(os.path.join(inputs["evaluation"], contract.METRICS_FILE))
    records = [darts]
    if inputs.get("baselines"):
        records += fileio.read_json(os.path.join(inputs["baselines"], contract.RECORDS_FILE))
    dataset = common.read_properties(inputs["dataset"])
    metric = dataset.get("metric") or "accuracy"
    value = darts.get("metrics", {}).get(metric)
    title = f"tfdarts on {darts.get('dataset', config.data.name)}"
    if value is not None:
        title += f": test {metric} {value:.4f}"
    search_props = common.read_properties(inputs["search"])
    if search_props.get("source") == "given":
        from tfdarts.genotype import Genotype

        genotype = Genotype.load(os.path.join(inputs["search"], contract.GENOTYPE_FILE))
        report.build_given_report(out, genotype, search_props.get("origin", "given"), inputs["model"],
                                  records, title=title, evaluation_dir=inputs["evaluation"],
                                  context=_context(config, inputs["dataset"]))
    else:
        report.build_report(out, inputs["search"], inputs["model"], records, title=title,
                            evaluation_dir=inputs["evaluation"], context=_context(config, inputs["dataset"]))
    stats = fileio.read_json(os.path.join(out, contract.STATS_JSON))
    summary = {"dataset": darts.get("dataset"), "fingerprint": dataset.get("fingerprint"),
               "genotype": search_props.get("genotype"), "metric": metric, "value": value,
               "cell_source": cell_source(search_props),
               "metrics": darts.get("metrics"), "params": darts.get("params"),
               "search_seconds": darts.get("search_seconds"),
               "train_seconds": darts.get("train_seconds"),
               "search_cpu_seconds": darts.get("search_cpu_seconds"),
               "train_cpu_seconds": darts.get("train_cpu_seconds"),
               "warnings": stats.get("warnings", []),
               "models": [r.get("model") for r in records], "config": config.to_dict()}
    fileio.write_json(os.path.join(out, contract.SUMMARY_FILE), summary)
    props: Dict[str, Any] = {"report": contract.REPORT_FILE, "results": contract.RESULTS_CSV,
                             "dataset": summary["dataset"], "fingerprint": summary["fingerprint"],
                             "metric": metric, "warnings": len(summary["warnings"]),
                             "models": summary["models"]}
    if value is not None:
        props[metric] = float(value)
    return {"report": props}


@component
def Analyze(dataset: InputArtifact[artifacts.Dataset], search: InputArtifact[artifacts.SearchResult],
            model: InputArtifact[artifacts.Model], evaluation: InputArtifact[artifacts.Evaluation],
            report: OutputArtifact[artifacts.Report], config_json: Parameter[str],
            code_version: Parameter[str], work_root: Parameter[str] = "",
            baselines: InputArtifact[artifacts.Baselines] = None) -> None:
    """TFX wrapper of `run` (``baselines`` only with ``--baselines``)."""
    inputs: Dict[str, Optional[Any]] = {"dataset": dataset, "search": search, "model": model,
                                        "evaluation": evaluation, "baselines": baselines}
    common.run_tfx("analyze", run, inputs, {"report": report}, config_json, code_version, work_root)
