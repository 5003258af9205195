"""Evaluation: metrics equal scikit-learn's, and the evaluate stage's parts fill ``model_evaluations`` and MLflow."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import cloudpickle
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from mlflow.pyfunc.model import PythonModel
from pyspark.sql import SparkSession
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from propensity.core.config import Config
from propensity.core.datasets import SnapshotPlan, split_rows
from propensity.core.errors import ModelNotFoundError
from propensity.core.schema import DOUBLE_FEATURES, INT_FEATURES
from propensity.core.tables import TABLES, ensure_table
from propensity.core.tracking import client, setup_mlflow
from propensity.models.metrics import auc_difference, average_precision, binary_metrics, roc_auc
from propensity.models.metrics import log_loss as our_log_loss
from propensity.models.registry import resolve_version
from propensity.stages.evaluation.evaluate import (
    COUNTS_ROW,
    Scored,
    format_comparison,
    intervals,
    run_evaluate,
    score_model,
)
from propensity.stages.evaluation.plots import calibration_points, roc_points
from propensity.stages.evaluation.results import (
    log_plots,
    log_summary,
    metric_rows,
    model_metric_rows,
    write_evaluations,
)
from propensity.stages.evaluation.segments import COLD_START, cold_start


def test_metrics_equal_sklearn_with_ties() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = int(rng.integers(5, 80))
        y = rng.integers(0, 2, n)
        if y.min() == y.max():
            continue
        p = np.round(rng.random(n), 1)  # many ties, and exact 0 and 1
        assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert average_precision(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)
        assert our_log_loss(y, p) == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=1e-9)


def test_metrics_undefined_for_one_class_are_nan() -> None:
    m = binary_metrics([1, 1, 1], [0.2, 0.5, 0.9])
    assert np.isnan(m["auc"]) and m["pr_auc"] == pytest.approx(1.0) and m["n"] == 3 and m["positives"] == 3
    assert np.isnan(average_precision([0, 0], [0.1, 0.2]))
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        roc_auc([0, 2], [0.1, 0.2])


def _hand_made() -> pd.DataFrame:
    """Two platforms, two splits, NULL click labels on 'app'."""
    rows = []
    rng = np.random.default_rng(7)
    for split, day in (("validation", date(2026, 2, 22)), ("test", date(2026, 3, 1))):
        for platform in ("shop", "app"):
            for _ in range(30):
                y = rng.integers(0, 2, 3).astype(float)
                purchase_score = float(np.clip(0.3 * y[0] + rng.random() * 0.7, 0, 1))
                rows.append({"split": split, "snapshot_date": day, "platform": platform,
                             "cold_start": bool(rng.random() < 0.3),
                             "label_purchase": y[0], "label_click": y[1] if platform == "shop" else None,
                             "label_churn": y[2], "purchase_score": purchase_score,
                             "click_score": float(rng.random()), "churn_score": float(rng.random())})
    return pd.DataFrame(rows)


def test_metric_rows_per_task_platform_and_all_equal_sklearn() -> None:
    scored = _hand_made()
    rows = pd.DataFrame(metric_rows(scored))
    # 2 splits x 2 segments x (purchase, churn: shop, app, all + click: shop, all)
    assert len(rows) == 2 * 2 * (3 + 3 + 2)
    assert not ((rows["task"] == "click") & (rows["platform"] == "app")).any()
    for r in rows.itertuples():
        part = scored[scored["split"] == r.split]
        if r.segment == "cold_start":
            part = part[part["cold_start"]]
        if r.platform != "all":
            part = part[part["platform"] == r.platform]
        part = part[part[f"label_{r.task}"].notna()]
        y, p = part[f"label_{r.task}"].to_numpy(), part[f"{r.task}_score"].to_numpy()
        assert r.n == len(y) and r.positives == int(y.sum())
        assert r.predicted_over_observed == pytest.approx(p.sum() / y.sum())
        bins = np.clip((p * 10).astype(int), 0, 9)
        assert r.ece == pytest.approx(sum(abs(p[bins == b].sum() - y[bins == b].sum()) for b in range(10)) / len(y))
        assert r.auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert r.pr_auc == pytest.approx(average_precision_score(y, p), abs=1e-12)
        assert r.logloss == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=1e-9)


def test_plot_points() -> None:
    fpr, tpr = roc_points([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert list(fpr) == [0.0, 0.0, 0.5, 0.5, 1.0] and list(tpr) == [0.0, 0.5, 0.5, 1.0, 1.0]
    mean_score, rate, counts = calibration_points([0, 1, 1, 0], [0.05, 0.15, 0.95, 0.91], bins=10)
    assert list(counts) == [1, 1, 2] and list(rate) == [0.0, 1.0, 0.5]
    assert mean_score[2] == pytest.approx(0.93)


# ----------------------------------------------------------------------------------------------- the stage's parts


class FeatureRule(PythonModel):  # type: ignore[misc]
    """A model whose probabilities are fixed functions of two features (so expected metrics are computable)."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
                ) -> pd.DataFrame:
        return rule(model_input)


def rule(df: pd.DataFrame) -> pd.DataFrame:
    purchases = df["n_purchase_30d"].astype(float)
    recency = df["days_since_last_event"].astype(float)
    return pd.DataFrame({"purchase": 1 - 1 / (2 + purchases), "click": (recency % 7) / 7.0,
                         "churn": np.clip(recency / 30.0, 0.01, 0.99)}, index=df.index)


def _examples(spark: SparkSession, cfg: Config) -> SnapshotPlan:
    test = date(2026, 3, 1)
    plan = SnapshotPlan(train=[test - timedelta(days=14)], validation=test - timedelta(days=7), test=test)
    rng = np.random.default_rng(5)
    rows = []
    for day in plan.all():
        for u in range(25):
            for platform in ("shop", "app"):
                row: dict[str, Any] = {**{c: 0 for c in INT_FEATURES}, **{c: 0.0 for c in DOUBLE_FEATURES}}
                row.update(snapshot_date=day, user_id=f"u{u}", platform=platform, behavior_text=f"[{platform}] view",
                           event_ids=[9, 1, 0, 0, 0, 0, 3, 0, 1, 1, 0, 0, 0, 0, 0, 4],
                           n_purchase_30d=int(rng.integers(0, 3)), days_since_last_event=float(rng.uniform(0, 30)),
                           label_purchase=int(rng.integers(0, 2)), label_churn=int(rng.integers(0, 2)),
                           label_click=int(rng.integers(0, 2)) if platform == "shop" else None)
                rows.append(row)
    table = ensure_table(spark, cfg, "training_examples")
    schema = spark.table(table).schema
    spark.createDataFrame([tuple(r[f.name] for f in schema.fields) for r in rows], schema) \
        .write.format("delta").mode("append").saveAsTable(table)
    return plan


def test_scored_model_metrics_plots_and_table(spark: SparkSession, make_config: Callable[..., Config],
                                               tmp_path: Path) -> None:
    """What ``propensity evaluate`` does for each model: score through the scoring path, metric rows and
    plots into the MLflow run, one commit into ``model_evaluations``; checked against scikit-learn."""
    cfg = make_config(overrides=[f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    plan = _examples(spark, cfg)
    setup_mlflow(cfg)
    example = pd.DataFrame({"behavior_text": ["[shop] view"], "n_purchase_30d": [1.0],
                            "days_since_last_event": [3.0]})
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Spark workers cannot import this test module
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=FeatureRule(), input_example=example,
                                       signature=infer_signature(example, rule(example)),
                                       registered_model_name="baseline_rule", pip_requirements=["pandas"])
    uri = f"models:/baseline_rule/{info.registered_model_version}"

    version = resolve_version(cfg, "models:/baseline_rule/latest")
    assert version is not None and version.model_uri == uri
    with mlflow.start_run(run_name="evaluate") as run:
        scored = score_model(spark, cfg, version, split_rows(spark, cfg, plan).withColumn(COLD_START, cold_start()))
        rows = model_metric_rows("baseline_rule", version.version, version.model_uri, scored)
        log_plots("baseline_rule", version.version, scored)
        log_summary(rows)
        result = write_evaluations(spark, cfg, rows, run.info.run_id).toPandas()

    stored = spark.table(cfg.table("model_evaluations"))
    assert tuple(stored.columns) == TABLES["model_evaluations"].column_names
    assert {"evaluated_at", "model_name", "model_version", "task", "platform", "split", "snapshot_date", "auc",
            "pr_auc", "logloss", "n", "positives"} <= set(stored.columns)
    assert stored.count() == len(result) == 2 * (3 + 3 + 2)
    assert (result["model_version"] == str(info.registered_model_version)).all()
    assert (result["model_uri"] == uri).all()

    examples = spark.table(cfg.table("training_examples")).toPandas()
    for r in result.itertuples():
        part = examples[examples["snapshot_date"] == (plan.test if r.split == "test" else plan.validation)]
        assert r.snapshot_date == (plan.test if r.split == "test" else plan.validation)
        if r.platform != "all":
            part = part[part["platform"] == r.platform]
        part = part[part[f"label_{r.task}"].notna()]
        y, p = part[f"label_{r.task}"].to_numpy(float), rule(part)[r.task].to_numpy()
        assert r.n == len(y) and r.positives == int(y.sum())
        assert r.auc == pytest.approx(roc_auc_score(y, p), abs=1e-9)
        assert r.pr_auc == pytest.approx(average_precision_score(y, p), abs=1e-9)
        assert r.logloss == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=1e-7)

    logged = client(cfg).get_run(result["mlflow_run_id"].iloc[0])
    assert logged.data.metrics["baseline_rule.test.purchase.auc"] == pytest.approx(
        result.query("split == 'test' and task == 'purchase' and platform == 'all'")["auc"].iloc[0])
    plots = {a.path for a in client(cfg).list_artifacts(logged.info.run_id, "plots/baseline_rule")}
    assert {f"plots/baseline_rule/{kind}_{split}.png" for kind in ("roc", "calibration")
            for split in ("validation", "test")} <= plots


def test_run_evaluate_needs_a_teacher(spark: SparkSession, make_config: Callable[..., Config],
                                      tmp_path: Path) -> None:
    cfg = make_config(overrides=[f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    plan = _examples(spark, cfg)
    with pytest.raises(ModelNotFoundError,
                       match=r"no propensity_teacher model is registered; run `propensity finetune`"):
        run_evaluate(spark, cfg, plan=plan)


def test_paired_bootstrap_interval_of_an_auc_difference() -> None:
    from propensity.models.metrics import paired_auc_difference

    rng = np.random.default_rng(11)
    y = (rng.random(2000) < 0.3).astype(float)
    signal = y + rng.normal(scale=1.0, size=y.size)
    better = y + rng.normal(scale=0.5, size=y.size)
    assert paired_auc_difference(y, signal, signal, rounds=50) == (0.0, 0.0)
    low, high = paired_auc_difference(y, better, signal, rounds=200, seed=3)
    point = roc_auc_score(y, better) - roc_auc_score(y, signal)
    assert 0 < low < point < high
    assert paired_auc_difference(y, better, signal, rounds=200, seed=3) == (low, high)  # reproducible
    flipped_low, flipped_high = paired_auc_difference(y, signal, better, rounds=200, seed=3)
    assert (flipped_low, flipped_high) == pytest.approx((-high, -low))
    assert all(np.isnan(v) for v in paired_auc_difference(np.zeros(10), np.ones(10), np.ones(10)))
    assert auc_difference(y, better, signal, rounds=200, seed=3) == pytest.approx((point, low, high))
    assert all(np.isnan(v) for v in auc_difference(np.zeros(0), np.zeros(0), np.zeros(0)))


def test_each_model_is_compared_with_the_best_baseline_of_its_segment_and_task() -> None:
    """Per (segment, task) the baseline with the best test AUC; differences, counts and the printed table."""
    rows = _hand_made().assign(user_id=lambda f: [f"u{i}" for i in range(len(f))])
    rng = np.random.default_rng(5)
    weak = rows.assign(purchase_score=rng.random(len(rows)))  # noise: loses to the informed one overall
    informed = rows.assign(purchase_score=np.clip(rows["purchase_score"] + rng.normal(0, 0.3, len(rows)), 0, 1))
    model = Scored("m", "full", "1", "models:/m/1", rows)
    comparison, by_key = intervals([model], {"weak": weak, "informed": informed}, rounds=50, seed=1)

    test = rows[rows["split"] == "test"]
    for segment, part in (("all", test), ("cold_start", test[test["cold_start"]])):
        known = part[part["label_purchase"].notna()]
        aucs = {n: roc_auc_score(known["label_purchase"], f.set_index("user_id").loc[known["user_id"],
                                                                                     "purchase_score"])
                for n, f in (("weak", weak), ("informed", informed))}
        best = max(aucs, key=lambda n: aucs[n])
        found = by_key[("m", "full", segment, "purchase")]
        assert found["baseline"] == best
        assert found["diff"] == pytest.approx(roc_auc_score(known["label_purchase"], known["purchase_score"])
                                              - aucs[best])
        assert found["low"] <= found["diff"] <= found["high"]
        assert (found["rows"], found["positives"]) == (len(known), int(known["label_purchase"].sum()))
    click = by_key[("m", "full", "all", "click")]
    assert (click["rows"], click["positives"]) == (30, int(test["label_click"].sum()))  # shop rows only

    printed = format_comparison(comparison).splitlines()
    counts = [line for line in printed if line.startswith(COUNTS_ROW)]
    assert len(counts) == 1  # its segment rows follow without the label repeated
    purchase = by_key[("m", "full", "cold_start", "purchase")]
    assert any(line.split()[0] == "cold_start" and f"{purchase['rows']} / {purchase['positives']}" in line
               for line in printed)


def test_plots_need_an_active_run() -> None:
    scored = pd.DataFrame({"split": ["test"], "platform": ["shop"]})
    with pytest.raises(RuntimeError, match="needs an active MLflow run"):
        log_plots("rule", "1", scored)
    assert mlflow.active_run() is None
