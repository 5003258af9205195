"""The fusion's weights: ``w * teacher + (1 - w) * student`` per task, ``w`` chosen on validation.

A grid over [0, 1] (:func:`choose_weights`), so the fusion is never worse on validation than
either model alone. The fusion model itself is :class:`~propensity.models.pyfunc.FusionPyfunc`.
"""

from __future__ import annotations

import numpy as np

from propensity.core.schema import TASKS
from propensity.models.metrics import roc_auc


def weight_grid(step: float) -> list[float]:
    """``0, step, 2 * step, ..., 1`` (1 always included)."""
    n = round(1.0 / step)
    return sorted({round(min(1.0, i * step), 10) for i in range(n + 1)} | {1.0})


def choose_weights(labels: dict[str, np.ndarray], teacher: dict[str, np.ndarray], student: dict[str, np.ndarray],
                   step: float) -> dict[str, float]:
    """Per task, the teacher weight ``w`` on the grid with the best AUC of ``w * teacher + (1 - w) * student``.

    Ties go to the smaller ``w``; a task without both classes gets 0.5.
    :param labels: per task, 0/1 labels of the validation rows (NULL labels already dropped).
    """
    weights: dict[str, float] = {}
    for task in TASKS:
        y = np.asarray(labels[task], dtype=np.float64)
        best_w, best_auc = 0.5, -np.inf
        for w in weight_grid(step):
            auc = roc_auc(y, w * np.asarray(teacher[task]) + (1.0 - w) * np.asarray(student[task]))
            if np.isfinite(auc) and auc > best_auc + 1e-12:
                best_w, best_auc = w, auc
        weights[task] = best_w
    return weights
