"""Bad inputs to ``pipeline.lineage``, ``pipeline.compare`` and ``pipeline.steps``.

Every case builds one broken input in a temporary folder and runs the command in a
fresh process, as a user or a Kubeflow task would: the command must exit with code 2
after printing exactly one ``error:`` line on stderr that names the offending file or
value, and no traceback.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Tuple

import numpy as np
import pytest

from conftest import REPO
from tfdarts import contract
from tfdarts.genotype import DARTS_V2
from tfdarts.space import PRIMITIVES

TIMEOUT = 300
"""Seconds per command; the step cases import TensorFlow and TFX."""

Built = Tuple[List[str], str]
"""A command (``python -m`` arguments) and the text its error line must contain."""


# ----------------------------------------------------------------------------- running


def run_cli(args: List[str]) -> subprocess.CompletedProcess:
    """Runs ``python -m <args>`` from the repository root."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)


PROGRESS_LINE = re.compile(r"^\d\d:\d\d:\d\d \w+: ")
"""A step's timestamped progress line (``12:00:00 retrain: starting ...``)."""


def error_line(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    """Checks the one-line failure contract and returns the ``error:`` line.

    stderr must hold exactly one non-empty line besides the progress lines a step
    logs before it fails: the last one, starting with ``error:``.
    """
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    report = [line for line in lines if not PROGRESS_LINE.match(line)]
    assert len(report) == 1 and lines[-1] == report[0], proc.stderr
    assert report[0].startswith("error: "), proc.stderr
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    return report[0]


# ----------------------------------------------------------------------------- valid inputs


def write_search(folder: Path, epochs: int = 2) -> Path:
    """A small but valid search folder: alphas, history, genotype."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    cells = {}
    for cell in ("normal", "reduce"):
        logits = rng.normal(size=(epochs, 14, len(PRIMITIVES)))
        cells[cell] = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.savez(folder / contract.ALPHAS_FILE, primitives=np.array(PRIMITIVES), nodes=4, **cells)
    history = {"metric": "accuracy", "dataset": "toy",
               "epochs": [{"epoch": e + 1, "train_loss": 1.0} for e in range(epochs)]}
    (folder / contract.HISTORY_FILE).write_text(json.dumps(history))
    (folder / contract.GENOTYPE_FILE).write_text(DARTS_V2.to_json())
    return folder


def write_run(folder: Path) -> Path:
    """A run folder: ``search/`` plus ``results.csv``."""
    write_search(folder / "search")
    (folder / contract.RESULTS_CSV).write_text("model,accuracy,params\ndarts,0.9,1000\n")
    return folder


def write_dataset(folder: Path) -> Path:
    """A tiny prepared dataset (`tfdarts.data.save_prepared` layout) without TensorFlow."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"name": "toy", "fingerprint": "0" * 16, "source": "test", "augment": "none",
            "task": {"input_shape": [8, 8, 1], "num_outputs": 2, "kind": "classification",
                     "output_names": []},
            "mean": [0.5], "std": [1.0], "target_mean": [], "target_std": [],
            "num_train": 4, "num_test": 2, "split": {"mode": "test"}}
    (folder / contract.SPEC_FILE).write_text(json.dumps(spec))
    np.savez(folder / contract.ARRAYS_FILE, x_train=np.zeros((4, 8, 8, 1), np.uint8),
             y_train=np.array([0, 1, 0, 1]), x_test=np.zeros((2, 8, 8, 1), np.uint8),
             y_test=np.array([0, 1]))
    return folder


def write_store(path: Path, artifacts: int = 300) -> Path:
    """A real ML Metadata store holding `artifacts` artifacts under ``path``'s folder."""
    from ml_metadata.proto import metadata_store_pb2 as pb

    from pipeline import lineage

    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    store = lineage.open_store(str(path), readonly=False)
    type_id = store.put_artifact_type(pb.ArtifactType(name=contract.DATASET_TYPE))
    records = []
    for i in range(artifacts):
        artifact = pb.Artifact(type_id=type_id, uri=str(path.parent / f"artifact-{i}"))
        artifact.custom_properties["note"].string_value = "x" * 200
        records.append(artifact)
    store.put_artifacts(records)
    del store
    for i in range(min(artifacts, 10)):
        (path.parent / f"artifact-{i}").mkdir()
    return path


def corrupt_table(path: Path, table: str) -> None:
    """Overwrites the last data page of an SQLite `table` with garbage: the schema and
    the table's root stay intact, so the store opens and a query of `table` fails."""
    with sqlite3.connect(path) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        page = db.execute("SELECT max(pageno) FROM dbstat WHERE name = ? AND pagetype = 'leaf'",
                          (table,)).fetchone()[0]
    with open(path, "r+b") as f:
        f.seek((page - 1) * page_size)
        f.write(b"\xa5" * page_size)


def lineage_args(path: Path, *extra: str) -> List[str]:
    return ["pipeline.lineage", str(path), *extra]


def compare_args(*paths: Path) -> List[str]:
    return ["pipeline.compare", *map(str, paths)]


def retrain_args(tmp: Path, *, dataset: Path, search: Path, config: str = "{}") -> List[str]:
    """``pipeline.steps retrain`` as the Kubeflow task runs it."""
    return ["pipeline.steps", "retrain", "--config_json", config, "--code_version", "test",
            "--work_root", str(tmp / "work"), "--input", "dataset", str(dataset),
            "--input", "search", str(search), "--output", "model", str(tmp / "model")]


# ----------------------------------------------------------------------------- lineage cases


def lineage_zero_byte_store(tmp: Path) -> Built:
    store = tmp / "run" / contract.METADATA_FILE
    store.parent.mkdir()
    store.touch()
    return lineage_args(tmp / "run"), str(store)


def lineage_garbage_store(tmp: Path) -> Built:
    store = tmp / "run" / contract.METADATA_FILE
    store.parent.mkdir()
    store.write_bytes(bytes(range(256)) * 16)
    return lineage_args(tmp / "run"), str(store)


def lineage_sqlite_without_mlmd(tmp: Path) -> Built:
    store = tmp / "run" / contract.METADATA_FILE
    store.parent.mkdir()
    with sqlite3.connect(store) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    return lineage_args(tmp / "run"), str(store)


def lineage_truncated_store(tmp: Path) -> Built:
    store = write_store(tmp / "run" / contract.METADATA_FILE)
    data = store.read_bytes()
    store.write_bytes(data[: len(data) // 3])
    return lineage_args(tmp / "run"), str(store)


def lineage_damaged_table(tmp: Path) -> Built:
    store = write_store(tmp / "run" / contract.METADATA_FILE)
    corrupt_table(store, "Artifact")
    return lineage_args(tmp / "run" / "artifact-7"), str(store)


def lineage_missing_path(tmp: Path) -> Built:
    return lineage_args(tmp / "no-such-run"), str(tmp / "no-such-run")


def lineage_folder_without_store(tmp: Path) -> Built:
    (tmp / "empty").mkdir()
    return lineage_args(tmp / "empty"), str(tmp / "empty")


def lineage_store_flag_missing(tmp: Path) -> Built:
    (tmp / "run").mkdir()
    return lineage_args(tmp / "run", "--store", str(tmp / "nope.sqlite")), str(tmp / "nope.sqlite")


def lineage_unknown_flag(tmp: Path) -> Built:
    return lineage_args(tmp, "--colour"), "--colour"


# ----------------------------------------------------------------------------- compare cases


def compare_missing_path(tmp: Path) -> Built:
    return compare_args(tmp / "nope"), str(tmp / "nope")


def compare_not_a_folder(tmp: Path) -> Built:
    (tmp / "notes.txt").write_text("hello")
    return compare_args(tmp / "notes.txt"), str(tmp / "notes.txt")


def compare_folder_without_alphas(tmp: Path) -> Built:
    (tmp / "run").mkdir()
    return compare_args(tmp / "run"), contract.ALPHAS_FILE


def compare_truncated_alphas(tmp: Path) -> Built:
    alphas = write_run(tmp / "run") / "search" / contract.ALPHAS_FILE
    alphas.write_bytes(alphas.read_bytes()[:300])
    return compare_args(tmp / "run"), str(alphas)


def compare_zero_byte_alphas(tmp: Path) -> Built:
    alphas = write_search(tmp / "search") / contract.ALPHAS_FILE
    alphas.write_bytes(b"")
    return compare_args(tmp / "search"), str(alphas)


def compare_garbage_alphas(tmp: Path) -> Built:
    alphas = write_search(tmp / "search") / contract.ALPHAS_FILE
    alphas.write_bytes(b"not an npz file\n" * 20)
    return compare_args(tmp / "search"), str(alphas)


def compare_alphas_wrong_arrays(tmp: Path) -> Built:
    alphas = write_search(tmp / "search") / contract.ALPHAS_FILE
    np.savez(alphas, weights=np.zeros((2, 3)))
    return compare_args(tmp / "search"), str(alphas)


def compare_alphas_object_array(tmp: Path) -> Built:
    alphas = write_search(tmp / "search") / contract.ALPHAS_FILE
    np.savez(alphas, normal=np.array([{"a": 1}], dtype=object), reduce=np.zeros(1),
             primitives=np.array(PRIMITIVES))
    return compare_args(tmp / "search"), str(alphas)


def compare_alphas_not_softmaxed(tmp: Path) -> Built:
    alphas = write_search(tmp / "search") / contract.ALPHAS_FILE
    logits = np.full((2, 14, len(PRIMITIVES)), 3.0)
    np.savez(alphas, normal=logits, reduce=logits, primitives=np.array(PRIMITIVES), nodes=4)
    return compare_args(tmp / "search"), str(alphas)


def compare_corrupt_history(tmp: Path) -> Built:
    history = write_search(tmp / "search") / contract.HISTORY_FILE
    history.write_text('{"epochs": [{"epoch": 1,')
    return compare_args(tmp / "search"), str(history)


def compare_binary_history(tmp: Path) -> Built:
    history = write_search(tmp / "search") / contract.HISTORY_FILE
    history.write_bytes(bytes(range(128, 256)))
    return compare_args(tmp / "search"), str(history)


def compare_corrupt_genotype(tmp: Path) -> Built:
    genotype = write_search(tmp / "search") / contract.GENOTYPE_FILE
    genotype.write_text('{"normal": [["sep_conv_3x3", 0]')
    return compare_args(tmp / "search"), str(genotype)


def compare_corrupt_results(tmp: Path) -> Built:
    results = write_run(tmp / "run") / contract.RESULTS_CSV
    results.write_text('model,accuracy\ndarts,0.9\n"unterminated,1\n')
    return compare_args(tmp / "run"), str(results)


def compare_zero_byte_results(tmp: Path) -> Built:
    results = write_run(tmp / "run") / contract.RESULTS_CSV
    results.write_bytes(b"")
    return compare_args(tmp / "run"), str(results)


def compare_second_run_bad(tmp: Path) -> Built:
    write_run(tmp / "good")
    alphas = write_run(tmp / "bad") / "search" / contract.ALPHAS_FILE
    alphas.write_bytes(alphas.read_bytes()[:100])
    return compare_args(tmp / "good", tmp / "bad"), str(alphas)


# ----------------------------------------------------------------------------- step cases


def steps_unknown_step(tmp: Path) -> Built:
    return ["pipeline.steps", "train", "--config_json", "{}"], "'train'"


def steps_bad_config_json(tmp: Path) -> Built:
    args = retrain_args(tmp, dataset=write_dataset(tmp / "dataset"),
                        search=write_search(tmp / "search"), config='{"retrain": ')
    return args, "--config_json"


def steps_config_json_not_object(tmp: Path) -> Built:
    args = retrain_args(tmp, dataset=write_dataset(tmp / "dataset"),
                        search=write_search(tmp / "search"), config="[1, 2]")
    return args, "--config_json"


def steps_config_unknown_key(tmp: Path) -> Built:
    args = retrain_args(tmp, dataset=write_dataset(tmp / "dataset"),
                        search=write_search(tmp / "search"), config='{"retrain": {"epoch": 3}}')
    return args, "retrain.epoch"


def steps_missing_input_folder(tmp: Path) -> Built:
    args = retrain_args(tmp, dataset=tmp / "no-dataset", search=write_search(tmp / "search"))
    return args, str(tmp / "no-dataset")


def steps_missing_input_key(tmp: Path) -> Built:
    args = ["pipeline.steps", "retrain", "--config_json", "{}",
            "--input", "dataset", str(write_dataset(tmp / "dataset")),
            "--output", "model", str(tmp / "model")]
    return args, "'search'"


def steps_corrupt_genotype(tmp: Path) -> Built:
    search = write_search(tmp / "search")
    (search / contract.GENOTYPE_FILE).write_text('{"normal": [')
    args = retrain_args(tmp, dataset=write_dataset(tmp / "dataset"), search=search)
    return args, str(search / contract.GENOTYPE_FILE)


def steps_corrupt_metrics(tmp: Path) -> Built:
    """Analyze with a truncated ``metrics.json`` in its evaluation input."""
    evaluation = tmp / "evaluation"
    evaluation.mkdir()
    (evaluation / contract.METRICS_FILE).write_text('{"model": "darts", "metr')
    args = ["pipeline.steps", "analyze", "--config_json", "{}", "--work_root", str(tmp / "work"),
            "--input", "dataset", str(write_dataset(tmp / "dataset")),
            "--input", "search", str(write_search(tmp / "search")),
            "--input", "model", str(tmp / "search"), "--input", "evaluation", str(evaluation),
            "--output", "report", str(tmp / "report")]
    return args, str(evaluation / contract.METRICS_FILE)


CASES: List[Callable[[Path], Built]] = [
    lineage_zero_byte_store, lineage_garbage_store, lineage_sqlite_without_mlmd,
    lineage_truncated_store, lineage_damaged_table, lineage_missing_path,
    lineage_folder_without_store, lineage_store_flag_missing, lineage_unknown_flag,
    compare_missing_path, compare_not_a_folder, compare_folder_without_alphas,
    compare_truncated_alphas, compare_zero_byte_alphas, compare_garbage_alphas,
    compare_alphas_wrong_arrays, compare_alphas_object_array, compare_alphas_not_softmaxed,
    compare_corrupt_history, compare_binary_history, compare_corrupt_genotype,
    compare_corrupt_results, compare_zero_byte_results, compare_second_run_bad,
    steps_unknown_step, steps_bad_config_json, steps_config_json_not_object,
    steps_config_unknown_key, steps_missing_input_folder, steps_missing_input_key,
    steps_corrupt_genotype, steps_corrupt_metrics,
]


@pytest.mark.parametrize("build", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_is_one_error_line(build: Callable[[Path], Built], tmp_path: Path) -> None:
    args, named = build(tmp_path)
    line = error_line(run_cli(args))
    assert named in line, line


# ----------------------------------------------------------------------------- controls


def test_compare_accepts_the_valid_inputs(tmp_path: Path) -> None:
    """The folders the corrupt cases start from are fine as they are."""
    write_run(tmp_path / "a")
    write_search(tmp_path / "b")
    proc = run_cli(compare_args(tmp_path / "a", tmp_path / "b"))
    assert proc.returncode == 0, proc.stderr
    assert "Search statistics" in proc.stdout and "Results: a" in proc.stdout


def test_lineage_reads_the_valid_store(tmp_path: Path) -> None:
    """The store the damaged-store cases start from is readable."""
    write_store(tmp_path / "run" / contract.METADATA_FILE, artifacts=3)
    proc = run_cli(lineage_args(tmp_path / "run" / "artifact-1"))
    assert proc.returncode == 0, proc.stderr
    assert "lineage of" in proc.stdout and "artifact-1" in proc.stdout


def test_unexpected_step_failure_is_one_line_with_exit_1(tmp_path: Path) -> None:
    """A step that breaks for a reason no input check names: one line, exit 1, the
    traceback kept in a file the line points to, and no advice to rerun."""
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / contract.METRICS_FILE).write_text("[1, 2, 3]")  # valid JSON, wrong shape
    args = ["pipeline.steps", "analyze", "--config_json", "{}", "--work_root",
            str(tmp_path / "work"), "--input", "dataset", str(write_dataset(tmp_path / "dataset")),
            "--input", "search", str(write_search(tmp_path / "search")),
            "--input", "model", str(tmp_path / "search"), "--input", "evaluation", str(evaluation),
            "--output", "report", str(tmp_path / "report")]
    line = error_line(run_cli(args), code=1)
    assert "step analyze failed" in line and "AttributeError" in line, line
    assert "rerun" not in line.lower(), line
    traceback_file = line.rsplit("traceback in ", 1)[-1].strip().rstrip(")")
    assert os.path.isfile(traceback_file), line
    assert "Traceback" in Path(traceback_file).read_text()


@pytest.mark.parametrize("layout, expected", [
    ("missing", "does not exist"), ("empty_folder", "no train-images"),
    ("kirigami_without_table", "alldata_15G.dat"), ("npz_folder", "is a folder"),
])
def test_run_refuses_bad_data_before_writing_anything(tmp_path: Path, layout: str, expected: str) -> None:
    """``pipeline.run`` checks the local data files before it creates a run folder."""
    data = tmp_path / "data"
    if layout != "missing":
        data.mkdir()
    dataset = {"kirigami_without_table": "graphene_kirigami", "npz_folder": "npz"}.get(layout, "fashion_mnist")
    out = tmp_path / "runs"
    line = error_line(run_cli(["pipeline.run", "--preset", "tiny", "--dataset", dataset, "--override",
                               f"data.data_dir={data}", "--output_dir", str(out)]))
    assert expected in line, line
    assert not out.exists(), list(out.rglob("*"))


def test_rerun_advice_only_where_a_rerun_can_help() -> None:
    from pipeline import run
    from tfdarts.genotype import GenotypeError
    from tfdarts.trainer import TrainingDiverged

    assert run._rerun_may_help(OSError("disk full")) and run._rerun_may_help(MemoryError())
    for err in (TrainingDiverged("loss became nan"), GenotypeError("bad"), ValueError("bad")):
        assert not run._rerun_may_help(err)
