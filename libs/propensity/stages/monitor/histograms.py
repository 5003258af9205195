"""Fixed-bin histograms in Spark and the population stability index (PSI) between two of them.

A frame is turned into long form ``(snapshot_date, platform, variable, value)``; each value
falls into the bin given by the reference's edges of its platform and variable (bin ``i``:
``edges[i-1] <= x < edges[i]``, both ends open; NULL has a bin of its own), and one
aggregation counts every bin, the sums for the means and the rows at or above a threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DoubleType, StringType, StructField, StructType

#: Smallest share a bin counts with in the PSI (an empty bin would make it infinite).
PSI_FLOOR = 1e-4


@dataclass(frozen=True)
class Histogram:
    """Counts per bin (``len(edges) + 1``) plus NULLs, the mean and the share at or above a threshold."""

    counts: tuple[int, ...]
    null_count: int
    mean: float | None
    share_above: float | None

    @property
    def rows(self) -> int:
        """Every row, NULLs included."""
        return sum(self.counts) + self.null_count


def psi(expected: Histogram, actual: Histogram) -> float:
    """Population stability index ``sum((a - e) * ln(a / e))`` over the bins and the NULL bin.

    Shares are floored at :data:`PSI_FLOOR`; NaN when a side has no rows.
    """
    e = np.asarray([*expected.counts, expected.null_count], dtype=np.float64)
    a = np.asarray([*actual.counts, actual.null_count], dtype=np.float64)
    if e.sum() == 0 or a.sum() == 0:
        return math.nan
    p = np.maximum(e / e.sum(), PSI_FLOOR)
    q = np.maximum(a / a.sum(), PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def to_long(df: DataFrame, variables: Sequence[str]) -> DataFrame:
    """``df``'s ``snapshot_date``, ``platform`` and one row per variable: ``variable``, ``value`` (double)."""
    pairs = [F.struct(F.lit(v).alias("variable"), F.col(v).cast("double").alias("value")) for v in variables]
    return (df.select("snapshot_date", "platform", F.explode(F.array(*pairs)).alias("x"))
            .select("snapshot_date", "platform", "x.variable", "x.value"))


def quantile_edges(long: DataFrame, bins: int, extra: float) -> dict[tuple[str, str], tuple[list[float], float]]:
    """Per ``(platform, variable)``: the ``bins``-quantile edges (ties merged) and the ``extra`` quantile."""
    probabilities = [i / bins for i in range(1, bins)] + [extra]
    rows = (long.where(F.col("value").isNotNull()).groupBy("platform", "variable")
            .agg(F.percentile_approx("value", probabilities, 10_000).alias("q")).collect())
    out = {}
    for r in rows:
        q = [float(v) for v in r["q"]]
        out[(r["platform"], r["variable"])] = (sorted(set(q[:-1])), q[-1])
    return out


_BINS_SCHEMA = StructType([StructField("platform", StringType()), StructField("variable", StringType()),
                           StructField("edges", ArrayType(DoubleType())), StructField("threshold", DoubleType())])


def histograms(spark: SparkSession, long: DataFrame,
               bins: Mapping[tuple[str, str], tuple[Sequence[float], float | None]]
               ) -> dict[tuple[object, str, str], Histogram]:
    """Histograms of ``long`` per ``(snapshot_date, platform, variable)`` with the given edges and thresholds.

    Pairs without edges are left out.
    """
    spec = spark.createDataFrame([(p, v, [float(e) for e in edges], threshold)
                                  for (p, v), (edges, threshold) in bins.items()], _BINS_SCHEMA)
    binned = long.join(F.broadcast(spec), ["platform", "variable"]).withColumn(
        "bin", F.when(F.col("value").isNull(), F.lit(-1)).otherwise(F.expr("size(filter(edges, e -> value >= e))")))
    rows = binned.groupBy("snapshot_date", "platform", "variable", "bin").agg(
        F.count(F.lit(1)).alias("n"), F.sum("value").alias("total"),
        F.sum(F.when(F.col("value") >= F.col("threshold"), 1).otherwise(0)).alias("above")).collect()
    cells: dict[tuple[object, str, str], list[tuple[int, int, float, int]]] = {}
    for r in rows:
        cells.setdefault((r["snapshot_date"], r["platform"], r["variable"]), []).append(
            (int(r["bin"]), int(r["n"]), float(r["total"] or 0.0), int(r["above"])))
    out = {}
    for key, found in cells.items():
        edges, threshold = bins[(key[1], key[2])]
        counts = [0] * (len(edges) + 1)
        nulls = total_n = above = 0
        total = 0.0
        for b, n, s, a in found:
            if b < 0:
                nulls = n
                continue
            counts[b] = n
            total_n += n
            total += s
            above += a
        out[key] = Histogram(tuple(counts), nulls, total / total_n if total_n else None,
                             above / total_n if total_n and threshold is not None else None)
    return out
