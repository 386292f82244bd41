"""The model interface: every trainable model is a TaskModel the trainer treats alike."""

from __future__ import annotations

import keras
import pytest

from tfdarts.genotype import DARTS_V2
from tfdarts.model import TaskModel, count_params
from tfdarts.network import Network
from tfdarts.resnet import RESNETS, tiny_resnet
from tfdarts.supernet import SearchNetwork
from tfdarts.task import Task

TASK = Task((12, 12, 1), 3)


def test_every_model_is_a_task_model():
    models = [Network(TASK, DARTS_V2, cells=3, channels=4), SearchNetwork(TASK, cells=3, channels=4)]
    models += [factory(TASK) for factory in RESNETS.values()]
    for model in models:
        assert isinstance(model, TaskModel) and model.task == TASK


def test_epoch_hook_ramps_drop_path_only_where_there_is_one():
    net = Network(TASK, DARTS_V2, cells=3, channels=4, drop_path=0.3)
    assert net.on_epoch_begin(1, 3) == {"drop_path": pytest.approx(0.1)}
    assert float(net.drop_prob.numpy()) == pytest.approx(0.1)
    assert tiny_resnet(TASK).on_epoch_begin(1, 3) == {}


def test_architecture_and_auxiliary_parameters():
    net = Network(TASK, DARTS_V2, cells=3, channels=4, auxiliary_weight=0.4)
    net.build_from_task()
    resnet = tiny_resnet(TASK)
    resnet.build_from_task()
    assert net.architecture() == DARTS_V2 and resnet.architecture() is None
    aux = sum(int(v.shape.num_elements()) for v in net.auxiliary_variables())
    assert aux > 0 and count_params(net, include_auxiliary=True) == count_params(net) + aux
    assert resnet.auxiliary_variables() == [] and resnet.auxiliary_weight == 0.0


def test_task_model_round_trips_through_keras_files(tmp_path):
    for model in (Network(TASK, DARTS_V2, cells=3, channels=4), tiny_resnet(TASK)):
        model.build_from_task()
        path = str(tmp_path / f"{model.name}.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        assert type(loaded) is type(model) and loaded.task == TASK
        assert count_params(loaded) == count_params(model)
