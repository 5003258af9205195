"""``propensity publish``: ``user_scores`` at T -> ``inventory_demand`` and ``ads_audiences``.

* ``inventory_demand``: each scored user's purchase probability is spread over the
  categories of their behaviour events on that platform in ``[T - lookback_days, T)``,
  in proportion to the events; summed per platform and category it is the expected number
  of buyers. ``users_scored`` counts the scored users with that category in their mix.
* ``ads_audiences``: ``high_click`` = the top ``publish.high_click_fraction`` of scored
  users by click score on each platform that showed ads in the lookback; ``churn_risk`` =
  users with churn score >= ``publish.churn_threshold`` who spent at least
  ``publish.valuable_min_spend`` on that platform in the lookback. Ranked by score. Users
  appear by ``user_key``, their keyed pseudonym (:mod:`propensity.core.privacy`), never by id.
* ``user_keys``: the internal mapping ``user_id -> user_key``, extended with the snapshot's
  new users; the ``*_latest`` views join it, so they carry no raw id either.

Both tables are replaced per snapshot (one Delta transaction each). Without the pseudonym
secret (``PROPENSITY_PSEUDONYM_KEY``) publish refuses before reading anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from propensity.core.config import Config
from propensity.core.errors import DataNotReadyError
from propensity.core.locks import table_lock
from propensity.core.privacy import pseudonym_column, pseudonym_key
from propensity.core.schema import BEHAVIOUR_EVENT_TYPES
from propensity.core.tables import LATEST_VIEWS, drop_table, ensure_latest_view, ensure_table, require_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishResult:
    """Rows written per table."""

    inventory_rows: int
    audience_rows: dict[str, int]

    def format(self) -> str:
        """One line: rows per table, audiences by name."""
        audiences = ", ".join(f"{k}={v}" for k, v in sorted(self.audience_rows.items())) or "none"
        return f"inventory_demand: {self.inventory_rows} rows; ads_audiences: {audiences}"


def lookback_events(events: DataFrame, cfg: Config, snapshot_date: date) -> DataFrame:
    """Events in ``[T - lookback_days, T)``."""
    end = datetime.combine(snapshot_date, time())
    start = end - timedelta(days=cfg.features.lookback_days)
    return events.where((F.col("event_time") >= F.lit(start)) & (F.col("event_time") < F.lit(end)))


def inventory_demand(scores: DataFrame, history: DataFrame) -> DataFrame:
    """Expected buyers and scored users per platform and category (see the module docstring)."""
    behaviour = history.where(F.col("event_type").isin(*BEHAVIOUR_EVENT_TYPES) & F.col("category").isNotNull())
    counts = behaviour.groupBy("user_id", "platform", "category").agg(F.count(F.lit(1)).alias("n"))
    mix = counts.withColumn("share", F.col("n") / F.sum("n").over(Window.partitionBy("user_id", "platform")))
    spread = scores.select("user_id", "platform", "purchase_score").join(mix, ["user_id", "platform"])
    return spread.groupBy("platform", "category").agg(
        F.sum(F.col("purchase_score") * F.col("share")).alias("expected_buyers"),
        F.countDistinct("user_id").alias("users_scored"),
    )


def ads_audiences(scores: DataFrame, history: DataFrame, cfg: Config) -> DataFrame:
    """``high_click`` and ``churn_risk`` audiences with rank 1 = strongest."""
    ad_platforms = history.where(F.col("event_type") == "ad_impression").select("platform").distinct()
    clicks = scores.join(ad_platforms, "platform").select("platform", "user_id", F.col("click_score").alias("score"))
    per_platform = Window.partitionBy("platform")
    ranked = Window.partitionBy("platform").orderBy(F.col("score").desc(), F.col("user_id"))
    high_click = (clicks.withColumn("rank", F.row_number().over(ranked))
                  .withColumn("keep", F.ceil(F.count(F.lit(1)).over(per_platform) * cfg.publish.high_click_fraction))
                  .where(F.col("rank") <= F.col("keep")).drop("keep").withColumn("audience", F.lit("high_click")))
    spend = (history.where(F.col("event_type") == "purchase").groupBy("user_id", "platform")
             .agg(F.sum(F.coalesce("price", F.lit(0.0))).alias("spend")))
    at_risk = (scores.join(spend, ["user_id", "platform"])
               .where((F.col("churn_score") >= cfg.publish.churn_threshold)
                      & (F.col("spend") >= cfg.publish.valuable_min_spend))
               .select("platform", "user_id", F.col("churn_score").alias("score")))
    churn_risk = at_risk.withColumn("rank", F.row_number().over(ranked)).withColumn("audience", F.lit("churn_risk"))
    columns = ["platform", "audience", "user_id", "score", "rank"]
    return high_click.select(*columns).unionByName(churn_risk.select(*columns))


def update_user_keys(spark: SparkSession, cfg: Config, users: DataFrame, key: bytes) -> DataFrame:
    """Add the pseudonyms of ``users``' ``user_id`` values missing from ``user_keys``; returns their
    ``(user_id, user_key)``."""
    table = ensure_table(spark, cfg, "user_keys")
    ids = users.select("user_id").distinct()
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    new = ids.select("user_id", pseudonym_column(key, "user_id").alias("user_key"),
                     F.lit(now).cast("timestamp").alias("created_at"))
    with table_lock(spark, cfg, "user_keys"):
        (DeltaTable.forName(spark, table).alias("k").merge(new.alias("n"), "k.user_id = n.user_id")
         .whenNotMatchedInsertAll().execute())
    return spark.table(table).select("user_id", "user_key").join(ids, "user_id")


def _ensure_pseudonymised_audiences(spark: SparkSession, cfg: Config) -> str:
    """``ads_audiences``, replaced first if it is still of the old schema with raw ``user_id`` values."""
    table = cfg.table("ads_audiences")
    if spark.catalog.tableExists(table.replace("`", "")) and "user_id" in spark.table(table).columns:
        log.warning("%s carried raw user ids; dropping it for the pseudonymised schema (re-publish older"
                    " snapshots if they are still needed)", table)
        drop_table(spark, cfg, "ads_audiences")
    return ensure_table(spark, cfg, "ads_audiences")


def publish(spark: SparkSession, cfg: Config, snapshot_date: date) -> PublishResult:
    """Replace the snapshot's rows of ``inventory_demand`` and ``ads_audiences``.

    :raises MissingSecretError: ``PROPENSITY_PSEUDONYM_KEY`` is not set.
    :raises DataNotReadyError: ``user_scores`` has no rows for ``snapshot_date``.
    """
    key = pseudonym_key("publish")
    scores = (spark.table(require_table(spark, cfg, "user_scores"))
              .where(F.col("snapshot_date") == F.lit(snapshot_date)))
    if scores.isEmpty():
        raise DataNotReadyError(f"user_scores has no rows for {snapshot_date}; run"
                              f" `propensity score --snapshot-date {snapshot_date}` first")
    history = lookback_events(spark.table(require_table(spark, cfg, "events")), cfg, snapshot_date)
    keys = update_user_keys(spark, cfg, scores, key)
    day = F.lit(snapshot_date).alias("snapshot_date")
    demand = inventory_demand(scores, history).select(day, "*").persist()
    audiences = (ads_audiences(scores, history, cfg).join(keys, "user_id")
                 .select(day, "platform", "audience", "user_key", "score", "rank").persist())
    tables = {"inventory_demand": ensure_table(spark, cfg, "inventory_demand"),
              "ads_audiences": _ensure_pseudonymised_audiences(spark, cfg)}
    for name, df in (("inventory_demand", demand), ("ads_audiences", audiences)):
        with table_lock(spark, cfg, name):
            df.writeTo(tables[name]).overwrite(F.col("snapshot_date") == F.lit(snapshot_date))
    for name in LATEST_VIEWS:
        ensure_latest_view(spark, cfg, name, replace=True)
    counts = {r["audience"]: r["count"] for r in audiences.groupBy("audience").count().collect()}
    result = PublishResult(demand.count(), counts)
    demand.unpersist()
    audiences.unpersist()
    return result
