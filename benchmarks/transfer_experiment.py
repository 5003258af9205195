"""Transfer experiment: adapt the teacher to a held-out platform with 5%, 20% and 100% of its labels.

Compares *transfer* (fine-tuned on the other platforms first, then on the target's labels)
with *target-only* training (pretrained encoder, new heads, the same target labels), by test
AUC per task on the target platform. Prints the table; logs it and a plot (AUC against label
fraction) to MLflow (run ``transfer-experiment``). Needs ingested events; builds the
snapshots and pretrains first if that has not happened yet.

    .venv/bin/python benchmarks/transfer_experiment.py --conf conf/local.yml --conf FEEDS.yml \\
        --target market [--fractions 0.05,0.2,1] [--mode head|full] [--set training.epochs=2]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

from propensity.core.config import load_config
from propensity.core.datasets import plan_snapshots
from propensity.core.spark import get_spark
from propensity.stages.features import ensure_snapshots
from propensity.stages.training.pretrain import run_pretrain
from propensity.stages.training.start import latest_pretrained
from propensity.stages.training.transfer import DEFAULT_FRACTIONS, format_transfer, run_transfer_experiment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", action="append", help="config overlay (repeatable; default conf/local.yml)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="dotted.key=value")
    parser.add_argument("--target", required=True, help="held-out target platform")
    parser.add_argument("--fractions", default=",".join(f"{f:g}" for f in DEFAULT_FRACTIONS),
                        help="comma-separated shares of the target's labels")
    parser.add_argument("--mode", choices=("head", "full"), help="transfer mode (default: training.transfer_mode)")
    parser.add_argument("--pretrain", action="store_true", help="pretrain again even if a checkpoint exists")
    args = parser.parse_args(argv)
    fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        parser.error(f"--fractions={args.fractions!r} must be numbers in (0, 1]")

    cfg = load_config(args.conf, args.overrides)
    train = cfg.training
    cfg = replace(cfg, training=replace(train, target_platform=args.target,
                                        transfer_mode=args.mode or train.transfer_mode,
                                        source_platforms=[p for p in train.source_platforms if p != args.target]))
    spark = get_spark(cfg)
    start = time.perf_counter()
    plan = plan_snapshots(spark, cfg)
    ensure_snapshots(spark, cfg, plan)
    if args.pretrain or latest_pretrained(cfg) is None:
        print(f"pretrained encoder: {run_pretrain(spark, cfg)}")
    result = run_transfer_experiment(spark, cfg, fractions, plan)
    print(f"\ntest AUC on {args.target} ({cfg.training.transfer_mode} mode, {time.perf_counter() - start:.0f}s):")
    print(format_transfer(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
