"""Search and retrain loops: strategy, ``tf.function`` steps, checkpoints, history.

One loop skeleton (`EpochLoop`) runs every training job: it sets the epoch's
learning rate, drives a traced distributed step over the epoch's batches,
stops on a non-finite loss, logs progress, and after each epoch writes the
history (and whatever the job adds) atomically, then a checkpoint. A restarted
job resumes after the last checkpointed epoch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf

from tfdarts import data as data_lib
from tfdarts import fileio, steps
from tfdarts.architect import Architect
from tfdarts.config import Config, RetrainConfig, SearchConfig
from tfdarts.genotype import Genotype
from tfdarts.supernet import SearchNetwork
from tfdarts.task import Task

log = logging.getLogger("tfdarts")

HISTORY_FILE = "history.json"
ALPHAS_FILE = "alphas.npz"
GENOTYPE_FILE = "genotype.json"
CHECKPOINT_DIR = "checkpoints"

StepFn = Callable[[Any], Dict[str, Dict[str, tf.Tensor]]]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def make_strategy(devices: int = 0) -> tf.distribute.Strategy:
    """A MirroredStrategy over `devices` devices, or the default strategy.

    Args:
        devices: Replicas wanted; 0 = every GPU (or the default strategy on a
            CPU-only machine), 1 = the default strategy. Values > 1 use that many
            GPUs, or logical CPUs when there are no GPUs.
    """
    gpus = tf.config.list_logical_devices("GPU")
    pool = gpus or tf.config.list_logical_devices("CPU")
    wanted = len(gpus) if devices == 0 else devices
    if wanted <= 1:
        return tf.distribute.get_strategy()
    if wanted > len(pool):
        raise ValueError(f"runtime.devices={devices} but only {len(pool)} devices are visible")
    names = [d.name for d in pool[:wanted]]
    if gpus:
        return tf.distribute.MirroredStrategy(names)
    # collectives between logical CPUs can pair up out of order in the unrolled step
    return tf.distribute.MirroredStrategy(names, cross_device_ops=tf.distribute.ReductionToOneDevice())


def cosine_lr(epoch: int, epochs: int, lr_max: float, lr_min: float) -> float:
    """Cosine annealing from `lr_max` (epoch 0) towards `lr_min` (epoch `epochs`)."""
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * epoch / epochs))


def distributed_step(strategy: tf.distribute.Strategy, replica_fn: Callable) -> StepFn:
    """Wraps a per-replica function into one traced step returning summed stats."""

    @tf.function
    def step(batch):
        per_replica = strategy.run(replica_fn, args=batch)
        return tf.nest.map_structure(
            lambda t: strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None), per_replica)

    return step


def _format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


@dataclasses.dataclass
class EpochLoop:
    """The shared epoch loop with checkpoint/resume and atomic history.

    Attributes:
        name: Job name used in logs and errors ("search", "retrain", ...).
        out_dir: Folder for history, checkpoints and job files.
        task: The task (for metric summaries).
        epochs: Total epochs.
        steps_per_epoch: Batches per epoch (for progress and ETA).
        checkpoint: Trackables to save; must include an ``epoch`` tf.Variable.
        log_every: Steps between progress lines (0 = epoch lines only).
    """

    name: str
    out_dir: str
    task: Task
    epochs: int
    steps_per_epoch: int
    checkpoint: tf.train.Checkpoint
    log_every: int = 50
    history: List[Dict[str, Any]] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(self.out_dir, CHECKPOINT_DIR), max_to_keep=2)

    def restore(self) -> int:
        """Restores the last checkpoint; returns the number of finished epochs."""
        path = self.manager.latest_checkpoint
        if not path:
            return 0
        self.checkpoint.restore(path).assert_existing_objects_matched()
        done = int(self.checkpoint.epoch.numpy())
        history_path = os.path.join(self.out_dir, HISTORY_FILE)
        if os.path.exists(history_path):
            self.history = [r for r in fileio.read_json(history_path)["epochs"] if r["epoch"] <= done]
        log.info("%s: resuming from %s after epoch %d/%d", self.name, path, done, self.epochs)
        return done

    def run(self, start: int, dataset: tf.distribute.DistributedDataset, step: StepFn,
            begin_epoch: Callable[[int], Dict[str, float]],
            end_epoch: Callable[[int, Dict[str, Any]], None],
            header: Dict[str, Any]) -> List[Dict[str, Any]]:
        """Runs the remaining epochs.

        Args:
            start: Epochs already finished (from `restore`).
            dataset: Distributed dataset, one pass per epoch.
            step: Traced step returning ``{group: summed batch stats}``.
            begin_epoch: Sets learning rates for a 0-based epoch; returns them.
            end_epoch: Writes job-specific files for a finished 1-based epoch
                given its history record (may add keys to it).
            header: Extra keys of history.json besides ``epochs``.

        Returns:
            The full history (one record per epoch).
        """
        started = time.time()
        for epoch in range(start, self.epochs):
            t0 = time.time()
            lrs = begin_epoch(epoch)
            totals = self._run_epoch(dataset, step, epoch, started, start)
            record = {"epoch": epoch + 1, **self._record(totals), **lrs,
                      "seconds": time.time() - t0}
            end_epoch(epoch + 1, record)
            self.history.append(record)
            fileio.write_json(os.path.join(self.out_dir, HISTORY_FILE),
                              {**header, "epochs": self.history})
            self.checkpoint.epoch.assign(epoch + 1)
            self.manager.save()
            log.info("%s epoch %d/%d done in %.0fs: %s", self.name, epoch + 1, self.epochs,
                     record["seconds"], self._brief(record))
        return self.history

    def _run_epoch(self, dataset, step: StepFn, epoch: int, started: float,
                   start_epoch: int) -> Dict[str, Dict[str, np.ndarray]]:
        totals: Dict[str, Dict[str, np.ndarray]] = {}
        for i, batch in enumerate(dataset):
            out = {g: {k: v.numpy() for k, v in stats.items()} for g, stats in step(batch).items()}
            self._check_finite(out, epoch, i)
            for group, stats in out.items():
                acc = totals.setdefault(group, {})
                for key, value in stats.items():
                    acc[key] = acc.get(key, 0.0) + value
            if self.log_every and (i + 1) % self.log_every == 0:
                self._progress(epoch, i + 1, totals, started, start_epoch)
        if not totals:
            raise ValueError(f"{self.name}: epoch {epoch + 1} had no batches; "
                             "the dataset is smaller than one batch")
        return totals

    def _check_finite(self, out, epoch: int, index: int) -> None:
        for group, stats in out.items():
            if not np.isfinite(stats["loss_sum"]):
                raise TrainingDiverged(
                    f"{self.name}: {group} loss became {stats['loss_sum']} at epoch {epoch + 1}, "
                    f"step {index + 1}; lower the learning rate or check the data")

    def _record(self, totals) -> Dict[str, float]:
        record = {}
        for group, acc in totals.items():
            for key, value in steps.summarize(self.task, acc).items():
                record[f"{group}_{key}"] = value
            record[f"{group}_metric"] = record[f"{group}_{self.task.metric_name}"]
        return record

    def _brief(self, record: Dict[str, Any]) -> str:
        keys = [k for k in record if k.endswith("_loss") or k.endswith("_metric") or k.endswith("lr")]
        return ", ".join(f"{k} {record[k]:.4g}" for k in keys)

    def _progress(self, epoch: int, done: int, totals, started: float, start_epoch: int) -> None:
        steps_total = (self.epochs - start_epoch) * self.steps_per_epoch
        steps_done = (epoch - start_epoch) * self.steps_per_epoch + done
        rate = (time.time() - started) / max(steps_done, 1)
        brief = ", ".join(f"{g} loss {steps.summarize(self.task, acc)['loss']:.4f}"
                          for g, acc in totals.items())
        log.info("%s epoch %d/%d step %d/%d: %s | %.2f s/step, %s left", self.name, epoch + 1,
                 self.epochs, done, self.steps_per_epoch, brief, rate,
                 _format_eta(rate * (steps_total - steps_done)))


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """What a search produced (files are in `out_dir`)."""

    genotype: Genotype
    history: List[Dict[str, Any]]
    out_dir: str
    seconds: float
    params: int


class SearchJob:
    """Builds the supernet, optimizers, architect and step for one search.

    Args:
        cfg: Search settings.
        task: Task derived from the data.
        strategy: Distribution strategy; variables are created in its scope.
    """

    def __init__(self, cfg: SearchConfig, task: Task, strategy: tf.distribute.Strategy) -> None:
        self.cfg, self.task, self.strategy = cfg, task, strategy
        keras.utils.set_random_seed(cfg.seed)
        with strategy.scope():
            self.model = SearchNetwork(task, cfg.cells, cfg.channels, cfg.nodes,
                                       cfg.stem_multiplier, cfg.primitives, cfg.seed)
            self.model.build_from_task()
            self.w_opt = steps.build_optimizer(
                keras.optimizers.SGD(cfg.w_lr, momentum=cfg.w_momentum), self.model.weight_variables)
            self.a_opt = steps.build_optimizer(
                keras.optimizers.Adam(cfg.alpha_lr, beta_1=cfg.alpha_beta1, beta_2=cfg.alpha_beta2,
                                      epsilon=1e-8), self.model.arch_variables)
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.w_rule = steps.UpdateRule(self.w_opt, self.model.weight_variables, cfg.grad_clip,
                                       cfg.w_weight_decay)
        self.a_rule = steps.UpdateRule(self.a_opt, self.model.arch_variables, 0.0,
                                       cfg.alpha_weight_decay)
        self.architect = Architect(self.model, cfg.order, self.w_rule)
        self.step = distributed_step(strategy, self.replica_fn)

    def replica_fn(self, train_batch: steps.Batch, val_batch: steps.Batch):
        """One search iteration on this replica: alpha step on val, then weight step on train."""
        val = steps.replica_step(self.model, self.a_rule, val_batch,
                                 self.architect.gradient_fn(train_batch))
        train = steps.replica_step(self.model, self.w_rule, train_batch,
                                   steps.plain_gradients(self.model, self.model.weight_variables))
        return {"train": train, "val": val}

    def checkpoint(self) -> tf.train.Checkpoint:
        """Trackables saved each epoch."""
        return tf.train.Checkpoint(model=self.model, w_opt=self.w_opt, a_opt=self.a_opt,
                                   epoch=self.epoch)

    def set_lr(self, epoch: int) -> Dict[str, float]:
        """Cosine weight learning rate for a 0-based epoch."""
        lr = cosine_lr(epoch, self.cfg.epochs, self.cfg.w_lr, self.cfg.w_lr_min)
        self.w_opt.learning_rate.assign(lr)
        return {"lr": lr}


class AlphaRecorder:
    """Keeps the per-epoch softmaxed alphas and the current genotype on disk."""

    def __init__(self, model: SearchNetwork, out_dir: str) -> None:
        self.model, self.out_dir = model, out_dir
        self.normal: List[np.ndarray] = []
        self.reduce: List[np.ndarray] = []

    def resume(self, epochs_done: int) -> None:
        """Reloads the snapshots of finished epochs (drops any later ones)."""
        path = os.path.join(self.out_dir, ALPHAS_FILE)
        if epochs_done and os.path.exists(path):
            with np.load(path) as f:
                self.normal = list(f["normal"][:epochs_done])
                self.reduce = list(f["reduce"][:epochs_done])

    def __call__(self, epoch: int, record: Dict[str, Any]) -> None:
        probs = self.model.export_probs()
        self.normal.append(probs["normal"].astype(np.float32))
        self.reduce.append(probs["reduce"].astype(np.float32))
        genotype = self.model.genotype()
        record["genotype"] = genotype.to_dict()
        fileio.write_npz(os.path.join(self.out_dir, ALPHAS_FILE), normal=np.stack(self.normal),
                         reduce=np.stack(self.reduce), primitives=np.array(probs["primitives"]),
                         nodes=np.array(self.model.nodes))
        fileio.write_json(os.path.join(self.out_dir, GENOTYPE_FILE), genotype.to_dict())


def _steps_per_epoch(examples: int, batch: int, cap: int) -> int:
    steps_ = examples // batch
    return min(steps_, cap) if cap else steps_


def search(config: Config, data: data_lib.PreparedData, out_dir: str,
           strategy: Optional[tf.distribute.Strategy] = None) -> SearchResult:
    """Runs (or resumes) a DARTS search and writes its files to `out_dir`.

    Files: ``history.json`` (per-epoch losses, metrics, lr, genotype),
    ``alphas.npz`` (``normal``/``reduce`` softmaxed alphas ``(E, edges, K)``),
    ``genotype.json`` and ``checkpoints/``.

    Args:
        config: Full config; uses ``config.search`` and ``config.runtime``.
        data: Prepared data (the search only sees its training split).
        out_dir: Output folder; an existing checkpoint there is resumed.
        strategy: Distribution strategy (default from ``config.runtime.devices``).

    Returns:
        The final genotype, history and timing.
    """
    cfg = config.search
    strategy = strategy or make_strategy(config.runtime.devices)
    job = SearchJob(cfg, data.spec.task, strategy)
    train_ds, val_ds = data_lib.search_datasets(data, cfg.batch_size, cfg.seed)
    half = min(len(data.y_train) // 2, len(data.y_train) - len(data.y_train) // 2)
    n_steps = _steps_per_epoch(half, cfg.batch_size, cfg.steps_per_epoch)
    if n_steps == 0:
        raise ValueError(f"search.batch_size={cfg.batch_size} is larger than each search half "
                         f"({half} examples); lower it or use more data")
    dataset = tf.data.Dataset.zip((train_ds, val_ds)).take(n_steps)
    dist = strategy.experimental_distribute_dataset(dataset)
    loop = EpochLoop("search", out_dir, job.task, cfg.epochs, n_steps, job.checkpoint(),
                     config.runtime.log_every)
    recorder = AlphaRecorder(job.model, out_dir)
    header = {"dataset": data.spec.name, "task": job.task.to_dict(), "metric": job.task.metric_name,
              "fingerprint": data.spec.fingerprint, "order": cfg.order}
    start = loop.restore()
    recorder.resume(start)
    history = loop.run(start, dist, job.step, job.set_lr, recorder, header)
    params = int(sum(np.prod(v.shape) for v in job.model.weight_variables))
    seconds = float(sum(r["seconds"] for r in history))
    return SearchResult(job.model.genotype(), history, out_dir, seconds, params)


MODEL_FILE = "model.keras"
ModelFn = Callable[[], keras.Model]


@dataclasses.dataclass(frozen=True)
class RetrainResult:
    """What a retrain produced (files are in `out_dir`)."""

    model: keras.Model
    history: List[Dict[str, Any]]
    out_dir: str
    seconds: float
    params: int


class TrainJob:
    """A model, its SGD optimizer and the traced training step.

    Args:
        cfg: Retrain settings (lr schedule, momentum, decay, clip, seed).
        model_fn: Builds the model (with ``task`` and, optionally, an auxiliary
            head and ``set_drop_path``); called inside the strategy scope.
        strategy: Distribution strategy.
    """

    def __init__(self, cfg: RetrainConfig, model_fn: ModelFn,
                 strategy: tf.distribute.Strategy) -> None:
        self.cfg, self.strategy = cfg, strategy
        keras.utils.set_random_seed(cfg.seed)
        with strategy.scope():
            self.model = model_fn()
            self.model.build_from_task()
            variables = self.model.trainable_variables
            self.opt = steps.build_optimizer(keras.optimizers.SGD(cfg.lr, momentum=cfg.momentum),
                                             variables)
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.rule = steps.UpdateRule(self.opt, variables, cfg.grad_clip, cfg.weight_decay)
        self.gradients = steps.plain_gradients(self.model, variables)
        self.step = distributed_step(strategy, self.replica_fn)

    def replica_fn(self, x: tf.Tensor, y: tf.Tensor):
        """One weight update on this replica's batch."""
        return {"train": steps.replica_step(self.model, self.rule, (x, y), self.gradients)}

    def checkpoint(self) -> tf.train.Checkpoint:
        """Trackables saved each epoch."""
        return tf.train.Checkpoint(model=self.model, opt=self.opt, epoch=self.epoch)

    def set_lr(self, epoch: int) -> Dict[str, float]:
        """Cosine learning rate and drop-path ramp for a 0-based epoch."""
        lr = cosine_lr(epoch, self.cfg.epochs, self.cfg.lr, self.cfg.lr_min)
        self.opt.learning_rate.assign(lr)
        out = {"lr": lr}
        if hasattr(self.model, "set_drop_path"):
            out["drop_path"] = float(self.model.set_drop_path(epoch, self.cfg.epochs))
        return out


def darts_model_fn(task: Task, genotype: Genotype, cfg: RetrainConfig) -> ModelFn:
    """Builds the discrete network of `genotype` with the retrain settings."""
    from tfdarts.network import Network

    return lambda: Network(task, genotype, cells=cfg.cells, channels=cfg.channels,
                           auxiliary_weight=cfg.auxiliary_weight, drop_path=cfg.drop_path)


class _TestCurve:
    """Epoch hook adding test-split metrics every `every` epochs (curves only)."""

    def __init__(self, model: keras.Model, data: data_lib.PreparedData, batch: int,
                 every: int, total: int) -> None:
        self.model, self.data, self.batch, self.every, self.total = model, data, batch, every, total

    def __call__(self, epoch: int, record: Dict[str, Any]) -> None:
        if self.every and (epoch % self.every == 0 or epoch == self.total):
            from tfdarts import evaluation

            metrics = evaluation.evaluate(self.model, self.data, self.batch)
            record["test_loss"] = metrics["loss"]
            record["test_metric"] = metrics[self.data.spec.task.metric_name]


def retrain(config: Config, data: data_lib.PreparedData, genotype: Optional[Genotype],
            out_dir: str, strategy: Optional[tf.distribute.Strategy] = None,
            model_fn: Optional[ModelFn] = None, name: str = "retrain",
            epochs: int = 0) -> RetrainResult:
    """Trains a model from scratch on the full training split (resumable).

    Files: ``history.json`` (per-epoch train loss/metric, lr, drop-path and,
    every ``retrain.eval_every`` epochs, test loss/metric for learning curves),
    ``model.keras``, ``genotype.json`` (when given) and ``checkpoints/``.

    Args:
        config: Full config; uses ``config.retrain`` and ``config.runtime``.
        data: Prepared data.
        genotype: Architecture to build (ignored when `model_fn` is given).
        out_dir: Output folder; an existing checkpoint there is resumed.
        strategy: Distribution strategy (default from ``config.runtime.devices``).
        model_fn: Builds another model (baselines); default: the DARTS network.
        name: Job name in logs.
        epochs: Overrides ``retrain.epochs`` when > 0 (short budgets).

    Returns:
        The trained model, its history and timing.
    """
    cfg = config.retrain
    if epochs:
        cfg = dataclasses.replace(cfg, epochs=epochs)
    strategy = strategy or make_strategy(config.runtime.devices)
    if model_fn is None and genotype is None:
        raise ValueError("retrain needs a genotype or a model_fn")
    model_fn = model_fn or darts_model_fn(data.spec.task, genotype, cfg)
    job = TrainJob(cfg, model_fn, strategy)
    dataset = data_lib.train_dataset(data, cfg.batch_size, cfg.seed, cfg.cutout)
    n_steps = _steps_per_epoch(len(data.y_train), cfg.batch_size, cfg.steps_per_epoch)
    dist = strategy.experimental_distribute_dataset(dataset.take(n_steps))
    loop = EpochLoop(name, out_dir, data.spec.task, cfg.epochs, n_steps, job.checkpoint(),
                     config.runtime.log_every)
    header = {"dataset": data.spec.name, "task": data.spec.task.to_dict(),
              "metric": data.spec.task.metric_name, "fingerprint": data.spec.fingerprint,
              "model": job.model.name}
    if isinstance(getattr(job.model, "genotype", None), Genotype):
        header["genotype"] = job.model.genotype.to_dict()
        fileio.write_json(os.path.join(out_dir, GENOTYPE_FILE), header["genotype"])
    hook = _TestCurve(job.model, data, cfg.batch_size, cfg.eval_every, cfg.epochs)
    history = loop.run(loop.restore(), dist, job.step, job.set_lr, hook, header)
    save_model(job.model, os.path.join(out_dir, MODEL_FILE))
    params = int(sum(np.prod(v.shape) for v in job.model.trainable_variables))
    return RetrainResult(job.model, history, out_dir, float(sum(r["seconds"] for r in history)), params)


def save_model(model: keras.Model, path: str) -> None:
    """Saves the native ``.keras`` file atomically."""
    tmp = os.path.join(os.path.dirname(path), ".tmp-" + os.path.basename(path))
    model.save(tmp)
    os.replace(tmp, path)
