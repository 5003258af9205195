"""Batch scoring (DESIGN section 8): features at T -> pyfunc model in ``mapInPandas`` -> MERGE into ``user_scores``.

* The model is resolved on the driver (``models:/name@alias`` follows the registry), its
  artifacts are downloaded once under ``storage.root``, and each Python worker loads it
  **once** (a per-process cache) and scores whole Arrow batches.
* ``user_scores`` is partitioned by ``snapshot_date``, has CHECK constraints keeping the
  scores in [0, 1] and Change Data Feed on. The MERGE's condition pins the snapshot's
  partition, so re-running a snapshot replaces its rows (stale ones are deleted) and
  two different snapshots can be scored at the same time.
* A missing model, alias or a model whose input does not fit fails with one line before
  anything is written; a run killed midway commits nothing (one Delta transaction).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from propensity.config import Config
from propensity.errors import PropensityError
from propensity.tables import ensure_table, require_table

log = logging.getLogger(__name__)

TASK_COLUMNS = {"purchase": "purchase_score", "click": "click_score", "churn": "churn_score"}
SCORE_SCHEMA = "user_id STRING, platform STRING, purchase_score DOUBLE, click_score DOUBLE, churn_score DOUBLE"


class ModelResolutionError(PropensityError):
    """The model to score with cannot be found or does not fit the scoring input."""


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready for the workers: its local folder, registry name and version, and input columns."""

    local_path: str
    name: str
    version: str
    input_columns: tuple[str, ...]


@dataclass(frozen=True)
class ScoreResult:
    """What one scoring run wrote."""

    snapshot_date: date
    rows: int
    model: ResolvedModel
    seconds: float


def resolve_model(cfg: Config, model_uri: str) -> ResolvedModel:
    """Resolve ``model_uri`` in the registry, download it once, and read its input columns.

    :raises ModelResolutionError: unknown model, version or alias, or a model without an input schema.
    """
    import mlflow

    from propensity.training.mlflow_utils import resolve_version, setup_mlflow

    setup_mlflow(cfg)
    try:
        version = resolve_version(cfg, model_uri)
    except ValueError as e:
        raise ModelResolutionError(f"cannot score with {model_uri}: {e}") from e
    name, number = (version.name, version.version) if version else (model_uri, "")
    target = local_model_dir(cfg) / (f"{name}-v{number}" if version else _slug(model_uri))
    uri = version.model_uri if version else model_uri
    if not (target / "MLmodel").exists():
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target))
        except Exception as e:
            raise ModelResolutionError(f"cannot download {uri}: {str(e).splitlines()[0]}") from e
    model = mlflow.pyfunc.load_model(str(target))
    schema = model.metadata.get_input_schema()
    if schema is None:
        raise ModelResolutionError(f"{uri} has no input signature; log it with one (behavior_text + features)")
    return ResolvedModel(str(target), name, number, tuple(schema.input_names()))


def _slug(uri: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in uri)[-80:]


_LOADED: dict[str, Any] = {}


def _load_once(path: str, threads: int) -> Any:
    """The pyfunc model at ``path``, loaded at most once per Python worker process, with ``threads`` torch threads.

    The thread count is set after loading: a model's ``load_context`` may pick its own inside a Spark task.
    """
    if path not in _LOADED:
        import mlflow

        _LOADED[path] = mlflow.pyfunc.load_model(path)
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return _LOADED[path]


def make_scorer(model: ResolvedModel, threads: int, batch_size: int
                ) -> Callable[[Iterable[pd.DataFrame]], Iterable[pd.DataFrame]]:
    """The ``mapInPandas`` function: Arrow batches of features in, scores out.

    Per Arrow batch: the inputs are cast once, the model is called on ``batch_size`` rows at a
    time, and the scores go back as one frame (one Arrow batch back, not one per model call).
    """
    path, columns = model.local_path, list(model.input_columns)
    as_double = {c: "float64" for c in columns if c != "behavior_text"}

    def score_batches(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        pyfunc = _load_once(path, threads)
        for batch in batches:
            inputs = batch[columns].astype(as_double)
            scores = np.empty((len(batch), len(TASK_COLUMNS)), dtype="float64")
            for start in range(0, len(batch), batch_size):
                predicted = pyfunc.predict(inputs.iloc[start:start + batch_size])
                for i, task in enumerate(TASK_COLUMNS):
                    scores[start:start + batch_size, i] = pd.to_numeric(predicted[task], errors="coerce").to_numpy(
                        dtype="float64")
            out = pd.DataFrame({"user_id": batch["user_id"].to_numpy(), "platform": batch["platform"].to_numpy()})
            for i, column in enumerate(TASK_COLUMNS.values()):
                out[column] = scores[:, i]
            yield out

    return score_batches


def worker_threads(spark: SparkSession, cfg: Config) -> int:
    """torch threads per Python worker: configured, or cores shared by the concurrent tasks."""
    if cfg.scoring.torch_threads:
        return cfg.scoring.torch_threads
    cores = os.cpu_count() or 1
    return max(1, cores // max(1, spark.sparkContext.defaultParallelism))


def score_features(spark: SparkSession, cfg: Config, features: DataFrame, model: ResolvedModel) -> DataFrame:
    """Scores for a features DataFrame (``user_id``, ``platform`` + the model's input columns)."""
    missing = [c for c in model.input_columns if c not in features.columns]
    if missing:
        raise ModelResolutionError(f"model {model.name} v{model.version} needs column(s) {', '.join(missing)} that"
                                   " the features do not have; score with a model trained on the current features")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.scoring.arrow_batch_size))
    inputs = features.select("user_id", "platform", *model.input_columns)
    scorer = make_scorer(model, worker_threads(spark, cfg), cfg.scoring.batch_size)
    return inputs.mapInPandas(scorer, SCORE_SCHEMA)


def score_snapshot(spark: SparkSession, cfg: Config, snapshot_date: date, model_uri: str | None = None
                   ) -> ScoreResult:
    """Score every eligible ``(user_id, platform)`` at ``snapshot_date`` and MERGE into ``user_scores``."""
    import time

    from propensity.features import build_training_examples

    started = time.perf_counter()
    model = resolve_model(cfg, model_uri or cfg.scoring.model_uri)
    events = spark.table(require_table(spark, cfg, "events", "ingest"))
    features = build_training_examples(spark, events, cfg, snapshot_date, with_labels=False)
    scores = score_features(spark, cfg, features, model)
    rows = merge_scores(spark, cfg, snapshot_date, scores, model)
    return ScoreResult(snapshot_date, rows, model, time.perf_counter() - started)


def merge_scores(spark: SparkSession, cfg: Config, snapshot_date: date, scores: DataFrame,
                 model: ResolvedModel) -> int:
    """One MERGE into the snapshot's partition: upsert its scores and delete its stale rows; returns rows.

    Stale rows (scored before, not eligible now) travel in the source marked ``_stale``
    instead of through ``WHEN NOT MATCHED BY SOURCE``, which Delta cannot keep partition-
    disjoint: this way two snapshots can be merged at the same time without conflict.
    """
    table = ensure_table(spark, cfg, "user_scores")
    day = f"DATE'{snapshot_date.isoformat()}'"
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    fresh = scores.select(
        F.lit(snapshot_date).alias("snapshot_date"), "user_id", "platform", *TASK_COLUMNS.values(),
        F.lit(model.name).alias("model_name"), F.lit(model.version).alias("model_version"),
        F.lit(now).cast("timestamp").alias("scored_at"), F.lit(False).alias("_stale"),
    ).persist()
    rows = fresh.count()  # scores once; the MERGE reads the cached rows
    key = ["user_id", "platform"]
    stale = (spark.table(table).where(F.col("snapshot_date") == F.lit(snapshot_date)).select(*fresh.columns[:-1])
             .join(fresh.select(*key), key, "left_anti").withColumn("_stale", F.lit(True)))
    columns: dict[str, str | Column] = {c: f"s.{c}" for c in fresh.columns[:-1]}
    target = DeltaTable.forName(spark, table)
    try:
        (target.alias("t").merge(fresh.unionByName(stale).alias("s"),
                                 f"t.snapshot_date = {day} AND t.snapshot_date = s.snapshot_date"
                                 " AND t.user_id = s.user_id AND t.platform = s.platform")
         .whenMatchedDelete(condition="s._stale").whenMatchedUpdate(set=columns)
         .whenNotMatchedInsert(condition="NOT s._stale", values=columns).execute())
    except Exception as e:
        if "CONSTRAINT" in str(e).upper():
            raise PropensityError(f"model {model.name} v{model.version} produced scores outside [0, 1] (or NaN)"
                                  f" for {snapshot_date}; nothing was written. Check the model's outputs") from e
        raise
    finally:
        fresh.unpersist()
    return rows


def score_path_summary(result: ScoreResult) -> str:
    """One line for the CLI."""
    rate = result.rows / result.seconds if result.seconds else 0.0
    return (f"scored {result.rows} (user, platform) rows for {result.snapshot_date} with {result.model.name}"
            f" v{result.model.version} in {result.seconds:.1f}s ({rate:,.0f} rows/s)")


def local_model_dir(cfg: Config) -> Path:
    """Where downloaded models are kept for the workers."""
    return cfg.root / "scoring" / "models"
