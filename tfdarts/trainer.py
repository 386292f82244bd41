"""Search and retrain loops: strategy, ``tf.function`` steps, checkpoints, history.

One loop skeleton (`EpochLoop`) runs every training job: it sets the epoch's
learning rate, drives a traced distributed step over the epoch's batches,
stops on a non-finite loss, logs progress, and after each epoch writes the
history (and whatever the job adds) atomically, then a checkpoint, then the
epoch's TensorBoard summaries (`tfdarts.summaries`, in `contract.TENSORBOARD_DIR`).
A restarted job resumes after the last checkpointed epoch.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfdarts import contract, evaluation, export, fileio, metrics, runtime, steps, summaries
from tfdarts import data as data_lib
from tfdarts.architect import Architect
from tfdarts.config import Config, RetrainConfig, SearchConfig
from tfdarts.genotype import Genotype
from tfdarts.hessian import AlphaHessian, rdarts_stop
from tfdarts.model import ModelFn, TaskModel
from tfdarts.progress import format_duration, show_progress
from tfdarts.supernet import SearchNetwork
from tfdarts.task import Task

log = logging.getLogger("tfdarts")

StepFn = Callable[[Any], Dict[str, Dict[str, tf.Tensor]]]
SummaryFn = Callable[[summaries.EventLog, Dict[str, Any]], None]


class Job(Protocol):
    """What the epoch loop asks of a training job."""

    def begin_epoch(self, epoch: int) -> Dict[str, float]:
        """Sets the schedules of a 0-based epoch; returns the values for the history."""

    def step_for(self, epoch: int) -> StepFn:
        """The traced step of a 0-based epoch."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def make_strategy(devices: int = 0, kind: str = "mirrored") -> tf.distribute.Strategy:
    """The distribution strategy of ``runtime.devices`` and ``runtime.strategy``.

    Args:
        devices: Replicas wanted on this host; 0 = every GPU (or the default
            strategy on a CPU-only machine), 1 = the default strategy. Values > 1
            use that many GPUs, or logical CPUs when there are no GPUs.
        kind: ``mirrored`` (one host) or ``multi_worker``
            (`multi_worker_strategy`, several hosts from ``TF_CONFIG``).
    """
    if kind == "multi_worker":
        return multi_worker_strategy()
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


@functools.lru_cache(maxsize=None)
def multi_worker_strategy() -> tf.distribute.Strategy:
    """`tf.distribute.MultiWorkerMirroredStrategy` of the cluster in ``TF_CONFIG``.

    One per process (TensorFlow allows a single collective setup), shared by
    the jobs the process runs; create it before other TensorFlow work.

    Raises:
        ValueError: ``TF_CONFIG`` is missing or names no workers.
    """
    import json

    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "") or "{}").get("cluster", {})
    except ValueError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON: {err}") from None
    if not cluster.get("worker") and not cluster.get("chief"):
        raise ValueError("runtime.strategy=multi_worker needs TF_CONFIG with cluster.worker (the "
                         "host:port of every worker) and task {type: worker, index: i}; "
                         "or use runtime.strategy=mirrored on one machine")
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def worker_role(strategy: tf.distribute.Strategy) -> Optional[str]:
    """None on the chief (or without workers); ``worker-<i>`` on any other worker.

    The chief is the ``chief`` task or, without one, worker 0. Only the chief
    writes a job's files; the others keep their checkpoints in a folder of
    their own (``out_dir/.worker-<i>``), as every worker must save.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None
    spec = resolver.cluster_spec().as_dict()
    if resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                         and "chief" not in spec):
        return None
    return f"{resolver.task_type}-{resolver.task_id}"


def linear_ramp(epoch: int, epochs: int) -> float:
    """0 at the first (0-based) epoch, rising linearly to 1 at the last one."""
    return epoch / (epochs - 1) if epochs > 1 else 1.0


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
        target_std: Regression target scale, so ``rmse`` is in target units.
        events: TensorBoard log of the job (None = no event files).
        summary_fn: Job-specific summaries of a finished epoch's history record,
            written after the record's scalars.
    """

    name: str
    out_dir: str
    task: Task
    epochs: int
    steps_per_epoch: int
    checkpoint: tf.train.Checkpoint
    log_every: int = 50
    target_std: Optional[Sequence[float]] = None
    role: Optional[str] = None  # `worker_role`: None = the chief, which writes the files
    events: Optional[summaries.EventLog] = None
    summary_fn: Optional[SummaryFn] = None
    history: List[Dict[str, Any]] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        own = self.out_dir if self.role is None else os.path.join(self.out_dir, f".{self.role}")
        os.makedirs(own, exist_ok=True)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(own, contract.CHECKPOINT_DIR), max_to_keep=2)

    def restore(self) -> int:
        """Restores the chief's last checkpoint; returns the number of finished epochs.

        Every worker restores the chief's (so a restarted group agrees even if a
        worker's own save was lost).
        """
        path = tf.train.latest_checkpoint(os.path.join(self.out_dir, contract.CHECKPOINT_DIR))
        if not path:
            return 0
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as err:
            raise ValueError(
                f"{self.name}: the checkpoint {path} does not match this job's model (another "
                f"config or an earlier tfdarts version wrote it: {str(err).splitlines()[0][:200]}); "
                f"move {os.path.dirname(path)} away to start afresh") from None
        done = int(self.checkpoint.epoch.numpy())
        history_path = os.path.join(self.out_dir, contract.HISTORY_FILE)
        if os.path.exists(history_path):
            self.history = [r for r in fileio.read_json(history_path)["epochs"] if r["epoch"] <= done]
        log.info("%s: resuming from %s after epoch %d/%d", self.name, path, done, self.epochs)
        return done

    def run(self, start: int, dataset: Callable[[int], Any], job: "Job",
            end_epoch: Callable[[int, Dict[str, Any]], None], header: Dict[str, Any],
            should_stop: Optional[Callable[[List[Dict[str, Any]]], bool]] = None) -> List[Dict[str, Any]]:
        """Runs the remaining epochs.

        Args:
            start: Epochs already finished (from `restore`).
            dataset: Builds the distributed dataset of a 0-based epoch (one pass),
                from seeds derived from the epoch, so a resumed job sees the
                batches an uninterrupted one would.
            job: Gives each epoch's traced step and sets its schedules.
            end_epoch: Writes job-specific files for a finished 1-based epoch
                given its history record (may add keys to it).
            header: Extra keys of history.json besides ``epochs``.
            should_stop: Early stop: called with the history after each epoch
                (and once on resume); True ends the job there.

        Returns:
            The full history (one record per epoch).
        """
        started = time.time()
        self._open_events(start)
        if should_stop and self.history and should_stop(self.history):
            return self.history
        for epoch in range(start, self.epochs):
            t0, c0 = time.time(), time.process_time()
            lrs = job.begin_epoch(epoch)
            totals = self._run_epoch(dataset(epoch), job.step_for(epoch), epoch, started, start)
            record = {"epoch": epoch + 1, **self._record(totals), **lrs,
                      "seconds": time.time() - t0, "cpu_seconds": time.process_time() - c0}
            end_epoch(epoch + 1, record)
            self.history.append(record)
            stop = bool(should_stop and should_stop(self.history))
            if stop:
                record["early_stop"] = True
            if self.role is None:
                fileio.write_json(os.path.join(self.out_dir, contract.HISTORY_FILE),
                                  {**header, "epochs": self.history})
            self.checkpoint.epoch.assign(epoch + 1)
            self.manager.save()
            self._write_events(record)
            log.info("%s epoch %d/%d done in %.0fs: %s", self.name, epoch + 1, self.epochs,
                     record["seconds"], self._brief(record))
            if stop:
                log.info("%s: early stop after epoch %d/%d", self.name, epoch + 1, self.epochs)
                break
        return self.history

    def _open_events(self, start: int) -> None:
        """Opens the event log after `start` epochs and writes what a kill left out of it."""
        if self.events is None:
            return
        self.events.open(start)
        for record in self.history:
            self._write_events(record)

    def _write_events(self, record: Dict[str, Any]) -> None:
        """Writes one recorded epoch's summaries (pairs already on disk are skipped)."""
        if self.events is None:
            return
        step = int(record["epoch"])
        self.events.scalars(step, summaries.epoch_scalars(record, self.task.metric_name))
        if self.summary_fn is not None:
            self.summary_fn(self.events, record)
        self.events.flush()

    def _run_epoch(self, dataset, step: StepFn, epoch: int, started: float,
                   start_epoch: int) -> Dict[str, Dict[str, np.ndarray]]:
        totals: Dict[str, Dict[str, np.ndarray]] = {}
        for i, batch in enumerate(dataset):
            out = {g: {k: v.numpy() for k, v in stats.items()} for g, stats in step(batch).items()}
            self._check_finite(out, epoch, i)
            for group, stats in out.items():
                metrics.add_totals(totals.setdefault(group, {}), stats)
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
            for key, value in self._summarize(acc).items():
                record[f"{group}_{key}"] = value
            record[f"{group}_metric"] = record[f"{group}_{self.task.metric_name}"]
        return record

    def _summarize(self, totals: Dict[str, np.ndarray]) -> Dict[str, float]:
        return metrics.summarize(self.task, totals, self.target_std)

    def _brief(self, record: Dict[str, Any]) -> str:
        keys = [k for k in record if k.endswith("_loss") or k.endswith("_metric") or k.endswith("lr")]
        return ", ".join(f"{k} {record[k]:.4g}" for k in keys)

    def _progress(self, epoch: int, done: int, totals, started: float, start_epoch: int) -> None:
        steps_total = (self.epochs - start_epoch) * self.steps_per_epoch
        steps_done = (epoch - start_epoch) * self.steps_per_epoch + done
        rate = (time.time() - started) / max(steps_done, 1)
        brief = ", ".join(f"{g} loss {self._summarize(acc)['loss']:.4f}"
                          for g, acc in totals.items())
        log.info("%s epoch %d/%d step %d/%d: %s | %.2f s/step, %s left", self.name, epoch + 1,
                 self.epochs, done, self.steps_per_epoch, brief, rate,
                 format_duration(rate * (steps_total - steps_done)))


@dataclasses.dataclass(frozen=True)
class JobResult:
    """What a training job produced (files are in `out_dir`).

    Attributes:
        history: One record per epoch.
        out_dir: The job's folder.
        seconds: Training time summed over epochs.
        params: Trainable parameters (the supernet's weights, without alphas).
    """

    history: List[Dict[str, Any]]
    out_dir: str
    seconds: float
    params: int

    @property
    def cpu_seconds(self) -> float:
        """Processor time (all threads of this process) summed over epochs."""
        return history_cpu_seconds(self.history)


@dataclasses.dataclass(frozen=True)
class SearchResult(JobResult):
    """A finished search and the genotype its alphas select."""

    genotype: Genotype
    resumed_from: int = 0  # epochs restored from a checkpoint (0 = a fresh start)


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
                                       cfg.stem_multiplier, cfg.primitives, cfg.seed,
                                       partial_channels=cfg.partial_channels,
                                       aux_skip=cfg.aux_skip > 0, max_skips=cfg.max_skips,
                                       recompute_cells=cfg.recompute_cells)
            self.model.build_from_task()
            self.w_opt = steps.build_optimizer(
                keras.optimizers.SGD(cfg.w_lr, momentum=cfg.w_momentum), self.model.weight_variables)
            self.a_opt = steps.build_optimizer(
                keras.optimizers.Adam(cfg.alpha_lr, beta_1=cfg.alpha_beta1, beta_2=cfg.alpha_beta2,
                                      epsilon=1e-8), self.model.arch_variables)
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.w_rule = steps.UpdateRule(self.w_opt, self.model.weight_variables, cfg.grad_clip,
                                           cfg.w_weight_decay)
            self.architect = Architect(self.model, cfg.order, self.w_rule, regularise=cfg.beta_decay > 0)
        self.a_rule = steps.UpdateRule(self.a_opt, self.model.arch_variables, 0.0,
                                       cfg.alpha_weight_decay)
        self.step = distributed_step(strategy, self.replica_fn)
        self._warmup_step: Optional[StepFn] = None

    def replica_fn(self, train_batch: steps.Batch, val_batch: steps.Batch):
        """One search iteration on this replica: alpha step on val, then weight step on train."""
        val = steps.replica_step(self.model, self.a_rule, val_batch,
                                 self.architect.gradient_fn(train_batch))
        return {"train": self._weight_step(train_batch), "val": val}

    def warmup_replica_fn(self, train_batch: steps.Batch, val_batch: steps.Batch):
        """A warm-up iteration: the weight step only; the alphas are measured, not moved."""
        return {"train": self._weight_step(train_batch),
                "val": steps.forward_stats(self.model, val_batch)}

    def _weight_step(self, train_batch: steps.Batch) -> steps.Stats:
        return steps.replica_step(self.model, self.w_rule, train_batch,
                                  steps.plain_gradients(self.model, self.model.weight_variables))

    def step_for(self, epoch: int) -> StepFn:
        """The warm-up step during ``search.warmup_epochs``, the bilevel step after."""
        if epoch >= self.cfg.warmup_epochs:
            return self.step
        if self._warmup_step is None:
            self._warmup_step = distributed_step(self.strategy, self.warmup_replica_fn)
        return self._warmup_step

    def checkpoint(self) -> tf.train.Checkpoint:
        """Trackables saved each epoch.

        ``weights`` lists every model variable: the checkpoint graph does not
        reach layers held in lists (the cells), so without it their non-trainable
        state (batch-norm moving statistics) would not be saved.
        """
        return tf.train.Checkpoint(model=self.model, weights=list(self.model.weights),
                                   w_opt=self.w_opt, a_opt=self.a_opt, epoch=self.epoch)

    def alpha_lr(self, epoch: int) -> float:
        """The alphas' learning rate in a 0-based epoch: 0 while ``search.warmup_epochs`` last."""
        return 0.0 if epoch < self.cfg.warmup_epochs else float(self.cfg.alpha_lr)

    def begin_epoch(self, epoch: int) -> Dict[str, float]:
        """Cosine weight learning rate and the remedies' schedules for a 0-based epoch."""
        cfg = self.cfg
        lr = cosine_lr(epoch, cfg.epochs, cfg.w_lr, cfg.w_lr_min)
        self.w_opt.learning_rate.assign(lr)
        out = {"lr": lr}
        if cfg.aux_skip > 0:
            out["aux_skip"] = cfg.aux_skip * (1.0 - linear_ramp(epoch, cfg.epochs))
            self.model.set_aux_skip(out["aux_skip"])
        if cfg.beta_decay > 0:
            out["beta_decay"] = cfg.beta_decay * linear_ramp(epoch, cfg.epochs)
            self.architect.set_regularisation(out["beta_decay"])
        return out


class AlphaRecorder:
    """Keeps the per-epoch architecture weights and the current genotype on disk.

    `contract.ALPHAS_FILE` holds ``normal``/``reduce`` ``(E, edges, K)`` softmaxed
    alphas and, with edge normalisation, ``edge_normal``/``edge_reduce``
    ``(E, edges)``, plus ``primitives`` and ``nodes``.
    """

    SERIES = ("normal", "reduce", "edge_normal", "edge_reduce")

    def __init__(self, model: SearchNetwork, out_dir: str, write: bool = True) -> None:
        self.model, self.out_dir, self.write = model, out_dir, write
        self.series: Dict[str, List[np.ndarray]] = {}

    def resume(self, epochs_done: int) -> None:
        """Reloads the snapshots of finished epochs (drops any later ones)."""
        path = os.path.join(self.out_dir, contract.ALPHAS_FILE)
        if epochs_done and os.path.exists(path):
            with np.load(path) as f:
                self.series = {k: list(f[k][:epochs_done]) for k in self.SERIES if k in f.files}

    def __call__(self, epoch: int, record: Dict[str, Any]) -> None:
        probs = self.model.export_probs()
        for key in self.SERIES:
            if key in probs:
                self.series.setdefault(key, []).append(np.asarray(probs[key], np.float32))
        genotype = self.model.genotype()
        record["genotype"] = genotype.to_dict()
        if not self.write:
            return
        arrays = {k: np.stack(v) for k, v in self.series.items()}
        fileio.write_npz(os.path.join(self.out_dir, contract.ALPHAS_FILE), **arrays,
                         primitives=np.array(probs["primitives"]), nodes=np.array(self.model.nodes))
        fileio.write_json(os.path.join(self.out_dir, contract.GENOTYPE_FILE), genotype.to_dict())


def _eigen_hook(job: SearchJob, data: data_lib.PreparedData,
                strategy: tf.distribute.Strategy) -> Optional[Callable[[int, Dict[str, Any]], None]]:
    """Adds ``eigenvalue`` (dominant alpha-Hessian eigenvalue) to each epoch's record."""
    cfg = job.cfg
    if not cfg.eigen_batches:
        return None
    probe = data_lib.probe_dataset(data, cfg.batch_size, cfg.seed, cfg.eigen_batches)
    hessian = AlphaHessian(job.model, strategy, probe, cfg.eigen_iters)

    def hook(epoch: int, record: Dict[str, Any]) -> None:
        record["eigenvalue"] = hessian.eigenvalue(seed=cfg.seed)

    return hook


def _alpha_summaries(job: SearchJob, recorder: AlphaRecorder) -> SummaryFn:
    """The search's own summaries of a recorded epoch: alpha learning rate and alphas."""
    def write(events: summaries.EventLog, record: Dict[str, Any]) -> None:
        epoch = int(record["epoch"])
        events.scalars(epoch, {"lr/alphas": job.alpha_lr(epoch - 1)})
        probs = {k: v[epoch - 1] for k, v in recorder.series.items() if len(v) >= epoch}
        if "normal" in probs and "reduce" in probs:
            summaries.alpha_summaries(events, epoch, probs, job.model.primitives, job.model.nodes)

    return write


def _event_log(out_dir: str, role: Optional[str]) -> summaries.EventLog:
    """The job's TensorBoard log in ``out_dir/tensorboard``; only the chief writes it."""
    return summaries.EventLog(os.path.join(out_dir, contract.TENSORBOARD_DIR), enabled=role is None)


def _chain(hooks: Sequence[Optional[Callable[[int, Dict[str, Any]], None]]]):
    """One end-of-epoch hook calling `hooks` (None entries skipped) in order."""
    def hook(epoch: int, record: Dict[str, Any]) -> None:
        for h in hooks:
            if h is not None:
                h(epoch, record)

    return hook


def _early_stop(cfg: SearchConfig) -> Optional[Callable[[List[Dict[str, Any]]], bool]]:
    """The R-DARTS rule on the history's eigenvalue trace (``search.early_stop=eigen``)."""
    if cfg.early_stop != "eigen":
        return None
    return lambda history: rdarts_stop([r["eigenvalue"] for r in history], cfg.early_stop_window,
                                       cfg.early_stop_factor, cfg.early_stop_min_epoch)


def _steps_per_epoch(examples: int, batch: int, cap: int) -> int:
    steps_ = examples // batch
    return min(steps_, cap) if cap else steps_


def search(config: Config, data: data_lib.PreparedData, out_dir: str,
           strategy: Optional[tf.distribute.Strategy] = None) -> SearchResult:
    """Runs (or resumes) a DARTS search and writes its files to `out_dir`.

    Files: ``history.json`` (per-epoch losses, metrics, lr, genotype),
    ``alphas.npz`` (``normal``/``reduce`` softmaxed alphas ``(E, edges, K)``),
    ``genotype.json``, ``checkpoints/`` and ``tensorboard/`` (event files: per-epoch
    scalars and alphas, the derived cells at the end; see `tfdarts.summaries`).
    Progress lines go to the ``tfdarts`` logger (`tfdarts.progress.show_progress`).

    Args:
        config: Full config; uses ``config.search`` and ``config.runtime``.
        data: Prepared data (the search only sees its training split).
        out_dir: Output folder; an existing checkpoint there is resumed.
        strategy: Distribution strategy (default from ``config.runtime``). Under
            ``multi_worker`` only the chief writes `out_dir`'s files.

    Returns:
        The final genotype, history and timing.
    """
    show_progress()
    runtime.apply_threads(config.runtime)
    with runtime.graph_optimization(config.runtime):
        return _search(config, data, out_dir, strategy)


def _search(config: Config, data: data_lib.PreparedData, out_dir: str,
            strategy: Optional[tf.distribute.Strategy]) -> SearchResult:
    cfg = config.search
    strategy = strategy or make_strategy(config.runtime.devices, config.runtime.strategy)
    role = worker_role(strategy)
    job = SearchJob(cfg, data.spec.task, strategy)
    half = min(len(data.y_train) // 2, len(data.y_train) - len(data.y_train) // 2)
    n_steps = _steps_per_epoch(half, cfg.batch_size, cfg.steps_per_epoch)
    if n_steps == 0:
        raise ValueError(f"search.batch_size={cfg.batch_size} is larger than each search half "
                         f"({half} examples); lower it or use more data")

    def dist(epoch: int):
        train_ds, val_ds = data_lib.search_datasets(data, cfg.batch_size, cfg.seed, epoch)
        return strategy.experimental_distribute_dataset(tf.data.Dataset.zip((train_ds, val_ds)).take(n_steps))

    recorder = AlphaRecorder(job.model, out_dir, write=role is None)
    events = _event_log(out_dir, role)
    loop = EpochLoop("search", out_dir, job.task, cfg.epochs, n_steps, job.checkpoint(),
                     config.runtime.log_every, data.spec.target_std, role, events,
                     _alpha_summaries(job, recorder))
    header = {"dataset": data.spec.name, "task": job.task.to_dict(), "metric": job.task.metric_name,
              "fingerprint": data.spec.fingerprint, "order": cfg.order,
              "derivation": {"edge_normalisation": cfg.partial_channels > 1, "max_skips": cfg.max_skips}}
    with events:
        start = loop.restore()
        recorder.resume(start)
        hooks = [_eigen_hook(job, data, strategy), recorder]
        history = loop.run(start, dist, job, _chain(hooks), header, _early_stop(cfg))
        genotype = job.model.genotype()
        if history:
            summaries.cell_summaries(events, len(history), genotype)
    params = int(sum(np.prod(v.shape) for v in job.model.weight_variables))
    return SearchResult(history, out_dir, _seconds(history), params, genotype=genotype,
                        resumed_from=start)


@dataclasses.dataclass(frozen=True)
class RetrainResult(JobResult):
    """A finished retrain and its trained model."""

    model: TaskModel
    resumed_from: int = 0  # epochs restored from a checkpoint (0 = a fresh start)


class TrainJob:
    """A model, its SGD optimizer and the traced training step.

    Args:
        cfg: Retrain settings (lr schedule, momentum, decay, clip, seed).
        model_fn: Builds the `TaskModel`; called inside the strategy scope.
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
        return tf.train.Checkpoint(model=self.model, weights=list(self.model.weights),
                                   opt=self.opt, epoch=self.epoch)

    def step_for(self, epoch: int) -> StepFn:
        """The one traced training step."""
        return self.step

    def begin_epoch(self, epoch: int) -> Dict[str, float]:
        """Cosine learning rate and the model's epoch hook for a 0-based epoch."""
        lr = cosine_lr(epoch, self.cfg.epochs, self.cfg.lr, self.cfg.lr_min)
        self.opt.learning_rate.assign(lr)
        return {"lr": lr, **self.model.on_epoch_begin(epoch, self.cfg.epochs)}


class _TestCurve:
    """Epoch hook adding test-split metrics every `every` epochs (curves only)."""

    def __init__(self, model: keras.Model, data: data_lib.PreparedData, batch: int,
                 every: int, total: int) -> None:
        self.model, self.data, self.batch, self.every, self.total = model, data, batch, every, total

    def __call__(self, epoch: int, record: Dict[str, Any]) -> None:
        if self.every and (epoch % self.every == 0 or epoch == self.total):
            test = evaluation.evaluate(self.model, self.data, self.batch)
            record["test_loss"] = test["loss"]
            record["test_metric"] = test[self.data.spec.task.metric_name]


def retrain(config: Config, data: data_lib.PreparedData, model_fn: ModelFn, out_dir: str, *,
            name: str = "retrain", epochs: int = 0,
            strategy: Optional[tf.distribute.Strategy] = None) -> RetrainResult:
    """Trains a model from scratch on the full training split (resumable).

    Files: `contract.HISTORY_FILE` (per-epoch train loss/metric, lr, what the
    model's epoch hook set, and every ``retrain.eval_every`` epochs the test
    loss/metric for learning curves), `contract.MODEL_FILE`,
    `contract.GENOTYPE_FILE` (cell networks), `contract.CHECKPOINT_DIR` and
    `contract.TENSORBOARD_DIR` (per-epoch scalars; see `tfdarts.summaries`).
    Progress lines go to the ``tfdarts`` logger (`tfdarts.progress.show_progress`).

    Args:
        config: Full config; uses ``config.retrain`` and ``config.runtime``.
        data: Prepared data.
        model_fn: Builds the model, e.g. ``tfdarts.network.model_fn(task, genotype, cfg)``.
        out_dir: Output folder; an existing checkpoint there is resumed.
        name: Job name in logs.
        epochs: Overrides ``retrain.epochs`` when > 0 (short budgets).
        strategy: Distribution strategy (default from ``config.runtime``). Under
            ``multi_worker`` only the chief writes `out_dir`'s files.

    Returns:
        The trained model, its history and timing.
    """
    show_progress()
    runtime.apply_threads(config.runtime)
    with runtime.graph_optimization(config.runtime):
        return _retrain(config, data, model_fn, out_dir, name, epochs, strategy)


def _retrain(config: Config, data: data_lib.PreparedData, model_fn: ModelFn, out_dir: str,
             name: str, epochs: int, strategy: Optional[tf.distribute.Strategy]) -> RetrainResult:
    cfg = dataclasses.replace(config.retrain, epochs=epochs) if epochs else config.retrain
    strategy = strategy or make_strategy(config.runtime.devices, config.runtime.strategy)
    role = worker_role(strategy)
    job = TrainJob(cfg, model_fn, strategy)
    n_steps = _steps_per_epoch(len(data.y_train), cfg.batch_size, cfg.steps_per_epoch)

    def dist(epoch: int):
        dataset = data_lib.train_dataset(data, cfg.batch_size, cfg.seed, cfg.cutout, epoch)
        return strategy.experimental_distribute_dataset(dataset.take(n_steps))

    events = _event_log(out_dir, role)
    loop = EpochLoop(name, out_dir, data.spec.task, cfg.epochs, n_steps, job.checkpoint(),
                     config.runtime.log_every, data.spec.target_std, role, events)
    header = _retrain_header(data, job.model, out_dir, write=role is None)
    hook = _TestCurve(job.model, data, cfg.batch_size, cfg.eval_every, cfg.epochs)
    with events:
        start = loop.restore()
        history = loop.run(start, dist, job, hook, header)
    if role is None:
        export.save_model(job.model, os.path.join(out_dir, contract.MODEL_FILE))
    params = int(sum(np.prod(v.shape) for v in job.model.trainable_variables))
    return RetrainResult(history, out_dir, _seconds(history), params, model=job.model,
                         resumed_from=start)


def _seconds(history: List[Dict[str, Any]]) -> float:
    return float(sum(r["seconds"] for r in history))


def history_cpu_seconds(history: List[Dict[str, Any]]) -> float:
    """Processor seconds of `history`'s epochs: unlike wall seconds, nearly unchanged
    when other work shares the machine (histories without them count 0)."""
    return float(sum(r.get("cpu_seconds", 0.0) for r in history))


def _retrain_header(data: data_lib.PreparedData, model: TaskModel, out_dir: str,
                    write: bool = True) -> Dict[str, Any]:
    """Keys of the retrain history besides ``epochs``; writes the genotype file (if `write`)."""
    header = {"dataset": data.spec.name, "task": data.spec.task.to_dict(),
              "metric": data.spec.task.metric_name, "fingerprint": data.spec.fingerprint,
              "model": model.name}
    genotype = model.architecture()
    if genotype is not None:
        header["genotype"] = genotype.to_dict()
        if write:
            fileio.write_json(os.path.join(out_dir, contract.GENOTYPE_FILE), header["genotype"])
    return header
