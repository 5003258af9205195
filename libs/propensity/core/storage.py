"""Where tables live, how a process finds them, and how one is created so that a crash cannot break it.

Two situations (``docs/storage.md`` explains the choice):

* **Folder catalog** (the local default: Spark's in-memory catalog and no ``storage.catalog``):
  the Delta folders ``<storage.root>/warehouse/<schema>.db/<table>`` are the truth. Each process
  registers a table in its own catalog the first time it needs it (``CREATE TABLE ... USING DELTA
  LOCATION``, which reads the schema, comment and constraints from the Delta log), so any number
  of processes share one root and nothing but the folders has to survive a crash.
* **A persistent catalog** (Unity Catalog, a Hive metastore under ``spark-submit``): tables are
  found by name. A table whose Delta log exists at its location while the catalog has no entry
  (a process killed between the two) is adopted, not re-created.

A table is created by path in one Delta commit, its CHECK constraints included, so it exists
either completely or not at all; a folder without a committed log version is the leftover of
a killed creation and is removed (under the table's write lock) before creating it again.
"""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

from pyspark.sql import SparkSession

from propensity.core.config import Config

_COMMIT = re.compile(r"^\d{20}\.json$")
_register_guard = threading.Lock()


def folder_catalog(spark: SparkSession, cfg: Config) -> bool:
    """Whether tables are found through their folders under ``storage.root`` (the local default)."""
    return cfg.storage.catalog is None and spark.conf.get("spark.sql.catalogImplementation") == "in-memory"


def warehouse_dir(cfg: Config) -> Path:
    """The folder of the local warehouse."""
    return cfg.root / "warehouse"


def database_dir(cfg: Config) -> Path:
    """The folder of the project database in the local warehouse."""
    return warehouse_dir(cfg) / f"{cfg.storage.schema}.db"


def table_dir(spark: SparkSession, cfg: Config, name: str) -> Path | None:
    """The local folder of table ``name``; None where the catalog decides (Unity Catalog, remote storage)."""
    if folder_catalog(spark, cfg):
        return database_dir(cfg) / name
    if cfg.storage.catalog:
        return None
    location = urlparse(str(spark.catalog.getDatabase(cfg.storage.schema).locationUri))
    return Path(unquote(location.path)) / name if location.scheme in ("", "file") else None


def has_commit(folder: Path) -> bool:
    """Whether ``folder`` holds a Delta table: at least one committed log version."""
    log = folder / "_delta_log"
    try:
        return any(_COMMIT.match(entry.name) for entry in log.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return False


def remove_uncommitted(folder: Path) -> None:
    """Delete ``folder`` if it holds no committed version (data or temp files of a killed creation).

    Call it only while holding the table's write lock.
    """
    if folder.exists() and not has_commit(folder):
        shutil.rmtree(folder)


def table_exists(spark: SparkSession, cfg: Config, name: str) -> bool:
    """Whether table ``name`` exists; a committed folder the catalog lacks is registered on the way."""
    qualified = cfg.table(name)
    if spark.catalog.tableExists(qualified.replace("`", "")):
        return True
    folder = table_dir(spark, cfg, name)
    if folder is None or not has_commit(folder):
        return False
    with _register_guard:  # the catalog's IF NOT EXISTS is not atomic between threads
        spark.sql(f"CREATE TABLE IF NOT EXISTS {qualified} USING DELTA LOCATION '{sql_path(folder)}'")
    return True


def tables_on_disk(cfg: Config) -> list[str]:
    """Names of the committed tables in the local warehouse's project database."""
    folder = database_dir(cfg)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and has_commit(p))


def sql_path(folder: Path) -> str:
    """A folder as a SQL string literal's content."""
    return str(folder).replace("\\", "\\\\").replace("'", "\\'")


def delta_path(folder: Path) -> str:
    """The ``delta.`<path>``` identifier of a folder."""
    return "delta.`" + str(folder).replace("`", "``") + "`"
