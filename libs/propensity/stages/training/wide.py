"""The wide part of every head: a logistic regression on the normalised features, fitted on all labelled
train rows with its L2 strength chosen per task on validation log loss.

New heads start as that regression and keep it fixed (the deep part, output starting at zero,
learns what the regression leaves), so a model starts from, and keeps at least on validation,
what the features alone give.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from pyspark.sql import DataFrame

from propensity.core.datasets import sample_rows
from propensity.core.schema import LABEL_COLUMNS, TASKS
from propensity.models.metrics import log_loss
from propensity.models.network import FeatureNormalizer, FeatureStats, fit_logistic

#: Rows sampled for the logistic regressions new heads start from.
LOGISTIC_START_ROWS = 200_000
#: Inverse L2 strengths (scikit-learn's C) tried for those regressions, per task, on validation log loss.
LOGISTIC_C_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)


def _normalised(frame: pd.DataFrame, stats: FeatureStats) -> Any:
    normalizer = FeatureNormalizer(len(stats.columns))
    normalizer.set_stats(stats)
    with torch.no_grad():
        return normalizer(torch.tensor(frame[stats.columns].to_numpy(dtype="float32", na_value=float("nan"))))


def _known(frame: pd.DataFrame, label: str) -> tuple[Any, Any] | None:
    """Row mask and labels (float64 tensor) of ``label`` where known; None without both classes."""
    known = frame[label].notna().to_numpy()
    if known.sum() == 0 or frame.loc[known, label].nunique() < 2:
        return None
    return torch.from_numpy(known), torch.tensor(frame.loc[known, label].to_numpy(dtype="float64"))


def choose_logistic(x: Any, y: Any, val_x: Any | None, val_y: Any | None,
                    grid: Sequence[float] = LOGISTIC_C_GRID) -> dict[str, Any]:
    """A logistic regression on ``x``, ``y`` (tensors) whose inverse L2 strength ``c`` (scikit-learn's C) is
    the one of ``grid`` with the lowest log loss on ``val_x``, ``val_y``; ``c`` = 1 without validation rows.

    :returns: ``{"weight": [...], "bias": b, "c": c, "val_log_loss": loss or None}``.
    """
    if val_x is None or val_y is None or len(val_y) == 0:
        weight, bias = fit_logistic(x, y)
        return {"weight": weight, "bias": bias, "c": 1.0, "val_log_loss": None}
    best: dict[str, Any] = {}
    for c in grid:
        weight, bias = fit_logistic(x, y, c=c)
        probs = torch.sigmoid(val_x.double() @ torch.tensor(weight, dtype=torch.float64) + bias)
        loss = log_loss(val_y.numpy(), probs.numpy())
        if not best or loss < best["val_log_loss"]:
            best = {"weight": weight, "bias": bias, "c": c, "val_log_loss": loss}
    return best


def logistic_start(rows: DataFrame, stats: FeatureStats, seed: int, validation: DataFrame | None = None
                   ) -> dict[str, dict[str, Any]]:
    """Per task, a logistic regression on the normalised features of (a sample of) ``rows``, its L2
    strength chosen on ``validation`` (:func:`choose_logistic`): new heads start as it, so fine-tuning
    starts from what the features alone give (the wide-and-deep promise).
    """
    columns = [*stats.columns, *LABEL_COLUMNS]
    frame: pd.DataFrame = sample_rows(rows.select(*columns), LOGISTIC_START_ROWS, seed).toPandas()
    val: pd.DataFrame | None = validation.select(*columns).toPandas() if validation is not None else None
    x = _normalised(frame, stats)
    val_x = _normalised(val, stats) if val is not None else None
    start: dict[str, dict[str, Any]] = {}
    for label, task in zip(LABEL_COLUMNS, TASKS, strict=True):
        train_part = _known(frame, label)
        if train_part is None:
            continue
        val_part = _known(val, label) if val is not None else None
        val_rows, val_y = val_part if val_part is not None else (None, None)
        start[task] = choose_logistic(x[train_part[0]], train_part[1],
                                      None if val_x is None or val_rows is None else val_x[val_rows], val_y)
    return start
