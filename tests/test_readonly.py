"""`propensity sql` reads only, unless --allow-writes: decided on Spark's parsed plan, never by the text.

STATEMENTS is also run through the JDBC endpoint's JVM rule with the real beeline (test_sqlserver.py), so the
two implementations of the policy are held to one list.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from propensity.core.config import Config
from propensity.core.errors import SqlError
from propensity.core.storage import database_dir
from propensity.stages.analyst.sql import render, run_sql
from propensity.stages.analyst.statements import inspect_statement

PWNED = "/tmp/propensity-readonly-test-pwned"

#: (statement on tables ``scores`` and ``other``, whether it only reads).
STATEMENTS: list[tuple[str, bool]] = [
    ("SELECT * FROM scores", True),
    ("WITH c AS (SELECT user_id FROM scores) SELECT * FROM c", True),
    ("SELECT * FROM scores WHERE user_id IN (SELECT user_id FROM other) AND EXISTS (SELECT 1 FROM other)"
     " AND score > (SELECT min(score) FROM other)", True),
    ("VALUES (1, 'a'), (2, 'b')", True),
    ("TABLE scores", True),
    ("SELECT user_id, count(*) FROM scores GROUP BY user_id HAVING count(*) > 0 ORDER BY 1 LIMIT 5", True),
    ("SELECT * FROM scores a JOIN other b ON a.user_id = b.user_id", True),
    ("SELECT * FROM scores VERSION AS OF 0", True),
    ("SELECT explode(array(1, 2))", True),
    ("EXPLAIN SELECT * FROM scores", True),
    ("SHOW TABLES", True),
    ("SHOW DATABASES", True),
    ("DESCRIBE TABLE scores", True),
    ("DESCRIBE HISTORY scores", True),
    ("DESCRIBE DETAIL scores", True),
    ("SHOW COLUMNS IN scores", True),
    ("SHOW TBLPROPERTIES scores", True),
    ("SET spark.sql.shuffle.partitions", True),
    ("EXPLAIN DELETE FROM scores WHERE user_id = 'u1'", False),
    ("SET spark.sql.runSQLOnFiles=true", False),
    ("DELETE FROM scores WHERE user_id = 'u1'", False),
    ("UPDATE scores SET score = 0 WHERE user_id = 'u2'", False),
    ("MERGE INTO scores USING other ON scores.user_id = other.user_id WHEN MATCHED THEN DELETE", False),
    ("INSERT INTO scores SELECT * FROM other", False),
    ("INSERT OVERWRITE scores SELECT * FROM other", False),
    ("WITH c AS (SELECT * FROM other) INSERT INTO scores SELECT * FROM c", False),
    ("CREATE TABLE made (x INT) USING DELTA", False),
    ("CREATE TABLE made USING DELTA AS SELECT * FROM scores", False),
    ("CREATE VIEW v AS SELECT * FROM scores", False),
    ("CREATE TEMP VIEW v AS SELECT * FROM scores", False),
    ("CACHE TABLE scores", False),
    ("DROP TABLE other", False),
    ("ALTER TABLE scores ADD COLUMN c INT", False),
    ("ALTER TABLE scores SET TBLPROPERTIES ('a' = 'b')", False),
    ("TRUNCATE TABLE scores", False),
    ("VACUUM scores", False),
    ("OPTIMIZE scores", False),
    ("RESTORE TABLE scores TO VERSION AS OF 0", False),
    ("ADD JAR /tmp/x.jar", False),
    ("CREATE TEMPORARY FUNCTION f() RETURNS INT RETURN 1", False),
    ("SELECT reflect('java.lang.System', 'getProperty', 'user.name')", False),
    ("SELECT * FROM scores WHERE user_id IN (SELECT java_method('java.lang.Thread', 'sleep', 1L))", False),
    (f"SELECT TRANSFORM(user_id) USING 'touch {PWNED}' AS (x) FROM scores", False),
    (f"INSERT OVERWRITE DIRECTORY '{PWNED}.dir' USING parquet SELECT * FROM scores", False),
]


@pytest.fixture(scope="module")
def cfg(spark: SparkSession, make_config: Callable[..., Config]) -> Config:
    cfg = make_config()
    for name in ("scores", "other"):
        spark.sql(f"CREATE TABLE {cfg.table(name)} (user_id STRING, score DOUBLE) USING DELTA")
        spark.sql(f"INSERT INTO {cfg.table(name)} VALUES ('u1', 0.25), ('u2', 0.5)")
    return cfg


def _rows(spark: SparkSession, cfg: Config, table: str) -> list[tuple[object, ...]]:
    return sorted(tuple(r) for r in spark.table(cfg.table(table)).collect())


def test_the_parser_tells_reads_from_writes(spark: SparkSession, cfg: Config) -> None:
    spark.sql(f"USE {cfg.database}")
    verdicts = [(query, inspect_statement(spark, query).writes is None) for query, _ in STATEMENTS]
    assert verdicts == STATEMENTS
    with pytest.raises(SqlError, match=r"^query failed: \[PARSE_SYNTAX_ERROR\]"):
        inspect_statement(spark, "SELECT * FROM scores; DROP TABLE scores")


def test_sql_refuses_writes_in_one_line_and_changes_nothing(spark: SparkSession, cfg: Config) -> None:
    before = _rows(spark, cfg, "scores")
    for query, reads in STATEMENTS:
        if not reads:
            with pytest.raises(SqlError, match=r"^propensity sql only reads: \w.* changes data or state and was not"
                                               r" run; an operator can run it with --allow-writes$"):
                run_sql(spark, cfg, query)
    with pytest.raises(SqlError, match=r"only reads: DeleteFromTable changes data"):
        run_sql(spark, cfg, "DELETE FROM scores WHERE user_id = 'u1'")
    assert _rows(spark, cfg, "scores") == before and spark.catalog.tableExists(f"{cfg.storage.schema}.other")
    assert not Path(PWNED).exists() and not Path(f"{PWNED}.dir").exists()
    assert render(run_sql(spark, cfg, "SELECT user_id FROM scores ORDER BY user_id"), "csv") == "user_id\nu1\nu2"


def test_allow_writes_runs_them_and_drop_removes_the_folder(spark: SparkSession, cfg: Config) -> None:
    """A table found by its folder is an external one to Spark; DROP TABLE deletes the folder all the same."""
    folder = database_dir(cfg) / "gone"
    spark.table(cfg.table("scores")).write.format("delta").save(str(folder))
    run_sql(spark, cfg, "DELETE FROM gone WHERE user_id = 'u1'", allow_writes=True).collect()
    assert _rows(spark, cfg, "gone") == [("u2", 0.5)]
    assert (folder / "_delta_log").is_dir()
    run_sql(spark, cfg, "DROP TABLE gone", allow_writes=True)
    assert not folder.exists() and not spark.catalog.tableExists(f"{cfg.storage.schema}.gone")
