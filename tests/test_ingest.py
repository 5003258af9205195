"""Ingestion of the four raw formats on hand-written files: events, rejects, identity, accounting."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from propensity.core.config import Config
from propensity.core.errors import ConfigError, InputDataError
from propensity.stages.ingest.pipeline import IngestReport, ingest

REES46_HEADER = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"
REES46_VALID = [
    "2026-01-05 13:04:11 UTC,view,100,2053,electronics.smartphone,samsung,130.76,500,s1",
    "2026-01-05 13:05:00 UTC,cart,101,2054,,,20.00,500,s1",
    '2026-01-06 08:00:00 UTC,purchase,102,2055,apparel.shoes,"acme, inc",55.5,501,s2',
    "2026-01-06 09:00:00 UTC,remove_from_cart,101,2054,,,20.00,500,s3",
]
REES46_BAD = {
    "2026-13-45 99:00:00 UTC,view,100,2053,electronics.smartphone,samsung,130.76,500,s1": "bad timestamp",
    ",view,100,2053,electronics.smartphone,samsung,130.76,500,s1": "missing timestamp",
    "2026-01-05 13:04:11 UTC,view,100,2053,electronics.smartphone,samsung,130.76,,s1": "missing user",
    "2026-01-05 13:04:11 UTC,click,100,2053,electronics.smartphone,samsung,130.76,500,s1": "unknown event type",
    "2026-01-05 13:04:11 UTC,view,100,2053,electronics.smartphone,samsung,-5,500,s1": "negative price",
    "2026-01-05 13:04:11 UTC,view,100,2053,electronics.smartphone,samsung,abc,500,s1": "bad price",
    "2026-01-05 13:04:11 UTC,view,100,2053,electronics.smartphone,samsung,1.0,500,s1,extra": "wrong column count",
    "2026-01-05 13:04:11 UTC,view,100,2053,electronics.smartphone,samsung,1.0,500": "wrong column count",
}

TAOBAO_VALID = ["7,9001,33,pv,1767603600", "7,9001,33,cart,1767603660", "7,9002,34,fav,1767690000",
                "8,9001,33,buy,1767776400"]
TAOBAO_BAD = {
    "7,9001,33,zoom,1767603600": "unknown event type",
    "7,9001,33,pv,abc": "bad timestamp",
    ",9001,33,pv,1767603600": "missing user",
    "7,9001,33,pv": "wrong column count",
    "7,9001,33,pv,1767603600,1": "wrong column count",
    "7,9001,33,pv,12": "timestamp before ingest.earliest_event_date",
}

RR_HEADER = "timestamp,visitorid,event,itemid,transactionid"
RR_VALID = ["1767603600000,42,view,555,", "1767603700000,42,addtocart,555,", "1767603800000,42,transaction,555,t9"]
RR_BAD = {"1767603600000,42,like,555,": "unknown event type", "yesterday,42,view,555,": "bad timestamp",
          "1767603600000,42,view": "wrong column count"}

ADS_HEADER = "user,time_stamp,adgroup_id,pid,nonclk,clk"
ADS_VALID = ["7,1767603600,ag1,430548_1007,1,0", "7,1767690000,ag2,430548_1007,0,1", "8,1767690000,ag1,430548_1007,1,0"]
ADS_BAD = {"7,1767603600,ag1,430548_1007,1,2": "clk not 0/1", ",1767603600,ag1,430548_1007,1,0": "missing user",
           "7,1767603600,ag1,430548_1007": "wrong column count"}


def _write(path: Path, lines: list[str], header: str | None = None) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(([header] if header else []) + lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def feeds(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Config overrides pointing at one feed per format, with bad and duplicate rows."""
    return write_fixture_feeds(tmp_path_factory.mktemp("feeds"))


@pytest.fixture(scope="module")
def ingested(spark: SparkSession, make_config: Callable[..., Config], feeds: list[str]) -> tuple[Config, IngestReport]:
    """One ingest of the fixture feeds, shared by the tests that only read its result."""
    cfg = make_config(overrides=feeds)
    return cfg, ingest(spark, cfg)


def write_fixture_feeds(tmp_path: Path) -> list[str]:
    """Write the fixture feeds under ``tmp_path``; return the config overrides pointing at them."""
    rees = _write(tmp_path / "shop" / "events.csv", [*REES46_VALID, *REES46_BAD, REES46_VALID[0]], REES46_HEADER)
    taobao = _write(tmp_path / "app" / "events.csv", [*TAOBAO_VALID, *TAOBAO_BAD, TAOBAO_VALID[1], TAOBAO_VALID[1]])
    rr = _write(tmp_path / "market" / "events.csv", [*RR_VALID, *RR_BAD], RR_HEADER)
    rr_items = _write(tmp_path / "market" / "items.csv", ["555,Red shoe,apparel.shoes,acme,49.9", "556,x,,,-1"],
                      "item_id,title,category,brand,price")
    ads = _write(tmp_path / "app" / "ads.csv", [*ADS_VALID, *ADS_BAD, ADS_VALID[0]], ADS_HEADER)
    ad_feature = _write(tmp_path / "app" / "ad_feature.csv", ["ag1,33,camp1,c1,acme,10.0", "ag2,34,camp2,c2,,"],
                        "adgroup_id,cate_id,campaign_id,customer,brand,price")
    identity = _write(tmp_path / "identity.csv",
                      ["shop,500,c1", "app,7,c1", "market,42,c2", "market,42,c3", "moon,1,c4"],
                      "platform,platform_user_id,user_id")
    return [
        f"platforms=[{{name: shop, format: rees46, events: '{rees}'}},"
        f" {{name: app, format: taobao, events: '{taobao}'}},"
        f" {{name: market, format: retailrocket, events: '{rr}', items: '{rr_items}'}}]",
        f"ads=[{{platform: app, format: taobao_ads, path: '{ads}', ad_feature: '{ad_feature}'}}]",
        f"identity={identity}",
    ]


def _events(spark: SparkSession, cfg: Config) -> set[tuple[object, ...]]:
    rows = spark.sql(f"""SELECT platform, platform_user_id, user_id, date_format(event_time, 'yyyy-MM-dd HH:mm:ss'),
        event_type, item_id, category, brand, price, session_id, campaign_id FROM {cfg.table('events')}""").collect()
    return {tuple(r) for r in rows}


def _rejects(spark: SparkSession, cfg: Config) -> list[tuple[str, str, str, str]]:
    rows = spark.table(cfg.table("rejects")).select("platform", "feed", "raw", "reason").collect()
    return sorted((r[0], r[1], r[2], r[3]) for r in rows)


def _accounts(report: IngestReport) -> dict[tuple[str, str], tuple[int, int, int, int]]:
    return {(a.platform, a.feed): (a.read, a.accepted, a.duplicates, a.rejected) for a in report.accounts}


EXPECTED_EVENTS = {
    ("shop", "500", "c1", "2026-01-05 13:04:11", "view", "100", "electronics.smartphone", "samsung", 130.76, "s1",
     None),
    ("shop", "500", "c1", "2026-01-05 13:05:00", "cart", "101", "2054", None, 20.0, "s1", None),
    ("shop", "501", "shop:501", "2026-01-06 08:00:00", "purchase", "102", "apparel.shoes", "acme, inc", 55.5, "s2",
     None),
    ("shop", "500", "c1", "2026-01-06 09:00:00", "remove_from_cart", "101", "2054", None, 20.0, "s3", None),
    ("app", "7", "c1", "2026-01-05 09:00:00", "view", "9001", "33", None, None, None, None),
    ("app", "7", "c1", "2026-01-05 09:01:00", "cart", "9001", "33", None, None, None, None),
    ("app", "7", "c1", "2026-01-06 09:00:00", "favorite", "9002", "34", None, None, None, None),
    ("app", "8", "app:8", "2026-01-07 09:00:00", "purchase", "9001", "33", None, None, None, None),
    ("market", "42", "market:42", "2026-01-05 09:00:00", "view", "555", "apparel.shoes", "acme", 49.9, None, None),
    ("market", "42", "market:42", "2026-01-05 09:01:40", "cart", "555", "apparel.shoes", "acme", 49.9, None, None),
    ("market", "42", "market:42", "2026-01-05 09:03:20", "purchase", "555", "apparel.shoes", "acme", 49.9, "t9",
     None),
    ("app", "7", "c1", "2026-01-05 09:00:00", "ad_impression", "ag1", "33", "acme", 10.0, "430548_1007", "camp1"),
    ("app", "7", "c1", "2026-01-06 09:00:00", "ad_impression", "ag2", "34", None, None, "430548_1007", "camp2"),
    ("app", "7", "c1", "2026-01-06 09:00:00", "ad_click", "ag2", "34", None, None, "430548_1007", "camp2"),
    ("app", "8", "app:8", "2026-01-06 09:00:00", "ad_impression", "ag1", "33", "acme", 10.0, "430548_1007", "camp1"),
}


def test_ingest_puts_every_valid_row_in_events_once_and_every_bad_row_in_rejects(
        spark: SparkSession, ingested: tuple[Config, IngestReport]) -> None:
    cfg, report = ingested

    assert _events(spark, cfg) == EXPECTED_EVENTS
    rejects = _rejects(spark, cfg)
    expected_raw = {("shop", "events", raw) for raw in REES46_BAD} | {("app", "events", raw) for raw in TAOBAO_BAD} \
        | {("market", "events", raw) for raw in RR_BAD} | {("app", "ads", raw) for raw in ADS_BAD}
    assert {(p, f, raw) for p, f, raw, _ in rejects if f in ("events", "ads")} == expected_raw
    by_raw = {raw: reason for _, f, raw, reason in rejects if f in ("events", "ads")}
    for bad in (REES46_BAD, TAOBAO_BAD, RR_BAD, ADS_BAD):
        for raw, reason in bad.items():
            assert by_raw[raw].startswith(reason), (raw, by_raw[raw])
    assert ("market", "items", "556,x,,,-1", "negative price '-1'") in rejects
    assert ("market", "identity", "market,42,c2", "conflicting links for market:42") in rejects
    assert ("moon", "identity", "moon,1,c4", "unknown platform 'moon'") in rejects

    assert _accounts(report)[("shop", "events")] == (13, 4, 1, 8)
    assert _accounts(report)[("app", "events")] == (12, 4, 2, 6)
    assert _accounts(report)[("market", "events")] == (6, 3, 0, 3)
    assert _accounts(report)[("app", "ads")] == (7, 3, 1, 3)
    assert all(a.balanced for a in report.accounts)
    ads = next(a for a in report.accounts if a.feed == "ads")
    assert ads.events_written == 4


def test_identity_map_resolves_linked_and_unlinked_users(
        spark: SparkSession, ingested: tuple[Config, IngestReport]) -> None:
    cfg, _ = ingested
    rows = {tuple(r) for r in spark.table(cfg.table("identity_map")).collect()}
    assert rows == {("shop", "500", "c1", True), ("shop", "501", "shop:501", False), ("app", "7", "c1", True),
                    ("app", "8", "app:8", False), ("market", "42", "market:42", False)}


def test_reingest_adds_nothing_and_reprocess_counts_duplicates(
        spark: SparkSession, make_config: Callable[..., Config], ingested: tuple[Config, IngestReport],
        feeds: list[str]) -> None:
    cfg, _ = ingested
    events, rejects = _events(spark, cfg), _rejects(spark, cfg)
    bronze_rows = spark.table(cfg.table("bronze_shop")).count()

    again = ingest(spark, cfg)
    assert _events(spark, cfg) == events and _rejects(spark, cfg) == rejects
    assert {a.feed: (a.skipped_files, a.read) for a in again.accounts if a.feed in ("events", "ads")} == \
        {"events": (1, 0), "ads": (1, 0)}

    forced = make_config(overrides=[*feeds, "ingest.reprocess=true", f"storage.schema={cfg.storage.schema}"])
    report = ingest(spark, forced)
    assert _events(spark, cfg) == events and _rejects(spark, cfg) == rejects
    assert spark.table(cfg.table("bronze_shop")).count() == bronze_rows
    assert _accounts(report)[("shop", "events")] == (13, 0, 5, 8)
    assert spark.table(cfg.table("ingest_runs")).select("run_id").distinct().count() == 3


def test_missing_file_fails_before_any_table_is_written(
        spark: SparkSession, make_config: Callable[..., Config], feeds: list[str], tmp_path: Path) -> None:
    cfg = make_config(overrides=[*feeds, f"platforms.1.events={tmp_path}/nowhere/*.csv"])
    with pytest.raises(InputDataError, match=r"platform app events \(taobao\): no file matches .*nowhere"):
        ingest(spark, cfg)
    assert not spark.catalog.tableExists(f"{cfg.storage.schema}.events")


def test_missing_required_column_names_the_column(
        spark: SparkSession, make_config: Callable[..., Config], feeds: list[str], tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad" / "rr.csv", ["1767603600000,42,555"], "timestamp,visitorid,itemid")
    cfg = make_config(overrides=[*feeds, f"platforms.2.events={bad}"])
    with pytest.raises(InputDataError, match=r"lacks required column\(s\) event"):
        ingest(spark, cfg)
    assert not spark.catalog.tableExists(f"{cfg.storage.schema}.events")


def test_unknown_format_is_a_config_error(make_config: Callable[..., Config]) -> None:
    with pytest.raises(ConfigError, match=r"platforms\[0\].format='parquetish' is unknown"):
        make_config(overrides=["platforms=[{name: shop, format: parquetish, events: x.csv}]"])
