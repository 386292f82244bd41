"""Shared test set-up: three logical CPU devices, seeds, tiny configs, data paths."""

from __future__ import annotations

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.abspath(os.path.join(REPO, "..", "shared", "data"))
FASHION_DIR = os.path.join(SHARED_DATA, "fashion-mnist")
KIRIGAMI_DIR = os.path.join(SHARED_DATA, "graphene-kirigami")
LOGICAL_CPUS = 3


def pytest_configure(config) -> None:
    """Splits the CPU into 3 logical devices before TensorFlow initialises."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * LOGICAL_CPUS)
    # one thread per op, ops side by side: the cpu preset's setting (faster on small hosts)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    if os.environ.get("TFDARTS_TEST_GRAPPLER", "0") != "1":
        # graph optimisation is most of a first call and these graphs run a few steps;
        # subprocess runs (pipeline, study, workers) keep TensorFlow's defaults
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


def mirrored(replicas: int, cross_device_ops=None):
    """A MirroredStrategy over the first `replicas` logical CPU devices.

    Args:
        replicas: How many devices (at most `LOGICAL_CPUS`).
        cross_device_ops: Defaults to a fresh ``ReductionToOneDevice``.
    """
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:replicas]
    assert len(devices) == replicas
    return tf.distribute.MirroredStrategy(
        devices, cross_device_ops=cross_device_ops or tf.distribute.ReductionToOneDevice())


@pytest.fixture
def make_mirrored():
    """`mirrored` itself, for tests choosing the replica count or reduction."""
    return mirrored


@pytest.fixture
def two_replicas():
    """A MirroredStrategy over the first 2 logical CPU devices."""
    return mirrored(2)


@pytest.fixture
def three_replicas():
    """A MirroredStrategy over the 3 logical CPU devices."""
    return mirrored(3)


@pytest.fixture
def fashion_dir() -> str:
    """The real Fashion-MNIST IDX folder."""
    assert os.path.isdir(FASHION_DIR), f"missing {FASHION_DIR}"
    return FASHION_DIR
