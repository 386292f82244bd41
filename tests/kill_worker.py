"""A search or retrain run as its own process, for the SIGKILL tests.

    python tests/kill_worker.py search|retrain OUT_DIR

Writes ``OUT_DIR/result.json`` (the epochs it resumed from) when it finishes.
"""

import json
import os
import sys

import tensorflow as tf

from tfdarts import config as C
from tfdarts import data as D
from tfdarts import network, trainer
from tfdarts.genotype import DARTS_V2

FASHION_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "..", "shared", "data", "fashion-mnist")
SEARCH = ["search.cells=3", "search.channels=4", "search.nodes=2", "search.batch_size=16",
          "search.epochs=3", "search.alpha_lr=0.01", "search.eigen_batches=0"]
RETRAIN = ["retrain.cells=3", "retrain.channels=8", "retrain.batch_size=32", "retrain.epochs=3",
           "retrain.eval_every=1", "retrain.cutout=4", "retrain.drop_path=0.3"]


def main(job: str, out: str) -> None:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    data = D.prepare(C.DataConfig(name="fashion_mnist", data_dir=os.path.abspath(FASHION_DIR),
                                  max_train=320, max_test=64))
    if job == "search":
        result = trainer.search(C.load_config(overrides=SEARCH + ["runtime.log_every=0"]), data, out)
    else:
        cfg = C.load_config(overrides=RETRAIN + ["runtime.log_every=0"])
        model_fn = network.model_fn(data.spec.task, DARTS_V2, cfg.retrain)
        result = trainer.retrain(cfg, data, model_fn, out)
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump({"resumed_from": result.resumed_from}, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
