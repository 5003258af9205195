"""``event_ids`` cut or padded to a model's positions: in Spark (training frames) and in NumPy (scoring).

Only the Spark functions import pyspark (lazily): a registered model loads without it.

A model reads ``positions`` positions: the target and the newest ``positions - 1`` events. Longer
sequences lose their oldest events, shorter ones are padded with zeros on the right (id 0 is
padding, so padded positions are masked out). Both functions give the same ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class FlatSequences:
    """``event_ids`` rows stored back to back, as in an Arrow list array: row ``i`` is
    ``values[starts[i]:starts[i] + lengths[i]]`` (a missing row has length 0)."""

    values: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray

    @classmethod
    def from_rows(cls, rows: Sequence[Any]) -> FlatSequences:
        """From ``event_ids`` values (arrays or lists; None for a missing row)."""
        lengths = np.array([0 if row is None else len(row) for row in rows], dtype=np.int64)
        present = [np.asarray(row, dtype=np.int64) for row in rows if row is not None and len(row)]
        values = np.concatenate(present) if present else np.zeros(0, dtype=np.int64)
        return cls(values, np.cumsum(lengths) - lengths, lengths)

    def __len__(self) -> int:
        return len(self.lengths)

    def rows(self, start: int, stop: int) -> FlatSequences:
        """Rows ``start`` to ``stop`` (exclusive), sharing ``values``."""
        return FlatSequences(self.values, self.starts[start:stop], self.lengths[start:stop])

    def take(self, indices: np.ndarray) -> FlatSequences:
        """The rows at ``indices``, in that order, sharing ``values``."""
        return FlatSequences(self.values, self.starts[indices], self.lengths[indices])

    def fit(self, positions: int) -> np.ndarray:
        """``(rows, positions * FIELDS)`` int64 ids, computed for all rows at once (no loop over rows).

        A row shorter than one position (the target) becomes all padding.
        """
        if positions < 2:
            raise ValueError(f"positions={positions} must be at least 2 (the target and one event)")
        if not len(self.values):
            return np.zeros((len(self), positions * FIELDS), dtype=np.int64)
        starts, lengths = self.starts.astype(np.int64), self.lengths.astype(np.int64)
        valid = lengths >= FIELDS
        # per row: the target's FIELDS values, then the values of its newest (at most positions - 1) events
        kept = np.where(valid, np.minimum(lengths - FIELDS, (positions - 1) * FIELDS), 0)
        column = np.arange(positions * FIELDS, dtype=np.int64)
        first_event = (starts + lengths - kept)[:, None]
        source = np.where(column < FIELDS, starts[:, None] + column, first_event + column - FIELDS)
        take = (column < FIELDS) & valid[:, None] | (column >= FIELDS) & (column - FIELDS < kept[:, None])
        # gather everywhere (a clipped index is harmless), then zero what is not taken: faster than a masked gather
        return self.values.take(np.clip(source, 0, len(self.values) - 1)).astype(np.int64) * take


def fit_positions(rows: Sequence[Any], positions: int) -> np.ndarray:
    """NumPy: ``(len(rows), positions * FIELDS)`` int64 ids from ``event_ids`` values (arrays or lists; None
    and empty become all padding)."""
    return FlatSequences.from_rows(rows).fit(positions)


def events_in(event_ids: Column) -> Column:
    """Spark: the number of events in ``event_ids`` (the target not counted)."""
    from pyspark.sql import functions as F

    return (F.size(event_ids) / F.lit(FIELDS) - 1).cast("int")
