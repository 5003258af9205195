"""``event_ids`` cut or padded to a model's positions: in Spark (training frames) and in NumPy (scoring).

Only the Spark functions import pyspark (lazily): a registered model loads without it.

A model reads ``positions`` positions: the target and the newest ``positions - 1`` events. Longer
sequences lose their oldest events, shorter ones are padded with zeros on the right (id 0 is
padding, so padded positions are masked out). Both functions give the same ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from propensity.core.sequence import FIELDS

if TYPE_CHECKING:
    from pyspark.sql import Column


def fixed_positions(event_ids: Column, positions: int) -> Column:
    """Spark: ``event_ids`` as exactly ``positions * FIELDS`` ints (target, newest events, zero padding)."""
    from pyspark.sql import functions as F

    if positions < 2:
        raise ValueError(f"positions={positions} must be at least 2 (the target and one event)")
    keep = (positions - 1) * FIELDS
    events = F.slice(event_ids, F.lit(FIELDS + 1), F.greatest(F.size(event_ids) - FIELDS, F.lit(0)))
    newest = F.slice(events, F.greatest(F.size(events) - keep + 1, F.lit(1)), keep)
    head = F.concat(F.slice(event_ids, 1, FIELDS), newest)
    padding = F.array_repeat(F.lit(0), F.greatest(F.lit(positions * FIELDS) - F.size(head), F.lit(0)))
    return F.concat(head, padding).cast("array<int>")


def fit_positions(rows: Sequence[Any], positions: int) -> np.ndarray:
    """NumPy: ``(len(rows), positions * FIELDS)`` int64 ids from ``event_ids`` values (arrays or lists; None
    and empty become all padding)."""
    if positions < 2:
        raise ValueError(f"positions={positions} must be at least 2 (the target and one event)")
    width = positions * FIELDS
    keep = (positions - 1) * FIELDS
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        if row is None or len(row) < FIELDS:
            continue
        ids = np.asarray(row, dtype=np.int64)
        out[i, :FIELDS] = ids[:FIELDS]
        events = ids[FIELDS:][-keep:] if len(ids) > FIELDS else ids[:0]
        out[i, FIELDS:FIELDS + len(events)] = events
    return out


def events_in(event_ids: Column) -> Column:
    """Spark: the number of events in ``event_ids`` (the target not counted)."""
    from pyspark.sql import functions as F

    return (F.size(event_ids) / F.lit(FIELDS) - 1).cast("int")
