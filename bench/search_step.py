"""Benchmark of one DARTS search iteration (`SearchJob.step`) on fixed random batches.

One iteration = alpha step on a validation batch + weight step on a training
batch, so it consumes ``2 * batch`` images. Prints ONE JSON line with the
config, trace + first-step time, median seconds per step over ``--steps``
timed steps (outputs fetched with ``.numpy()``, so timing is synchronous),
``images_per_s`` (= 2 * batch / median: train + val images) and
``images_per_s_train`` (= batch / median: the PyTorch port's definition),
peak RSS and parameter counts.

Experiment switches (no library edits; they patch classes in this process
only): ``--eager``, ``--jit [step|cell|auto]``,
``--bn``, ``--onednn``, ``--intra``/``--inter``, ``--devices``.

    .venv/bin/python bench/search_step.py --cells 5 --channels 8 --batch 32 --shape 28,28,1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

_JIT_ACTIVE = False  # set after the model is built (no variable creation inside XLA)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, default=5)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--batch", type=int, default=32, help="global batch (each of train and val)")
    p.add_argument("--shape", default="28,28,1", help="H,W,C of one example")
    p.add_argument("--order", type=int, default=1, choices=(1, 2))
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after the first one")
    p.add_argument("--devices", type=int, default=1,
                   help=">1: MirroredStrategy over that many logical CPUs")
    p.add_argument("--eager", action="store_true",
                   help="run job.replica_fn via strategy.run without tf.function")
    p.add_argument("--jit", nargs="?", const="step", default="none",
                   choices=("none", "step", "cell", "auto"),
                   help="XLA: step = tf.function(jit_compile=True) on the whole step; "
                        "cell = jit_compile on each search cell; "
                        "auto = TF_XLA_FLAGS auto-clustering")
    p.add_argument("--bn", default="library", choices=("library", "moments"),
                   help="moments = tf.nn.moments + batch_normalization instead of the fused kernel")
    p.add_argument("--onednn", default=None, choices=("0", "1"),
                   help="set TF_ENABLE_ONEDNN_OPTS before importing TensorFlow")
    add_runtime_args(p)
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--malloc", default="glibc", choices=("glibc", "jemalloc", "tcmalloc"),
                   help="allocator: jemalloc / tcmalloc run the benchmark in a child process "
                        "with the Debian library (libjemalloc2 / libtcmalloc-minimal4) in "
                        "LD_PRELOAD")
    p.add_argument("--timeout", type=float, default=None,
                   help="run in a child process killed after this many seconds "
                        "(default: 300 with --jit, otherwise run in this process)")
    p.add_argument("--label", default="", help="free text copied into the JSON line")
    p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.shape = tuple(int(s) for s in args.shape.split(","))
    if len(args.shape) != 3:
        p.error("--shape must be H,W,C")
    if args.timeout is None:
        args.timeout = 300.0 if args.jit != "none" else 0.0
    if args.eager and args.jit != "none":
        p.error("--eager and --jit exclude each other")
    if args.batch % args.devices:
        p.error("--batch must be divisible by --devices")
    return args


def config_record(args: argparse.Namespace) -> Dict[str, Any]:
    keys = ("cells", "channels", "batch", "order", "classes", "nodes", "steps", "warmup",
            "devices", "eager", "jit", "bn", "onednn", "intra", "inter", "graph_optimization",
            "seed", "malloc")
    out = {k: getattr(args, k) for k in keys}
    out["shape"] = list(args.shape)
    return out


def busy_cpu_seconds() -> float:
    """System-wide non-idle CPU seconds since boot (all cores), from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return float("nan")
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / ticks


def others_cpu(busy0: float, own0: float, wall0: float) -> float:
    """Average cores used by OTHER processes since the given marks (machine-busy check)."""
    wall = max(time.perf_counter() - wall0, 1e-9)
    own = time.process_time() - own0
    return max(busy_cpu_seconds() - busy0 - own, 0.0) / wall


def library_state() -> Dict[str, Any]:
    """Commit and a hash of uncommitted changes under tfdarts/ (numbers depend on both)."""
    import hashlib

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True,
                                  timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    diff = git("diff", "HEAD", "--", "tfdarts")
    return {"commit": git("rev-parse", "--short", "HEAD").strip(),
            "tfdarts_diff_sha1": hashlib.sha1(diff.encode()).hexdigest()[:10] if diff else ""}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# --------------------------------------------------------------------- patches (this process only)

def _jitted(fn, cache_owner, key):
    """Calls `fn` through a per-(layer, key) tf.function(jit_compile=True) once enabled."""
    import tensorflow as tf

    cache = cache_owner.__dict__.setdefault("_bench_jit_cache", {})
    if key not in cache:
        cache[key] = tf.function(fn, jit_compile=True)
    return cache[key]


def patch_library(args: argparse.Namespace) -> None:
    import tensorflow as tf
    from tfdarts import ops, supernet

    if args.bn == "moments":
        def moments_bn(x, scale, offset):
            mean, var = tf.nn.moments(x, axes=[0, 1, 2])
            y = tf.nn.batch_normalization(x, mean, var, offset, scale, ops.BN_EPSILON)
            n = tf.cast(tf.size(x) // tf.shape(x)[-1], x.dtype)
            return y, mean, var * n / tf.maximum(n - 1.0, 1.0)

        ops._batch_norm_train = moments_bn

    if args.jit == "cell":
        cell_call = supernet.SearchCell.call

        def jit_cell_call(self, s0, s1, weights, training=False, **kwargs):
            if not _JIT_ACTIVE:
                return cell_call(self, s0, s1, weights, training=training, **kwargs)
            fn = _jitted(lambda a, b, w: cell_call(self, a, b, w, training=training, **kwargs), self,
                         bool(training))
            return fn(s0, s1, weights)

        supernet.SearchCell.call = jit_cell_call



# --------------------------------------------------------------------------------- the benchmark

def configure_tf(args: argparse.Namespace):
    """Environment and runtime settings that must precede any TensorFlow op."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.onednn is not None:
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = args.onednn
    if args.jit == "auto":
        os.environ["TF_XLA_FLAGS"] = "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit"
    import tensorflow as tf

    apply_runtime(tf, args)
    return tf


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    """The ``runtime.*`` settings of the library as flags (the same defaults)."""
    p.add_argument("--intra", type=int, default=0,
                   help="runtime.intra_op_threads (0 = TF default; the cpu preset uses 1)")
    p.add_argument("--inter", type=int, default=0, help="runtime.inter_op_threads (0 = TF default)")
    p.add_argument("--graph-optimization", default="auto", choices=("auto", "on", "off"),
                   help="runtime.graph_optimization (auto = off without GPUs, as in search/retrain)")


def apply_runtime(tf, args: argparse.Namespace) -> None:
    """Logical CPU devices, thread pools and graph optimisation from `args`, as the
    library's search and retrain apply them (before any TensorFlow op)."""
    from tfdarts import runtime
    from tfdarts.config import RuntimeConfig

    if args.devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(args.devices)])
    cfg = RuntimeConfig(intra_op_threads=args.intra, inter_op_threads=args.inter,
                        graph_optimization=args.graph_optimization)
    runtime.apply_threads(cfg)
    # the benchmark process runs nothing else: set for the whole process
    tf.config.optimizer.set_experimental_options(
        {"disable_meta_optimizer": not runtime.graph_optimization_on(cfg)})


def make_batches(tf, strategy, args: argparse.Namespace):
    """Fixed (train, val) batches: N(0, 1) images and uniform random labels.

    With several replicas each gets its slice of the global batch as a
    PerReplica value, as a distributed dataset would deliver it.
    """
    import numpy as np

    rng = np.random.default_rng(args.seed)

    def one():
        x = rng.standard_normal((args.batch,) + args.shape).astype(np.float32)
        y = rng.integers(0, args.classes, size=(args.batch,)).astype(np.int32)
        return x, y

    (xt, yt), (xv, yv) = one(), one()
    if args.devices <= 1:
        return (tf.constant(xt), tf.constant(yt)), (tf.constant(xv), tf.constant(yv))
    per = args.batch // args.devices

    def value_fn(ctx):
        i = ctx.replica_id_in_sync_group
        s = slice(i * per, (i + 1) * per)
        return ((tf.constant(xt[s]), tf.constant(yt[s])), (tf.constant(xv[s]), tf.constant(yv[s])))

    return strategy.experimental_distribute_values_from_function(value_fn)


def make_step(tf, job, strategy, args: argparse.Namespace):
    """The callable to time: the library's traced step, or an eager / XLA variant."""

    def raw(batch):
        per_replica = strategy.run(job.replica_fn, args=batch)
        return tf.nest.map_structure(
            lambda t: strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None), per_replica)

    if args.eager:
        return raw
    if args.jit == "step":
        return tf.function(raw, jit_compile=True)
    return job.step  # tfdarts.trainer.distributed_step: plain tf.function


def fetch(out) -> None:
    for stats in out.values():
        for value in stats.values():
            value.numpy()


def run(args: argparse.Namespace) -> Dict[str, Any]:
    global _JIT_ACTIVE
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    marks_all = (busy_cpu_seconds(), time.process_time(), t0)
    tf = configure_tf(args)
    import keras
    import numpy as np

    from tfdarts.config import SearchConfig
    from tfdarts.task import Task
    from tfdarts.trainer import SearchJob, make_strategy

    patch_library(args)
    strategy = make_strategy(args.devices)
    task = Task(args.shape, args.classes)
    cfg = SearchConfig(cells=args.cells, channels=args.channels, nodes=args.nodes,
                       batch_size=args.batch, order=args.order, seed=args.seed)
    job = SearchJob(cfg, task, strategy)
    _JIT_ACTIVE = True
    batch = make_batches(tf, strategy, args)
    step = make_step(tf, job, strategy, args)
    build_s = time.perf_counter() - t0

    t = time.perf_counter()
    fetch(step(batch))
    first_s = time.perf_counter() - t
    for _ in range(args.warmup):
        fetch(step(batch))
    times: List[float] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    busy0 = busy_cpu_seconds()
    for _ in range(args.steps):
        t = time.perf_counter()
        fetch(step(batch))
        times.append(time.perf_counter() - t)
    cpu_util = (time.process_time() - cpu0) / max(time.perf_counter() - wall0, 1e-9)
    others_timed = others_cpu(busy0, cpu0, wall0)
    others_all = others_cpu(*marks_all)
    median = statistics.median(times)
    return {
        "bench": "search_step",
        "status": "ok",
        "label": args.label,
        "config": config_record(args),
        "build_s": round(build_s, 2),
        "trace_first_step_s": round(first_s, 2),
        "median_s_per_step": round(median, 4),
        "step_times_s": [round(x, 4) for x in times],
        "images_per_s": round(2 * args.batch / median, 2),
        "images_per_s_def": "2*batch/median (train + val batch per iteration)",
        "images_per_s_train": round(args.batch / median, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "cpu_s_per_step": round(cpu_util * median, 3),
        "weight_params": int(sum(np.prod(v.shape) for v in job.model.weight_variables)),
        "arch_params": int(sum(np.prod(v.shape) for v in job.model.arch_variables)),
        "replicas": int(strategy.num_replicas_in_sync),
        "cpu_util": round(cpu_util, 2),
        "others_cpu_timed": round(others_timed, 2),
        "others_cpu_whole_run": round(others_all, 2),
        "loadavg_1m_before": round(load_before, 2),
        "library": library_state(),
        "tf_version": tf.__version__,
        "keras_version": keras.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


MALLOC_LIBRARIES = {"jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
                    "tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"}


def child_env(args: argparse.Namespace) -> Dict[str, str]:
    """The child's environment: this one, with the chosen allocator preloaded."""
    env = dict(os.environ)
    if args.malloc != "glibc":
        library = MALLOC_LIBRARIES[args.malloc]
        if not os.path.exists(library):
            raise SystemExit(f"--malloc {args.malloc}: {library} is missing (apt-get install "
                             f"{'libjemalloc2' if args.malloc == 'jemalloc' else 'libtcmalloc-minimal4'})")
        env["LD_PRELOAD"] = library
    return env


def run_child(args: argparse.Namespace, argv: Sequence[str]) -> Dict[str, Any]:
    """Runs this script in a child process, killing it after ``args.timeout`` seconds."""
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--in-process"]
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              timeout=args.timeout or None, env=child_env(args))
    except subprocess.TimeoutExpired:
        return {"bench": "search_step", "status": "timeout", "label": args.label,
                "config": config_record(args), "timeout_s": args.timeout,
                "note": f"killed after {args.timeout:.0f} s without finishing the first step "
                        f"and {args.steps} timed steps"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    return {"bench": "search_step", "status": "error", "label": args.label,
            "config": config_record(args), "returncode": proc.returncode,
            "seconds": round(time.perf_counter() - started, 1),
            "stderr_tail": proc.stderr.strip().splitlines()[-5:]}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if (args.timeout > 0 or args.malloc != "glibc") and not args.in_process:
        record = run_child(args, argv)
    else:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if root not in sys.path:
            sys.path.insert(0, root)
        record = run(args)
    print(json.dumps(record), flush=True)
    return 0 if record["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
