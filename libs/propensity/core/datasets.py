"""What the model stages read from ``training_examples``: the snapshot plan and the rows of each split.

**The plan.** Dates lie on a grid of ``features.snapshot_step_days`` (weekly) anchored at the
**test** date, the latest T whose longest label horizon is complete:
``T + max(horizons) <= last event date + 1 day`` (events of the last date run up to its
midnight). ``validation`` is one step earlier; ``train`` holds the dates from one step before
``validation`` back, ``features.train_step_days`` apart (0: the same step; a denser train grid
gives more labelled rows from the same history), that still have at least
``min(lookback_days, min_history_days)`` days of events before them, oldest first, at most
``max_train_snapshots`` of the newest (0: all). A week of history is enough for a useful
sequence, while demanding the full lookback would leave short histories (the 60-day demo)
with no train snapshot at all; early snapshots simply see fewer events. Label windows of
consecutive snapshots overlap (the churn horizon is longer than a step); evaluation on
``test`` is still out of time for features.

The ``features`` stage builds the plan's snapshots (``propensity features --training-set``);
the model stages only read them and say so when one is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from propensity.core.config import Config, FeaturesConfig
from propensity.core.errors import DataNotReadyError
from propensity.core.schema import LABEL_COLUMNS
from propensity.core.storage import table_exists
from propensity.core.tables import require_table

SPLITS = ("validation", "test")


@dataclass(frozen=True)
class SnapshotPlan:
    """Snapshot dates of one training run."""

    train: list[date]
    validation: date
    test: date

    def all(self) -> list[date]:
        """Every date of the plan, oldest first."""
        return sorted({*self.train, self.validation, self.test})

    def describe(self) -> str:
        """One line: the dates of each split."""
        return (f"train {', '.join(d.isoformat() for d in self.train)}; validation {self.validation.isoformat()};"
                f" test {self.test.isoformat()}")


def plan_from_range(first_day: date, last_day: date, features: FeaturesConfig) -> SnapshotPlan:
    """The snapshot plan for events dated ``first_day`` .. ``last_day`` (see the module docstring).

    :raises DataNotReadyError: the range is too short for one train, one validation and one test date.
    """
    step_days = features.snapshot_step_days
    max_train = features.max_train_snapshots or None
    horizon = features.max_horizon_days
    history = min(features.lookback_days, features.min_history_days)
    test = last_day + timedelta(days=1 - horizon)
    earliest = first_day + timedelta(days=history)
    step = timedelta(days=step_days)
    train_step = timedelta(days=features.train_step_days or step_days)
    train: list[date] = []
    t = test - 2 * step
    while t >= earliest and (max_train is None or len(train) < max_train):
        train.insert(0, t)
        t -= train_step
    if not train:
        need = history + 2 * step_days + horizon
        raise DataNotReadyError(
            f"events span {first_day.isoformat()} .. {last_day.isoformat()} ({(last_day - first_day).days + 1} days);"
            f" one train, one validation and one test snapshot need at least {need} days"
            f" ({history} of history, 2 steps of {step_days}, a {horizon}-day label horizon):"
            " ingest more history or shorten features.*_horizon_days")
    return SnapshotPlan(train=train, validation=test - step, test=test)


def event_date_range(events: DataFrame) -> tuple[date, date] | None:
    """First and last ``event_date`` of ``events``, or None when there are no events."""
    row = events.agg(F.min("event_date").alias("first"), F.max("event_date").alias("last")).first()
    if row is None or row["first"] is None:
        return None
    return row["first"], row["last"]


def plan_snapshots(spark: SparkSession, cfg: Config) -> SnapshotPlan:
    """The snapshot plan of the ``events`` table's date range.

    :raises TableNotFoundError: ``events`` does not exist.
    :raises DataNotReadyError: ``events`` is empty or spans too few days.
    """
    events = spark.table(require_table(spark, cfg, "events"))
    span = event_date_range(events)
    if span is None:
        raise DataNotReadyError(f"table {cfg.table('events').replace('`', '')} is empty; run `propensity ingest`")
    return plan_from_range(span[0], span[1], cfg.features)


def labelled_snapshots(spark: SparkSession, cfg: Config, dates: Sequence[date]) -> set[date]:
    """Those of ``dates`` that ``training_examples`` holds with labels (``label_purchase`` is never NULL then)."""
    table = cfg.table("training_examples")
    if not table_exists(spark, cfg, "training_examples"):
        return set()
    rows = (spark.table(table).where(F.col("snapshot_date").isin(list(dates)) & F.col("label_purchase").isNotNull())
            .select("snapshot_date").distinct().collect())
    return {r["snapshot_date"] for r in rows}


def training_plan(spark: SparkSession, cfg: Config) -> SnapshotPlan:
    """The snapshot plan, checked to be built with labels in ``training_examples``.

    :raises DataNotReadyError: a snapshot of the plan is missing (run ``propensity features --training-set``).
    """
    plan = plan_snapshots(spark, cfg)
    missing = sorted(set(plan.all()) - labelled_snapshots(spark, cfg, plan.all()))
    if missing:
        raise DataNotReadyError(f"training_examples lacks the labelled snapshot(s) {', '.join(map(str, missing))}"
                                " of the training plan; run `propensity features --training-set` first")
    return plan


def examples(spark: SparkSession, cfg: Config, dates: Sequence[date], platforms: Sequence[str] = ()) -> DataFrame:
    """Rows of ``training_examples`` on ``dates``, on ``platforms`` (empty: all).

    :raises TableNotFoundError: ``training_examples`` does not exist (run ``propensity features``).
    :raises DataNotReadyError: a platform has no rows on those dates.
    """
    df = spark.table(require_table(spark, cfg, "training_examples"))
    df = df.where(F.col("snapshot_date").isin(list(dates)))
    if platforms:
        present = {r["platform"] for r in df.select("platform").distinct().collect()}
        missing = sorted(set(platforms) - present)
        if missing:
            raise DataNotReadyError(f"platform {missing[0]!r} has no training_examples rows on"
                                    f" {', '.join(d.isoformat() for d in dates)}; platforms present:"
                                    f" {', '.join(sorted(present)) or 'none'}; check training.source_platforms"
                                    " / training.target_platform")
        df = df.where(F.col("platform").isin(list(platforms)))
    return df


def labelled(df: DataFrame) -> DataFrame:
    """Rows with at least one known label."""
    return df.where(F.coalesce(*[F.col(c) for c in LABEL_COLUMNS]).isNotNull())


def sample_rows(df: DataFrame, max_rows: int, seed: int) -> DataFrame:
    """A seeded random sample of at most ``max_rows`` rows (0: all rows, unchanged)."""
    if max_rows <= 0:
        return df
    count = df.count()
    if count <= max_rows:
        return df
    fraction = min(1.0, 1.2 * max_rows / count)
    return df.sample(fraction=fraction, seed=seed).limit(max_rows)


def split_rows(spark: SparkSession, cfg: Config, plan: SnapshotPlan) -> DataFrame:
    """Labelled validation and test rows of ``training_examples`` with a ``split`` column."""
    split = F.when(F.col("snapshot_date") == F.lit(plan.test), "test").otherwise("validation")
    return labelled(examples(spark, cfg, [plan.validation, plan.test])).withColumn("split", split)
