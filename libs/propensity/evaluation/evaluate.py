"""``propensity evaluate``: metrics of registered models on the validation and test snapshots.

For each model URI (any pyfunc that returns ``purchase``, ``click`` and ``churn``
probabilities) the plan's validation and test rows of ``training_examples`` are scored in
Spark (``mlflow.pyfunc.spark_udf``, model loaded once per Python worker); AUC, PR-AUC and
log loss per task, per platform and over all platforms (``platform = 'all'``) are
appended to ``model_evaluations`` (NULL labels left out; a metric undefined for one class
is NULL; groups without labels are skipped). One MLflow run ``evaluate`` holds the
``all``-platform metrics, the full table as CSV, and ROC and calibration plots per model
and split.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from propensity.config import Config
from propensity.evaluation.metrics import binary_metrics
from propensity.evaluation.plots import Curves, calibration_figure, roc_figure
from propensity.tables import ensure_table, require_table
from propensity.training import mlflow_utils
from propensity.training.model import TASKS

if TYPE_CHECKING:
    from propensity.features import SnapshotPlan

log = logging.getLogger(__name__)

SPLITS = ("validation", "test")
RESULT_TYPE = ", ".join(f"{t} double" for t in TASKS)


def split_rows(spark: SparkSession, cfg: Config, plan: SnapshotPlan) -> DataFrame:
    """Labelled validation and test rows of ``training_examples`` with a ``split`` column."""
    df = spark.table(require_table(spark, cfg, "training_examples", "features"))
    split = F.when(F.col("snapshot_date") == F.lit(plan.test), "test").otherwise("validation")
    return (df.where(F.col("snapshot_date").isin([plan.validation, plan.test]))
            .where(F.coalesce(*[F.col(f"label_{t}") for t in TASKS]).isNotNull())
            .withColumn("split", split))


def model_inputs(model_uri: str) -> list[str]:
    """Input column names of a logged model's signature.

    :raises ValueError: the model has no input signature.
    """
    info = mlflow.models.get_model_info(model_uri)
    if info.signature is None or info.signature.inputs is None:
        raise ValueError(f"model {model_uri!r} has no input signature; log it with one")
    return [str(name) for name in info.signature.inputs.input_names()]


def score(spark: SparkSession, model_uri: str, rows: DataFrame) -> DataFrame:
    """``rows`` with ``<task>_score`` columns from the pyfunc at ``model_uri`` (features cast to double)."""
    inputs = model_inputs(model_uri)
    missing = [c for c in inputs if c not in rows.columns]
    if missing:
        raise ValueError(f"model {model_uri!r} needs column {missing[0]!r}, which training_examples lacks")
    udf = mlflow.pyfunc.spark_udf(spark, model_uri, result_type=RESULT_TYPE, env_manager="local")
    args = F.struct(*[F.col(c) if c == "behavior_text" else F.col(c).cast("double").alias(c) for c in inputs])
    scored = rows.withColumn("_p", udf(args))
    return scored.select("*", *[F.col(f"_p.{t}").alias(f"{t}_score") for t in TASKS]).drop("_p")


def _none_if_nan(value: float) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


def metric_rows(scored: pd.DataFrame) -> list[dict[str, Any]]:
    """Metrics per split, task and platform (plus ``all``) of a pandas frame with labels and scores.

    ``scored`` has ``split``, ``snapshot_date``, ``platform``, ``label_<task>`` and ``<task>_score``.
    """
    rows: list[dict[str, Any]] = []
    for (split, snapshot_date), part in scored.groupby(["split", "snapshot_date"], sort=True):
        for task in TASKS:
            known = part[part[f"label_{task}"].notna()]
            groups = [(str(p), g) for p, g in known.groupby("platform", sort=True)] + [("all", known)]
            for platform, g in groups:
                if g.empty:
                    continue
                m = binary_metrics(g[f"label_{task}"].to_numpy(), g[f"{task}_score"].to_numpy())
                rows.append({"task": task, "platform": platform, "split": split, "snapshot_date": snapshot_date,
                             "auc": _none_if_nan(m["auc"]), "pr_auc": _none_if_nan(m["pr_auc"]),
                             "logloss": _none_if_nan(m["logloss"]), "n": int(m["n"]),
                             "positives": int(m["positives"])})
    return rows


def curves(scored: pd.DataFrame, split: str) -> Curves:
    """Labels and scores per task and platform (plus ``all``) of one split, for the plots."""
    part = scored[scored["split"] == split]
    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for task in TASKS:
        known = part[part[f"label_{task}"].notna()]
        by_platform = {str(p): (g[f"label_{task}"].to_numpy(float), g[f"{task}_score"].to_numpy(float))
                       for p, g in known.groupby("platform", sort=True)}
        by_platform["all"] = (known[f"label_{task}"].to_numpy(float), known[f"{task}_score"].to_numpy(float))
        out[task] = by_platform
    return out


def _log_plots(name: str, version: str | None, scored: pd.DataFrame) -> None:
    label = f"{name} v{version}" if version else name
    for split in SPLITS:
        if not (scored["split"] == split).any():
            continue
        data = curves(scored, split)
        mlflow.log_figure(roc_figure(data, f"{label}: ROC, {split}"), f"plots/{name}/roc_{split}.png")
        mlflow.log_figure(calibration_figure(data, f"{label}: calibration, {split}"),
                          f"plots/{name}/calibration_{split}.png")


KEYS = ["split", "snapshot_date", "user_id", "platform"]
SCORED_COLUMNS = [*KEYS, *[f"label_{t}" for t in TASKS], *[f"{t}_score" for t in TASKS]]


def score_model(spark: SparkSession, cfg: Config, model_uri: str, rows: DataFrame
                ) -> tuple[mlflow_utils.RegisteredModelVersion | None, str, pd.DataFrame]:
    """``(version, pinned URI, scored rows)``: ``rows`` scored by one model, as pandas (``SCORED_COLUMNS``).

    A ``models:/name``, ``models:/name/latest`` or ``models:/name@alias`` URI is pinned to the version
    it points at now, so the results name exactly the version scored.
    """
    from propensity.scoring.score import resolve_model

    version = mlflow_utils.resolve_version(cfg, model_uri)
    pinned = version.model_uri if version else model_uri
    # the copy under storage.root that scoring and the fusion model use too: downloaded once
    source = resolve_model(cfg, pinned).local_path if version else pinned
    return version, pinned, score(spark, source, rows).select(*SCORED_COLUMNS).toPandas()


def model_metric_rows(name: str, version: str | None, model_uri: str, scored: pd.DataFrame
                      ) -> list[dict[str, Any]]:
    """Metric rows of one model's scored rows (see :func:`metric_rows`); its plots go to the active run."""
    _log_plots(name, version, scored)
    common = {"model_name": name, "model_version": version, "model_uri": model_uri}
    return [{**common, **r} for r in metric_rows(scored)]


def evaluate_model(spark: SparkSession, cfg: Config, name: str, model_uri: str, rows: DataFrame
                   ) -> list[dict[str, Any]]:
    """Score ``rows`` with one model, log its plots to the active run and return its metric rows."""
    version, pinned, scored = score_model(spark, cfg, model_uri, rows)
    return model_metric_rows(name, version.version if version else None, pinned, scored)


def write_evaluations(spark: SparkSession, cfg: Config, rows: list[dict[str, Any]], run_id: str | None
                      ) -> DataFrame:
    """Append metric rows to ``model_evaluations`` (with ``evaluated_at`` now) and return them as a DataFrame."""
    table = ensure_table(spark, cfg, "model_evaluations")
    schema = spark.table(table).schema
    now = datetime.now(UTC).replace(tzinfo=None)
    full = [{**r, "evaluated_at": now, "mlflow_run_id": run_id} for r in rows]
    df = spark.createDataFrame([tuple(r.get(f.name) for f in schema.fields) for r in full], schema)
    df.write.format("delta").mode("append").saveAsTable(table)
    return df


def log_summary(rows: list[dict[str, Any]]) -> None:
    metrics = {f"{r['model_name']}.{r['split']}.{r['task']}.{k}": r[k]
               for r in rows if r["platform"] == "all" for k in ("auc", "pr_auc", "logloss") if r[k] is not None}
    mlflow.log_metrics(metrics)
    if rows:
        mlflow.log_text(pd.DataFrame(rows).to_csv(index=False), "evaluation/model_evaluations.csv")


def run_evaluate(spark: SparkSession, cfg: Config, model_uris: dict[str, str],
                 plan: SnapshotPlan | None = None) -> DataFrame:
    """``propensity evaluate``: metrics of each ``{model_name: model_uri}`` into ``model_evaluations``.

    :param plan: snapshot dates; None: planned from ``events`` (snapshots built if missing).
    :returns: the rows appended (one per model, split, task and platform with labels).
    :raises ValueError: no model URI given, or a URI that cannot be resolved.
    """
    if not model_uris:
        raise ValueError("no model to evaluate; pass at least one {name: models:/name/version} entry")
    if plan is None:
        from propensity.training.data import load_plan

        plan = load_plan(spark, cfg)
    rows_df = split_rows(spark, cfg, plan).persist()
    try:
        mlflow_utils.setup_mlflow(cfg)
        with mlflow.start_run(run_name="evaluate", tags={"stage": "evaluate"}) as run:
            mlflow.log_params({"evaluate.validation_snapshot": plan.validation.isoformat(),
                               "evaluate.test_snapshot": plan.test.isoformat(),
                               **{f"evaluate.model.{k}": v for k, v in model_uris.items()}})
            rows: list[dict[str, Any]] = []
            for name, uri in model_uris.items():
                rows += evaluate_model(spark, cfg, name, uri, rows_df)
            log_summary(rows)
            result = write_evaluations(spark, cfg, rows, run.info.run_id)
    finally:
        rows_df.unpersist()
    log.info("wrote %d evaluation rows for %s", len(rows), ", ".join(model_uris))
    return result
