"""How the cost of ingest, features and scoring grows with the data: the same days, 1x and 10x the people.

    .venv/bin/python benchmarks/scale_bench.py [--users 2000] [--days 60] [--scales 1,10] [--root DIR]
        [--conf FILE] [--set key=value]

For each scale it generates the demo's world with ``scale x --users`` people over ``--days``
days (``propensity generate``), then times ``propensity ingest``, ``propensity features
--training-set`` and ``propensity score`` of the plan's test snapshot on one local Spark session
(each scale in its own schema), and prints the seconds per stage, the raw rows read and the cost
per raw row (scoring: per scored row). Scoring uses a student with random weights at the
config's ``student`` size, registered in the run's own MLflow registry: its cost does not depend
on the weights, so no training is needed. Its last lines are the ratios of the largest scale's
cost per row to the smallest's (1.0: linear; above 1: a step grows faster than the data)::

    ingest_cost_per_row_10x_vs_1x=X.XX
    features_cost_per_row_10x_vs_1x=X.XX
    score_cost_per_row_10x_vs_1x=X.XX

Fixed costs (job scheduling, Delta commits, one snapshot per plan date) are spread over more
rows at the larger scale, so a linear pipeline shows ratios below 1. One run, on a machine that
may be shared: the load average at the start is printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import bench_options  # sibling files, not a package
import scoring_bench

from propensity.core.config import load_config
from propensity.core.datasets import plan_snapshots
from propensity.core.spark import get_spark
from propensity.stages.features import ensure_snapshots
from propensity.stages.generate import generate_feeds
from propensity.stages.ingest.pipeline import ingest
from propensity.stages.scoring.score import score_snapshot, snapshot_features


@dataclass(frozen=True)
class ScaleResult:
    """One scale's measurements."""

    scale: float
    users: int
    raw_rows: int
    event_rows: int
    example_rows: int
    scored_rows: int
    seconds: dict[str, float]

    def per_row_us(self, stage: str) -> float:
        """Microseconds of ``stage`` per row: per scored row for ``score``, per raw row read otherwise."""
        rows = self.scored_rows if stage == "score" else self.raw_rows
        return self.seconds[stage] / rows * 1e6


def run_scale(spark: object, overlays: list[str], overrides: list[str], root: Path, scale: float, users: int,
              days: int, seed: int) -> ScaleResult:
    """Generate, ingest and build the training set at one scale; returns its timings and row counts."""
    from pyspark.sql import SparkSession

    assert isinstance(spark, SparkSession)
    name = f"x{str(scale).replace('.', '_')}"
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    feeds = generate_feeds(root / name / "feeds", users=users, days=days, seed=seed)
    seconds["generate"] = time.perf_counter() - start
    cfg = load_config([*overlays, feeds.config_path], [f"storage.root={root}", f"storage.schema=scale_{name}",
                                                       *overrides])
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {cfg.database}")
    start = time.perf_counter()
    report = ingest(spark, cfg)
    seconds["ingest"] = time.perf_counter() - start
    start = time.perf_counter()
    plan = plan_snapshots(spark, cfg)
    ensure_snapshots(spark, cfg, plan)
    seconds["features"] = time.perf_counter() - start
    sample = snapshot_features(spark, cfg, plan.test).limit(2000).toPandas()
    model_uri = scoring_bench.register_random_student(cfg, sample, root / name / "student",
                                                      f"scale_bench_student_{name}")
    scored = score_snapshot(spark, cfg, plan.test, model_uri)
    seconds["score"] = scored.seconds
    events = spark.table(cfg.table("events")).count()
    example_rows = spark.table(cfg.table("training_examples")).count()
    return ScaleResult(scale, users, report.event_rows_read(), events, example_rows, scored.rows, seconds)


def table(results: list[ScaleResult]) -> str:
    """Seconds per stage and microseconds per raw row, one line per scale."""
    lines = ["| scale | people | raw rows | events | training rows | scored rows | generate s | ingest s |"
             " features s | score s | ingest us/row | features us/row | score us/scored row |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.scale:g}x | {r.users:,} | {r.raw_rows:,} | {r.event_rows:,} | {r.example_rows:,} |"
                     f" {r.scored_rows:,} | {r.seconds['generate']:.1f} | {r.seconds['ingest']:.1f} |"
                     f" {r.seconds['features']:.1f} | {r.seconds['score']:.1f} | {r.per_row_us('ingest'):.1f} |"
                     f" {r.per_row_us('features'):.1f} | {r.per_row_us('score'):.1f} |")
    return "\n".join(lines)


def ratio_lines(small: ScaleResult, large: ScaleResult) -> list[str]:
    """``<stage>_cost_per_row_<large>x_vs_<small>x=`` for ingest, features and score."""
    tag = f"{large.scale:g}x_vs_{small.scale:g}x"
    return [f"{stage}_cost_per_row_{tag}={large.per_row_us(stage) / small.per_row_us(stage):.2f}"
            for stage in ("ingest", "features", "score")]


def main(argv: list[str] | None = None) -> int:
    """Run every scale, print the table and the ratios; exit status 0 when they ran (targets are reported)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=2000, help="people at scale 1 (default 2000, the demo's)")
    parser.add_argument("--days", type=int, default=60, help="days of history at every scale (default 60)")
    parser.add_argument("--scales", default="1,10", help="comma-separated multiples of --users (default 1,10)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    bench_options.add_common(parser, "storage root")
    args = parser.parse_args(argv)
    scales = sorted(float(s) for s in args.scales.split(","))
    if len(scales) < 2 or scales[0] <= 0:
        parser.error("--scales needs at least two positive multiples, e.g. 1,10")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    root = bench_options.work_root(args, "propensity-scale-")
    overlays = bench_options.overlays(args)
    base = load_config(overlays, [f"storage.root={root}", *args.overrides])
    load = os.getloadavg()[0]
    busy = " (other work is running: the numbers will be noisy)" if load > 1.0 else ""
    print(f"scale bench: {args.days} days, people x {', '.join(f'{s:g}' for s in scales)} of {args.users};"
          f" storage root {root}; load average {load:.2f}{busy}", flush=True)
    spark = get_spark(base)
    results: list[ScaleResult] = []
    try:
        for scale in scales:
            users = max(1, round(args.users * scale))
            result = run_scale(spark, overlays, args.overrides, root, scale, users, args.days, args.seed)
            results.append(result)
            print(f"{scale:g}x: {result.raw_rows:,} raw rows; " + ", ".join(
                f"{k} {v:.1f}s" for k, v in result.seconds.items()), flush=True)
    finally:
        spark.stop()
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(table(results))
    print(f"load average at the end {os.getloadavg()[0]:.2f}; target: cost per row at the largest scale <= 1.05x"
          " the smallest's")
    print("\n".join(ratio_lines(results[0], results[-1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
