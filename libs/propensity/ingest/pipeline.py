"""Ingestion: raw feeds -> ``bronze_<feed>`` -> ``events``, ``items``, ``identity_map``, ``rejects``.

Guarantees (DESIGN section 4):

* everything is validated (files exist, formats known, headers carry the required
  columns) before any table is touched, so a bad config fails without side effects;
* every line read ends up either as an event, as a duplicate of one, or in
  ``rejects`` with a reason: ``read = accepted + duplicates + rejected`` per feed,
  printed and kept in ``ingest_runs``;
* files already ingested (same path, size and modification time, kept in
  ``ingested_files``) are skipped, as ``COPY INTO`` does; with ``ingest.reprocess``
  they are read again, and the MERGE on the deterministic ``event_id`` still adds
  nothing twice. Bronze and rejects rows of a re-read file are replaced, not added.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from propensity.config import Config
from propensity.ingest.files import (
    RawFile,
    header_columns,
    list_files,
    read_first_line,
    read_raw_lines,
    split_fields,
)
from propensity.ingest.formats import (
    FORMATS,
    IDENTITY_COLUMNS,
    FeedFormat,
    item_rules,
    price_column,
)
from propensity.tables import ensure_table


@dataclass(frozen=True)
class Feed:
    """One configured event or ad feed and its files."""

    platform: str
    kind: str
    fmt: FeedFormat
    files: tuple[RawFile, ...]
    columns: tuple[str, ...]
    header: str | None

    @property
    def name(self) -> str:
        """Feed name used for the bronze table: the platform, with ``_ads`` for ad feeds."""
        return self.platform if self.kind == "events" else f"{self.platform}_ads"


@dataclass(frozen=True)
class SideFile:
    """A catalog, ad_feature or identity file with its validated header."""

    platform: str
    kind: str
    files: tuple[RawFile, ...]
    columns: tuple[str, ...]
    header: str


@dataclass
class FeedAccount:
    """Accounting of one feed in one run: ``read = accepted + duplicates + rejected``."""

    platform: str
    feed: str
    files: int = 0
    skipped_files: int = 0
    read: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    events_written: int = 0

    @property
    def balanced(self) -> bool:
        """Whether every line read is accounted for."""
        return self.read == self.accepted + self.duplicates + self.rejected


@dataclass
class IngestReport:
    """What one ``ingest`` run did."""

    run_id: str
    started_at: datetime
    accounts: list[FeedAccount] = field(default_factory=list)

    def format(self) -> str:
        """The accounting as a fixed-width text table."""
        head = ("platform", "feed", "files", "skipped", "read", "accepted", "duplicates", "rejected", "events")
        rows = [head] + [
            (a.platform, a.feed, str(a.files), str(a.skipped_files), str(a.read), str(a.accepted),
             str(a.duplicates), str(a.rejected), str(a.events_written))
            for a in self.accounts
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                 for r in rows]
        return "\n".join(lines)


def ingest(spark: SparkSession, cfg: Config) -> IngestReport:
    """Ingest every configured feed; see the module docstring for the guarantees.

    Each table is written once per run (bronze once per feed), so a run is a handful
    of Delta commits whatever the number of feeds.

    :raises InputDataError: a file is missing or a header lacks a required column (no table is touched).
    """
    feeds = plan_feeds(spark, cfg)
    side_files = plan_side_files(spark, cfg)
    for name in ("events", "rejects", "identity_map", "items", "ingest_runs", "ingested_files"):
        ensure_table(spark, cfg, name)
    run = _Run(IngestReport(uuid.uuid4().hex[:12], _utc_now()))
    links = _load_identity(spark, cfg, run, [s for s in side_files if s.kind == "identity"])
    _load_items(spark, cfg, run, [s for s in side_files if s.kind == "items"])
    ad_features = {s.platform: _load_ad_features(spark, run, s) for s in side_files if s.kind == "ad_feature"}
    seen = _ingested_files(spark, cfg)
    candidates = [_stage_feed(spark, cfg, run, feed, seen, links, ad_features.get(feed.platform)) for feed in feeds]
    _write_events(spark, cfg, run, [c for c in candidates if c is not None])
    _write_rejects(spark, cfg, run)
    _record_files(spark, cfg, run)
    _rebuild_identity_map(spark, cfg, links)
    _record_run(spark, cfg, run.report)
    return run.report


@dataclass
class _Run:
    """State collected while one run stages its feeds, written at the end."""

    report: IngestReport
    rejects: list[DataFrame] = field(default_factory=list)
    reread_files: list[str] = field(default_factory=list)
    new_files: list[tuple[Feed, RawFile]] = field(default_factory=list)

    def account(self, platform: str, feed: str) -> FeedAccount:
        for a in self.report.accounts:
            if (a.platform, a.feed) == (platform, feed):
                return a
        account = FeedAccount(platform, feed)
        self.report.accounts.append(account)
        return account


def plan_feeds(spark: SparkSession, cfg: Config) -> list[Feed]:
    """Resolve and validate the event and ad feeds of the config."""
    feeds = []
    for p in cfg.platforms:
        feeds.append(_plan_feed(spark, p.name, "events", FORMATS[p.format], p.events))
    for a in cfg.ads:
        feeds.append(_plan_feed(spark, a.platform, "ads", FORMATS[a.format], a.path))
    return feeds


def _plan_feed(spark: SparkSession, platform: str, kind: str, fmt: FeedFormat, pattern: str) -> Feed:
    what = f"platform {platform} {kind} ({fmt.name})"
    files = list_files(spark, pattern, what)
    if not fmt.has_header:
        return Feed(platform, kind, fmt, tuple(files), fmt.columns, None)
    columns = header_columns(spark, files, fmt.required, what)
    return Feed(platform, kind, fmt, tuple(files), tuple(columns), read_first_line(spark, files[0].path))


def plan_side_files(spark: SparkSession, cfg: Config) -> list[SideFile]:
    """Resolve and validate item catalogs, ad_feature files and the identity file."""
    wanted: list[tuple[str, str, str, tuple[str, ...]]] = []
    wanted += [(p.name, "items", p.items, ("item_id",)) for p in cfg.platforms if p.items]
    wanted += [(a.platform, "ad_feature", a.ad_feature, ("adgroup_id",)) for a in cfg.ads if a.ad_feature]
    if cfg.identity:
        wanted.append(("*", "identity", cfg.identity, IDENTITY_COLUMNS))
    planned = []
    for platform, kind, pattern, required in wanted:
        what = f"{kind} file" if platform == "*" else f"platform {platform} {kind}"
        files = list_files(spark, pattern, what)
        columns = header_columns(spark, files, required, what)
        planned.append(SideFile(platform, kind, tuple(files), tuple(columns), read_first_line(spark, files[0].path)))
    return planned


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def _safe_name(column: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", column) or "_blank"


def _parse(spark: SparkSession, files: list[RawFile], columns: tuple[str, ...], header: str | None,
           reason: Column, run_id: str, now: datetime) -> DataFrame:
    """Lines -> raw string fields (safe names) + ``_reject_reason`` + lineage columns."""
    lines = read_raw_lines(spark, files, header)
    fields = split_fields(lines, list(columns))
    expected = len(columns)
    count_reason = F.when(F.col("_field_count") != expected, F.concat(
        F.lit(f"wrong column count: expected {expected}, got "), F.col("_field_count").cast("string")))
    return fields.select(
        *[F.col(f"`{c}`").alias(_safe_name(c)) for c in columns],
        F.col("_raw"), F.col("_source_file"),
        F.lit(now).cast("timestamp").alias("_ingested_at"), F.lit(run_id).alias("_ingest_run_id"),
        F.coalesce(count_reason, reason).alias("_reject_reason"),
    )


def _write_replacing_files(df: DataFrame, table: str, files: list[str], spark: SparkSession) -> None:
    """Write ``df`` into ``table``, atomically replacing earlier rows of the same source files."""
    if not spark.catalog.tableExists(table.replace("`", "")):
        df.writeTo(table).using("delta").create()
        return
    df.writeTo(table).option("mergeSchema", "true").overwrite(F.col("_source_file").isin(files))


def _keep_rejects(run: _Run, parsed: DataFrame, platform: Column, feed: str, files: list[str]) -> None:
    run.rejects.append(parsed.where(F.col("_reject_reason").isNotNull()).select(
        platform.alias("platform"), F.lit(feed).alias("feed"), "_source_file", F.col("_raw").alias("raw"),
        F.col("_reject_reason").alias("reason"), "_ingested_at", "_ingest_run_id",
    ))
    run.reread_files.extend(files)


def _write_rejects(spark: SparkSession, cfg: Config, run: _Run) -> None:
    """One commit: the rejects of every file read in this run replace those of earlier reads."""
    if not run.rejects:
        return
    rejects = functools.reduce(DataFrame.unionByName, run.rejects)
    rejects.writeTo(cfg.table("rejects")).overwrite(F.col("_source_file").isin(run.reread_files))


def _load_identity(spark: SparkSession, cfg: Config, run: _Run, sides: list[SideFile]) -> DataFrame:
    """Valid identity links; bad, conflicting or unknown-platform rows go to rejects."""
    schema = "platform STRING, platform_user_id STRING, user_id STRING"
    if not sides:
        return spark.createDataFrame([], schema)
    side = sides[0]
    known = sorted({p.name for p in cfg.platforms} | {a.platform for a in cfg.ads})
    blank = [F.col(c).isNull() | (F.trim(F.col(c)) == "") for c in IDENTITY_COLUMNS]
    reason = (F.when(blank[0], "missing platform").when(blank[1], "missing platform_user_id")
              .when(blank[2], "missing user_id")
              .when(~F.trim(F.col("platform")).isin(known),
                    F.concat(F.lit("unknown platform '"), F.col("platform"), F.lit("'"))))
    parsed = _side_parse(spark, side, reason, run)
    parsed = parsed.select([F.trim(F.col(c)).alias(c) if c in IDENTITY_COLUMNS else F.col(c) for c in parsed.columns])
    key = ["platform", "platform_user_id"]
    targets = (parsed.where(F.col("_reject_reason").isNull()).groupBy(*key)
               .agg(F.countDistinct("user_id").alias("_targets")))
    conflict = F.when(F.col("_targets") > 1, F.concat(F.lit("conflicting links for "), F.col("platform"), F.lit(":"),
                                                      F.col("platform_user_id")))
    parsed = (parsed.join(targets, key, "left")
              .withColumn("_reject_reason", F.coalesce(F.col("_reject_reason"), conflict)).drop("_targets").persist())
    _keep_rejects(run, parsed, F.coalesce(F.col("platform"), F.lit("*")), "identity", [f.path for f in side.files])
    links = parsed.where(F.col("_reject_reason").isNull()).select(*IDENTITY_COLUMNS).distinct().persist()
    _account_side(run, side, parsed, links)
    return links


def _load_items(spark: SparkSession, cfg: Config, run: _Run, sides: list[SideFile]) -> None:
    """All catalogs in one MERGE keyed by (platform, item_id); bad rows go to rejects."""
    frames = []
    for side in sides:
        parsed = _side_parse(spark, side, item_rules(), run).persist()
        _keep_rejects(run, parsed, F.lit(side.platform), "items", [f.path for f in side.files])
        items = parsed.where(F.col("_reject_reason").isNull()).select(
            F.lit(side.platform).alias("platform"), F.trim(F.col("item_id")).alias("item_id"),
            *[_optional(parsed, c) for c in ("title", "category", "brand")],
            (price_column(F.col("price")) if "price" in parsed.columns else F.lit(None).cast("double")).alias("price"),
            "_source_file", "_ingested_at",
        ).dropDuplicates(["platform", "item_id"]).persist()
        _account_side(run, side, parsed, items)
        frames.append(items)
    if not frames:
        return
    target = DeltaTable.forName(spark, cfg.table("items"))
    (target.alias("t").merge(functools.reduce(DataFrame.unionByName, frames).alias("s"),
                             "t.platform = s.platform AND t.item_id = s.item_id")
     .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())


def _load_ad_features(spark: SparkSession, run: _Run, side: SideFile) -> DataFrame:
    reason = F.when(F.col("adgroup_id").isNull() | (F.trim(F.col("adgroup_id")) == ""), "missing adgroup_id")
    parsed = _side_parse(spark, side, reason, run).persist()
    _keep_rejects(run, parsed, F.lit(side.platform), "ad_feature", [f.path for f in side.files])
    features = parsed.where(F.col("_reject_reason").isNull()).select(
        F.trim(F.col("adgroup_id")).alias("ad_item_id"),
        *[_optional(parsed, c).alias(f"ad_{c}") for c in ("cate_id", "campaign_id", "brand")],
        (price_column(F.col("price")) if "price" in parsed.columns else F.lit(None).cast("double")).alias("ad_price"),
    ).dropDuplicates(["ad_item_id"]).persist()
    _account_side(run, side, parsed, features)
    return features


def _side_parse(spark: SparkSession, side: SideFile, reason: Column, run: _Run) -> DataFrame:
    return _parse(spark, list(side.files), side.columns, side.header, reason, run.report.run_id,
                  run.report.started_at)


def _optional(df: DataFrame, column: str) -> Column:
    if column not in df.columns:
        return F.lit(None).cast("string").alias(column)
    return F.when(F.trim(F.col(column)) != "", F.trim(F.col(column))).alias(column)


def _account_side(run: _Run, side: SideFile, parsed: DataFrame, accepted: DataFrame) -> None:
    stats = parsed.agg(F.count(F.lit(1)).alias("read"), F.count("_reject_reason").alias("rejected")).first()
    assert stats is not None
    distinct = accepted.count()
    account = run.account(side.platform, side.kind)
    account.files = len(side.files)
    account.read, account.rejected, account.accepted = stats["read"], stats["rejected"], distinct
    account.duplicates = account.read - account.rejected - distinct


def _ingested_files(spark: SparkSession, cfg: Config) -> set[tuple[str, str, str, int, datetime]]:
    rows = spark.table(cfg.table("ingested_files")).select("platform", "feed", "path", "size", "modified_at").collect()
    return {(r[0], r[1], r[2], r[3], r[4]) for r in rows}


def _stage_feed(spark: SparkSession, cfg: Config, run: _Run, feed: Feed,
                seen: set[tuple[str, str, str, int, datetime]], links: DataFrame,
                ad_features: DataFrame | None) -> DataFrame | None:
    """Raw lines -> bronze (one commit) -> candidate events tagged with the feed; None if no new file."""
    account = run.account(feed.platform, feed.kind)
    account.files = len(feed.files)
    files = [f for f in feed.files
             if cfg.ingest.reprocess or (feed.platform, feed.kind, f.path, f.size, f.modified_at) not in seen]
    account.skipped_files = len(feed.files) - len(files)
    if not files:
        return None
    mapping = feed.fmt.to_events()
    parsed = _parse(spark, files, feed.columns, feed.header, mapping["_reject_reason"], run.report.run_id,
                    run.report.started_at)
    paths = [f.path for f in files]
    bronze = cfg.table(f"bronze_{feed.name}")
    _write_replacing_files(parsed, bronze, paths, spark)
    staged = spark.table(bronze).where(F.col("_ingest_run_id") == run.report.run_id)
    _keep_rejects(run, staged, F.lit(feed.platform), feed.kind, paths)
    run.new_files.extend((feed, f) for f in files)
    stats = staged.agg(F.count(F.lit(1)).alias("read"), F.count("_reject_reason").alias("rejected")).first()
    assert stats is not None
    account.read, account.rejected = stats["read"], stats["rejected"]
    events = _to_events(spark, cfg, feed, staged, links, ad_features)
    if feed.kind != "ads":
        events = events.withColumn("_clicked", F.lit(False)).withColumn("_click_id", F.lit(None).cast("string"))
    return events.withColumn("_feed", F.lit(feed.kind))


def _write_events(spark: SparkSession, cfg: Config, run: _Run, candidates: list[DataFrame]) -> None:
    """Deduplicate by event_id against the batch and the table, count per feed, MERGE once."""
    if not candidates:
        return
    batch = functools.reduce(DataFrame.unionByName, candidates).dropDuplicates(["event_id"])
    existing = spark.table(cfg.table("events")).select("event_id", "event_date")
    new = batch.join(existing, ["event_id", "event_date"], "left_anti").persist()
    rows = _explode_ad_clicks(new).persist()
    for r in new.groupBy("platform", "_feed").count().collect():
        account = run.account(r["platform"], r["_feed"])
        account.accepted = r["count"]
    for r in rows.groupBy("platform", "_feed").count().collect():
        run.account(r["platform"], r["_feed"]).events_written = r["count"]
    for account in run.report.accounts:
        if account.feed in ("events", "ads") and account.read:
            account.duplicates = account.read - account.rejected - account.accepted
    target = DeltaTable.forName(spark, cfg.table("events"))
    (target.alias("t").merge(rows.select(*EVENT_TABLE_COLUMNS).alias("s"),
                             "t.event_date = s.event_date AND t.event_id = s.event_id")
     .whenNotMatchedInsertAll().execute())
    new.unpersist()
    rows.unpersist()


def _to_events(spark: SparkSession, cfg: Config, feed: Feed, staged: DataFrame, links: DataFrame,
               ad_features: DataFrame | None) -> DataFrame:
    """Valid bronze rows -> event rows (the primary event of each raw row) with ids, items and user_id."""
    mapping = {k: v for k, v in feed.fmt.to_events().items() if k != "_reject_reason"}
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
    user_id = F.coalesce("linked_user_id", F.concat(F.col("platform"), F.lit(":"), F.col("platform_user_id")))
    extra = ["_clicked", "_click_id"] if feed.kind == "ads" else []
    return ev.select(
        "event_id", "platform", "platform_user_id", user_id.alias("user_id"), "event_time",
        F.to_date("event_time").alias("event_date"), "event_type", "item_id", "category", "brand", "price",
        "session_id", "campaign_id", "_source_file", "_ingested_at", *extra,
    )


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


EVENT_TABLE_COLUMNS = ("event_id", "platform", "platform_user_id", "user_id", "event_time", "event_date",
                       "event_type", "item_id", "category", "brand", "price", "session_id", "campaign_id",
                       "_source_file", "_ingested_at")


def _record_files(spark: SparkSession, cfg: Config, run: _Run) -> None:
    if not run.new_files:
        return
    rows = [(feed.platform, feed.kind, f.path, f.size, f.modified_at, run.report.run_id, run.report.started_at)
            for feed, f in run.new_files]
    df = spark.createDataFrame(rows, spark.table(cfg.table("ingested_files")).schema)
    target = DeltaTable.forName(spark, cfg.table("ingested_files"))
    (target.alias("t").merge(df.alias("s"), "t.platform = s.platform AND t.feed = s.feed AND t.path = s.path")
     .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())


def _rebuild_identity_map(spark: SparkSession, cfg: Config, links: DataFrame) -> None:
    """identity_map = every platform account seen or linked; events follow changed links."""
    seen = spark.table(cfg.table("events")).select("platform", "platform_user_id").distinct()
    linked = links.select("platform", "platform_user_id", F.col("user_id").alias("linked_user_id"))
    accounts = seen.unionByName(links.select("platform", "platform_user_id")).distinct()
    resolved = accounts.join(linked, ["platform", "platform_user_id"], "left").select(
        "platform", "platform_user_id",
        F.coalesce("linked_user_id", F.concat(F.col("platform"), F.lit(":"), F.col("platform_user_id")))
        .alias("user_id"),
        F.col("linked_user_id").isNotNull().alias("linked"),
    ).persist()
    current = spark.table(cfg.table("identity_map"))
    if resolved.exceptAll(current).isEmpty() and current.exceptAll(resolved).isEmpty():
        return
    resolved.writeTo(cfg.table("identity_map")).overwrite(F.lit(True))
    events = DeltaTable.forName(spark, cfg.table("events"))
    (events.alias("t").merge(spark.table(cfg.table("identity_map")).alias("s"),
                             "t.platform = s.platform AND t.platform_user_id = s.platform_user_id")
     .whenMatchedUpdate(condition="t.user_id <> s.user_id", set={"user_id": "s.user_id"}).execute())


def _record_run(spark: SparkSession, cfg: Config, report: IngestReport) -> None:
    rows = [(report.run_id, report.started_at, a.platform, a.feed, a.files, a.skipped_files, a.read, a.accepted,
             a.duplicates, a.rejected, a.events_written) for a in report.accounts]
    df = spark.createDataFrame(rows, spark.table(cfg.table("ingest_runs")).schema)
    df.writeTo(cfg.table("ingest_runs")).append()
