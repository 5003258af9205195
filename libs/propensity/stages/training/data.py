"""Spark side of training: rows cut to event positions and handed to the train function via petastorm.

- :func:`feature_stats`: normalisation statistics of the train rows (computed in Spark);
- :func:`pretrain_frame` / :func:`finetune_frame`: the array columns the train functions read;
- :func:`converters`: petastorm converters (cached Parquet under ``storage.root``) as
  :class:`~propensity.stages.training.loaders.DataSource` objects, deleted afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from propensity.core.config import Config
from propensity.core.errors import DataNotReadyError
from propensity.core.schema import LABEL_COLUMNS
from propensity.core.sequence import SEQUENCE_COLUMN
from propensity.models.network import FeatureStats
from propensity.models.sequence import events_in, fixed_positions
from propensity.stages.training.loaders import DataSource

log = logging.getLogger(__name__)
#: Parquet row group size of the petastorm cache: small groups shuffle better across epochs.
ROW_GROUP_BYTES = 1 << 20


def _signed_log1p(column: str) -> F.Column:
    x = F.col(column).cast("double")
    return F.signum(x) * F.log1p(F.abs(x))


def feature_stats(df: DataFrame, columns: Sequence[str]) -> FeatureStats:
    """Mean and population standard deviation of ``signed_log1p`` of each feature column.

    :raises ValueError: ``df`` lacks a column.
    :raises DataNotReadyError: ``df`` has no rows.
    """
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"feature column {missing[0]!r} is not in the DataFrame; columns: {', '.join(df.columns)}")
    aggs = [F.avg(_signed_log1p(c)).alias(f"m{i}") for i, c in enumerate(columns)]
    aggs += [F.stddev_pop(_signed_log1p(c)).alias(f"s{i}") for i, c in enumerate(columns)]
    row = df.agg(F.count(F.lit(1)).alias("n"), *aggs).first()
    if row is None or not row["n"]:
        raise DataNotReadyError("cannot compute feature statistics: there are no train rows;"
                                " run `propensity features --training-set`")
    return FeatureStats(columns=list(columns), mean=[float(row[f"m{i}"] or 0.0) for i in range(len(columns))],
                        std=[float(row[f"s{i}"] or 1.0) for i in range(len(columns))])


def pretrain_frame(rows: DataFrame, positions: int) -> DataFrame:
    """The column pretraining reads: ``event_ids`` cut or padded to ``positions``."""
    return rows.select(fixed_positions(F.col(SEQUENCE_COLUMN), positions).alias(SEQUENCE_COLUMN))


def with_events(df: DataFrame) -> DataFrame:
    """Rows whose sequence holds at least one event."""
    return df.where(events_in(F.col(SEQUENCE_COLUMN)) > 0)


def finetune_frame(rows: DataFrame, feature_columns: Sequence[str], positions: int,
                   teacher_logit_columns: Sequence[str] = ()) -> DataFrame:
    """``event_ids`` (``positions`` of them), the raw ``features`` (FLOAT array; empty without feature columns),
    ``labels`` (NULL as 0) and ``label_mask`` (1: known); with ``teacher_logit_columns`` (one per task, in task
    order) also ``teacher_logits`` for distillation."""
    features = F.array(*[F.coalesce(F.col(c).cast("float"), F.lit(float("nan")).cast("float"))
                         for c in feature_columns]).cast("array<float>")
    labels = F.array(*[F.coalesce(F.col(c).cast("float"), F.lit(0.0).cast("float")) for c in LABEL_COLUMNS])
    known = F.array(*[F.when(F.col(c).isNull(), 0.0).otherwise(1.0).cast("float") for c in LABEL_COLUMNS])
    extra = [F.array(*[F.col(c).cast("float") for c in teacher_logit_columns]).alias("teacher_logits")
             ] if teacher_logit_columns else []
    return rows.select(fixed_positions(F.col(SEQUENCE_COLUMN), positions).alias(SEQUENCE_COLUMN),
                       features.alias("features"), labels.alias("labels"), known.alias("label_mask"), *extra)


def petastorm_cache_url(cfg: Config) -> str:
    """``file://`` URL of the petastorm cache under ``storage.root`` (a URL root is kept as it is)."""
    root = cfg.storage.root
    if "://" in root:
        return root.rstrip("/") + "/petastorm"
    return (Path(root).resolve() / "petastorm").as_uri()


@contextmanager
def converters(spark: SparkSession, cfg: Config, frames: Sequence[DataFrame | None], shards: int, seed: int = 0
               ) -> Iterator[list[DataSource | None]]:
    """One petastorm-backed :class:`DataSource` per DataFrame (None stays None); caches deleted on exit.

    Each DataFrame is repartitioned to at least ``shards`` partitions (so every process gets
    Parquet row groups), shuffled within them, and materialised once as Parquet under
    :func:`petastorm_cache_url` in row groups of about 1 MiB (the readers shuffle row groups
    each epoch, and rows within a buffer).

    :raises DataNotReadyError: a DataFrame has fewer rows than ``shards``.
    """
    from petastorm.spark import SparkDatasetConverter, make_spark_converter

    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, petastorm_cache_url(cfg))
    made: list[SparkDatasetConverter] = []
    sources: list[DataSource | None] = []
    try:
        for frame in frames:
            if frame is None:
                sources.append(None)
                continue
            partitions = max(shards, spark.sparkContext.defaultParallelism)
            shuffled = frame.repartition(partitions).sortWithinPartitions(F.rand(seed))
            converter = make_spark_converter(shuffled, parquet_row_group_size_bytes=ROW_GROUP_BYTES)
            made.append(converter)
            rows = len(converter)
            if rows < shards:
                raise DataNotReadyError(f"only {rows} rows for {shards} training processes;"
                                 " lower training.num_processes or add data")
            sources.append(DataSource(rows=rows, converter=converter))
        yield sources
    finally:
        for converter in made:
            try:
                converter.delete()
            except OSError as e:  # pragma: no cover - best effort cleanup
                log.warning("could not delete petastorm cache %s: %s", converter.cache_dir_url, e)
