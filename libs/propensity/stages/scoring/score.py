"""``propensity score``: the snapshot's features -> a registered model -> one MERGE into ``user_scores``.

* The features of snapshot T are the ``training_examples`` rows of T, written by
  ``propensity features --snapshot-date T --no-labels`` (the same code that built the training
  rows, so training and scoring cannot drift apart).
* The model is resolved on the driver (``models:/name@alias`` follows the registry), downloaded
  once under ``storage.root``, and scores in Spark with
  :func:`~propensity.models.spark_scoring.score_frame` (loaded once per Python worker).
* ``user_scores`` is partitioned by ``snapshot_date``, has CHECK constraints keeping the
  scores in [0, 1] and Change Data Feed on. The MERGE's condition pins the snapshot's
  partition, so re-running a snapshot replaces its rows (stale ones are deleted) and
  two different snapshots can be scored at the same time.
* A missing model, alias, snapshot or a model whose input does not fit fails with one line
  before anything is written; a run killed midway commits nothing (one Delta transaction).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from propensity.core.config import Config
from propensity.core.datasets import examples
from propensity.core.errors import DataNotReadyError, ModelOutputError
from propensity.core.locks import table_lock
from propensity.core.schema import SCORE_COLUMNS
from propensity.core.tables import ensure_table
from propensity.models.registry import ResolvedModel, resolve_model
from propensity.models.spark_scoring import score_frame


@dataclass(frozen=True)
class ScoreResult:
    """What one scoring run wrote."""

    snapshot_date: date
    rows: int
    model: ResolvedModel
    seconds: float

    def format(self) -> str:
        """One line for the CLI and the demo."""
        rate = self.rows / self.seconds if self.seconds else 0.0
        return (f"scored {self.rows} (user, platform) rows for {self.snapshot_date} with {self.model.name}"
                f" v{self.model.version} in {self.seconds:.1f}s ({rate:,.0f} rows/s)")


def snapshot_features(spark: SparkSession, cfg: Config, snapshot_date: date) -> DataFrame:
    """The ``training_examples`` rows of ``snapshot_date``.

    :raises DataNotReadyError: the snapshot has no rows (the features stage has not built it).
    """
    features = examples(spark, cfg, [snapshot_date])
    if features.isEmpty():
        raise DataNotReadyError(f"training_examples has no rows for {snapshot_date}; run"
                                f" `propensity features --snapshot-date {snapshot_date} --no-labels` first")
    return features


def score_snapshot(spark: SparkSession, cfg: Config, snapshot_date: date, model_uri: str | None = None
                   ) -> ScoreResult:
    """Score every ``(user_id, platform)`` of snapshot ``snapshot_date`` and MERGE into ``user_scores``.

    :param model_uri: the model; None: ``scoring.model_uri`` (the champion student by default).
    :raises ModelNotFoundError: the model or alias does not exist, or does not fit the features.
    :raises DataNotReadyError: the snapshot's features have not been built.
    """
    started = time.perf_counter()
    model = resolve_model(cfg, model_uri or cfg.scoring.model_uri)
    features = snapshot_features(spark, cfg, snapshot_date)
    rows = merge_scores(spark, cfg, snapshot_date, score_frame(spark, cfg, features, model), model)
    return ScoreResult(snapshot_date, rows, model, time.perf_counter() - started)


def merge_scores(spark: SparkSession, cfg: Config, snapshot_date: date, scores: DataFrame,
                 model: ResolvedModel) -> int:
    """One MERGE into the snapshot's partition: upsert its scores and delete its stale rows; returns rows.

    Stale rows (scored before, not eligible now) travel in the source marked ``_stale``
    instead of through ``WHEN NOT MATCHED BY SOURCE``, which Delta cannot keep partition-
    disjoint: this way two snapshots can be merged at the same time without conflict.

    :raises ModelOutputError: a score outside [0, 1] (or NaN); nothing is written.
    """
    table = ensure_table(spark, cfg, "user_scores")
    day = f"DATE'{snapshot_date.isoformat()}'"
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    fresh = scores.select(
        F.lit(snapshot_date).alias("snapshot_date"), "user_id", "platform", *SCORE_COLUMNS.values(),
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
        with table_lock(spark, cfg, "user_scores"):
            (target.alias("t").merge(fresh.unionByName(stale).alias("s"),
                                     f"t.snapshot_date = {day} AND t.snapshot_date = s.snapshot_date"
                                     " AND t.user_id = s.user_id AND t.platform = s.platform")
             .whenMatchedDelete(condition="s._stale").whenMatchedUpdate(set=columns)
             .whenNotMatchedInsert(condition="NOT s._stale", values=columns).execute())
    except Exception as e:
        if "CONSTRAINT" in str(e).upper():
            raise ModelOutputError(f"model {model.name} v{model.version} produced scores outside [0, 1] (or NaN)"
                                   f" for {snapshot_date}; nothing was written. Check the model's outputs") from e
        raise
    finally:
        fresh.unpersist()
    return rows
