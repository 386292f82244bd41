"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 make the update one
process makes, only the chief writes a job's files, and a restarted group resumes."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from tfdarts import config as C
from tfdarts import contract

WORKER = os.path.join(REPO, "tests", "multiworker_worker.py")


def _ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ",".join(map(str, ports))


def _cluster(n, out, *extra):
    """Starts an n-worker cluster running the worker script; returns the processes."""
    env = dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    ports = _ports(n)
    return [subprocess.Popen([sys.executable, WORKER, str(i), ports, str(out), *extra], cwd=REPO,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for i in range(n)]


def _wait(procs):
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]


def _result(out, index):
    return json.loads((out / f"result-{index}.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One worker (the reference) and two workers, both also searching for 1 epoch."""
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    procs = _cluster(1, one) + _cluster(2, two, "1")
    _wait(procs)
    return one, two


def test_two_workers_make_the_update_of_one(runs):
    one, two = runs
    with np.load(one / "steps.npz") as a, np.load(two / "steps.npz") as b:
        assert sorted(a.files) == sorted(b.files) and any(k.startswith("retrain/") for k in a.files)
        for key in a.files:
            # fused batch norm moves its variance by the unbiased batch variance, n / (n - 1),
            # and a replica holds 16 examples (one worker) or 8 (two): tiny n at 3x3 maps
            rtol = 2e-3 if key.endswith("moving_variance") else 2e-4
            np.testing.assert_allclose(b[key], a[key], rtol=rtol, atol=2e-6, err_msg=key)


def test_only_the_chief_writes_and_a_restarted_group_resumes(runs):
    _, two = runs
    search = two / "search"
    assert (search / contract.HISTORY_FILE).exists() and (search / contract.ALPHAS_FILE).exists()
    worker = search / ".worker-1"
    assert (worker / contract.CHECKPOINT_DIR).is_dir()  # every worker saves, elsewhere
    assert not (worker / contract.HISTORY_FILE).exists() and not (worker / contract.ALPHAS_FILE).exists()
    assert _result(two, 0) == _result(two, 1) == {"resumed_from": 0, "epochs": 1}
    _wait(_cluster(2, two, "2"))  # the same group, restarted with one more epoch
    assert _result(two, 0) == _result(two, 1) == {"resumed_from": 1, "epochs": 2}
    history = json.loads((search / contract.HISTORY_FILE).read_text())
    assert [r["epoch"] for r in history["epochs"]] == [1, 2]


def test_multi_worker_without_tf_config_says_what_to_set(monkeypatch):
    from tfdarts import trainer

    monkeypatch.delenv("TF_CONFIG", raising=False)
    trainer.multi_worker_strategy.cache_clear()
    with pytest.raises(ValueError, match="TF_CONFIG"):
        trainer.make_strategy(kind="multi_worker")
    with pytest.raises(C.ConfigError, match="runtime.strategy"):
        C.load_config(overrides=["runtime.strategy=parameter_server"])
