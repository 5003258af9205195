"""How many files the daily runs leave, and what ``propensity maintain`` makes of them.

    .venv/bin/python benchmarks/upkeep_bench.py [--users 300] [--days 40] [--daily-runs 10] [--root DIR]
        [--conf FILE] [--set key=value]

It generates a world (``propensity generate``), cuts every raw feed into the history before the
last ``--daily-runs`` days and one file per later day (by each row's own timestamp; rows without
a readable one go to the history), and lands the history. Then, as a scheduled job would:
``ingest``, and for each later day: land that day's files, ``ingest`` (only the new files are
read), ``features`` of the next day's snapshot without labels, ``score`` it and ``publish`` it.
The model is a student with random weights (``scoring_bench.register_random_student``): file
counts do not depend on the weights. Last it runs ``maintain`` and prints, per table, the current
data files and bytes before and after (``DESCRIBE DETAIL``), then the totals for ``events`` and
``user_scores`` as ``<table>_files_before=N`` / ``<table>_files_after=N`` lines.

VACUUM keeps ``maintenance.vacuum_retain_hours`` of history (a week by default), so the files
OPTIMIZE replaced stay on disk until then; the counts are of the tables' current versions.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import bench_options  # sibling files, not a package
import pandas as pd
import scoring_bench
from pyspark.sql import SparkSession

from propensity.core.config import Config, load_config
from propensity.core.privacy import KEY_ENV
from propensity.core.spark import get_spark
from propensity.stages.features import write_snapshot
from propensity.stages.generate import generate_feeds
from propensity.stages.ingest.pipeline import ingest
from propensity.stages.publish.publish import publish
from propensity.stages.scoring.score import score_snapshot, snapshot_features
from propensity.stages.upkeep.maintain import MaintainResult, maintain

#: Per generated feed: its file (relative to the generated folder), whether it has a header, and
#: how to read a row's day.
FEEDS: dict[str, tuple[str, bool, Callable[[list[str]], date]]] = {
    "shop": ("shop/events-*.csv", True, lambda row: date.fromisoformat(row[0][:10])),
    "app": ("app/events.csv", False, lambda row: datetime.fromtimestamp(int(row[4]), UTC).date()),
    "ads": ("app/ads.csv", True, lambda row: datetime.fromtimestamp(int(row[1]), UTC).date()),
    "market": ("market/events.csv", True, lambda row: datetime.fromtimestamp(int(row[0]) / 1000, UTC).date()),
}
REPORTED = ("events", "user_scores")


def split_feed(sources: list[Path], has_header: bool, day_of: Callable[[list[str]], date], first_daily: date
               ) -> tuple[list[str] | None, list[list[str]], dict[date, list[list[str]]]]:
    """The header, the history rows (before ``first_daily`` or without a readable day) and the rows per later day."""
    header: list[str] | None = None
    history: list[list[str]] = []
    daily: dict[date, list[list[str]]] = {}
    for source in sources:
        with source.open(newline="", encoding="latin-1") as f:  # latin-1 keeps every byte as it is
            reader = csv.reader(f)
            if has_header:
                header = next(reader)
            for row in reader:
                try:
                    day = day_of(row)
                except (ValueError, IndexError, OverflowError):
                    history.append(row)
                    continue
                (history if day < first_daily else daily.setdefault(day, [])).append(row)
    return header, history, daily


def write_rows(path: Path, header: list[str] | None, rows: list[list[str]]) -> None:
    """Write one CSV file (``latin-1``, so the bytes read are the bytes written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="latin-1") as f:
        writer = csv.writer(f, lineterminator="\n")
        if header:
            writer.writerow(header)
        writer.writerows(rows)


def cut_feeds(generated: Path, staged: Path, first_daily: date, days: int) -> None:
    """Write ``staged/history/<feed>/events-0000.csv`` and ``staged/<day>/<feed>/events-<day>.csv``."""
    for feed, (pattern, has_header, day_of) in FEEDS.items():
        header, history, daily = split_feed(sorted(generated.glob(pattern)), has_header, day_of, first_daily)
        write_rows(staged / "history" / feed / "events-0000.csv", header, history)
        for offset in range(days):
            day = first_daily + timedelta(days=offset)
            write_rows(staged / day.isoformat() / feed / f"events-{day:%Y%m%d}.csv", header, daily.get(day, []))


def land(staged: Path, landing: Path, part: str) -> None:
    """Copy one staged part (``history`` or a day) into the landing folders the config reads."""
    for folder in (staged / part).iterdir():
        for file in folder.iterdir():
            (landing / folder.name).mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, landing / folder.name / file.name)


def overlay(generated: Path, landing: Path, out: Path) -> Path:
    """A config overlay reading the landing folders (items, catalogs and identity from the generated world)."""
    g, d = generated, landing
    out.write_text(f"""platforms:
  - {{name: shop, format: rees46, events: "{d}/shop/events-*.csv", items: "{g}/shop/items.csv"}}
  - {{name: app, format: taobao, events: "{d}/app/events-*.csv", items: "{g}/app/items.csv"}}
  - {{name: market, format: retailrocket, events: "{d}/market/events-*.csv", items: "{g}/market/items.csv"}}
ads:
  - {{platform: app, format: taobao_ads, path: "{d}/ads/events-*.csv", ad_feature: "{g}/app/ad_feature.csv"}}
identity: "{g}/identity.csv"
""")
    return out


def snapshot_sample(spark: SparkSession, cfg: Config, snapshot: date) -> pd.DataFrame:
    """Scoring rows of one snapshot (built without labels): the random model's feature statistics."""
    write_snapshot(spark, cfg, snapshot, with_labels=False)
    return snapshot_features(spark, cfg, snapshot).limit(2000).toPandas()


def report(result: MaintainResult) -> list[str]:
    """The ``<table>_files_before=`` / ``_after=`` lines of the tables this benchmark is about."""
    by_name = {t.table: t for t in result.tables}
    return [line for name in REPORTED if name in by_name for line in (
        f"{name}_files_before={by_name[name].before.files}", f"{name}_files_after={by_name[name].after.files}")]


def main(argv: list[str] | None = None) -> int:
    """Run the history and the daily runs, then maintain; print the file counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=300, help="people (default 300)")
    parser.add_argument("--days", type=int, default=40, help="days of history in all (default 40)")
    parser.add_argument("--daily-runs", type=int, default=10, help="last days run one by one (default 10)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    bench_options.add_common(parser, "work folder")
    args = parser.parse_args(argv)
    if not 1 <= args.daily_runs < args.days - 14:
        parser.error("--daily-runs must be at least 1 and leave 14 days of history")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault(KEY_ENV, "upkeep-bench-pseudonym-secret")  # publish needs one; nothing leaves the run
    root = bench_options.work_root(args, "propensity-upkeep-")
    generated = generate_feeds(root / "generated", users=args.users, days=args.days, seed=args.seed)
    first_daily = generated.end_date - timedelta(days=args.daily_runs)  # end_date: the first day without data
    cut_feeds(root / "generated", root / "staged", first_daily, args.daily_runs)
    land(root / "staged", root / "landing", "history")
    config = overlay(root / "generated", root / "landing", root / "feeds.yml")
    cfg = load_config([*bench_options.overlays(args), config],
                      [f"storage.root={root / 'state'}", *args.overrides])
    print(f"upkeep bench: {args.users} people, {args.days} days, the last {args.daily_runs} run day by day"
          f" from {first_daily}; load average {os.getloadavg()[0]:.2f}", flush=True)
    spark = get_spark(cfg)
    try:
        ingest(spark, cfg)
        sample = snapshot_sample(spark, cfg, first_daily)
        model_uri = scoring_bench.register_random_student(cfg, sample, root / "student", "upkeep_bench_student")
        for offset in range(args.daily_runs):
            day = first_daily + timedelta(days=offset)
            started = time.perf_counter()
            land(root / "staged", root / "landing", day.isoformat())
            ingest(spark, cfg)
            snapshot = day + timedelta(days=1)
            write_snapshot(spark, cfg, snapshot, with_labels=False)
            score_snapshot(spark, cfg, snapshot, model_uri)
            publish(spark, cfg, snapshot)
            print(f"day {day}: ingest, features, score and publish of {snapshot} in"
                  f" {time.perf_counter() - started:.0f}s", flush=True)
        result = maintain(spark, cfg)
    finally:
        spark.stop()
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)
    print(result.format())
    print("\n".join(report(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
