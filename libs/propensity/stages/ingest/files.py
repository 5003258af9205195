"""Finding raw files, reading their headers, and splitting records into raw string fields.

Files are listed through Hadoop's FileSystem, so local paths, DBFS, Volumes and
object stores work alike. Records (:mod:`~propensity.stages.ingest.records`) are split
with ``from_csv``; the field count is checked separately because Spark's permissive CSV
parser silently drops extra fields and fills missing ones with NULL.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from propensity.core.errors import InputDataError


@dataclass(frozen=True)
class RawFile:
    """One raw file as listed by the file system."""

    path: str
    uri: str
    size: int
    modified_at: datetime


def _jvm(spark: SparkSession) -> Any:
    jvm = spark.sparkContext._jvm
    if jvm is None:  # pragma: no cover - a live session always has one
        raise RuntimeError("the Spark session has no JVM gateway")
    return jvm


def _hadoop(spark: SparkSession, path: str) -> tuple[Any, Any]:
    """A Hadoop ``Path`` and its ``FileSystem`` (local paths, DBFS, Volumes and object stores alike)."""
    hadoop_path = _jvm(spark).org.apache.hadoop.fs.Path(path)
    return hadoop_path, hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def list_files(spark: SparkSession, pattern: str, what: str) -> list[RawFile]:
    """Expand a path or glob into files; :class:`InputDataError` if nothing matches.

    :param pattern: a path or a glob (``/data/shop/events-*.csv``).
    :param what: what the files are, for the error message (``platform shop events``).
    """
    hadoop_path, fs = _hadoop(spark, pattern)
    statuses = fs.globStatus(hadoop_path) or []
    files = [
        RawFile(str(s.getPath().toString()), str(s.getPath().toUri().toString()), int(s.getLen()),
                datetime.fromtimestamp(s.getModificationTime() / 1000, tz=UTC).replace(tzinfo=None))
        for s in statuses if s.isFile()
    ]
    if not files:
        raise InputDataError(f"{what}: no file matches {pattern!r}; check the path in your config")
    return sorted(files, key=lambda f: f.path)


def read_first_line(spark: SparkSession, path: str) -> str:
    """The first line of a file (the header), without a byte-order mark or line end; ``.gz`` and ``.bz2``
    files are decompressed, as Spark's text reader does for the rows."""
    hadoop_path, fs = _hadoop(spark, path)
    jvm = _jvm(spark)
    stream = fs.open(hadoop_path)
    codec = jvm.org.apache.hadoop.io.compress.CompressionCodecFactory(
        spark.sparkContext._jsc.hadoopConfiguration()).getCodec(hadoop_path)
    if codec is not None:
        stream = codec.createInputStream(stream)
    try:
        reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(stream, "UTF-8"))
        line = reader.readLine()
    finally:
        stream.close()
    return (line or "").lstrip("\ufeff").rstrip("\r")


def header_columns(spark: SparkSession, files: list[RawFile], required: tuple[str, ...], what: str) -> list[str]:
    """Column names from the files' common header; every required column must be present.

    :raises InputDataError: a file's header differs from the first file's, or lacks a required column.
    """
    first = read_first_line(spark, files[0].path)
    for f in files[1:]:
        other = read_first_line(spark, f.path)
        if other != first:
            raise InputDataError(f"{what}: header of {f.path} ({other!r}) differs from {files[0].path} ({first!r});"
                                 " split the feed or align the headers")
    columns = [c.strip() for c in next(csv.reader([first]))] if first else []
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputDataError(f"{what}: {files[0].path} lacks required column(s) {', '.join(missing)}"
                             f" (header is {first!r}); expected {', '.join(required)}")
    return columns


def field_count(line: Column) -> Column:
    """Number of CSV fields in a line, honouring double-quoted fields with commas."""
    unquoted = F.regexp_replace(line, r'"([^"]|"")*"', "")
    return F.length(unquoted) - F.length(F.regexp_replace(unquoted, ",", "")) + F.lit(1)


def split_fields(records: DataFrame, columns: list[str]) -> DataFrame:
    """Add one string column per expected field and ``_field_count``."""
    schema = ", ".join(f"`c{i}` STRING" for i in range(len(columns)))
    parsed = F.from_csv(F.col("_raw"), schema, {"mode": "PERMISSIVE", "ignoreLeadingWhiteSpace": "false"})
    return records.select(
        "*",
        field_count(F.col("_raw")).alias("_field_count"),
        *[parsed[f"c{i}"].alias(name) for i, name in enumerate(columns)],
    )
