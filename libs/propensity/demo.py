"""``propensity demo``: generated feeds through every stage that exists, then a summary."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from pyspark.sql import SparkSession

from propensity.config import Config, load_config, repo_conf_dir
from propensity.errors import PropensityError
from propensity.features import ensure_snapshots, plan_snapshots
from propensity.generate import generate_feeds
from propensity.ingest.pipeline import IngestReport, ingest
from propensity.spark import get_spark
from propensity.sql import render, run_sql

MARKER = ".propensity-demo"


def _prepare_root(root: Path) -> None:
    """Empty the demo folder, but only one this command made (it carries a marker file)."""
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER).exists():
            raise PropensityError(f"--root {root} is not empty and was not made by `propensity demo`;"
                                  " choose another folder")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("made by propensity demo; emptied on the next demo run\n")


def _step(title: str) -> float:
    print(f"\n==> {title}", flush=True)
    return time.perf_counter()


def run_demo(root: Path, overlays: list[str | Path] | None, overrides: list[str], users: int = 2000,
             days: int = 60, seed: int = 7) -> int:
    """Generate feeds under ``root``, run the pipeline on them and print a summary; returns the exit code."""
    root = root.resolve()
    _prepare_root(root)
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

    start = _step("features: point-in-time training snapshots (train / validation / test)")
    plan = plan_snapshots(spark, cfg)
    ensure_snapshots(spark, cfg, plan)
    seconds = time.perf_counter() - start
    print(f"snapshots: train {', '.join(d.isoformat() for d in plan.train)}; validation {plan.validation};"
          f" test {plan.test}")
    _print_label_rates(spark, cfg, seconds)
    _print_summary(spark, cfg, feeds.config_path)
    return 0


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
    rows = sum(a.read for a in report.accounts if a.feed in ("events", "ads"))
    print(f"ingested {rows} raw event rows in {seconds:.1f}s = {rows / seconds:,.0f} rows/s")


def _print_summary(spark: SparkSession, cfg: Config, feed_config: Path) -> None:
    _step("summary")
    queries = [
        "SELECT platform, event_type, count(*) AS events FROM events GROUP BY platform, event_type"
        " ORDER BY platform, event_type",
        "SELECT platform, feed, reason_kind, count(*) AS rows FROM (SELECT platform, feed,"
        " regexp_extract(reason, '^[a-z /0-9]+', 0) AS reason_kind FROM rejects)"
        " GROUP BY platform, feed, reason_kind ORDER BY platform, feed, reason_kind",
        "SELECT linked, count(*) AS accounts, count(DISTINCT user_id) AS users FROM identity_map GROUP BY linked",
    ]
    for query in queries:
        print(f"\n$ propensity sql \"{query}\"")
        print(render(run_sql(spark, cfg, query), "table"))
    print(f"\ntables live in database `{cfg.storage.schema}` under {cfg.root / 'warehouse'}")
    print(f"try: .venv/bin/propensity --conf conf/local.yml --conf {feed_config} --set storage.root={cfg.root}"
          " sql \"SELECT * FROM ingest_runs\"")
