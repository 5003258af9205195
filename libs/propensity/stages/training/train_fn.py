"""The functions every training process runs: :func:`pretrain_fn` (MLM) and :func:`finetune_fn`
(:func:`finetune_series_fn`: several fine-tuning jobs, one after another, in one process group).

They are importable and self-contained: everything they need comes in one picklable job
(:class:`PretrainJob` / :class:`FinetuneJob`), they read rows through petastorm
(:class:`~propensity.stages.training.loaders.DataSource`) and they need no SparkSession. So they run

- under ``TorchDistributor`` (see :mod:`propensity.stages.training.distributed`), which starts
  them with ``torchrun``; and
- standalone, without Spark or Java, on a job written as JSON with Parquet paths::

      torchrun --nproc_per_node=8 -m propensity.stages.training.train_fn finetune job.json

  (plain ``python -m ...`` runs one process without ``torch.distributed``).

Inside: ``gloo`` on CPU, ``nccl`` + bf16 autocast on GPU, ``DistributedDataParallel`` when
there are several processes, every process reading its own shard for a fixed number of
steps per epoch (so no process waits for another at the end of an epoch). Rank 0 alone
prints progress lines, logs per-epoch metrics to MLflow and writes the output folder; the
result dict of rank 0 is returned by every rank.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from propensity.core.config import TrainSettings
from propensity.core.schema import TASKS
from propensity.core.sequence import SEQUENCE_COLUMN, TARGET_PLATFORM
from propensity.models.calibration import fit_calibration
from propensity.models.encoder import (
    EventEncoder,
    MaskedEventObjective,
    load_encoder,
    mask_events,
    new_encoder_from,
    positions_of,
    save_encoder,
    trim_padding,
)
from propensity.models.metrics import log_loss, roc_auc
from propensity.models.network import (
    FeatureStats,
    PropensityModel,
    distillation_loss,
    linear_schedule,
    load_model,
    masked_bce,
    parameter_fingerprint,
    save_model,
)
from propensity.stages.training.loaders import Batch, DataSource

#: Gradients are clipped to this global norm.
MAX_GRAD_NORM = 1.0
#: Candidate weights of a head's deep part, chosen per task on validation (0: the logistic regression alone).
DEEP_SCALES = tuple(i / 10 for i in range(11))
ENCODER_DIR = "encoder"
MODEL_DIR = "model"


@dataclass
class MlflowTarget:
    """Where rank 0 logs metrics: an existing MLflow run."""

    tracking_uri: str
    run_id: str
    prefix: str = ""


@dataclass
class PretrainJob:
    """Masked-event pretraining of an :class:`~propensity.models.encoder.EventEncoder`.

    Rows have ``event_ids`` (int arrays of the encoder's positions). Training stops when the validation
    loss has not improved by ``training.pretrain_min_delta`` for ``training.pretrain_patience`` epochs
    (or after ``training.pretrain_epochs``); the best epoch's encoder is kept.

    :param bert_config: ``BertConfig.to_dict()`` of a new encoder (ignored with ``init_encoder``).
    :param init_encoder: one of our encoder folders to continue from.
    :param init_checkpoint: a local Hugging Face BERT folder whose transformer layers start a new encoder.
    :param out_dir: rank 0 writes ``out_dir/encoder`` and ``out_dir/result.json``.
    """

    bert_config: dict[str, Any]
    train: TrainSettings
    data: DataSource
    out_dir: str
    validation: DataSource | None = None
    init_encoder: str | None = None
    init_checkpoint: str | None = None
    mlflow: MlflowTarget | None = None
    stage: str = "pretrain"


@dataclass
class Distillation:
    """Train on :func:`~propensity.models.network.distillation_loss` against the rows' ``teacher_logits``.

    :param alpha: weight of the hard-label loss; ``1 - alpha`` weighs the soft teacher loss.
    :param temperature: softening temperature of the teacher's logits.
    """

    alpha: float
    temperature: float


@dataclass
class FinetuneJob:
    """Fine-tuning of a :class:`~propensity.models.network.PropensityModel` on labelled rows.

    Rows have ``event_ids`` (int arrays of the model's positions), ``features`` (raw, float array in
    ``feature_columns`` order; empty for a sequence-only model), ``labels`` and ``label_mask``
    (float arrays in task order). The weights start from exactly one of ``init_model`` (our model
    folder, continued: adapting to a target platform), ``init_encoder`` (a pretrained encoder folder,
    new heads) and ``bert_config`` (a new encoder with random weights).

    :param wide_init: per task ``{"weight": [...], "bias": b}`` of a logistic regression on the normalised
        features: new heads start as that regression and keep it (ignored with ``init_model``).
    :param out_dir: rank 0 writes ``out_dir/model`` (weights of the best validation epoch).
    :param distillation: train on the distillation loss against the data's ``teacher_logits``.
    """

    feature_columns: list[str]
    feature_stats: dict[str, Any]
    head_hidden_size: int
    train: TrainSettings
    data: DataSource
    out_dir: str
    epochs: int
    transfer_mode: str = "full"
    validation: DataSource | None = None
    bert_config: dict[str, Any] = field(default_factory=dict)
    init_encoder: str | None = None
    init_model: str | None = None
    mlflow: MlflowTarget | None = None
    stage: str = "finetune"
    extra_meta: dict[str, Any] = field(default_factory=dict)
    wide_init: dict[str, dict[str, Any]] | None = None
    distillation: Distillation | None = None

    def __post_init__(self) -> None:
        starts = [bool(self.init_model), bool(self.init_encoder), bool(self.bert_config)]
        if sum(starts) != 1:
            raise ValueError("FinetuneJob needs exactly one of init_model, init_encoder and bert_config")

    @property
    def encoder_source(self) -> str:
        """Where the weights came from, for the saved model's metadata."""
        return self.init_encoder or self.init_model or "random"


@dataclass
class _Ctx:
    """This process's place in the process group."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    use_gpu: bool
    owns_group: bool

    def autocast(self) -> AbstractContextManager[Any]:
        """bf16 autocast on GPU, nothing on CPU."""
        if self.use_gpu:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()


def _init_process(train: TrainSettings) -> _Ctx:
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if train.use_gpu:
        if not torch.cuda.is_available():
            raise RuntimeError("training.use_gpu is true but this process sees no CUDA device;"
                               " set training.use_gpu=false or run on a GPU machine")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(train.threads_per_process or max(1, (os.cpu_count() or 1) // max(1, local_world)))
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if train.use_gpu else "gloo")
        owns = True
    return _Ctx(rank, world, local_rank, device, train.use_gpu, owns)


def _close(ctx: _Ctx) -> None:
    import torch.distributed as dist

    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def _broadcast(ctx: _Ctx, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if ctx.world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather(ctx: _Ctx, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (on every rank)."""
    if ctx.world == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def _global_sum(ctx: _Ctx, *values: float) -> list[float]:
    """Sums of ``values`` over all ranks."""
    t = torch.tensor(values, dtype=torch.float64)
    if ctx.world > 1:
        import torch.distributed as dist

        t = t.to(ctx.device)
        dist.all_reduce(t)
    return [float(v) for v in t.cpu()]


class _Progress:
    """Prints ``[stage] epoch e/E step s/S loss L  N samples/s`` every ``every`` steps (rank 0)."""

    def __init__(self, ctx: _Ctx, stage: str, epochs: int, steps: int, batch_size: int, every: int) -> None:
        self.ctx, self.stage, self.epochs, self.steps, self.every = ctx, stage, epochs, steps, every
        self.samples_per_step = batch_size * ctx.world
        self.start = self.mark = time.perf_counter()
        self.loss_sum, self.loss_n, self.total_steps = 0.0, 0, 0
        self.train_seconds = 0.0

    def update(self, epoch: int, step: int, loss: float) -> None:
        """Record one step's loss; print a line every ``every`` steps and at the end of an epoch."""
        self.loss_sum += loss
        self.loss_n += 1
        self.total_steps += 1
        if (step + 1) % self.every and step + 1 != self.steps:
            return
        now = time.perf_counter()
        rate = self.loss_n * self.samples_per_step / max(now - self.mark, 1e-9)
        if self.ctx.rank == 0:
            print(f"[{self.stage}] epoch {epoch + 1}/{self.epochs} step {step + 1}/{self.steps}"
                  f" loss {self.loss_sum / self.loss_n:.4f} {rate:,.0f} samples/s", flush=True)
        self.mark, self.loss_sum, self.loss_n = now, 0.0, 0

    def samples_per_second(self) -> float:
        """Training samples per second of all processes together (time spent in training steps only)."""
        return self.total_steps * self.samples_per_step / max(self.train_seconds, 1e-9)


@functools.lru_cache(maxsize=2)
def _mlflow_client(tracking_uri: str) -> Any:
    """One client per process: opening a database-backed store is slow."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _log_metrics(target: MlflowTarget | None, metrics: dict[str, float], step: int) -> None:
    if target is None:
        return
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(target.prefix + k, float(v), now, step) for k, v in metrics.items() if math.isfinite(v)]
    _mlflow_client(target.tracking_uri).log_batch(target.run_id, metrics=batch)


def _param_groups(named: Iterable[tuple[str, torch.nn.Parameter]], lr: float, weight_decay: float
                  ) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases and LayerNorm weights."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in named:
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    groups = [{"params": decay, "lr": lr, "weight_decay": weight_decay},
              {"params": no_decay, "lr": lr, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _steps_per_epoch(rows: int, batch_size: int, world: int) -> int:
    return max(1, math.ceil(rows / (batch_size * world)))


def _wrap(module: torch.nn.Module, ctx: _Ctx) -> torch.nn.Module:
    """DDP over the processes; every trainable parameter takes part in each step (no unused-parameter search)."""
    if ctx.world == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.local_rank] if ctx.use_gpu else None
    return DistributedDataParallel(module, device_ids=device_ids)


def _train_epochs(ctx: _Ctx, job: PretrainJob | FinetuneJob, model: torch.nn.Module, epochs: int,
                  params: list[dict[str, Any]], step_loss: Callable[[torch.nn.Module, Batch], torch.Tensor],
                  end_of_epoch: Callable[[int, float], bool]) -> _Progress:
    """The shared loop: fixed steps per epoch over an endless shard, AdamW, warm-up + linear decay.

    ``end_of_epoch`` returns True to stop early; it must decide the same on every rank (from global sums).
    """

    train = job.train
    steps = _steps_per_epoch(job.data.rows, train.batch_size, ctx.world)
    optimizer = torch.optim.AdamW(params)
    schedule = linear_schedule(optimizer, steps * epochs, train.warmup_fraction)
    trainable = [p for g in params for p in g["params"]]
    progress = _Progress(ctx, job.stage, epochs, steps, train.batch_size, train.log_every_steps)
    wrapped = _wrap(model, ctx)
    with job.data.loader(ctx.rank, ctx.world, train.batch_size, None, train.workers_count, train.seed,
                         group_by_length=train.group_by_length) as dl:
        batches = iter(dl)
        for epoch in range(epochs):
            wrapped.train()
            total = 0.0
            epoch_start = progress.mark = time.perf_counter()
            for step in range(steps):
                loss = step_loss(wrapped, next(batches))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
                optimizer.step()
                schedule.step()
                total += float(loss.detach())
                progress.update(epoch, step, float(loss.detach()))
            progress.train_seconds += time.perf_counter() - epoch_start
            loss_sum, n = _global_sum(ctx, total, steps)
            if end_of_epoch(epoch, loss_sum / n):
                break
    return progress


def _device_stats(ctx: _Ctx) -> dict[str, Any]:
    """Peak GPU memory of this process (GPU runs), for the summary."""
    if not ctx.use_gpu:
        return {"device": "cpu", "threads": torch.get_num_threads()}
    return {"device": torch.cuda.get_device_name(ctx.device),
            "gpu_max_memory_gib": torch.cuda.max_memory_allocated(ctx.device) / 2**30}


def _to(batch: Batch, ctx: _Ctx, *keys: str) -> list[torch.Tensor]:
    return [batch[k].to(ctx.device, non_blocking=True) for k in keys]


# ----------------------------------------------------------------------------------------------- pretraining


def _event_encoder(job: PretrainJob) -> EventEncoder:
    from transformers import BertConfig

    if job.init_encoder:
        return load_encoder(Path(job.init_encoder))
    if job.init_checkpoint:
        return new_encoder_from(BertConfig.from_dict(job.bert_config), Path(job.init_checkpoint))
    return EventEncoder(BertConfig.from_dict(job.bert_config))


def _mask_validation(ctx: _Ctx, job: PretrainJob, objective: MaskedEventObjective) -> dict[str, float]:
    """Masked-event loss and item accuracy on the validation rows (the same masks every epoch)."""
    if job.validation is None:
        return {}
    objective.eval()
    generator = torch.Generator().manual_seed(job.train.seed + 7919 * (ctx.rank + 1))
    loss_sum = correct = items = batches = 0.0
    with torch.no_grad(), job.validation.loader(ctx.rank, ctx.world, job.train.batch_size, 1,
                                                job.train.workers_count, shuffle=False,
                                                group_by_length=job.train.group_by_length) as dl:
        for batch in dl:
            ids = trim_padding(positions_of(batch[SEQUENCE_COLUMN]))
            masked = mask_events(ids, job.train.mask_probability, generator).masked
            with ctx.autocast():
                loss, right, known = objective(ids.to(ctx.device), masked.to(ctx.device))
            loss_sum, batches = loss_sum + float(loss), batches + 1
            correct, items = correct + float(right), items + float(known)
    loss_sum, batches, correct, items = _global_sum(ctx, loss_sum, batches, correct, items)
    return {"val_loss": loss_sum / max(batches, 1.0), "val_masked_item_accuracy": correct / max(items, 1.0)}


def flattened(history: list[dict[str, float]], patience: int, min_delta: float) -> bool:
    """Whether the validation loss has not improved by ``min_delta`` in the last ``patience`` epochs."""
    losses = [h["val_loss"] for h in history if "val_loss" in h]
    if len(losses) <= patience:
        return False
    return min(losses[-patience:]) > min(losses[:-patience]) - min_delta


def pretrain_fn(job: PretrainJob) -> dict[str, Any]:
    """Masked-event pretraining until the validation loss flattens; rank 0 saves the best epoch's encoder
    to ``out_dir/encoder``. Returns rank 0's summary."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    ctx = _init_process(job.train)
    try:
        torch.manual_seed(job.train.seed)
        objective = MaskedEventObjective(_event_encoder(job), job.train.pretrain_sampled_classes).to(ctx.device)
        generator = torch.Generator().manual_seed(job.train.seed + 1000 * ctx.rank)
        history: list[dict[str, float]] = []
        best: dict[str, Any] = {"epoch": 0, "loss": math.inf, "state": None}

        def step_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
            ids = trim_padding(positions_of(batch[SEQUENCE_COLUMN]))
            masked = mask_events(ids, job.train.mask_probability, generator).masked
            with ctx.autocast():
                loss, _, _ = model(ids.to(ctx.device), masked.to(ctx.device))
            return loss

        def end_of_epoch(epoch: int, train_loss: float) -> bool:
            metrics = {"train_loss": train_loss, **_mask_validation(ctx, job, objective)}
            history.append({"epoch": epoch + 1, **metrics})
            score = metrics.get("val_loss", train_loss)
            if score < best["loss"]:
                best.update(epoch=epoch + 1, loss=score, state=copy.deepcopy(objective.encoder.state_dict()))
            if ctx.rank == 0:
                print(f"[{job.stage}] epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
                      flush=True)
                _log_metrics(job.mlflow, {f"{job.stage}_{k}": v for k, v in metrics.items()}, epoch + 1)
            return flattened(history, job.train.pretrain_patience, job.train.pretrain_min_delta)

        params = _param_groups(objective.named_parameters(), job.train.learning_rate, job.train.weight_decay)
        progress = _train_epochs(ctx, job, objective, job.train.pretrain_epochs, params, step_loss, end_of_epoch)
        result: dict[str, Any] = {"stage": job.stage, "out_dir": job.out_dir, "history": history,
                                  "best_epoch": best["epoch"], "epochs_run": len(history),
                                  "samples_per_s": progress.samples_per_second(), "world_size": ctx.world,
                                  "rows": job.data.rows, **_device_stats(ctx)}
        if ctx.rank == 0:
            objective.encoder.load_state_dict(best["state"])
            save_encoder(objective.encoder.cpu(), Path(job.out_dir) / ENCODER_DIR)
            (Path(job.out_dir) / "result.json").write_text(json.dumps(result, indent=1))
        return dict(_broadcast(ctx, result))
    finally:
        _close(ctx)


# ----------------------------------------------------------------------------------------------- fine-tuning


def _propensity_model(job: FinetuneJob) -> PropensityModel:
    from transformers import BertConfig

    if job.init_model:
        model = load_model(Path(job.init_model))
        if model.feature_columns != job.feature_columns:
            raise ValueError(f"init_model {job.init_model!r} was trained on other feature columns")
    else:
        encoder = (load_encoder(Path(job.init_encoder)) if job.init_encoder
                   else EventEncoder(BertConfig.from_dict(job.bert_config)))
        model = PropensityModel(encoder, job.feature_columns, job.head_hidden_size)
    model.normalizer.set_stats(FeatureStats(**job.feature_stats))
    # the mask vector is read only by pretraining's masked positions: fine-tuning would leave it without a gradient
    model.encoder.embedding.mask.requires_grad_(False)
    if job.wide_init and not job.init_model:
        model.start_from_logistic(job.wide_init)
        model.freeze_wide()
    if job.transfer_mode == "head":
        model.freeze_encoder()
    return model


def predict_parts(model: torch.nn.Module, batches: Iterable[Batch], device: torch.device,
                  autocast: Callable[[], AbstractContextManager[Any]] = nullcontext) -> dict[str, np.ndarray]:
    """Wide and unscaled deep logits, labels and label masks ``(n, 3)``, and the target platform ids ``(n,)``
    of every batch (no gradients, eval mode); ``model`` is a :class:`~propensity.models.network.PropensityModel`."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {"wide": [], "deep": [], "labels": [], "label_mask": [], "platform": []}
    with torch.no_grad():
        for batch in batches:
            with autocast():
                wide, deep = model.forward_parts(batch[SEQUENCE_COLUMN].to(device),  # type: ignore[operator]
                                                 batch["features"].to(device))
            parts["wide"].append(wide.float().cpu().numpy())
            parts["deep"].append(deep.float().cpu().numpy())
            parts["labels"].append(batch["labels"].numpy())
            parts["label_mask"].append(batch["label_mask"].numpy())
            parts["platform"].append(batch[SEQUENCE_COLUMN][:, TARGET_PLATFORM].numpy())
    empty = {"platform": np.zeros(0, dtype=np.int64)}
    return {k: np.concatenate(v) if v else empty.get(k, np.zeros((0, 3), dtype=np.float32)) for k, v in parts.items()}


def choose_deep_scales(wide: np.ndarray, deep: np.ndarray, labels: np.ndarray, label_mask: np.ndarray
                       ) -> np.ndarray:
    """Per task, the ``deep_scale`` in :data:`DEEP_SCALES` whose logits ``wide + scale * deep`` have the
    best AUC on these (validation) rows; ties go to the larger scale, a task without an AUC keeps 1."""

    scales = np.ones(wide.shape[1])
    for i in range(wide.shape[1]):
        rows = label_mask[:, i] > 0
        best = -math.inf
        for scale in sorted(DEEP_SCALES, reverse=True):
            auc = roc_auc(labels[rows, i], wide[rows, i] + scale * deep[rows, i])
            if math.isfinite(auc) and auc > best + 1e-12:
                best, scales[i] = auc, scale
    return scales


def validation_metrics(probs: np.ndarray, labels: np.ndarray, label_mask: np.ndarray) -> dict[str, float]:
    """Masked log loss over all tasks and AUC per task (NaN where a task has one class only)."""

    known = label_mask > 0
    metrics = {"val_loss": log_loss(labels[known], probs[known]) if known.any() else float("nan")}
    for i, task in enumerate(TASKS):
        rows = known[:, i]
        metrics[f"val_auc_{task}"] = roc_auc(labels[rows, i], probs[rows, i])
    return metrics


def selection_score(metrics: dict[str, float]) -> float:
    """Lower is better: minus the mean validation AUC of the tasks that have one, else the (validation) loss."""
    aucs = [v for k, v in metrics.items() if k.startswith("val_auc_") and math.isfinite(v)]
    if aucs:
        return -float(np.mean(aucs))
    return metrics.get("val_loss", metrics.get("train_loss", math.inf))


def _finetune_validation(ctx: _Ctx, job: FinetuneJob, model: torch.nn.Module
                         ) -> tuple[dict[str, float], dict[str, float], dict[str, np.ndarray]]:
    """Validation metrics with each task's ``deep_scale`` chosen on these rows, those scales, and the rows'
    logits, labels, label masks and platform ids (for calibration)."""
    if job.validation is None:
        return {}, {}, {}
    with job.validation.loader(ctx.rank, ctx.world, job.train.batch_size, 1, job.train.workers_count,
                               shuffle=False, group_by_length=job.train.group_by_length) as dl:
        part = predict_parts(model, dl, ctx.device, ctx.autocast)
    parts = _gather(ctx, part)
    merged = {k: np.concatenate([p[k] for p in parts]) for k in part}
    scales = choose_deep_scales(merged["wide"], merged["deep"], merged["labels"], merged["label_mask"])
    logits = merged["wide"] + scales * merged["deep"]
    probs = 1.0 / (1.0 + np.exp(-logits))
    chosen = {t: float(g) for t, g in zip(TASKS, scales, strict=True)}
    metrics = validation_metrics(probs, merged["labels"], merged["label_mask"])
    rows = {"logits": logits, "labels": merged["labels"], "label_mask": merged["label_mask"],
            "platform": merged["platform"]}
    return {**metrics, **{f"val_deep_scale_{t}": g for t, g in chosen.items()}}, chosen, rows


def _finetune_params(model: Any, train: TrainSettings) -> list[dict[str, Any]]:
    heads = [(n, p) for n, p in model.named_parameters() if not n.startswith("encoder.")]
    groups = _param_groups(heads, train.head_learning_rate, train.weight_decay)
    if not model.encoder_frozen:
        groups += _param_groups(model.encoder.named_parameters(), train.learning_rate, train.weight_decay)
    return groups


def finetune_fn(job: FinetuneJob) -> dict[str, Any]:
    """Fine-tune on labelled rows; rank 0 keeps the epoch with the best mean validation AUC (the starting
    point, "epoch 0", included), each task's deep part weighted by the ``deep_scale`` chosen on validation
    (:func:`choose_deep_scales`), and saves ``out_dir/model``. Heads that start from ``wide_init`` keep
    that logistic regression fixed. Returns rank 0's summary."""
    from transformers.utils import logging as hf_logging


    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    ctx = _init_process(job.train)
    try:
        torch.manual_seed(job.train.seed)
        model = _propensity_model(job).to(ctx.device)
        before = parameter_fingerprint(model.encoder)
        history: list[dict[str, float]] = []
        best: dict[str, Any] = {"epoch": 0, "loss": math.inf, "state": None, "deep_scales": {}}

        def step_loss(wrapped: torch.nn.Module, batch: Batch) -> torch.Tensor:
            ids, feats, labels, known = _to(batch, ctx, SEQUENCE_COLUMN, "features", "labels", "label_mask")
            with ctx.autocast():
                logits = wrapped(ids, feats)
            if job.distillation is not None:
                (teacher,) = _to(batch, ctx, "teacher_logits")
                return distillation_loss(logits, labels, known, teacher, job.distillation.alpha,
                                         job.distillation.temperature)
            return masked_bce(logits, labels, known)

        def end_of_epoch(epoch: int, train_loss: float) -> bool:
            trained = {"train_loss": train_loss} if math.isfinite(train_loss) else {}
            validated, scales, rows = _finetune_validation(ctx, job, model)
            metrics = {**trained, **validated}
            history.append({"epoch": epoch + 1, **metrics})
            if ctx.rank != 0:
                return False
            print(f"[{job.stage}] epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
                  flush=True)
            _log_metrics(job.mlflow, {f"{job.stage}_{k}": v for k, v in metrics.items()}, epoch + 1)
            score = selection_score(metrics)
            if best["state"] is None or score < best["loss"]:
                best.update(epoch=epoch + 1, loss=score, state=copy.deepcopy(model.state_dict()), deep_scales=scales,
                            validation=rows)
            return False

        if job.validation is not None:
            end_of_epoch(-1, math.nan)  # "epoch 0": the starting point is a candidate too
        progress = _train_epochs(ctx, job, model, job.epochs, _finetune_params(model, job.train), step_loss,
                                 end_of_epoch)
        if job.transfer_mode == "head" and parameter_fingerprint(model.encoder) != before:
            raise RuntimeError("transfer_mode 'head' changed the frozen encoder's weights")
        result: dict[str, Any] = {"stage": job.stage, "out_dir": job.out_dir, "history": history,
                                  "best_epoch": best["epoch"], "samples_per_s": progress.samples_per_second(),
                                  "world_size": ctx.world, "rows": job.data.rows,
                                  "encoder_fingerprint_before": before, **_device_stats(ctx)}
        result["deep_scales"] = best["deep_scales"]
        if ctx.rank == 0:
            model.load_state_dict(best["state"])
            model.set_deep_scales(best["deep_scales"])
            result["encoder_fingerprint_after"] = parameter_fingerprint(model.encoder)
            model_dir = save_model(model.cpu(), Path(job.out_dir) / MODEL_DIR,
                                   {"best_epoch": best["epoch"], "deep_scales": best["deep_scales"],
                                    "transfer_mode": job.transfer_mode, "encoder_source": job.encoder_source,
                                    **job.extra_meta})
            result["calibration"] = _calibrate(best.get("validation"), model_dir)
            (Path(job.out_dir) / "result.json").write_text(json.dumps(result, indent=1))
        return dict(_broadcast(ctx, result))
    finally:
        _close(ctx)


def finetune_series_fn(jobs: list[FinetuneJob]) -> dict[str, Any]:
    """:func:`finetune_fn` on each of ``jobs`` in turn, in one process group: the processes start and import
    once for the whole series (on CPU that start costs about as much as a small run's training). Returns
    ``{"results": [...]}``, each job's summary in order."""
    if not jobs:
        raise ValueError("finetune_series_fn needs at least one job")
    ctx = _init_process(jobs[0].train)
    try:
        return {"results": [finetune_fn(job) for job in jobs]}
    finally:
        _close(ctx)


def _calibrate(rows: dict[str, np.ndarray] | None, model_dir: Path) -> dict[str, Any]:
    """Fit the kept epoch's calibration on its validation rows and save it with the model (none without
    validation rows); returns each task's slope and shared intercept."""
    if not rows:
        return {}
    calibration = fit_calibration(rows["logits"], rows["labels"], rows["label_mask"], rows["platform"])
    calibration.save(model_dir)
    return {t: {"slope": c.slope, "intercept": c.intercept} for t, c in calibration.tasks.items()}


# ----------------------------------------------------------------------------------------------- standalone


def job_to_json(job: PretrainJob | FinetuneJob) -> str:
    """A job as JSON (for standalone runs); its data sources must be Parquet paths, not converters."""
    for source in (job.data, job.validation):
        if source is not None and source.converter is not None:
            raise ValueError("job_to_json: a DataSource with a petastorm converter cannot be written as JSON;"
                             " give parquet_url instead")
    return json.dumps({"kind": "pretrain" if isinstance(job, PretrainJob) else "finetune",
                       **dataclasses.asdict(job)}, indent=1)


def job_from_json(text: str) -> PretrainJob | FinetuneJob:
    """A job written by :func:`job_to_json`."""
    data = json.loads(text)
    kind = data.pop("kind", None)
    if kind not in ("pretrain", "finetune"):
        raise ValueError(f"job kind {kind!r} is unknown; expected 'pretrain' or 'finetune'")
    data["train"] = TrainSettings(**data["train"])
    for key in ("data", "validation"):
        if data.get(key) is not None:
            data[key] = DataSource(**{k: v for k, v in data[key].items() if k != "converter"})
    if data.get("mlflow") is not None:
        data["mlflow"] = MlflowTarget(**data["mlflow"])
    if data.get("distillation") is not None:
        data["distillation"] = Distillation(**data["distillation"])
    return PretrainJob(**data) if kind == "pretrain" else FinetuneJob(**data)


def main(argv: list[str] | None = None) -> int:
    """``python -m propensity.stages.training.train_fn {pretrain,finetune} JOB.json`` (also under ``torchrun``)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("pretrain", "finetune"):
        print("usage: python -m propensity.stages.training.train_fn {pretrain,finetune} JOB.json", file=sys.stderr)
        return 2
    job = job_from_json(Path(args[1]).read_text())
    if (args[0] == "pretrain") != isinstance(job, PretrainJob):
        print(f"{args[1]} is not a {args[0]} job", file=sys.stderr)
        return 2
    fn: Callable[[Any], dict[str, Any]] = pretrain_fn if args[0] == "pretrain" else finetune_fn
    result = fn(job)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in result.items() if k != "history"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
