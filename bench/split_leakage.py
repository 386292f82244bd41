"""How much of a kirigami test set a model could answer by memorising mirror images.

Graphene kirigami cut patterns come in mirror orbits (a pattern, its row flip, column
flip and double flip); mirror images have the same target. For each split (random and
grouped, as ``tfdarts.data`` makes them with the given data seed) this reports:

- the share of test patterns whose mirror image is in the training split;
- the R^2 of a lookup "model" that predicts a test pattern by the mean target of its
  mirror images in the training split, and the training mean where it has none;
- the same two figures for the search's halves (the alpha-validation half against
  the weight-training half, as ``data.search_split`` draws them for each search seed),
  which random search also uses to rank its candidates.

A lookup that scores near 1 means the split rewards memorisation: a model that fits its
training patterns exactly would score about that much without learning anything about
new patterns. It reads the table only (no training), in a few seconds.

    .venv/bin/python bench/split_leakage.py ../shared/data/graphene-kirigami
"""

from __future__ import annotations

import argparse
import json
from typing import Dict, Sequence

import numpy as np

from tfdarts import data as data_lib
from tfdarts import kirigami
from tfdarts.config import DataConfig


def lookup_r2(train_keys: np.ndarray, train_y: np.ndarray, keys: np.ndarray,
              y: np.ndarray) -> Dict[str, float]:
    """Mirror-lookup predictions of `y` and their R^2.

    Args:
        train_keys: ``(N,)`` orbit keys of the training patterns.
        train_y: ``(N,)`` their targets.
        keys: ``(M,)`` orbit keys of the patterns to predict.
        y: ``(M,)`` their targets.

    Returns:
        ``{"with_mirror": share of the M with a mirror among the N, "lookup_r2": R^2}``.
    """
    orbits, inverse = np.unique(train_keys, return_inverse=True)
    means = np.bincount(inverse, weights=train_y) / np.bincount(inverse)
    pos = np.clip(np.searchsorted(orbits, keys), 0, len(orbits) - 1)
    found = orbits[pos] == keys
    pred = np.where(found, means[pos], train_y.mean())
    r2 = 1.0 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
    return {"with_mirror": float(found.mean()), "lookup_r2": float(r2)}


def orbit_facts(keys: np.ndarray, y: np.ndarray) -> Dict[str, float]:
    """Orbit sizes and the largest target range within one orbit."""
    _, inverse, sizes = np.unique(keys, return_inverse=True, return_counts=True)
    by_orbit, starts = y[np.argsort(inverse, kind="stable")], np.r_[0, np.cumsum(sizes)[:-1]]
    spread = np.maximum.reduceat(by_orbit, starts) - np.minimum.reduceat(by_orbit, starts)
    return {"patterns": int(len(keys)), "orbits": int(len(sizes)),
            "orbits_of_4": int((sizes == 4).sum()), "orbits_of_2": int((sizes == 2).sum()),
            "orbits_of_1": int((sizes == 1).sum()), "max_target_range_in_orbit": float(spread.max()),
            "target_sd": float(y.std())}


def split_facts(raw, y: np.ndarray, cfg: DataConfig, search_seeds: Sequence[int]) -> Dict[str, object]:
    """Leakage of one split's test set and of its search halves; `y` is ``(N,)`` the targets."""
    keys = raw.groups
    test = data_lib.holdout_mask(raw, cfg)
    out: Dict[str, object] = {"test_patterns": int(test.sum()),
                              "test": lookup_r2(keys[~test], y[~test], keys[test], y[test])}
    train_keys, train_y = keys[~test], y[~test]
    for seed in search_seeds:
        w, a = data_lib.search_split(len(train_keys), seed)
        out[f"search_halves_seed_{seed}"] = lookup_r2(train_keys[w], train_y[w], train_keys[a], train_y[a])
    return out


def main(argv: Sequence[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", help="folder with the kirigami table")
    parser.add_argument("--target", default="yield_strain")
    parser.add_argument("--data_seed", type=int, default=DataConfig.seed, help="data.seed of the runs")
    parser.add_argument("--search_seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args(argv)
    raw = kirigami.load(args.data_dir, args.target)
    y = raw.y_train[:, 0].astype(np.float64)
    report = {"target": args.target, "data_seed": args.data_seed, "orbits": orbit_facts(raw.groups, y)}
    for split in ("random", "grouped"):
        cfg = DataConfig(name="graphene_kirigami", data_dir=args.data_dir, split=split,
                         target=args.target, seed=args.data_seed)
        report[split] = split_facts(raw, y, cfg, args.search_seeds)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
