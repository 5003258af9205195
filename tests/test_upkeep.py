"""Erasure (``propensity forget``) and table upkeep (``propensity maintain``) on a small ingested world."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession
from test_ingest import write_fixture_feeds
from test_scoring import _register, _toy_models

from propensity.core.config import Config
from propensity.core.privacy import KEY_ENV, pseudonym
from propensity.core.tables import TABLES
from propensity.stages.features import write_snapshot
from propensity.stages.ingest.pipeline import ingest
from propensity.stages.publish.publish import publish
from propensity.stages.scoring.score import score_snapshot
from propensity.stages.upkeep.forget import Subject, forget, read_subjects
from propensity.stages.upkeep.maintain import maintain

KEY = "upkeep-test-pseudonym-key-42"
DAY = date(2026, 1, 7)
#: The person: user c1 = account 500 on shop and 7 on app (and the ads feed of app), per the identity file.
PERSON = {"c1", "500", "7"}


def _holds_person(value: object) -> bool:
    if not isinstance(value, str):
        return False
    return value in PERSON or any(f.strip().strip('"') in PERSON for f in value.split(","))


def _files_with_person(warehouse: Path) -> list[str]:
    """Current parquet files under the warehouse with a string cell that is, or has a field that is, an id."""
    found = []
    assert warehouse.is_dir() and any(warehouse.rglob("*.parquet")), warehouse
    for path in sorted(warehouse.rglob("*.parquet")):
        if "_delta_log" in path.parts:
            continue
        table = pq.read_table(path)
        for column in table.column_names:
            if any(_holds_person(v) for v in table.column(column).to_pylist()):
                found.append(f"{path.relative_to(warehouse)}:{column}")
    return found


def _rows_with_person(spark: SparkSession, cfg: Config) -> dict[str, int]:
    """Rows per table or view with one of the person's ids or their user_key (the audit trail left out: it holds
    the HMAC of the request's identifier by design)."""
    out = {}
    for r in spark.sql(f"SHOW TABLES IN {cfg.database}").collect():
        if r["tableName"] == "erasure_requests":
            continue
        rows = spark.table(cfg.table(r["tableName"])).collect()
        hits = sum(1 for row in rows if any(_holds_person(v) for v in row)
                   or pseudonym(KEY.encode(), "c1") in tuple(row))  # `in row` would look at a Row's field names
        if hits:
            out[r["tableName"]] = hits
    return out


@pytest.fixture(scope="module")
def world(spark: SparkSession, make_config: Callable[..., Config], tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Config, str]:
    root = tmp_path_factory.mktemp("upkeep")
    feeds = write_fixture_feeds(root / "feeds")
    cfg = make_config(overrides=[*feeds, f"storage.root={root / 'state'}",
                                 f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}", "monitor.min_rows=1"])
    ingest(spark, cfg)
    write_snapshot(spark, cfg, DAY, with_labels=False)
    recency, _ = _toy_models()
    uri = _register(cfg, recency(), "upkeep_recency")
    score_snapshot(spark, cfg, DAY, uri)
    return cfg, uri


def test_forget_removes_the_person_everywhere_and_is_idempotent(
        spark: SparkSession, world: tuple[Config, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg, uri = world
    monkeypatch.setenv(KEY_ENV, KEY)
    cfg.publish.high_click_fraction = 1.0  # every scored app user is in high_click, c1 included
    publish(spark, cfg, DAY)
    before = _rows_with_person(spark, cfg)
    assert {"events", "identity_map", "training_examples", "user_scores", "user_keys", "ads_audiences", "rejects",
            "bronze_shop", "bronze_app", "bronze_app_ads"} <= set(before), before
    # deletion vectors on one table: the purge path must rewrite its files
    spark.sql(f"ALTER TABLE {cfg.table('events')} SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
    requests = tmp_path / "requests.txt"
    requests.write_text("# one person by an account\nshop, 500\n")
    assert read_subjects(requests) == [Subject("500", "shop")]

    result = forget(spark, cfg, read_subjects(requests), requested_by="dpo@example.com")
    assert result.accounts == 2 and result.purged == ["events"]  # shop 500 and app 7 (behaviour and ads)
    assert {t for t, n in result.deleted.items() if n} == {t for t in before if not t.endswith("_latest")}
    # 3 shop events of 500, 3 app events of 7, 2 ad impressions + 1 click of 7
    assert result.deleted["events"] == 9 and result.deleted["identity_map"] == 2
    assert _rows_with_person(spark, cfg) == {}
    location = spark.sql(f"DESCRIBE DETAIL {cfg.table('events')}").first()["location"]  # type: ignore[index]
    warehouse = Path(location.removeprefix("file:")).parent  # the database's folder: every table's files
    assert _files_with_person(warehouse) == []
    # other people stay
    assert spark.sql(f"SELECT count(*) FROM {cfg.table('events')} WHERE user_id = 'shop:501'").first()[0] == 1

    audit = spark.table(cfg.table("erasure_requests")).collect()
    assert len(audit) == 1
    row = audit[0]
    assert (row["requested_by"], row["identifier_kind"], row["platform"], row["accounts"], row["retain_hours"]) == (
        "dpo@example.com", "platform_user_id", "shop", 2, 0)
    assert row["subject_key"] == pseudonym(KEY.encode(), "shop:500")
    assert json.loads(row["tables"]) == result.deleted and row["rows_deleted"] == sum(result.deleted.values())

    again = forget(spark, cfg, [Subject("c1")])
    assert sum(again.deleted.values()) == 0
    second = spark.table(cfg.table("erasure_requests")).where("identifier_kind = 'user_id'").first()
    assert second is not None and second["rows_deleted"] == 0 and second["subject_key"] == pseudonym(KEY.encode(), "c1")

    # later runs: the snapshot rebuilt from events, scored and published, has no trace of the person
    write_snapshot(spark, cfg, DAY, with_labels=False)
    score_snapshot(spark, cfg, DAY, uri)
    publish(spark, cfg, DAY)
    assert _rows_with_person(spark, cfg) == {}
    assert spark.sql(f"SELECT count(*) FROM {cfg.table('user_scores')}").first()[0] > 0


def test_maintain_compacts_and_reports_files(spark: SparkSession, world: tuple[Config, str]) -> None:
    cfg, _ = world
    result = maintain(spark, cfg, ["user_scores", "events", "identity_map"])
    by_table = {t.table: t for t in result.tables}
    assert by_table["events"].zorder_by == TABLES["events"].zorder_by == ("user_id",)
    for t in result.tables:
        assert t.after.files <= t.before.files and t.after.files >= 1
    assert "3 tables:" in result.format() and "VACUUM RETAIN 168 HOURS" in result.format()
    history = spark.sql(f"DESCRIBE HISTORY {cfg.table('events')}").select("operation").collect()
    assert {"OPTIMIZE", "VACUUM END"} <= {r[0] for r in history}
