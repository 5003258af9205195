"""One fine-tuning run through TorchDistributor: typed rows and spec in, a saved model folder out.

Every model stage (the teacher's fine-tuning and target-platform adaptation, the student's
distillation, both arms of the transfer experiment) calls :func:`fit_heads` with

- :class:`TrainingRows`: the (sampled) train rows, validation rows (they pick the kept epoch and
  each task's ``deep_scale``) and the rows the wide regressions are fitted on;
- :class:`FitSpec`: the stage name, the model size, where the weights start
  (:mod:`~propensity.stages.training.start`) and, for the student, the distillation loss.

How the run trains (epochs, batch size, processes, learning rates) is ``cfg.training``.
:func:`fit_series` trains several independent runs in one launch (the transfer experiment's arms).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from propensity.core.config import Config, ModelSettings
from propensity.core.datasets import SnapshotPlan, examples, labelled, sample_rows
from propensity.core.errors import DataNotReadyError
from propensity.core.schema import FEATURE_COLUMNS, TASKS
from propensity.core.tracking import tracking_uri
from propensity.models.encoder import encoder_positions
from propensity.models.network import FeatureStats, read_model_meta
from propensity.stages.training import data
from propensity.stages.training.distributed import run_distributed
from propensity.stages.training.loaders import DataSource
from propensity.stages.training.start import ContinueFrom, NewEncoder, PretrainedEncoder, Start
from propensity.stages.training.train_fn import (
    MODEL_DIR,
    Distillation,
    FinetuneJob,
    MlflowTarget,
    finetune_fn,
    finetune_series_fn,
)
from propensity.stages.training.wide import logistic_start

log = logging.getLogger(__name__)

STATS_FILE = "feature_stats.json"


@dataclass(frozen=True)
class TrainingRows:
    """The rows of one fine-tuning run (``training_examples`` columns).

    :param train: the rows trained on (a sample of at most ``training.max_train_rows``).
    :param validation: rows scored after each epoch; None: the last epoch is kept.
    :param wide: rows the heads' logistic regressions are fitted on; None: ``train`` (pass every labelled
        train row when ``train`` is a sample: the regression is cheap).
    """

    train: DataFrame
    validation: DataFrame | None
    wide: DataFrame | None = None

    @property
    def for_wide(self) -> DataFrame:
        """The rows the wide regressions are fitted on."""
        return self.wide if self.wide is not None else self.train

    def example(self, rows: int = 5) -> pd.DataFrame:
        """A few rows (validation ones when there are) for a logged model's input example."""
        return (self.validation if self.validation is not None else self.train).limit(rows).toPandas()


@dataclass(frozen=True)
class FitSpec:
    """What one fine-tuning run trains.

    :param stage: name of the run's MLflow metrics (``<stage>_val_auc_purchase``) and params.
    :param size: the model size section (its ``head_hidden_size``; a new encoder's size, the positions of
        every model come from its encoder).
    :param start: where the weights start.
    :param out_dir: rank 0 writes ``out_dir/model`` and ``out_dir/feature_stats.json``.
    :param distillation: train on the teacher's logits (``teacher_logit_<task>`` columns of the train rows).
    :param run_id: MLflow run that rank 0 logs per-epoch metrics to.
    :param with_features: False: the sequence-only model (no aggregate features, no wide part).
    """

    stage: str
    size: ModelSettings
    start: Start
    out_dir: Path
    distillation: Distillation | None = None
    run_id: str | None = None
    with_features: bool = True


@dataclass
class FitOutcome:
    """One fine-tuning run: the saved model folder, its statistics and the train function's summary."""

    model_dir: Path
    stats_path: Path
    result: dict[str, Any]
    #: per task, the C of the logistic regression the head started from (empty: continued from a model)
    wide_c: dict[str, float] = field(default_factory=dict)

    def continued(self) -> ContinueFrom:
        """A starting point that trains this model further."""
        return ContinueFrom(self.model_dir, FeatureStats.from_json(self.stats_path.read_text()))


TEACHER_LOGITS = tuple(f"teacher_logit_{t}" for t in TASKS)


def fit_heads(spark: SparkSession, cfg: Config, rows: TrainingRows, spec: FitSpec) -> FitOutcome:
    """Fine-tune on ``rows`` through TorchDistributor into ``spec.out_dir`` (see the module docstring)."""
    return fit_series(spark, cfg, [(rows, spec)])[0]


def fit_series(spark: SparkSession, cfg: Config, runs: Sequence[tuple[TrainingRows, FitSpec]]) -> list[FitOutcome]:
    """Fine-tune each ``(rows, spec)`` of ``runs`` as :func:`fit_heads` does, one after another in a single
    TorchDistributor launch (the training processes start and import once: about 10 s per run saved on
    CPU); a spec must not start from another's output. Returns the outcomes in order."""
    if not runs:
        raise ValueError("fit_series needs at least one run")
    outputs = {spec.out_dir / MODEL_DIR for _, spec in runs}
    chained = [spec.stage for _, spec in runs
               if isinstance(spec.start, ContinueFrom) and spec.start.model_dir in outputs]
    if chained:
        raise ValueError(f"fit_series: run {chained[0]!r} continues from another run of the same series;"
                         " fit the runs it depends on first")
    prepared = [_prepare(cfg, rows, spec) for rows, spec in runs]
    train = cfg.training
    frames = [frame for run in prepared for frame in run.frames]
    with data.converters(spark, cfg, frames, train.num_processes, train.seed) as sources:
        jobs = [run.job(cfg, source, validation)
                for run, source, validation in zip(prepared, sources[::2], sources[1::2], strict=True)]
        if len(jobs) == 1:
            results = [run_distributed(finetune_fn, jobs[0], train)]
        else:
            results = list(run_distributed(finetune_series_fn, jobs, train)["results"])
    return [FitOutcome(run.spec.out_dir / MODEL_DIR, run.stats_path, result,
                       {t: float(fit["c"]) for t, fit in (run.wide or {}).items()})
            for run, result in zip(prepared, results, strict=True)]


@dataclass(frozen=True)
class _Prepared:
    """The driver's part of one run: statistics and the wide start fitted, the frames to cache."""

    spec: FitSpec
    stats: FeatureStats
    stats_path: Path
    wide: dict[str, dict[str, Any]] | None
    positions: int
    frames: tuple[DataFrame, DataFrame | None]

    def job(self, cfg: Config, source: DataSource | None, validation: DataSource | None) -> FinetuneJob:
        """The train function's job, reading ``source`` (and ``validation``)."""
        if source is None:  # pragma: no cover - the train frame is never None
            raise DataNotReadyError("no train rows to fine-tune on")
        spec, train = self.spec, cfg.training
        target = MlflowTarget(tracking_uri(cfg), spec.run_id) if spec.run_id else None
        return FinetuneJob(
            feature_columns=list(self.stats.columns), feature_stats=asdict(self.stats),
            head_hidden_size=spec.size.head_hidden_size,
            train=train, data=source, validation=validation, out_dir=str(spec.out_dir), epochs=train.epochs,
            transfer_mode=train.transfer_mode, mlflow=target, stage=spec.stage, wide_init=self.wide,
            distillation=spec.distillation, extra_meta={"max_length": self.positions, "stage": spec.stage},
            **_job_start(spec.start))


def _prepare(cfg: Config, rows: TrainingRows, spec: FitSpec) -> _Prepared:
    columns = FEATURE_COLUMNS if spec.with_features else ()
    stats = spec.start.stats if isinstance(spec.start, ContinueFrom) else data.feature_stats(rows.train, columns)
    fresh_heads = not isinstance(spec.start, ContinueFrom) and bool(stats.columns)
    wide = logistic_start(rows.for_wide, stats, cfg.training.seed, rows.validation) if fresh_heads else None
    spec.out_dir.mkdir(parents=True, exist_ok=True)
    stats_path = spec.out_dir / STATS_FILE
    stats_path.write_text(stats.to_json())
    positions = _positions(spec.start)
    frames = (data.finetune_frame(rows.train, stats.columns, positions, TEACHER_LOGITS if spec.distillation else ()),
              None if rows.validation is None else data.finetune_frame(rows.validation, stats.columns, positions))
    return _Prepared(spec, stats, stats_path, wide, positions, frames)


def _positions(start: Start) -> int:
    """Positions of the model that grows from ``start`` (what its rows are cut or padded to)."""
    if isinstance(start, PretrainedEncoder):
        return encoder_positions(start.encoder_dir)
    if isinstance(start, ContinueFrom):
        return int(read_model_meta(start.model_dir)["bert_config"]["max_position_embeddings"])
    return start.size.max_length


def _job_start(start: Start) -> dict[str, Any]:
    """The train function's view of a starting point: exactly one of its three fields."""
    if isinstance(start, PretrainedEncoder):
        return {"init_encoder": str(start.encoder_dir)}
    if isinstance(start, ContinueFrom):
        return {"init_model": str(start.model_dir)}
    if isinstance(start, NewEncoder):
        return {"bert_config": start.bert_config()}
    raise TypeError(f"unknown starting point {start!r}")


def log_selection(stage: str, outcome: FitOutcome) -> None:
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


@contextmanager
def training_rows(spark: SparkSession, cfg: Config, plan: SnapshotPlan, platforms: list[str],
                  fraction: float = 1.0) -> Iterator[TrainingRows]:
    """Labelled train rows of ``platforms`` (empty: all; ``fraction`` of them, at most
    ``training.max_train_rows``, persisted while in use), labelled validation rows (at most
    ``training.max_eval_rows``) and every labelled train row of those platforms for the wide part.

    :raises DataNotReadyError: there are no labelled train rows.
    """
    train = cfg.training
    all_train = labelled(examples(spark, cfg, plan.train, platforms))
    sampled = all_train.sample(fraction=fraction, seed=train.seed) if fraction < 1.0 else all_train
    sampled = sample_rows(sampled, train.max_train_rows, train.seed).persist()
    try:
        if sampled.count() == 0:
            raise DataNotReadyError(f"no labelled rows on the train snapshots for platforms {platforms or 'all'};"
                                    " run `propensity features --training-set`")
        validation = sample_rows(labelled(examples(spark, cfg, [plan.validation], platforms)), train.max_eval_rows,
                                 train.seed)
        yield TrainingRows(sampled, validation, all_train if fraction >= 1.0 else None)
    finally:
        sampled.unpersist()
