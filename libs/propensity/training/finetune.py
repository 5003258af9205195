"""``propensity finetune``: the teacher's three heads (and, in ``full`` mode, its encoder) on labels.

Rows: labelled ``training_examples`` of the plan's train snapshots on the source platforms
(``training.source_platforms``; empty: every platform but the target), a seeded sample of
``training.max_train_rows``; the validation snapshot scores each epoch and picks the best
one. With ``training.target_platform`` a second step adapts the model to that platform's
labels (``training.target_label_fraction`` of them), in the same transfer mode.

The encoder starts from the newest ``propensity pretrain`` output (or
``training.init_checkpoint``). Feature normalisation statistics come from the train rows
and are saved with the model. Each new head starts as a logistic regression on the
normalised features, fitted here on all labelled train rows (up to ``LOGISTIC_START_ROWS``)
with its L2 strength chosen per task on validation log loss, and kept fixed: the deep part
(output starting at zero) learns what the regression leaves.
After each epoch every task's deep part gets a weight in [0, 1] chosen on validation, and
the starting point competes with every epoch for "best on validation", so the model starts
from, and keeps at least on validation, what the features alone give.
The result is logged as a pyfunc model and registered as ``propensity_teacher`` (a new
version each run).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from propensity.config import Config
from propensity.errors import PropensityError
from propensity.training import data, mlflow_utils
from propensity.training.model import TASKS, FeatureStats
from propensity.training.pretrain import (
    TOKENIZER_DIR,
    Pretrained,
    check_positions,
    latest_pretrained,
    resolve_checkpoint,
)
from propensity.training.pyfunc import input_example, log_pyfunc_model
from propensity.training.settings import ModelSettings, TrainSettings
from propensity.training.train_fn import ENCODER_DIR, MODEL_DIR, FinetuneJob, MlflowTarget, finetune_fn

if TYPE_CHECKING:
    from propensity.features import SnapshotPlan

log = logging.getLogger(__name__)

STATS_FILE = "feature_stats.json"
#: Rows sampled for the logistic regressions new heads start from.
LOGISTIC_START_ROWS = 200_000
#: Inverse L2 strengths (scikit-learn's C) tried for those regressions, per task, on validation log loss.
LOGISTIC_C_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)


@dataclass
class FinetuneOutcome:
    """One fine-tuning step: the saved model folder, its statistics and the train function's summary."""

    model_dir: Path
    stats_path: Path
    result: dict[str, Any]
    #: per task, the C of the logistic regression the head started from (empty: continued from a model)
    wide_c: dict[str, float] = field(default_factory=dict)


def find_pretrained(cfg: Config, train: TrainSettings, max_length: int) -> Pretrained:
    """The newest pretraining output, else ``training.init_checkpoint``.

    :raises PropensityError: neither exists.
    :raises ConfigError: the encoder has fewer positions than ``max_length``.
    """
    latest = latest_pretrained(cfg)
    if latest is not None:
        check_positions(latest / ENCODER_DIR, max_length, f"the pretrained encoder in {latest}")
        return Pretrained(latest / ENCODER_DIR, latest / TOKENIZER_DIR)
    if train.init_checkpoint:
        return resolve_checkpoint(train.init_checkpoint, max_length)
    raise PropensityError(f"no pretrained teacher encoder under {cfg.root / 'checkpoints'};"
                          " run `propensity pretrain` first or set training.init_checkpoint")


def new_encoder_config(model: ModelSettings, tokenizer_dir: Path) -> dict[str, Any]:
    """The ``BertConfig`` (as a dict) of a new encoder of ``model``'s size over the tokenizer's vocabulary."""
    from propensity.tokenizer import load_tokenizer
    from propensity.training.model import bert_config

    tok = load_tokenizer(tokenizer_dir)
    config = bert_config(len(tok), model.hidden_size, model.num_layers, model.num_heads, model.intermediate_size,
                         model.max_length, model.dropout, pad_token_id=int(tok.pad_token_id))
    return dict(config.to_dict())


def labelled(df: DataFrame) -> DataFrame:
    """Rows with at least one known label."""
    return df.where(F.coalesce(*[F.col(c) for c in data.LABEL_COLUMNS]).isNotNull())


def _normalised(frame: pd.DataFrame, stats: FeatureStats) -> Any:
    import torch

    from propensity.training.model import FeatureNormalizer

    normalizer = FeatureNormalizer(len(stats.columns))
    normalizer.set_stats(stats)
    with torch.no_grad():
        return normalizer(torch.tensor(frame[stats.columns].to_numpy(dtype="float32", na_value=float("nan"))))


def _known(frame: pd.DataFrame, label: str) -> tuple[Any, Any] | None:
    """Row mask and labels (float64 tensor) of ``label`` where known; None without both classes."""
    import torch

    known = frame[label].notna().to_numpy()
    if known.sum() == 0 or frame.loc[known, label].nunique() < 2:
        return None
    return torch.from_numpy(known), torch.tensor(frame.loc[known, label].to_numpy(dtype="float64"))


def choose_logistic(x: Any, y: Any, val_x: Any | None, val_y: Any | None,
                    grid: Sequence[float] = LOGISTIC_C_GRID) -> dict[str, Any]:
    """A logistic regression on ``x``, ``y`` (tensors) whose inverse L2 strength ``c`` (scikit-learn's C) is
    the one of ``grid`` with the lowest log loss on ``val_x``, ``val_y``; ``c`` = 1 without validation rows.

    :returns: ``{"weight": [...], "bias": b, "c": c, "val_log_loss": loss or None}``.
    """
    import torch

    from propensity.evaluation.metrics import log_loss
    from propensity.training.model import fit_logistic

    if val_x is None or val_y is None or len(val_y) == 0:
        weight, bias = fit_logistic(x, y)
        return {"weight": weight, "bias": bias, "c": 1.0, "val_log_loss": None}
    best: dict[str, Any] = {}
    for c in grid:
        weight, bias = fit_logistic(x, y, c=c)
        probs = torch.sigmoid(val_x.double() @ torch.tensor(weight, dtype=torch.float64) + bias)
        loss = log_loss(val_y.numpy(), probs.numpy())
        if not best or loss < best["val_log_loss"]:
            best = {"weight": weight, "bias": bias, "c": c, "val_log_loss": loss}
    return best


def logistic_start(rows: DataFrame, stats: FeatureStats, seed: int, validation: DataFrame | None = None
                   ) -> dict[str, dict[str, Any]]:
    """Per task, a logistic regression on the normalised features of (a sample of) ``rows``, its L2
    strength chosen on ``validation`` (:func:`choose_logistic`): new heads start as it, so fine-tuning
    starts from what the features alone give (the wide-and-deep promise).
    """
    columns = [*stats.columns, *data.LABEL_COLUMNS]
    frame: pd.DataFrame = data.sample_rows(rows.select(*columns), LOGISTIC_START_ROWS, seed).toPandas()
    val: pd.DataFrame | None = validation.select(*columns).toPandas() if validation is not None else None
    x = _normalised(frame, stats)
    val_x = _normalised(val, stats) if val is not None else None
    start: dict[str, dict[str, Any]] = {}
    for label, task in zip(data.LABEL_COLUMNS, TASKS, strict=True):
        train_part = _known(frame, label)
        if train_part is None:
            continue
        val_part = _known(val, label) if val is not None else None
        val_rows, val_y = val_part if val_part is not None else (None, None)
        start[task] = choose_logistic(x[train_part[0]], train_part[1],
                                      None if val_x is None or val_rows is None else val_x[val_rows], val_y)
    return start


def finetune_model(spark: SparkSession, cfg: Config, rows: DataFrame, validation: DataFrame | None,
                   feature_columns: list[str], model: ModelSettings, train: TrainSettings, start: Pretrained,
                   out_dir: Path, *, init_model: Path | None = None, stats: FeatureStats | None = None,
                   stage: str = "finetune", run_id: str | None = None, from_scratch: bool = False,
                   distill: dict[str, float] | None = None, wide_rows: DataFrame | None = None) -> FinetuneOutcome:
    """Fine-tune on ``rows`` (``training_examples`` columns) through TorchDistributor into ``out_dir``.

    :param start: pretrained encoder and tokenizer (the encoder is ignored with ``init_model``).
    :param init_model: a model folder to continue from (second, target-platform step).
    :param stats: normalisation statistics; None: computed on ``rows``.
    :param run_id: MLflow run that rank 0 logs per-epoch metrics to (``<stage>_val_auc_purchase`` ...).
    :param from_scratch: a new encoder of ``model``'s size with random weights (``start``'s tokenizer);
        the student.
    :param distill: ``{"alpha", "temperature"}``: distil from ``rows``' ``teacher_logit_<task>`` columns.
    :param wide_rows: rows the heads' logistic regressions are fitted on; None: ``rows`` (pass every
        labelled train row when ``rows`` is a sample: the regression is cheap).
    """
    from propensity.tokenizer import tokenize_column
    from propensity.training.distributed import run_distributed

    stats = stats or data.feature_stats(rows, feature_columns)
    wide = None if init_model else logistic_start(rows if wide_rows is None else wide_rows, stats, train.seed,
                                                  validation)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats_path = out_dir / STATS_FILE
    stats_path.write_text(stats.to_json())
    logits = [f"teacher_logit_{t}" for t in TASKS] if distill else []
    frames = [data.finetune_frame(tokenize_column(df, str(start.tokenizer_dir), model.max_length), feature_columns,
                                  logits if df is rows else ())
              if df is not None else None for df in (rows, validation)]
    init_encoder = None if init_model or from_scratch else str(start.encoder_dir)
    config = new_encoder_config(model, start.tokenizer_dir) if from_scratch else {}
    target = MlflowTarget(mlflow_utils.tracking_uri(cfg), run_id) if run_id else None
    with data.converters(spark, cfg, frames, train.num_processes, train.seed) as (source, val_source):
        assert source is not None
        job = FinetuneJob(
            bert_config=config, feature_columns=feature_columns, feature_stats=asdict(stats),
            head_hidden_size=model.head_hidden_size, train=train, data=source, validation=val_source,
            out_dir=str(out_dir), epochs=train.epochs, transfer_mode=train.transfer_mode,
            init_encoder=init_encoder,
            init_model=str(init_model) if init_model else None, mlflow=target, stage=stage,
            extra_meta={"max_length": model.max_length, "stage": stage,
                        "encoder_source": init_encoder or init_model or "random"},
            wide_init=wide, distill=distill)
        result = run_distributed(finetune_fn, job, train)
    return FinetuneOutcome(out_dir / MODEL_DIR, stats_path, result,
                           {t: float(fit["c"]) for t, fit in (wide or {}).items()})


def log_selection(stage: str, outcome: FinetuneOutcome) -> None:
    """Log (MLflow params and one line) which epoch was kept and how much each task uses its deep part."""
    result = outcome.result
    scales = result.get("deep_scales") or {}
    mlflow.log_params({f"{stage}.best_epoch": result["best_epoch"],
                       **{f"{stage}.deep_scale.{t}": v for t, v in scales.items()},
                       **{f"{stage}.wide_c.{t}": v for t, v in outcome.wide_c.items()}})
    log.info("%s: kept epoch %s; per task the deep part's weight (0: the logistic regression alone) %s;"
             " the regression's C %s", stage, result["best_epoch"],
             ", ".join(f"{t} {v:g}" for t, v in scales.items()) or "n/a (no validation)",
             ", ".join(f"{t} {v:g}" for t, v in outcome.wide_c.items()) or "n/a (continued)")


def source_platforms(spark: SparkSession, cfg: Config, plan: SnapshotPlan, train: TrainSettings) -> list[str]:
    """Source platforms: the configured ones, else every platform with rows except the target."""
    if train.source_platforms or train.target_platform is None:
        return list(train.source_platforms)
    rows = data.examples(spark, cfg, plan.train).select("platform").distinct().collect()
    sources = sorted(r["platform"] for r in rows if r["platform"] != train.target_platform)
    if not sources:
        raise PropensityError(f"training.target_platform={train.target_platform!r} is the only platform;"
                              " a transfer needs at least one other source platform")
    return sources


def train_and_validation_rows(spark: SparkSession, cfg: Config, plan: SnapshotPlan, train: TrainSettings,
                              platforms: list[str], fraction: float = 1.0) -> tuple[DataFrame, DataFrame]:
    """Labelled train rows of ``platforms`` (``fraction`` of them, at most ``max_train_rows``; persisted, so
    unpersist them) and labelled validation rows (at most ``max_eval_rows``).

    :raises PropensityError: there are no labelled train rows.
    """
    rows = labelled(data.examples(spark, cfg, plan.train, platforms))
    if fraction < 1.0:
        rows = rows.sample(fraction=fraction, seed=train.seed)
    rows = data.sample_rows(rows, train.max_train_rows, train.seed).persist()
    if rows.count() == 0:
        raise PropensityError(f"no labelled rows on the train snapshots for platforms {platforms or 'all'};"
                              " run `propensity features` with labels")
    validation = data.sample_rows(labelled(data.examples(spark, cfg, [plan.validation], platforms)),
                                  train.max_eval_rows, train.seed)
    return rows, validation


def _log_run_inputs(cfg: Config, teacher: ModelSettings, train: TrainSettings, plan: SnapshotPlan,
                    start: Pretrained, sources: list[str]) -> None:
    mlflow_utils.log_params("teacher", teacher.to_dict())
    mlflow_utils.log_params("training", train.to_dict())
    mlflow.log_params({"finetune.train_snapshots": ",".join(d.isoformat() for d in plan.train),
                       "finetune.validation_snapshot": plan.validation.isoformat(),
                       "finetune.test_snapshot": plan.test.isoformat(),
                       "finetune.sources": ",".join(sources) or "all", "finetune.encoder": str(start.encoder_dir)})
    mlflow_utils.log_resolved_config(cfg, {"teacher": teacher, "training": train})
    mlflow.log_artifacts(str(start.tokenizer_dir), "tokenizer")


def run_finetune(spark: SparkSession, cfg: Config, teacher: ModelSettings, train: TrainSettings,
                 plan: SnapshotPlan | None = None) -> mlflow_utils.RegisteredModelVersion:
    """``propensity finetune``: fine-tune the teacher, log it to MLflow and register a new version.

    :param plan: snapshot dates; None: planned from ``events`` (snapshots built if missing).
    :returns: the registered ``propensity_teacher`` version.
    """
    from propensity.features import FEATURE_COLUMNS

    plan = plan or data.load_plan(spark, cfg)
    start = find_pretrained(cfg, train, teacher.max_length)
    sources = source_platforms(spark, cfg, plan, train)
    rows, validation = train_and_validation_rows(spark, cfg, plan, train, sources)
    features = list(FEATURE_COLUMNS)
    mlflow_utils.setup_mlflow(cfg)
    try:
        with mlflow.start_run(run_name="teacher-finetune", tags={"stage": "finetune", "model": "teacher"}) as run:
            _log_run_inputs(cfg, teacher, train, plan, start, sources)
            mlflow.log_param("finetune.rows", rows.count())
            out = mlflow_utils.checkpoint_dir(cfg, "teacher", "finetune", run.info.run_id)
            outcome = finetune_model(spark, cfg, rows, validation, features, teacher, train, start, out,
                                     run_id=run.info.run_id,
                                     wide_rows=labelled(data.examples(spark, cfg, plan.train, sources)))
            log_selection("finetune", outcome)
            if train.target_platform:
                outcome = _adapt(spark, cfg, plan, teacher, train, start, outcome, features, run.info.run_id)
                log_selection("adapt", outcome)
            mlflow.log_metric("finetune_samples_per_s", float(outcome.result["samples_per_s"]))
            example = input_example(validation.limit(5).toPandas(), features)
            version = log_pyfunc_model(outcome.model_dir, start.tokenizer_dir, outcome.stats_path, example,
                                       mlflow_utils.registered_name(cfg, mlflow_utils.TEACHER_MODEL_NAME))
    finally:
        rows.unpersist()
    log.info("registered %s version %s (run %s)", version.name, version.version, version.run_id)
    return version


def _adapt(spark: SparkSession, cfg: Config, plan: SnapshotPlan, teacher: ModelSettings, train: TrainSettings,
           start: Pretrained, source: FinetuneOutcome, features: list[str], run_id: str) -> FinetuneOutcome:
    """Second step: continue from the source model on the target platform's labels."""
    target = str(train.target_platform)
    rows, validation = train_and_validation_rows(spark, cfg, plan, train, [target], train.target_label_fraction)
    try:
        mlflow.log_param("adapt.rows", rows.count())
        stats = FeatureStats.from_json(source.stats_path.read_text())
        return finetune_model(spark, cfg, rows, validation, features, teacher, train, start,
                              source.model_dir.parent / "adapt", init_model=source.model_dir, stats=stats,
                              stage="adapt", run_id=run_id)
    finally:
        rows.unpersist()
