"""One worker of the multi-worker tests (a cluster of processes on 127.0.0.1).

    python tests/multiworker_worker.py INDEX PORT[,PORT...] OUT [EPOCHS]

Builds `MultiWorkerMirroredStrategy` from ``TF_CONFIG``, runs one search step
(both levels) and one retrain step on a fixed global batch, each worker feeding
its share of it, and the chief writes every variable to ``OUT/steps.npz``. With
EPOCHS it then runs ``trainer.search`` on a few hundred Fashion-MNIST images into
``OUT/search`` and writes ``OUT/result-<INDEX>.json``.
"""

import json
import os
import sys


def _global_batch(seed):
    """8 examples twice: a replica's share of it is then the same 8 for 1 or 2 workers,
    so per-replica batch-norm statistics agree too."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(8, 12, 12, 1)).astype(np.float32)
    y = rng.integers(0, 3, size=8).astype(np.int32)
    return np.concatenate([x, x]), np.concatenate([y, y])


def _share(strategy, index, batches):
    import numpy as np
    import tensorflow as tf

    n = strategy.num_replicas_in_sync
    local = tuple(tuple(np.split(a, n)[index] for a in b) for b in batches)
    ds = strategy.distribute_datasets_from_function(lambda ctx: tf.data.Dataset.from_tensors(local))
    return next(iter(ds))


def _steps(strategy, index):
    from tfdarts import config as C
    from tfdarts import network, trainer
    from tfdarts.genotype import DARTS_V2
    from tfdarts.task import Task

    cfg = C.load_config(overrides=["search.cells=3", "search.channels=4", "search.nodes=1",
                                   "search.w_lr=0.1", "search.alpha_lr=0.01", "retrain.cells=3",
                                   "retrain.channels=4", "retrain.auxiliary_weight=0",
                                   "retrain.drop_path=0"])  # masks are keyed per replica
    task = Task((12, 12, 1), 3)
    search = trainer.SearchJob(cfg.search, task, strategy)
    search.step_for(0)(_share(strategy, index, (_global_batch(0), _global_batch(1))))
    train = trainer.TrainJob(cfg.retrain, network.model_fn(task, DARTS_V2, cfg.retrain), strategy)
    train.step_for(0)(_share(strategy, index, (_global_batch(2),))[0])
    variables = {f"search/{v.path}": v.numpy() for v in search.model.weights}
    variables.update({f"retrain/{v.path}": v.numpy() for v in train.model.weights})
    return variables


def _search(strategy, out, index, epochs):
    from tfdarts import config as C
    from tfdarts import data as D
    from tfdarts import trainer

    data_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "..", "shared", "data", "fashion-mnist")
    data = D.prepare(C.DataConfig(name="fashion_mnist", data_dir=os.path.abspath(data_dir),
                                  max_train=256, max_test=64))
    cfg = C.load_config(overrides=["search.cells=3", "search.channels=4", "search.nodes=1",
                                   "search.batch_size=16", "search.steps_per_epoch=3",
                                   f"search.epochs={epochs}", "search.eigen_batches=0",
                                   "runtime.log_every=0", "runtime.strategy=multi_worker"])
    result = trainer.search(cfg, data, os.path.join(out, "search"))
    with open(os.path.join(out, f"result-{index}.json"), "w") as f:
        json.dump({"resumed_from": result.resumed_from, "epochs": len(result.history)}, f)


def main(index: str, ports: str, out: str, epochs: str = "") -> None:
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports.split(",")]},
        "task": {"type": "worker", "index": int(index)}})
    import numpy as np
    import tensorflow as tf

    from tfdarts import trainer

    tf.config.threading.set_intra_op_parallelism_threads(1)
    strategy = trainer.make_strategy(kind="multi_worker")  # before any other TensorFlow work
    os.makedirs(out, exist_ok=True)
    variables = _steps(strategy, int(index))
    if trainer.worker_role(strategy) is None:
        np.savez(os.path.join(out, "steps.npz"), **variables)
    if epochs:
        _search(strategy, out, index, int(epochs))


if __name__ == "__main__":
    main(*sys.argv[1:])
