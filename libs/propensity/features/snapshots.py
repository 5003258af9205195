"""Training-set assembly: which snapshot dates to train, validate and test on.

Dates lie on a grid of ``features.snapshot_step_days`` (weekly) anchored at the **test** date,
the latest T whose longest label horizon is complete:
``T + max(horizons) <= last event date + 1 day`` (events of the last date run up to
its midnight). ``validation`` is one step earlier; ``train`` holds the dates from one step
before ``validation`` back, ``features.train_step_days`` apart (0: the same step; a denser
train grid gives more labelled rows from the same history), that still have at least
``min(lookback_days, min_history_days)`` days of events
before it (``T - that >= first event date``), oldest first, at most
``max_train_snapshots`` of the newest (0: all). A week of history is enough for a
useful sequence, while demanding the full lookback would leave short histories (the
60-day demo) with no train snapshot at all; early snapshots simply see fewer events.

Label windows of consecutive snapshots overlap (the churn horizon is longer than a
step); evaluation on ``test`` is still out of time for features.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from propensity.config import Config, FeaturesConfig
from propensity.errors import PropensityError
from propensity.features.build import write_snapshots
from propensity.features.windows import event_date_range
from propensity.tables import require_table

log = logging.getLogger(__name__)

#: Snapshots built per Delta commit by :func:`ensure_snapshots` (bounds the size of one query plan).
SNAPSHOTS_PER_COMMIT = 8


@dataclass(frozen=True)
class SnapshotPlan:
    """Snapshot dates of one training run."""

    train: list[date]
    validation: date
    test: date

    def all(self) -> list[date]:
        """Every date of the plan, oldest first."""
        return sorted({*self.train, self.validation, self.test})

    def split_of(self, snapshot_date: date) -> str:
        """``train``, ``validation`` or ``test`` for a date of the plan.

        :raises ValueError: the date is not in the plan.
        """
        if snapshot_date == self.test:
            return "test"
        if snapshot_date == self.validation:
            return "validation"
        if snapshot_date in self.train:
            return "train"
        raise ValueError(f"snapshot date {snapshot_date.isoformat()} is not in the plan {self}")


def plan_from_range(first_day: date, last_day: date, features: FeaturesConfig) -> SnapshotPlan:
    """The snapshot plan for events dated ``first_day`` .. ``last_day`` (see the module docstring).

    :param first_day: first event date.
    :param last_day: last event date.
    :param features: the ``features`` config section (lookback, horizons, snapshot grid).
    :raises PropensityError: the range is too short for one train, one validation and one test date.
    """
    step_days = features.snapshot_step_days
    max_train = features.max_train_snapshots or None
    horizon = max(features.purchase_horizon_days, features.click_horizon_days, features.churn_horizon_days)
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
        raise PropensityError(
            f"events span {first_day.isoformat()} .. {last_day.isoformat()} ({(last_day - first_day).days + 1} days);"
            f" one train, one validation and one test snapshot need at least {need} days"
            f" ({history} of history, 2 steps of {step_days}, a {horizon}-day label horizon):"
            " ingest more history or shorten features.*_horizon_days")
    return SnapshotPlan(train=train, validation=test - step, test=test)


def plan_snapshots(spark: SparkSession, cfg: Config) -> SnapshotPlan:
    """Choose the snapshot dates from the date range of the ``events`` table.

    :raises TableNotFoundError: ``events`` does not exist.
    :raises PropensityError: ``events`` is empty or spans too few days.
    """
    events = spark.table(require_table(spark, cfg, "events", "ingest"))
    span = event_date_range(events)
    if span is None:
        raise PropensityError(f"table {cfg.table('events').replace('`', '')} is empty; run `propensity ingest`")
    return plan_from_range(span[0], span[1], cfg.features)


def ensure_snapshots(spark: SparkSession, cfg: Config, plan: SnapshotPlan) -> None:
    """Build (with labels) the snapshots of ``plan`` missing from ``training_examples``.

    Up to ``SNAPSHOTS_PER_COMMIT`` snapshots are built per query and Delta commit.

    A snapshot counts as present when it has labelled rows (``label_purchase`` is never
    NULL when labels were computed), so one written for scoring is rebuilt with labels.
    Present snapshots are not rebuilt, even if ``events`` changed since; use
    :func:`~propensity.features.write_snapshot` for that.
    """
    wanted = plan.all()
    present: set[date] = set()
    table = cfg.table("training_examples")
    if spark.catalog.tableExists(table.replace("`", "")):
        rows = (spark.table(table).where(F.col("snapshot_date").isin(wanted) & F.col("label_purchase").isNotNull())
                .select("snapshot_date").distinct().collect())
        present = {r["snapshot_date"] for r in rows}
    missing = [d for d in wanted if d not in present]
    for start in range(0, len(missing), SNAPSHOTS_PER_COMMIT):
        batch = missing[start:start + SNAPSHOTS_PER_COMMIT]
        log.info("building snapshots %s", ", ".join(d.isoformat() for d in batch))
        write_snapshots(spark, cfg, batch, with_labels=True)
