"""``training_examples``: one row per ``(user_id, platform)`` eligible at a snapshot date.

Row contents: ``snapshot_date``, ``user_id``, ``platform``, ``behavior_text``
(:mod:`propensity.features.behavior`), the numeric :data:`FEATURE_COLUMNS`
(:mod:`propensity.features.aggregates`) and the labels (:mod:`propensity.features.labels`).

Strict point in time: features and text read only events with ``event_time`` in
``[T - lookback_days, T)``, labels only ``[T, T + horizon)``; a row exists where the user
has a behaviour event on that platform in the lookback (DESIGN section 5).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from datetime import date, timedelta

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from propensity.config import Config
from propensity.features.aggregates import feature_columns, is_eligible, platform_aggregates, user_aggregates
from propensity.features.behavior import newest, recent_events, sequence_text, target_text, user_events
from propensity.features.labels import label_aggregates, label_columns
from propensity.features.windows import Windows, event_date_range
from propensity.tables import ensure_table, require_table

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
        target_text(sequence_text(F.col("_sequence"), w), F.col("platform")).alias("behavior_text"),
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
    events = spark.table(require_table(spark, cfg, "events", "ingest"))
    if with_labels:
        _warn_incomplete_horizons(events, cfg, dates)
    table = ensure_table(spark, cfg, "training_examples")
    frames = [build_training_examples(spark, events, cfg, d, with_labels) for d in dates]
    built = functools.reduce(DataFrame.unionByName, frames)
    replaced = F.col("snapshot_date").isin(dates)
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
    horizon = max(cfg.features.purchase_horizon_days, cfg.features.click_horizon_days,
                  cfg.features.churn_horizon_days)
    late = [d for d in dates if d + timedelta(days=horizon) > span[1] + timedelta(days=1)]
    if late:
        log.warning("labels of snapshot %s are incomplete: its %d-day horizon ends after the last event date %s",
                    late[0].isoformat(), horizon, span[1].isoformat())


def label_summary(spark: SparkSession, cfg: Config, snapshot_dates: Sequence[date] | None = None) -> DataFrame:
    """Rows and label rates per snapshot date and platform of ``training_examples`` (for the demo and analysts).

    Columns: ``snapshot_date``, ``platform``, ``rows``, ``purchase_rate``, ``click_rows`` (rows with
    a click label), ``click_rate`` (NULL where no row has one), ``churn_rate``; rates are over
    labelled rows only.

    :param spark: the session.
    :param cfg: configuration.
    :param snapshot_dates: dates to summarise; None: all.
    :raises TableNotFoundError: ``training_examples`` does not exist (run ``propensity features``).
    """
    df = spark.table(require_table(spark, cfg, "training_examples", "features"))
    if snapshot_dates is not None:
        df = df.where(F.col("snapshot_date").isin(list(snapshot_dates)))
    return (df.groupBy("snapshot_date", "platform")
            .agg(F.count(F.lit(1)).alias("rows"), F.avg("label_purchase").alias("purchase_rate"),
                 F.count("label_click").alias("click_rows"), F.avg("label_click").alias("click_rate"),
                 F.avg("label_churn").alias("churn_rate"))
            .orderBy("snapshot_date", "platform"))
