"""Runtime settings: thread pools before TensorFlow starts, graph optimisation around a job."""

import subprocess
import sys

import tensorflow as tf

from tfdarts import runtime
from tfdarts.config import RuntimeConfig

_OPTION = "disable_meta_optimizer"


def _grappler_disabled() -> bool:
    return bool(tf.config.optimizer.get_experimental_options().get(_OPTION, False))


def test_graph_optimization_is_set_inside_the_block_and_restored_after():
    before = _grappler_disabled()
    for setting, disabled in (("off", True), ("on", False), ("auto", not tf.config.list_physical_devices("GPU"))):
        with runtime.graph_optimization(RuntimeConfig(graph_optimization=setting)):
            assert _grappler_disabled() == disabled
        assert _grappler_disabled() == before


def test_threads_are_applied_before_tensorflow_starts():
    code = ("import tensorflow as tf; from tfdarts import runtime; from tfdarts.config import RuntimeConfig; "
            "assert runtime.apply_threads(RuntimeConfig(intra_op_threads=1, inter_op_threads=3)); "
            "tf.constant(1.0) + 1.0; "
            "print(tf.config.threading.get_intra_op_parallelism_threads(), "
            "tf.config.threading.get_inter_op_parallelism_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "3"]


def test_threads_too_late_are_logged_not_raised(caplog):
    tf.constant(1.0) + 1.0  # TensorFlow has started in this process
    current = tf.config.threading.get_intra_op_parallelism_threads()
    assert runtime.apply_threads(RuntimeConfig())  # 0 = leave as it is
    assert not runtime.apply_threads(RuntimeConfig(intra_op_threads=current + 5))
    assert "runtime.intra_op_threads" in caplog.text and "not applied" in caplog.text
