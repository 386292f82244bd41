"""What every step shares: config decoding, working folders, atomic outputs, properties.

A step is a plain function ``run(config, inputs, outputs, work_dir) -> {output key:
properties}`` taking folder paths. `execute` wraps it the same way for both runners:

* the config arrives as JSON (only the sections the step depends on);
* the step works in a stable working folder keyed by step, config, code version
  and input folders, so rerunning after a failure resumes from its checkpoints
  (TFX gives every execution fresh output folders and deletes them on failure);
* outputs are written into a staging folder and renamed into place only when the
  step succeeded, ending with ``properties.json``;
* a ``tensorboard`` folder the step left in its working folder (the event files
  of a search or retrain) is copied into each output, so ``tensorboard --logdir``
  on the run folder finds every job's curves;
* the returned properties become the artifacts' custom properties in ML Metadata.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gc
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Iterator, Mapping, Optional

from tfdarts import fileio
from tfdarts.contract import PROPERTIES_FILE, TENSORBOARD_DIR
from tfdarts.config import Config, from_dict

log = logging.getLogger("tfdarts.pipeline")

StepFn = Callable[[Config, Mapping[str, str], Mapping[str, str], str], Dict[str, Dict[str, Any]]]


def config_from_json(config_json: str) -> Config:
    """Rebuilds the (partial) config a step received; missing sections take defaults.

    The logging cadence, not part of the config a step receives (it changes no
    result), comes from the `pipeline.pipeline.LOG_EVERY_ENV` environment variable when set.
    """
    from pipeline.pipeline import LOG_EVERY_ENV

    config = from_dict(json.loads(config_json))
    log_every = os.environ.get(LOG_EVERY_ENV, "")
    if log_every.isdigit():
        config = dataclasses.replace(config, runtime=dataclasses.replace(config.runtime,
                                                                         log_every=int(log_every)))
    return config


def work_key(step: str, config_json: str, code_version: str, inputs: Mapping[str, str]) -> str:
    """Short hash naming a step's working folder."""
    payload = json.dumps({"step": step, "config": config_json, "code": code_version,
                          "inputs": {k: os.path.abspath(v) for k, v in sorted(inputs.items())}},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def read_properties(folder: str) -> Dict[str, Any]:
    """The ``properties.json`` of an artifact folder ({} when absent)."""
    path = os.path.join(folder, PROPERTIES_FILE)
    return fileio.read_json(path) if os.path.exists(path) else {}


def copy_files(src: str, dst: str, names: Any) -> None:
    """Copies the named files (or folders) from `src` to `dst`; missing ones are an error."""
    for name in names:
        source = os.path.join(src, name)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(dst, name), dirs_exist_ok=True)
        elif os.path.exists(source):
            shutil.copy2(source, os.path.join(dst, name))
        else:
            raise FileNotFoundError(f"{source} is missing after the step ran")


STAGING_PREFIX = ".staging-"


def remove_orphan_stages(root: str) -> int:
    """Deletes staging folders that killed steps left under `root`; returns how many.

    Only call while no step can be writing under `root` (the run folder's lock is held).
    """
    found = [os.path.join(d, n) for d, dirs, _ in os.walk(root) for n in dirs
             if n.startswith(STAGING_PREFIX)]
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    return len(found)


@contextlib.contextmanager
def staged(final: str) -> Iterator[str]:
    """A staging folder beside `final`'s content, renamed into `final` on success.

    Entries move with ``os.replace`` one by one, ``properties.json`` last, so a reader
    that finds ``properties.json`` finds everything else complete.
    """
    os.makedirs(final, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=final)
    try:
        yield stage
        names = sorted(os.listdir(stage), key=lambda n: (n == PROPERTIES_FILE, n))
        for name in names:
            target = os.path.join(final, name)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            os.replace(os.path.join(stage, name), target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def copy_event_files(work_dir: str, stages: Mapping[str, str],
                     props: Mapping[str, Mapping[str, Any]]) -> None:
    """Copies ``work_dir/tensorboard`` (when the step wrote one) into every output stage
    but those a non-chief worker returned (``worker_role`` set: the chief writes it)."""
    if not os.path.isdir(os.path.join(work_dir, TENSORBOARD_DIR)):
        return
    for key, stage in stages.items():
        if "worker_role" not in props.get(key, {}):
            copy_files(work_dir, stage, [TENSORBOARD_DIR])


def _free_memory() -> None:
    """Drops Keras' global state between steps that run in one process."""
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
    gc.collect()


def execute(step: str, fn: StepFn, config_json: str, code_version: str, work_root: str,
            inputs: Mapping[str, str], outputs: Mapping[str, str]) -> Dict[str, Dict[str, Any]]:
    """Runs one step: config, working folder, staged outputs, properties.

    Args:
        step: Step name (logs, working-folder key).
        fn: The step function.
        config_json: The step's config sections as JSON.
        code_version: Code hash (recorded and part of the working-folder key).
        work_root: Parent of the working folders; "" = a folder under the system's
            temporary directory (no resuming across machines).
        inputs: Input folders by key (absent optional inputs left out).
        outputs: Output folders by key.

    Returns:
        Properties per output key, as written to each ``properties.json``.
    """
    config = config_from_json(config_json)
    key = work_key(step, config_json, code_version, inputs)
    root = work_root or os.path.join(tempfile.gettempdir(), "tfdarts-work")
    work_dir = os.path.join(root, step, key)
    os.makedirs(work_dir, exist_ok=True)
    log.info("%s: starting (working folder %s)", step, work_dir)
    started = time.time()
    with contextlib.ExitStack() as stack:
        stages = {k: stack.enter_context(staged(path)) for k, path in outputs.items()}
        try:
            props = fn(config, dict(inputs), stages, work_dir) or {}
        finally:
            _free_memory()
        copy_event_files(work_dir, stages, props)
        seconds = time.time() - started
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        for out_key, stage in stages.items():
            record = {**props.get(out_key, {}), "step": step, "code_version": code_version,
                      "step_seconds": round(seconds, 3), "finished": stamp,
                      "config_sha256": hashlib.sha256(config_json.encode()).hexdigest()[:16]}
            props[out_key] = record
            fileio.write_json(os.path.join(stage, PROPERTIES_FILE), record)
    shutil.rmtree(work_dir, ignore_errors=True)
    log.info("%s: finished in %.0fs", step, seconds)
    return props


def set_custom_properties(artifact: Any, props: Mapping[str, Any]) -> None:
    """Records properties on a TFX artifact (ints, floats, strings; others as JSON)."""
    for key, value in props.items():
        if value is None:
            continue
        if isinstance(value, bool):
            artifact.set_int_custom_property(key, int(value))
        elif isinstance(value, int):
            artifact.set_int_custom_property(key, value)
        elif isinstance(value, float):
            artifact.set_float_custom_property(key, value)
        elif isinstance(value, str):
            artifact.set_string_custom_property(key, value)
        else:
            artifact.set_string_custom_property(key, json.dumps(value, sort_keys=True))


def run_tfx(step: str, fn: StepFn, inputs: Mapping[str, Optional[Any]],
            outputs: Mapping[str, Any], config_json: str, code_version: str,
            work_root: str) -> None:
    """Body of every TFX component: artifact URIs in, custom properties out."""
    props = execute(step, fn, config_json, code_version, work_root,
                    {k: a.uri for k, a in inputs.items() if a is not None},
                    {k: a.uri for k, a in outputs.items()})
    for key, artifact in outputs.items():
        set_custom_properties(artifact, props.get(key, {}))


def last_value(history: Mapping[str, Any], key: str) -> Optional[float]:
    """Last non-null value of `key` in a ``history.json`` dict."""
    values = [r[key] for r in history.get("epochs", []) if r.get(key) is not None]
    return float(values[-1]) if values else None
