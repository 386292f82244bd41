"""Runs the tfdarts pipeline locally: ``python -m pipeline.run --dataset fashion_mnist``.

Ingest -> search -> retrain -> evaluate -> analyze (plus baselines with
``--baselines``) run in this process with TFX's LocalDagRunner; ML Metadata is an
SQLite store in the run folder ``<output_dir>/<run_name>`` (default run name
``<dataset>-<preset>`` followed by the settings that differ from the dataset's
defaults, e.g. ``graphene_kirigami-cpu-split=grouped``, so runs with different
results never share a folder; see `pipeline.cli.run_name`), next to the artifacts (``artifacts/``), the steps'
working folders with checkpoints (``work/``) and logs (``logs/``).

Rerunning the same command reuses every finished step from TFX's cache and resumes
an interrupted step from its last checkpoint. Different output folders share
nothing. Bad flags, an unknown dataset, a bad override or an unwritable output
folder print one ``error:`` line and exit with code 2; a failed step is recorded as
FAILED in ML Metadata and exits with code 1 (the traceback is in the log file).

At the end the run folder gets links ``search``, ``model``, ``evaluation`` and
``report`` to the latest artifacts, ``results.csv``/``results.md`` and
``outputs.json``, and the command prints where the SavedModel (``model/Format-Serving``,
in TFX's standard Model artifact), genotype, metrics and report are.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import shutil
import signal
import sys
import time
from typing import Any, List

from absl import app, flags

from pipeline import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "fashion_mnist", "Dataset name (configs/datasets/<name>.yaml or a "
                    "name tfdarts.data knows).")
flags.DEFINE_string("preset", "cpu", "Size preset: configs/presets/<preset>.yaml (cpu, paper, tiny).")
flags.DEFINE_multi_string("config", [], "Extra YAML config file(s), applied after preset and dataset.")
flags.DEFINE_multi_string("override", [], "section.key=value, applied last (repeatable).")
flags.DEFINE_string("output_dir", "./runs", "Parent folder of run folders.")
flags.DEFINE_string("run_name", "", "Run folder name (default <dataset>-<preset>, then the "
                    "settings that differ from the dataset's defaults, e.g. -split=grouped).")
flags.DEFINE_bool("baselines", False, "Also run random search, ResNet-18, tiny ResNet and DARTS_V2 "
                  "and add them to the results table.")
flags.DEFINE_string("genotype", "", "Retrain this cell instead of searching: DARTS_V1, DARTS_V2 "
                    "or a genotype JSON file (e.g. another run's search/genotype.json).")
flags.DEFINE_bool("cache", True, "Reuse finished steps with identical inputs (TFX cache).")
flags.DEFINE_bool("verbose", False, "Show TFX's own log lines too.")

log = logging.getLogger("pipeline.run")
_LOCKS: List[Any] = []


Interrupted = cli.Interrupted


def _parse_flags(argv: List[str]) -> List[str]:
    try:
        rest = FLAGS(argv)
    except flags.Error as err:
        cli.fail(f"{err} (see --helpshort)")
    if len(rest) > 1:
        cli.fail(f"unexpected arguments {rest[1:]}; use flags like --dataset NAME")
    return rest


def _prepare_run_dir(run_dir: str) -> Any:
    """Creates the run folder, checks it is writable and locks it (returns the lock file)."""
    try:
        os.makedirs(run_dir, exist_ok=True)
        probe = os.path.join(run_dir, f".write-test-{os.getpid()}")
        with open(probe, "w", encoding="utf-8") as f:
            f.write("ok")
        os.remove(probe)
        lock = open(os.path.join(run_dir, ".lock"), "w", encoding="utf-8")
    except OSError as err:
        cli.fail(f"output folder {run_dir} is not writable: {err.strerror or err}")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        cli.fail(f"another run is using {run_dir}; wait for it or use another --output_dir/--run_name")
    return lock


def _check_data(config: Any) -> None:
    """Refuses missing or wrong local data files before the run folder exists."""
    from tfdarts import data as data_lib
    from tfdarts.sources import DataError

    path = config.data.data_dir
    if path and not os.path.exists(path):
        cli.fail(f"data.data_dir={path} does not exist; point it at a folder of IDX files, an "
                 ".npz file or the kirigami folder")
    try:
        data_lib.check_source(config.data)
    except DataError as err:
        cli.fail(err)


def _source_fingerprint(config: Any) -> str:
    from tfdarts import data as data_lib

    started = time.time()
    fingerprint = data_lib.source_fingerprint(config.data)
    log.info("data files fingerprint %s (%.1f s)", fingerprint[:16] or "none", time.time() - started)
    return fingerprint


def _given_cell(spec: str) -> tuple:
    """``(genotype JSON, origin, run-name part)`` of ``--genotype``, validated before
    anything runs (a file's part is its name and a hash of its cell)."""
    import hashlib

    from tfdarts.genotype import PUBLISHED, resolve

    genotype, origin = resolve(spec)
    text = json.dumps(genotype.to_dict(), sort_keys=True)  # canonical: the step's cache key
    if origin in PUBLISHED:
        return text, origin, origin
    stem = os.path.splitext(os.path.basename(origin))[0]
    return text, origin, f"{stem}.{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _install_signal_handlers() -> None:
    def handler(signum, frame):  # noqa: ARG001
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _write_config(run_dir: str, config: Any) -> None:
    import yaml

    from tfdarts.fileio import atomic_open

    with atomic_open(os.path.join(run_dir, "config.yaml")) as f:
        yaml.safe_dump(config.to_dict(), f, sort_keys=False)


def _link(run_dir: str, name: str, target: str) -> None:
    """Points ``run_dir/name`` at `target` with a relative symlink (replaced atomically)."""
    link = os.path.join(run_dir, name)
    tmp = link + ".tmp-link"
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(os.path.relpath(target, run_dir), tmp)
    if os.path.isdir(link) and not os.path.islink(link):
        shutil.rmtree(link)
    os.replace(tmp, link)


def _finish(run_dir: str, store_path: str, name: str, started: float) -> None:
    """Links and copies the latest outputs into the run folder and prints where they are."""
    from pipeline import lineage
    from tfdarts import contract, fileio

    run = lineage.latest_run(store_path, name)
    if run is None:
        cli.fail("the pipeline finished but ML Metadata has no record of the run", 1)
    outputs = {}
    for step in run["steps"]:
        for key, art in step["outputs"].items():
            outputs[key] = art
            _link(run_dir, key, art["uri"])
    report = outputs["report"]["uri"]
    for name_ in (contract.RESULTS_CSV, contract.RESULTS_MD):
        if os.path.exists(os.path.join(report, name_)):
            shutil.copy2(os.path.join(report, name_), os.path.join(run_dir, name_))
    fileio.write_json(os.path.join(run_dir, contract.OUTPUTS_FILE), run)
    evaluation, model = outputs["evaluation"], outputs["model"]
    props = evaluation["properties"]
    saved_model = model["properties"].get("saved_model", contract.SERVING_MODEL_DIR)
    metrics = fileio.read_json(os.path.join(evaluation["uri"], contract.METRICS_FILE))["metrics"]
    states = ", ".join(f"{s['step']} {'cached' if s['state'] == 'CACHED' else s['state'].lower()}"
                       for s in run["steps"])
    elapsed = datetime.timedelta(seconds=int(time.time() - started))
    lines = [
        f"done in {elapsed} ({states})",
        f"test {', '.join(f'{k} {v:.4f}' for k, v in metrics.items())}; "
        f"{int(props.get('params', 0)):,} parameters",
        f"SavedModel:  {os.path.join(model['uri'], saved_model)}",
        f"genotype:    {os.path.join(outputs['search']['uri'], 'genotype.json')}",
        f"metrics:     {os.path.join(evaluation['uri'], 'metrics.json')}",
        f"report:      {os.path.join(report, 'report.html')}",
        f"results:     {os.path.join(run_dir, 'results.md')}",
        f"metadata:    {store_path}",
        f"lineage:     python -m pipeline.lineage {run_dir}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def main(argv: List[str]) -> int:
    """Entry point after flag parsing."""
    del argv
    cli.quiet_libraries()
    from tfdarts.config import ConfigError, advisories
    from tfdarts.sources import DataError

    from tfdarts.genotype import GenotypeError

    try:
        config = cli.build_config(FLAGS.dataset, FLAGS.preset, FLAGS.config, FLAGS.override)
        given = _given_cell(FLAGS.genotype) if FLAGS.genotype else None
    except (cli.UsageError, ConfigError, DataError, GenotypeError) as err:
        cli.fail(err)
    extra = cli.data_name_part(config, FLAGS.dataset) + ([f"genotype={given[2]}"] if given else [])
    run_dir = os.path.abspath(os.path.join(FLAGS.output_dir, FLAGS.run_name or cli.run_name(
        FLAGS.dataset, FLAGS.preset, cli.config_changes(config, FLAGS.dataset, FLAGS.preset), extra)))
    cli.quiet_libraries(import_tensorflow=True)
    from tfdarts import baselines as baselines_lib
    from tfdarts import runtime

    runtime.apply_threads(config.runtime)  # before the process's first TensorFlow op

    try:
        baselines_lib.check_include(config)
    except ConfigError as err:
        cli.fail(err)
    _check_data(config)  # before anything is written
    _LOCKS.append(_prepare_run_dir(run_dir))  # held until the process exits
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    log_file = os.path.join(run_dir, "logs", f"run-{stamp}.log")
    cli.configure_logging(log_file, FLAGS.verbose)

    from tfx.orchestration.local.local_dag_runner import LocalDagRunner

    from pipeline import lineage
    from pipeline import pipeline as pipeline_lib

    store_path = os.path.join(run_dir, pipeline_lib.METADATA_FILE)
    try:
        stale = lineage.fail_stale_executions(store_path)
    except lineage.StoreError as err:
        cli.fail(f"{err}; move or remove {store_path} to start this run folder afresh")
    if stale:
        log.info("marked %d execution(s) left RUNNING by an interrupted run as FAILED", stale)
    from pipeline.components import common

    orphans = common.remove_orphan_stages(os.path.join(run_dir, pipeline_lib.PIPELINE_ROOT_DIR))
    if orphans:
        log.info("removed %d staging folder(s) left by an interrupted run", orphans)
    _write_config(run_dir, config)
    name = pipeline_lib.pipeline_name(config)
    tfx_pipeline = pipeline_lib.create_pipeline(
        config, os.path.join(run_dir, pipeline_lib.PIPELINE_ROOT_DIR), store_path,
        baselines=FLAGS.baselines, work_root=os.path.join(run_dir, pipeline_lib.WORK_DIR),
        name=name, enable_cache=FLAGS.cache, source_fingerprint=_source_fingerprint(config),
        given=given[:2] if given else None)
    os.environ[pipeline_lib.LOG_EVERY_ENV] = str(config.runtime.log_every)
    steps = [s.name for s in pipeline_lib.active_steps(FLAGS.baselines, given=given is not None)]
    log.info("run folder %s; steps %s; log %s", run_dir, " -> ".join(steps), log_file)
    for note in advisories(config):
        log.warning(note)
    started = time.time()
    _install_signal_handlers()
    try:
        LocalDagRunner().run(tfx_pipeline)
    except (ConfigError, DataError) as err:
        logging.getLogger("pipeline.run").debug("bad input", exc_info=True)
        cli.fail(err)
    except Interrupted as err:
        cli.fail(f"interrupted by {err}; the step is recorded as FAILED; rerun the same command "
                 "to resume", 130)
    except Exception as err:  # noqa: BLE001  (a failed step: one line here, traceback in the log)
        _log_to_file_only(log_file, err)
        advice = ("rerun the same command to resume" if _rerun_may_help(err)
                  else "a rerun alone will not fix this")
        cli.fail(f"a step failed: {type(err).__name__}: {err}; it is recorded as FAILED in "
                 f"{store_path}; full traceback in {log_file}; {advice}", 1)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        _finish(run_dir, store_path, name, started)
    except lineage.StoreError as err:
        cli.fail(f"the pipeline finished but its ML Metadata store cannot be read: {err}")
    return 0


def _rerun_may_help(err: BaseException) -> bool:
    """Only a resource or I/O failure may pass on a rerun; a diverged search or a bad
    genotype fails the same way again."""
    import tensorflow as tf

    from tfdarts.genotype import GenotypeError
    from tfdarts.trainer import TrainingDiverged

    if isinstance(err, (TrainingDiverged, GenotypeError, ValueError, TypeError, KeyError)):
        return False
    return isinstance(err, (OSError, MemoryError, tf.errors.ResourceExhaustedError,
                            tf.errors.UnavailableError, tf.errors.AbortedError))


def _log_to_file_only(log_file: str, err: BaseException) -> None:
    import traceback

    with open(log_file, "a", encoding="utf-8") as f:
        f.write("".join(traceback.format_exception(type(err), err, err.__traceback__)))


def run() -> None:
    """Console entry point."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
