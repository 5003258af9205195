"""Spark MLlib baselines on the aggregate features: ``baseline_lr`` and ``baseline_gbt``.

Per task, a logistic regression (features ``sign(x) * log1p(|x|)``, standardised by MLlib)
and gradient-boosted trees (raw features) are fitted on the labelled rows of the train
snapshots and score the validation and test rows. Missing feature values count as 0. They
are what a model has to beat to become champion.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from pyspark.ml.classification import GBTClassifier, LogisticRegression
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from propensity.core.config import EvaluationConfig
from propensity.core.schema import LABEL_COLUMNS, TASKS

BASELINE_LR = "baseline_lr"
BASELINE_GBT = "baseline_gbt"
BASELINES = (BASELINE_LR, BASELINE_GBT)
KEEP = ["split", "snapshot_date", "platform", *LABEL_COLUMNS]


@dataclass(frozen=True)
class BaselineScores:
    """Validation and test rows (``KEEP`` columns plus ``<task>_score``) of one baseline."""

    name: str
    scored: pd.DataFrame


def _vectors(df: DataFrame, feature_columns: list[str], log_scale: bool) -> DataFrame:
    def value(c: str) -> F.Column:
        x = F.coalesce(F.col(c).cast("double"), F.lit(0.0))
        x = F.when(F.isnan(x), 0.0).otherwise(x)
        return F.signum(x) * F.log1p(F.abs(x)) if log_scale else x

    prepared = df.select(*[c for c in df.columns if c not in feature_columns],
                         *[value(c).alias(c) for c in feature_columns])
    return VectorAssembler(inputCols=feature_columns, outputCol="features_vec").transform(prepared)


def _estimator(name: str, settings: EvaluationConfig, label: str, seed: int) -> LogisticRegression | GBTClassifier:
    if name == BASELINE_LR:
        return LogisticRegression(featuresCol="features_vec", labelCol=label, maxIter=100, regParam=1e-3,
                                  standardization=True, probabilityCol="p")
    gbt = GBTClassifier(featuresCol="features_vec", labelCol=label, maxIter=settings.gbt_max_iter,
                        maxDepth=settings.gbt_max_depth, seed=seed)
    return gbt.setProbabilityCol("p")


def fit_and_score(train: DataFrame, evaluate: DataFrame, feature_columns: list[str], name: str,
                  settings: EvaluationConfig, seed: int = 42) -> BaselineScores:
    """Fit baseline ``name`` per task on ``train`` and score ``evaluate`` (which has a ``split`` column).

    :raises ValueError: an unknown baseline name.
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; use one of {', '.join(BASELINES)}")
    log_scale = name == BASELINE_LR
    train_vec = _vectors(train, feature_columns, log_scale).cache()
    eval_vec = _vectors(evaluate.select(*KEEP, *feature_columns).withColumn("_row", F.monotonically_increasing_id()),
                        feature_columns, log_scale).cache()
    try:
        keys: pd.DataFrame = eval_vec.select("_row", *KEEP).toPandas()
        scored = keys.set_index("_row")
        for task in TASKS:
            label = f"label_{task}"
            rows = train_vec.where(F.col(label).isNotNull()).withColumn(label, F.col(label).cast("double"))
            if rows.select(label).distinct().count() < 2:
                scored[f"{task}_score"] = float("nan")
                continue
            model = _estimator(name, settings, label, seed).fit(rows)
            probs = (model.transform(eval_vec).select("_row", vector_to_array(F.col("p"))[1].alias("score"))
                     .toPandas().set_index("_row")["score"])
            scored[f"{task}_score"] = probs.reindex(scored.index).to_numpy()
    finally:
        train_vec.unpersist()
        eval_vec.unpersist()
    return BaselineScores(name, scored.reset_index(drop=True))
