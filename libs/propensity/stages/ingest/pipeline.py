"""Ingestion: raw feeds -> ``bronze_<feed>`` -> ``events``, ``items``, ``identity_map``, ``rejects``.

Guarantees (docs/formats.md):

* everything is validated (files exist, formats known, headers carry the required
  columns) before any table is touched, so a bad config fails without side effects;
* every line read ends up either as an event, as a duplicate of one, or in
  ``rejects`` with a reason: ``read = accepted + duplicates + rejected`` per feed,
  printed and kept in ``ingest_runs``;
* files already ingested (same path, size and modification time, kept in
  ``ingested_files``) are skipped, as ``COPY INTO`` does; with ``ingest.reprocess``
  they are read again, and the MERGE on the deterministic ``event_id`` still adds
  nothing twice. Bronze and rejects rows of a re-read file are replaced, not added;
* a run killed at any moment is simply run again: every write is idempotent (bronze and
  rejects replace their files' rows, MERGEs upsert), a file counts as read only once the
  run that read it has its ``ingest_runs`` row (the last write), and events a killed run
  already added still count as this run's, so the tables and the accounting end up exactly
  as if the run had never been killed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from propensity.core.config import Config
from propensity.core.errors import InputDataError
from propensity.core.locks import table_lock
from propensity.core.tables import ensure_table
from propensity.stages.ingest.accounting import IngestReport
from propensity.stages.ingest.events import FileKey, StagedFeed, resolved_user_id, stage_feed, write_events
from propensity.stages.ingest.parsing import RunInfo, write_rejects
from propensity.stages.ingest.plan import plan_feeds, plan_side_files
from propensity.stages.ingest.side_files import load_ad_features, load_identity, load_items

_OWN_TABLES = ("events", "rejects", "identity_map", "items", "ingest_runs", "ingested_files")


def ingest(spark: SparkSession, cfg: Config) -> IngestReport:
    """Ingest every configured feed; see the module docstring for the guarantees.

    Each table is written once per run (bronze once per feed), so a run is a handful
    of Delta commits whatever the number of feeds.

    :raises InputDataError: no feed is configured, a file is missing or a header lacks a required column
        (no table is touched).
    """
    if not cfg.platforms and not cfg.ads:
        raise InputDataError("no feeds configured: add `platforms` to a --conf overlay"
                             " (propensity generate writes one)")
    feeds = plan_feeds(spark, cfg)
    sides = plan_side_files(spark, cfg)
    for name in _OWN_TABLES:
        ensure_table(spark, cfg, name)
    run = RunInfo(uuid.uuid4().hex[:12], datetime.now(UTC).replace(tzinfo=None, microsecond=0))
    identity_file = next((s for s in sides if s.kind == "identity"), None)
    links, identity = load_identity(spark, cfg, identity_file, run)
    items = load_items(spark, cfg, [s for s in sides if s.kind == "items"], run)
    ad_features = {s.platform: load_ad_features(spark, cfg, s, run) for s in sides if s.kind == "ad_feature"}
    seen = _ingested_files(spark, cfg)
    staged = [stage_feed(spark, cfg, feed, seen, links,
                         ad_features[feed.platform].rows if feed.platform in ad_features else None, run)
              for feed in feeds]
    written = write_events(spark, cfg, staged)
    side_loads = [*([identity] if identity else []), *items, *ad_features.values()]
    write_rejects(spark, cfg, [*(s.rejected for s in side_loads),
                               *(s.rejected for s in staged if s.rejected is not None)])
    _record_files(spark, cfg, run, staged)
    _rebuild_identity_map(spark, cfg, links)
    accounts = tuple(s.account for s in side_loads) + tuple(
        s.account(written.get((s.feed.platform, s.feed.kind))) for s in staged)
    report = IngestReport(run.run_id, run.started_at, accounts)
    _record_run(spark, cfg, report)
    return report


def _ingested_files(spark: SparkSession, cfg: Config) -> set[FileKey]:
    """Files read by finished runs (those with an ``ingest_runs`` row); a killed run's files are read again."""
    finished = spark.table(cfg.table("ingest_runs")).select("run_id").distinct()
    rows = (spark.table(cfg.table("ingested_files")).join(finished, "run_id")
            .select("platform", "feed", "path", "size", "modified_at").collect())
    return {(r[0], r[1], r[2], r[3], r[4]) for r in rows}


def _record_files(spark: SparkSession, cfg: Config, run: RunInfo, staged: Sequence[StagedFeed]) -> None:
    rows = [(s.feed.platform, s.feed.kind, f.path, f.size, f.modified_at, run.run_id, run.started_at)
            for s in staged for f in s.new_files]
    if not rows:
        return
    df = spark.createDataFrame(rows, spark.table(cfg.table("ingested_files")).schema)
    with table_lock(spark, cfg, "ingested_files"):
        (DeltaTable.forName(spark, cfg.table("ingested_files")).alias("t")
         .merge(df.alias("s"), "t.platform = s.platform AND t.feed = s.feed AND t.path = s.path")
         .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())


def _rebuild_identity_map(spark: SparkSession, cfg: Config, links: DataFrame) -> None:
    """identity_map = every platform account seen or linked; events follow changed links."""
    seen = spark.table(cfg.table("events")).select("platform", "platform_user_id").distinct()
    linked = links.select("platform", "platform_user_id", F.col("user_id").alias("linked_user_id"))
    accounts = seen.unionByName(links.select("platform", "platform_user_id")).distinct()
    resolved = accounts.join(linked, ["platform", "platform_user_id"], "left").select(
        "platform", "platform_user_id", resolved_user_id(F.col("linked_user_id")).alias("user_id"),
        F.col("linked_user_id").isNotNull().alias("linked"),
    ).persist()
    current = spark.table(cfg.table("identity_map"))
    if resolved.exceptAll(current).isEmpty() and current.exceptAll(resolved).isEmpty():
        return
    with table_lock(spark, cfg, "identity_map"):
        resolved.writeTo(cfg.table("identity_map")).overwrite(F.lit(True))
    with table_lock(spark, cfg, "events"):
        (DeltaTable.forName(spark, cfg.table("events")).alias("t")
         .merge(spark.table(cfg.table("identity_map")).alias("s"),
                "t.platform = s.platform AND t.platform_user_id = s.platform_user_id")
         .whenMatchedUpdate(condition="t.user_id <> s.user_id", set={"user_id": "s.user_id"}).execute())


def _record_run(spark: SparkSession, cfg: Config, report: IngestReport) -> None:
    rows = [(report.run_id, report.started_at, a.platform, a.feed, a.files, a.skipped_files, a.read, a.accepted,
             a.duplicates, a.rejected, a.events_written) for a in report.accounts]
    df = spark.createDataFrame(rows, spark.table(cfg.table("ingest_runs")).schema)
    with table_lock(spark, cfg, "ingest_runs"):
        df.writeTo(cfg.table("ingest_runs")).append()
