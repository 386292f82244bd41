"""Shared test set-up: two logical CPU devices, seeds, tiny configs, data paths."""

from __future__ import annotations

import os

import pytest

SHARED_DATA = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
FASHION_DIR = os.path.join(SHARED_DATA, "fashion-mnist")
KIRIGAMI_DIR = os.path.join(SHARED_DATA, "graphene-kirigami")


def pytest_configure(config) -> None:
    """Splits the CPU into 2 logical devices before TensorFlow initialises."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)


@pytest.fixture
def two_replicas():
    """A MirroredStrategy over the 2 logical CPU devices."""
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2
    return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())


@pytest.fixture
def fashion_dir() -> str:
    """The real Fashion-MNIST IDX folder."""
    assert os.path.isdir(FASHION_DIR), f"missing {FASHION_DIR}"
    return FASHION_DIR
