"""Spark MLlib baselines on the aggregate features, tuned on validation: ``baseline_lr`` and ``baseline_gbt``.

Per task, each candidate of a small grid is fitted on the labelled rows of the train snapshots
and scored on the validation rows; the one with the best validation AUC then scores the test
rows too (the test snapshot never chooses anything):

- ``baseline_lr``: logistic regression on ``sign(x) * log1p(|x|)`` of every feature, standardised
  by MLlib, L2 strength (``regParam``) from ``evaluation.lr_reg_params``;
- ``baseline_gbt``: gradient-boosted trees on the raw features, (trees, depth) from
  ``evaluation.gbt_grid``.

Missing feature values count as 0. They are what a model has to beat to become champion.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from pyspark.ml.classification import GBTClassifier, LogisticRegression
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from propensity.core.config import EvaluationConfig
from propensity.core.schema import LABEL_COLUMNS, SCORE_COLUMNS, TASKS
from propensity.models.metrics import roc_auc
from propensity.stages.evaluation.segments import COLD_START

BASELINE_LR = "baseline_lr"
BASELINE_GBT = "baseline_gbt"
BASELINES = (BASELINE_LR, BASELINE_GBT)
KEEP = ["split", "snapshot_date", "user_id", "platform", COLD_START, *LABEL_COLUMNS]


@dataclass(frozen=True)
class BaselineScores:
    """Validation and test rows (``KEEP`` columns plus ``<task>_score``) of one baseline, and per task the
    parameters chosen on validation with their validation AUC."""

    name: str
    scored: pd.DataFrame
    chosen: dict[str, dict[str, Any]] = field(default_factory=dict)


def candidates(name: str, settings: EvaluationConfig) -> list[dict[str, Any]]:
    """The grid of one baseline: ``[{param: value}, ...]``.

    :raises ValueError: an unknown baseline name.
    """
    if name == BASELINE_LR:
        return [{"regParam": r} for r in settings.lr_reg_params]
    if name == BASELINE_GBT:
        return [{"maxIter": trees, "maxDepth": depth} for trees, depth in settings.gbt_grid]
    raise ValueError(f"unknown baseline {name!r}; use one of {', '.join(BASELINES)}")


def _vectors(df: DataFrame, feature_columns: Sequence[str], log_scale: bool) -> DataFrame:
    def value(c: str) -> F.Column:
        x = F.coalesce(F.col(c).cast("double"), F.lit(0.0))
        x = F.when(F.isnan(x), 0.0).otherwise(x)
        return F.signum(x) * F.log1p(F.abs(x)) if log_scale else x

    prepared = df.select(*[c for c in df.columns if c not in feature_columns],
                         *[value(c).alias(c) for c in feature_columns])
    return VectorAssembler(inputCols=list(feature_columns), outputCol="features_vec").transform(prepared)


def _estimator(name: str, params: dict[str, Any], label: str, seed: int) -> LogisticRegression | GBTClassifier:
    if name == BASELINE_LR:
        return LogisticRegression(featuresCol="features_vec", labelCol=label, maxIter=100, standardization=True,
                                  probabilityCol="p", **params)
    gbt = GBTClassifier(featuresCol="features_vec", labelCol=label, seed=seed, **params)
    # the stubs omit probabilityCol from GBTClassifier's keyword arguments; the param exists
    return gbt.setProbabilityCol("p")


def _probabilities(model: Any, rows: DataFrame) -> pd.Series:
    scored = model.transform(rows).select("_row", vector_to_array(F.col("p"))[1].alias("score"))
    return scored.toPandas().set_index("_row")["score"]


def fit_and_score(train: DataFrame, evaluate: DataFrame, feature_columns: Sequence[str], name: str,
                  settings: EvaluationConfig, seed: int = 42) -> BaselineScores:
    """Tune baseline ``name`` per task on the validation rows of ``evaluate`` (which has a ``split`` column)
    and score all of them with the chosen fit.

    :raises ValueError: an unknown baseline name.
    """
    grid = candidates(name, settings)
    log_scale = name == BASELINE_LR
    train_vec = _vectors(train, feature_columns, log_scale).cache()
    eval_vec = _vectors(evaluate.select(*KEEP, *feature_columns).withColumn("_row", F.monotonically_increasing_id()),
                        feature_columns, log_scale).cache()
    chosen: dict[str, dict[str, Any]] = {}
    try:
        keys: pd.DataFrame = eval_vec.select("_row", *KEEP).toPandas()
        scored = keys.set_index("_row")
        validation = (scored["split"] == "validation").to_numpy()
        for task in TASKS:
            label = f"label_{task}"
            rows = train_vec.where(F.col(label).isNotNull()).withColumn(label, F.col(label).cast("double"))
            if rows.select(label).distinct().count() < 2:
                scored[SCORE_COLUMNS[task]] = float("nan")
                continue
            best: tuple[float, dict[str, Any], pd.Series] | None = None
            known = validation & scored[label].notna().to_numpy()
            for params in grid:
                probs = _probabilities(_estimator(name, params, label, seed).fit(rows), eval_vec)
                probs = probs.reindex(scored.index)
                auc = roc_auc(scored.loc[known, label].to_numpy(float), probs.to_numpy()[known])
                auc = auc if math.isfinite(auc) else -math.inf
                if best is None or auc > best[0]:
                    best = (auc, params, probs)
            if best is None:  # pragma: no cover - the grid is never empty (config validation)
                raise ValueError(f"{name}: empty parameter grid")
            chosen[task] = {**best[1], "validation_auc": best[0]}
            scored[SCORE_COLUMNS[task]] = best[2].to_numpy()
    finally:
        train_vec.unpersist()
        eval_vec.unpersist()
    return BaselineScores(name, scored.reset_index(drop=True), chosen)
