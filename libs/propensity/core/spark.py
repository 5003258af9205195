"""The one place a SparkSession is made.

Three situations, one function:

* **Databricks** or any process that already has an active session: reuse it.
* **spark-submit**: the launcher set the master and ``--packages``; only ask for the
  session, never override the master.
* **embedded local default**: ``local[*]`` with Delta's extension and catalog, Spark's
  in-memory catalog over the Delta folders under ``storage.root`` (each process registers
  the tables it uses, so several processes share one root; :mod:`propensity.core.storage`),
  session time zone UTC, and the workers on this Python (``PYSPARK_PYTHON``). Setting
  ``spark.sql.catalogImplementation: hive`` (and a metastore) in ``spark.conf`` uses that
  catalog instead.

Delta's jars come, in this order, from ``spark.delta_jars_dir`` (or the
``PROPENSITY_DELTA_JARS`` environment variable), from the jar folder ``make setup``
fills inside the virtual environment, or from Maven via ``spark.jars.packages``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from propensity.core.config import Config
from propensity.core.errors import ConfigError
from propensity.core.storage import database_dir, folder_catalog, sql_path

log = logging.getLogger(__name__)

VENV_JARS_DIR = Path(sys.prefix) / "share" / "propensity" / "jars"


def get_spark(cfg: Config) -> SparkSession:
    """Return the session for this process and make sure the project database exists.

    :param cfg: loaded configuration; its ``spark`` section is used for local sessions only.
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        spark = active
    elif _launched_by_spark_submit() or "DATABRICKS_RUNTIME_VERSION" in os.environ:
        spark = SparkSession.builder.appName(cfg.spark.app_name).getOrCreate()
    else:
        spark = _local_session(cfg)
    _ensure_database(spark, cfg)
    return spark


def _launched_by_spark_submit() -> bool:
    # spark-submit starts the JVM first and hands Python its gateway port.
    return "PYSPARK_GATEWAY_PORT" in os.environ


def delta_jars(cfg: Config) -> list[Path]:
    """Jar files to put on the classpath, or [] to resolve ``spark.delta_package`` from Maven."""
    configured = cfg.spark.delta_jars_dir or os.environ.get("PROPENSITY_DELTA_JARS")
    if configured:
        folder = Path(configured)
        jars = sorted(folder.glob("*.jar")) if folder.is_dir() else []
        if not jars:
            raise ConfigError(f"spark.delta_jars_dir={configured!r} holds no .jar files;"
                              " run `make setup` or point it at the Delta jars")
        return jars
    return sorted(VENV_JARS_DIR.glob("*.jar")) if VENV_JARS_DIR.is_dir() else []


def _local_session(cfg: Config) -> SparkSession:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    root = cfg.root
    root.mkdir(parents=True, exist_ok=True)
    log4j = Path(__file__).parents[1] / "resources" / "log4j2.properties"
    builder = (
        SparkSession.builder.master(cfg.spark.master)
        .appName(cfg.spark.app_name)
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.catalogImplementation", "in-memory")
        .config("spark.sql.warehouse.dir", str(root / "warehouse"))
        .config("spark.driver.memory", cfg.spark.driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(cfg.spark.shuffle_partitions))
        .config("spark.ui.enabled", str(cfg.spark.ui_enabled).lower())
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.databricks.delta.schema.autoMerge.enabled", "false")
        .config("spark.local.dir", str(root / "tmp"))
    )
    settings = {"spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
                "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={log4j.as_uri()}"}
    jars = delta_jars(cfg)
    if jars:
        # Also on the driver's class path: threads with their own class loader (the Thrift
        # server's sessions) must see Delta's catalog too.
        settings.update({"spark.jars": ",".join(str(j) for j in jars),
                         "spark.driver.extraClassPath": os.pathsep.join(str(j) for j in jars)})
    else:
        log.info("no local Delta jars found; resolving %s from Maven", cfg.spark.delta_package)
        builder = builder.config("spark.jars.packages", cfg.spark.delta_package)
    for key, value in {**settings, **_joined(settings, cfg.spark.conf)}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


#: Settings that hold lists: a value in ``spark.conf`` is added to ours instead of replacing it.
_LIST_SETTINGS = {"spark.sql.extensions": ",", "spark.jars": ",", "spark.driver.extraClassPath": os.pathsep,
                  "spark.driver.extraJavaOptions": " "}


def _joined(ours: dict[str, str], configured: dict[str, str]) -> dict[str, str]:
    """``spark.conf`` with its list settings appended to ours (a user's Java option keeps our log config)."""
    return {key: (f"{ours[key]}{_LIST_SETTINGS[key]}{value}" if key in _LIST_SETTINGS and key in ours else value)
            for key, value in configured.items()}


def _ensure_database(spark: SparkSession, cfg: Config) -> None:
    location = f" LOCATION '{sql_path(database_dir(cfg))}'" if folder_catalog(spark, cfg) else ""
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {cfg.database}{location}")
