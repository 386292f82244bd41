"""Lineage from ML Metadata: ``python -m pipeline.lineage PATH``.

PATH is a run folder (its latest report is traced), or any file or folder inside an
artifact: a SavedModel, a ``genotype.json``, a ``metrics.json``... (links in the run
folder are followed). The store is the ``metadata.sqlite`` found in PATH or a parent
folder (or ``--store``). Printed, in pipeline order: the dataset and its fingerprint,
the non-default config, and every execution that led to PATH (search, retrain,
evaluate, ...) with its state, times and its output artifacts' properties (genotype,
metrics, parameter count).

The module also holds the ML Metadata queries the runner uses (`latest_run`,
`fail_stale_executions`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from tfdarts import contract
from tfdarts.contract import METADATA_FILE
from tfdarts.progress import format_duration


# ----------------------------------------------------------------------------- store access


class StoreError(RuntimeError):
    """An ML Metadata store file that cannot be opened or read: empty, corrupt, or an
    SQLite database without ML Metadata's tables. The message names the file."""


def _reason(err: BaseException) -> str:
    """The SQLite reason of an ML Metadata error, without the query text."""
    text = str(err).replace("Error when executing query: ", "", 1)
    return text.split(" query:", 1)[0].strip() or type(err).__name__


def _store_error(path: str, err: BaseException) -> StoreError:
    """A `StoreError` naming `path` for an error ML Metadata raised on it."""
    reason = _reason(err)
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return StoreError(f"{path} is empty (0 bytes), not an ML Metadata store")
    if "readonly database" in reason:
        return StoreError(f"{path} is an SQLite database without ML Metadata tables")
    return StoreError(f"{path} is not a readable ML Metadata store ({reason})")


@contextlib.contextmanager
def reading(path: str) -> Iterator[None]:
    """Turns ML Metadata errors raised while querying the store `path` into `StoreError`."""
    from ml_metadata import errors

    try:
        yield
    except errors.StatusError as err:
        raise _store_error(path, err) from None


def open_store(path: str, readonly: bool = True) -> Any:
    """An ``ml_metadata`` MetadataStore on the SQLite file `path`.

    Raises:
        FileNotFoundError: `path` is not a file.
        StoreError: The file is empty (when `readonly`), corrupt or not a store.
    """
    from ml_metadata import errors, metadata_store
    from ml_metadata.proto import metadata_store_pb2

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no ML Metadata store at {path}")
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = path
    config.sqlite.connection_mode = (metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
                                     if readonly else
                                     metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE)
    try:
        return metadata_store.MetadataStore(config)
    except (RuntimeError, errors.StatusError) as err:  # SQLite errors come as either
        raise _store_error(path, err) from None


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    out = getattr(value, kind)
    if kind == "string_value" and out[:1] in ("[", "{"):
        try:
            return json.loads(out)
        except ValueError:
            return out
    if kind in ("struct_value", "proto_value"):
        return str(out)
    return out


def properties(node: Any) -> Dict[str, Any]:
    """Properties and custom properties of an MLMD artifact or execution as plain values."""
    out = {k: _value(v) for k, v in node.properties.items()}
    out.update({k: _value(v) for k, v in node.custom_properties.items()})
    return out


def state_name(execution: Any) -> str:
    """``COMPLETE``, ``CACHED``, ``FAILED``, ``RUNNING``, ..."""
    from ml_metadata.proto import metadata_store_pb2

    return metadata_store_pb2.Execution.State.Name(execution.last_known_state)


def _step_of(type_name: str) -> str:
    """Step name from an execution type like ``pipeline.components.search.Search``."""
    parts = type_name.split(".")
    return parts[-2] if len(parts) >= 2 and parts[-3:-2] == ["components"] else parts[-1].lower()


def _time(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def fail_stale_executions(store_path: str) -> int:
    """Marks executions left RUNNING/NEW by a killed process as FAILED.

    Only call while holding the run folder's lock (no other run can be active).

    Returns:
        How many executions were marked.

    Raises:
        StoreError: The store is corrupt or not an ML Metadata store.
    """
    from ml_metadata.proto import metadata_store_pb2 as pb

    if not os.path.isfile(store_path):
        return 0
    store = open_store(store_path, readonly=False)
    with reading(store_path):
        stale = [e for e in store.get_executions()
                 if e.last_known_state in (pb.Execution.RUNNING, pb.Execution.NEW)]
        for execution in stale:
            execution.last_known_state = pb.Execution.FAILED
            execution.custom_properties["tfdarts_note"].string_value = (
                "process ended while running; marked FAILED by the next run")
        if stale:
            store.put_executions(stale)
    return len(stale)


def _artifact_record(store: Any, artifact: Any, type_names: Mapping[int, str]) -> Dict[str, Any]:
    return {"id": artifact.id, "type": type_names.get(artifact.type_id, str(artifact.type_id)),
            "uri": artifact.uri, "properties": properties(artifact)}


def _type_names(store: Any) -> Tuple[Dict[int, str], Dict[int, str]]:
    return ({t.id: t.name for t in store.get_artifact_types()},
            {t.id: t.name for t in store.get_execution_types()})


def latest_run(store_path: str, pipeline_name: str) -> Optional[Dict[str, Any]]:
    """The latest run of `pipeline_name`: each step's execution, state and outputs.

    Returns:
        ``{"pipeline", "run", "steps": [{"step", "execution", "state", "outputs":
        {key: {"id", "type", "uri", "properties"}}}]}`` in execution order, or None.

    Raises:
        StoreError: The store is corrupt or not an ML Metadata store.
    """
    store = open_store(store_path)
    with reading(store_path):
        return _latest_run(store, pipeline_name)


def _latest_run(store: Any, pipeline_name: str) -> Optional[Dict[str, Any]]:
    """`latest_run` on an open store."""
    from ml_metadata.proto import metadata_store_pb2 as pb

    pipeline_ctx = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if pipeline_ctx is None:
        return None
    in_pipeline = {e.id for e in store.get_executions_by_context(pipeline_ctx.id)}
    art_types, exec_types = _type_names(store)
    for run_ctx in sorted(store.get_contexts_by_type("pipeline_run"), key=lambda c: -c.id):
        executions = [e for e in store.get_executions_by_context(run_ctx.id) if e.id in in_pipeline]
        if not executions:
            continue
        steps = []
        for execution in sorted(executions, key=lambda e: e.id):
            events = [ev for ev in store.get_events_by_execution_ids([execution.id])
                      if ev.type == pb.Event.OUTPUT]
            arts = {a.id: a for a in store.get_artifacts_by_id([ev.artifact_id for ev in events])}
            steps.append({"step": _step_of(exec_types.get(execution.type_id, "")),
                          "execution": execution.id, "state": state_name(execution),
                          "outputs": {ev.path.steps[0].key: _artifact_record(store, arts[ev.artifact_id],
                                                                             art_types)
                                      for ev in events if ev.artifact_id in arts}})
        return {"pipeline": pipeline_name, "run": run_ctx.name, "steps": steps}
    return None


# ----------------------------------------------------------------------------- lineage


def find_store(path: str) -> str:
    """The ``metadata.sqlite`` in `path` or the nearest parent (following links)."""
    for start in dict.fromkeys([os.path.abspath(path), os.path.realpath(path)]):
        folder = start if os.path.isdir(start) else os.path.dirname(start)
        while True:
            candidate = os.path.join(folder, METADATA_FILE)
            if os.path.isfile(candidate):
                return candidate
            parent = os.path.dirname(folder)
            if parent == folder:
                break
            folder = parent
    raise FileNotFoundError(f"no {METADATA_FILE} in {path} or its parent folders; "
                            "give the run folder or --store")


_CHAIN_ORDER = (contract.REPORT_TYPE, contract.EVALUATION_TYPE, contract.MODEL_TYPE, contract.SEARCH_RESULT_TYPE,
                contract.BASELINES_TYPE, contract.DATASET_TYPE)


def kind(type_name: str) -> str:
    """The current type a recorded type name stands for: run folders of earlier versions
    recorded some types under names since retired (`tfdarts.contract.RETIRED_TYPES`)."""
    return contract.RETIRED_TYPES.get(type_name, type_name)


def find_artifact(store: Any, path: str, store_path: str) -> Any:
    """The artifact `path` belongs to; for the run folder itself, its latest report."""
    art_types, _ = _type_names(store)
    artifacts = store.get_artifacts()
    real = os.path.realpath(path)
    if os.path.realpath(os.path.dirname(store_path)) == real:
        for type_name in _CHAIN_ORDER:
            found = [a for a in artifacts if kind(art_types.get(a.type_id, "")) == type_name]
            if found:
                return max(found, key=lambda a: a.id)
        raise LookupError(f"the store {store_path} records no artifacts yet")
    best = None
    for artifact in artifacts:
        uri = os.path.realpath(artifact.uri) if artifact.uri else ""
        if uri and (real == uri or real.startswith(uri.rstrip("/") + "/")):
            if best is None or len(artifact.uri) > len(best.uri):
                best = artifact
    if best is None:
        raise LookupError(f"{path} is not inside any artifact recorded in {store_path}")
    return best


def trace(store: Any, artifact: Any) -> Dict[str, Any]:
    """Walks producers and their inputs upstream from `artifact`.

    Returns:
        ``{"artifacts": {id: artifact}, "executions": {id: execution}, "inputs":
        {execution id: [(key, artifact id)]}, "outputs": {execution id: [(key,
        artifact id)]}, "reused": {execution id: [cached execution ids]}}``; for each
        artifact the producer is the execution that made it (not cache reuses).
    """
    from ml_metadata.proto import metadata_store_pb2 as pb

    artifacts = {artifact.id: artifact}
    executions: Dict[int, Any] = {}
    inputs: Dict[int, List[Tuple[str, int]]] = {}
    outputs: Dict[int, List[Tuple[str, int]]] = {}
    reused: Dict[int, List[int]] = {}
    queue = [artifact.id]
    seen = set()
    while queue:
        art_id = queue.pop()
        if art_id in seen:
            continue
        seen.add(art_id)
        out_events = [ev for ev in store.get_events_by_artifact_ids([art_id])
                      if ev.type == pb.Event.OUTPUT]
        if not out_events:
            continue
        producers = store.get_executions_by_id(sorted({ev.execution_id for ev in out_events}))
        made = [e for e in producers if e.last_known_state == pb.Execution.COMPLETE] or producers
        producer = min(made, key=lambda e: e.id)
        reused[producer.id] = sorted(e.id for e in producers if e.id != producer.id)
        if producer.id in executions:
            continue
        executions[producer.id] = producer
        events = store.get_events_by_execution_ids([producer.id])
        inputs[producer.id] = [(ev.path.steps[0].key if ev.path.steps else "", ev.artifact_id)
                               for ev in events if ev.type == pb.Event.INPUT]
        outputs[producer.id] = [(ev.path.steps[0].key if ev.path.steps else "", ev.artifact_id)
                                for ev in events if ev.type == pb.Event.OUTPUT]
        ids = [a for _, a in inputs[producer.id] + outputs[producer.id] if a not in artifacts]
        for art in store.get_artifacts_by_id(ids):
            artifacts[art.id] = art
        queue.extend(a for _, a in inputs[producer.id])
    return {"artifacts": artifacts, "executions": executions, "inputs": inputs,
            "outputs": outputs, "reused": reused}


def _config_of(executions: Sequence[Any]) -> Dict[str, Any]:
    """The union of the config sections the executions received."""
    merged: Dict[str, Any] = {}
    for execution in sorted(executions, key=lambda e: e.id):
        text = properties(execution).get("config_json")
        if isinstance(text, dict):
            merged.update(text)
        elif isinstance(text, str) and text:
            with contextlib.suppress(ValueError):  # shown as far as it parses
                parsed = json.loads(text)
                merged.update(parsed if isinstance(parsed, dict) else {})
    return merged


def _non_default(config: Mapping[str, Any]) -> List[str]:
    from tfdarts.config import Config

    defaults = Config().to_dict()
    out = []
    for section, values in config.items():
        for key, value in (values or {}).items():
            if defaults.get(section, {}).get(key) != value:
                shown = ",".join(map(str, value)) if isinstance(value, list) else value
                out.append(f"{section}.{key}={shown}")
    return out


_SHOWN = {
    contract.DATASET_TYPE: ("name", "fingerprint", "source", "task", "input_shape", "num_train",
                        "num_test", "augment"),
    contract.SEARCH_RESULT_TYPE: ("source", "origin", "genotype", "epochs", "val_metric", "train_metric",
                                  "supernet_params", "seconds", "resumed_from_epoch"),
    contract.MODEL_TYPE: ("params", "epochs", "train_metric", "test_metric", "seconds",
                          "resumed_from_epoch", "saved_model"),
    contract.EVALUATION_TYPE: ("cell_source", "metrics", "params", "search_seconds", "train_seconds",
                               "serving_checked", "saved_model"),
    contract.BASELINES_TYPE: ("models",),
    contract.REPORT_TYPE: ("report", "results", "warnings", "models"),
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def _genotype_lines(genotype: Mapping[str, Any]) -> List[Tuple[str, str]]:
    """``[("normal", "0: sep_conv_3x3<-c_{k-1}, ... | 1: ..."), ("reduce", ...)]``."""
    from tfdarts.analysis import format_gene
    from tfdarts.genotype import Genotype, GenotypeError

    try:
        geno = Genotype.from_dict(genotype)
    except (GenotypeError, KeyError, TypeError, ValueError):
        return [("genotype", json.dumps(genotype))]
    return [("genotype normal", format_gene(geno.normal)), ("genotype reduce", format_gene(geno.reduce))]


def describe(store: Any, store_path: str, path: str, target: Any) -> List[str]:
    """Lines describing the chain that produced `target`."""
    from pipeline.pipeline import STEPS

    art_types, exec_types = _type_names(store)
    graph = trace(store, target)
    arts, execs = graph["artifacts"], graph["executions"]
    order = {s.name: i for i, s in enumerate(STEPS)}
    ordered = sorted(execs.values(), key=lambda e: (
        order.get(_step_of(exec_types.get(e.type_id, "")), 99), e.id))
    target_type = art_types.get(target.type_id, "")
    lines = [f"lineage of {path}",
             f"  artifact {target.id} ({target_type}) at {target.uri}",
             f"  store {store_path}", ""]
    datasets = [a for a in arts.values() if kind(art_types.get(a.type_id, "")) == contract.DATASET_TYPE]
    for ds in datasets:
        p = properties(ds)
        lines.append(f"dataset      {p.get('name', '?')}  fingerprint {p.get('fingerprint', '?')}")
        lines.append(f"             {p.get('num_train', '?')} train / {p.get('num_test', '?')} test, "
                     f"{p.get('task', '?')} {p.get('input_shape', '')}, source {p.get('source', '?')}")
    config = _config_of(list(execs.values()))
    if config:
        from hashlib import sha256

        digest = sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
        changed = _non_default(config)
        lines.append(f"config       sections {', '.join(sorted(config))} (sha256 {digest})")
        for i in range(0, len(changed), 4):
            lines.append("             " + "  ".join(changed[i:i + 4]))
    versions = sorted({str(properties(e).get("code_version", "")) for e in execs.values()} - {""})
    if versions:
        lines.append(f"code         version {', '.join(versions)}")
    lines.append("")
    for execution in ordered:
        step = _step_of(exec_types.get(execution.type_id, ""))
        start, end = execution.create_time_since_epoch, execution.last_update_time_since_epoch
        reused = graph["reused"].get(execution.id) or []
        note = f"; reused from cache by execution(s) {', '.join(map(str, reused))}" if reused else ""
        lines.append(f"{step:<12} execution {execution.id} {state_name(execution)}  {_time(start)} -> "
                     f"{_time(end)} ({format_duration((end - start) / 1000)}){note}")
        for key, art_id in graph["outputs"].get(execution.id, []):
            art = arts.get(art_id)
            if art is None:
                continue
            type_name = art_types.get(art.type_id, "")
            p = properties(art)
            lines.append(f"  -> {key} ({type_name}, artifact {art.id}) {art.uri}")
            for name in _SHOWN.get(kind(type_name), ()):
                if name == "genotype" and isinstance(p.get(name), dict):
                    lines += [f"       {cell}: {text}" for cell, text in _genotype_lines(p[name])]
                elif p.get(name) is not None:
                    lines.append(f"       {name}: {_fmt(p[name])}")
    return lines


def _quiet_mlmd() -> None:
    """Hides ML Metadata's own report of a failed query (a WARNING with the whole SQL
    text): the command says what went wrong in its one ``error:`` line."""
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point."""
    from pipeline import cli

    parser = cli.ArgumentParser(prog="python -m pipeline.lineage",
                                description="Print the ML Metadata lineage of a run folder, "
                                            "SavedModel, genotype or other artifact file.")
    parser.add_argument("path", help="run folder, or a file/folder inside an artifact")
    parser.add_argument("--store", default="", help="ML Metadata SQLite file (default: found "
                                                    "in PATH or its parents)")
    args = parser.parse_args(argv)
    cli.quiet_libraries()
    _quiet_mlmd()
    if not os.path.exists(args.path):
        cli.fail(f"{args.path} does not exist")
    try:
        store_path = os.path.abspath(args.store) if args.store else find_store(args.path)
        store = open_store(store_path)
        with reading(store_path):
            target = find_artifact(store, args.path, store_path)
            lines = describe(store, store_path, args.path, target)
    except (FileNotFoundError, LookupError, StoreError) as err:
        cli.fail(err)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
