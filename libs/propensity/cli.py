"""The ``propensity`` command line: one sub-command per verb of :mod:`propensity.verbs`.

Every verb takes ``--conf FILE`` (repeatable, overlaid in order on ``conf/base.yml``;
default ``conf/local.yml``), repeatable ``--set dotted.key=value``, and ``--catalog``
/ ``--schema`` shortcuts for the Databricks bundle. Results go to stdout, logs to stderr.
Exit codes (:mod:`propensity.verbs`): 0 success; 2 a user error, printed as one line on
stderr without a traceback; 3 a champion gate failed (``evaluate``); 4 a drift alert
(``monitor``); 1 a bug (traceback).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from propensity.core.config import Config, load_config
from propensity.core.errors import PropensityError, UsageError
from propensity.verbs import EXIT_DRIFT_ALERT, EXIT_GATE_FAILED, EXIT_OK, EXIT_USER_ERROR, JOB_VERBS, TOOL_VERBS

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("propensity")
#: pyspark's loggers of the JVM exceptions it converts (each logged with the JVM's stack trace).
PYSPARK_EXCEPTION_LOGGERS = ("SQLQueryContextLogger", "DataFrameQueryContextLogger")


@dataclass(frozen=True)
class Verb:
    """One sub-command: its help line, its own arguments and what it runs (returns the exit code)."""

    help: str
    run: Callable[[argparse.Namespace], int]
    arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None


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


def _config(args: argparse.Namespace) -> Config:
    overrides = list(getattr(args, "overrides", []))
    if hasattr(args, "catalog"):
        overrides.append(f"storage.catalog={args.catalog}")
    if hasattr(args, "schema"):
        overrides.append(f"storage.schema={args.schema}")
    return load_config(getattr(args, "conf", None), overrides)


def _session(args: argparse.Namespace) -> tuple[Config, SparkSession]:
    from propensity.core.spark import get_spark

    cfg = _config(args)
    return cfg, get_spark(cfg)


# ------------------------------------------------------------------------------------------------- the verbs


def _generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--users", type=int, default=2000, help="number of people (default 2000)")
    parser.add_argument("--days", type=int, default=60, help="days of history (default 60)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")


def _generate(args: argparse.Namespace) -> int:
    from propensity.stages.generate import generate_feeds

    feeds = generate_feeds(args.out, users=args.users, days=args.days, seed=args.seed)
    print(feeds.format())
    print(f"next: propensity --conf conf/local.yml --conf {feeds.config_path} ingest")
    return EXIT_OK


def _ingest(args: argparse.Namespace) -> int:
    from propensity.stages.ingest.pipeline import ingest

    cfg, spark = _session(args)
    report = ingest(spark, cfg)
    print(report.format())
    unbalanced = [a for a in report.accounts if not a.balanced]
    if unbalanced:
        raise PropensityError(f"accounting does not balance for {unbalanced[0].platform} {unbalanced[0].feed}")
    return EXIT_OK


def _features_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--snapshot-date", type=_snapshot_date, help="T (YYYY-MM-DD): features before T, labels after")
    parser.add_argument("--labels", action=argparse.BooleanOptionalAction, default=True,
                        help="compute labels (--no-labels leaves them NULL, as at scoring time)")
    parser.add_argument("--training-set", action="store_true",
                        help="build every missing snapshot of the training plan (train, validation, test)")


def _features(args: argparse.Namespace) -> int:
    from propensity.core.datasets import plan_snapshots
    from propensity.stages.features import ensure_snapshots, write_snapshot

    if args.snapshot_date is None and not args.training_set:
        raise UsageError("give --snapshot-date YYYY-MM-DD or --training-set")
    cfg, spark = _session(args)
    if args.training_set:
        plan = plan_snapshots(spark, cfg)
        ensure_snapshots(spark, cfg, plan)
        print(f"training set: {plan.describe()}")
    if args.snapshot_date is not None:
        rows = write_snapshot(spark, cfg, args.snapshot_date, with_labels=args.labels)
        print(f"training_examples: {rows} rows for snapshot {args.snapshot_date}")
    return EXIT_OK


def _pretrain(args: argparse.Namespace) -> int:
    from propensity.stages.training.pretrain import run_pretrain

    cfg, spark = _session(args)
    print(f"pretrained teacher encoder: {run_pretrain(spark, cfg)}")
    return EXIT_OK


def _finetune(args: argparse.Namespace) -> int:
    from propensity.stages.training.finetune import run_finetune

    cfg, spark = _session(args)
    version = run_finetune(spark, cfg)
    print(f"registered {version.name} version {version.version} (MLflow run {version.run_id})")
    return EXIT_OK


def _distill(args: argparse.Namespace) -> int:
    from propensity.stages.training.distill import run_distill

    cfg, spark = _session(args)
    version = run_distill(spark, cfg)
    print(f"registered {version.name} version {version.version} (MLflow run {version.run_id})")
    return EXIT_OK


def _evaluate(args: argparse.Namespace) -> int:
    from propensity.stages.evaluation.evaluate import run_evaluate

    cfg, spark = _session(args)
    report = run_evaluate(spark, cfg)
    print(report.format())
    if report.failed:
        print(f"propensity evaluate: {len(report.failed)} champion gate(s) failed; the previous @champion stays",
              file=sys.stderr)
        return EXIT_GATE_FAILED
    return EXIT_OK


def _score_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--snapshot-date", type=_snapshot_date, required=True, help="T (YYYY-MM-DD)")
    parser.add_argument("--model-uri", default=None, help="model to use (default scoring.model_uri)")


def _score(args: argparse.Namespace) -> int:
    from propensity.stages.scoring.score import score_snapshot

    cfg, spark = _session(args)
    print(score_snapshot(spark, cfg, args.snapshot_date, args.model_uri).format())
    return EXIT_OK


def _snapshot_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--snapshot-date", type=_snapshot_date, required=True, help="T (YYYY-MM-DD)")


def _publish(args: argparse.Namespace) -> int:
    from propensity.stages.publish.publish import publish

    cfg, spark = _session(args)
    print(publish(spark, cfg, args.snapshot_date).format())
    return EXIT_OK


def _monitor(args: argparse.Namespace) -> int:
    from propensity.stages.monitor.monitor import run_monitor

    cfg, spark = _session(args)
    report = run_monitor(spark, cfg, args.snapshot_date)
    print(report.format())
    print(f"drift plot: MLflow run {report.mlflow_run_id}, artifact {report.plot}")
    breaches = report.breach_lines()
    for line in breaches:
        print(f"propensity monitor: {line}", file=sys.stderr)
    return EXIT_DRIFT_ALERT if breaches else EXIT_OK


def _forget_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user-id", action="append", default=[], help="cross-platform user id (repeatable)")
    parser.add_argument("--platform", help="platform of --platform-user-id")
    parser.add_argument("--platform-user-id", action="append", default=[], help="account id on --platform")
    parser.add_argument("--file", type=Path, help="many requests: one `user_id` or `platform,platform_user_id` a line")
    parser.add_argument("--requested-by", help="who asked (recorded; default the OS or Databricks user)")


def _forget(args: argparse.Namespace) -> int:
    from propensity.stages.upkeep.forget import Subject, forget, read_subjects

    if args.platform_user_id and not args.platform:
        raise UsageError("--platform-user-id needs --platform P")
    subjects = [Subject(u) for u in args.user_id] + [Subject(x, args.platform) for x in args.platform_user_id]
    if args.file is not None:
        subjects += read_subjects(args.file)
    if not subjects:
        raise UsageError("nothing to forget: give --user-id, --platform with --platform-user-id, or --file")
    cfg, spark = _session(args)
    print(forget(spark, cfg, subjects, args.requested_by).format())
    return EXIT_OK


def _maintain(args: argparse.Namespace) -> int:
    from propensity.stages.upkeep.maintain import maintain

    cfg, spark = _session(args)
    print(maintain(spark, cfg).format())
    return EXIT_OK


def _sql_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", help="the SQL query")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
    parser.add_argument("--limit", type=int, default=None, help="print at most this many rows")
    parser.add_argument("--allow-writes", action="store_true",
                        help="also run statements that change data (INSERT, DELETE, MERGE, DROP, ALTER, ...);"
                             " without it only statements that read run")


def _sql(args: argparse.Namespace) -> int:
    from propensity.stages.analyst.sql import render, run_sql

    cfg, spark = _session(args)
    print(render(run_sql(spark, cfg, args.query, allow_writes=args.allow_writes), args.format, args.limit))
    return EXIT_OK


def _sql_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=10000, help="TCP port on localhost (default 10000)")


def _sql_server(args: argparse.Namespace) -> int:
    from propensity.stages.analyst.server import serve

    return serve(_config(args), args.port)


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--keys", action="store_true", help="list every config key with its help text instead")
    what.add_argument("--defaults", action="store_true",
                      help="print every key with its default and help as YAML (that is conf/base.yml)")


def _config_verb(args: argparse.Namespace) -> int:
    import dataclasses

    import yaml

    from propensity.core.config.reference import defaults_yaml, describe

    if args.keys:
        for key in describe():
            print(f"{key.name:42s} {key.help}")
    elif args.defaults:
        print(defaults_yaml(), end="")
    else:
        print(yaml.safe_dump(dataclasses.asdict(_config(args)), sort_keys=False, default_flow_style=False), end="")
    return EXIT_OK


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=int, default=2000, help="number of people (default 2000)")
    parser.add_argument("--days", type=int, default=60, help="days of history (default 60)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--root", type=Path, default=Path("var/demo"),
                        help="demo state folder, emptied first (default var/demo)")
    parser.add_argument("--transfer", action=argparse.BooleanOptionalAction, default=True,
                        help="run the transfer experiment too (default on)")


def _demo(args: argparse.Namespace) -> int:
    from propensity.demo import run_demo

    return run_demo(args.root, getattr(args, "conf", None), list(getattr(args, "overrides", [])),
                    users=args.users, days=args.days, seed=args.seed, transfer=args.transfer)


VERBS: dict[str, Verb] = {
    "generate": Verb("write synthetic raw feeds and a config overlay", _generate, _generate_arguments),
    "ingest": Verb("raw feeds -> bronze -> events, items, identity_map, rejects", _ingest),
    "features": Verb("training_examples for one snapshot date, or the training plan's snapshots", _features,
                     _features_arguments),
    "pretrain": Verb("masked-language-model pretraining of the teacher encoder on all platforms", _pretrain),
    "finetune": Verb("fine-tune the teacher's purchase/click/churn heads; registers propensity_teacher", _finetune),
    "distill": Verb("distil the student from the teacher; registers propensity_student", _distill),
    "evaluate": Verb("teacher, student, fusion and baselines into model_evaluations; champion gates", _evaluate),
    "score": Verb("user_scores for one snapshot date (its features must be built)", _score, _score_arguments),
    "publish": Verb("inventory_demand and ads_audiences for one snapshot", _publish, _snapshot_argument),
    "monitor": Verb("drift of scores and top features vs the model's reference and the previous snapshot;"
                    " score_drift; exit 4 on an alert", _monitor, _snapshot_argument),
    "forget": Verb("erase people from every table and purge their files; recorded in erasure_requests", _forget,
                   _forget_arguments),
    "maintain": Verb("OPTIMIZE (Z-order) and VACUUM every table, files and bytes before/after", _maintain),
    "sql": Verb("run SQL on the project's database (read-only unless --allow-writes)", _sql, _sql_arguments),
    "sql-server": Verb("serve the tables over JDBC/ODBC (Spark Thrift server, HiveServer2 protocol)", _sql_server,
                       _sql_server_arguments),
    "config": Verb("print the resolved configuration", _config_verb, _config_arguments),
    "demo": Verb("generate data and run the pipeline end to end", _demo, _demo_arguments),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per verb, in the order of :mod:`propensity.verbs`."""
    common = _global_options()
    parser = argparse.ArgumentParser(prog="propensity", parents=[common],
                                     description="Cross-platform purchase, click and churn propensity.")
    subparsers = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name in (*JOB_VERBS, *TOOL_VERBS):
        verb = VERBS[name]
        verb.arguments(subparsers.add_parser(name, parents=[common], help=verb.help, description=verb.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see :mod:`propensity.verbs`)."""
    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    _quiet_libraries(verbose)
    try:
        return VERBS[args.verb].run(args)
    except PropensityError as e:
        if verbose:
            log.debug("cause", exc_info=e)
        print(f"propensity {args.verb}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_USER_ERROR


def _quiet_libraries(verbose: bool) -> None:
    """Keep progress readable: no download progress bars, and library chatter only with ``-v``."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    if not verbose:
        # MLflow logs through its own handler at INFO ("Creating initial MLflow database tables..."): the
        # variable covers an import still to come, the level one that already happened.
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        # petastorm logs every cache materialisation; mlflow.pyfunc warns about env_manager="local".
        for name in ("petastorm", "mlflow.pyfunc", "mlflow.models"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # pyspark logs every JVM exception it converts, with the JVM's stack trace, through handlers of its
        # own; the CLI reports the ones a user causes in one line (and their cause with -v).
        from pyspark.logger import PySparkLogger

        for name in PYSPARK_EXCEPTION_LOGGERS:
            PySparkLogger.getLogger(name).setLevel(logging.CRITICAL)


def entry(verb: str) -> Callable[[], None]:
    """The console entry point ``propensity-<verb>`` (Databricks ``python_wheel_task``)."""

    def run() -> None:
        sys.exit(main([verb, *sys.argv[1:]]))

    run.__doc__ = f"Console entry point for `propensity {verb}`."
    return run


def __getattr__(name: str) -> Callable[[], None]:
    """``<verb>_entry`` for every job verb: what ``setup.py``'s console scripts point at."""
    verb = name.removesuffix("_entry")
    if name.endswith("_entry") and verb in JOB_VERBS:
        return entry(verb)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
