"""Slices of the evaluation rows reported on their own.

``cold_start``: rows whose user has at most :data:`COLD_START_MAX_EVENTS` behaviour events on the
row's platform in the lookback but some on another platform (known through the identity links):
where transfer across platforms must show.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

from propensity.core.schema import BEHAVIOUR_EVENT_TYPES

#: Name of the flag column added to scored rows.
COLD_START = "cold_start"
#: At most this many behaviour events on the row's own platform make a cold-start row.
COLD_START_MAX_EVENTS = 3


def cold_start() -> Column:
    """True for cold-start rows, from the aggregate features of ``training_examples``."""
    own = sum((F.col(f"n_{t}_30d") for t in BEHAVIOUR_EVENT_TYPES), F.lit(0))
    return ((own <= COLD_START_MAX_EVENTS) & (F.col("other_n_behaviour_30d") > 0)).alias(COLD_START)
