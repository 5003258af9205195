"""``make bench``: the scoring benchmark (README, "Benchmarks"), self-contained, about 8 minutes on 2 cores.

    .venv/bin/python benchmarks/run_all.py [--users 50000] [--root DIR] [--rounds 2] [--full]
        [--conf FILE] [--set key=value]

Makes a temporary storage root (or uses ``--root``), a local Spark session and MLflow registry
there, random-weight teacher and student models at the config's sizes, and N synthetic users;
then measures rows/s of our scoring job, ``mlflow.pyfunc.spark_udf`` and a plain torch loop
(the ceiling) for both models (see ``benchmarks/scoring_bench.py``). Prints a table and, as
its last lines, the ratios measured in this run::

    scoring_vs_compute_bound=X.XX    # our job / (threads x one thread's rows/s of the model's own work), student
    scoring_vs_machine_bound=X.XX    # our job / the compute bound with the data path sharing the same cores
    data_path_delta_vs_cache=X.XX    # no-model data path from a Delta table / from the cache the methods read
    scoring_vs_spark_udf=X.XX        # our job / spark_udf, student
    scoring_vs_torch_ceiling=X.XX    # our job / torch loop, student
    student_vs_teacher_speed=X.X     # student / teacher, both through our job

Numbers are only comparable when nothing else runs on the machine; the load average at the
start is printed. Every Spark job also has a fixed cost (scheduling, Python workers: about 0.3 s
here), so rates measured on few rows understate a daily job's: at 20,000 rows it was about 12%
of the student's time, at the default 50,000 about 6%.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_options  # sibling files, not a package
import scoring_bench

from propensity.core.config import load_config
from propensity.core.spark import get_spark


def compute_bound(result: scoring_bench.BenchResult, role: str = "student") -> float:
    """Rows/s the scoring threads could reach if they did nothing but the model's own per-row work
    (fitting sequences, preparing features, the forward pass; each measured on one thread)."""
    per_row_us = sum(v for (r, step), v in result.profile.items() if r == role and "rows/s" not in step)
    return result.total_threads * 1e6 / per_row_us


def machine_bound(result: scoring_bench.BenchResult, role: str = "student") -> float:
    """Rows/s the cores could reach doing the model's own work *and* moving the rows through Spark and Arrow
    (the JVM side runs on the same cores): the two per-row costs added, each from this run."""
    return 1.0 / (1.0 / compute_bound(result, role) + 1.0 / data_path(result))


def data_path(result: scoring_bench.BenchResult, step: str = scoring_bench.DATA_PATH_STEP) -> float:
    """Rows/s of the no-model data path (``step``: from the cache the methods read, or from a Delta table)."""
    return result.profile[("both", step)]


def ratio_lines(result: scoring_bench.BenchResult) -> list[str]:
    """The ratio lines: our job against the compute bound, spark_udf and the torch loop; student against teacher."""
    scoring = result.rate("student", "scoring")
    return [f"scoring_vs_compute_bound={scoring / compute_bound(result):.2f}",
            f"scoring_vs_machine_bound={scoring / machine_bound(result):.2f}",
            f"data_path_delta_vs_cache={data_path(result, scoring_bench.DELTA_DATA_PATH_STEP) / data_path(result):.2f}",
            f"scoring_vs_spark_udf={scoring / result.rate('student', 'spark_udf'):.2f}",
            f"scoring_vs_torch_ceiling={scoring / result.rate('student', 'torch_loop'):.2f}",
            f"student_vs_teacher_speed={scoring / result.rate('teacher', 'scoring'):.1f}"]


def _quiet() -> None:
    """Keep library chatter (MLflow, transformers, py4j) out of the report."""
    warnings.filterwarnings("ignore")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    import mlflow  # noqa: F401  (it sets its loggers' levels when imported: import first, then lower them)

    for name in ("mlflow", "py4j", "urllib3", "alembic", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; exit status 0 when they ran (the targets are reported, not enforced)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=50000, help="synthetic users (rows) to score (default 50000)")
    bench_options.add_common(parser, "storage root for Spark, Delta and MLflow")
    parser.add_argument("--full", action="store_true", help="also score with the teacher through spark_udf")
    parser.add_argument("--rounds", type=int, default=2, help="timed runs per method, best kept (default 2)")
    args = parser.parse_args(argv)
    if args.users < 64:
        parser.error("--users must be at least 64")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    _quiet()
    root = bench_options.work_root(args, "propensity-bench-")
    cfg = load_config(bench_options.overlays(args), [f"storage.root={root}", "storage.schema=bench",
                                                     "mlflow.experiment=bench", *args.overrides])
    load = os.getloadavg()[0]
    busy = " (other work is running: the numbers will be noisy)" if load > 1.0 else ""
    print(f"make bench: storage root {root}; load average {load:.2f}{busy}", flush=True)
    started = time.perf_counter()
    spark = get_spark(cfg)
    try:
        result = scoring_bench.run(spark, cfg, args.users, root / "bench",
                                   log=lambda line: print(line, flush=True), full=args.full,
                                   rounds=args.rounds)
    finally:
        spark.stop()
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(scoring_bench.table(result))
    print(f"compute bound of the student: {compute_bound(result):,.0f} rows/s ({result.total_threads} threads x"
          " one thread's rows/s of fitting sequences, features and forward pass)")
    print(f"with the Spark + Arrow data path on the same cores: {machine_bound(result):,.0f} rows/s")
    print(f"targets: scoring >= 0.85x the compute bound and >= 1.5x spark_udf, student >= 10x teacher;"
          f" total {time.perf_counter() - started:.0f}s")
    print("\n".join(ratio_lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
