"""Generated world -> ingest: the accounting equals what the generator planted, row for row."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pyspark.sql import SparkSession

from propensity.core.config import Config
from propensity.stages.generate import generate_feeds
from propensity.stages.ingest.pipeline import ingest

FEED_OF_MANIFEST = {"shop": ("shop", "events"), "app": ("app", "events"), "market": ("market", "events"),
                    "app_ads": ("app", "ads")}


def test_ingest_accounting_matches_the_planted_dirt(
        spark: SparkSession, make_config: Callable[..., Config], tmp_path: Path) -> None:
    feeds = generate_feeds(tmp_path / "feeds", users=60, days=20, seed=11)
    cfg = make_config([feeds.config_path])
    report = ingest(spark, cfg)
    accounts = {(a.platform, a.feed): a for a in report.accounts}
    for name, key in FEED_OF_MANIFEST.items():
        planted, account = feeds.manifest[name], accounts[key]
        assert (account.read, account.accepted, account.duplicates, account.rejected) == (
            planted["rows"], planted["valid_distinct_rows"], planted["duplicate_rows"], planted["bad_rows"]), name

    counts = {(r["platform"], r["event_type"]): r["n"] for r in spark.sql(
        f"SELECT platform, event_type, count(*) AS n FROM {cfg.table('events')} GROUP BY 1, 2").collect()}
    assert counts[("app", "ad_impression")] == feeds.manifest["app_ads"]["valid_distinct_rows"]
    for platform in ("shop", "app", "market"):
        behaviour = sum(n for (p, t), n in counts.items() if p == platform and not t.startswith("ad_"))
        assert behaviour == feeds.manifest[platform]["valid_distinct_rows"], platform
    assert spark.sql(f"SELECT count(*) FROM {cfg.table('events')} WHERE category IS NULL").first()[0] == 0
    ids = spark.sql(f"SELECT count(*), count(DISTINCT event_id) FROM {cfg.table('events')}").first()
    assert ids[0] == ids[1]
