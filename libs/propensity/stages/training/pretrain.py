"""``propensity pretrain``: masked-event pretraining of the teacher encoder, no labels needed.

Rows: the ``event_ids`` of every snapshot in ``training_examples`` (the plan's train, validation
and test snapshots and any snapshot built for scoring: pretraining reads no label, so it may see
the sequences it will later score), every platform, a seeded sample of
``training.max_pretrain_rows``; a seeded 5% of them are held out as the pretraining validation.
Training stops when the validation loss flattens (``training.pretrain_patience``,
``training.pretrain_min_delta``) or after ``training.pretrain_epochs``; the per-epoch curve goes
to MLflow (``pretrain_val_loss``, ``pretrain_val_masked_item_accuracy``). The encoder starts
from random weights (size from the ``teacher`` section) or, with ``training.init_checkpoint``,
from a local Hugging Face BERT folder's transformer layers (nothing is downloaded).

Output, under ``<storage.root>/checkpoints/teacher/pretrain/<mlflow run id>/``: ``encoder/``
(the best epoch's encoder) and ``result.json``; ``LATEST`` next to it names the newest folder,
which ``propensity finetune`` starts from.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from propensity.core.config import Config, ModelSettings
from propensity.core.datasets import sample_rows
from propensity.core.errors import DataNotReadyError
from propensity.core.sequence import SEQUENCE_COLUMN
from propensity.core.tables import require_table
from propensity.core.tracking import log_params, log_resolved_config, setup_mlflow, stored_path, tracking_uri
from propensity.models.encoder import bert_config
from propensity.stages.training import data
from propensity.stages.training.distributed import run_distributed
from propensity.stages.training.start import mark_latest, pretrain_root, resolve_checkpoint
from propensity.stages.training.train_fn import MlflowTarget, PretrainJob, pretrain_fn

log = logging.getLogger(__name__)

#: Share of the pretraining sequences held out to measure the validation loss.
VALIDATION_SHARE = 0.05


def pretraining_rows(spark: SparkSession, cfg: Config) -> DataFrame:
    """Sequences with at least one event from every snapshot, a ``_held_out`` draw in [0, 1) each."""
    train = cfg.training
    rows = data.with_events(spark.table(require_table(spark, cfg, "training_examples"))).select(SEQUENCE_COLUMN)
    return sample_rows(rows, train.max_pretrain_rows, train.seed).withColumn("_held_out", F.rand(train.seed + 1))


def pretrain_encoder(spark: SparkSession, cfg: Config, rows: DataFrame, validation: DataFrame | None,
                     size: ModelSettings, out_dir: Path, run_id: str | None = None) -> dict[str, Any]:
    """Masked-event pretraining of ``rows`` (an ``event_ids`` column) into ``out_dir``.

    :returns: the train function's summary (history, best epoch, samples/s, ``out_dir``).
    """
    train = cfg.training
    checkpoint = resolve_checkpoint(train.init_checkpoint, size.max_length) if train.init_checkpoint else None
    frames = [data.pretrain_frame(df, size.max_length) if df is not None else None for df in (rows, validation)]
    target = MlflowTarget(tracking_uri(cfg), run_id) if run_id else None
    with data.converters(spark, cfg, frames, train.num_processes, train.seed) as (source, val_source):
        if source is None:  # pragma: no cover - the rows frame is never None
            raise DataNotReadyError("no sequences to pretrain on")
        job = PretrainJob(bert_config=bert_config(size).to_dict(), train=train, data=source, validation=val_source,
                          out_dir=str(out_dir), init_checkpoint=str(checkpoint) if checkpoint else None,
                          mlflow=target)
        return run_distributed(pretrain_fn, job, train)


def run_pretrain(spark: SparkSession, cfg: Config) -> Path:
    """``propensity pretrain``: pretrain the teacher encoder (``teacher`` size) and return its checkpoint folder.

    :raises TableNotFoundError: ``training_examples`` does not exist (run ``propensity features``).
    :raises DataNotReadyError: there are no sequences with events.
    """
    everything = pretraining_rows(spark, cfg).persist()
    rows = everything.where(F.col("_held_out") >= VALIDATION_SHARE).drop("_held_out")
    validation = everything.where(F.col("_held_out") < VALIDATION_SHARE).drop("_held_out")
    try:
        n = rows.count()
        if n == 0:
            raise DataNotReadyError("training_examples holds no sequence with an event;"
                                    " run `propensity features --training-set`")
        setup_mlflow(cfg)
        with mlflow.start_run(run_name="teacher-pretrain", tags={"stage": "pretrain", "model": "teacher"}) as run:
            out_dir = pretrain_root(cfg) / run.info.run_id
            log_params("teacher", cfg.teacher.to_dict())
            log_params("training", cfg.training.to_dict())
            snapshots = sorted(r[0] for r in spark.table(cfg.table("training_examples")).select("snapshot_date")
                               .distinct().collect())
            mlflow.log_params({"pretrain.rows": n, "pretrain.validation_rows": validation.count(),
                               "pretrain.snapshots": ",".join(d.isoformat() for d in snapshots)})
            log_resolved_config(cfg)
            result = pretrain_encoder(spark, cfg, rows, validation, cfg.teacher, out_dir, run.info.run_id)
            mlflow.log_metrics({"pretrain_samples_per_s": float(result["samples_per_s"]),
                                "pretrain_best_epoch": float(result["best_epoch"]),
                                "pretrain_epochs_run": float(result["epochs_run"])})
            mlflow.set_tag("checkpoint", stored_path(cfg, out_dir))
        mark_latest(cfg, out_dir)
        log.info("pretrained encoder in %s (best epoch %s of %s)", out_dir, result["best_epoch"],
                 result["epochs_run"])
        return out_dir
    finally:
        everything.unpersist()
