"""``propensity demo``: generated feeds through every stage, then a summary."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import pandas as pd
from pyspark.sql import SparkSession

from propensity.core.config import Config, load_config, repo_conf_dir
from propensity.core.datasets import SnapshotPlan, plan_snapshots
from propensity.core.errors import UsageError
from propensity.core.privacy import pseudonym_key
from propensity.core.schema import EVENT_TYPES
from propensity.core.spark import get_spark
from propensity.core.tracking import tracking_uri
from propensity.models.registry import STUDENT_MODEL_NAME
from propensity.stages.analyst.sql import render, run_sql
from propensity.stages.evaluation.evaluate import EvaluationReport, format_comparison, run_evaluate
from propensity.stages.features import ensure_snapshots, write_snapshot
from propensity.stages.generate import generate_feeds
from propensity.stages.ingest.accounting import IngestReport
from propensity.stages.ingest.pipeline import ingest
from propensity.stages.monitor.monitor import run_monitor
from propensity.stages.publish.publish import publish
from propensity.stages.scoring.score import ScoreResult, score_snapshot
from propensity.stages.training.distill import run_distill
from propensity.stages.training.finetune import run_finetune
from propensity.stages.training.pretrain import run_pretrain
from propensity.stages.training.transfer import format_transfer, run_transfer_experiment

MARKER = ".propensity-demo"


@dataclass
class DemoResults:
    """What the training half of the demo found."""

    evaluation: EvaluationReport
    transfer: pd.DataFrame | None


def _prepare_root(root: Path) -> None:
    """Empty the demo folder, but only one this command made (it carries a marker file)."""
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER).exists():
            raise UsageError(f"--root {root} is not empty and was not made by `propensity demo`;"
                                  " choose another folder")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("made by propensity demo; emptied on the next demo run\n")


def _step(title: str) -> float:
    print(f"\n==> {title}", flush=True)
    return time.perf_counter()


def run_demo(root: Path, overlays: list[str | Path] | None, overrides: list[str], users: int = 2000,
             days: int = 60, seed: int = 7, transfer: bool = True) -> int:
    """Generate feeds under ``root``, run every stage on them and print a summary; returns the exit code.

    :param transfer: also run the transfer experiment (head mode, one epoch per arm) on the last platform.
    """
    os.environ.setdefault("PYTHONUNBUFFERED", "1")  # training processes print progress as it happens
    root = root.resolve()
    pseudonym_key("the demo's publish step")  # before anything runs: publishing needs the secret
    _prepare_root(root)
    started = time.perf_counter()
    start = _step(f"generate: {users} people, {days} days, seed {seed}")
    feeds = generate_feeds(root / "feeds", users=users, days=days, seed=seed)
    print(f"feeds in {feeds.out_dir} ({time.perf_counter() - start:.1f}s)")

    base = list(overlays) if overlays else [repo_conf_dir() / "local.yml"]
    cfg = load_config([*base, feeds.config_path], [f"storage.root={root / 'state'}", *overrides])
    start = _step("start Spark")
    spark = get_spark(cfg)
    print(f"Spark {spark.version} master={spark.sparkContext.master} ({time.perf_counter() - start:.1f}s)")

    start = _step("ingest: raw -> bronze -> events, items, identity_map, rejects")
    report = ingest(spark, cfg)
    seconds = time.perf_counter() - start
    print(report.format())
    _print_ingest_rate(report, seconds)

    start = _step("features: point-in-time training snapshots (train / validation / test) and the day to score")
    plan = plan_snapshots(spark, cfg)
    ensure_snapshots(spark, cfg, plan)
    scoring_rows = write_snapshot(spark, cfg, feeds.end_date, with_labels=False)
    seconds = time.perf_counter() - start
    print(f"snapshots: {plan.describe()}; scoring {feeds.end_date} ({scoring_rows} rows, no labels)")
    _print_label_rates(spark, cfg, seconds)

    results = _train_and_evaluate(spark, cfg, plan, transfer)
    scored = _score_and_publish(spark, cfg, feeds.end_date, results.evaluation)
    start = _step("monitor: drift of scores and top features vs the model's reference snapshot")
    drift = run_monitor(spark, cfg, feeds.end_date)
    print("\n".join([drift.format(), *drift.breach_lines()]) + f" ({time.perf_counter() - start:.0f}s)")
    _print_summary(spark, cfg, feeds.config_path, results, scored)
    print(f"drift: {drift.format()}; plot in MLflow run {drift.mlflow_run_id} ({drift.plot})")
    print(f"\ndemo finished in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


def _train_and_evaluate(spark: SparkSession, cfg: Config, plan: SnapshotPlan, transfer: bool) -> DemoResults:
    start = _step(f"pretrain: teacher encoder ({cfg.teacher.num_layers} x {cfg.teacher.hidden_size}), masked LM"
                  f" on all platforms, {cfg.training.num_processes} TorchDistributor processes")
    checkpoint = run_pretrain(spark, cfg)
    print(f"encoder checkpoint {checkpoint} ({time.perf_counter() - start:.0f}s)")

    start = _step("finetune: teacher heads for purchase, click, churn (wide and deep)")
    teacher = run_finetune(spark, cfg, plan=plan)
    print(f"registered {teacher.name} v{teacher.version} ({time.perf_counter() - start:.0f}s)")

    start = _step(f"distill: student ({cfg.student.num_layers} x {cfg.student.hidden_size}) from the teacher,"
                  f" alpha {cfg.distill.alpha}, T {cfg.distill.temperature}")
    student = run_distill(spark, cfg, plan=plan)
    print(f"registered {student.name} v{student.version} ({time.perf_counter() - start:.0f}s)")

    start = _step("evaluate: teacher, student, fusion, baseline_lr, baseline_gbt; champion gates")
    report = run_evaluate(spark, cfg, plan=plan)
    print(report.format())
    print(f"({time.perf_counter() - start:.0f}s)")

    table = None
    if transfer:
        target = cfg.platform_names[-1]
        start = _step(f"transfer experiment: adapt to '{target}' with 5%, 20%, 100% of its labels (head mode,"
                      " 1 epoch per arm) vs target-only")
        experiment = replace(cfg, training=replace(cfg.training, target_platform=target, transfer_mode="head", epochs=1,
                                                   source_platforms=[]))
        table = run_transfer_experiment(spark, experiment, plan=plan)
        print(format_transfer(table))
        print(f"({time.perf_counter() - start:.0f}s)")
    return DemoResults(report, table)


def _score_and_publish(spark: SparkSession, cfg: Config, snapshot_date: date, evaluation: EvaluationReport
                       ) -> ScoreResult:
    """Score with ``scoring.model_uri`` (the champion); with no champion, with the newest student, said loudly."""
    model_uri = cfg.scoring.model_uri
    if evaluation.failed and not any(evaluation.promoted.values()):
        model_uri = f"models:/{STUDENT_MODEL_NAME}/{evaluation.versions[STUDENT_MODEL_NAME]}"
        print(f"\nNOTE: no model passed its champion gates, so there is no @champion and `propensity score` with"
              f" the default {cfg.scoring.model_uri} refuses. To show the rest of the pipeline the demo scores"
              f" with the newest, unpromoted student ({model_uri}); a scheduled job would stop here.")
    start = _step(f"score: {model_uri} at {snapshot_date} (mapInArrow -> MERGE into user_scores)")
    scored = score_snapshot(spark, cfg, snapshot_date, model_uri)
    print(scored.format())
    _step("publish: inventory_demand and ads_audiences")
    published = publish(spark, cfg, snapshot_date)
    print(f"{published.format()} ({time.perf_counter() - start:.0f}s with scoring)")
    return scored


def _print_label_rates(spark: SparkSession, cfg: Config, seconds: float) -> None:
    rates = run_sql(spark, cfg, """SELECT snapshot_date, platform, count(*) AS rows,
        round(avg(label_purchase), 3) AS purchase_rate, round(avg(label_click), 3) AS click_rate,
        count(label_click) AS click_labelled, round(avg(label_churn), 3) AS churn_rate
        FROM training_examples GROUP BY snapshot_date, platform ORDER BY snapshot_date, platform""")
    rows = rates.collect()
    print(render(rates, "table"))
    total = sum(r["rows"] for r in rows)
    print(f"built {total} training rows in {seconds:.1f}s = {total / seconds:,.0f} rows/s")


def _print_ingest_rate(report: IngestReport, seconds: float) -> None:
    rows = report.event_rows_read()
    print(f"ingested {rows} raw event rows in {seconds:.1f}s = {rows / seconds:,.0f} rows/s")


def _print_sequence_coverage(spark: SparkSession, cfg: Config) -> None:
    """How much of the lookback the encoders see whole: rows whose lookback events all fit the positions."""
    events = " + ".join(f"all_n_{t}_30d" for t in EVENT_TYPES)
    gpu = load_config([repo_conf_dir() / "gpu.yml"])
    sizes = {"teacher (base.yml)": cfg.teacher.max_length - 1, "student (base.yml)": cfg.student.max_length - 1,
             "teacher (gpu.yml)": gpu.teacher.max_length - 1}
    shares = ", ".join(f"round(avg(CASE WHEN {events} <= {n} THEN 1.0 ELSE 0.0 END), 3) AS `{k} <= {n}`"
                       for k, n in sizes.items())
    query = f"SELECT percentile({events}, 0.5) AS median_events, {shares} FROM training_examples"
    print("\nshare of rows whose whole lookback fits the encoder's positions:")
    print(render(run_sql(spark, cfg, query), "table"))


def _print_summary(spark: SparkSession, cfg: Config, feed_config: Path, results: DemoResults,
                   scored: ScoreResult) -> None:
    _step("summary")
    print(render(run_sql(spark, cfg, "SELECT platform, count(*) AS events, count(DISTINCT user_id) AS users"
                                     " FROM events GROUP BY platform ORDER BY platform"), "table"))
    print("\ntest AUC per task (all platforms; teacher.features_only = its logistic regressions alone,"
          " teacher.sequence_only = a teacher without aggregate features):")
    print(results.evaluation.test_auc.to_string(float_format=lambda v: f"{v:.4f}"))
    if not results.evaluation.comparison.empty:
        print("\ntest AUC minus the best tuned baseline, paired bootstrap 95% interval (segment cold_start: at most"
              " 3 events on the row's platform, history elsewhere):")
        print(format_comparison(results.evaluation.comparison))
    _print_sequence_coverage(spark, cfg)
    champions = [name for name, ok in results.evaluation.promoted.items() if ok]
    print("@champion now: " + (", ".join(champions) if champions else
                               "none (gates failed: " + "; ".join(g.describe() for g in results.evaluation.failed)
                               + ")"))
    if results.transfer is not None:
        print("\ntransfer experiment (test AUC on the held-out platform):")
        print(format_transfer(results.transfer))
    print("\n" + scored.format())
    queries = [
        "SELECT platform, count(*) AS users, round(avg(purchase_score), 3) AS avg_purchase,"
        " round(avg(click_score), 3) AS avg_click, round(avg(churn_score), 3) AS avg_churn"
        " FROM user_scores_latest GROUP BY platform ORDER BY platform",
        "SELECT platform, category, round(expected_buyers, 1) AS expected_buyers FROM inventory_demand_latest"
        " ORDER BY expected_buyers DESC LIMIT 5",
        "SELECT audience, platform, count(*) AS users FROM ads_audiences_latest GROUP BY audience, platform"
        " ORDER BY audience, platform",
    ]
    for query in queries:
        print(f"\n$ propensity sql \"{query}\"")
        print(render(run_sql(spark, cfg, query), "table"))
    print(f"\ntables live in database `{cfg.storage.schema}` under {cfg.root / 'warehouse'}")
    print(f"MLflow runs and registry: {tracking_uri(cfg)}")
    print(f"  open the UI: .venv/bin/mlflow ui --backend-store-uri {tracking_uri(cfg)}  (then http://127.0.0.1:5000)")
    print(f"try: .venv/bin/propensity --conf conf/local.yml --conf {feed_config} --set storage.root={cfg.root}"
          " sql \"SELECT * FROM model_evaluations LIMIT 5\"")
