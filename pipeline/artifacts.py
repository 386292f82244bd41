"""Custom TFX artifact types of the tfdarts pipeline.

Every artifact is a folder. Besides its content it holds ``properties.json``, the
same values that are recorded as the artifact's custom properties in ML Metadata,
so the Kubeflow runner (and anyone without the store) can read them too.
"""

from typing import Dict, Type

from tfx.types.artifact import Artifact


class Dataset(Artifact):
    """Prepared data: ``arrays.npz`` and ``spec.json`` (`tfdarts.data.save_prepared`)."""

    TYPE_NAME = "tfdarts.Dataset"


class SearchResult(Artifact):
    """A finished search: ``genotype.json``, ``alphas.npz`` and ``history.json``."""

    TYPE_NAME = "tfdarts.SearchResult"


class Model(Artifact):
    """A retrained network: ``model.keras``, ``history.json`` and ``genotype.json``."""

    TYPE_NAME = "tfdarts.Model"


class Evaluation(Artifact):
    """Test metrics and the export: ``metrics.json``, ``saved_model/``, ``model.keras``."""

    TYPE_NAME = "tfdarts.Evaluation"


class Baselines(Artifact):
    """Comparison models: ``records.json`` and one evaluation folder per baseline."""

    TYPE_NAME = "tfdarts.Baselines"


class Report(Artifact):
    """The HTML report, statistics, figures and the results table."""

    TYPE_NAME = "tfdarts.Report"


ARTIFACT_TYPES: Dict[str, Type[Artifact]] = {
    cls.TYPE_NAME: cls for cls in (Dataset, SearchResult, Model, Evaluation, Baselines, Report)}
"""Artifact classes by type name."""
