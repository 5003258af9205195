"""The analyst path: SQL on the project's database in the three output formats."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable

import pytest
from pyspark.sql import SparkSession

from propensity.core.config import Config
from propensity.stages.analyst.sql import SqlError, render, run_sql


@pytest.fixture(scope="module")
def cfg(spark: SparkSession, make_config: Callable[..., Config]) -> Config:
    cfg = make_config()
    spark.sql(f"CREATE TABLE {cfg.table('scores')} (user_id STRING, score DOUBLE, day DATE, note STRING) USING DELTA")
    spark.sql(f"INSERT INTO {cfg.table('scores')} VALUES ('u1', 0.25, DATE'2026-01-05', 'a, b'),"
              " ('u2', 0.5, DATE'2026-01-06', NULL)")
    return cfg


QUERY = "SELECT user_id, score, day, note FROM scores ORDER BY user_id"


def test_json_is_one_array_of_row_objects(spark: SparkSession, cfg: Config) -> None:
    out = render(run_sql(spark, cfg, QUERY), "json")
    assert json.loads(out) == [{"user_id": "u1", "score": 0.25, "day": "2026-01-05", "note": "a, b"},
                               {"user_id": "u2", "score": 0.5, "day": "2026-01-06", "note": None}]


def test_csv_has_header_and_quotes(spark: SparkSession, cfg: Config) -> None:
    out = render(run_sql(spark, cfg, QUERY), "csv")
    assert list(csv.reader(io.StringIO(out))) == [["user_id", "score", "day", "note"],
                                                  ["u1", "0.25", "2026-01-05", "a, b"],
                                                  ["u2", "0.5", "2026-01-06", ""]]


def test_table_is_aligned(spark: SparkSession, cfg: Config) -> None:
    out = render(run_sql(spark, cfg, QUERY), "table").splitlines()
    assert out[0].split("|")[0].strip() == "user_id" and out[2].split("|")[1].strip() == "0.2500"
    assert out[3].split("|")[3].strip() == "NULL" and out[-1] == "(2 rows)"
    assert len({len(line) for line in out[:-1]}) == 1


def test_bad_query_is_one_line_error(spark: SparkSession, cfg: Config) -> None:
    with pytest.raises(SqlError, match=r"^query failed: .*no_such_table") as info:
        run_sql(spark, cfg, "SELECT * FROM no_such_table")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"--format 'xml' is unknown"):
        render(run_sql(spark, cfg, QUERY), "xml")
