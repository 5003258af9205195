"""Teacher + student fusion: ``w * teacher + (1 - w) * student`` per task, as its own pyfunc model.

The weight of each task is chosen on the validation rows (:func:`choose_weights`, a grid
over [0, 1], so the fusion is never worse on validation than either model alone). The
model carries both members' weights and tokenizers as artifacts and is registered as
``propensity_fusion``, so scoring can use it like any other model.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from mlflow.pyfunc.model import PythonModel

from propensity.evaluation.metrics import roc_auc
from propensity.training.mlflow_utils import RegisteredModelVersion
from propensity.training.model import TASKS
from propensity.training.pyfunc import PropensityPyfunc, pip_requirements

WEIGHTS_FILE = "fusion_weights.json"


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


def fuse(teacher: pd.DataFrame, student: pd.DataFrame, weights: dict[str, float]) -> pd.DataFrame:
    """``w * teacher + (1 - w) * student`` per task column."""
    return pd.DataFrame({t: weights[t] * teacher[t].to_numpy() + (1.0 - weights[t]) * student[t].to_numpy()
                         for t in TASKS}, index=teacher.index)


class FusionPyfunc(PythonModel):
    """Scores with both members and mixes their probabilities with the per-task weights."""

    def __init__(self) -> None:
        self.teacher = PropensityPyfunc()
        self.student = PropensityPyfunc()
        self.weights: dict[str, float] = {}

    def load_context(self, context: Any) -> None:
        """Load both members (once) and the weights."""
        art = context.artifacts
        self.teacher.load_context(SimpleNamespace(artifacts={"model": art["teacher_model"],
                                                             "tokenizer": art["teacher_tokenizer"]}))
        self.student.load_context(SimpleNamespace(artifacts={"model": art["student_model"],
                                                             "tokenizer": art["student_tokenizer"]}))
        self.weights = json.loads(Path(art["weights"]).read_text())

    def load(self, teacher: tuple[Path, Path], student: tuple[Path, Path], weights: dict[str, float]
             ) -> FusionPyfunc:
        """Load from local ``(model folder, tokenizer folder)`` pairs (before logging)."""
        self.teacher.load(*teacher)
        self.student.load(*student)
        self.weights = dict(weights)
        return self

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
                ) -> pd.DataFrame:
        """``purchase``, ``click`` and ``churn`` probabilities, fused."""
        return fuse(self.teacher.predict(context, model_input), self.student.predict(context, model_input),
                    self.weights)


def log_fusion_model(teacher: tuple[Path, Path], student: tuple[Path, Path], weights: dict[str, float],
                     example: pd.DataFrame, registered_model_name: str, work_dir: Path) -> RegisteredModelVersion:
    """Log the fusion as a pyfunc in the active MLflow run and register a new version.

    :param teacher: the teacher's local ``(model folder, tokenizer folder)``; ``student`` likewise.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    weights_path = work_dir / WEIGHTS_FILE
    weights_path.write_text(json.dumps(weights, indent=1))
    output = FusionPyfunc().load(teacher, student, weights).predict(None, example)
    info = mlflow.pyfunc.log_model(
        name="model", python_model=FusionPyfunc(), signature=infer_signature(example, output), input_example=example,
        artifacts={"teacher_model": str(teacher[0]), "teacher_tokenizer": str(teacher[1]),
                   "student_model": str(student[0]), "student_tokenizer": str(student[1]),
                   "weights": str(weights_path)},
        registered_model_name=registered_model_name, pip_requirements=pip_requirements())
    mlflow.log_params({f"fusion.weight_{t}": w for t, w in weights.items()})
    run = mlflow.active_run()
    run_id = run.info.run_id if run is not None else str(info.run_id)
    return RegisteredModelVersion(name=registered_model_name, version=str(info.registered_model_version),
                                  run_id=run_id)
