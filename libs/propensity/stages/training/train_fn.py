"""The functions every training process runs: :func:`pretrain_fn` (MLM) and :func:`finetune_fn`.

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
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from propensity.core.config import TrainSettings
from propensity.core.schema import TASKS
from propensity.models.metrics import log_loss, roc_auc
from propensity.models.network import (
    FeatureStats,
    MaskedLMObjective,
    PropensityModel,
    distillation_loss,
    linear_schedule,
    load_model,
    mask_tokens,
    masked_bce,
    parameter_fingerprint,
    save_model,
)
from propensity.stages.training.loaders import Batch, DataSource

if TYPE_CHECKING:
    from transformers import BertForMaskedLM


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
    """Masked-language-model pretraining of a ``BertForMaskedLM``.

    :param bert_config: ``BertConfig.to_dict()`` of a new model (ignored with ``init_encoder``).
    :param init_encoder: Hugging Face folder to continue from (a previous ``encoder/`` or a local BERT).
    :param out_dir: rank 0 writes ``out_dir/encoder`` (``save_pretrained``) and ``out_dir/result.json``.
    """

    bert_config: dict[str, Any]
    train: TrainSettings
    data: DataSource
    out_dir: str
    special_ids: list[int]
    mask_id: int
    validation: DataSource | None = None
    init_encoder: str | None = None
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

    Rows have ``input_ids``, ``attention_mask`` (int arrays), ``features`` (raw, float array in
    ``feature_columns`` order), ``labels`` and ``label_mask`` (float arrays in task order).
    The weights start from exactly one of ``init_model`` (our model folder, continued: adapting to
    a target platform), ``init_encoder`` (a pretrained Hugging Face encoder, new heads) and
    ``bert_config`` (a new encoder with random weights).

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
    if ctx.world == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.local_rank] if ctx.use_gpu else None
    return DistributedDataParallel(module, device_ids=device_ids)


def _train_epochs(ctx: _Ctx, job: PretrainJob | FinetuneJob, model: torch.nn.Module, epochs: int,
                  params: list[dict[str, Any]], step_loss: Callable[[torch.nn.Module, Batch], torch.Tensor],
                  end_of_epoch: Callable[[int, float], None]) -> _Progress:
    """The shared loop: fixed steps per epoch over an endless shard, AdamW, warm-up + linear decay."""

    train = job.train
    steps = _steps_per_epoch(job.data.rows, train.batch_size, ctx.world)
    optimizer = torch.optim.AdamW(params)
    schedule = linear_schedule(optimizer, steps * epochs, train.warmup_fraction)
    trainable = [p for g in params for p in g["params"]]
    progress = _Progress(ctx, job.stage, epochs, steps, train.batch_size, train.log_every_steps)
    wrapped = _wrap(model, ctx)
    with job.data.loader(ctx.rank, ctx.world, train.batch_size, None, train.workers_count, train.seed) as dl:
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
            end_of_epoch(epoch, loss_sum / n)
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


def _masked_lm(job: PretrainJob) -> BertForMaskedLM:
    from transformers import BertConfig, BertForMaskedLM

    if job.init_encoder:
        mlm: BertForMaskedLM = BertForMaskedLM.from_pretrained(job.init_encoder)
        return mlm
    return BertForMaskedLM(BertConfig.from_dict(job.bert_config))


def _mlm_validation(ctx: _Ctx, job: PretrainJob, objective: MaskedLMObjective) -> dict[str, float]:
    """Masked-token loss and accuracy on the validation rows (same masks every epoch)."""

    if job.validation is None:
        return {}
    objective.eval()
    generator = torch.Generator().manual_seed(job.train.seed + 7919 * (ctx.rank + 1))
    loss_sum = correct = tokens = 0.0
    vocab = int(objective.mlm.config.vocab_size)
    with torch.no_grad(), job.validation.loader(ctx.rank, ctx.world, job.train.batch_size, 1,
                                                job.train.workers_count, shuffle=False) as dl:
        for batch in dl:
            masked, labels = mask_tokens(batch["input_ids"], batch["attention_mask"], job.special_ids, job.mask_id,
                                         vocab, job.train.mask_probability, generator)
            with ctx.autocast():
                loss, right = objective(masked.to(ctx.device), batch["attention_mask"].to(ctx.device),
                                        labels.to(ctx.device))
            n = float((labels != -100).sum())
            loss_sum, correct, tokens = loss_sum + float(loss) * n, correct + float(right), tokens + n
    loss_sum, correct, tokens = _global_sum(ctx, loss_sum, correct, tokens)
    return {"val_loss": loss_sum / max(tokens, 1.0), "val_masked_accuracy": correct / max(tokens, 1.0)}


def pretrain_fn(job: PretrainJob) -> dict[str, Any]:
    """Masked-language-model pretraining; rank 0 saves ``out_dir/encoder``. Returns rank 0's summary."""
    from transformers.utils import logging as hf_logging


    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    ctx = _init_process(job.train)
    try:
        torch.manual_seed(job.train.seed)
        objective = MaskedLMObjective(_masked_lm(job)).to(ctx.device)
        vocab = int(objective.mlm.config.vocab_size)
        generator = torch.Generator().manual_seed(job.train.seed + 1000 * ctx.rank)
        history: list[dict[str, float]] = []

        def step_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
            masked, labels = mask_tokens(batch["input_ids"], batch["attention_mask"], job.special_ids, job.mask_id,
                                         vocab, job.train.mask_probability, generator)
            with ctx.autocast():
                loss, _ = model(masked.to(ctx.device), batch["attention_mask"].to(ctx.device), labels.to(ctx.device))
            return loss

        def end_of_epoch(epoch: int, train_loss: float) -> None:
            metrics = {"train_loss": train_loss, **_mlm_validation(ctx, job, objective)}
            history.append({"epoch": epoch + 1, **metrics})
            if ctx.rank == 0:
                print(f"[{job.stage}] epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
                      flush=True)
                _log_metrics(job.mlflow, {f"{job.stage}_{k}": v for k, v in metrics.items()}, epoch + 1)

        params = _param_groups(objective.named_parameters(), job.train.learning_rate, job.train.weight_decay)
        progress = _train_epochs(ctx, job, objective, job.train.pretrain_epochs, params, step_loss, end_of_epoch)
        result: dict[str, Any] = {"stage": job.stage, "out_dir": job.out_dir, "history": history,
                                  "samples_per_s": progress.samples_per_second(), "world_size": ctx.world,
                                  "rows": job.data.rows, **_device_stats(ctx)}
        if ctx.rank == 0:
            out = Path(job.out_dir)
            objective.mlm.save_pretrained(str(out / ENCODER_DIR))
            (out / "result.json").write_text(json.dumps(result, indent=1))
        return dict(_broadcast(ctx, result))
    finally:
        _close(ctx)


# ----------------------------------------------------------------------------------------------- fine-tuning


def _propensity_model(job: FinetuneJob) -> Any:
    from transformers import BertConfig, BertModel


    if job.init_model:
        model = load_model(Path(job.init_model))
        if model.feature_columns != job.feature_columns:
            raise ValueError(f"init_model {job.init_model!r} was trained on other feature columns")
    else:
        encoder = (BertModel.from_pretrained(job.init_encoder, add_pooling_layer=False) if job.init_encoder
                   else None)
        config = encoder.config if encoder is not None else BertConfig.from_dict(job.bert_config)
        model = PropensityModel(config, job.feature_columns, job.head_hidden_size, encoder=encoder)
    model.normalizer.set_stats(FeatureStats(**job.feature_stats))
    if job.wide_init and not job.init_model:
        model.start_from_logistic(job.wide_init)
        model.freeze_wide()
    if job.transfer_mode == "head":
        model.freeze_encoder()
    return model


def predict_parts(model: torch.nn.Module, batches: Iterable[Batch], device: torch.device,
                  autocast: Callable[[], AbstractContextManager[Any]] = nullcontext) -> dict[str, np.ndarray]:
    """Wide and unscaled deep logits, labels and label masks ``(n, 3)`` of every batch (no gradients,
    eval mode); ``model`` is a :class:`~propensity.models.network.PropensityModel`."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {"wide": [], "deep": [], "labels": [], "label_mask": []}
    with torch.no_grad():
        for batch in batches:
            with autocast():
                wide, deep = model.forward_parts(*(batch[k].to(device)  # type: ignore[operator]
                                                   for k in ("input_ids", "attention_mask", "features")))
            parts["wide"].append(wide.float().cpu().numpy())
            parts["deep"].append(deep.float().cpu().numpy())
            parts["labels"].append(batch["labels"].numpy())
            parts["label_mask"].append(batch["label_mask"].numpy())
    return {k: np.concatenate(v) if v else np.zeros((0, 3), dtype=np.float32) for k, v in parts.items()}


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


def _finetune_validation(ctx: _Ctx, job: FinetuneJob, model: torch.nn.Module) -> tuple[dict[str, float],
                                                                                       dict[str, float]]:
    """Validation metrics with each task's ``deep_scale`` chosen on these rows, and those scales."""

    if job.validation is None:
        return {}, {}
    with job.validation.loader(ctx.rank, ctx.world, job.train.batch_size, 1, job.train.workers_count,
                               shuffle=False) as dl:
        part = predict_parts(model, dl, ctx.device, ctx.autocast)
    parts = _gather(ctx, part)
    merged = {k: np.concatenate([p[k] for p in parts]) for k in part}
    scales = choose_deep_scales(merged["wide"], merged["deep"], merged["labels"], merged["label_mask"])
    probs = 1.0 / (1.0 + np.exp(-(merged["wide"] + scales * merged["deep"])))
    chosen = {t: float(g) for t, g in zip(TASKS, scales, strict=True)}
    metrics = validation_metrics(probs, merged["labels"], merged["label_mask"])
    return {**metrics, **{f"val_deep_scale_{t}": g for t, g in chosen.items()}}, chosen


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
            ids, mask, feats, labels, known = _to(batch, ctx, "input_ids", "attention_mask", "features", "labels",
                                                  "label_mask")
            with ctx.autocast():
                logits = wrapped(ids, mask, feats)
            if job.distillation is not None:
                (teacher,) = _to(batch, ctx, "teacher_logits")
                return distillation_loss(logits, labels, known, teacher, job.distillation.alpha,
                                         job.distillation.temperature)
            return masked_bce(logits, labels, known)

        def end_of_epoch(epoch: int, train_loss: float) -> None:
            trained = {"train_loss": train_loss} if math.isfinite(train_loss) else {}
            validated, scales = _finetune_validation(ctx, job, model)
            metrics = {**trained, **validated}
            history.append({"epoch": epoch + 1, **metrics})
            if ctx.rank != 0:
                return
            print(f"[{job.stage}] epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
                  flush=True)
            _log_metrics(job.mlflow, {f"{job.stage}_{k}": v for k, v in metrics.items()}, epoch + 1)
            score = selection_score(metrics)
            if best["state"] is None or score < best["loss"]:
                best.update(epoch=epoch + 1, loss=score, state=copy.deepcopy(model.state_dict()), deep_scales=scales)

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
            save_model(model.cpu(), Path(job.out_dir) / MODEL_DIR,
                       {"best_epoch": best["epoch"], "deep_scales": best["deep_scales"],
                        "transfer_mode": job.transfer_mode, "encoder_source": job.encoder_source, **job.extra_meta})
            (Path(job.out_dir) / "result.json").write_text(json.dumps(result, indent=1))
        return dict(_broadcast(ctx, result))
    finally:
        _close(ctx)


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
