"""The Kubeflow YAML: a config task, then five tasks wired like the TFX pipeline, each
running the project's image with its volumes, resources and typed artifacts; and its
task commands, run here as plain processes the way the Kubeflow launcher runs them,
complete the tiny pipeline and leave metrics the Kubeflow UI can show."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from typing import Any, Dict, List, Mapping

import pytest
import yaml
from conftest import REPO, SHARED_DATA

from pipeline import cli, kubeflow
from tfdarts import contract

IMAGE = "registry.example/tfdarts:test"
CONFIG = kubeflow.CONFIG_TASK
CORE = {"ingest": [], "search": ["ingest"], "retrain": ["ingest", "search"],
        "evaluate": ["ingest", "retrain", "search"],
        "analyze": ["evaluate", "ingest", "retrain", "search"]}
SCHEMAS = {"ingest": {"dataset": "system.Dataset"}, "retrain": {"model": "system.Model"},
           "evaluate": {"metrics": "system.Metrics"}, "analyze": {"report_html": "system.HTML"}}


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    return env


def _run(args: List[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


def _compile(tmp_path, *extra: str) -> Dict[str, Any]:
    """The compiled pipeline spec with the platform spec (second YAML document) merged in."""
    out = tmp_path / "pipeline.yaml"
    proc = _run(["-m", "pipeline.kubeflow", "--dataset", "fashion_mnist", "--image", IMAGE,
                 "--output", str(out), *extra])
    assert proc.returncode == 0, proc.stderr[-3000:]
    docs = list(yaml.safe_load_all(out.read_text()))
    assert len(docs) == 2, "expected the pipeline spec and the Kubernetes platform spec"
    return {**docs[0], **docs[1]}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return _compile(tmp_path_factory.mktemp("kfp"))


def _executor(spec: Mapping[str, Any], task: str) -> Dict[str, Any]:
    component = spec["components"][spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]]
    return spec["deploymentSpec"]["executors"][component["executorLabel"]]


def _mounts(spec: Mapping[str, Any], task: str) -> Dict[str, str]:
    """``mount path -> claim parameter`` of a task."""
    component = spec["components"][spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]]
    platform = spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    mounts = platform.get(component["executorLabel"], {}).get("pvcMount", [])
    return {m["mountPath"]: m["pvcNameParameter"]["componentInputParameter"] for m in mounts}


def _defaults(spec: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v.get("defaultValue") for k, v in spec["root"]["inputDefinitions"]["parameters"].items()}


# ----------------------------------------------------------------------------- the compiled spec


def test_config_task_then_five_tasks_with_the_right_dependencies(compiled):
    tasks = compiled["root"]["dag"]["tasks"]
    assert set(tasks) == set(CORE) | {CONFIG}
    assert tasks[CONFIG].get("dependentTasks", []) == []
    for name, deps in CORE.items():
        assert sorted(tasks[name].get("dependentTasks", [])) == sorted(deps + [CONFIG]), name


def test_each_task_runs_its_step_in_the_image(compiled):
    for name in compiled["root"]["dag"]["tasks"]:
        container = _executor(compiled, name)["container"]
        assert container["image"] == IMAGE
        assert container["command"] == ["python", "-m", "pipeline.steps", name]


def test_run_parameters_default_to_the_compile_time_config(compiled):
    defaults = _defaults(compiled)
    assert set(defaults) == set(kubeflow.RUN_PARAMETERS) | {"work_root", "data_pvc", "work_pvc"}
    assert defaults["dataset"] == "fashion_mnist" and defaults["preset"] == "cpu"
    cpu = cli.build_config("fashion_mnist", "cpu")
    assert int(defaults["search_epochs"]) == cpu.search.epochs
    assert int(defaults["retrain_epochs"]) == cpu.retrain.epochs
    assert int(defaults["seed"]) == cpu.search.seed
    assert defaults["overrides"] == "" and defaults["data_dir"] == ""
    assert defaults["work_root"] == kubeflow.WORK_MOUNT
    assert (defaults["data_pvc"], defaults["work_pvc"]) == (kubeflow.DATA_PVC, kubeflow.WORK_PVC)


def test_compile_flags_become_parameter_defaults(tmp_path):
    """Epochs, seed and every other override map onto the parameters; resolving the
    defaults at run time gives back the compile-time config."""
    spec = _compile(tmp_path, "--preset", "tiny", "--override", "search.epochs=3",
                    "--override", "retrain.seed=7", "--override", "search.seed=5",
                    "--override", "search.order=2", "--override", "data.data_dir=/data/fashion-mnist")
    defaults = _defaults(spec)
    assert int(defaults["search_epochs"]) == 3 and int(defaults["seed"]) == 5
    assert defaults["data_dir"] == "fashion-mnist"
    assert sorted(defaults["overrides"].split()) == ["retrain.seed=7", "search.order=2"]
    params = kubeflow.RunParameters(defaults["dataset"], defaults["preset"], int(defaults["search_epochs"]),
                                    int(defaults["retrain_epochs"]), int(defaults["seed"]),
                                    defaults["overrides"], defaults["data_dir"])
    config = kubeflow.run_config(params, kubeflow.DATA_MOUNT)
    assert (config.search.seed, config.retrain.seed, config.search.order) == (5, 7, 2)
    assert config.data.data_dir == "/data/fashion-mnist"


def test_step_tasks_get_their_config_from_the_config_task_only(compiled):
    """No run parameter but work_root reaches a step task directly: each gets its own
    config output, so e.g. retrain_epochs is not among the search task's inputs."""
    for name in CORE:
        params = compiled["root"]["dag"]["tasks"][name]["inputs"]["parameters"]
        assert params["config_json"]["taskOutputParameter"] == {
            "producerTask": CONFIG, "outputParameterKey": f"{name}_config"}
        direct = {v["componentInputParameter"] for v in params.values() if "componentInputParameter" in v}
        assert direct == {"work_root"}, name
    config_inputs = compiled["root"]["dag"]["tasks"][CONFIG]["inputs"]["parameters"]
    assert set(config_inputs) == set(kubeflow.RUN_PARAMETERS)
    assert compiled["root"]["dag"]["tasks"][CONFIG]["cachingOptions"].get("enableCache") is not True


def test_a_step_config_changes_only_with_the_settings_of_its_sections():
    """What the cache sees: changing retrain epochs leaves the ingest and search configs
    as they were; changing search epochs leaves the ingest config."""
    from pipeline.pipeline import STEPS, step_config_json

    def configs(**changes):
        params = kubeflow.RunParameters("fashion_mnist", "tiny", 1, 1, 2, data_dir="fashion-mnist")
        config = kubeflow.run_config(dataclasses.replace(params, **changes), "/data")
        return {s.name: json.loads(step_config_json(config, s)) for s in STEPS}

    base, retrain, search = configs(), configs(retrain_epochs=3), configs(search_epochs=3)
    assert set(base["ingest"]) == {"data"} and set(base["search"]) == {"data", "search", "runtime"}
    assert "log_every" not in base["search"]["runtime"]
    assert (retrain["ingest"], retrain["search"]) == (base["ingest"], base["search"])
    assert retrain["retrain"] != base["retrain"] and retrain["retrain"]["retrain"]["epochs"] == 3
    assert search["ingest"] == base["ingest"] and search["search"] != base["search"]
    assert configs(overrides="retrain.lr=0.05")["search"] == base["search"]
    assert base["ingest"]["data"]["data_dir"] == "/data/fashion-mnist"


def test_artifacts_are_typed_for_the_ui(compiled):
    components = compiled["components"]
    tasks = compiled["root"]["dag"]["tasks"]
    for task, outputs in SCHEMAS.items():
        definitions = components[tasks[task]["componentRef"]["name"]]["outputDefinitions"]["artifacts"]
        for key, schema in outputs.items():
            assert definitions[key]["artifactType"]["schemaTitle"] == schema, (task, key)
    assert set(kubeflow.KFP_TYPES) <= set(contract.ARTIFACT_TYPES)


def test_volumes_are_mounted_where_they_are_read(compiled):
    data, work = {kubeflow.DATA_MOUNT: "data_pvc"}, {kubeflow.WORK_MOUNT: "work_pvc"}
    assert _mounts(compiled, CONFIG) == data
    assert _mounts(compiled, "ingest") == {**data, **work}
    for name in ("search", "retrain", "evaluate", "analyze"):
        assert _mounts(compiled, name) == work, name


def test_every_task_requests_cpu_and_memory(compiled):
    for name in compiled["root"]["dag"]["tasks"]:
        resources = _executor(compiled, name)["container"]["resources"]
        cpu, memory = kubeflow.RESOURCES[name]
        assert resources["resourceCpuRequest"] == cpu, name
        assert resources["resourceMemoryRequest"] == resources["resourceMemoryLimit"] == memory, name
        assert "accelerator" not in resources, name


def test_genotype_replaces_search_and_flags_set_resources_and_volumes(tmp_path):
    spec = _compile(tmp_path, "--genotype", "DARTS_V2", "--gpus", "1", "--cpu", "retrain=6",
                    "--memory", "retrain=24Gi", "--data_pvc", "my-data", "--work_mount", "/scratch")
    tasks = spec["root"]["dag"]["tasks"]
    assert "search" not in tasks and "given" in tasks
    assert tasks["retrain"]["inputs"]["artifacts"]["search"]["taskOutputArtifact"]["producerTask"] == "given"
    genotype = tasks["given"]["inputs"]["parameters"]["genotype_json"]["runtimeValue"]["constant"]
    assert "normal" in json.loads(genotype)
    assert tasks["given"]["inputs"]["parameters"]["origin"]["runtimeValue"]["constant"] == "DARTS_V2"
    retrain = _executor(spec, "retrain")["container"]["resources"]
    assert (retrain["resourceCpuRequest"], retrain["resourceMemoryLimit"]) == ("6", "24Gi")
    assert retrain["accelerator"]["resourceCount"] == "1"
    assert "accelerator" not in _executor(spec, "given")["container"]["resources"]
    assert _mounts(spec, "retrain") == {"/scratch": "work_pvc"}
    assert _defaults(spec)["data_pvc"] == "my-data" and _defaults(spec)["work_root"] == "/scratch"


@pytest.mark.parametrize("flags, message", [
    (["--cpu", "serch=4"], "unknown task 'serch'"),
    (["--memory", "search=lots"], "not a Kubernetes quantity"),
    (["--genotype", "DARTS_V9"], "neither a published cell"),
    (["--override", "data.data_dir=/elsewhere/x"], "not on the data volume"),
    (["--data_pvc", "Bad_Name"], "not a claim name"),
])
def test_bad_compile_flags_exit_2(tmp_path, flags, message):
    proc = _run(["-m", "pipeline.kubeflow", "--image", IMAGE, "--output", str(tmp_path / "p.yaml"), *flags])
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "p.yaml").exists()


def test_unknown_baseline_is_refused_at_compile_time(tmp_path):
    proc = _run(["-m", "pipeline.kubeflow", "--image", IMAGE, "--baselines",
                 "--override", "baselines.include=nope", "--output", str(tmp_path / "p.yaml")])
    assert proc.returncode == 2 and "baselines.include: unknown baseline 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "p.yaml").exists()


def test_same_wiring_as_the_tfx_pipeline(tmp_path):
    from conftest import FASHION_DIR

    from pipeline.pipeline import create_pipeline

    for baselines in (False, True):
        config = cli.build_config("fashion_mnist", "tiny", (), [f"data.data_dir={FASHION_DIR}"])
        tfx = create_pipeline(config, str(tmp_path / "root"), str(tmp_path / "m.sqlite"),
                              baselines=baselines, version="test")
        tfx_deps = {c.id.lower(): sorted(u.id.lower() for u in c.upstream_nodes) for c in tfx.components}
        extra = ("--baselines",) if baselines else ()
        kfp_tasks = _compile(tmp_path, "--preset", "tiny", *extra)["root"]["dag"]["tasks"]
        kfp_deps = {n: sorted(d for d in t.get("dependentTasks", []) if d != CONFIG)
                    for n, t in kfp_tasks.items() if n != CONFIG}
        assert tfx_deps == kfp_deps
        assert ("baselines" in kfp_deps["analyze"]) == baselines


def test_bad_dataset_exits_2(tmp_path):
    proc = _run(["-m", "pipeline.kubeflow", "--dataset", "nope", "--image", IMAGE,
                 "--output", str(tmp_path / "p.yaml")], timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown dataset")
    assert len(proc.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- running the tasks


_PLACEHOLDER = re.compile(r"\{\{\$\.(inputs\.parameters|inputs\.artifacts|outputs\.artifacts|"
                          r"outputs\.parameters)\['(\w+)'\](?:\.path|\.output_file)?\}\}")


class Launcher:
    """Runs compiled tasks as local processes, substituting placeholders the way the
    Kubeflow driver and launcher do (the subset the pipeline uses), with local folders
    for the artifacts and the volumes mounted where the platform spec says."""

    def __init__(self, spec: Mapping[str, Any], root, params: Mapping[str, str], volumes: Mapping[str, str]):
        self.spec, self.root, self.volumes = spec, root, volumes
        self.params = {k: self._text(v) for k, v in _defaults(spec).items()}
        self.params.update(params)
        self.artifacts: Dict[str, Dict[str, str]] = {}
        self.out_params: Dict[str, Dict[str, str]] = {}
        self.executor_outputs: Dict[str, str] = {}

    @staticmethod
    def _text(value: Any) -> str:
        """A parameter as the launcher writes it into a command (integers without ``.0``)."""
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)

    def _parameters(self, task: Mapping[str, Any]) -> Dict[str, str]:
        values = {}
        for key, source in task["inputs"].get("parameters", {}).items():
            if "runtimeValue" in source:
                values[key] = source["runtimeValue"]["constant"]
            elif "componentInputParameter" in source:
                values[key] = self.params[source["componentInputParameter"]]
            else:
                producer = source["taskOutputParameter"]
                with open(self.out_params[producer["producerTask"]][producer["outputParameterKey"]]) as f:
                    values[key] = f.read()
        return values

    def _map(self, text: str, mounts: Mapping[str, str]) -> str:
        """A path on a volume the task mounts, as the local folder standing for it."""
        for mount in mounts:
            if text == mount or text.startswith(mount + "/"):
                return self.volumes[mounts[mount]] + text[len(mount):]
        return text

    def _resolve(self, arg: Any, values: Mapping[str, str], paths: Mapping[str, str],
                 mounts: Mapping[str, str]) -> List[str]:
        if arg.startswith("{\"IfPresent\""):
            spec = json.loads(arg)["IfPresent"]
            if spec["InputName"] not in paths:
                return []
            return [x for item in spec["Then"] for x in self._resolve(item, values, paths, mounts)]
        if arg == "{{$}}":
            return [values["{{$}}"]]
        match = _PLACEHOLDER.fullmatch(arg)
        if match is None:
            return [self._map(arg, mounts)]
        kind, name = match.groups()
        return [self._map(values[name], mounts) if kind == "inputs.parameters" else paths[name]]

    def _executor_input(self, name: str, values: Mapping[str, str], component: Mapping[str, Any]) -> str:
        types = component.get("outputDefinitions", {}).get("artifacts", {})
        self.executor_outputs[name] = str(self.root / "kfp_outputs" / name / "output_metadata.json")
        return json.dumps({"inputs": {"parameterValues": dict(values)}, "outputs": {
            "artifacts": {k: {"artifacts": [{"name": k, "type": types[k]["artifactType"],
                                             "uri": f"minio://bucket/{name}/{k}", "metadata": {}}]}
                          for k in types},
            "outputFile": self.executor_outputs[name]}})

    def _paths(self, name: str, task: Mapping[str, Any], outputs: Mapping[str, Any]) -> Dict[str, str]:
        """Local paths of the task's input and output artifacts and output parameters."""
        inputs = {k: v["taskOutputArtifact"] for k, v in task["inputs"].get("artifacts", {}).items()}
        root = self.root / name
        self.artifacts[name] = {k: str(root / k) for k in outputs.get("artifacts", {})}
        self.out_params[name] = {k: str(root / f"{k}.txt") for k in outputs.get("parameters", {})}
        return {**{k: self.artifacts[v["producerTask"]][v["outputArtifactKey"]] for k, v in inputs.items()},
                **self.artifacts[name], **self.out_params[name]}

    def run(self, name: str) -> subprocess.CompletedProcess:
        """Runs task `name` (its upstream tasks must have run)."""
        task = self.spec["root"]["dag"]["tasks"][name]
        component = self.spec["components"][task["componentRef"]["name"]]
        values = self._parameters(task)
        paths = self._paths(name, task, component.get("outputDefinitions", {}))
        values["{{$}}"] = self._executor_input(name, values, component)
        container, mounts = _executor(self.spec, name)["container"], _mounts(self.spec, name)
        argv = [x for a in container["args"] for x in self._resolve(a, values, paths, mounts)]
        return _run(container["command"][1:] + argv, timeout=400)


def _json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Launcher:
    """Every task of the tiny pipeline run in dependency order, the data volume standing
    for the shared data folder, the run's seed changed from its default."""
    root = tmp_path_factory.mktemp("tiny")
    spec = _compile(root, "--preset", "tiny")
    volumes = {"data_pvc": SHARED_DATA, "work_pvc": str(root / "work")}
    launcher = Launcher(spec, root, {"data_dir": "fashion-mnist", "seed": "3"}, volumes)
    for name in [CONFIG, *CORE]:
        proc = launcher.run(name)
        assert proc.returncode == 0, (name, proc.stderr[-3000:])
    return launcher


def test_compiled_commands_run_the_tiny_pipeline(tiny_run):
    """The config task resolves the parameters from the package's presets and the steps
    run outside TFX: every output folder is complete and all share the data's fingerprint."""
    artifacts = tiny_run.artifacts
    for name in CORE:
        for key, path in artifacts[name].items():
            if key not in ("metrics", "report_html"):
                assert os.path.isfile(os.path.join(path, contract.PROPERTIES_FILE)), (name, key)
    assert _json(tiny_run.out_params[CONFIG]["retrain_config"])["retrain"]["seed"] == 3
    evaluation = _json(os.path.join(artifacts["evaluate"]["evaluation"], contract.METRICS_FILE))
    assert evaluation["dataset"] == "fashion_mnist" and 0.0 <= evaluation["metrics"]["accuracy"] <= 1.0
    dataset = _json(os.path.join(artifacts["ingest"]["dataset"], contract.PROPERTIES_FILE))
    search = _json(os.path.join(artifacts["search"]["search"], contract.PROPERTIES_FILE))
    assert search["fingerprint"] == dataset["fingerprint"]


def test_metrics_reach_the_ui_as_artifact_metadata(tiny_run):
    """The evaluate task's executor output holds the test metrics as the metadata of its
    Metrics artifact (which the launcher records and the UI's metrics table lists)."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    with open(tiny_run.executor_outputs["evaluate"], encoding="utf-8") as f:
        output = json_format.Parse(f.read(), pipeline_spec_pb2.ExecutorOutput())  # as the launcher does
    metadata = json_format.MessageToDict(output.artifacts["metrics"].artifacts[0].metadata)
    evaluation = _json(os.path.join(tiny_run.artifacts["evaluate"]["evaluation"], contract.METRICS_FILE))
    assert metadata == {**evaluation["metrics"], "params": evaluation["params"]}
    assert 0.0 <= metadata["accuracy"] <= 1.0 and metadata["params"] > 0
    assert _json(tiny_run.artifacts["evaluate"]["metrics"]) == metadata


def test_every_artifact_carries_its_properties_as_metadata(tiny_run):
    for name in CORE:
        outputs = _json(tiny_run.executor_outputs[name])["artifacts"]
        for key, path in tiny_run.artifacts[name].items():
            if key in ("metrics", "report_html"):
                continue
            props = _json(os.path.join(path, contract.PROPERTIES_FILE))
            metadata = outputs[key]["artifacts"][0]["metadata"]
            assert metadata["step"] == name and metadata["code_version"] == props["code_version"]
    dataset = _json(tiny_run.executor_outputs["ingest"])["artifacts"]["dataset"]["artifacts"][0]
    assert dataset["uri"] == "minio://bucket/ingest/dataset" and dataset["metadata"]["fingerprint"]


def test_the_report_is_one_html_file(tiny_run):
    """The UI renders an HTML artifact's file: the report itself, figures inlined."""
    with open(tiny_run.artifacts["analyze"]["report_html"], encoding="utf-8") as f:
        html = f.read()
    report = os.path.join(tiny_run.artifacts["analyze"]["report"], contract.REPORT_FILE)
    with open(report, encoding="utf-8") as f:
        assert html == f.read()
    assert "<html" in html.lower() and 'src="figures/' not in html


@pytest.mark.parametrize("params, message", [
    ({"seed": "-1"}, "seed"),
    ({"overrides": "search.epoch=3"}, "search.epoch"),
    ({"overrides": "data.data_dir=/x"}, "data_dir parameter"),
    ({"data_dir": "../etc"}, "relative to the data volume"),
    ({"preset": "huge"}, "unknown preset 'huge'"),
    ({"data_dir": "no-such-folder"}, "does not exist on the data volume"),
])
def test_bad_run_parameters_fail_the_config_task_with_one_line(compiled, tmp_path, params, message):
    launcher = Launcher(compiled, tmp_path, params, {"data_pvc": SHARED_DATA, "work_pvc": str(tmp_path)})
    proc = launcher.run(CONFIG)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: step config:") and message in lines[0], lines
