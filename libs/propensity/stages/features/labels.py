"""Labels (docs/labels.md), from events in ``[T, T + horizon)`` on the row's own platform.

- ``label_purchase`` = 1 if a ``purchase`` in ``[T, T + purchase_horizon_days)``, else 0;
- ``label_click`` = 1 if an ``ad_click`` in ``[T, T + click_horizon_days)``; else 0 if an
  ``ad_impression`` in that window; else NULL (a click counts even without a recorded
  impression, as the definition reads);
- ``label_churn`` = 1 if no behaviour event in ``[T, T + churn_horizon_days)``, else 0.

Events on the user's other platforms never count. Without labels (scoring) all three
are NULL.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

from propensity.core.schema import BEHAVIOUR_EVENT_TYPES, LABEL_COLUMNS
from propensity.stages.features.windows import Windows


def _any(condition: Column) -> Column:
    return F.max(F.when(condition, 1).otherwise(0))


def label_aggregates(w: Windows) -> list[Column]:
    """Aggregate expressions for ``groupBy("user_id", "platform")`` over the span: what happened in each horizon."""
    etype = F.col("event_type")
    return [
        _any((etype == "purchase") & w.in_horizon(w.purchase_horizon_days)).alias("_purchased_after"),
        _any((etype == "ad_click") & w.in_horizon(w.click_horizon_days)).alias("_clicked_after"),
        _any((etype == "ad_impression") & w.in_horizon(w.click_horizon_days)).alias("_impressed_after"),
        _any(etype.isin(*BEHAVIOUR_EVENT_TYPES) & w.in_horizon(w.churn_horizon_days)).alias("_active_after"),
    ]


def label_columns(with_labels: bool) -> list[Column]:
    """The three INT label columns from :func:`label_aggregates`, or three NULLs without labels."""
    if not with_labels:
        return [F.lit(None).cast("int").alias(c) for c in LABEL_COLUMNS]
    return [
        F.col("_purchased_after").cast("int").alias("label_purchase"),
        F.when(F.col("_clicked_after") == 1, 1).when(F.col("_impressed_after") == 1, 0).cast("int")
        .alias("label_click"),
        (1 - F.col("_active_after")).cast("int").alias("label_churn"),
    ]
