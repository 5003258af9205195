"""The analyst path: run SQL on the project's database and print the result.

A statement runs only if it reads (:mod:`~propensity.stages.analyst.statements` decides on
Spark's parsed plan, before anything runs); with ``allow_writes`` an operator may also change
data, under the write locks of the tables the statement names. The tables a statement names are
registered first (every table, for ``SHOW TABLES`` and the like). ``json`` prints exactly one
JSON array of row objects on stdout; ``csv`` a header and rows; ``table`` an aligned text table.
Dates and timestamps are ISO strings.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from contextlib import ExitStack
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession

from propensity.core.config import Config
from propensity.core.errors import SqlError
from propensity.core.locks import table_lock
from propensity.core.storage import folder_catalog, table_dir
from propensity.core.tables import find_table, register_all
from propensity.stages.analyst.statements import first_line, inspect_statement

FORMATS = ("table", "csv", "json")


def run_sql(spark: SparkSession, cfg: Config, query: str, allow_writes: bool = False) -> DataFrame:
    """Run ``query`` with the project's database as the current one.

    :param allow_writes: also run statements that change data or state (the operator's option).
    :raises SqlError: the query does not parse, is refused as a write, or fails (Spark's first message line).
    """
    statement = inspect_statement(spark, query)
    if statement.writes and not allow_writes:
        raise SqlError(f"propensity sql only reads: {statement.writes} changes data or state and was not run;"
                       " an operator can run it with --allow-writes")
    names = sorted({t for t in (_own_table(cfg, parts) for parts in statement.tables) if t})
    if names:
        for name in names:
            find_table(spark, cfg, name)
    else:
        register_all(spark, cfg)
    try:
        spark.sql(f"USE {cfg.database}")
        if not statement.writes:
            return spark.sql(query)
        with ExitStack() as locks:
            for name in names:
                locks.enter_context(table_lock(spark, cfg, name))
            result = spark.sql(query)  # commands run here, under the locks
            if statement.kind == "DropTable":
                _remove_dropped(spark, cfg, names)
            return result
    except PySparkException as e:
        raise SqlError(f"query failed: {first_line(e)}") from e


def _own_table(cfg: Config, parts: tuple[str, ...]) -> str | None:
    """The project table a (catalog.)(schema.)name means, or None for another database's."""
    *prefix, name = [p.lower() for p in parts]
    catalogs = {"spark_catalog", (cfg.storage.catalog or "spark_catalog").lower()}
    if not prefix or prefix == [cfg.storage.schema.lower()] or (
            len(prefix) == 2 and prefix[0] in catalogs and prefix[1] == cfg.storage.schema.lower()):
        return name
    return None


def _remove_dropped(spark: SparkSession, cfg: Config, names: list[str]) -> None:
    """In the folder catalog a table is its folder: a dropped table's folder goes too (as a managed table's)."""
    for name in names:
        folder = table_dir(spark, cfg, name)
        if folder is not None and folder_catalog(spark, cfg) and not spark.catalog.tableExists(
                cfg.table(name).replace("`", "")):
            shutil.rmtree(folder, ignore_errors=True)


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
        raise SqlError(f"query failed: {first_line(e)}") from e
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
