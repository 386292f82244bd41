"""Where the search step's memory and start-up time go, stage by stage.

Runs the same search iteration as `bench/search_step.py` (`SearchJob.step` on
fixed random batches) and records, after each stage, the resident set (VmRSS)
and the peak of that stage alone (VmHWM, reset between stages through
``/proc/self/clear_refs``):

    python     interpreter start
    import_tf  ``import tensorflow`` (runtime, kernels, oneDNN)
    import     keras + tfdarts
    strategy   `make_strategy`
    supernet   `SearchJob` (supernet built, optimizers built)
    trace      ``step.get_concrete_function`` (Python trace of both levels and
               their gradient graphs; nothing runs)
    first      first call (graph optimisation by grappler, executor set-up,
               one execution)
    steps      the timed steps (steady state)

It also counts the traced concrete functions and graph nodes, and can switch
grappler passes off (``--grappler name=off,...`` through
`tf.config.optimizer.set_experimental_options`) or set the threading.
Prints one JSON line.

    .venv/bin/python bench/memory_profile.py --cells 5 --channels 8 --batch 32 --shape 28,28,1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, ROOT)

import search_step as sb  # noqa: E402  (the shared helpers: runtime flags, RSS, machine load)


def proc_status() -> Dict[str, float]:
    """VmRSS and VmHWM of this process in MB."""
    out = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) / 1024.0
    return out


def reset_peak() -> bool:
    """Resets VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Stages:
    """Records RSS, per-stage peak and seconds of consecutive stages."""

    def __init__(self) -> None:
        self.records: List[Dict[str, Any]] = []
        self.overall_peak = 0.0
        self.t, self.cpu = time.perf_counter(), time.process_time()
        reset_peak()

    def mark(self, name: str, **extra: Any) -> None:
        st = proc_status()
        self.overall_peak = max(self.overall_peak, st["VmHWM"])
        now = time.perf_counter()
        self.records.append({"stage": name, "rss_mb": round(st["VmRSS"], 1),
                             "stage_peak_mb": round(st["VmHWM"], 1),
                             "seconds": round(now - self.t, 2),
                             "cpu_seconds": round(time.process_time() - self.cpu, 2), **extra})
        reset_peak()
        self.t, self.cpu = time.perf_counter(), time.process_time()


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, default=5)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--shape", default="28,28,1")
    p.add_argument("--order", type=int, default=1, choices=(1, 2))
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--grappler", default="",
                   help="comma list of option=on|off for set_experimental_options, "
                        "e.g. remapping=off,layout_optimizer=off; 'all=off' disables "
                        "the meta optimizer")
    sb.add_runtime_args(p)
    p.add_argument("--no-forward-trace", action="store_true",
                   help="skip the separate forward-only trace timing")
    p.add_argument("--search-option", action="append", default=[],
                   help="key=value set on SearchConfig (ints/floats/bools parsed)")
    p.add_argument("--recompute", action="store_true",
                   help="recompute cell activations in the backward pass (search.recompute_cells)")
    p.add_argument("--label", default="")
    args = p.parse_args(argv)
    args.shape = tuple(int(s) for s in args.shape.split(","))
    return args


def grappler_options(spec: str) -> Dict[str, Any]:
    opts: Dict[str, Any] = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key == "all":
            opts["disable_meta_optimizer"] = value == "off"
        else:
            opts[key] = value != "off"
    return opts


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def graph_stats(concrete) -> Dict[str, int]:
    """Nodes of the traced graph and of the functions in its library."""
    gdef = concrete.graph.as_graph_def()
    return {"graph_nodes": len(gdef.node), "library_functions": len(gdef.library.function),
            "library_nodes": sum(len(f.node_def) for f in gdef.library.function)}


def run(args: argparse.Namespace) -> Dict[str, Any]:
    stages = Stages()
    stages.mark("python")
    load = os.getloadavg()[0]
    marks = (sb.busy_cpu_seconds(), time.process_time(), time.perf_counter())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    stages.mark("import_tf")
    sb.apply_runtime(tf, args)
    if args.grappler:
        tf.config.optimizer.set_experimental_options(grappler_options(args.grappler))
    import dataclasses

    import numpy as np

    from tfdarts.config import SearchConfig
    from tfdarts.task import Task
    from tfdarts.trainer import SearchJob, make_strategy

    stages.mark("import")
    strategy = make_strategy(args.devices)
    stages.mark("strategy")
    task = Task(args.shape, args.classes)
    cfg = SearchConfig(cells=args.cells, channels=args.channels, nodes=args.nodes,
                       batch_size=args.batch, order=args.order, seed=args.seed,
                       recompute_cells=args.recompute)
    extra = dict(item.split("=", 1) for item in args.search_option)
    if extra:
        cfg = dataclasses.replace(cfg, **{k: _parse_value(v) for k, v in extra.items()})
    job = SearchJob(cfg, task, strategy)
    batch = sb.make_batches(tf, strategy, args)
    stages.mark("supernet")

    forward_s = None
    if not args.no_forward_trace and args.devices == 1:
        from tfdarts import steps

        t = time.perf_counter()
        tf.function(lambda b: steps.forward_loss(job.model, *b)[0]).get_concrete_function(batch[0])
        forward_s = round(time.perf_counter() - t, 2)
        stages.mark("forward_trace")
    concrete = job.step.get_concrete_function(batch)
    stats = graph_stats(concrete)
    stages.mark("trace", **stats)
    sb.fetch(job.step(batch))
    stages.mark("first")
    times = []
    cpu0 = time.process_time()
    for _ in range(args.steps):
        t = time.perf_counter()
        sb.fetch(job.step(batch))
        times.append(time.perf_counter() - t)
    cpu_per_step = (time.process_time() - cpu0) / max(args.steps, 1)
    stages.mark("steps")
    return {
        "bench": "memory_profile", "label": args.label,
        "config": {"cells": args.cells, "channels": args.channels, "batch": args.batch,
                   "shape": list(args.shape), "order": args.order, "devices": args.devices,
                   "grappler": args.grappler, "intra": args.intra, "inter": args.inter,
                   "graph_optimization": args.graph_optimization,
                   "recompute": args.recompute,
                   "search_options": extra},
        "env": {k: os.environ[k] for k in ("MALLOC_ARENA_MAX", "LD_PRELOAD", "TF_ENABLE_ONEDNN_OPTS")
                if k in os.environ},
        "stages": stages.records,
        "forward_trace_s": forward_s,
        "trace_s": next(r["seconds"] for r in stages.records if r["stage"] == "trace"),
        "first_call_s": next(r["seconds"] for r in stages.records if r["stage"] == "first"),
        "trace_cpu_s": next(r["cpu_seconds"] for r in stages.records if r["stage"] == "trace"),
        "first_call_cpu_s": next(r["cpu_seconds"] for r in stages.records if r["stage"] == "first"),
        "median_s_per_step": round(statistics.median(times), 4),
        "step_times_s": [round(x, 3) for x in times],
        "cpu_s_per_step": round(cpu_per_step, 3),
        "tracing_count": job.step.experimental_get_tracing_count(),
        "peak_rss_mb": round(max(stages.overall_peak, sb.peak_rss_mb()), 1),
        "weight_params": int(sum(np.prod(v.shape) for v in job.model.weight_variables)),
        "others_cpu_whole_run": round(sb.others_cpu(*marks), 2),
        "loadavg_1m_before": round(load, 2),
        "library": sb.library_state(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    record = run(parse_args(argv))
    print(json.dumps(record), flush=True)
    out = os.path.join(ROOT, "bench", "out")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "memory.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
