"""The ``propensity`` command line (DESIGN section 6).

Every verb takes ``--conf FILE`` (repeatable, overlaid in order on ``conf/base.yml``;
default ``conf/local.yml``), repeatable ``--set dotted.key=value``, and ``--catalog``
/ ``--schema`` shortcuts for the Databricks bundle. A user error prints one line on
stderr and exits 2; results go to stdout, logs to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

from propensity.config import Config, load_config
from propensity.errors import PropensityError

log = logging.getLogger("propensity")

#: Exit code of ``propensity evaluate`` when a champion gate failed (2 is a user error).
GATE_FAILED = 3


def _global_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--conf", action="append", default=argparse.SUPPRESS, metavar="FILE",
                        help="config overlay on conf/base.yml (repeatable; default conf/local.yml)")
    common.add_argument("--set", action="append", default=argparse.SUPPRESS, metavar="KEY=VALUE", dest="overrides",
                        help="override one config key, e.g. --set features.lookback_days=14 (repeatable)")
    common.add_argument("--catalog", default=argparse.SUPPRESS, help="shortcut for --set storage.catalog=...")
    common.add_argument("--schema", default=argparse.SUPPRESS, help="shortcut for --set storage.schema=...")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    return common


def _snapshot_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date; use YYYY-MM-DD") from e


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per verb."""
    common = _global_options()
    parser = argparse.ArgumentParser(prog="propensity", parents=[common],
                                     description="Cross-platform purchase, click and churn propensity.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    gen = verbs.add_parser("generate", parents=[common], help="write synthetic raw feeds and a config overlay")
    gen.add_argument("--out", required=True, type=Path, help="output folder")
    gen.add_argument("--users", type=int, default=2000, help="number of people (default 2000)")
    gen.add_argument("--days", type=int, default=60, help="days of history (default 60)")
    gen.add_argument("--seed", type=int, default=7, help="random seed (default 7)")

    verbs.add_parser("ingest", parents=[common], help="raw feeds -> bronze -> events, items, identity_map, rejects")

    feat = verbs.add_parser("features", parents=[common], help="training_examples for one snapshot date")
    feat.add_argument("--snapshot-date", type=_snapshot_date, help="T (YYYY-MM-DD): features before T, labels after")
    feat.add_argument("--labels", action=argparse.BooleanOptionalAction, default=True,
                      help="compute labels (--no-labels leaves them NULL, as at scoring time)")
    feat.add_argument("--training-set", action="store_true",
                      help="build every missing snapshot of the training plan (train, validation, test)")

    verbs.add_parser("pretrain", parents=[common],
                     help="masked-language-model pretraining of the teacher encoder on all platforms")
    verbs.add_parser("finetune", parents=[common],
                     help="fine-tune the teacher's purchase/click/churn heads; registers propensity_teacher")
    verbs.add_parser("distill", parents=[common],
                     help="distil the student from the teacher; registers propensity_student")
    verbs.add_parser("evaluate", parents=[common],
                     help="teacher, student, fusion and baselines into model_evaluations; champion gates")

    score = verbs.add_parser("score", parents=[common], help="user_scores for one snapshot date")
    score.add_argument("--snapshot-date", type=_snapshot_date, required=True, help="T (YYYY-MM-DD)")
    score.add_argument("--model-uri", default=None, help="model to use (default scoring.model_uri)")

    pub = verbs.add_parser("publish", parents=[common], help="inventory_demand and ads_audiences for one snapshot")
    pub.add_argument("--snapshot-date", type=_snapshot_date, required=True, help="T (YYYY-MM-DD)")

    sql = verbs.add_parser("sql", parents=[common], help="run SQL on the project's database")
    sql.add_argument("query", help="the SQL query")
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
    sql.add_argument("--limit", type=int, default=None, help="print at most this many rows")

    server = verbs.add_parser("sql-server", parents=[common],
                              help="serve the tables over JDBC/ODBC (Spark Thrift server, HiveServer2 protocol)")
    server.add_argument("--port", type=int, default=10000, help="TCP port on localhost (default 10000)")

    conf = verbs.add_parser("config", parents=[common], help="print the resolved configuration")
    conf.add_argument("--keys", action="store_true", help="list every config key with its help text instead")

    demo = verbs.add_parser("demo", parents=[common], help="generate data and run the pipeline end to end")
    demo.add_argument("--users", type=int, default=2000, help="number of people (default 2000)")
    demo.add_argument("--days", type=int, default=60, help="days of history (default 60)")
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    demo.add_argument("--root", type=Path, default=Path("var/demo"),
                      help="demo state folder, emptied first (default var/demo)")
    demo.add_argument("--transfer", action=argparse.BooleanOptionalAction, default=True,
                      help="run the transfer experiment too (default on)")
    return parser


def _config(args: argparse.Namespace) -> Config:
    overrides = list(getattr(args, "overrides", []))
    if hasattr(args, "catalog"):
        overrides.append(f"storage.catalog={args.catalog}")
    if hasattr(args, "schema"):
        overrides.append(f"storage.schema={args.schema}")
    return load_config(getattr(args, "conf", None), overrides)


def _cmd_generate(args: argparse.Namespace) -> int:
    from propensity.generate import generate_feeds

    feeds = generate_feeds(args.out, users=args.users, days=args.days, seed=args.seed)
    print(f"wrote feeds for {feeds.start_date} .. {feeds.end_date} (exclusive) to {feeds.out_dir}")
    for name, counts in feeds.manifest.items():
        if isinstance(counts, dict):
            print(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    print(f"config overlay: {feeds.config_path}")
    print(f"next: propensity --conf conf/local.yml --conf {feeds.config_path} ingest")
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from propensity.ingest.pipeline import ingest
    from propensity.spark import get_spark

    cfg = _config(args)
    if not cfg.platforms and not cfg.ads:
        raise PropensityError("no feeds configured: add `platforms` to a --conf overlay"
                              " (propensity generate writes one)")
    report = ingest(get_spark(cfg), cfg)
    print(report.format())
    unbalanced = [a for a in report.accounts if not a.balanced]
    if unbalanced:
        raise PropensityError(f"accounting does not balance for {unbalanced[0].platform} {unbalanced[0].feed}")
    return 0


def _cmd_features(args: argparse.Namespace) -> int:
    from propensity.features import ensure_snapshots, plan_snapshots, write_snapshot
    from propensity.spark import get_spark

    cfg = _config(args)
    if args.snapshot_date is None and not args.training_set:
        raise PropensityError("give --snapshot-date YYYY-MM-DD or --training-set")
    spark = get_spark(cfg)
    if args.training_set:
        plan = plan_snapshots(spark, cfg)
        ensure_snapshots(spark, cfg, plan)
        print(f"training set: train {', '.join(d.isoformat() for d in plan.train)}; validation {plan.validation};"
              f" test {plan.test}")
    if args.snapshot_date is not None:
        rows = write_snapshot(spark, cfg, args.snapshot_date, with_labels=args.labels)
        print(f"training_examples: {rows} rows for snapshot {args.snapshot_date}")
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from propensity.spark import get_spark
    from propensity.training.pretrain import run_pretrain

    cfg = _config(args)
    checkpoint = run_pretrain(get_spark(cfg), cfg, cfg.teacher, cfg.training)
    print(f"pretrained teacher encoder: {checkpoint}")
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from propensity.spark import get_spark
    from propensity.training.finetune import run_finetune

    cfg = _config(args)
    version = run_finetune(get_spark(cfg), cfg, cfg.teacher, cfg.training)
    print(f"registered {version.name} version {version.version} (MLflow run {version.run_id})")
    return 0


def _cmd_distill(args: argparse.Namespace) -> int:
    from propensity.spark import get_spark
    from propensity.training.distill import run_distill

    cfg = _config(args)
    version = run_distill(get_spark(cfg), cfg)
    print(f"registered {version.name} version {version.version} (MLflow run {version.run_id})")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from propensity.evaluation.compare import run_evaluate_all
    from propensity.spark import get_spark

    cfg = _config(args)
    report = run_evaluate_all(get_spark(cfg), cfg)
    print(report.format())
    if report.failed:
        print(f"propensity evaluate: {len(report.failed)} champion gate(s) failed; the previous @champion stays",
              file=sys.stderr)
        return GATE_FAILED
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from propensity.scoring.score import score_path_summary, score_snapshot
    from propensity.spark import get_spark

    cfg = _config(args)
    result = score_snapshot(get_spark(cfg), cfg, args.snapshot_date, args.model_uri)
    print(score_path_summary(result))
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from propensity.scoring.publish import publish
    from propensity.spark import get_spark

    cfg = _config(args)
    result = publish(get_spark(cfg), cfg, args.snapshot_date)
    print(result.format())
    return 0


def _cmd_sql(args: argparse.Namespace) -> int:
    from propensity.spark import get_spark
    from propensity.sql import render, run_sql

    cfg = _config(args)
    spark = get_spark(cfg)
    print(render(run_sql(spark, cfg, args.query), args.format, args.limit))
    return 0


def _cmd_sql_server(args: argparse.Namespace) -> int:
    from propensity.sqlserver import serve

    return serve(_config(args), args.port)


def _cmd_config(args: argparse.Namespace) -> int:
    import dataclasses

    import yaml

    from propensity.config import describe

    if args.keys:
        for key, text in describe():
            print(f"{key:40s} {text}")
        return 0
    print(yaml.safe_dump(dataclasses.asdict(_config(args)), sort_keys=False, default_flow_style=False), end="")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from propensity.demo import run_demo

    return run_demo(args.root, getattr(args, "conf", None), list(getattr(args, "overrides", [])),
                    users=args.users, days=args.days, seed=args.seed, transfer=args.transfer)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "generate": _cmd_generate,
    "ingest": _cmd_ingest,
    "features": _cmd_features,
    "pretrain": _cmd_pretrain,
    "finetune": _cmd_finetune,
    "distill": _cmd_distill,
    "evaluate": _cmd_evaluate,
    "score": _cmd_score,
    "publish": _cmd_publish,
    "sql": _cmd_sql,
    "sql-server": _cmd_sql_server,
    "config": _cmd_config,
    "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 success, 2 user error, 3 a champion gate failed, 1 unexpected)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    logging.getLogger("py4j").setLevel(logging.WARNING)
    _quiet_libraries(verbose=getattr(args, "verbose", False))
    try:
        return COMMANDS[args.verb](args)
    except PropensityError as e:
        print(f"propensity {args.verb}: error: {e}", file=sys.stderr)
        return 2


def _quiet_libraries(verbose: bool) -> None:
    """Keep progress readable: no download progress bars, and library chatter only with ``-v``."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not verbose:
        # petastorm logs every cache materialisation; mlflow.pyfunc warns about env_manager="local" on each
        # spark_udf, which is intended here (the cluster runs the same environment as the driver).
        for name in ("petastorm", "mlflow.pyfunc", "mlflow.models"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _entry(verb: str) -> Callable[[], None]:
    def run() -> None:
        sys.exit(main([verb, *sys.argv[1:]]))

    run.__doc__ = f"Console entry point for `propensity {verb}` (Databricks python_wheel_task)."
    return run


generate_entry = _entry("generate")
ingest_entry = _entry("ingest")
features_entry = _entry("features")
sql_entry = _entry("sql")
pretrain_entry = _entry("pretrain")
finetune_entry = _entry("finetune")
distill_entry = _entry("distill")
evaluate_entry = _entry("evaluate")
score_entry = _entry("score")
publish_entry = _entry("publish")
