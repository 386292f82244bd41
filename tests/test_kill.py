"""A real SIGKILL mid-run: the rerun finishes exactly where an uninterrupted run does."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO

from tfdarts import contract

WORKER = os.path.join(REPO, "tests", "kill_worker.py")


def _env():
    env = dict(os.environ)
    env.update(PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    return env


def _start(job, out):
    return subprocess.Popen([sys.executable, WORKER, job, out], cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(proc):
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]


def _kill_after_first_checkpoint(proc, out):
    """SIGKILLs `proc` as soon as epoch 1's checkpoint exists (it is then in epoch 2)."""
    marker = os.path.join(out, contract.CHECKPOINT_DIR, "checkpoint")
    deadline = time.time() + 600
    while not os.path.exists(marker):
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _variables(out):
    """Every variable of the final checkpoint (weights, optimizer slots, counters)."""
    reader = tf.train.load_checkpoint(os.path.join(out, contract.CHECKPOINT_DIR))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if "save_counter" not in name}


def _history(out):
    with open(os.path.join(out, contract.HISTORY_FILE)) as f:
        epochs = json.load(f)["epochs"]
    return [{k: v for k, v in r.items() if k not in ("seconds", "cpu_seconds")} for r in epochs]


def _killed_and_whole(job, tmp_path):
    whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
    procs = [_start(job, whole), _start(job, killed)]
    _kill_after_first_checkpoint(procs[1], killed)
    _finish(_start(job, killed))
    _finish(procs[0])
    with open(os.path.join(killed, "result.json")) as f:
        assert 1 <= json.load(f)["resumed_from"] < 3  # it resumed, it did not start over
    return whole, killed


def _assert_same_variables(whole, killed):
    a, b = _variables(whole), _variables(killed)
    assert sorted(a) == sorted(b)
    bad = [name for name in a if not np.array_equal(a[name], b[name])]
    assert not bad, bad


@pytest.mark.parametrize("job", ["search", "retrain"])
def test_sigkill_then_rerun_equals_an_uninterrupted_run(job, tmp_path):
    whole, killed = _killed_and_whole(job, tmp_path)
    assert _history(killed) == _history(whole)
    _assert_same_variables(whole, killed)
    if job == "search":
        with open(os.path.join(whole, contract.GENOTYPE_FILE)) as f, \
                open(os.path.join(killed, contract.GENOTYPE_FILE)) as g:
            assert json.load(f) == json.load(g)
        with np.load(os.path.join(whole, contract.ALPHAS_FILE)) as a, \
                np.load(os.path.join(killed, contract.ALPHAS_FILE)) as b:
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key])
