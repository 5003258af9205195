"""Drift monitoring: PSI arithmetic, and generated worlds where nothing changed or one platform's activity halved."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from propensity.core.config import Config
from propensity.core.schema import FEATURE_COLUMNS, LABEL_COLUMNS
from propensity.core.tables import TABLES, ensure_table
from propensity.core.tracking import setup_mlflow
from propensity.stages.monitor.histograms import Histogram, psi
from propensity.stages.monitor.monitor import run_monitor

REF, PREVIOUS, TODAY = date(2026, 1, 1), date(2026, 1, 8), date(2026, 1, 9)
USERS = 1500  # PSI of unchanged samples is about bins / rows: 400 rows gave a noise warn at 0.10


def test_psi_arithmetic() -> None:
    same = Histogram((10, 20, 30), 0, 1.0, 0.1)
    assert psi(same, Histogram((20, 40, 60), 0, 1.0, 0.1)) == pytest.approx(0.0)
    # shares (0.5, 0.5) -> (0.25, 0.75): 0.25 ln(0.5) * -1 + 0.25 ln(1.5) = 0.1733 + 0.1014
    assert psi(Histogram((5, 5), 0, None, None), Histogram((1, 3), 0, None, None)) == pytest.approx(
        0.25 * np.log(2) + 0.25 * np.log(1.5))
    # an empty bin counts with the floor, a NULL bin is a bin
    assert psi(Histogram((10, 0), 0, None, None), Histogram((10, 10), 0, None, None)) == pytest.approx(
        0.5 * np.log(0.5 / 1.0) * -1 + (0.5 - 1e-4) * np.log(0.5 / 1e-4))
    assert psi(Histogram((10, 10), 0, None, None), Histogram((10, 10), 20, None, None)) > 1.0


def _toy_model() -> Any:
    class Activity(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined,misc]
        def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
            views = model_input["n_view_30d"].astype(float)
            days = model_input["days_since_last_event"].astype(float)
            return pd.DataFrame({"purchase": 1 - np.exp(-views / 20), "click": 1 / (1 + days),
                                 "churn": days / (1 + days + views / 10)})

    return Activity()


@pytest.fixture(scope="module")
def model_uri(make_config: Callable[..., Config], tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    tracking = f"sqlite:///{tmp_path_factory.mktemp('monitor-mlflow') / 'mlflow.db'}"
    cfg = make_config(overrides=[f"mlflow.tracking_uri={tracking}"])
    setup_mlflow(cfg)
    model = _toy_model()
    example = pd.DataFrame({"n_view_30d": [3.0], "days_since_last_event": [1.0]})
    with mlflow.start_run():
        mlflow.log_param("finetune.test_snapshot", REF.isoformat())
        info = mlflow.pyfunc.log_model(name="model", python_model=model,
                                       signature=infer_signature(example, model.predict(None, example)),
                                       registered_model_name="toy_activity")
    return tracking, f"models:/toy_activity/{info.registered_model_version}"


def _examples(spark: SparkSession, cfg: Config, day: date, activity: dict[str, float], seed: int,
              model_version: str | None) -> None:
    """training_examples rows of ``day``; with ``model_version``, also the toy model's user_scores (written
    directly: scoring itself is tested elsewhere)."""
    rng = np.random.default_rng(seed)
    frames = []
    for platform, scale in activity.items():
        data: dict[str, Any] = {c: np.zeros(USERS) for c in FEATURE_COLUMNS}
        data["n_view_30d"] = rng.poisson(12 * scale, USERS)
        data["n_view_7d"] = rng.binomial(data["n_view_30d"], 0.25)  # follows the 30-day count
        data["days_since_last_event"] = rng.exponential(3 / scale, USERS)
        data["spend_30d"] = rng.exponential(20, USERS)  # unrelated to the scores
        frame = pd.DataFrame(data)
        frame["user_id"] = [f"{platform}-{i}" for i in range(USERS)]
        frame["platform"] = platform
        frames.append(frame)
    pdf = pd.concat(frames, ignore_index=True)
    table = ensure_table(spark, cfg, "training_examples")
    schema = spark.table(table).schema
    df = spark.createDataFrame(pdf).select(
        F.lit(day).alias("snapshot_date"), "user_id", "platform", F.lit("x").alias("behavior_text"),
        F.array(F.lit(1), F.lit(2)).alias("event_ids"), *[F.col(c) for c in FEATURE_COLUMNS],
        *[F.lit(None).alias(c) for c in LABEL_COLUMNS])
    df.select(*[F.col(f.name).cast(f.dataType) for f in schema]).writeTo(table).append()
    assert TABLES["training_examples"].column_names == tuple(schema.fieldNames())
    if model_version is None:
        return
    predicted = _toy_model().predict(None, pdf)
    scores = pd.DataFrame({"user_id": pdf["user_id"], "platform": pdf["platform"],
                           **{f"{t}_score": predicted[t] for t in ("purchase", "click", "churn")}})
    target = ensure_table(spark, cfg, "user_scores")
    (spark.createDataFrame(scores).select(
        F.lit(day).alias("snapshot_date"), "user_id", "platform", "purchase_score", "click_score", "churn_score",
        F.lit("toy_activity").alias("model_name"), F.lit(model_version).alias("model_version"),
        F.current_timestamp().alias("scored_at")).writeTo(target).append())


def _world(spark: SparkSession, make_config: Callable[..., Config], model_uri: tuple[str, str],
           today: dict[str, float]) -> Config:
    cfg = make_config(overrides=[f"mlflow.tracking_uri={model_uri[0]}", "monitor.min_rows=100",
                                 "monitor.top_features=3"])
    steady = {"shop": 1.0, "app": 1.0}
    version = model_uri[1].rsplit("/", 1)[1]
    for day, activity, seed, scored in ((REF, steady, 1, None), (PREVIOUS, steady, 2, version),
                                        (TODAY, today, 3, version)):
        _examples(spark, cfg, day, activity, seed, scored)
    return cfg


def test_unchanged_world_does_not_alert(spark: SparkSession, make_config: Callable[..., Config],
                                        model_uri: tuple[str, str]) -> None:
    cfg = _world(spark, make_config, model_uri, {"shop": 1.0, "app": 1.0})
    report = run_monitor(spark, cfg, TODAY)
    assert report.breach_lines() == [] and report.new_reference
    assert (report.reference_snapshot, report.previous_snapshot) == (REF, PREVIOUS)
    drift = spark.table(cfg.table("score_drift")).toPandas()
    # 3 scores + 3 features (the ones the toy model reads rank first), 2 platforms, 2 comparisons
    assert sorted(drift["variable"].unique()) == sorted(
        ["purchase_score", "click_score", "churn_score", "n_view_30d", "days_since_last_event", "n_view_7d"])
    assert len(drift) == 6 * 2 * 2 and set(drift["comparison"]) == {"reference", "previous"}
    assert drift["psi"].max() < cfg.monitor.psi_warn, drift.sort_values("psi").tail(3)
    assert set(drift["status"]) == {"ok"}
    churn = drift[(drift["variable"] == "churn_score")].iloc[0]
    assert churn["threshold"] == cfg.publish.churn_threshold
    # the share above the top-10% cut of the reference stays near 10%
    clicks = drift[(drift["variable"] == "click_score") & (drift["comparison"] == "reference")]
    assert clicks["baseline_share_above"].between(0.08, 0.13).all() and clicks["share_above"].between(0.05, 0.16).all()
    # the second run reuses the stored reference
    again = run_monitor(spark, cfg, TODAY)
    assert not again.new_reference and again.rows["psi"].round(9).tolist() == report.rows["psi"].round(9).tolist()


def test_halved_activity_on_one_platform_alerts(spark: SparkSession, make_config: Callable[..., Config],
                                                model_uri: tuple[str, str], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from propensity.cli import main

    cfg = _world(spark, make_config, model_uri, {"shop": 1.0, "app": 0.5})
    code = main(["monitor", "--snapshot-date", TODAY.isoformat(), "--set", f"storage.root={cfg.storage.root}",
                 "--set", f"storage.schema={cfg.storage.schema}", "--set", f"mlflow.tracking_uri={model_uri[0]}",
                 "--set", "monitor.min_rows=100", "--set", "monitor.top_features=3"])
    out, err = capsys.readouterr()
    assert code == 4, err
    lines = err.strip().splitlines()
    assert all(re.match(r"propensity monitor: ALERT drift \S+ on \S+: PSI \d", line) for line in lines), lines
    alerts = {re.match(r"propensity monitor: ALERT drift (\S+) on (\S+):", line).groups()  # type: ignore[union-attr]
              for line in lines}
    assert {("purchase_score", "app"), ("churn_score", "app"), ("n_view_30d", "app")} <= alerts
    assert not any(platform == "shop" for _, platform in alerts)
    drift = spark.table(cfg.table("score_drift")).toPandas()
    app = drift[(drift["platform"] == "app") & (drift["variable"] == "purchase_score")].set_index("comparison")
    assert set(app["status"]) == {"alert"} and (app["mean"] < app["baseline_mean"] - 0.1).all()
    assert set(drift[drift["platform"] == "shop"]["status"]) == {"ok"}
    assert f", {len(lines)} alert, " in out.splitlines()[0]
    run = mlflow.MlflowClient(tracking_uri=model_uri[0]).get_run(drift["mlflow_run_id"].iloc[0])
    artifacts = [a.path for a in mlflow.MlflowClient(tracking_uri=model_uri[0]).list_artifacts(run.info.run_id,
                                                                                                "monitor")]
    assert f"monitor/drift_{TODAY}.png" in artifacts
