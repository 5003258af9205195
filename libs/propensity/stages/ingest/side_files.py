"""Side files: the identity file (cross-platform links), item catalogs and ad_feature files.

Each loader returns what it accepted, its rejected lines and its account; nothing is shared.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from propensity.core.config import Config
from propensity.core.locks import table_lock
from propensity.stages.ingest.accounting import Counted, FeedAccount
from propensity.stages.ingest.formats import IDENTITY_COLUMNS, ad_feature_rules, item_rules, price_column
from propensity.stages.ingest.parsing import Rejected, RunInfo, parse_lines, rejected
from propensity.stages.ingest.plan import SideFile

_LINK_SCHEMA = "platform STRING, platform_user_id STRING, user_id STRING"


@dataclass(frozen=True)
class SideLoad:
    """A loaded side file: its accepted rows, rejected lines and account."""

    rows: DataFrame
    rejected: Rejected
    account: FeedAccount


def _parse_side(spark: SparkSession, side: SideFile, reason: Column, run: RunInfo) -> DataFrame:
    return parse_lines(spark, side.files, side.columns, side.header, reason, run)


def _loaded(side: SideFile, parsed: DataFrame, accepted: DataFrame, platform: Column) -> SideLoad:
    """Count a side file: every distinct accepted row counts once, repeats are duplicates."""
    account = FeedAccount.of(side.platform, side.kind, len(side.files), 0, Counted.of(parsed), accepted.count())
    return SideLoad(accepted, rejected(parsed, platform, side.kind, side.paths), account)


def load_identity(spark: SparkSession, cfg: Config, side: SideFile | None, run: RunInfo
                  ) -> tuple[DataFrame, SideLoad | None]:
    """Valid identity links (``platform, platform_user_id, user_id``); bad, conflicting or unknown-platform
    rows are rejected. Without an identity file: no links."""
    if side is None:
        return spark.createDataFrame([], _LINK_SCHEMA), None
    known = sorted({p.name for p in cfg.platforms} | {a.platform for a in cfg.ads})
    blank = [F.col(c).isNull() | (F.trim(F.col(c)) == "") for c in IDENTITY_COLUMNS]
    reason = (F.when(blank[0], "missing platform").when(blank[1], "missing platform_user_id")
              .when(blank[2], "missing user_id")
              .when(~F.trim(F.col("platform")).isin(known),
                    F.concat(F.lit("unknown platform '"), F.col("platform"), F.lit("'"))))
    parsed = _parse_side(spark, side, reason, run)
    parsed = parsed.select([F.trim(F.col(c)).alias(c) if c in IDENTITY_COLUMNS else F.col(c) for c in parsed.columns])
    key = ["platform", "platform_user_id"]
    targets = (parsed.where(F.col("_reject_reason").isNull()).groupBy(*key)
               .agg(F.countDistinct("user_id").alias("_targets")))
    conflict = F.when(F.col("_targets") > 1, F.concat(F.lit("conflicting links for "), F.col("platform"), F.lit(":"),
                                                      F.col("platform_user_id")))
    parsed = (parsed.join(targets, key, "left")
              .withColumn("_reject_reason", F.coalesce(F.col("_reject_reason"), conflict)).drop("_targets").persist())
    links = parsed.where(F.col("_reject_reason").isNull()).select(*IDENTITY_COLUMNS).distinct().persist()
    return links, _loaded(side, parsed, links, F.coalesce(F.col("platform"), F.lit("*")))


def load_items(spark: SparkSession, cfg: Config, sides: list[SideFile], run: RunInfo) -> list[SideLoad]:
    """All catalogs in one MERGE into ``items`` keyed by (platform, item_id); bad rows are rejected."""
    loads = []
    for side in sides:
        parsed = _parse_side(spark, side, item_rules(cfg.ingest), run).persist()
        items = parsed.where(F.col("_reject_reason").isNull()).select(
            F.lit(side.platform).alias("platform"), F.trim(F.col("item_id")).alias("item_id"),
            *[optional(parsed, c) for c in ("title", "category", "brand")],
            _price(parsed).alias("price"), "_source_file", "_ingested_at",
        ).dropDuplicates(["platform", "item_id"]).persist()
        loads.append(_loaded(side, parsed, items, F.lit(side.platform)))
    if loads:
        rows = functools.reduce(DataFrame.unionByName, [s.rows for s in loads])
        with table_lock(spark, cfg, "items"):
            (DeltaTable.forName(spark, cfg.table("items")).alias("t")
             .merge(rows.alias("s"), "t.platform = s.platform AND t.item_id = s.item_id")
             .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
    return loads


def load_ad_features(spark: SparkSession, cfg: Config, side: SideFile, run: RunInfo) -> SideLoad:
    """An ad_feature file: category, campaign, brand and price per ad group (``ad_`` columns)."""
    reason = ad_feature_rules(cfg.ingest, "price" in side.columns)
    parsed = _parse_side(spark, side, reason, run).persist()
    features = parsed.where(F.col("_reject_reason").isNull()).select(
        F.trim(F.col("adgroup_id")).alias("ad_item_id"),
        *[optional(parsed, c).alias(f"ad_{c}") for c in ("cate_id", "campaign_id", "brand")],
        _price(parsed).alias("ad_price"),
    ).dropDuplicates(["ad_item_id"]).persist()
    return _loaded(side, parsed, features, F.lit(side.platform))


def _price(parsed: DataFrame) -> Column:
    return price_column(F.col("price")) if "price" in parsed.columns else F.lit(None).cast("double")


def optional(df: DataFrame, column: str) -> Column:
    """A trimmed optional text column (NULL when blank or absent from the file's header)."""
    if column not in df.columns:
        return F.lit(None).cast("string").alias(column)
    return F.when(F.trim(F.col(column)) != "", F.trim(F.col(column))).alias(column)
