"""The registered models as MLflow pyfuncs: a pandas DataFrame in, three probabilities out.

Input (the model's signature): ``behavior_text`` plus the aggregate feature columns the
model was trained on, as doubles. Output: a DataFrame with ``purchase``, ``click`` and
``churn`` in [0, 1], one row per input row, in order.

- :class:`PropensityPyfunc` (teacher and student). Artifacts: ``model`` (``model.json`` +
  ``model.pt``: architecture, weights, feature normalisation buffers), ``tokenizer`` (the
  WordPiece folder) and ``feature_stats`` (the normalisation statistics as JSON, for people).
- :class:`FusionPyfunc`: ``w * teacher + (1 - w) * student`` per task, carrying both members.

The classes live in this package, so the environment loading a model needs ``propensity``
installed (the wheel on Databricks clusters).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import infer_signature
from mlflow.pyfunc.model import PythonModel

from propensity.core.schema import TASKS, TEXT_COLUMN
from propensity.models.network import PropensityModel, load_model, read_model_meta
from propensity.models.registry import RegisteredModelVersion
from propensity.models.tokenizer import TailEncoder

PREDICT_BATCH_ROWS = 256
WEIGHTS_FILE = "fusion_weights.json"


class PropensityPyfunc(PythonModel):
    """Scores ``behavior_text`` + features with a :class:`~propensity.models.network.PropensityModel`."""

    def __init__(self) -> None:
        self.model: PropensityModel | None = None
        self.tokenizer: Any = None
        self.max_length = 0
        self.encoder: TailEncoder | None = None

    def load_context(self, context: Any) -> None:
        """Load weights and tokenizer once (MLflow calls this when the model is loaded).

        Inside a Spark task (``mlflow.pyfunc.spark_udf``) torch uses one thread: Spark already runs
        one task per core, and more threads per task made scoring several times slower.
        """
        from pyspark import TaskContext

        if TaskContext.get() is not None:
            torch.set_num_threads(1)
        self.load(Path(context.artifacts["model"]), Path(context.artifacts["tokenizer"]))

    def load(self, model_dir: Path, tokenizer_dir: Path) -> PropensityPyfunc:
        """Load from folders directly (tests, benchmarks); returns self."""
        from propensity.models.tokenizer import load_tokenizer

        self.model = load_model(model_dir)
        self.tokenizer = load_tokenizer(tokenizer_dir)
        self.max_length = int(read_model_meta(model_dir)["max_length"])
        self.encoder = TailEncoder(self.tokenizer, self.max_length)
        return self

    @property
    def feature_columns(self) -> list[str]:
        """Feature columns the model needs, in order."""
        if self.model is None:
            raise RuntimeError("the model is not loaded yet")
        return self.model.feature_columns

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
                ) -> pd.DataFrame:
        """Probabilities ``purchase``, ``click``, ``churn`` for each row of ``model_input``.

        :raises ValueError: a needed column is missing.
        """
        missing = [c for c in (TEXT_COLUMN, *self.feature_columns) if c not in model_input.columns]
        if missing:
            raise ValueError(f"input lacks column {missing[0]!r} ({len(missing)} missing); the model needs"
                             f" {TEXT_COLUMN} and {', '.join(self.feature_columns)}")
        texts = [str(t) for t in model_input[TEXT_COLUMN].fillna("")]
        features = model_input[self.feature_columns].to_numpy(dtype=np.float32, na_value=np.nan)
        return pd.DataFrame(self.probabilities(texts, features), columns=list(TASKS), index=model_input.index)

    def probabilities(self, texts: list[str], features: np.ndarray) -> np.ndarray:
        """``(len(texts), 3)`` probabilities from texts and raw float32 features (in ``feature_columns`` order)."""
        if self.model is None or self.encoder is None:
            raise RuntimeError("the model is not loaded yet")
        out = np.zeros((len(texts), len(TASKS)), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, len(texts), PREDICT_BATCH_ROWS):
                stop = start + PREDICT_BATCH_ROWS
                ids, mask = self.encoder(texts[start:stop])
                logits = self.model(torch.from_numpy(ids), torch.from_numpy(mask),
                                    torch.from_numpy(features[start:stop]))
                out[start:stop] = torch.sigmoid(logits.float()).numpy()
        return out


def input_example(rows: pd.DataFrame, feature_columns: list[str]) -> pd.DataFrame:
    """The model's input columns of ``rows`` with features as float64 (the signature's types)."""
    example = rows[[TEXT_COLUMN, *feature_columns]].copy()
    example[feature_columns] = example[feature_columns].astype("float64")
    example[TEXT_COLUMN] = example[TEXT_COLUMN].astype(str)
    return example.reset_index(drop=True)


def pip_requirements() -> list[str]:
    """The model's runtime requirements, pinned to the versions installed here."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("torch", "transformers", "tokenizers", "mlflow", "pandas", "numpy",
                                           "pyarrow")]


def log_pyfunc_model(model_dir: Path, tokenizer_dir: Path, stats_path: Path, example: pd.DataFrame,
                     registered_model_name: str) -> RegisteredModelVersion:
    """Log a teacher or student as a pyfunc in the active MLflow run and register a new version of it.

    :param example: a few input rows (see :func:`input_example`), used for the signature and as example.
    """
    output = PropensityPyfunc().load(model_dir, tokenizer_dir).predict(None, example)
    artifacts = {"model": str(model_dir), "tokenizer": str(tokenizer_dir), "feature_stats": str(stats_path)}
    return _log_and_register(PropensityPyfunc(), artifacts, example, output, registered_model_name)


def _log_and_register(python_model: PythonModel, artifacts: dict[str, str], example: pd.DataFrame,
                      output: pd.DataFrame, registered_model_name: str) -> RegisteredModelVersion:
    info = mlflow.pyfunc.log_model(
        name="model", python_model=python_model, signature=infer_signature(example, output), input_example=example,
        artifacts=artifacts, registered_model_name=registered_model_name, pip_requirements=pip_requirements())
    run = mlflow.active_run()
    run_id = run.info.run_id if run is not None else str(info.run_id)
    return RegisteredModelVersion(name=registered_model_name, version=str(info.registered_model_version),
                                  run_id=run_id)


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
    artifacts = {"teacher_model": str(teacher[0]), "teacher_tokenizer": str(teacher[1]),
                 "student_model": str(student[0]), "student_tokenizer": str(student[1]), "weights": str(weights_path)}
    version = _log_and_register(FusionPyfunc(), artifacts, example, output, registered_model_name)
    mlflow.log_params({f"fusion.weight_{t}": w for t, w in weights.items()})
    return version
