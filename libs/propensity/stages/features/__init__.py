"""The ``features`` stage: point-in-time features, labels and behaviour sequences into ``training_examples``.

- :func:`build_training_examples`: events -> one row per eligible ``(user_id, platform)`` (pure);
- :func:`write_snapshot` / :func:`write_snapshots`: the same from the ``events`` table into
  ``training_examples``, replacing only those snapshots' partitions;
- :func:`ensure_snapshots`: build the training plan's snapshots that are missing.

The feature columns themselves are named in :mod:`propensity.core.schema`; their definitions
are in :mod:`~propensity.stages.features.aggregates`, the sequence text in
:mod:`~propensity.stages.features.behavior`, the labels in :mod:`~propensity.stages.features.labels`.
"""

from propensity.stages.features.build import build_training_examples, ensure_snapshots, write_snapshot, write_snapshots

__all__ = ["build_training_examples", "ensure_snapshots", "write_snapshot", "write_snapshots"]
