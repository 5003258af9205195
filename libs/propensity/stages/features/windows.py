"""Point-in-time windows of one snapshot date as Spark expressions.

A snapshot date ``T`` means ``T 00:00 UTC``. Instants are built from epoch seconds
(:func:`pyspark.sql.functions.timestamp_seconds`), so they do not depend on the session
time zone. Features read ``[T - lookback_days, T)``, labels ``[T, T + horizon)``
(docs/labels.md).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from propensity.core.config import FeaturesConfig

DAY_S = 86_400


def epoch_seconds(day: date) -> int:
    """Seconds since the epoch of ``day`` at 00:00 UTC."""
    return calendar.timegm(day.timetuple())


def instant(day: date, plus_days: int = 0) -> Column:
    """A TIMESTAMP literal for ``day + plus_days`` at 00:00 UTC."""
    return F.timestamp_seconds(F.lit(epoch_seconds(day) + plus_days * DAY_S))


@dataclass(frozen=True)
class Windows:
    """The feature and label windows of one snapshot date."""

    snapshot_date: date
    lookback_days: int
    purchase_horizon_days: int
    click_horizon_days: int
    churn_horizon_days: int

    @classmethod
    def of(cls, snapshot_date: date, features: FeaturesConfig) -> Windows:
        """Windows for ``snapshot_date`` with the lengths of the ``features`` config section."""
        return cls(snapshot_date, features.lookback_days, features.purchase_horizon_days,
                   features.click_horizon_days, features.churn_horizon_days)

    @property
    def max_horizon_days(self) -> int:
        """The longest label horizon."""
        return max(self.purchase_horizon_days, self.click_horizon_days, self.churn_horizon_days)

    def span(self, events: DataFrame, with_future: bool = True) -> DataFrame:
        """Events with ``event_time`` in ``[T - lookback_days, T + max_horizon_days)``, or ``[.., T)`` without future.

        ``event_date`` (the partition column) is filtered with one day of margin on each
        side for partition pruning; ``event_time`` decides.
        """
        t = self.snapshot_date
        end = self.max_horizon_days if with_future else 0
        return events.where(
            (F.col("event_date") >= F.lit(t - timedelta(days=self.lookback_days + 1)))
            & (F.col("event_date") <= F.lit(t + timedelta(days=end)))
            & (F.col("event_time") >= instant(t, -self.lookback_days))
            & (F.col("event_time") < instant(t, end))
        )

    def in_history(self) -> Column:
        """True for events of the span before T (the feature window)."""
        return F.col("event_time") < instant(self.snapshot_date)

    def within(self, days: int) -> Column:
        """True for events of the span in the last ``days`` days before T (clipped to the lookback)."""
        if days >= self.lookback_days:
            return self.in_history()
        return (F.col("event_time") >= instant(self.snapshot_date, -days)) & self.in_history()

    def in_horizon(self, days: int) -> Column:
        """True for events of the span in ``[T, T + days)``."""
        t = self.snapshot_date
        return (F.col("event_time") >= instant(t)) & (F.col("event_time") < instant(t, days))

    def days_before_t(self, ts: Column) -> Column:
        """Fractional days from ``ts`` to T (positive for history events)."""
        return (F.lit(epoch_seconds(self.snapshot_date) * 1_000_000) - F.unix_micros(ts)) / F.lit(DAY_S * 1e6)
