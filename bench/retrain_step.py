"""Benchmark of one retraining step (`TrainJob.step`) of the discrete network on fixed batches.

The network is the one the pipeline retrains (`tfdarts.network.model_fn`) on a genotype
(DARTS_V2 by default, as the PyTorch port's harness `ptdarts_retrain_step.py`), with the
retrain settings of `RetrainConfig` (SGD with momentum, weight decay, gradient clipping;
drop path and the auxiliary head as set). Prints ONE JSON line: config, trace + first-step
time, median seconds per step over ``--steps`` timed steps (outputs fetched), images/s
(= batch / median), CPU seconds per step, peak RSS, parameters.

    .venv/bin/python bench/retrain_step.py --cells 8 --channels 16 --batch 64 --shape 28,28,1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import search_step as sb  # noqa: E402  (the shared helpers: machine load, RSS, runtime)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, default=8)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--shape", default="28,28,1", help="H,W,C of one example")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--genotype", default="DARTS_V2",
                   help="a name in tfdarts.genotype.PUBLISHED or a genotype JSON file")
    p.add_argument("--auxiliary", type=float, default=0.0, help="retrain.auxiliary_weight")
    p.add_argument("--drop_path", type=float, default=0.0, help="retrain.drop_path")
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after the first one")
    p.add_argument("--devices", type=int, default=1)
    sb.add_runtime_args(p)
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--stages", action="store_true",
                   help="also time the forward pass alone and forward + backward without the update")
    p.add_argument("--label", default="")
    args = p.parse_args(argv)
    args.shape = tuple(int(s) for s in args.shape.split(","))
    if len(args.shape) != 3:
        p.error("--shape must be H,W,C")
    return args


def build_job(args: argparse.Namespace):
    """The strategy and `TrainJob` of the config in ``args``."""
    from tfdarts import config as C
    from tfdarts import genotype, network
    from tfdarts.task import Task
    from tfdarts.trainer import TrainJob, make_strategy

    cfg = C.RetrainConfig(cells=args.cells, channels=args.channels, batch_size=args.batch,
                          auxiliary_weight=args.auxiliary, drop_path=args.drop_path,
                          seed=args.seed)
    strategy = make_strategy(args.devices)
    job = TrainJob(cfg, network.model_fn(Task(args.shape, args.classes), genotype.resolve(args.genotype)[0], cfg),
                   strategy)
    job.begin_epoch(0)
    return strategy, job


def batch_of(tf, args: argparse.Namespace):
    import numpy as np

    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.batch,) + args.shape).astype(np.float32)
    y = rng.integers(0, args.classes, size=(args.batch,)).astype(np.int32)
    return tf.constant(x), tf.constant(y)


def median_seconds(fn, batch, steps: int) -> float:
    """Median wall seconds of ``fn(batch)`` (outputs fetched) after two untimed calls."""
    import tensorflow as tf

    fetch = lambda out: [t.numpy() for t in tf.nest.flatten(out)]  # noqa: E731
    fetch(fn(batch))
    fetch(fn(batch))
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fetch(fn(batch))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def stage_seconds(job, batch, steps: int) -> Dict[str, float]:
    """Median seconds of the training-mode forward pass and of forward + backward (no
    update), each its own `tf.function` on this replica's batch."""
    import tensorflow as tf

    from tfdarts import steps as S

    forward = tf.function(lambda b: S.forward_loss(job.model, *b)[0])
    gradients = tf.function(lambda b: job.gradients(b)[1])
    return {"forward_s": round(median_seconds(forward, batch, steps), 4),
            "forward_backward_s": round(median_seconds(gradients, batch, steps), 4)}


def run(args: argparse.Namespace) -> Dict[str, Any]:
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    sb.apply_runtime(tf, args)
    import numpy as np

    strategy, job = build_job(args)
    batch = batch_of(tf, args)
    build_s = time.perf_counter() - t0
    t = time.perf_counter()
    sb.fetch(job.step(batch))
    first_s = time.perf_counter() - t
    for _ in range(args.warmup):
        sb.fetch(job.step(batch))
    times: List[float] = []
    cpu0, wall0, busy0 = time.process_time(), time.perf_counter(), sb.busy_cpu_seconds()
    for _ in range(args.steps):
        t = time.perf_counter()
        sb.fetch(job.step(batch))
        times.append(time.perf_counter() - t)
    cpu_util = (time.process_time() - cpu0) / max(time.perf_counter() - wall0, 1e-9)
    median = statistics.median(times)
    stages = stage_seconds(job, batch, args.steps) if args.stages else {}
    return {
        "bench": "retrain_step", "status": "ok", "label": args.label,
        "config": {"cells": args.cells, "channels": args.channels, "batch": args.batch,
                   "shape": list(args.shape), "genotype": args.genotype, "auxiliary": args.auxiliary,
                   "drop_path": args.drop_path, "devices": args.devices, "steps": args.steps,
                   "intra": args.intra, "inter": args.inter,
                   "graph_optimization": args.graph_optimization},
        "build_s": round(build_s, 2), "trace_first_step_s": round(first_s, 2),
        "median_s_per_step": round(median, 4), "step_times_s": [round(x, 4) for x in times],
        "images_per_s": round(args.batch / median, 2), "cpu_s_per_step": round(cpu_util * median, 3),
        "peak_rss_mb": round(sb.peak_rss_mb(), 1), **stages,
        "params": int(sum(np.prod(v.shape) for v in job.model.trainable_variables)),
        "cpu_util": round(cpu_util, 2), "others_cpu_timed": round(sb.others_cpu(busy0, cpu0, wall0), 2),
        "loadavg_1m_before": round(load_before, 2), "library": sb.library_state(),
        "tf_version": tf.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    print(json.dumps(run(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
