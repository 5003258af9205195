"""One local Spark session per test process (`make test` runs two, pytest-xdist); each test gets its own database."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest
from pyspark.sql import SparkSession

from propensity.core.config import Config, load_config
from propensity.core.spark import get_spark

#: Where MLflow writes when a test forgets to give it a store of its own (relative to the working directory).
DEFAULT_MLFLOW_FOLDERS = ("mlruns", "mlartifacts")

_schema_ids = itertools.count()

#: JVM settings for the tests' short-lived Spark processes on kilobytes of data: the shared session, every CLI,
#: Thrift server and spark-submit process a test starts (through ``SPARK_SUBMIT_OPTS``, which they inherit) and
#: the executors of ``local-cluster``. There, C2 compilation and whole-stage code generation cost more CPU than
#: they save (ingest of a 60-person world on 2 cores: 70-74 s with the defaults, 66 s with these, and a third of
#: the CPU freed); results are the same. Spark's internal ``spark.sql.codegen.factoryMode=NO_CODEGEN`` saved
#: more but is not used: its interpreted decoder fails ``spark.catalog.listTables`` (EXPRESSION_DECODING_FAILED).
#: Production sessions keep Spark's defaults.
TEST_JVM_OPTIONS = ("-XX:TieredStopAtLevel=1", "-Dspark.executor.extraJavaOptions=-XX:TieredStopAtLevel=1",
                    "-Dspark.sql.codegen.wholeStage=false")
os.environ["SPARK_SUBMIT_OPTS"] = " ".join([*os.environ.get("SPARK_SUBMIT_OPTS", "").split(), *TEST_JVM_OPTIONS])


@pytest.fixture(scope="session")
def spark_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spark-root")


@pytest.fixture(scope="session")
def spark(spark_root: Path) -> Iterator[SparkSession]:
    cfg = load_config(overrides=[f"storage.root={spark_root}", "spark.master=local[2]",
                                 "spark.shuffle_partitions=2", "spark.driver_memory=2g"])
    session = get_spark(cfg)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def make_config(spark_root: Path, spark: SparkSession) -> Callable[..., Config]:
    """Build a config on the shared session with a fresh database (schema) per call."""

    def make(overlays: list[str | Path] | None = None, overrides: list[str] | None = None) -> Config:
        schema = f"test_{next(_schema_ids)}"
        base = [f"storage.root={spark_root}", f"storage.schema={schema}", "spark.master=local[2]",
                "spark.shuffle_partitions=2"]
        cfg = load_config(overlays, base + (overrides or []))
        get_spark(cfg)  # the shared session; creates the schema
        return cfg

    return make


@pytest.fixture(autouse=True)
def no_mlflow_run_left_active() -> Iterator[None]:
    """A stage must end every MLflow run it starts: a run left active breaks the next ``start_run``."""
    yield
    leaked = mlflow.active_run()
    if leaked is not None:
        mlflow.end_run()
        pytest.fail(f"the test left MLflow run {leaked.info.run_id} ({leaked.info.run_name}) active")


@pytest.fixture(autouse=True)
def no_mlflow_files_in_the_working_directory() -> Iterator[None]:
    """MLflow's default stores (``./mlruns``, ``./mlartifacts``) are never written: each test's stores live in
    its own folders, so nothing leaks into the checkout or from one test into another."""
    before = {name for name in DEFAULT_MLFLOW_FOLDERS if Path(name).exists()}
    yield
    created = [name for name in DEFAULT_MLFLOW_FOLDERS if Path(name).exists() and name not in before]
    if created:
        pytest.fail(f"the test wrote MLflow's default folder {created[0]} into {Path.cwd()}; give it a store of its"
                    " own (tracking URI and an experiment artifact_location under tmp_path)")
