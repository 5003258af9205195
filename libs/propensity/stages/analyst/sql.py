"""The analyst path: run SQL on the project's database and print the result.

``json`` prints exactly one JSON array of row objects on stdout; ``csv`` a header
and rows; ``table`` an aligned text table. Dates and timestamps are ISO strings.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession

from propensity.core.config import Config
from propensity.core.errors import SqlError

FORMATS = ("table", "csv", "json")


def run_sql(spark: SparkSession, cfg: Config, query: str) -> DataFrame:
    """Run ``query`` with the project's database as the current one.

    :raises SqlError: the query is invalid or names a missing table, with Spark's first message line.
    """
    try:
        spark.sql(f"USE {cfg.database}")
        return spark.sql(query)
    except PySparkException as e:
        raise SqlError(f"query failed: {_first_line(e)}") from e


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _plain(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "asDict"):
        return _plain(value.asDict())
    return value


def render(df: DataFrame, fmt: str, limit: int | None = None) -> str:
    """Collect ``df`` and render it as ``table``, ``csv`` or ``json``."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r} is unknown; use one of {', '.join(FORMATS)}")
    try:
        rows = (df.limit(limit) if limit else df).collect()
    except PySparkException as e:
        raise SqlError(f"query failed: {_first_line(e)}") from e
    columns = df.columns
    records = [[_plain(v) for v in r] for r in rows]
    if fmt == "json":
        return json.dumps([dict(zip(columns, r, strict=True)) for r in records], default=str)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(["" if v is None else v for v in r] for r in records)
        return out.getvalue().rstrip("\n")
    return format_table(columns, records)


def format_table(columns: list[str], records: list[list[Any]]) -> str:
    """An aligned text table with a header rule, numbers right-aligned."""
    text = [[("NULL" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)) for v in r] for r in records]
    widths = [max([len(c)] + [len(r[i]) for r in text]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool) for r in records if r[i] is not None)
               and bool(records) for i in range(len(columns))]

    def line(cells: list[str]) -> str:
        return " | ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric, strict=True))

    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([line(columns), rule, *[line(r) for r in text], f"({len(records)} rows)"])
