"""Event and ad feeds: raw lines -> ``bronze_<feed>`` -> candidate events -> one MERGE into ``events``."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from propensity.core.config import Config
from propensity.core.locks import table_lock
from propensity.core.tables import BRONZE_PREFIX, TABLES, create_table
from propensity.stages.ingest.accounting import Counted, FeedAccount
from propensity.stages.ingest.files import RawFile
from propensity.stages.ingest.parsing import Rejected, RunInfo, parse_lines, rejected
from propensity.stages.ingest.plan import Feed

#: ``(platform, feed, path, size, modified_at)`` of a file ingested before.
FileKey = tuple[str, str, str, int, object]


@dataclass(frozen=True)
class StagedFeed:
    """One feed after its new files went to bronze: what was read, rejected, and the candidate events.

    ``unfinished`` are the new files no finished run has read: events a killed run took from them
    are still this run's to count as accepted.
    """

    feed: Feed
    new_files: tuple[RawFile, ...]
    unfinished: tuple[str, ...]
    counted: Counted
    candidates: DataFrame | None
    rejected: Rejected | None

    def account(self, written: Written | None) -> FeedAccount:
        """The feed's account once the events MERGE has counted what it accepted (None: nothing new)."""
        return FeedAccount.of(self.feed.platform, self.feed.kind, len(self.feed.files),
                              len(self.feed.files) - len(self.new_files), self.counted,
                              written.accepted if written else 0, written.events if written else 0)


def stage_feed(spark: SparkSession, cfg: Config, feed: Feed, seen: set[FileKey], links: DataFrame,
               ad_features: DataFrame | None, run: RunInfo) -> StagedFeed:
    """Raw records of the feed's new files -> bronze (one commit) -> candidate events tagged with the feed.

    :param seen: the files of finished runs.
    """
    def key(f: RawFile) -> FileKey:
        return feed.platform, feed.kind, f.path, f.size, f.modified_at

    files = tuple(f for f in feed.files if cfg.ingest.reprocess or key(f) not in seen)
    unfinished = tuple(f.path for f in files if key(f) not in seen)
    if not files:
        return StagedFeed(feed, (), (), Counted(0, 0), None, None)
    paths = [f.path for f in files]
    parsed = parse_lines(spark, files, feed.columns, feed.header, feed.fmt.to_events(cfg.ingest)["_reject_reason"],
                         run)
    bronze = BRONZE_PREFIX + feed.name
    _write_replacing_files(spark, cfg, parsed, bronze, paths)
    staged = spark.table(cfg.table(bronze)).where(F.col("_ingest_run_id") == run.run_id)
    events = _to_events(spark, cfg, feed, staged, links, ad_features)
    if feed.kind != "ads":
        events = events.withColumn("_clicked", F.lit(False)).withColumn("_click_id", F.lit(None).cast("string"))
    return StagedFeed(feed, files, unfinished, Counted.of(staged), events.withColumn("_feed", F.lit(feed.kind)),
                      rejected(staged, F.lit(feed.platform), feed.kind, paths))


def _write_replacing_files(spark: SparkSession, cfg: Config, df: DataFrame, name: str, files: list[str]) -> None:
    """Write ``df`` into table ``name``, atomically replacing earlier rows of the same source files."""
    with table_lock(spark, cfg, name):
        if not create_table(spark, cfg, name, lambda target: df.writeTo(target).using("delta").create()):
            df.writeTo(cfg.table(name)).option("mergeSchema", "true").overwrite(F.col("_source_file").isin(files))


@dataclass(frozen=True)
class Written:
    """Of one feed's candidates: distinct new raw rows accepted, and event rows written (a click adds one)."""

    accepted: int
    events: int


def write_events(spark: SparkSession, cfg: Config, staged: Sequence[StagedFeed]) -> dict[tuple[str, str], Written]:
    """Deduplicate by ``event_id`` against the batch and the table and MERGE once.

    Of rows repeated in the batch the one of the first file (a click before a plain impression)
    is kept, so a run gives the same rows whatever the order Spark reads them in. Events a killed
    run took from this run's unfinished files count as accepted again (the MERGE does not add them
    twice), so a re-run's accounting equals that of a run never killed.

    :returns: per ``(platform, feed)`` what was accepted and written.
    """
    candidates = [s.candidates for s in staged if s.candidates is not None]
    if not candidates:
        return {}
    first = Window.partitionBy("event_id").orderBy("_source_file", F.col("_clicked").desc())
    batch = (functools.reduce(DataFrame.unionByName, candidates).withColumn("_n", F.row_number().over(first))
             .where(F.col("_n") == 1).drop("_n"))
    unfinished = sorted({path for s in staged for path in s.unfinished})
    existing = (spark.table(cfg.table("events")).where(~F.col("_source_file").isin(unfinished))
                .select("event_id", "event_date"))
    new = batch.join(existing, ["event_id", "event_date"], "left_anti").persist()
    rows = _explode_ad_clicks(new).persist()
    accepted, written = (_count_per_feed(new), _count_per_feed(rows))
    with table_lock(spark, cfg, "events"):
        (DeltaTable.forName(spark, cfg.table("events")).alias("t")
         .merge(rows.select(*TABLES["events"].column_names).alias("s"),
                "t.event_date = s.event_date AND t.event_id = s.event_id")
         .whenNotMatchedInsertAll().execute())
    new.unpersist()
    rows.unpersist()
    return {key: Written(accepted.get(key, 0), written.get(key, 0)) for key in accepted.keys() | written.keys()}


def _count_per_feed(df: DataFrame) -> dict[tuple[str, str], int]:
    return {(r["platform"], r["_feed"]): int(r["count"]) for r in df.groupBy("platform", "_feed").count().collect()}


def _to_events(spark: SparkSession, cfg: Config, feed: Feed, staged: DataFrame, links: DataFrame,
               ad_features: DataFrame | None) -> DataFrame:
    """Valid bronze rows -> event rows (the primary event of each raw row) with ids, items and user_id."""
    mapping = {k: v for k, v in feed.fmt.to_events(cfg.ingest).items() if k != "_reject_reason"}
    valid = staged.where(F.col("_reject_reason").isNull())
    ev = valid.select("_source_file", "_ingested_at", F.lit(feed.platform).alias("platform"),
                      *[expr.alias(name) for name, expr in mapping.items()])
    # Ids come from the raw row only, so later catalog changes never change them.
    ev = ev.withColumn("event_id", event_id(F.col("event_type")))
    if feed.kind == "ads":
        ev = ev.withColumn("_click_id", event_id(F.lit("ad_click")))
        ev = _enrich_ads(ev, ad_features)
    else:
        ev = _enrich_items(spark, cfg, feed.platform, ev)
    linked = links.select("platform", "platform_user_id", F.col("user_id").alias("linked_user_id"))
    ev = ev.join(F.broadcast(linked), ["platform", "platform_user_id"], "left")
    extra = ["_clicked", "_click_id"] if feed.kind == "ads" else []
    return ev.select(
        "event_id", "platform", "platform_user_id", resolved_user_id(F.col("linked_user_id")).alias("user_id"),
        "event_time", F.to_date("event_time").alias("event_date"), "event_type", "item_id", "category", "brand",
        "price", "session_id", "campaign_id", "_source_file", "_ingested_at", *extra,
    )


def resolved_user_id(linked_user_id: Column) -> Column:
    """The linked cross-platform id, else ``<platform>:<platform_user_id>``."""
    return F.coalesce(linked_user_id, F.concat(F.col("platform"), F.lit(":"), F.col("platform_user_id")))


def _enrich_items(spark: SparkSession, cfg: Config, platform: str, ev: DataFrame) -> DataFrame:
    """Fill category, brand and price from the platform's catalog where the row lacks them."""
    items = (spark.table(cfg.table("items")).where(F.col("platform") == platform)
             .select("item_id", F.col("category").alias("i_category"), F.col("brand").alias("i_brand"),
                     F.col("price").alias("i_price")))
    ev = ev.join(F.broadcast(items), "item_id", "left")
    return (ev.withColumn("category", F.coalesce("category_code", "i_category", "category_ref"))
            .withColumn("brand", F.coalesce("brand", "i_brand")).withColumn("price", F.coalesce("price", "i_price")))


def _enrich_ads(ev: DataFrame, ad_features: DataFrame | None) -> DataFrame:
    """Ad groups get category, campaign, brand and price from the ad_feature file."""
    if ad_features is None:
        return ev.withColumn("category", F.coalesce("category_code", "category_ref"))
    ev = ev.join(F.broadcast(ad_features), ev["item_id"] == ad_features["ad_item_id"], "left")
    return (ev.withColumn("category", F.coalesce("category_code", "ad_cate_id", "category_ref"))
            .withColumn("brand", F.coalesce("brand", "ad_brand")).withColumn("price", F.coalesce("price", "ad_price"))
            .withColumn("campaign_id", F.coalesce("campaign_id", "ad_campaign_id")))


def event_id(event_type: Column) -> Column:
    """Deterministic id of an event: a hash of what identifies it, so the same raw row gives the same id."""
    parts = [F.col("platform"), event_type, F.col("platform_user_id"),
             F.date_format("event_time", "yyyy-MM-dd'T'HH:mm:ss.SSSSSS"), F.col("item_id"),
             F.coalesce(F.col("session_id"), F.lit("")), F.coalesce(F.col("price").cast("string"), F.lit(""))]
    return F.substring(F.sha2(F.concat_ws("\u001f", *parts), 256), 1, 32)


def _explode_ad_clicks(new: DataFrame) -> DataFrame:
    """Each ad row is an impression; a clicked one also yields an ``ad_click`` at the same time."""
    impressions = new.drop("_clicked", "_click_id")
    clicks = (new.where(F.col("_clicked")).withColumn("event_type", F.lit("ad_click"))
              .withColumn("event_id", F.col("_click_id")).drop("_clicked", "_click_id"))
    return impressions.unionByName(clicks)
