"""The registered models as MLflow pyfuncs: a pandas DataFrame in, three probabilities out.

Input (the model's signature): ``event_ids`` (int arrays, see :mod:`propensity.core.sequence`)
plus the aggregate feature columns the model was trained on, as doubles. Output: a DataFrame
with ``purchase``, ``click`` and ``churn`` in [0, 1], one row per input row, in order.

- :class:`PropensityPyfunc` (teacher and student). Artifacts: ``model`` (``model.json`` +
  ``model.pt``: architecture, weights, feature normalisation buffers; ``calibration.json``: the
  probability calibration fitted on validation, :mod:`~propensity.models.calibration`) and
  ``feature_stats`` (the normalisation statistics as JSON, for people).
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

from propensity.core.schema import EVENT_TYPES, TASKS
from propensity.core.sequence import SEQUENCE_COLUMN, TARGET_PLATFORM, TARGET_TYPE
from propensity.models.calibration import Calibration
from propensity.models.network import PropensityModel, load_model
from propensity.models.registry import RegisteredModelVersion
from propensity.models.sequence import FlatSequences

#: Rows per forward pass: small enough that a layer's activations stay in a core's cache (about a
#: third faster than 512 rows on CPU).
PREDICT_BATCH_ROWS = 128
WEIGHTS_FILE = "fusion_weights.json"


class PropensityPyfunc(PythonModel):
    """Scores ``event_ids`` + features with a :class:`~propensity.models.network.PropensityModel`."""

    def __init__(self) -> None:
        self.model: PropensityModel | None = None
        self.calibration = Calibration()

    def load_context(self, context: Any) -> None:
        """Load the weights once (MLflow calls this when the model is loaded).

        Inside a Spark task (``mlflow.pyfunc.spark_udf``) torch uses one thread: Spark already runs
        one task per core, and more threads per task made scoring several times slower.
        """
        if _inside_spark_task():
            torch.set_num_threads(1)
        self.load(Path(context.artifacts["model"]))

    def load(self, model_dir: Path) -> PropensityPyfunc:
        """Load from the model folder directly (tests, benchmarks); returns self."""
        self.model = load_model(model_dir)
        self.calibration = Calibration.load(model_dir)
        return self

    @property
    def feature_columns(self) -> list[str]:
        """Feature columns the model needs, in order (empty for a sequence-only model)."""
        if self.model is None:
            raise RuntimeError("the model is not loaded yet")
        return self.model.feature_columns

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
                ) -> pd.DataFrame:
        """Probabilities ``purchase``, ``click``, ``churn`` for each row of ``model_input``.

        :raises ValueError: a needed column is missing.
        """
        missing = [c for c in (SEQUENCE_COLUMN, *self.feature_columns) if c not in model_input.columns]
        if missing:
            raise ValueError(f"input lacks column {missing[0]!r} ({len(missing)} missing); the model needs"
                             f" {SEQUENCE_COLUMN} and {', '.join(self.feature_columns) or 'no features'}")
        probs = self.score(FlatSequences.from_rows(list(model_input[SEQUENCE_COLUMN])), model_input)
        return pd.DataFrame(probs, columns=list(TASKS), index=model_input.index)

    def score(self, sequences: FlatSequences, features: pd.DataFrame, batch_rows: int = PREDICT_BATCH_ROWS
              ) -> np.ndarray:
        """``(rows, 3)`` calibrated probabilities (task order :data:`TASKS`) of ``sequences`` and the
        ``feature_columns`` of ``features`` (raw values, one row per sequence), ``batch_rows`` rows per
        forward pass.

        The forward passes take the rows shortest sequence first, so that each pass is cut to the
        longest of its rows (a row's probabilities do not depend on the rows it is batched with).
        """
        if self.model is None:
            raise RuntimeError("the model is not loaded yet")
        x = (features[self.feature_columns].to_numpy(dtype=np.float32, na_value=np.nan) if self.feature_columns
             else np.zeros((len(sequences), 0), dtype=np.float32))  # a sequence-only model
        out = np.zeros((len(sequences), len(TASKS)), dtype=np.float64)
        order = np.argsort(sequences.lengths, kind="stable")
        with torch.inference_mode():
            for start in range(0, len(sequences), batch_rows):
                rows = order[start:start + batch_rows]
                ids = sequences.take(rows).fit(self.model.max_positions)
                logits = self.model(torch.from_numpy(ids), torch.from_numpy(x[rows]))
                out[rows] = self.calibration.apply(logits.float().numpy(), ids[:, TARGET_PLATFORM])
        return out


_EXAMPLE_EVENTS = ("view", "cart", "purchase")


def input_example(rows: pd.DataFrame, feature_columns: list[str]) -> pd.DataFrame:
    """A made-up input of the model's types, one row per row of ``rows``: the signature and MLflow's example.

    Nobody's behaviour goes into the model's artifacts: each row keeps only its target platform's
    id (a hash of the platform's name) and gets ``i + 1`` invented events (a view, a cart, a purchase,
    ...) and zero features. ``event_ids`` are int64 arrays, so the signature says ``Array(long)``: a
    serving endpoint's JSON integers are int64 and must pass it (Spark's ``ARRAY<INT>`` widens safely),
    features float64.
    """
    sequences = []
    for i, ids in enumerate(rows[SEQUENCE_COLUMN]):
        platform = int(ids[TARGET_PLATFORM])
        target = [TARGET_TYPE, platform, 0, 0, 0, 0, 1, 0]
        kinds = [EVENT_TYPES.index(kind) + 1 for kind in _EXAMPLE_EVENTS]
        events = [[kinds[j % len(kinds)], platform, 1 + j, 1, 3, 1 + j, 2, 3] for j in range(i + 1)]
        sequences.append(np.asarray([v for position in [target, *events] for v in position], dtype=np.int64))
    example = pd.DataFrame({SEQUENCE_COLUMN: sequences})
    for column in feature_columns:
        example[column] = np.zeros(len(example), dtype="float64")
    return example


def pip_requirements() -> list[str]:
    """The model's runtime requirements, pinned to the versions installed here."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("torch", "transformers", "tokenizers", "mlflow", "pandas", "numpy",
                                           "pyarrow")]


def package_code_paths() -> list[str]:
    """The ``propensity`` package folder, logged as the model's ``code_paths`` so the model loads without it installed.

    ``python_model.pkl`` refers to :class:`PropensityPyfunc` by module; with the package inside the
    model, an environment built only from the model's requirements (``mlflow models predict
    --env-manager virtualenv``, a serving endpoint, ``spark_udf(env_manager=...)``) can load it.
    Imported from a zip (spark-submit ``--py-files`` with the wheel), the package is copied out first.
    """
    package = Path(__file__).resolve().parents[1]
    if package.is_dir():
        return [str(package)]
    import tempfile
    import zipfile

    archive = getattr(globals().get("__loader__"), "archive", None)
    if archive is None:
        raise RuntimeError(f"cannot find the files of the propensity package imported from {package}")
    out = Path(tempfile.mkdtemp(prefix="propensity-code-"))
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(out, [n for n in zf.namelist() if n.startswith("propensity/")])
    return [str(out / "propensity")]


def log_pyfunc_model(model_dir: Path, stats_path: Path, example: pd.DataFrame, registered_model_name: str
                     ) -> RegisteredModelVersion:
    """Log a teacher or student as a pyfunc in the active MLflow run and register a new version of it.

    :param example: a few input rows (see :func:`input_example`), used for the signature and as example.
    """
    output = PropensityPyfunc().load(model_dir).predict(None, example)
    artifacts = {"model": str(model_dir), "feature_stats": str(stats_path)}
    return _log_and_register(PropensityPyfunc(), artifacts, example, output, registered_model_name)


def _log_and_register(python_model: PythonModel, artifacts: dict[str, str], example: pd.DataFrame,
                      output: pd.DataFrame, registered_model_name: str) -> RegisteredModelVersion:
    info = mlflow.pyfunc.log_model(
        name="model", python_model=python_model, signature=infer_signature(example, output), input_example=example,
        artifacts=artifacts, registered_model_name=registered_model_name, pip_requirements=pip_requirements(),
        code_paths=package_code_paths())
    run = mlflow.active_run()
    run_id = run.info.run_id if run is not None else str(info.run_id)
    return RegisteredModelVersion(name=registered_model_name, version=str(info.registered_model_version),
                                  run_id=run_id)


def fuse(teacher: pd.DataFrame, student: pd.DataFrame, weights: dict[str, float]) -> pd.DataFrame:
    """``w * teacher + (1 - w) * student`` per task column."""
    mixed = mix(teacher[list(TASKS)].to_numpy(), student[list(TASKS)].to_numpy(), weights)
    return pd.DataFrame(mixed, columns=list(TASKS), index=teacher.index)


def mix(teacher: np.ndarray, student: np.ndarray, weights: dict[str, float]) -> np.ndarray:
    """``w * teacher + (1 - w) * student`` of ``(rows, 3)`` probabilities in :data:`TASKS` order."""
    weight = np.array([weights[t] for t in TASKS])
    return weight * teacher + (1.0 - weight) * student


class FusionPyfunc(PythonModel):
    """Scores with both members and mixes their probabilities with the per-task weights."""

    def __init__(self) -> None:
        self.teacher = PropensityPyfunc()
        self.student = PropensityPyfunc()
        self.weights: dict[str, float] = {}

    def load_context(self, context: Any) -> None:
        """Load both members (once) and the weights."""
        art = context.artifacts
        self.teacher.load_context(SimpleNamespace(artifacts={"model": art["teacher_model"]}))
        self.student.load_context(SimpleNamespace(artifacts={"model": art["student_model"]}))
        self.weights = json.loads(Path(art["weights"]).read_text())

    def load(self, teacher: Path, student: Path, weights: dict[str, float]) -> FusionPyfunc:
        """Load from the members' local model folders (before logging)."""
        self.teacher.load(teacher)
        self.student.load(student)
        self.weights = dict(weights)
        return self

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
                ) -> pd.DataFrame:
        """``purchase``, ``click`` and ``churn`` probabilities, fused."""
        return fuse(self.teacher.predict(context, model_input), self.student.predict(context, model_input),
                    self.weights)

    def score(self, sequences: FlatSequences, features: pd.DataFrame, batch_rows: int = PREDICT_BATCH_ROWS
              ) -> np.ndarray:
        """:meth:`PropensityPyfunc.score` of both members, fused."""
        return mix(self.teacher.score(sequences, features, batch_rows),
                   self.student.score(sequences, features, batch_rows), self.weights)


def log_fusion_model(teacher: Path, student: Path, weights: dict[str, float], example: pd.DataFrame,
                     registered_model_name: str, work_dir: Path) -> RegisteredModelVersion:
    """Log the fusion as a pyfunc in the active MLflow run and register a new version.

    :param teacher: the teacher's local model folder; ``student`` likewise.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    weights_path = work_dir / WEIGHTS_FILE
    weights_path.write_text(json.dumps(weights, indent=1))
    output = FusionPyfunc().load(teacher, student, weights).predict(None, example)
    artifacts = {"teacher_model": str(teacher), "student_model": str(student), "weights": str(weights_path)}
    version = _log_and_register(FusionPyfunc(), artifacts, example, output, registered_model_name)
    mlflow.log_params({f"fusion.weight_{t}": w for t, w in weights.items()})
    return version


def _inside_spark_task() -> bool:
    """Whether this process runs a Spark task (False in a serving environment without pyspark)."""
    try:
        from pyspark import TaskContext
    except ImportError:
        return False
    return TaskContext.get() is not None
