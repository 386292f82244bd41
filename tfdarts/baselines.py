"""Comparison models, by name, trained and evaluated in the same code path as the search.

`BASELINES` maps a name (as in ``baselines.include``) to a function that
returns the `Candidate` to train: its record name, model factory and epoch
budget. ``random`` first runs a small random search in the DARTS space
(`random_search`), ``darts_v2`` is the published CIFAR-10 cell, ``resnet18``
and ``tiny_resnet`` are `tfdarts.resnet` models. A new baseline is one more
registered function.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple


from tfdarts import contract, evaluation, fileio, network, resnet, sampler, trainer
from tfdarts import data as data_lib
from tfdarts.config import Config, ConfigError
from tfdarts.genotype import DARTS_V2, Genotype
from tfdarts.model import ModelFn
from tfdarts.registry import Registry

log = logging.getLogger("tfdarts")


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One baseline to train.

    Attributes:
        name: Name of its result record (e.g. ``random_best``).
        model_fn: Builds the model.
        epochs: Training epochs (0 = ``retrain.epochs``).
        search_seconds: Seconds spent choosing it (random search), if any.
        search_cpu_seconds: Processor seconds spent choosing it, if any.
    """

    name: str
    model_fn: ModelFn
    epochs: int = 0
    search_seconds: Optional[float] = None
    search_cpu_seconds: Optional[float] = None


BaselineFn = Callable[[Config, data_lib.PreparedData, str], Candidate]
"""``(config, data, folder) -> Candidate``; may do work of its own in `folder`."""

BASELINES: Registry[BaselineFn] = Registry("baseline")


def _validation_view(data: data_lib.PreparedData, seed: int) -> data_lib.PreparedData:
    """Training split halves as (train, test) so selection never sees the test split."""
    a, b = data_lib.search_split(data.spec.num_train, seed)
    spec = dataclasses.replace(data.spec, num_train=len(a), num_test=len(b))
    return data_lib.PreparedData(spec, data.x_train[a], data.y_train[a], data.x_train[b], data.y_train[b])


def random_search(config: Config, data: data_lib.PreparedData,
                  out_dir: str) -> Tuple[Genotype, Dict[str, float]]:
    """Trains random genotypes briefly and returns the best with the cost spent.

    Up to `baselines.random_samples` candidates train for `baselines.random_epochs`
    on one half of the training split and are ranked on the other half (the test
    split is never used for the choice). With `baselines.random_budget_seconds`
    sampling stops once the candidates' training and ranking used that budget on
    `baselines.random_budget_clock` (at least one candidate runs). Writes the
    winner to `contract.BEST_GENOTYPE_FILE` and every candidate's score and the
    cost to `contract.RANDOM_SELECTION_FILE`.

    Returns:
        The best genotype and ``{"seconds", "cpu_seconds"}`` spent choosing it.
    """
    b, s = config.baselines, config.search
    view = _validation_view(data, config.data.seed)
    metric = data.spec.task.metric_name
    candidates: List[Dict[str, Any]] = []
    spent = {"seconds": 0.0, "cpu_seconds": 0.0}
    budget_key = "cpu_seconds" if b.random_budget_clock == "cpu" else "seconds"
    for i, geno in enumerate(sampler.random_genotypes(b.random_samples, s.seed, s.primitives, s.nodes)):
        if b.random_budget_seconds and candidates and spent[budget_key] >= b.random_budget_seconds:
            log.info("random search: budget of %.0f %s s used after %d candidates",
                     b.random_budget_seconds, b.random_budget_clock, len(candidates))
            break
        started = _clocks()
        result = trainer.retrain(config, view, network.model_fn(view.spec.task, geno, config.retrain),
                                 os.path.join(out_dir, f"candidate_{i}"),
                                 name=f"random {i + 1}/{b.random_samples}", epochs=b.random_epochs)
        score = float(evaluation.evaluate(result.model, view)[metric])
        _add_cost(spent, result, started)
        log.info("random candidate %d: validation %s %.4f", i + 1, metric, score)
        candidates.append({"genotype": geno.to_dict(), "validation": score})
    best = max(candidates, key=lambda c: c["validation"])
    fileio.write_json(os.path.join(out_dir, contract.BEST_GENOTYPE_FILE), best["genotype"])
    fileio.write_json(os.path.join(out_dir, contract.RANDOM_SELECTION_FILE),
                      {"metric": metric, **spent, "clock": b.random_budget_clock,
                       "candidates": candidates})
    return Genotype.from_dict(best["genotype"]), spent


def _clocks() -> Dict[str, float]:
    return {"seconds": time.time(), "cpu_seconds": time.process_time()}


def _add_cost(spent: Dict[str, float], result: trainer.RetrainResult, started: Dict[str, float]) -> None:
    """Adds a candidate's cost: its recorded training (a resumed candidate counts its
    restored epochs) plus what this process spent beyond its fresh epochs (tracing,
    ranking)."""
    now = _clocks()
    for key in spent:
        recorded = [r.get(key, 0.0) for r in result.history]
        fresh = sum(recorded[result.resumed_from:])
        spent[key] += sum(recorded) + (now[key] - started[key] - fresh)


@BASELINES.register("random")
def _random(config: Config, data: data_lib.PreparedData, folder: str) -> Candidate:
    genotype, cost = random_search(config, data, os.path.join(folder, "search"))
    return Candidate("random_best", network.model_fn(data.spec.task, genotype, config.retrain),
                     search_seconds=cost["seconds"], search_cpu_seconds=cost["cpu_seconds"])


@BASELINES.register("darts_v2")
def _darts_v2(config: Config, data: data_lib.PreparedData, folder: str) -> Candidate:
    return Candidate("darts_v2", network.model_fn(data.spec.task, DARTS_V2, config.retrain))


def _register_resnet(name: str) -> None:
    def baseline(config: Config, data: data_lib.PreparedData, folder: str) -> Candidate:
        task = data.spec.task
        return Candidate(name, lambda: resnet.RESNETS[name](task), config.baselines.resnet_epochs)

    BASELINES.register(name)(baseline)


for _name in resnet.RESNETS:
    _register_resnet(_name)


def check_include(config: Config) -> None:
    """Refuses unknown names in ``baselines.include`` before any work starts.

    Raises:
        ConfigError: Names the unknown baseline and the known ones.
    """
    try:
        BASELINES.check(config.baselines.include)
    except KeyError as err:
        raise ConfigError(f"baselines.include: {err.args[0]}") from None


def run_baselines(config: Config, data: data_lib.PreparedData, out_dir: str) -> List[Dict[str, Any]]:
    """Trains, evaluates and exports the comparison models in `baselines.include`.

    Each baseline ``name`` works in ``out_dir/name`` (``train/``, ``eval/`` and
    whatever its function adds, e.g. ``search/`` for random search).

    Returns:
        One result record per baseline, in the order of `baselines.include`.
    """
    check_include(config)
    records = []
    for name in config.baselines.include:
        folder = os.path.join(out_dir, name)
        candidate = BASELINES.get(name)(config, data, folder)
        train_dir, eval_dir = os.path.join(folder, "train"), os.path.join(folder, "eval")
        trainer.retrain(config, data, candidate.model_fn, train_dir, name=candidate.name,
                        epochs=candidate.epochs)
        records.append(evaluation.evaluate_and_export(config, data, train_dir, eval_dir,
                                                      search_seconds=candidate.search_seconds,
                                                      search_cpu_seconds=candidate.search_cpu_seconds,
                                                      name=candidate.name))
    return records
