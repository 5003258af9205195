"""Raw lines -> raw string fields with a reject reason and lineage; the rejected lines for ``rejects``."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from propensity.core.config import Config
from propensity.core.locks import table_lock
from propensity.stages.ingest.files import RawFile, split_fields
from propensity.stages.ingest.records import read_records


@dataclass(frozen=True)
class RunInfo:
    """The ingest run every written row is tagged with."""

    run_id: str
    started_at: datetime


@dataclass(frozen=True)
class Rejected:
    """Rejected lines of some files (``rejects`` columns); they replace earlier rejects of those files."""

    rows: DataFrame
    files: tuple[str, ...]


def safe_name(column: str) -> str:
    """A column name usable in Delta (header fields may hold any characters)."""
    return re.sub(r"[^0-9A-Za-z_]", "_", column) or "_blank"


def parse_lines(spark: SparkSession, files: Sequence[RawFile], columns: Sequence[str], header: str | None,
                reason: Column, run: RunInfo) -> DataFrame:
    """Records -> raw string fields (safe names) + ``_reject_reason`` + lineage columns.

    :param reason: the format's rules: a reject reason, NULL for a valid row. What is wrong with the
        record itself comes first: bytes that are not UTF-8, an unterminated quote, the field count.
    """
    records = read_records(spark, list(files), header)
    fields = split_fields(records, list(columns))
    expected = len(columns)
    record_reason = (
        F.when(F.col("_invalid_utf8"), "invalid UTF-8 (non-ASCII bytes shown as \\xNN)")
        .when(F.col("_unterminated"), "unterminated quoted field")
        .when(F.col("_field_count") != expected, F.concat(
            F.lit(f"wrong column count: expected {expected}, got "), F.col("_field_count").cast("string"))))
    return fields.select(
        *[F.col(f"`{c}`").alias(safe_name(c)) for c in columns],
        F.col("_raw"), F.col("_source_file"),
        F.lit(run.started_at).cast("timestamp").alias("_ingested_at"), F.lit(run.run_id).alias("_ingest_run_id"),
        F.coalesce(record_reason, reason).alias("_reject_reason"),
    )


def rejected(parsed: DataFrame, platform: Column, feed: str, files: Sequence[str]) -> Rejected:
    """The rejected lines of ``parsed`` as ``rejects`` rows."""
    rows = parsed.where(F.col("_reject_reason").isNotNull()).select(
        platform.alias("platform"), F.lit(feed).alias("feed"), "_source_file", F.col("_raw").alias("raw"),
        F.col("_reject_reason").alias("reason"), "_ingested_at", "_ingest_run_id",
    )
    return Rejected(rows, tuple(files))


def write_rejects(spark: SparkSession, cfg: Config, parts: Sequence[Rejected]) -> None:
    """One commit: the rejects of every file read in this run replace those of earlier reads."""
    if not parts:
        return
    rows = functools.reduce(DataFrame.unionByName, [p.rows for p in parts])
    files = sorted({f for p in parts for f in p.files})
    with table_lock(spark, cfg, "rejects"):
        rows.writeTo(cfg.table("rejects")).overwrite(F.col("_source_file").isin(files))
