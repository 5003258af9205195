"""Labels of DESIGN section 5, from events in ``[T, T + horizon)`` on the row's own platform.

- ``label_purchase`` = 1 if a ``purchase`` in ``[T, T + purchase_horizon_days)``, else 0;
- ``label_click`` = 1 if an ``ad_click`` in ``[T, T + click_horizon_days)``; else 0 if an
  ``ad_impression`` in that window; else NULL (a click counts even without a recorded
  impression, as the definition reads);
- ``label_churn`` = 1 if no behaviour event in ``[T, T + churn_horizon_days)``, else 0.

Events on the user's other platforms never count. Without labels (scoring) all three
are NULL.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from propensity.features.windows import Windows
from propensity.tables import BEHAVIOUR_EVENT_TYPES

LABEL_COLUMNS = ("label_purchase", "label_click", "label_churn")


def _any(condition: Column) -> Column:
    return F.max(F.when(condition, 1).otherwise(0))


def add_labels(rows: DataFrame, events: DataFrame, w: Windows) -> DataFrame:
    """``rows`` (keyed by ``user_id``, ``platform``) with the three INT label columns.

    :param rows: one row per eligible ``(user_id, platform)``.
    :param events: all events (the future window is selected here).
    :param w: the snapshot's windows.
    """
    future = w.future(events)
    etype = F.col("event_type")
    outcomes = future.groupBy("user_id", "platform").agg(
        _any((etype == "purchase") & w.before(w.purchase_horizon_days)).alias("_purchased"),
        _any((etype == "ad_click") & w.before(w.click_horizon_days)).alias("_clicked"),
        _any((etype == "ad_impression") & w.before(w.click_horizon_days)).alias("_impressed"),
        _any(etype.isin(*BEHAVIOUR_EVENT_TYPES) & w.before(w.churn_horizon_days)).alias("_active"),
    )
    labelled = rows.join(outcomes, ["user_id", "platform"], "left")
    return labelled.select(
        *rows.columns,
        F.coalesce(F.col("_purchased"), F.lit(0)).cast("int").alias("label_purchase"),
        F.when(F.col("_clicked") == 1, 1).when(F.col("_impressed") == 1, 0).cast("int").alias("label_click"),
        (1 - F.coalesce(F.col("_active"), F.lit(0))).cast("int").alias("label_churn"),
    )


def null_labels(rows: DataFrame) -> DataFrame:
    """``rows`` with the three label columns, all NULL (scoring: there is no future)."""
    return rows.select("*", *[F.lit(None).cast("int").alias(c) for c in LABEL_COLUMNS])
