"""The one place a SparkSession is made.

Three situations, one function:

* **Databricks** or any process that already has an active session: reuse it.
* **spark-submit**: the launcher set the master, ``--jars``/``--packages`` and any ``--conf``;
  the session is made with Delta's SQL extension and catalog, UTC and ``spark.conf`` for
  every key the launcher left unset (never the master, the jars or a key it set). Delta's
  classes must be on the class path (``--packages`` or ``--jars``): without them, or when a
  session already existed without Delta's extension, :class:`ConfigError` names the missing
  ``--conf`` instead of a Java traceback at the first ``CREATE TABLE ... USING DELTA``.
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
    elif "DATABRICKS_RUNTIME_VERSION" in os.environ:
        spark = SparkSession.builder.appName(cfg.spark.app_name).getOrCreate()
    elif _launched_by_spark_submit():
        spark = _submitted_session(cfg)
    else:
        spark = _local_session(cfg)
    _ensure_database(spark, cfg)
    return spark


def _launched_by_spark_submit() -> bool:
    # spark-submit starts the JVM first and hands Python its gateway port.
    return "PYSPARK_GATEWAY_PORT" in os.environ


#: Settings a spark-submit'ed session gets unless the launcher set them (static ones only take effect here,
#: before the session exists).
DELTA_SESSION_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def submitted_defaults(cfg: Config) -> dict[str, str]:
    """What a spark-submit'ed session is given for keys the launcher left unset.

    Delta's extension and catalog, a Hive catalog (tables outlive one application: the cluster's
    metastore from its ``hive-site.xml``, else an embedded Derby one, see the README) with its
    warehouse under ``storage.root``, UTC, and ``spark.conf``.
    """
    ours = {**DELTA_SESSION_CONF, "spark.sql.catalogImplementation": "hive",
            "spark.sql.warehouse.dir": f"{cfg.storage.root.rstrip('/')}/warehouse" if "://" in cfg.storage.root
            else str(cfg.root / "warehouse"),
            "spark.sql.session.timeZone": "UTC", "spark.databricks.delta.schema.autoMerge.enabled": "false"}
    return {**ours, **_joined(ours, cfg.spark.conf)}


def _submitted_session(cfg: Config) -> SparkSession:
    from pyspark import SparkConf

    launched = SparkConf()  # what spark-submit put into the JVM: --conf, --master, --jars, spark-defaults.conf
    builder = SparkSession.builder.appName(cfg.spark.app_name)
    for key, value in submitted_defaults(cfg).items():
        if not launched.contains(key):
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    check_delta(spark, cfg.spark.delta_package)
    for key, value in cfg.spark.conf.items():  # a session that existed already still takes runtime settings
        if not launched.contains(key) and spark.conf.get(key, None) != value and spark.conf.isModifiable(key):
            spark.conf.set(key, value)
    return spark


def check_delta(spark: SparkSession, package: str) -> None:
    """Refuse a session without Delta's classes, SQL extension or catalog, naming the spark-submit option.

    :param package: Delta's Maven coordinates, named in the message.
    :raises ConfigError: Delta's jars are not on the class path, or ``spark.sql.extensions`` /
        ``spark.sql.catalog.spark_catalog`` do not name Delta's.
    """
    jvm = spark.sparkContext._jvm
    found = True  # without a JVM to ask (Spark Connect) or the method, the settings decide
    if jvm is not None:
        try:
            found = bool(jvm.org.apache.spark.util.Utils.classIsLoadable(
                DELTA_SESSION_CONF["spark.sql.catalog.spark_catalog"]))
        except Exception:
            found = True
    if not found:
        raise ConfigError(f"Delta Lake's classes are not on Spark's class path; pass spark-submit --packages"
                          f" {package} (or --jars with the delta-spark and delta-storage jars)")
    for key, value in DELTA_SESSION_CONF.items():
        current = spark.conf.get(key, "") or ""
        if value not in current.split(","):
            raise ConfigError(f"the Spark session has {key}={current or '<unset>'}; start it with spark-submit"
                              f" --conf {key}={value}")


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
        # Delta's VACUUM lists a table's files in this many tasks (Spark's default 10000 is sized for
        # clusters: on a laptop one VACUUM of a small table took minutes of task overhead).
        .config("spark.sql.sources.parallelPartitionDiscovery.parallelism", str(cfg.spark.shuffle_partitions))
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
