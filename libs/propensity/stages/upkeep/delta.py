"""Delta housekeeping shared by ``forget`` and ``maintain``: the project's tables, their files, VACUUM."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pyspark.errors import AnalysisException
from pyspark.sql import Row, SparkSession

from propensity.core.config import Config
from propensity.core.tables import register_all

_RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"


@dataclass(frozen=True)
class Files:
    """Current data files of a table and their bytes (``DESCRIBE DETAIL``)."""

    files: int
    bytes: int


def _detail(spark: SparkSession, table: str) -> Row | None:
    """``DESCRIBE DETAIL table``: its format, current files, size and properties."""
    return spark.sql(f"DESCRIBE DETAIL {table}").first()


def delta_tables(spark: SparkSession, cfg: Config) -> list[str]:
    """Names of the Delta tables in the project's database (views and other formats left out), sorted.

    Tables another process created since this session started are registered first.
    """
    register_all(spark, cfg)
    rows = spark.sql(f"SHOW TABLES IN {cfg.database}").collect()
    return sorted(r["tableName"] for r in rows if not r["isTemporary"] and _is_delta(spark, cfg.table(r["tableName"])))


def _is_delta(spark: SparkSession, table: str) -> bool:
    try:
        row = _detail(spark, table)
    except AnalysisException:  # a view: DESCRIBE DETAIL refuses it
        return False
    return row is not None and row["format"] == "delta"


def files_of(spark: SparkSession, table: str) -> Files:
    """The table's current file count and size."""
    row = _detail(spark, table)
    return Files(int(row["numFiles"] or 0), int(row["sizeInBytes"] or 0)) if row else Files(0, 0)


def deletion_vectors_enabled(spark: SparkSession, table: str) -> bool:
    """Whether the table writes deletion vectors (deleted rows then stay in their files until purged)."""
    row = _detail(spark, table)
    properties = row["properties"] if row else {}
    return str((properties or {}).get("delta.enableDeletionVectors", "false")).lower() == "true"


@contextmanager
def short_retention_allowed(spark: SparkSession, hours: int) -> Iterator[None]:
    """Allow VACUUM below Delta's 7-day safety check for the block (only when ``hours`` is below it)."""
    previous = spark.conf.get(_RETENTION_CHECK, "true")
    if hours < 168:
        spark.conf.set(_RETENTION_CHECK, "false")
    try:
        yield
    finally:
        spark.conf.set(_RETENTION_CHECK, previous or "true")


def vacuum(spark: SparkSession, table: str, hours: int) -> None:
    """``VACUUM table RETAIN hours HOURS``: delete files no version within ``hours`` still needs."""
    with short_retention_allowed(spark, hours):
        spark.sql(f"VACUUM {table} RETAIN {hours} HOURS")
