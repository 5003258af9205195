"""``training_examples``: one row per ``(user_id, platform)`` eligible at a snapshot date.

Row contents: ``snapshot_date``, ``user_id``, ``platform``, ``behavior_text``
(:mod:`propensity.stages.features.behavior`), the numeric :data:`FEATURE_COLUMNS`
(:mod:`propensity.stages.features.aggregates`) and the labels (:mod:`propensity.stages.features.labels`).

Strict point in time: features and text read only events with ``event_time`` in
``[T - lookback_days, T)``, labels only ``[T, T + horizon)``; a row exists where the user
has a behaviour event on that platform in the lookback (docs/labels.md).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from datetime import date, timedelta

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from propensity.core.config import Config
from propensity.core.datasets import SnapshotPlan, event_date_range, labelled_snapshots
from propensity.core.locks import table_lock
from propensity.core.schema import TEXT_COLUMN
from propensity.core.sequence import SEQUENCE_COLUMN
from propensity.core.tables import ensure_table, require_table
from propensity.stages.features.aggregates import feature_columns, is_eligible, platform_aggregates, user_aggregates
from propensity.stages.features.behavior import (
    newest,
    recent_events,
    sequence_ids,
    sequence_text,
    target_text,
    user_events,
)
from propensity.stages.features.labels import label_aggregates, label_columns
from propensity.stages.features.windows import Windows

#: Snapshots built per query and Delta commit by :func:`ensure_snapshots` (bounds the size of one query plan).
SNAPSHOTS_PER_COMMIT = 8

log = logging.getLogger(__name__)


def build_training_examples(spark: SparkSession, events: DataFrame, cfg: Config, snapshot_date: date,
                            with_labels: bool = True) -> DataFrame:
    """Features (and labels) of every ``(user_id, platform)`` eligible at ``snapshot_date``.

    A pure transformation: nothing is read or written besides ``events``. One scan of the
    events in ``[T - lookback_days, T + max horizon)`` (``[.., T)`` without labels), one
    shuffle by ``user_id``; then one aggregation per ``(user_id, platform)`` computes
    features, labels and the newest events, and one window per ``user_id`` the
    cross-platform parts. Feature expressions only read events before T.

    :param spark: the session (kept for a uniform stage signature).
    :param events: rows with the schema of the ``events`` table (any superset of its columns).
    :param cfg: configuration; ``features.*`` sets the windows and the sequence length.
    :param snapshot_date: T, meaning T 00:00 UTC.
    :param with_labels: compute the labels; False (scoring) leaves them NULL.
    :returns: the columns of ``training_examples`` in table order.
    """
    w = Windows.of(snapshot_date, cfg.features)
    max_events = cfg.features.max_sequence_events
    span = w.span(events, with_future=with_labels).repartition("user_id")
    per_platform = span.groupBy("user_id", "platform").agg(
        *platform_aggregates(w), recent_events(w).alias("_recent"), *(label_aggregates(w) if with_labels else []))
    user = Window.partitionBy("user_id")
    eligible = per_platform.select(
        "*", *user_aggregates(user), user_events(user, "_recent", max_events).alias("_user_events"),
    ).where(is_eligible())
    sequence = eligible.withColumn("_sequence", newest(F.col("_user_events"), max_events))
    return sequence.select(
        F.lit(snapshot_date).alias("snapshot_date"), "user_id", "platform",
        target_text(sequence_text(F.col("_sequence"), w), F.col("platform")).alias(TEXT_COLUMN),
        sequence_ids(F.col("_sequence"), w, F.col("platform")).alias(SEQUENCE_COLUMN),
        *feature_columns(w), *label_columns(with_labels),
    )


def write_snapshot(spark: SparkSession, cfg: Config, snapshot_date: date, with_labels: bool = True) -> int:
    """Build snapshot T from the ``events`` table into ``training_examples``, replacing only T's partition.

    :param spark: the session.
    :param cfg: configuration.
    :param snapshot_date: T.
    :param with_labels: compute labels (False for scoring: labels NULL).
    :returns: the number of rows written for T.
    :raises TableNotFoundError: ``events`` does not exist (run ``propensity ingest``).
    """
    return write_snapshots(spark, cfg, [snapshot_date], with_labels)[snapshot_date]


def write_snapshots(spark: SparkSession, cfg: Config, snapshot_dates: Sequence[date],
                    with_labels: bool = True) -> dict[date, int]:
    """Build several snapshots and replace their partitions in one Delta commit.

    :param spark: the session.
    :param cfg: configuration.
    :param snapshot_dates: the dates T to build (other partitions are left as they are).
    :param with_labels: compute labels.
    :returns: rows written per snapshot date.
    :raises TableNotFoundError: ``events`` does not exist (run ``propensity ingest``).
    """
    dates = sorted(set(snapshot_dates))
    if not dates:
        return {}
    events = spark.table(require_table(spark, cfg, "events"))
    if with_labels:
        _warn_incomplete_horizons(events, cfg, dates)
    table = ensure_table(spark, cfg, "training_examples")
    frames = [build_training_examples(spark, events, cfg, d, with_labels) for d in dates]
    built = functools.reduce(DataFrame.unionByName, frames)
    replaced = F.col("snapshot_date").isin(dates)
    with table_lock(spark, cfg, "training_examples"):
        built.select(*spark.table(table).columns).writeTo(table).overwrite(replaced)
    counts = {r["snapshot_date"]: r["count"]
              for r in spark.table(table).where(replaced).groupBy("snapshot_date").count().collect()}
    return {d: counts.get(d, 0) for d in dates}


def _warn_incomplete_horizons(events: DataFrame, cfg: Config, dates: list[date]) -> None:
    """Log a warning for snapshots whose label horizons reach past the last event date."""
    span = event_date_range(events)
    if span is None:
        log.warning("table events is empty: every snapshot will have 0 rows")
        return
    horizon = cfg.features.max_horizon_days
    late = [d for d in dates if d + timedelta(days=horizon) > span[1] + timedelta(days=1)]
    if late:
        log.warning("labels of snapshot %s are incomplete: its %d-day horizon ends after the last event date %s",
                    late[0].isoformat(), horizon, span[1].isoformat())


def ensure_snapshots(spark: SparkSession, cfg: Config, plan: SnapshotPlan) -> None:
    """Build (with labels) the snapshots of ``plan`` missing from ``training_examples``.

    Up to ``SNAPSHOTS_PER_COMMIT`` snapshots are built per query and Delta commit.

    A snapshot counts as present when it has labelled rows (``label_purchase`` is never
    NULL when labels were computed), so one written for scoring is rebuilt with labels.
    Present snapshots are not rebuilt, even if ``events`` changed since; use
    :func:`~propensity.stages.features.write_snapshot` for that.
    """
    wanted = plan.all()
    present = labelled_snapshots(spark, cfg, wanted)
    missing = [d for d in wanted if d not in present]
    for start in range(0, len(missing), SNAPSHOTS_PER_COMMIT):
        batch = missing[start:start + SNAPSHOTS_PER_COMMIT]
        log.info("building snapshots %s", ", ".join(d.isoformat() for d in batch))
        write_snapshots(spark, cfg, batch, with_labels=True)
