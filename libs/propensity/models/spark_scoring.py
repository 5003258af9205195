"""The one way a registered model scores a Spark DataFrame: ``mapInPandas`` with the model loaded once per worker.

Used by the scoring job, by evaluation, by distillation (the teacher's logits) and by the
benchmark. The model is resolved and downloaded on the driver
(:func:`~propensity.models.registry.resolve_model`); each Python worker loads it **once** (a
per-process cache), casts each Arrow batch's inputs once, calls the model on
``scoring.batch_size`` rows at a time and sends one frame back per Arrow batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import DoubleType, StructField, StructType

from propensity.core.config import Config
from propensity.core.errors import ModelNotFoundError
from propensity.core.schema import FEATURE_COLUMNS, SCORE_COLUMNS, TASKS
from propensity.models.registry import ResolvedModel

_LOADED: dict[str, Any] = {}


def _load_once(path: str, threads: int) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The predict function of the pyfunc model at ``path``, loaded at most once per Python worker process,
    with ``threads`` torch threads.

    The thread count is set after loading: a model's ``load_context`` may pick its own inside a Spark task.
    """
    if path not in _LOADED:
        import mlflow

        _LOADED[path] = _predictor(mlflow.pyfunc.load_model(path))
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return _LOADED[path]


def _predictor(loaded: Any) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Our own models are called directly; any other pyfunc through MLflow's ``predict``.

    MLflow's ``predict`` first checks and converts every row against the signature (each
    ``event_ids`` array copied): about a quarter of the student's scoring time. The scoring job's
    inputs already have the model's columns and types (checked in :func:`score_frame`), and our
    models read ``event_ids`` arrays of any integer type.
    """
    from mlflow.exceptions import MlflowException

    from propensity.models.pyfunc import FusionPyfunc, PropensityPyfunc

    try:
        python_model = loaded.unwrap_python_model()
    except MlflowException:  # not a PythonModel flavor
        return loaded.predict
    if isinstance(python_model, PropensityPyfunc | FusionPyfunc):
        return lambda frame: python_model.predict(None, frame)
    return loaded.predict


def make_scorer(model: ResolvedModel, keep: Sequence[str], threads: int, batch_size: int
                ) -> Callable[[Iterable[pd.DataFrame]], Iterable[pd.DataFrame]]:
    """The ``mapInPandas`` function: Arrow batches in, ``keep`` columns plus one score column per task out."""
    path, columns, kept = model.local_path, list(model.input_columns), list(keep)
    # numbers reach the model as doubles (its signature); the sequence column passes as it is
    as_double = {c: "float64" for c in columns if c in FEATURE_COLUMNS}

    def score_batches(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        predict = _load_once(path, threads)
        for batch in batches:
            inputs = batch[columns].astype(as_double)
            scores = np.empty((len(batch), len(TASKS)), dtype="float64")
            for start in range(0, len(batch), batch_size):
                predicted = predict(inputs.iloc[start:start + batch_size])
                for i, task in enumerate(TASKS):
                    scores[start:start + batch_size, i] = pd.to_numeric(predicted[task], errors="coerce").to_numpy(
                        dtype="float64")
            out = batch[kept].reset_index(drop=True)
            for i, task in enumerate(TASKS):
                out[SCORE_COLUMNS[task]] = scores[:, i]
            yield out

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
    return inputs.mapInPandas(scorer, schema)
