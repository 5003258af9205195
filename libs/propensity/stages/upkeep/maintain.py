"""``propensity maintain``: OPTIMIZE (Z-ordered on the columns queries filter by) and VACUUM every table.

Daily appends and MERGEs leave many small files (a few per partition per run); OPTIMIZE
compacts them and, where the table's contract names filter columns (``TableSpec.zorder_by``,
e.g. ``user_id`` on ``events``), clusters the rows by them so a lookup by user reads few files.
VACUUM then deletes files no version within ``maintenance.vacuum_retain_hours`` needs (default
168 h: a week of time travel). Prints files and bytes of each table before and after.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession

from propensity.core.config import Config
from propensity.core.locks import table_lock
from propensity.core.tables import TABLES
from propensity.stages.upkeep.delta import Files, delta_tables, files_of, vacuum


@dataclass(frozen=True)
class TableUpkeep:
    """One table before and after."""

    table: str
    zorder_by: tuple[str, ...]
    before: Files
    after: Files


@dataclass(frozen=True)
class MaintainResult:
    """Every table maintained, and the retention used."""

    tables: list[TableUpkeep]
    retain_hours: int

    def format(self) -> str:
        """One line per table plus totals."""
        lines = [f"{'table':28s} {'files before':>12s} {'after':>7s} {'MB before':>10s} {'after':>8s}  zorder"]
        for t in self.tables:
            lines.append(f"{t.table:28s} {t.before.files:12d} {t.after.files:7d} {t.before.bytes / 1e6:10.2f}"
                         f" {t.after.bytes / 1e6:8.2f}  {', '.join(t.zorder_by) or '-'}")
        before = sum(t.before.files for t in self.tables)
        after = sum(t.after.files for t in self.tables)
        lines.append(f"{len(self.tables)} tables: {before} -> {after} files; VACUUM RETAIN {self.retain_hours} HOURS")
        return "\n".join(lines)


def maintain(spark: SparkSession, cfg: Config, tables: list[str] | None = None) -> MaintainResult:
    """OPTIMIZE and VACUUM ``tables`` (default: every Delta table of the database)."""
    names = tables if tables is not None else delta_tables(spark, cfg)
    hours = cfg.maintenance.vacuum_retain_hours
    done = []
    for name in names:
        qualified = cfg.table(name)
        zorder = TABLES[name].zorder_by if name in TABLES else ()
        with table_lock(spark, cfg, name):
            before = files_of(spark, qualified)
            spark.sql(f"OPTIMIZE {qualified}" + (f" ZORDER BY ({', '.join(zorder)})" if zorder else ""))
            vacuum(spark, qualified, hours)
            done.append(TableUpkeep(name, zorder, before, files_of(spark, qualified)))
    return MaintainResult(done, hours)
