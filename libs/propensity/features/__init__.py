"""Point-in-time features, labels and behaviour sequences: the ``features`` stage (DESIGN sections 3 and 5).

- :func:`build_training_examples`: events -> one row per eligible ``(user_id, platform)``;
- :func:`write_snapshot`: the same from the ``events`` table into ``training_examples``,
  replacing only that snapshot's partition;
- :func:`plan_snapshots` / :func:`ensure_snapshots`: the train / validation / test dates
  and building the missing ones;
- :func:`label_summary`: rows and label rates per snapshot and platform;
- :data:`FEATURE_COLUMNS`: the ordered numeric feature columns.
"""

from propensity.features.aggregates import DOUBLE_FEATURES, FEATURE_COLUMNS, INT_FEATURES
from propensity.features.build import build_training_examples, label_summary, write_snapshot, write_snapshots
from propensity.features.labels import LABEL_COLUMNS
from propensity.features.snapshots import SnapshotPlan, ensure_snapshots, plan_from_range, plan_snapshots

__all__ = [
    "DOUBLE_FEATURES",
    "FEATURE_COLUMNS",
    "INT_FEATURES",
    "LABEL_COLUMNS",
    "SnapshotPlan",
    "build_training_examples",
    "ensure_snapshots",
    "label_summary",
    "plan_from_range",
    "plan_snapshots",
    "write_snapshot",
    "write_snapshots",
]
