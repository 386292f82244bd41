"""Custom TFX artifact types of the tfdarts pipeline.

Every artifact is a folder. Besides its content it holds
`tfdarts.contract.PROPERTIES_FILE`, the same values that are recorded as the
artifact's custom properties in ML Metadata, so the Kubeflow runner (and anyone
without the store) can read them too. Type names come from `tfdarts.contract`.
"""

from tfx.types.artifact import Artifact

from tfdarts import contract


class Dataset(Artifact):
    """Prepared data: ``arrays.npz`` and ``spec.json`` (`tfdarts.data.save_prepared`)."""

    TYPE_NAME = contract.DATASET_TYPE


class SearchResult(Artifact):
    """A finished search: ``genotype.json``, ``alphas.npz`` and ``history.json``."""

    TYPE_NAME = contract.SEARCH_RESULT_TYPE


class Model(Artifact):
    """A retrained network: ``model.keras``, ``history.json`` and ``genotype.json``."""

    TYPE_NAME = contract.MODEL_TYPE


class Evaluation(Artifact):
    """Test metrics and the export: ``metrics.json``, ``saved_model/``, ``model.keras``."""

    TYPE_NAME = contract.EVALUATION_TYPE


class Baselines(Artifact):
    """Comparison models: ``records.json`` and one evaluation folder per baseline."""

    TYPE_NAME = contract.BASELINES_TYPE


class Report(Artifact):
    """The HTML report, statistics, figures and the results table."""

    TYPE_NAME = contract.REPORT_TYPE
