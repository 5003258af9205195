"""How much of a model's expected calibration error is sampling noise (README, "Model quality on the demo data").

ECE over 10 equal-width bins is biased upwards on a finite test set: even a perfectly calibrated
model shows a positive ECE, the larger the fewer rows. This script scores the test snapshot of a
finished ``propensity evaluate`` (e.g. ``make demo``'s ``var/demo/state``) with a registered model
through the scoring job's own path, prints each task's ECE, and draws the labels ``draws`` times
from the model's own probabilities (so the model is perfectly calibrated by construction) to
give the ECE such a model shows on the same rows: its mean and 95th percentile. An ECE above that
95th percentile is miscalibration, not noise.

    .venv/bin/python benchmarks/calibration_floor.py --root var/demo/state
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_options  # sibling file, not a package

from propensity.core.config import load_config
from propensity.core.schema import SCORE_COLUMNS, TASKS
from propensity.core.spark import get_spark
from propensity.core.tables import require_table
from propensity.models.metrics import expected_calibration_error
from propensity.models.registry import resolve_model
from propensity.models.spark_scoring import score_frame

LABELS = [f"label_{task}" for task in TASKS]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench_options.add_common(parser, "the storage root of a finished evaluation (required)")
    parser.add_argument("--model", default="models:/propensity_student@champion", help="model URI to score with")
    parser.add_argument("--draws", type=int, default=2000, help="label draws from the model's own probabilities")
    args = parser.parse_args()
    if args.root is None:
        parser.error("--root is required: the storage.root of a finished `propensity evaluate` (e.g. var/demo/state)")
    cfg = load_config(bench_options.overlays(args), [f"storage.root={args.root.resolve()}", *args.overrides])
    spark = get_spark(cfg)
    evaluations = require_table(spark, cfg, "model_evaluations")
    latest = spark.sql(f"SELECT max(snapshot_date) AS test_date FROM {evaluations} WHERE split = 'test'").first()
    test_date = latest["test_date"] if latest is not None else None
    if test_date is None:
        parser.error(f"{evaluations} has no test rows: run `propensity evaluate` on this root first")
    rows = spark.table(require_table(spark, cfg, "training_examples")).where(f"snapshot_date = '{test_date}'")
    model = resolve_model(cfg, args.model)
    scored = pd.DataFrame(score_frame(spark, cfg, rows, model, keep=("user_id", "platform", *LABELS)).toPandas())
    print(f"{model.name} v{model.version} on the test snapshot {test_date}:")
    rng = np.random.default_rng(0)
    for task in TASKS:
        labelled = scored[scored[f"label_{task}"].notna()]
        p = labelled[SCORE_COLUMNS[task]].to_numpy(dtype=np.float64)
        ece = expected_calibration_error(labelled[f"label_{task}"].to_numpy(dtype=np.float64), p)
        floor = [expected_calibration_error((rng.random(p.size) < p).astype(np.float64), p) for _ in range(args.draws)]
        print(f"  {task:<8} rows {p.size:>5}  ECE {ece:.4f}  perfectly calibrated on these rows: mean"
              f" {np.mean(floor):.4f}, 95th percentile {np.percentile(floor, 95):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
