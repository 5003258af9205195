"""What ``propensity evaluate`` records per model: metric rows, plots and the ``model_evaluations`` commit.

AUC, PR-AUC and log loss per task, per platform and over all platforms (``platform = 'all'``),
per split (NULL labels left out; a metric undefined for one class is NULL; groups without
labels are skipped). ROC and calibration plots per model and split go to the active MLflow run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from propensity.core.config import Config
from propensity.core.datasets import SPLITS
from propensity.core.locks import table_lock
from propensity.core.schema import LABEL_COLUMNS, SCORE_COLUMNS, TASKS
from propensity.core.tables import ensure_table
from propensity.models.metrics import binary_metrics
from propensity.stages.evaluation.plots import Curves, calibration_figure, roc_figure
from propensity.stages.evaluation.segments import COLD_START

#: Columns of a scored frame: the row's key, its segment flag, its labels and one score per task.
KEYS = ["split", "snapshot_date", "user_id", "platform"]
SCORED_COLUMNS = [*KEYS, COLD_START, *LABEL_COLUMNS, *SCORE_COLUMNS.values()]
#: Metric columns of a row besides ``n`` and ``positives``.
METRICS = ("auc", "pr_auc", "logloss", "ece", "predicted_over_observed")


def _none_if_nan(value: float) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


def metric_rows(scored: pd.DataFrame) -> list[dict[str, Any]]:
    """Metrics per split, task, segment (``all``, ``cold_start``) and platform (plus ``all``) of a pandas
    frame with labels and scores.

    ``scored`` has ``split``, ``snapshot_date``, ``platform``, ``cold_start``, ``label_<task>`` and
    ``<task>_score``.
    """
    rows: list[dict[str, Any]] = []
    for (split, snapshot_date), part in scored.groupby(["split", "snapshot_date"], sort=True):
        for task in TASKS:
            known = part[part[f"label_{task}"].notna()]
            for segment, rows_in in (("all", known), ("cold_start", known[known[COLD_START].astype(bool)])):
                groups = [(str(p), g) for p, g in rows_in.groupby("platform", sort=True)] + [("all", rows_in)]
                for platform, g in groups:
                    if g.empty:
                        continue
                    m = binary_metrics(g[f"label_{task}"].to_numpy(), g[SCORE_COLUMNS[task]].to_numpy())
                    rows.append({"task": task, "platform": platform, "segment": segment, "split": split,
                                 "snapshot_date": snapshot_date, **{k: _none_if_nan(m[k]) for k in METRICS},
                                 "n": int(m["n"]), "positives": int(m["positives"])})
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


def _label(row: dict[str, Any]) -> str:
    """``model`` or ``model.variant``, plus ``.cold_start`` for that segment."""
    label = row["model_name"] if row.get("variant", "full") == "full" else f"{row['model_name']}.{row['variant']}"
    return label if row.get("segment", "all") == "all" else f"{label}.{row['segment']}"


def log_plots(name: str, version: str | None, scored: pd.DataFrame, variant: str = "full") -> None:
    """ROC and calibration (reliability) plots of each split into the active MLflow run.

    :raises RuntimeError: no run is active (MLflow would silently start one and leave it open).
    """
    if mlflow.active_run() is None:
        raise RuntimeError("log_plots needs an active MLflow run")
    name = name if variant == "full" else f"{name}.{variant}"
    label = f"{name} v{version}" if version else name
    for split in SPLITS:
        if not (scored["split"] == split).any():
            continue
        data = curves(scored, split)
        mlflow.log_figure(roc_figure(data, f"{label}: ROC, {split}"), f"plots/{name}/roc_{split}.png")
        mlflow.log_figure(calibration_figure(data, f"{label}: calibration, {split}"),
                          f"plots/{name}/calibration_{split}.png")


def model_metric_rows(name: str, version: str | None, model_uri: str, scored: pd.DataFrame,
                      variant: str = "full") -> list[dict[str, Any]]:
    """Metric rows of one model's scored rows (see :func:`metric_rows`), labelled with the model."""
    common = {"model_name": name, "model_version": version, "model_uri": model_uri, "variant": variant}
    return [{**common, **r} for r in metric_rows(scored)]


def write_evaluations(spark: SparkSession, cfg: Config, rows: list[dict[str, Any]], run_id: str | None
                      ) -> DataFrame:
    """Append metric rows to ``model_evaluations`` (with ``evaluated_at`` now) and return them as a DataFrame."""
    table = ensure_table(spark, cfg, "model_evaluations")
    schema = spark.table(table).schema
    now = datetime.now(UTC).replace(tzinfo=None)
    full = [{**r, "evaluated_at": now, "mlflow_run_id": run_id} for r in rows]
    df = spark.createDataFrame([tuple(r.get(f.name) for f in schema.fields) for r in full], schema)
    with table_lock(spark, cfg, "model_evaluations"):
        df.writeTo(table).append()
    return df


def log_summary(rows: list[dict[str, Any]]) -> None:
    """The all-platform metrics of every model as MLflow metrics, and every row as a CSV artifact."""
    metrics = {f"{_label(r)}.{r['split']}.{r['task']}.{k}": r[k]
               for r in rows if r["platform"] == "all" for k in ("auc", *METRICS) if r.get(k) is not None}
    mlflow.log_metrics(metrics)
    if rows:
        mlflow.log_text(pd.DataFrame(rows).to_csv(index=False), "evaluation/model_evaluations.csv")
