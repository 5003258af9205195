"""Aggregate (numeric) features of one ``(user_id, platform)`` at snapshot date T.

Every feature reads only history events, ``event_time`` in ``[T - lookback_days, T)``.
Windows of 1, 7 and 30 days end at T; a window longer than ``lookback_days`` is
clipped to it (with ``lookback_days: 14`` the ``_30d`` columns cover 14 days).
*This platform* is the row's platform; ``all_`` columns use the user's events on every
platform (``user_id`` is the cross-platform id); ``other_`` columns every platform but
this one. Behaviour events are ``view, cart, remove_from_cart, favorite, purchase``.

Integer columns (counts, never NULL):

- ``n_<type>_<w>d``: events of each of the seven event types on this platform in the
  last w = 1, 7, 30 days; ``all_n_<type>_<w>d``: the same on all platforms;
- ``active_days_30d`` / ``all_active_days_30d``: distinct UTC days with a behaviour event;
- ``n_sessions_30d``, ``distinct_items_30d``, ``distinct_categories_30d``: distinct
  session ids, items and categories of behaviour events on this platform;
  ``all_distinct_categories_30d`` over all platforms;
- ``carts_without_purchase_30d``: distinct items carted on this platform and not
  purchased there in the window;
- ``n_other_platforms_active_30d``: other platforms with a behaviour event;
  ``other_n_behaviour_30d`` / ``other_n_purchase_30d``: behaviour events / purchases there.

Double columns (never NULL):

- ``days_since_last_event`` / ``all_days_since_last_event``: fractional days from the last
  behaviour event (this platform / any platform) to T; ``days_since_first_event``: from the
  first behaviour event on this platform in the lookback to T (tenure, at most lookback_days);
- ``days_since_last_purchase`` / ``all_days_since_last_purchase``: the same for purchases,
  ``lookback_days`` when there is none in the window;
- ``spend_7d``, ``spend_30d``, ``all_spend_30d``: sum of purchase prices (NULL prices count 0;
  summed as exact decimals, so the result does not depend on the order of the rows);
- ``avg_price_viewed_30d``: mean price of viewed items on this platform (0 when none known);
- ``ctr_30d`` / ``all_ctr_30d``: ad clicks / ad impressions (0 without impressions).
"""

from __future__ import annotations

from pyspark.sql import Column, WindowSpec
from pyspark.sql import functions as F

from propensity.core.schema import (
    BEHAVIOUR_EVENT_TYPES,
    COUNT_FEATURES,
    EVENT_TYPES,
    FEATURE_COLUMNS,
    INT_FEATURES,
    WINDOW_DAYS,
)
from propensity.stages.features.windows import Windows

_PRICE_SUM = "decimal(32,6)"


def _is(event_type: str) -> Column:
    return F.col("event_type") == event_type


def platform_aggregates(w: Windows) -> list[Column]:
    """Aggregate expressions for ``groupBy("user_id", "platform")`` over the snapshot's span of events.

    Every expression reads only history events (``event_time < T``), so future events in
    the span (there for the labels) change nothing. Columns starting with ``_`` are
    intermediate (timestamps, sets) used by :func:`user_aggregates` and :func:`feature_columns`.
    """
    hist = w.in_history()
    beh = F.col("event_type").isin(*BEHAVIOUR_EVENT_TYPES) & hist
    in30 = w.within(30)
    ts = F.col("event_time")
    # Exact decimal sums: the same events give bit-identical features whatever the summation order.
    price = F.col("price").cast(_PRICE_SUM)
    counts = [F.count(F.when(_is(t) & w.within(d), 1)).cast("int").alias(f"n_{t}_{d}d")
              for t in EVENT_TYPES for d in WINDOW_DAYS]
    return [
        *counts,
        F.count(F.when(beh, 1)).cast("int").alias("_n_beh_lookback"),
        F.count(F.when(beh & in30, 1)).cast("int").alias("_n_beh_30d"),
        F.max(F.when(beh, ts)).alias("_last_beh"),
        F.min(F.when(beh, ts)).alias("_first_beh"),
        F.max(F.when(_is("purchase") & hist, ts)).alias("_last_purchase"),
        F.collect_set(F.when(beh & in30, F.to_date(ts))).alias("_days"),
        F.collect_set(F.when(beh & in30, F.col("session_id"))).alias("_sessions"),
        F.collect_set(F.when(beh & in30, F.col("item_id"))).alias("_items"),
        F.collect_set(F.when(beh & in30, F.col("category"))).alias("_categories"),
        F.collect_set(F.when(_is("cart") & in30, F.col("item_id"))).alias("_carted"),
        F.collect_set(F.when(_is("purchase") & in30, F.col("item_id"))).alias("_purchased"),
        F.sum(F.when(_is("purchase") & w.within(7), price)).alias("_spend_7d"),
        F.sum(F.when(_is("purchase") & in30, price)).alias("_spend_30d"),
        F.sum(F.when(_is("view") & in30, price)).alias("_viewed_price_sum"),
        F.count(F.when(_is("view") & in30, price)).alias("_viewed_priced"),
    ]


def user_aggregates(user: WindowSpec) -> list[Column]:
    """Window expressions over ``user`` (partitioned by ``user_id``) on the per-platform rows: the ``all_`` parts."""

    def union_size(col: str) -> Column:
        return F.size(F.array_distinct(F.flatten(F.collect_list(col).over(user))))

    return [
        *[F.sum(c).over(user).cast("int").alias(f"all_{c}") for c in COUNT_FEATURES],
        F.max("_last_beh").over(user).alias("_all_last_beh"),
        F.max("_last_purchase").over(user).alias("_all_last_purchase"),
        union_size("_days").alias("all_active_days_30d"),
        union_size("_categories").alias("all_distinct_categories_30d"),
        F.sum("_spend_30d").over(user).alias("_all_spend_30d"),
        F.sum("_n_beh_30d").over(user).cast("int").alias("_all_n_beh_30d"),
        F.count(F.when(F.col("_n_beh_30d") > 0, 1)).over(user).cast("int").alias("_n_platforms_active"),
    ]


def is_eligible() -> Column:
    """True for per-platform rows with a behaviour event in the lookback (docs/labels.md)."""
    return F.col("_n_beh_lookback") > 0


def feature_columns(w: Windows) -> list[Column]:
    """:data:`FEATURE_COLUMNS` from the platform aggregates and the user window columns, typed and in order."""

    def days(ts: Column, default: float | None = None) -> Column:
        value = w.days_before_t(ts)
        return F.coalesce(value, F.lit(float(default))) if default is not None else value

    def ratio(num: str, den: str) -> Column:
        return F.when(F.col(den) > 0, F.col(num) / F.col(den)).otherwise(F.lit(0.0))

    lookback = w.lookback_days
    values: dict[str, Column] = {
        "active_days_30d": F.size("_days"),
        "n_sessions_30d": F.size("_sessions"),
        "distinct_items_30d": F.size("_items"),
        "distinct_categories_30d": F.size("_categories"),
        "carts_without_purchase_30d": F.size(F.array_except("_carted", "_purchased")),
        "n_other_platforms_active_30d": F.col("_n_platforms_active") - F.when(F.col("_n_beh_30d") > 0, 1).otherwise(0),
        "other_n_behaviour_30d": F.col("_all_n_beh_30d") - F.col("_n_beh_30d"),
        "other_n_purchase_30d": F.col("all_n_purchase_30d") - F.col("n_purchase_30d"),
        "days_since_last_event": days(F.col("_last_beh")),
        "all_days_since_last_event": days(F.col("_all_last_beh")),
        "days_since_first_event": days(F.col("_first_beh")),
        "days_since_last_purchase": days(F.col("_last_purchase"), lookback),
        "all_days_since_last_purchase": days(F.col("_all_last_purchase"), lookback),
        "spend_7d": F.coalesce(F.col("_spend_7d"), F.lit(0.0)),
        "spend_30d": F.coalesce(F.col("_spend_30d"), F.lit(0.0)),
        "all_spend_30d": F.coalesce(F.col("_all_spend_30d"), F.lit(0.0)),
        "avg_price_viewed_30d": F.when(F.col("_viewed_priced") > 0,
                                       F.col("_viewed_price_sum").cast("double") / F.col("_viewed_priced"))
                                .otherwise(F.lit(0.0)),
        "ctr_30d": ratio("n_ad_click_30d", "n_ad_impression_30d"),
        "all_ctr_30d": ratio("all_n_ad_click_30d", "all_n_ad_impression_30d"),
    }
    return [
        (values[name] if name in values else F.col(name)).cast("int" if name in INT_FEATURES else "double").alias(name)
        for name in FEATURE_COLUMNS
    ]
