"""Scoring into user_scores and publishing: idempotence, constraints, concurrency, arithmetic."""

from __future__ import annotations

import hashlib
import hmac
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from delta.tables import DeltaTable
from mlflow.models import infer_signature
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from propensity.core.config import Config
from propensity.core.errors import DataNotReadyError, ModelNotFoundError, ModelOutputError
from propensity.core.privacy import KEY_ENV, MissingSecretError, pseudonym
from propensity.core.tables import LATEST_VIEWS, ensure_table
from propensity.core.tracking import setup_mlflow
from propensity.stages.features import build_training_examples, write_snapshots
from propensity.stages.publish.publish import publish
from propensity.stages.scoring.score import score_snapshot

T1, T2 = date(2026, 1, 20), date(2026, 1, 21)
TEST_KEY = "test-pseudonym-key-0123456789"


def _event(i: int, platform: str, user: str, when: str, event_type: str, category: str, price: float | None = None
           ) -> tuple[Any, ...]:
    t = datetime.fromisoformat(when)
    return (f"e{i}", platform, user, user, t, t.date(), event_type, f"item{i}", category, "b", price, None, None,
            "fixture", datetime(2026, 2, 1))


EVENTS = [
    _event(1, "shop", "u1", "2026-01-10 10:00:00", "view", "shoes"),
    _event(2, "shop", "u1", "2026-01-12 10:00:00", "view", "shoes"),
    _event(3, "shop", "u1", "2026-01-15 10:00:00", "view", "bags"),
    _event(4, "shop", "u1", "2026-01-16 10:00:00", "purchase", "bags", 80.0),
    _event(5, "shop", "u2", "2026-01-18 10:00:00", "view", "hats"),
    _event(6, "app", "u1", "2026-01-19 10:00:00", "cart", "shoes"),
    _event(7, "app", "u3", "2026-01-05 10:00:00", "view", "shoes"),
    _event(8, "app", "u3", "2026-01-06 10:00:00", "ad_impression", "shoes"),
    _event(9, "app", "u1", "2026-01-18 10:00:00", "ad_impression", "shoes"),
]


def _toy_models() -> tuple[type, type]:
    """Two pyfunc classes defined in a function, so cloudpickle ships them to the workers by value."""

    class Recency(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined,misc]
        def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
            days = model_input["days_since_last_event"].astype(float)
            return pd.DataFrame({"purchase": 1 / (1 + days), "click": 0.5 + 0 * days, "churn": days / (1 + days)})

    class OutOfRange(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined,misc]
        def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
            n = len(model_input)
            return pd.DataFrame({"purchase": [1.5] * n, "click": [0.5] * n, "churn": [0.5] * n})

    return Recency, OutOfRange


def _register(cfg: Config, python_model: Any, name: str) -> str:
    setup_mlflow(cfg)
    example = pd.DataFrame({"behavior_text": ["x"], "days_since_last_event": [1.0]})
    signature = infer_signature(example, python_model.predict(None, example))
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=python_model, signature=signature,
                                       registered_model_name=name)
    mlflow.MlflowClient().set_registered_model_alias(name, "champion", str(info.registered_model_version))
    return f"models:/{name}@champion"


def write_events_and_features(spark: SparkSession, cfg: Config) -> None:
    """The toy events, and the features of T1 and T2 as the daily job builds them (no labels)."""
    ensure_table(spark, cfg, "events")
    spark.createDataFrame(EVENTS, spark.table(cfg.table("events")).schema).writeTo(cfg.table("events")).append()
    write_snapshots(spark, cfg, [T1, T2], with_labels=False)


@pytest.fixture(scope="module")
def world(spark: SparkSession, make_config: Callable[..., Config], tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Config, str, str]:
    tracking = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    cfg = make_config(overrides=[f"mlflow.tracking_uri=sqlite:///{tracking}", "features.lookback_days=30"])
    write_events_and_features(spark, cfg)
    recency, out_of_range = _toy_models()
    good = _register(cfg, recency(), f"recency_{cfg.storage.schema}")
    bad = _register(cfg, out_of_range(), f"out_of_range_{cfg.storage.schema}")
    return cfg, good, bad


def _rounded(row: Any) -> tuple[Any, ...]:
    return tuple(round(v, 9) if isinstance(v, float) else v for v in row)


def _scores(spark: SparkSession, cfg: Config, day: date) -> list[tuple[Any, ...]]:
    rows = spark.sql(f"""SELECT user_id, platform, purchase_score, click_score, churn_score, model_name, model_version
        FROM {cfg.table('user_scores')} WHERE snapshot_date = DATE'{day}' ORDER BY user_id, platform""").collect()
    return [_rounded(r) for r in rows]


def test_scores_every_eligible_pair_once_and_rerun_replaces(spark: SparkSession, world: tuple[Config, str, str]
                                                            ) -> None:
    cfg, good, _ = world
    result = score_snapshot(spark, cfg, T1, good)
    features = build_training_examples(spark, spark.table(cfg.table("events")), cfg, T1, with_labels=False)
    expected = sorted(_rounded((r["user_id"], r["platform"], 1 / (1 + r["days_since_last_event"]), 0.5,
                       r["days_since_last_event"] / (1 + r["days_since_last_event"]), result.model.name, "1"))
                      for r in features.collect())
    assert [(u, p) for u, p, *_ in expected] == [("u1", "app"), ("u1", "shop"), ("u2", "shop"), ("u3", "app")]
    assert _scores(spark, cfg, T1) == expected and result.rows == 4

    version = DeltaTable.forName(spark, cfg.table("user_scores")).history(1).first()["version"]
    again = score_snapshot(spark, cfg, T1, good)
    assert again.rows == 4 and _scores(spark, cfg, T1) == expected
    assert DeltaTable.forName(spark, cfg.table("user_scores")).history(1).first()["version"] == version + 1
    props = spark.sql(f"SHOW TBLPROPERTIES {cfg.table('user_scores')}").collect()
    assert {r["key"]: r["value"] for r in props}["delta.enableChangeDataFeed"] == "true"


def test_out_of_range_scores_are_refused_and_nothing_is_written(
        spark: SparkSession, world: tuple[Config, str, str]) -> None:
    cfg, good, bad = world
    score_snapshot(spark, cfg, T1, good)
    before = _scores(spark, cfg, T1)
    version = DeltaTable.forName(spark, cfg.table("user_scores")).history(1).first()["version"]
    with pytest.raises(ModelOutputError, match=r"outside \[0, 1\].*nothing was written"):
        score_snapshot(spark, cfg, T1, bad)
    assert _scores(spark, cfg, T1) == before
    assert DeltaTable.forName(spark, cfg.table("user_scores")).history(1).first()["version"] == version


def test_missing_model_or_alias_is_one_line(spark: SparkSession, world: tuple[Config, str, str]) -> None:
    cfg, good, _ = world
    with pytest.raises(ModelNotFoundError, match=r"models:/.*@nope.* cannot be resolved") as info:
        score_snapshot(spark, cfg, T1, good.replace("@champion", "@nope"))
    assert "\n" not in str(info.value)
    with pytest.raises(ModelNotFoundError, match=r"models:/no_such_model@champion.* cannot be resolved"):
        score_snapshot(spark, cfg, T1, "models:/no_such_model@champion")
    with pytest.raises(DataNotReadyError, match=r"no rows for 2026-01-23; run `propensity features --snapshot-date"):
        score_snapshot(spark, cfg, date(2026, 1, 23), good)


def test_two_snapshots_scored_concurrently(spark: SparkSession, world: tuple[Config, str, str]) -> None:
    cfg, good, _ = world
    score_snapshot(spark, cfg, T1, good)  # the table exists before the race
    errors: list[BaseException] = []

    def run(day: date) -> None:
        try:
            score_snapshot(spark, cfg, day, good)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(day,)) for day in (T1, T2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(_scores(spark, cfg, T1)) == 4 and len(_scores(spark, cfg, T2)) == 4


def test_publish_arithmetic(spark: SparkSession, world: tuple[Config, str, str], tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, _, _ = world
    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    day = date(2026, 1, 22)
    ensure_table(spark, cfg, "user_scores")
    rows = [(day, "u1", "shop", 0.6, 0.2, 0.9, "m", "1", datetime(2026, 1, 22)),
            (day, "u2", "shop", 0.3, 0.8, 0.1, "m", "1", datetime(2026, 1, 22)),
            (day, "u1", "app", 0.5, 0.7, 0.2, "m", "1", datetime(2026, 1, 22)),
            (day, "u3", "app", 0.2, 0.9, 0.95, "m", "1", datetime(2026, 1, 22))]
    scores = spark.createDataFrame(rows, spark.table(cfg.table("user_scores")).schema)
    scores.writeTo(cfg.table("user_scores")).overwrite(F.col("snapshot_date") == F.lit(day))
    cfg.publish.high_click_fraction = 0.5
    result = publish(spark, cfg, day)

    demand = {(r["platform"], r["category"]): (round(r["expected_buyers"], 9), r["users_scored"]) for r in spark.sql(
        f"SELECT * FROM {cfg.table('inventory_demand')} WHERE snapshot_date = DATE'{day}'").collect()}
    # u1 on shop: 2 shoes, 2 bags (the purchase is a behaviour event too); u2: 1 hat; u1 on app: 1 shoes
    # (impressions are not behaviour); u3: 1 shoes.
    assert demand == {("shop", "shoes"): (0.3, 1), ("shop", "bags"): (0.3, 1), ("shop", "hats"): (0.3, 1),
                      ("app", "shoes"): (0.7, 2)}
    audiences = sorted(tuple(r) for r in spark.sql(
        f"SELECT audience, platform, user_key, score, rank FROM {cfg.table('ads_audiences')}"
        f" WHERE snapshot_date = DATE'{day}'").collect())
    # high_click only where ads were shown (app), top 50% of 2 users; churn_risk: churn >= 0.5 and spent >= 1
    # (u1 on shop bought for 80; u3 on app is at risk but spent nothing). Users by keyed pseudonym only.
    key = TEST_KEY.encode()
    assert audiences == [("churn_risk", "shop", pseudonym(key, "u1"), 0.9, 1),
                         ("high_click", "app", pseudonym(key, "u3"), 0.9, 1)]
    assert pseudonym(key, "u1") == hmac.new(key, b"u1", hashlib.sha256).hexdigest() != pseudonym(b"x" * 16, "u1")
    assert result.inventory_rows == 4 and result.audience_rows == {"churn_risk": 1, "high_click": 1}
    latest = sorted(tuple(r) for r in spark.sql(
        f"SELECT audience, platform, user_key, score, rank FROM {cfg.table('ads_audiences_latest')}").collect())
    assert latest == audiences
    published = {name: spark.table(cfg.table(f"{name}_latest")).columns for name in LATEST_VIEWS}
    assert all("user_id" not in columns for columns in published.values()), published
    keyed_scores = {(r["user_key"], r["platform"]): r["purchase_score"]
                    for r in spark.table(cfg.table("user_scores_latest")).collect()}
    assert keyed_scores[(pseudonym(key, "u2"), "shop")] == 0.3
    newest = spark.sql(f"SELECT max(snapshot_date) FROM {cfg.table('user_scores')}").first()[0]
    assert {r[0] for r in spark.sql(f"SELECT snapshot_date FROM {cfg.table('user_scores_latest')}").collect()} == {
        newest}


def test_publish_refuses_without_the_pseudonym_secret(spark: SparkSession, world: tuple[Config, str, str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, _, _ = world
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(MissingSecretError, match=f"{KEY_ENV} is not set, so publish refuses"):
        publish(spark, cfg, date(2026, 1, 22))
    monkeypatch.setenv(KEY_ENV, "short")
    with pytest.raises(MissingSecretError, match="shorter than 16 characters"):
        publish(spark, cfg, date(2026, 1, 22))


@pytest.mark.slow
def test_killed_run_leaves_the_table_at_its_previous_version(spark: SparkSession, tmp_path: Path) -> None:
    root = tmp_path / "state"
    child = subprocess.Popen([sys.executable, str(Path(__file__).parent / "scoring_kill_child.py"), str(root)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
                             cwd=Path(__file__).parent, env={**os.environ, "PYSPARK_PYTHON": sys.executable})
    try:
        assert child.stdout is not None
        version = int(child.stdout.readline().split()[1])
        assert child.stdout.readline().strip() == "SLOW"
        time.sleep(20)  # well inside the slow model's predict
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    table = DeltaTable.forPath(spark, str(root / "warehouse" / "propensity.db" / "user_scores"))
    assert table.history(1).first()["version"] == version
    assert table.toDF().where("model_name = 'recency'").count() == 4 and table.toDF().count() == 4
