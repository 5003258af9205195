"""How much of a model's expected calibration error is sampling noise (README, "Model quality on the demo data").

ECE over 10 equal-width bins is biased upwards on a finite test set: even a perfectly calibrated
model shows a positive ECE, the larger the fewer rows. This script scores the test snapshot of a
finished ``propensity evaluate`` (e.g. ``make demo``'s ``var/demo/state``) with a registered model
through the scoring job's own path, prints each task's ECE, and draws the labels ``draws`` times
from the model's own probabilities (so the model is perfectly calibrated by construction) to
give the ECE such a model shows on the same rows: its mean and 95th percentile. An ECE above that
95th percentile is miscalibration, not noise. For its direction, each task's probabilities are
refitted on these rows (the calibration's own Platt map, one slope and an intercept per platform,
on their logits) with a bootstrap 95% interval of the slope: a slope above 1 means the model is
too cautious here, below 1 too confident.

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
from propensity.core.datasets import examples, labelled, plan_snapshots
from propensity.core.schema import LABEL_COLUMNS, SCORE_COLUMNS, TASKS
from propensity.core.spark import get_spark
from propensity.models.calibration import fit_task
from propensity.models.metrics import expected_calibration_error
from propensity.models.registry import resolve_model
from propensity.models.spark_scoring import score_frame


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench_options.add_common(parser, "the storage root of a finished evaluation (required)")
    parser.add_argument("--model", default="models:/propensity_student@champion", help="model URI to score with")
    parser.add_argument("--draws", type=int, default=2000, help="label draws from the model's own probabilities")
    parser.add_argument("--resamples", type=int, default=200, help="bootstrap resamples of the refitted slope")
    args = parser.parse_args()
    if args.root is None:
        parser.error("--root is required: the storage.root of a finished `propensity evaluate` (e.g. var/demo/state)")
    cfg = load_config(bench_options.overlays(args), [f"storage.root={args.root.resolve()}", *args.overrides])
    spark = get_spark(cfg)
    test_date = plan_snapshots(spark, cfg).test  # the snapshot `propensity evaluate` tests on
    rows = labelled(examples(spark, cfg, [test_date]))
    model = resolve_model(cfg, args.model)
    scored = pd.DataFrame(score_frame(spark, cfg, rows, model, keep=("user_id", "platform", *LABEL_COLUMNS))
                          .toPandas())
    print(f"{model.name} v{model.version} on the test snapshot {test_date}:")
    rng = np.random.default_rng(0)
    for task, label in zip(TASKS, LABEL_COLUMNS, strict=True):
        known = scored[scored[label].notna()]
        p = known[SCORE_COLUMNS[task]].to_numpy(dtype=np.float64)
        ece = expected_calibration_error(known[label].to_numpy(dtype=np.float64), p)
        floor = [expected_calibration_error((rng.random(p.size) < p).astype(np.float64), p) for _ in range(args.draws)]
        print(f"  {task:<8} rows {p.size:>5}  ECE {ece:.4f}  perfectly calibrated on these rows: mean"
              f" {np.mean(floor):.4f}, 95th percentile {np.percentile(floor, 95):.4f}")
        low, slope, high = refitted_slope(p, known[label].to_numpy(dtype=np.float64), known["platform"].to_numpy(),
                                          args.resamples, rng)
        print(f"  {'':<8} slope refitted on these rows {slope:.2f} (bootstrap 95%: {low:.2f}-{high:.2f})")
    return 0


def refitted_slope(p: np.ndarray, labels: np.ndarray, platforms: np.ndarray, resamples: int,
                   rng: np.random.Generator) -> tuple[float, float, float]:
    """The Platt slope (shared, one intercept per platform) that best maps ``p``'s logits to ``labels``, with the
    2.5th and 97.5th percentiles of ``resamples`` bootstrap refits: ``(low, slope, high)``."""
    clipped = np.clip(p, 1e-6, 1 - 1e-6)
    logits = np.log(clipped / (1 - clipped))
    keys = np.unique(platforms, return_inverse=True)[1]  # fit_task keys platforms by integer id
    slope = fit_task(logits, labels, keys).slope
    draws = [rng.integers(0, p.size, p.size) for _ in range(resamples)]
    refits = [fit_task(logits[i], labels[i], keys[i]).slope for i in draws]
    return float(np.percentile(refits, 2.5)), slope, float(np.percentile(refits, 97.5))


if __name__ == "__main__":
    raise SystemExit(main())
