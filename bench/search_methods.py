"""Search-only comparison of plain DARTS and each remedy, same budget, several seeds.

For every (dataset, method, seed) of the grid it runs one search with the
``cpu`` preset's supernet and optimiser settings at a fixed step budget, writes
the run's summary beside its search files and as a small durable record under
``--records`` (committed; run folders are not), and rewrites the aggregated
tables in ``--doc`` from the records after every run. Runs that already have a
record are skipped, so rerunning the same command resumes the grid; runs go
seed by seed, so an interrupted grid still has whole seeds.

Measured per run: alpha movement at the end (mean max weight and entropy / ln K
of both cells), the skip-connects in the derived normal cell, the share of
chosen ops within noise (`tfdarts.analysis.noise_margin`), the eigenvalue
trace, the genotype and the seconds. Two rules need no search of their own and
are applied to the plain searches' files: ``max_skips=2`` (P-DARTS derivation)
and the R-DARTS early stop on the eigenvalue trace.

    .venv/bin/python bench/search_methods.py --data-root ../shared/data \\
        --out runs/search-methods --doc docs/search-methods.md
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tfdarts import analysis, contract, fileio  # noqa: E402
from tfdarts.genotype import Genotype, parse_alphas  # noqa: E402

METHODS: Dict[str, List[str]] = {
    "darts": [],
    "beta_decay": ["search.beta_decay=5"],
    "aux_skip": ["search.aux_skip=1"],
    "pc_k2": ["search.partial_channels=2"],
    "warmup": ["search.warmup_epochs=1"],
    "alpha_lr_3e-2": ["search.alpha_lr=0.03"],
    "lr_3e-2_warmup_beta": ["search.alpha_lr=0.03", "search.warmup_epochs=1", "search.beta_decay=5"],
    "alpha_lr_1e-1": ["search.alpha_lr=0.1"],
}
"""Overrides of each method (plain DARTS = none)."""

DATASETS: Dict[str, List[str]] = {
    "fashion_mnist": ["data.data_dir={root}/fashion-mnist"],
    "graphene_kirigami": ["data.data_dir={root}/graphene-kirigami", "data.split=grouped"],
}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", default=os.path.join(REPO, "..", "shared", "data"))
    p.add_argument("--out", default=os.path.join(REPO, "runs", "search-methods"))
    p.add_argument("--doc", default=os.path.join(REPO, "docs", "search-methods.md"))
    p.add_argument("--records", default=os.path.join(REPO, "bench", "results", "search-methods"),
                   help="one small JSON per finished run (kept; the run folders are not)")
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", default="fashion_mnist=50,graphene_kirigami=50",
                   help="search steps per epoch, per dataset")
    p.add_argument("--threads", type=int, default=0,
                   help="TensorFlow intra- and inter-op threads (0 = TensorFlow's default)")
    p.add_argument("--aggregate-only", action="store_true", help="rewrite --doc from finished runs")
    return p.parse_args(argv)


def run_config(args: argparse.Namespace, dataset: str, method: str, seed: int):
    """The config of one run: cpu preset, dataset file, budget, seed, method."""
    from tfdarts.config import load_config

    steps = dict(kv.split("=") for kv in args.steps.split(","))[dataset]
    files = [os.path.join(REPO, "configs", "presets", "cpu.yaml"),
             os.path.join(REPO, "configs", "datasets", f"{dataset}.yaml")]
    root = os.path.abspath(args.data_root)
    overrides = [f"data.name={dataset}", *(o.format(root=root) for o in DATASETS[dataset]),
                 f"search.epochs={args.epochs}", f"search.steps_per_epoch={steps}",
                 f"search.seed={seed}", f"data.seed={seed}", "runtime.log_every=0",
                 "runtime.devices=1", "search.alpha_lr=0.003",  # the protocol, whatever the preset says
                 *METHODS[method]]
    return load_config(files, overrides)


def run_one(config, data, folder: str) -> Dict[str, Any]:
    """Searches into `folder` and returns its summary."""
    from tfdarts import trainer

    started = time.time()
    result = trainer.search(config, data, folder)
    summary = summarize_search(folder)
    summary.update({"wall_seconds": time.time() - started, "search_seconds": result.seconds,
                    "config": config.search.__dict__ | {"primitives": list(config.search.primitives)}})
    return summary


def summarize_search(folder: str) -> Dict[str, Any]:
    """Alpha movement, skips, confidence, eigenvalues and genotype of a finished search."""
    run = analysis.load_search(folder)
    k = len(run.primitives)
    out: Dict[str, Any] = {"genotype": run.genotype.to_dict() if run.genotype else None,
                           "eigenvalues": [r.get("eigenvalue") for r in run.history["epochs"]],
                           "val_metric": run.history["epochs"][-1].get("val_metric"),
                           "epochs": len(run.history["epochs"])}
    for cell, probs in (("normal", run.normal[-1]), ("reduce", run.reduce[-1])):
        stats = analysis.cell_stats(probs, run.primitives, run.nodes)
        out[f"{cell}_max_weight"] = stats["max_weight_mean"]
        out[f"{cell}_entropy_ratio"] = stats["entropy_ratio"]
        out[f"{cell}_guessed_share"] = stats["guessed_share"]
        out[f"{cell}_skip_count"] = stats["skip_count"]
    out["uniform_weight"] = 1.0 / k
    return out


def _post_hoc(folder: str, summary: Dict[str, Any], rule: str) -> Dict[str, Any]:
    """Summary of a rule applied to a plain search's files (no search of its own)."""
    from tfdarts.hessian import rdarts_stop

    run = analysis.load_search(folder)
    out = dict(summary)
    if rule == "max_skips_2":
        edge = {}
        with np.load(os.path.join(folder, contract.ALPHAS_FILE)) as f:
            edge = {k: f[k][-1] for k in ("edge_normal", "edge_reduce") if k in f.files}
        geno = parse_alphas(run.normal[-1], run.reduce[-1], run.primitives, run.nodes,
                            max_skips=2, **edge)
        out["genotype"] = geno.to_dict()
        out["normal_skip_count"] = sum(op == "skip_connect" for op, _ in geno.normal)
        return out
    trace = summary["eigenvalues"]
    stop = next((i for i in range(1, len(trace) + 1) if rdarts_stop(trace[:i], 1, 1.3, 2)), None)
    out["stopped_at"] = stop
    if stop is not None:
        epoch = run.history["epochs"][stop - 1]
        out["genotype"] = epoch["genotype"]
        for cell, probs in (("normal", run.normal[stop - 1]), ("reduce", run.reduce[stop - 1])):
            stats = analysis.cell_stats(probs, run.primitives, run.nodes)
            out[f"{cell}_max_weight"] = stats["max_weight_mean"]
            out[f"{cell}_entropy_ratio"] = stats["entropy_ratio"]
            out[f"{cell}_guessed_share"] = stats["guessed_share"]
            out[f"{cell}_skip_count"] = stats["skip_count"]
    return out


def _edges(genotype: Dict[str, Any]) -> set:
    geno = Genotype.from_dict(genotype)
    return {(pos // 2, op, src) for pos, (op, src) in enumerate(geno.normal)}


def agreement(genotypes: Sequence[Dict[str, Any]]) -> Optional[float]:
    """Mean pairwise Jaccard overlap of the normal cells' (node, op, input) edges."""
    pairs = list(itertools.combinations([_edges(g) for g in genotypes if g], 2))
    if not pairs:
        return None
    return float(np.mean([len(a & b) / len(a | b) for a, b in pairs]))


def _mean_sd(values: Sequence[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{np.mean(values):.4g} ± {np.std(values, ddof=1):.2g}"


COLUMNS = (("normal_max_weight", "max weight (normal)"), ("normal_entropy_ratio", "entropy / ln K (normal)"),
           ("reduce_entropy_ratio", "entropy / ln K (reduce)"), ("normal_guessed_share", "guessed (normal)"),
           ("normal_skip_count", "skips (normal)"), ("val_metric", "val metric"),
           ("search_seconds", "search s"))


def aggregate(summaries: Dict[tuple, Dict[str, Any]]) -> str:
    """Markdown tables: mean ± sd over seeds per (dataset, method), then every run."""
    lines = []
    for dataset in sorted({d for d, _, _ in summaries}):
        lines += [f"#### {dataset}", "",
                  "| method | seeds | " + " | ".join(c for _, c in COLUMNS) + " | eigenvalue first -> last | "
                  "genotype agreement |", "|---" * (len(COLUMNS) + 4) + "|"]
        methods = sorted({m for d, m, _ in summaries if d == dataset},
                         key=lambda m: (list(METHODS) + ["max_skips_2", "early_stop"]).index(m))
        for method in methods:
            runs = [s for (d, m, _), s in sorted(summaries.items()) if d == dataset and m == method]
            eig = [f"{r['eigenvalues'][0]:.3g} -> {r['eigenvalues'][-1]:.3g}" for r in runs
                   if r.get("eigenvalues") and r["eigenvalues"][0] is not None]
            cells = [_mean_sd([r.get(key) for r in runs]) for key, _ in COLUMNS]
            agree = agreement([r.get("genotype") for r in runs])
            lines.append(f"| {method} | {len(runs)} | " + " | ".join(cells)
                         + f" | {'; '.join(eig) or '-'} | {'-' if agree is None else f'{agree:.2f}'} |")
        lines.append("")
    lines += ["#### Every run", "", "| dataset | method | seed | normal cell | reduce cell |", "|---|---|---|---|---|"]
    for (dataset, method, seed), s in sorted(summaries.items()):
        if s.get("genotype"):
            g = Genotype.from_dict(s["genotype"])
            cells = [analysis.format_gene(c).replace(" | ", "; ") for c in (g.normal, g.reduce)]
            lines.append(f"| {dataset} | {method} | {seed} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def write_doc(path: str, summaries: Dict[tuple, Dict[str, Any]]) -> None:
    """Replaces the measured section of `path` (between the markers) with the tables."""
    begin, end = "<!-- measured:begin -->", "<!-- measured:end -->"
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else f"{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    with fileio.atomic_open(path) as f:
        f.write(head + begin + "\n" + aggregate(summaries) + end + tail)


def _record_path(args: argparse.Namespace, dataset: str, method: str, seed: int) -> str:
    return os.path.join(args.records, dataset, method, f"{seed}.json")


def record(args: argparse.Namespace, dataset: str, method: str, seed: int, folder: str,
           summary: Dict[str, Any]) -> None:
    """Writes the durable record of a finished run (and of the post-hoc rules on a plain one)."""
    fileio.write_json(_record_path(args, dataset, method, seed), summary)
    if method == "darts":
        for rule in ("max_skips_2", "early_stop"):
            fileio.write_json(_record_path(args, dataset, rule, seed), _post_hoc(folder, summary, rule))


def collect(args: argparse.Namespace) -> Dict[tuple, Dict[str, Any]]:
    """Records of every finished run of the grid, plus the post-hoc rules."""
    out = {}
    for dataset, method, seed in _grid(args, with_rules=True):
        path = _record_path(args, dataset, method, seed)
        if os.path.exists(path):
            out[(dataset, method, seed)] = fileio.read_json(path)
    return out


def _claim(folder: str) -> bool:
    """Claims a run for this process, so several workers can share one grid.

    The claim is a file holding the claimant's pid; a claim of a process that is
    gone is taken over (its run resumes from its checkpoint).
    """
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, ".claim")
    try:
        owner = int(open(path).read().strip() or 0)
    except (OSError, ValueError):
        owner = 0
    if owner and owner != os.getpid() and _alive(owner):
        return False
    with open(path + f".{os.getpid()}", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + f".{os.getpid()}", path)
    time.sleep(0.5)  # two takers of one stale claim: the last writer wins, the other backs off
    return open(path).read().strip() == str(os.getpid())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _grid(args: argparse.Namespace, with_rules: bool = False):
    methods = args.methods.split(",")
    if with_rules and "darts" in methods:
        methods += ["max_skips_2", "early_stop"]
    for seed in (int(s) for s in args.seeds.split(",")):
        for dataset in args.datasets.split(","):
            for method in methods:
                yield dataset, method, seed


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if not args.aggregate_only:
        from tfdarts import data as data_lib

        if args.threads:
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
            tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        prepared: Dict[str, Any] = {}
        for dataset, method, seed in _grid(args):
            folder = os.path.join(args.out, dataset, method, str(seed))
            if os.path.exists(_record_path(args, dataset, method, seed)) or not _claim(folder):
                continue
            config = run_config(args, dataset, method, seed)
            key = (dataset, seed)
            if key not in prepared:
                prepared.clear()
                prepared[key] = data_lib.prepare(config.data)
            print(f"[{time.strftime('%H:%M:%S')}] {dataset} {method} seed {seed}", flush=True)
            try:
                summary = run_one(config, prepared[key], folder)
            except Exception as err:  # one failed run must not stop the grid; it is retried on rerun
                print(f"[{time.strftime('%H:%M:%S')}] FAILED {dataset} {method} seed {seed}: "
                      f"{type(err).__name__}: {err}", flush=True)
                continue
            fileio.write_json(os.path.join(folder, "summary.json"), summary)
            record(args, dataset, method, seed, folder, summary)
            write_doc(args.doc, collect(args))
    write_doc(args.doc, collect(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
