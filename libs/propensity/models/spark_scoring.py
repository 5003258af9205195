"""The one way a registered model scores a Spark DataFrame: ``mapInArrow`` with the model loaded once per worker.

Used by the scoring job, by evaluation, by distillation (the teacher's logits) and by the
benchmark. The model is resolved and downloaded on the driver
(:func:`~propensity.models.registry.resolve_model`); each Python worker loads it **once** (a
per-process cache). Our own models read each Arrow batch as it is: the ``event_ids`` list
column's flat values and offsets go to the model without a pandas object per row
(:class:`~propensity.models.sequence.FlatSequences`), ``scoring.batch_size`` rows per forward
pass; any other pyfunc gets a pandas frame through MLflow's ``predict``. One Arrow batch goes back
per batch read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import DoubleType, StructField, StructType

from propensity.core.config import Config
from propensity.core.errors import ModelNotFoundError
from propensity.core.schema import FEATURE_COLUMNS, SCORE_COLUMNS, TASKS
from propensity.core.sequence import SEQUENCE_COLUMN
from propensity.models.registry import ResolvedModel
from propensity.models.sequence import FlatSequences

#: ``(Arrow batch, rows per model call) -> (rows, 3)`` probabilities in :data:`TASKS` order.
BatchScorer = Callable[[pa.RecordBatch, int], np.ndarray]

_LOADED: dict[tuple[str, tuple[str, ...]], BatchScorer] = {}


def _load_once(path: str, columns: Sequence[str], threads: int) -> BatchScorer:
    """The scorer of the pyfunc model at ``path`` (inputs ``columns``), loaded at most once per Python worker
    process, with ``threads`` torch threads.

    The thread count is set after loading: a model's ``load_context`` may pick its own inside a Spark task.
    """
    key = (path, tuple(columns))
    if key not in _LOADED:
        import mlflow

        _LOADED[key] = _batch_scorer(mlflow.pyfunc.load_model(path), columns)
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return _LOADED[key]


def _batch_scorer(loaded: Any, columns: Sequence[str]) -> BatchScorer:
    """Our own models score the Arrow batch directly; any other pyfunc through MLflow's ``predict``.

    MLflow's ``predict`` first checks and converts every row against the signature (each
    ``event_ids`` array copied): about a quarter of the student's scoring time, and pandas makes one
    object per row and array. The scoring job's inputs already have the model's columns and types
    (checked in :func:`score_frame`).
    """
    from mlflow.exceptions import MlflowException

    from propensity.models.pyfunc import FusionPyfunc, PropensityPyfunc

    try:
        python_model = loaded.unwrap_python_model()
    except MlflowException:  # not a PythonModel flavor
        python_model = None
    features = [c for c in columns if c != SEQUENCE_COLUMN]
    if isinstance(python_model, PropensityPyfunc | FusionPyfunc):
        model = python_model

        def ours(batch: pa.RecordBatch, rows: int) -> np.ndarray:
            return model.score(flat_sequences(_column(batch, SEQUENCE_COLUMN)), arrow_frame(batch, features), rows)
        return ours

    # numbers reach other models as doubles (our signature); the sequence column passes as it is
    as_double = {c: "float64" for c in features if c in FEATURE_COLUMNS}

    def through_mlflow(batch: pa.RecordBatch, rows: int) -> np.ndarray:
        inputs = arrow_frame(batch, columns).astype(as_double)
        scores = np.empty((len(inputs), len(TASKS)), dtype="float64")
        for start in range(0, len(inputs), rows):
            predicted = loaded.predict(inputs.iloc[start:start + rows])
            for i, task in enumerate(TASKS):
                scores[start:start + rows, i] = pd.to_numeric(predicted[task], errors="coerce").to_numpy(
                    dtype="float64")
        return scores
    return through_mlflow


def _column(batch: pa.RecordBatch, name: str) -> pa.Array:
    return batch.column(batch.schema.get_field_index(name))


def arrow_frame(batch: pa.RecordBatch, columns: Sequence[str]) -> pd.DataFrame:
    """``columns`` of ``batch`` as pandas (integers with NULLs become floats with NaN)."""
    return pa.Table.from_arrays([_column(batch, c) for c in columns], names=list(columns)).to_pandas()


def flat_sequences(column: pa.Array) -> FlatSequences:
    """An Arrow list column of ``event_ids`` as :class:`FlatSequences`, sharing its buffers (a NULL row is
    empty, a NULL id is 0)."""
    offsets = column.offsets.to_numpy()
    lengths = np.diff(offsets)
    if column.null_count:
        lengths = np.where(column.is_null().to_numpy(zero_copy_only=False), 0, lengths)
    values = column.values.fill_null(0).to_numpy()
    return FlatSequences(values, offsets[:-1], lengths)


def make_scorer(model: ResolvedModel, keep: Sequence[str], threads: int, batch_size: int
                ) -> Callable[[Iterable[pa.RecordBatch]], Iterable[pa.RecordBatch]]:
    """The ``mapInArrow`` function: Arrow batches in, ``keep`` columns plus one score column per task out."""
    path, columns, kept = model.local_path, list(model.input_columns), list(keep)
    names = [*kept, *(SCORE_COLUMNS[t] for t in TASKS)]

    def score_batches(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        score = _load_once(path, columns, threads)
        for batch in batches:
            scores = score(batch, batch_size)
            yield pa.RecordBatch.from_arrays(
                [_column(batch, c) for c in kept] + [pa.array(scores[:, i]) for i in range(len(TASKS))], names=names)

    return score_batches


def worker_threads(spark: SparkSession, cfg: Config) -> int:
    """torch threads per Python worker: configured, or cores shared by the concurrent tasks."""
    if cfg.scoring.torch_threads:
        return cfg.scoring.torch_threads
    cores = os.cpu_count() or 1
    return max(1, cores // max(1, spark.sparkContext.defaultParallelism))


def score_frame(spark: SparkSession, cfg: Config, rows: DataFrame, model: ResolvedModel,
                keep: Sequence[str] = ("user_id", "platform")) -> DataFrame:
    """``rows``' ``keep`` columns plus ``purchase_score``, ``click_score`` and ``churn_score`` from ``model``.

    :raises ModelNotFoundError: ``rows`` lacks an input column of the model (it was trained on other features).
    """
    missing = [c for c in model.input_columns if c not in rows.columns]
    if missing:
        raise ModelNotFoundError(f"model {model.name} v{model.version} needs column(s) {', '.join(missing)} that the"
                                 " features do not have; score with a model trained on the current features")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.scoring.arrow_batch_size))
    kept = [c for c in keep if c not in model.input_columns]
    inputs = rows.select(*kept, *model.input_columns)
    schema = StructType([rows.schema[c] for c in keep] + [StructField(SCORE_COLUMNS[t], DoubleType()) for t in TASKS])
    scorer = make_scorer(model, keep, worker_threads(spark, cfg), cfg.scoring.batch_size)
    return inputs.mapInArrow(scorer, schema)
