"""The on-disk contract: every file, folder, artifact type and dataset name (no TensorFlow).

The library writes these files, the pipeline's components copy and read them,
`tfdarts.analysis`, `pipeline.compare` and the tests read them back; all of
them take the names from here.
"""

from __future__ import annotations

from typing import Dict, Tuple

# --- a search or retrain folder -----------------------------------------------------------
HISTORY_FILE = "history.json"
"""Per-epoch records: losses, metrics, learning rates (and genotype, in a search)."""
ALPHAS_FILE = "alphas.npz"
"""Softmaxed alphas per epoch: ``normal``/``reduce`` ``(E, edges, K)``, ``primitives``, ``nodes``."""
GENOTYPE_FILE = "genotype.json"
"""A `tfdarts.genotype.Genotype` as JSON."""
BEST_GENOTYPE_FILE = "best_genotype.json"
"""The genotype random search selected."""
RANDOM_SELECTION_FILE = "random_selection.json"
"""Random search's candidates (genotype, validation score) and the seconds it used."""
CHECKPOINT_DIR = "checkpoints"
"""TensorFlow checkpoints of a resumable job."""
MODEL_FILE = "model.keras"
"""The native Keras file of a trained model."""
SERVING_MODEL_DIR = "Format-Serving"
"""Inside a retrained Model artifact: the serving export (SavedModel plus `SPEC_FILE` and
`GENOTYPE_FILE`), where TFX's Trainer puts it (``tfx.utils.path_utils.serving_model_dir``)."""

# --- an evaluation folder -----------------------------------------------------------------
METRICS_FILE = "metrics.json"
"""The result record of one model (see `tfdarts.evaluation`)."""
CONFUSION_FILE = "confusion.json"
PREDICTIONS_FILE = "predictions.json"  # regression: true and predicted test targets, target units
"""Classification only: ``{"classes": [...], "matrix": [[...]]}``."""
SAVED_MODEL_DIR = "saved_model"
"""The serving export of `tfdarts.evaluation.evaluate_and_export` and of each baseline
(SavedModel plus `SPEC_FILE` and `GENOTYPE_FILE`); a pipeline run's is `SERVING_MODEL_DIR`."""

# --- prepared data ------------------------------------------------------------------------
SPEC_FILE = "spec.json"
"""A `tfdarts.data.DataSpec` as JSON (also inside every export)."""
ARRAYS_FILE = "arrays.npz"
"""The prepared, normalisable arrays."""

# --- a report folder ----------------------------------------------------------------------
REPORT_FILE = "report.html"
STATS_CSV = "stats.csv"
STATS_JSON = "stats.json"
RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
SUMMARY_FILE = "summary.json"
FIGURES_DIR = "figures"

# --- baselines ----------------------------------------------------------------------------
RECORDS_FILE = "records.json"
"""A list of result records, one per baseline."""

# --- a pipeline run folder ----------------------------------------------------------------
METADATA_FILE = "metadata.sqlite"
"""The ML Metadata store."""
PROPERTIES_FILE = "properties.json"
"""Inside every artifact folder: its custom properties."""
OUTPUTS_FILE = "outputs.json"
"""Where a run's final artifacts are."""
PIPELINE_ROOT_DIR = "artifacts"
WORK_DIR = "work"

# --- artifact types (ML Metadata type names) ----------------------------------------------
# The retrained network is TFX's standard ``Model`` type (as ``tfx.types.standard_artifacts``
# defines it); the other types are tfdarts' own, each with an ML Metadata base type.
DATASET_TYPE = "tfdarts.Dataset"
SEARCH_RESULT_TYPE = "tfdarts.SearchResult"
MODEL_TYPE = "Model"
EVALUATION_TYPE = "tfdarts.Evaluation"
BASELINES_TYPE = "tfdarts.Baselines"
REPORT_TYPE = "tfdarts.Report"
ARTIFACT_TYPES: Tuple[str, ...] = (DATASET_TYPE, SEARCH_RESULT_TYPE, MODEL_TYPE, EVALUATION_TYPE,
                                   BASELINES_TYPE, REPORT_TYPE)
ARTIFACT_BASE_TYPES: Dict[str, str] = {
    DATASET_TYPE: "DATASET", SEARCH_RESULT_TYPE: "MODEL", MODEL_TYPE: "MODEL",
    EVALUATION_TYPE: "METRICS", BASELINES_TYPE: "METRICS", REPORT_TYPE: "STATISTICS"}
"""The ML Metadata base type of each artifact type (a name of
``ml_metadata.proto.metadata_store_pb2.ArtifactType.SystemDefinedBaseType``): the search
result is a model (the learned architecture), baselines are their test metrics, the report
holds the alpha statistics and the results table."""
RETIRED_TYPES: Dict[str, str] = {"tfdarts.Model": MODEL_TYPE}
"""Type names that run folders of earlier versions recorded, and the type that replaced each."""

# --- datasets -----------------------------------------------------------------------------
TFDS_DATASETS: Tuple[str, ...] = ("fashion_mnist", "mnist", "cifar10", "cifar100", "svhn_cropped")
"""TFDS image-classification sets known by name (any other TFDS name works too)."""
LOCAL_DATASETS: Tuple[str, ...] = ("graphene_kirigami", "idx", "npz")
"""Names that read local files from ``data.data_dir``."""
KNOWN_DATASETS: Tuple[str, ...] = TFDS_DATASETS + LOCAL_DATASETS

# --- TensorBoard --------------------------------------------------------------------------
TENSORBOARD_DIR = "tensorboard"
"""Event files of a search or retrain (`tfdarts.summaries`), in its job folder and artifact."""
