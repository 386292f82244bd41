"""TFX artifact types of the tfdarts pipeline.

The retrained network is TFX's standard ``Model`` type: the same ML Metadata type (name
``Model``, no properties, base type ``MODEL``) as ``tfx.types.standard_artifacts.Model``,
with the serving SavedModel in ``Format-Serving/`` as TFX's Trainer writes it, so tools
that know TFX find and serve it. The other types are tfdarts' own, and each carries an ML
Metadata base type (``TYPE_ANNOTATION``, recorded as the ``base_type`` of its ArtifactType):
dataset, search result (a model: the learned architecture), evaluation and baselines
(metrics) and report (statistics); type names and base types come from `tfdarts.contract`.

Every artifact is a folder. Besides its content it holds
`tfdarts.contract.PROPERTIES_FILE`, the same values that are recorded as the
artifact's custom properties in ML Metadata, so the Kubeflow runner (and anyone
without the store) can read them too.
"""

from __future__ import annotations

from typing import Any, Dict, Type

from tfx.types import artifact_utils, system_artifacts
from tfx.types.artifact import Artifact

from tfdarts import contract

BASE_TYPES: Dict[str, Type[system_artifacts.SystemArtifact]] = {
    "DATASET": system_artifacts.Dataset, "MODEL": system_artifacts.Model,
    "METRICS": system_artifacts.Metrics, "STATISTICS": system_artifacts.Statistics}
"""TFX's annotation class of each ML Metadata base type name in
`tfdarts.contract.ARTIFACT_BASE_TYPES`."""


def _annotation(type_name: str) -> Type[system_artifacts.SystemArtifact]:
    return BASE_TYPES[contract.ARTIFACT_BASE_TYPES[type_name]]


class Dataset(Artifact):
    """Prepared data: ``arrays.npz`` and ``spec.json`` (`tfdarts.data.save_prepared`)."""

    TYPE_NAME = contract.DATASET_TYPE
    TYPE_ANNOTATION = _annotation(contract.DATASET_TYPE)


class SearchResult(Artifact):
    """A finished search: ``genotype.json``, ``alphas.npz`` and ``history.json``."""

    TYPE_NAME = contract.SEARCH_RESULT_TYPE
    TYPE_ANNOTATION = _annotation(contract.SEARCH_RESULT_TYPE)


class Model(Artifact):
    """A retrained network, TFX's standard ``Model``: ``Format-Serving/`` (the serving
    SavedModel with ``spec.json`` and ``genotype.json``), ``model.keras``, ``history.json``
    and ``genotype.json``."""

    TYPE_NAME = contract.MODEL_TYPE
    TYPE_ANNOTATION = _annotation(contract.MODEL_TYPE)


class Evaluation(Artifact):
    """Test metrics: ``metrics.json``, ``confusion.json`` or ``predictions.json``."""

    TYPE_NAME = contract.EVALUATION_TYPE
    TYPE_ANNOTATION = _annotation(contract.EVALUATION_TYPE)


class Baselines(Artifact):
    """Comparison models: ``records.json`` and one evaluation folder per baseline."""

    TYPE_NAME = contract.BASELINES_TYPE
    TYPE_ANNOTATION = _annotation(contract.BASELINES_TYPE)


class Report(Artifact):
    """The HTML report, statistics, figures and the results table."""

    TYPE_NAME = contract.REPORT_TYPE
    TYPE_ANNOTATION = _annotation(contract.REPORT_TYPE)


ARTIFACTS: Dict[str, Type[Artifact]] = {cls.TYPE_NAME: cls for cls in (
    Dataset, SearchResult, Model, Evaluation, Baselines, Report)}
"""Every artifact class by its type name."""

STANDARD: Dict[str, Type[Artifact]] = {contract.MODEL_TYPE: Model}
"""The classes that stand for a type of ``tfx.types.standard_artifacts``."""


def _standard_first(resolve: Any) -> Any:
    """Wraps TFX's ``artifact_utils.get_artifact_type_class`` to build `STANDARD` classes.

    TFX picks the first class whose type name and properties match an ML Metadata type,
    which for ``Model`` is ``tfx.types.standard_artifacts.Model``; with ml-pipelines-sdk
    alone (no full ``tfx`` package) that class refuses to be constructed, so every
    step that reads or writes a Model would fail. Our class has the same ML Metadata type.
    """
    def get_artifact_type_class(artifact_type: Any) -> Type[Artifact]:
        cls = STANDARD.get(artifact_type.name)
        if cls is not None and artifact_type.properties == cls._get_artifact_type().properties:
            return cls
        return resolve(artifact_type)

    get_artifact_type_class.tfdarts_standard_first = True  # type: ignore[attr-defined]
    return get_artifact_type_class


if not getattr(artifact_utils.get_artifact_type_class, "tfdarts_standard_first", False):
    artifact_utils.get_artifact_type_class = _standard_first(artifact_utils.get_artifact_type_class)
