"""The cluster path, run as the README tells a cluster user (``make test``, or alone ``make test-cluster``).

The wheel is built with ``pip wheel``, and every stage from ingest to publish is launched
with pyspark's own ``bin/spark-submit`` on ``local-cluster[2,1,1024]``: two executor JVMs
with their own Python workers, Delta's jars through ``--jars``, the wheel through
``--py-files``, ``conf/cluster.yml`` (``training.local_mode: false``, so TorchDistributor's
training processes are barrier tasks on the executors, gloo on CPU). The same stages then
run on the same feeds in this process's ``local[2]`` session and the results must match:
the same rows in every table, the same labels and event ids by value, and the scores of
the model version registered by the cluster run equal to 1e-6 whether the executors or
the local session computed them.

Tiny on purpose (150 people, 21 days, a one-layer encoder, one epoch) so it runs in a few
minutes; most of its time is Spark starting executors once per stage.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from propensity.core.config import Config
from propensity.core.privacy import KEY_ENV
from propensity.core.schema import LABEL_COLUMNS, SCORE_COLUMNS
from propensity.core.sequence import SEQUENCE_COLUMN
from propensity.core.spark import VENV_JARS_DIR
from propensity.stages.generate import GeneratedFeeds, generate_feeds

pytestmark = [pytest.mark.cluster, pytest.mark.distributed, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SPARK_SUBMIT = Path(__import__("pyspark").__file__).parent / "bin" / "spark-submit"
MASTER = "local-cluster[2,1,1024]"
USERS, DAYS, SEED = 150, 21, 3
#: Short windows so 21 days hold a training plan; a one-layer encoder and one epoch.
SETTINGS = [
    "features.lookback_days=7", "features.purchase_horizon_days=7", "features.click_horizon_days=7",
    "features.churn_horizon_days=7", "features.snapshot_step_days=3", "features.min_history_days=3",
    "features.max_train_snapshots=2",
    *[f"teacher.{k}={v}" for k, v in {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
                                      "max_length": 16, "head_hidden_size": 8}.items()],
    *[f"training.{k}={v}" for k, v in {"pretrain_epochs": 1, "epochs": 1, "batch_size": 16,
                                       "max_train_rows": 0, "max_pretrain_rows": 0, "max_eval_rows": 0}.items()],
]
MODEL_URI = "models:/propensity_teacher/1"
#: The pseudonym secret publish needs: the same on both sides, so the audiences compare by user_key.
PSEUDONYM_KEY = "cluster-test-pseudonym-key-01"


def wheel(out: Path) -> Path:
    """``pip wheel --no-deps --no-build-isolation -w <out> .`` as the README says; returns the wheel."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(REPO)], check=True, cwd=REPO, capture_output=True, text=True)
    (found,) = out.glob("propensity-*.whl")
    return found


def submit_command(whl: Path, jars: list[Path], root: Path, script: str, *args: str) -> list[str]:
    """The README's spark-submit line for one stage (local-cluster master, tiny shuffles, Derby metastore)."""
    return [str(SPARK_SUBMIT), "--master", MASTER,
            "--jars", ",".join(str(j) for j in jars),
            "--py-files", str(whl),
            "--conf", "spark.task.cpus=1",
            "--conf", "spark.executorEnv.OMP_WAIT_POLICY=PASSIVE",
            "--conf", "spark.sql.shuffle.partitions=4",
            "--conf", f"spark.hadoop.javax.jdo.option.ConnectionURL=jdbc:derby:;databaseName={root}/metastore_db;"
                      "create=true",
            f"jobs/{script}.py", *args]


def submit_env() -> dict[str, str]:
    """This environment without PYTHONPATH (the wheel, not the checkout, must be what the stages import)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable, PYTHONUNBUFFERED="1")
    env[KEY_ENV] = PSEUDONYM_KEY
    return env


@dataclass(frozen=True)
class ClusterRun:
    """Feeds, the cluster run's storage root and its stage outputs."""

    feeds: GeneratedFeeds
    root: Path
    outputs: dict[str, str]

    def table(self, spark: SparkSession, name: str) -> DataFrame:
        """A table the cluster run wrote, read by its Delta path."""
        return spark.read.format("delta").load(str(self.root / "warehouse" / "propensity.db" / name))


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory: pytest.TempPathFactory) -> ClusterRun:
    jars = sorted(VENV_JARS_DIR.glob("*.jar"))
    if not jars:
        pytest.skip(f"no Delta jars in {VENV_JARS_DIR}: run `make setup` (the cluster tier passes them with --jars)")
    base = tmp_path_factory.mktemp("cluster")
    whl = wheel(base / "dist")
    feeds = generate_feeds(base / "feeds", users=USERS, days=DAYS, seed=SEED)
    root = base / "state"
    common = ["--conf", "conf/cluster.yml", "--conf", str(feeds.config_path), "--set", f"storage.root={root}",
              *[a for s in SETTINGS for a in ("--set", s)]]
    day = feeds.end_date.isoformat()
    stages = [("ingest", []), ("features", ["--training-set"]), ("features", ["--snapshot-date", day, "--no-labels"]),
              ("pretrain", []), ("finetune", []), ("score", ["--snapshot-date", day, "--model-uri", MODEL_URI]),
              ("publish", ["--snapshot-date", day])]
    outputs: dict[str, str] = {}
    for i, (script, args) in enumerate(stages):
        command = submit_command(whl, jars, root, script, *common, *args)
        log_path = base / f"{i}-{script}.log"  # Spark's own log (INFO) and the stage's output, kept for a failure
        started = time.perf_counter()
        with log_path.open("w") as log_file:
            done = subprocess.run(command, cwd=REPO, env=submit_env(), stdout=log_file, stderr=subprocess.STDOUT,
                                  text=True, timeout=1800)
        log = log_path.read_text()
        assert done.returncode == 0, f"{shlex.join(command)} exited {done.returncode}:\n{log[-6000:]}"
        print(f"{script} {' '.join(args)}: {time.perf_counter() - started:.0f}s ({log_path})")
        outputs[f"{script} {' '.join(args)}".strip()] = log
    return ClusterRun(feeds, root, outputs)


def test_spark_submit_without_delta_says_which_option_is_missing(tmp_path: Path) -> None:
    """No --jars/--packages: one line naming the option, exit code 2, instead of a Java traceback later."""
    command = [str(SPARK_SUBMIT), "--master", "local[1]", "--conf", "spark.jars.ivy=" + str(tmp_path / "ivy"),
               "jobs/ingest.py", "--set", f"storage.root={tmp_path / 'state'}"]
    env = {**submit_env(), "PYTHONPATH": str(REPO / "libs")}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    log = done.stdout + done.stderr  # spark-submit passes the Python driver's stderr on as its stdout
    errors = [line for line in log.splitlines() if line.startswith("propensity ingest: error:")]
    assert done.returncode == 2, log[-3000:]
    assert errors == ["propensity ingest: error: Delta Lake's classes are not on Spark's class path; pass"
                      " spark-submit --packages io.delta:delta-spark_2.13:4.0.1 (or --jars with the delta-spark and"
                      " delta-storage jars)"]
    assert "Traceback" not in log


def test_cluster_run_trains_on_executors_from_the_wheel(cluster_run: ClusterRun) -> None:
    ingest_log = cluster_run.outputs["ingest"]
    # the stages imported the wheel shipped with --py-files, not the checkout or an installed copy
    assert re.search(r"propensity-0\.1\.0-py3-none-any\.whl/propensity/", ingest_log)
    for stage in ("pretrain", "finetune"):
        log = cluster_run.outputs[stage]
        assert "TorchDistributor: 2 process(es) as Spark barrier tasks on CPU (gloo)" in log
        # the barrier tasks ran in both executors, not on the driver
        executors = set(re.findall(r"Starting task \d+\.\d+ in stage \d+\.\d+ \(TID \d+\) \([^,]+,executor (\d+),",
                                   log))
        assert executors == {"0", "1"}, f"{stage}: tasks ran on executors {executors}"
    assert "registered propensity_teacher version 1" in cluster_run.outputs["finetune"]
    assert "with propensity_teacher v1" in cluster_run.outputs[
        f"score --snapshot-date {cluster_run.feeds.end_date} --model-uri {MODEL_URI}"]


@pytest.fixture(scope="module")
def local_run(cluster_run: ClusterRun, make_config: Callable[..., Config], spark: SparkSession) -> Config:
    """The same stages on the same feeds in this process's local[2] session, scoring the cluster's model version."""
    from propensity.core.datasets import plan_snapshots
    from propensity.stages.features import ensure_snapshots, write_snapshot
    from propensity.stages.ingest.pipeline import ingest
    from propensity.stages.publish.publish import publish
    from propensity.stages.scoring.score import score_snapshot

    cfg = make_config([cluster_run.feeds.config_path],
                      [*SETTINGS, f"mlflow.tracking_uri=sqlite:///{cluster_run.root / 'mlflow.db'}"])
    ingest(spark, cfg)
    ensure_snapshots(spark, cfg, plan_snapshots(spark, cfg))
    write_snapshot(spark, cfg, cluster_run.feeds.end_date, with_labels=False)
    score_snapshot(spark, cfg, cluster_run.feeds.end_date, MODEL_URI)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_ENV, PSEUDONYM_KEY)
        publish(spark, cfg, cluster_run.feeds.end_date)
    return cfg


def _same_rows(left: DataFrame, right: DataFrame, what: str) -> None:
    assert left.count() == right.count() > 0, f"{what}: {left.count()} rows on the cluster, {right.count()} locally"
    assert left.exceptAll(right).isEmpty() and right.exceptAll(left).isEmpty(), f"{what} differ by value"


def test_cluster_tables_equal_the_local_run(cluster_run: ClusterRun, local_run: Config, spark: SparkSession) -> None:
    cfg = local_run
    event_columns = ["user_id", "platform", "event_time", "event_type", "item_id"]
    _same_rows(cluster_run.table(spark, "events").select(*event_columns),
               spark.table(cfg.table("events")).select(*event_columns), "events")
    for name in ("items", "identity_map"):
        columns = [c for c in spark.table(cfg.table(name)).columns if not c.startswith("_") and c != "ingested_at"]
        _same_rows(cluster_run.table(spark, name).select(*columns), spark.table(cfg.table(name)).select(*columns),
                   name)
    # every snapshot (train, validation, test and the unlabelled day to score): keys, labels and event ids by value
    key = ["snapshot_date", "user_id", "platform"]
    columns = [*key, *LABEL_COLUMNS, SEQUENCE_COLUMN]
    cluster_examples = cluster_run.table(spark, "training_examples").select(*columns)
    _same_rows(cluster_examples, spark.table(cfg.table("training_examples")).select(*columns), "training_examples")
    assert cluster_examples.select("snapshot_date").distinct().count() >= 4
    assert cluster_examples.where(F.col("label_purchase") == 1).count() > 0


def test_cluster_scores_equal_local_scores_of_the_same_model_version(cluster_run: ClusterRun, local_run: Config,
                                                                     spark: SparkSession) -> None:
    day = cluster_run.feeds.end_date
    key = ["user_id", "platform"]
    scores = list(SCORE_COLUMNS.values())
    remote = cluster_run.table(spark, "user_scores").where(F.col("snapshot_date") == F.lit(day))
    local = spark.table(local_run.table("user_scores")).where(F.col("snapshot_date") == F.lit(day))
    assert {tuple(r) for r in remote.select("model_name", "model_version").distinct().collect()} == {
        ("propensity_teacher", "1")}
    assert {tuple(r) for r in local.select("model_name", "model_version").distinct().collect()} == {
        ("propensity_teacher", "1")}
    joined = remote.select(*key, *[F.col(c).alias(f"r_{c}") for c in scores]).join(
        local.select(*key, *scores), key, "full_outer")
    rows = joined.count()
    assert rows == remote.count() == local.count() > 0
    diffs = joined.agg(*[F.max(F.abs(F.col(f"r_{c}") - F.col(c))).alias(c) for c in scores],
                       *[F.count(F.col(f"r_{c}") - F.col(c)).alias(f"n_{c}") for c in scores]).first()
    assert diffs is not None
    for c in scores:
        assert diffs[f"n_{c}"] == rows, f"{c}: rows scored on one side only"
        assert diffs[c] <= 1e-6, f"{c}: cluster and local scores differ by up to {diffs[c]}"
    # publish on both sides: the same audiences and demand
    _same_rows(cluster_run.table(spark, "ads_audiences").drop("score"),
               spark.table(local_run.table("ads_audiences")).drop("score"), "ads_audiences")
    demand = ["snapshot_date", "platform", "category", "users_scored"]
    _same_rows(cluster_run.table(spark, "inventory_demand").select(*demand),
               spark.table(local_run.table("inventory_demand")).select(*demand), "inventory_demand")


#: Loads a model in a Python that has the installed libraries (site-packages without its .pth files, so no
#: editable checkout) but neither propensity nor pyspark: what an environment built from the model's own
#: requirements.txt has. Prints the predictions of the model's logged input example as JSON.
FRESH_LOAD = r"""
import json, sys

class Block:
    names = {"pyspark", "propensity"}

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.path.append(sys.argv[2])  # the installed libraries (python -S: no venv, no .pth files)
sys.meta_path.insert(0, Block())
try:
    import propensity
    sys.exit("propensity is importable before the model is loaded")
except ModuleNotFoundError:
    Block.names = {"pyspark"}  # from now on only what the model brings along may provide it
import mlflow

model_dir = sys.argv[1]
model = mlflow.pyfunc.load_model(model_dir)
print(json.dumps({"module": sys.modules["propensity"].__file__,
                  "predictions": model.predict(example(model_dir)).to_dict(orient="list")}))
"""

#: The model's logged input example, as a JSON client sends it (event_ids as lists of integers).
EXAMPLE = r"""
def example(model_dir):
    import json
    import pandas as pd

    with open(f"{model_dir}/input_example.json") as f:
        logged = json.load(f)
    frame = pd.DataFrame(logged["data"], columns=logged["columns"])
    features = [c for c in frame.columns if c != "event_ids"]
    frame[features] = frame[features].astype("float64")
    return frame
"""


def test_registered_model_loads_where_only_its_own_requirements_are(cluster_run: ClusterRun) -> None:
    """The model carries the propensity package (code_paths), so it loads without it and without pyspark."""
    import json

    import mlflow

    model_dir = cluster_run.root / "scoring" / "models" / "propensity_teacher-v1"
    requirements = (model_dir / "requirements.txt").read_text().split()
    assert {r.split("==")[0] for r in requirements} >= {"torch", "mlflow", "pandas", "numpy"}
    assert not any(r.startswith(("propensity", "pyspark")) for r in requirements)
    assert (model_dir / "code" / "propensity" / "models" / "pyfunc.py").is_file()

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    purelib = sysconfig.get_paths()["purelib"]
    done = subprocess.run([sys.executable, "-S", "-c", EXAMPLE + FRESH_LOAD, str(model_dir), purelib], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["module"].startswith(str(model_dir / "code" / "propensity"))
    namespace: dict[str, Any] = {}
    exec(EXAMPLE, namespace)
    expected = mlflow.pyfunc.load_model(str(model_dir)).predict(namespace["example"](str(model_dir)))
    assert list(loaded["predictions"]) == list(expected.columns)
    for task, values in loaded["predictions"].items():
        assert values == pytest.approx(expected[task].tolist(), abs=1e-9)
