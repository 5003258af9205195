"""Calibrated probabilities: Platt scaling per task with one intercept per platform, fitted on validation.

The inventory system sums purchase probabilities into expected demand, so they must mean what
they say, not only rank well. After training, each task's logit ``z`` is mapped to
``sigmoid(a * z + b_platform)``: a shared slope ``a`` and an intercept per target platform (the
base rates differ by platform), fitted by maximum likelihood on the validation rows
(L-BFGS, a little L2 on the intercepts' spread so a small platform stays near the shared
intercept). Monotone in ``z`` for every platform, so AUC within a platform is unchanged.
The map is stored next to the weights (``calibration.json``) and applied inside the model,
so scoring needs nothing extra. Platforms are keyed by their ``event_ids`` platform id (the
target position), so the model's input stays ``event_ids`` + features.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from propensity.core.schema import TASKS

CALIBRATION_FILE = "calibration.json"
#: L2 penalty (per row) pulling each platform's intercept towards the shared one.
SPREAD_PENALTY = 1e-3


@dataclass
class TaskCalibration:
    """``sigmoid(slope * logit + intercepts.get(platform, intercept))`` for one task."""

    slope: float = 1.0
    intercept: float = 0.0
    intercepts: dict[str, float] = field(default_factory=dict)

    def apply(self, logits: np.ndarray, platforms: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of ``logits`` for rows of target platform ids ``platforms``."""
        found, where = np.unique(np.asarray(platforms), return_inverse=True)
        offsets = np.array([self.intercepts.get(str(int(p)), self.intercept) for p in found], dtype=np.float64)[where]
        return 1.0 / (1.0 + np.exp(-(self.slope * logits.astype(np.float64) + offsets)))


@dataclass
class Calibration:
    """One :class:`TaskCalibration` per task (a missing task is left as it is: slope 1, intercept 0)."""

    tasks: dict[str, TaskCalibration] = field(default_factory=dict)

    def apply(self, logits: np.ndarray, platforms: np.ndarray) -> np.ndarray:
        """``(n, len(TASKS))`` probabilities from logits ``(n, len(TASKS))``."""
        return np.stack([self.tasks.get(t, TaskCalibration()).apply(logits[:, i], platforms)
                         for i, t in enumerate(TASKS)], axis=1)

    def save(self, model_dir: Path) -> Path:
        """Write ``calibration.json`` into ``model_dir``."""
        path = Path(model_dir) / CALIBRATION_FILE
        path.write_text(json.dumps({t: asdict(c) for t, c in self.tasks.items()}, indent=1))
        return path

    @classmethod
    def load(cls, model_dir: Path) -> Calibration:
        """The calibration saved in ``model_dir``; none (identity) when there is no file."""
        path = Path(model_dir) / CALIBRATION_FILE
        if not path.is_file():
            return cls()
        return cls({t: TaskCalibration(**c) for t, c in json.loads(path.read_text()).items()})


def fit_task(logits: np.ndarray, labels: np.ndarray, platforms: np.ndarray, steps: int = 100) -> TaskCalibration:
    """Platt scaling with a shared slope and an intercept per platform, by L-BFGS on the log loss."""
    keys = sorted({str(int(p)) for p in platforms})
    index = torch.tensor([keys.index(str(int(p))) for p in platforms])
    z = torch.tensor(logits, dtype=torch.float64)
    y = torch.tensor(labels, dtype=torch.float64)
    slope = torch.ones((), dtype=torch.float64, requires_grad=True)
    shared = torch.zeros((), dtype=torch.float64, requires_grad=True)
    offsets = torch.zeros(len(keys), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([slope, shared, offsets], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logit = slope * z + shared + offsets[index]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, y) + SPREAD_PENALTY * (offsets @ offsets)
        loss.backward()
        return loss

    optimizer.step(closure)
    base = float(shared.detach())
    return TaskCalibration(float(slope.detach()), base,
                           {k: base + float(o) for k, o in zip(keys, offsets.detach(), strict=True)})


def fit_calibration(logits: np.ndarray, labels: np.ndarray, label_mask: np.ndarray, platforms: np.ndarray
                    ) -> Calibration:
    """Per task, :func:`fit_task` on the rows whose label is known (a task with one class only is left out)."""
    tasks = {}
    for i, task in enumerate(TASKS):
        known = label_mask[:, i] > 0
        if known.sum() < 2 or np.unique(labels[known, i]).size < 2:
            continue
        tasks[task] = fit_task(logits[known, i], labels[known, i], platforms[known])
    return Calibration(tasks)
