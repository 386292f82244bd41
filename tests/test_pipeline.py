"""End-to-end tests of ``python -m pipeline.run`` on real Fashion-MNIST files (tiny preset).

One tiny run (a few hundred images, one short epoch per training step) is shared by
the module; the tests then read its ML Metadata store, serve its SavedModel, rerun it
(all cached), trace its lineage, and check the one-line errors. A second run into
another folder is interrupted during search and resumed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Dict, List

import numpy as np
import pytest
from conftest import FASHION_DIR, REPO

from tfdarts import contract
from tfdarts.genotype import DARTS_V2, Genotype

COMPONENTS = ("Ingest", "Search", "Retrain", "Evaluate", "Analyze")
TINY = ["--preset", "tiny", "--dataset", "fashion_mnist", "--override", f"data.data_dir={FASHION_DIR}"]


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    return env


def _run(args: List[str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


def _open_store(run_dir: str):
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = os.path.join(run_dir, contract.METADATA_FILE)
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def _executions(store) -> List[Dict]:
    """[{id, component, state}] in id order."""
    from ml_metadata.proto import metadata_store_pb2 as pb

    types = {t.id: t.name for t in store.get_execution_types()}
    return [{"id": e.id, "component": types[e.type_id].split(".")[-1],
             "state": pb.Execution.State.Name(e.last_known_state)}
            for e in sorted(store.get_executions(), key=lambda e: e.id)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished tiny run: (run folder, first run's process)."""
    out = tmp_path_factory.mktemp("runs")
    started = time.time()
    proc = _run(["-m", "pipeline.run", *TINY, "--output_dir", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"tiny e2e run took {time.time() - started:.0f}s")
    return str(out / "fashion_mnist-tiny"), proc


def _single(store, component: str, state: str = "COMPLETE"):
    found = [e for e in _executions(store) if e["component"] == component and e["state"] == state]
    assert len(found) == 1, (component, _executions(store))
    return found[0]["id"]


def _events(store, execution_id: int, kind: int) -> Dict[str, int]:
    return {ev.path.steps[0].key: ev.artifact_id
            for ev in store.get_events_by_execution_ids([execution_id]) if ev.type == kind}


def test_run_prints_where_outputs_are(run_dir):
    folder, proc = run_dir
    for label in ("SavedModel:", "genotype:", "metrics:", "report:", "lineage:"):
        assert label in proc.stdout
    paths = {line.split(":", 1)[0]: line.split(":", 1)[1].strip()
             for line in proc.stdout.splitlines() if ":" in line}
    assert os.path.isfile(os.path.join(paths["SavedModel"], "saved_model.pb"))
    assert os.path.realpath(paths["SavedModel"]) == os.path.realpath(_serving_dir(folder))
    assert os.path.isfile(paths["genotype"]) and os.path.isfile(paths["report"])
    assert json.load(open(paths["metrics"]))["model"] == "darts"
    for link in ("search", "model", "evaluation", "report"):
        assert os.path.islink(os.path.join(folder, link))
    assert os.path.isfile(os.path.join(folder, contract.RESULTS_CSV))
    # progress: per-epoch lines with loss, metric, lr and time left
    epoch_lines = [line for line in proc.stderr.splitlines() if "epoch 1/1 done" in line]
    assert any(line.split()[1] == "search" for line in epoch_lines), proc.stderr[-2000:]
    assert all("loss" in line and "metric" in line and "lr" in line and "left" in line
               for line in epoch_lines) and len(epoch_lines) >= 2


def test_one_complete_execution_per_component(run_dir):
    store = _open_store(run_dir[0])
    executions = _executions(store)
    assert sorted(e["component"] for e in executions) == sorted(COMPONENTS)
    assert all(e["state"] == "COMPLETE" for e in executions), executions


def test_artifact_chain_and_properties(run_dir):
    from ml_metadata.proto import metadata_store_pb2 as pb

    store = _open_store(run_dir[0])
    ids = {c: _single(store, c) for c in COMPONENTS}
    out = {c: _events(store, ids[c], pb.Event.OUTPUT) for c in COMPONENTS}
    inp = {c: _events(store, ids[c], pb.Event.INPUT) for c in COMPONENTS}
    assert inp["Ingest"] == {}
    assert inp["Search"] == {"dataset": out["Ingest"]["dataset"]}
    assert inp["Retrain"] == {"dataset": out["Ingest"]["dataset"], "search": out["Search"]["search"]}
    assert inp["Evaluate"]["model"] == out["Retrain"]["model"]
    assert inp["Analyze"]["evaluation"] == out["Evaluate"]["evaluation"]
    assert inp["Analyze"]["search"] == out["Search"]["search"]

    types = {t.id: t.name for t in store.get_artifact_types()}
    arts = {a.id: a for a in store.get_artifacts()}
    expected = {"Ingest": ("dataset", contract.DATASET_TYPE), "Search": ("search", contract.SEARCH_RESULT_TYPE),
                "Retrain": ("model", contract.MODEL_TYPE), "Evaluate": ("evaluation", contract.EVALUATION_TYPE),
                "Analyze": ("report", contract.REPORT_TYPE)}
    for component, (key, type_name) in expected.items():
        assert types[arts[out[component][key]].type_id] == type_name

    dataset = arts[out["Ingest"]["dataset"]]
    spec = json.load(open(os.path.join(dataset.uri, contract.SPEC_FILE)))
    assert dataset.custom_properties["fingerprint"].string_value == spec["fingerprint"]
    assert dataset.custom_properties["num_train"].int_value == 512
    search = arts[out["Search"]["search"]]
    genotype = json.load(open(os.path.join(search.uri, contract.GENOTYPE_FILE)))
    assert json.loads(search.custom_properties["genotype"].string_value) == genotype
    evaluation = arts[out["Evaluate"]["evaluation"]]
    metrics = json.load(open(os.path.join(evaluation.uri, contract.METRICS_FILE)))
    # ML Metadata's SQLite backend keeps doubles to 6 significant digits; the JSON
    # "metrics" property is exact
    assert evaluation.custom_properties["accuracy"].double_value == pytest.approx(
        metrics["metrics"]["accuracy"], rel=1e-5)
    assert json.loads(evaluation.custom_properties["metrics"].string_value) == metrics["metrics"]
    assert evaluation.custom_properties["params"].int_value == metrics["params"] > 0
    # the code version is a parameter of every execution
    versions = {e.custom_properties["code_version"].string_value
                for e in store.get_executions_by_id(list(ids.values()))}
    assert len(versions) == 1 and len(versions.pop()) == 16


def test_artifact_types_are_tfx_standard_or_carry_base_types(run_dir):
    """ML Metadata records the retrained network as TFX's standard Model type and every
    other type with its base type; TFX builds working artifacts of each type."""
    from ml_metadata.proto import metadata_store_pb2 as pb
    from tfx.types import artifact_utils, standard_artifacts

    from pipeline import artifacts

    store = _open_store(run_dir[0])
    recorded = {t.name: t for t in store.get_artifact_types()}
    assert set(contract.ARTIFACT_TYPES) - {contract.BASELINES_TYPE} <= set(recorded)
    model = recorded[contract.MODEL_TYPE]
    standard = standard_artifacts.Model._get_artifact_type()
    assert (model.name, dict(model.properties), model.base_type) == (
        standard.name, dict(standard.properties), standard.base_type) == ("Model", {}, pb.ArtifactType.MODEL)
    for name, base in contract.ARTIFACT_BASE_TYPES.items():
        if name in recorded:
            assert pb.ArtifactType.SystemDefinedBaseType.Name(recorded[name].base_type) == base, name
    for name, cls in artifacts.ARTIFACTS.items():
        assert type(artifact_utils.deserialize_artifact(cls._get_artifact_type())) is cls
    assert not [t for t in recorded if t in contract.RETIRED_TYPES]


def _serving_dir(run_folder: str) -> str:
    """Where TFX's Evaluator, Pusher and InfraValidator look for the Model's SavedModel."""
    from tfx.utils import path_utils

    return path_utils.serving_model_path(os.path.realpath(os.path.join(run_folder, "model")))


def test_saved_model_serves_real_test_images(run_dir):
    """The Model artifact holds the SavedModel at TFX's Format-Serving; it serves the real
    test images with the evaluation's accuracy; the evaluation keeps no second export."""
    import tensorflow as tf

    from tfdarts.data import load_prepared

    folder = run_dir[0]
    data = load_prepared(os.path.realpath(os.path.join(folder, "dataset")))
    serving = _serving_dir(folder)
    assert serving == os.path.join(os.path.realpath(os.path.join(folder, "model")), contract.SERVING_MODEL_DIR)
    for name in (contract.SPEC_FILE, contract.GENOTYPE_FILE):
        assert os.path.isfile(os.path.join(serving, name))
    assert not os.path.exists(os.path.join(folder, "evaluation", contract.SAVED_MODEL_DIR))
    props = json.load(open(os.path.join(folder, "evaluation", contract.PROPERTIES_FILE)))
    assert props["serving_checked"] == 256 and props["serving_max_diff"] <= 1e-3
    model = tf.saved_model.load(serving)
    serve = model.signatures["serving_default"]
    out = serve(inputs=tf.constant(data.x_test.astype(np.float32)))
    probs, classes = out["probabilities"].numpy(), out["classes"].numpy()
    assert probs.shape == (256, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)
    metrics = json.load(open(os.path.join(folder, "evaluation", contract.METRICS_FILE)))["metrics"]
    assert np.mean(classes == data.y_test) == pytest.approx(metrics["accuracy"], abs=1e-6)


def test_second_run_is_all_cached(run_dir):
    folder = run_dir[0]
    before = _executions(_open_store(folder))
    proc = _run(["-m", "pipeline.run", *TINY, "--output_dir", os.path.dirname(folder)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = _executions(_open_store(folder))
    new = after[len(before):]
    assert sorted(e["component"] for e in new) == sorted(COMPONENTS)
    assert all(e["state"] == "CACHED" for e in new), new
    assert "reused from cache" in proc.stderr


def test_a_logging_only_override_reuses_the_cache(run_dir):
    folder = run_dir[0]
    before = _executions(_open_store(folder))
    proc = _run(["-m", "pipeline.run", *TINY, "--override", "runtime.log_every=1",
                 "--output_dir", os.path.dirname(folder)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    new = _executions(_open_store(folder))[len(before):]
    assert sorted(e["component"] for e in new) == sorted(COMPONENTS)
    assert all(e["state"] == "CACHED" for e in new), new


def test_lineage_names_dataset_fingerprint(run_dir):
    folder = run_dir[0]
    fingerprint = json.load(open(os.path.join(folder, "dataset", contract.SPEC_FILE)))["fingerprint"]
    for target in (_serving_dir(folder), os.path.join(folder, "search", contract.GENOTYPE_FILE), folder):
        proc = _run(["-m", "pipeline.lineage", target], timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert fingerprint in proc.stdout
        assert "search " in proc.stdout and "config " in proc.stdout
    saved = _run(["-m", "pipeline.lineage", _serving_dir(folder)]).stdout
    for step in ("ingest", "search", "retrain"):
        assert f"\n{step} " in saved
    assert f"artifact {_model_id(folder)} ({contract.MODEL_TYPE})" in saved
    assert f"saved_model: {contract.SERVING_MODEL_DIR}" in saved
    assert "test_metric" in saved and "genotype normal" in saved
    report = _run(["-m", "pipeline.lineage", folder]).stdout
    assert "\nevaluate " in report and "accuracy" in report and "serving_checked: 256" in report


def _model_id(run_folder: str) -> int:
    uri = os.path.realpath(os.path.join(run_folder, "model"))
    return next(a.id for a in _open_store(run_folder).get_artifacts() if os.path.realpath(a.uri) == uri)


def test_compare_prints_tables(run_dir):
    proc = _run(["-m", "pipeline.compare", run_dir[0]], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "entropy_ratio" in proc.stdout and "| darts |" in proc.stdout


def test_given_genotype_retrains_without_search(run_dir):
    """--genotype DARTS_V2: a Given step replaces Search, lineage names the cell's origin,
    the run has its own folder and compare tells the two runs' cells apart."""
    parent = os.path.dirname(run_dir[0])
    proc = _run(["-m", "pipeline.run", *TINY, "--genotype", "DARTS_V2", "--output_dir", parent])
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = os.path.join(parent, "fashion_mnist-tiny-genotype=DARTS_V2")
    components = [e["component"] for e in _executions(_open_store(folder))]
    assert "Given" in components and "Search" not in components
    assert Genotype.load(os.path.join(folder, "search", contract.GENOTYPE_FILE)) == DARTS_V2
    lineage = _run(["-m", "pipeline.lineage", _serving_dir(folder)])
    assert "\ngiven " in lineage.stdout and "origin: DARTS_V2" in lineage.stdout, lineage.stdout
    assert os.path.exists(os.path.join(folder, "report", contract.REPORT_FILE))
    compare = _run(["-m", "pipeline.compare", run_dir[0], folder], timeout=120)
    assert compare.returncode == 0, compare.stderr
    assert "given: DARTS_V2" in compare.stdout and "searched on fashion_mnist" in compare.stdout


CHECK_IMAGES = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  const wide = document.documentElement.scrollWidth > window.innerWidth + 1;
  const out = document.createElement("pre");
  out.id = "render-check";
  out.textContent = JSON.stringify({images: imgs.length, broken: bad, overflow: wide});
  document.body.appendChild(out);
});
</script>"""


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    """The report names split, source and settings, shows the confusion matrix, holds no
    absolute path, and in Chromium every image loads and nothing overflows the page."""
    import re
    import shutil

    text = open(os.path.join(run_dir[0], "report", contract.REPORT_FILE)).read()
    for needle in ("Data and settings", "fingerprint", "split", "Hyperparameters", "code version",
                   "<b>retrain</b>: cells",
                   "Test set: confusion matrix", "true \\ predicted"):
        assert needle in text, needle
    assert REPO not in text and "/tmp/" not in text
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    page = tmp_path / "report.html"
    page.write_text(text.replace("</body>", CHECK_IMAGES + "</body>"))
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                           "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="render-check">(.*?)</pre>', proc.stdout)
    assert found, proc.stderr[-2000:]
    result = json.loads(found.group(1).replace("&quot;", '"'))
    assert result["images"] >= 4 and result["broken"] == [] and not result["overflow"], result


def _assert_one_line_error(proc: subprocess.CompletedProcess, text: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert text in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args,text", [
    (["--dataset", "no_such_data"], "unknown dataset"),
    (["--override", "search.epochs=many"], "search.epochs"),
    (["--override", "search.no_such_key=1"], "no_such_key"),
    (["--override", "epochs"], "section.key=value"),
    (["--preset", "huge"], "unknown preset"),
    (["--no_such_flag"], "no_such_flag"),
    (["--override", "data.data_dir=/no/such/folder"], "does not exist"),
    (["--override", "baselines.include=random,nope"], "baselines.include: unknown baseline 'nope'"),
    (["--genotype", "DARTS_V9"], "neither a published cell"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, text):
    proc = _run(["-m", "pipeline.run", "--output_dir", str(tmp_path / "runs"), *args], timeout=120)
    _assert_one_line_error(proc, text)
    assert not (tmp_path / "runs").exists()  # refused before anything is written


def test_unwritable_output_dir_exits_2(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    proc = _run(["-m", "pipeline.run", *TINY, "--output_dir", str(blocker / "runs")], timeout=120)
    _assert_one_line_error(proc, "not writable")


def test_interrupted_step_is_failed_then_resumed(run_dir):
    """SIGTERM during search: FAILED in ML Metadata; the rerun reuses ingest from the cache
    and resumes search after its checkpointed epoch. The run differs from the module's run
    in one override and writes beside it: into its own folder (its ingest is a fresh
    execution), leaving the module's run and its results as they were."""
    parent = os.path.dirname(run_dir[0])
    untouched = _snapshot(run_dir[0])
    args = [sys.executable, "-m", "pipeline.run", *TINY, "--override", "search.epochs=3",
            "--output_dir", parent]
    proc = subprocess.Popen(args, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen = []
    deadline = time.time() + 400
    for line in proc.stderr:
        seen.append(line)
        if "search epoch 1/3 done" in line:
            proc.send_signal(signal.SIGTERM)
            break
        assert time.time() < deadline, "".join(seen)
    rest = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 130, "".join(seen) + rest
    assert "interrupted" in rest and "Traceback" not in rest
    folder = os.path.join(parent, "fashion_mnist-tiny-search.epochs=3")
    states = {(e["component"], e["state"]) for e in _executions(_open_store(folder))}
    assert states == {("Ingest", "COMPLETE"), ("Search", "FAILED")}

    again = _run(args[1:])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "search: resuming from" in again.stderr and "after epoch 1/3" in again.stderr
    executions = _executions(_open_store(folder))
    assert [(e["component"], e["state"]) for e in executions[2:]] == [
        ("Ingest", "CACHED"), ("Search", "COMPLETE"), ("Retrain", "COMPLETE"),
        ("Evaluate", "COMPLETE"), ("Analyze", "COMPLETE")]
    history = json.load(open(os.path.join(folder, "search", contract.HISTORY_FILE)))
    assert [r["epoch"] for r in history["epochs"]] == [1, 2, 3]
    props = json.load(open(os.path.join(folder, "search", contract.PROPERTIES_FILE)))
    assert props["resumed_from_epoch"] == 1  # lineage says the search was resumed
    stages = [d for d, dirs, _ in os.walk(folder) for n in dirs if n.startswith(".staging-")]
    assert not stages, stages
    assert _snapshot(run_dir[0]) == untouched
    compare = _run(["-m", "pipeline.compare", run_dir[0], folder], timeout=120)
    assert compare.returncode == 0, compare.stderr
    for run in (run_dir[0], folder):  # side by side in the cells table
        assert f"| {os.path.basename(run)} | searched on fashion_mnist |" in compare.stdout


def _snapshot(run_folder: str) -> Dict[str, object]:
    """What another run must not change: the run's results and its executions."""
    results = {}
    for name in ("evaluation", "search"):
        path = os.path.join(run_folder, name, contract.PROPERTIES_FILE)
        results[name] = open(path).read() if os.path.exists(path) else None
    return {"results": results, "executions": _executions(_open_store(run_folder))}


def test_a_one_byte_data_edit_reruns_ingest_and_downstream(tmp_path):
    import gzip
    import shutil

    data = tmp_path / "idx"
    data.mkdir()
    for name in os.listdir(FASHION_DIR):
        if name.endswith(".gz"):
            with gzip.open(os.path.join(FASHION_DIR, name)) as src, open(data / name[:-3], "wb") as dst:
                shutil.copyfileobj(src, dst)
    args = ["-m", "pipeline.run", "--preset", "tiny", "--dataset", "fashion_mnist", "--override",
            f"data.data_dir={data}", "--output_dir", str(tmp_path / "runs")]
    assert _run(args).returncode == 0
    folder = str(tmp_path / "runs" / "fashion_mnist-tiny")
    first = json.load(open(os.path.join(folder, "dataset", contract.SPEC_FILE)))["fingerprint"]
    before = _executions(_open_store(folder))
    labels = data / "train-labels-idx1-ubyte"
    raw = bytearray(labels.read_bytes())
    raw[8] = (raw[8] + 1) % 10  # the first training label
    labels.write_bytes(bytes(raw))
    proc = _run(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    new = _executions(_open_store(folder))[len(before):]
    assert sorted(e["component"] for e in new) == sorted(COMPONENTS)
    assert all(e["state"] == "COMPLETE" for e in new), new
    second = json.load(open(os.path.join(folder, "dataset", contract.SPEC_FILE)))["fingerprint"]
    assert second != first
    assert second[:12] in _run(["-m", "pipeline.lineage", folder]).stdout
