"""Every bad value is rejected with a reason: bytes that are not UTF-8, infinite or absurd prices, events from the
future of their file or from before the earliest date; quoted line breaks make one record; .gz and .bz2 files
read the same in every format; the accounting stays exact."""

from __future__ import annotations

import bz2
import gzip
from collections.abc import Callable

import pytest
from pyspark.sql import SparkSession

from propensity.core.config import Config
from propensity.stages.ingest.pipeline import IngestReport, ingest

REES46_HEADER = b"event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"
SHOP_GOOD = [
    b"2026-01-05 13:04:11 UTC,view,100,2053,electronics.smartphone,caf\xc3\xa9,130.76,500,s1",
    b'2026-01-06 08:00:00 UTC,purchase,102,2055,apparel.shoes,"acme,\nshoes, inc",55.5,501,s2',
]
SHOP_BAD = {
    b"2026-01-05 13:04:11 UTC,view,100,2053,,acme,1.0,9000\xff0002,s1":
        ("2026-01-05 13:04:11 UTC,view,100,2053,,acme,1.0,9000\\xFF0002,s1", "invalid UTF-8"),
    b"2026-01-05 13:05:00 UTC,view,101,2053,,ac\xc3me,1.0,501,s1":
        ("2026-01-05 13:05:00 UTC,view,101,2053,,ac\\xC3me,1.0,501,s1", "invalid UTF-8"),
    b"2026-01-05 13:06:00 UTC,view,101,2053,,acme,1e309,501,s1": (None, "price above ingest.max_price 1e+09"),
    b"2026-01-05 13:07:00 UTC,view,101,2053,,acme,2000000000,501,s1": (None, "price above ingest.max_price"),
    b"2099-01-01 00:00:00 UTC,view,101,2053,,acme,1.0,501,s1":
        (None, "timestamp later than its file's modification time + 24h"),
    b"1999-12-31 23:00:00 UTC,view,101,2053,,acme,1.0,501,s1":
        (None, "timestamp before ingest.earliest_event_date 2000-01-01"),
    b'2026-01-07 09:00:00 UTC,view,103,2055,,"never closed,1.0,502,s3': (None, "unterminated quoted field"),
}
APP_GOOD = [b"7,9001,33,pv,1767603600"]
APP_BAD = {b"7,9001,33,pv,4085000000": (None, "timestamp later than its file's modification time"),
           b"7\xfe,9001,33,pv,1767603600": ("7\\xFE,9001,33,pv,1767603600", "invalid UTF-8")}
RR_HEADER = b"timestamp,visitorid,event,itemid,transactionid"
RR_GOOD = [b"1767603600000,42,view,555,", b'1767603800000,42,transaction,555,"t\n9"']
RR_BAD = {b"4085000000000,42,view,555,": (None, "timestamp later than its file's modification time")}
ITEMS_BAD = {b"556,x,,,1e309": (None, "price above ingest.max_price"), b"557,x,,,Infinity": (None, "bad price"),
             b"558,x,,,NaN": (None, "bad price")}


def _lines(good: list[bytes], bad: dict[bytes, tuple[str | None, str]], header: bytes | None) -> bytes:
    return b"\n".join(([header] if header else []) + good + list(bad)) + b"\n"


#: Each test reads one real ingest run (minutes on 2 cores): not in the quick unit tier.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ingested(spark: SparkSession, make_config: Callable[..., Config], tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Config, IngestReport]:
    folder = tmp_path_factory.mktemp("bad-values")
    shop, app, market, items = (folder / "shop.csv.gz", folder / "app.csv.bz2", folder / "market.csv",
                                folder / "items.csv")
    shop.write_bytes(gzip.compress(_lines(SHOP_GOOD, SHOP_BAD, REES46_HEADER)))
    app.write_bytes(bz2.compress(_lines(APP_GOOD, APP_BAD, None)))
    market.write_bytes(_lines(RR_GOOD, RR_BAD, RR_HEADER))
    items.write_bytes(_lines([b"555,Red shoe,apparel.shoes,acme,49.9"], ITEMS_BAD,
                             b"item_id,title,category,brand,price"))
    cfg = make_config(overrides=[
        f"platforms=[{{name: shop, format: rees46, events: '{shop}'}}, {{name: app, format: taobao, events: '{app}'}},"
        f" {{name: market, format: retailrocket, events: '{market}', items: '{items}'}}]"])
    return cfg, ingest(spark, cfg)


def test_bad_values_are_rejected_with_their_reason(spark: SparkSession, ingested: tuple[Config, IngestReport]
                                                   ) -> None:
    cfg, _ = ingested
    rejects = {(r["feed"], r["raw"]): r["reason"] for r in spark.table(cfg.table("rejects")).collect()}
    expected = {("events", (shown or raw.decode()), reason)
                for bad in (SHOP_BAD, APP_BAD, RR_BAD) for raw, (shown, reason) in bad.items()}
    expected |= {("items", raw.decode(), reason) for raw, (_, reason) in ITEMS_BAD.items()}
    assert {(feed, raw) for feed, raw in rejects} == {(feed, raw) for feed, raw, _ in expected}
    for feed, raw, reason in expected:
        assert rejects[(feed, raw)].startswith(reason), (raw, rejects[(feed, raw)])


def test_good_rows_are_events_with_their_bytes_and_line_breaks(
        spark: SparkSession, ingested: tuple[Config, IngestReport]) -> None:
    cfg, _ = ingested
    rows = spark.sql(f"SELECT platform, platform_user_id, event_type, item_id, brand, price, session_id"
                     f" FROM {cfg.table('events')}").collect()
    assert sorted(tuple(r) for r in rows) == [
        ("app", "7", "view", "9001", None, None, None),
        ("market", "42", "purchase", "555", "acme", 49.9, "t\n9"),
        ("market", "42", "view", "555", "acme", 49.9, None),
        ("shop", "500", "view", "100", "café", 130.76, "s1"),
        ("shop", "501", "purchase", "102", "acme,\nshoes, inc", 55.5, "s2"),
    ]


def test_accounting_counts_records_not_lines(ingested: tuple[Config, IngestReport]) -> None:
    _, report = ingested
    accounts = {(a.platform, a.feed): (a.read, a.accepted, a.duplicates, a.rejected) for a in report.accounts}
    # A record with a quoted line break is one read; every record is accepted or rejected.
    assert accounts == {("shop", "events"): (9, 2, 0, 7), ("app", "events"): (3, 1, 0, 2),
                        ("market", "events"): (3, 2, 0, 1), ("market", "items"): (4, 1, 0, 3)}
    assert all(a.balanced for a in report.accounts)
