"""ROC and calibration plots: one figure per model and split, one panel per task, one line per platform.

Built on ``matplotlib.figure.Figure`` (no pyplot, no display needed); log them with
``mlflow.log_figure``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from propensity.models.metrics import ArrayLike, roc_auc

#: ``{task: {platform: (labels, scores)}}`` with NULL labels already dropped.
Curves = Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]]


def roc_points(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-p, kind="mergesort")
    y, p = y[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(p)), y.size - 1] if y.size else np.array([], dtype=int)
    tps = np.cumsum(y)[last] if y.size else np.array([])
    fps = last + 1 - tps
    pos, neg = max(float(y.sum()), 1.0), max(float(y.size - y.sum()), 1.0)
    return np.r_[0.0, fps / neg], np.r_[0.0, tps / pos]


def calibration_points(labels: ArrayLike, scores: ArrayLike, bins: int = 10
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean score, observed positive rate and row count of each non-empty equal-width score bin."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(scores, dtype=np.float64)
    index = np.clip((p * bins).astype(int), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    keep = counts > 0
    mean_score = np.bincount(index, weights=p, minlength=bins)[keep] / counts[keep]
    rate = np.bincount(index, weights=y, minlength=bins)[keep] / counts[keep]
    return mean_score, rate, counts[keep]


def _panels(title: str, tasks: Sequence[str]) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(5 * len(tasks), 4.6), dpi=90)
    axes = [fig.add_subplot(1, len(tasks), i + 1) for i in range(len(tasks))]
    fig.suptitle(title)
    return fig, axes


def _style(platform: str) -> dict[str, Any]:
    return {"color": "black", "linewidth": 2.2} if platform == "all" else {"linewidth": 1.2, "alpha": 0.85}


def roc_figure(curves: Curves, title: str) -> Figure:
    """ROC curves, AUC in the legend."""
    fig, axes = _panels(title, list(curves))
    for ax, (task, by_platform) in zip(axes, curves.items(), strict=True):
        for platform, (y, p) in by_platform.items():
            fpr, tpr = roc_points(y, p)
            ax.plot(fpr, tpr, label=f"{platform} (AUC {roc_auc(y, p):.3f}, n={len(y)})",
                    **_style(platform))
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
        ax.set(title=task, xlabel="false positive rate", ylabel="true positive rate")
        ax.legend(loc="lower right", fontsize=8)
    return fig


def calibration_figure(curves: Curves, title: str, bins: int = 10) -> Figure:
    """Observed positive rate against mean predicted probability per score bin."""
    fig, axes = _panels(title, list(curves))
    for ax, (task, by_platform) in zip(axes, curves.items(), strict=True):
        for platform, (y, p) in by_platform.items():
            mean_score, rate, _ = calibration_points(y, p, bins)
            ax.plot(mean_score, rate, marker="o", markersize=3, label=platform,
                    **_style(platform))
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
        ax.set(title=task, xlabel="mean predicted probability", ylabel="observed rate",
               xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="upper left", fontsize=8)
    return fig
