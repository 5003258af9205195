"""Fault injection: ingest, features, score and publish SIGKILLed at several points, then run again, end with
exactly the tables of a run that was never killed; and several processes share one storage.root.

The reference runs every stage once, uninterrupted, in this process (shared session, its own schema). The
killed runs are real ``propensity`` CLI processes on their own ``storage.root``, each killed with SIGKILL sent
to its whole process group (Python, the Spark JVM and the Python workers), as the OOM killer or a lost node
would. A stage is killed at each of its kill points in turn, each kill hitting the state the previous one
left, then run to completion; then every table of that stage is compared with the reference row by row, by
content (columns that name the run or its time aside, doubles to 9 digits).

Kill points are observable progress under ``storage.root``, polled every 20 ms, not timers, so they hit the
same moment of a run however loaded the machine is: a table's first commit (the first run on an empty root,
or on a root without that table), a table's new commit in this run, data files written but not yet committed
(or, if the commit came before the poll saw them, right after the commit), a model folder appearing.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from test_scoring import _register, _toy_models
from test_sqlserver import BEELINE, result_lines

from propensity.core.config import Config
from propensity.core.locks import lock_file
from propensity.core.privacy import KEY_ENV
from propensity.core.storage import database_dir
from propensity.stages.features import write_snapshot, write_snapshots
from propensity.stages.generate import generate_feeds
from propensity.stages.ingest.pipeline import ingest
from propensity.stages.publish.publish import publish
from propensity.stages.scoring.score import score_snapshot

pytestmark = pytest.mark.slow

TESTS = Path(__file__).parent
#: The pseudonym secret publish needs (the same in every run, so the published tables compare equal).
PSEUDONYM_KEY = "crash-test-pseudonym-key-0001"
#: Columns that name a run or its time: they differ between any two runs, killed or not.
VOLATILE = {"_ingested_at", "_ingest_run_id", "run_id", "started_at", "ingested_at", "scored_at"}
INGEST_TABLES = ("events", "rejects", "identity_map", "items", "ingest_runs", "ingested_files", "bronze_shop",
                 "bronze_app", "bronze_market", "bronze_app_ads")
STAGE_TABLES = {"ingest": INGEST_TABLES, "features": ("training_examples",), "score": ("user_scores",),
                "publish": ("inventory_demand", "ads_audiences")}


@dataclass
class World:
    """Generated feeds, a registered toy model, the reference (never killed) and the root the killed runs use."""

    reference: Config
    root: Path
    cli: list[str]
    day: date
    model: str
    ingest_report: str
    done: set[str] = field(default_factory=set)

    def stage(self, name: str) -> list[str]:
        """The CLI arguments of a stage."""
        day = ["--snapshot-date", self.day.isoformat()]
        return {"ingest": ["ingest"], "features": ["features", *day, "--no-labels"],
                "score": ["score", *day, "--model-uri", self.model], "publish": ["publish", *day]}[name]


@pytest.fixture(scope="module")
def world(spark: SparkSession, make_config: Callable[..., Config], tmp_path_factory: pytest.TempPathFactory
          ) -> World:
    base = tmp_path_factory.mktemp("crash")
    feeds = generate_feeds(base / "feeds", users=60, days=21, seed=5)
    tracking = f"mlflow.tracking_uri=sqlite:///{base / 'mlflow.db'}"
    reference = make_config([feeds.config_path], [tracking])
    recency, _ = _toy_models()
    model = _register(reference, recency(), "crash_toy")
    day = feeds.end_date
    report = ingest(spark, reference)
    write_snapshot(spark, reference, day, with_labels=False)
    score_snapshot(spark, reference, day, model)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_ENV, PSEUDONYM_KEY)
        publish(spark, reference, day)
    root = base / "state"
    cli = [sys.executable, "-m", "propensity", "--conf", str(feeds.config_path), "--set", f"storage.root={root}",
           "--set", tracking, "--set", "spark.master=local[2]", "--set", "spark.shuffle_partitions=2",
           "--set", "spark.driver_memory=1g"]
    return World(reference, root, cli, day, model, report.format())


# ------------------------------------------------------------------------------------------- progress and kills

class Progress:
    """What a run has done under its root since it started: new commits and data files per table."""

    def __init__(self, root: Path) -> None:
        self.tables = root / "warehouse" / "propensity.db"
        self.root = root
        self.start = {name: (self.versions(name), self.data_files(name)) for name in self._names()}

    def _names(self) -> list[str]:
        return [p.name for p in self.tables.iterdir()] if self.tables.is_dir() else []

    def versions(self, table: str) -> int:
        log = self.tables / table / "_delta_log"
        return sum(1 for p in log.iterdir() if re.fullmatch(r"\d{20}\.json", p.name)) if log.is_dir() else 0

    def data_files(self, table: str) -> int:
        folder = self.tables / table
        return sum(1 for _ in folder.rglob("*.parquet") if "_delta_log" not in _.parts) if folder.is_dir() else 0

    def new_commits(self, table: str) -> int:
        return self.versions(table) - self.start.get(table, (0, 0))[0]

    def new_data(self, table: str) -> int:
        return self.data_files(table) - self.start.get(table, (0, 0))[1]


@dataclass(frozen=True)
class KillPoint:
    """A moment of a run, recognised from its progress."""

    what: str
    reached: Callable[[Progress], bool]


def first_commit_anywhere() -> KillPoint:
    return KillPoint("first commit on an empty root", lambda p: any(p.new_commits(t) for t in p._names()))


def committed(table: str) -> KillPoint:
    return KillPoint(f"{table} committed", lambda p: p.new_commits(table) > 0)


def writing(table: str) -> KillPoint:
    return KillPoint(f"{table} data files written, not committed (or just committed)",
                     lambda p: p.new_data(table) > 0 or p.new_commits(table) > 0)


def path_appears(relative: str) -> KillPoint:
    return KillPoint(f"{relative} appeared", lambda p: (p.root / relative).exists())


def kill_at(world: World, args: list[str], point: KillPoint, log: Path) -> None:
    """Run the CLI and SIGKILL its process group once ``point`` is reached; it must not have finished first."""
    progress = Progress(world.root) if world.root.exists() else None
    with log.open("w") as out:
        proc = subprocess.Popen([*world.cli, *args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env=_env(), cwd=world.root.parent)
    try:
        while proc.poll() is None:
            if progress is None and world.root.exists():
                progress = Progress(world.root)
            if progress is not None and point.reached(progress):
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, (
        f"{' '.join(args)} ended (rc {proc.returncode}) before '{point.what}'; log:\n{log.read_text()[-3000:]}")


def run_through(world: World, args: list[str]) -> str:
    result = subprocess.run([*world.cli, *args], capture_output=True, text=True, env=_env(),
                            cwd=world.root.parent, timeout=1800, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _env() -> dict[str, str]:
    # The toy model's class travels by value, but its module must import in the workers too.
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYTHONPATH": path, KEY_ENV: PSEUDONYM_KEY}


def ensure_stage(world: World, name: str) -> None:
    """Bring the killed runs' root up to ``name``'s input (each test also works alone)."""
    for stage in ("ingest", "features", "score", "publish"):
        if stage == name:
            return
        if stage not in world.done:
            run_through(world, world.stage(stage))
            world.done.add(stage)


# ------------------------------------------------------------------------------------------- comparing tables

def _content(df: DataFrame) -> DataFrame:
    columns = [F.round(c, 9).alias(c) if t == "double" else F.col(c) for c, t in df.dtypes if c not in VOLATILE]
    return df.select(*columns)


def assert_same_tables(spark: SparkSession, world: World, tables: tuple[str, ...]) -> None:
    killed = world.root / "warehouse" / "propensity.db"
    for table in tables:
        want = _content(spark.read.format("delta").load(str(database_dir(world.reference) / table)))
        got = _content(spark.read.format("delta").load(str(killed / table)))
        missing, extra = want.exceptAll(got).collect(), got.exceptAll(want).collect()
        assert not missing and not extra, f"{table}: missing {missing[:5]}, extra {extra[:5]}"
        assert want.count() > 0, f"{table} is empty in the reference: the comparison would prove nothing"


def _kills(world: World, stage: str, points: list[KillPoint], tmp_path: Path) -> str:
    ensure_stage(world, stage)
    for i, point in enumerate(points):
        kill_at(world, world.stage(stage), point, tmp_path / f"{stage}-{i}.log")
    out = run_through(world, world.stage(stage))
    world.done.add(stage)
    return out


# ------------------------------------------------------------------------------------------- the stages

def test_ingest_killed_anywhere_then_rerun_equals_an_uninterrupted_run(
        spark: SparkSession, world: World, tmp_path: Path) -> None:
    """Killed after the first commit on an empty root (a bronze table committed, not yet registered),
    while the events MERGE writes, and after the run recorded its files but before its ingest_runs row;
    the re-run's accounting is the uninterrupted run's too."""
    out = _kills(world, "ingest", [first_commit_anywhere(), writing("events"), committed("ingested_files")],
                 tmp_path)
    assert out.strip() == world.ingest_report
    assert_same_tables(spark, world, INGEST_TABLES)


def test_features_killed_anywhere_then_rerun_equals_an_uninterrupted_run(
        spark: SparkSession, world: World, tmp_path: Path) -> None:
    """Killed right after creating training_examples (first run for that table) and while writing the snapshot."""
    _kills(world, "features", [committed("training_examples"), writing("training_examples")], tmp_path)
    assert_same_tables(spark, world, STAGE_TABLES["features"])


def test_score_killed_anywhere_then_rerun_equals_an_uninterrupted_run(
        spark: SparkSession, world: World, tmp_path: Path) -> None:
    """Killed once the model download began (user_scores does not exist yet) and while the MERGE writes."""
    _kills(world, "score", [path_appears("scoring/models"), writing("user_scores")], tmp_path)
    assert_same_tables(spark, world, STAGE_TABLES["score"])


def test_publish_killed_anywhere_then_rerun_equals_an_uninterrupted_run(
        spark: SparkSession, world: World, tmp_path: Path) -> None:
    """Killed after creating inventory_demand (first run) and between the two tables; then every table of every
    stage equals the reference."""
    _kills(world, "publish", [committed("inventory_demand"), committed("ads_audiences")], tmp_path)
    assert_same_tables(spark, world, tuple(t for tables in STAGE_TABLES.values() for t in tables))


# ------------------------------------------------------------------------------------------- several processes

@pytest.fixture
def held_lock(world: World) -> Iterator[Path]:
    """The write lock of inventory_demand, held by this process (the same OS record lock the JVM takes)."""
    path = world.root / "locks" / lock_file(world.reference, "inventory_demand").name.replace(
        world.reference.storage.schema, "propensity", 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX)
        handle.write("pid 1 (a test holding the lock)\n")
        handle.flush()
        yield path


def test_a_busy_table_makes_a_writer_wait_then_fail_in_one_line(world: World, held_lock: Path) -> None:
    ensure_stage(world, "publish")
    result = subprocess.run([*world.cli, "--set", "storage.lock_wait_seconds=2", *world.stage("publish")],
                            capture_output=True, text=True, env=_env(), cwd=world.root.parent, timeout=900,
                            check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "propensity publish: error: table inventory_demand is being written by pid 1 (a test holding the lock);"
        " waited 2s. Let that run finish, or raise storage.lock_wait_seconds")
    assert "Traceback" not in result.stderr


def test_stages_analysts_and_the_sql_server_share_one_root(
        spark: SparkSession, world: World, tmp_path: Path) -> None:
    """While the SQL server serves the root, scoring, two features runs (one table: they take turns on its write
    lock) and `propensity sql` run at the same time; all succeed and the tables equal the reference's."""
    ensure_stage(world, "publish")
    if "publish" not in world.done:  # as on any day after the first: user_keys exists, so user_scores_latest does
        run_through(world, world.stage("publish"))
        world.done.add("publish")
    earlier = [world.day - timedelta(days=1), world.day - timedelta(days=2)]
    write_snapshots(spark, world.reference, earlier, with_labels=False)
    port = _free_port()
    env = {**_env(), "PROPENSITY_SQL_USER": "analyst", "PROPENSITY_SQL_PASSWORD": "s3cret"}
    log = tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen([*world.cli, "sql-server", "--port", str(port)], stdout=out,
                                  stderr=subprocess.STDOUT, env=env, cwd=world.root.parent)
    try:
        while server.poll() is None and "Ctrl-C stops it" not in log.read_text():
            time.sleep(0.5)
        assert server.poll() is None, log.read_text()[-3000:]
        runs = {name: subprocess.Popen([*world.cli, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, env=_env(), cwd=world.root.parent)
                for name, args in [("score", world.stage("score")),
                                   *[(f"features {d}", ["features", "--snapshot-date", d.isoformat(), "--no-labels"])
                                     for d in earlier],
                                   ("sql", ["sql", "SELECT count(*) AS n FROM user_scores_latest", "--format",
                                            "csv"])]}
        results = {name: (proc.communicate(timeout=1800), proc.returncode) for name, proc in runs.items()}
        for name, ((_, err), code) in results.items():
            assert code == 0, f"{name}: {err[-3000:]}"
        served = subprocess.run(
            [str(BEELINE), "-u", f"jdbc:hive2://localhost:{port}/propensity",
             "-n", "analyst", "-p", "s3cret", "--outputformat=csv2", "-e",
             "SELECT count(*) AS n FROM user_scores"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
            env=env, timeout=900, check=False)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=300)
    scored = spark.read.format("delta").load(str(database_dir(world.reference) / "user_scores")).count()
    assert results["sql"][0][0].split() == ["n", str(scored)]
    assert served.returncode == 0 and ["n", str(scored)] == [
        line for line in result_lines(served.stdout) if line in ("n", str(scored))], served.stdout + served.stderr
    assert server.returncode == 0, log.read_text()[-3000:]
    assert_same_tables(spark, world, ("user_scores", "training_examples"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
