"""The vocabulary every layer shares, each fact written once.

- event types (:data:`EVENT_TYPES`; the first five are behaviour events, the last two ad events);
- the prediction tasks (:data:`TASKS`) and the columns named after them (:data:`LABEL_COLUMNS`,
  :data:`SCORE_COLUMNS`);
- the numeric feature columns of ``training_examples`` (:data:`FEATURE_COLUMNS`, integer ones
  first), which the ``features`` stage computes, :mod:`propensity.core.tables` declares and
  every model reads.

Nothing here imports Spark or torch.
"""

from __future__ import annotations

EVENT_TYPES = ("view", "cart", "remove_from_cart", "favorite", "purchase", "ad_impression", "ad_click")
#: Events that show a user's own interest; a (user, platform) row needs one in the lookback.
BEHAVIOUR_EVENT_TYPES = EVENT_TYPES[:5]

#: What the models predict, in the order of every model output and label array.
TASKS = ("purchase", "click", "churn")
LABEL_COLUMNS = tuple(f"label_{t}" for t in TASKS)
#: Score column of each task in ``user_scores``.
SCORE_COLUMNS = {t: f"{t}_score" for t in TASKS}
#: The readable sequence column of ``training_examples`` (the models read ``event_ids``, see core.sequence).
TEXT_COLUMN = "behavior_text"

#: Window lengths (days) of the per-event-type counts.
WINDOW_DAYS = (1, 7, 30)
#: Per-platform counts ``n_<type>_<w>d``; each also exists over all platforms as ``all_n_<type>_<w>d``.
COUNT_FEATURES = tuple(f"n_{t}_{d}d" for t in EVENT_TYPES for d in WINDOW_DAYS)

INT_FEATURES: tuple[str, ...] = (
    *COUNT_FEATURES,
    *(f"all_{c}" for c in COUNT_FEATURES),
    "active_days_30d", "all_active_days_30d", "n_sessions_30d", "distinct_items_30d", "distinct_categories_30d",
    "all_distinct_categories_30d", "carts_without_purchase_30d", "n_other_platforms_active_30d",
    "other_n_behaviour_30d", "other_n_purchase_30d",
)
DOUBLE_FEATURES: tuple[str, ...] = (
    "days_since_last_event", "all_days_since_last_event", "days_since_first_event", "days_since_last_purchase",
    "all_days_since_last_purchase", "spend_7d", "spend_30d", "all_spend_30d", "avg_price_viewed_30d", "ctr_30d",
    "all_ctr_30d",
)
#: Ordered numeric feature columns of ``training_examples`` (the wide part of every model, the baselines' input).
FEATURE_COLUMNS: tuple[str, ...] = INT_FEATURES + DOUBLE_FEATURES


def feature_type(name: str) -> str:
    """The SQL type of a feature column: ``INT`` for counts, ``DOUBLE`` otherwise.

    :raises KeyError: ``name`` is not a feature column.
    """
    if name in INT_FEATURES:
        return "INT"
    if name in DOUBLE_FEATURES:
        return "DOUBLE"
    raise KeyError(f"{name!r} is not a feature column")
