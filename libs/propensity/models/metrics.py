"""Binary classification metrics in NumPy (no scikit-learn needed at run time).

Definitions follow scikit-learn's where it has one: :func:`roc_auc` is ``roc_auc_score`` (ties
share their average rank), :func:`average_precision` is ``average_precision_score`` (PR-AUC as
the step-wise sum of precision times recall gain over distinct thresholds), :func:`log_loss` is
``log_loss`` with probabilities clipped to ``[eps, 1 - eps]``. Calibration:
:func:`expected_calibration_error` (10 equal-width bins) and :func:`predicted_over_observed`
(expected over actual positives). :func:`paired_auc_difference` is a paired bootstrap interval of
an AUC difference. A metric that is not defined for the input (one class only, no rows) is NaN.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

ArrayLike = npt.ArrayLike
EPS = float(np.finfo(np.float64).eps)


def _pair(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.size}) and scores ({p.size}) differ in length")
    if y.size and not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1; drop NULL labels before computing metrics")
    return y, p


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    ends = np.r_[starts[1:], values.size]
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U); NaN unless both classes are present."""
    y, p = _pair(labels, scores)
    positives = float(y.sum())
    negatives = float(y.size - positives)
    if positives == 0 or negatives == 0:
        return float("nan")
    rank_sum = float(_average_ranks(p)[y == 1].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def average_precision(labels: ArrayLike, scores: ArrayLike) -> float:
    """Average precision (PR-AUC); NaN without positives."""
    y, p = _pair(labels, scores)
    if y.sum() == 0:
        return float("nan")
    order = np.argsort(-p, kind="mergesort")
    y, p = y[order], p[order]
    last_of_threshold = np.r_[np.flatnonzero(np.diff(p)), y.size - 1]
    true_pos = np.cumsum(y)[last_of_threshold]
    predicted_pos = last_of_threshold + 1.0
    precision = true_pos / predicted_pos
    recall = true_pos / true_pos[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def log_loss(labels: ArrayLike, scores: ArrayLike) -> float:
    """Mean binary cross-entropy of probabilities ``scores``; NaN without rows."""
    y, p = _pair(labels, scores)
    if y.size == 0:
        return float("nan")
    p = np.clip(p, EPS, 1.0 - EPS)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))


def binary_metrics(labels: ArrayLike, scores: ArrayLike) -> dict[str, float]:
    """``auc``, ``pr_auc``, ``logloss``, ``ece``, ``predicted_over_observed``, ``n`` and ``positives`` of one
    group."""
    y, p = _pair(labels, scores)
    return {"auc": roc_auc(y, p), "pr_auc": average_precision(y, p), "logloss": log_loss(y, p),
            "ece": expected_calibration_error(y, p), "predicted_over_observed": predicted_over_observed(y, p),
            "n": float(y.size), "positives": float(y.sum())}


def expected_calibration_error(labels: ArrayLike, scores: ArrayLike, bins: int = 10) -> float:
    """ECE: the row-weighted mean of ``|mean score - observed rate|`` over equal-width score bins; NaN without
    rows."""
    y, p = _pair(labels, scores)
    if y.size == 0:
        return float("nan")
    index = np.clip((p * bins).astype(int), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    gap = np.abs(np.bincount(index, weights=p, minlength=bins) - np.bincount(index, weights=y, minlength=bins))
    return float(gap.sum() / counts.sum())


def predicted_over_observed(labels: ArrayLike, scores: ArrayLike) -> float:
    """Sum of the predicted probabilities over the number of positives (1: the expected count is right);
    NaN without positives."""
    y, p = _pair(labels, scores)
    positives = float(y.sum())
    return float(p.sum() / positives) if positives > 0 else float("nan")


def paired_auc_difference(labels: ArrayLike, scores: ArrayLike, reference: ArrayLike, rounds: int = 200,
                          seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``AUC(scores) - AUC(reference)`` on the same rows: each round draws
    the rows with replacement once and scores both models on that draw (paired). NaN bounds when the AUC
    is undefined (one class only)."""
    y, p = _pair(labels, scores)
    _, q = _pair(labels, reference)
    if y.size == 0 or y.min() == y.max():
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(rounds):
        rows = rng.integers(0, y.size, size=y.size)
        yy = y[rows]
        if yy.min() == yy.max():
            continue
        diffs.append(roc_auc(yy, p[rows]) - roc_auc(yy, q[rows]))
    if not diffs:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(np.asarray(diffs), [tail, 100.0 - tail])
    return float(low), float(high)


def auc_difference(labels: ArrayLike, scores: ArrayLike, reference: ArrayLike, rounds: int = 200, seed: int = 0
                   ) -> tuple[float, float, float]:
    """``AUC(scores) - AUC(reference)`` on the same rows and its :func:`paired_auc_difference` interval:
    ``(difference, low, high)``, NaN where the AUC is undefined."""
    low, high = paired_auc_difference(labels, scores, reference, rounds, seed)
    return roc_auc(labels, scores) - roc_auc(labels, reference), low, high
