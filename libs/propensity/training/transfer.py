"""Transfer experiment: does a model fine-tuned on other platforms adapt to a new one with few labels?

1. the encoder comes from the newest ``propensity pretrain`` run (all platforms, no labels);
2. a *source* model is fine-tuned on the labels of every platform but the target;
3. for each label fraction (e.g. 5%, 20%, 100% of the target's labelled train rows):
   *transfer* continues from the source model on that fraction of target labels, and
   *target-only* starts from the pretrained encoder with new heads on the same rows;
4. both are scored on the target platform's test snapshot: AUC per task.

The result (one row per fraction, arm and task) is printed, logged to an MLflow run
``transfer-experiment`` as a table and as a plot of AUC against label fraction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pyspark.sql import SparkSession

from propensity.config import Config
from propensity.errors import PropensityError
from propensity.evaluation.metrics import roc_auc
from propensity.training import data, mlflow_utils
from propensity.training.finetune import (
    FinetuneOutcome,
    find_pretrained,
    finetune_model,
    labelled,
    source_platforms,
    train_and_validation_rows,
)
from propensity.training.model import TASKS, FeatureStats
from propensity.training.pretrain import Pretrained
from propensity.training.pyfunc import PropensityPyfunc
from propensity.training.settings import ModelSettings, TrainSettings

if TYPE_CHECKING:
    from propensity.features import SnapshotPlan

log = logging.getLogger(__name__)

DEFAULT_FRACTIONS = (0.05, 0.2, 1.0)
ARMS = ("transfer", "target_only")


def test_auc(model_dir: Path, tokenizer_dir: Path, rows: pd.DataFrame) -> dict[str, float]:
    """AUC per task of a saved model on ``rows`` (``training_examples`` columns, NULL labels skipped)."""
    probs = PropensityPyfunc().load(model_dir, tokenizer_dir).predict(None, rows)
    out = {}
    for task in TASKS:
        known = rows[f"label_{task}"].notna().to_numpy()
        out[task] = roc_auc(rows.loc[known, f"label_{task}"].to_numpy(float), probs.loc[known, task].to_numpy())
    return out


def plot_auc(result: pd.DataFrame, target: str) -> Figure:
    """AUC against label fraction, one panel per task, one line per arm."""
    fig = Figure(figsize=(15, 4.5), dpi=90)
    fig.suptitle(f"transfer to {target}: test AUC against share of target labels")
    for i, task in enumerate(TASKS):
        ax = fig.add_subplot(1, len(TASKS), i + 1)
        for arm in ARMS:
            part = result[(result["arm"] == arm) & (result["task"] == task)].sort_values("fraction")
            ax.plot(part["fraction"], part["auc"], marker="o", label=arm)
        ax.set(title=task, xscale="log", xlabel="share of target labels", ylabel="test AUC")
        ax.legend()
    return fig


def _arms(spark: SparkSession, cfg: Config, plan: SnapshotPlan, model: ModelSettings, train: TrainSettings,
          start: Pretrained, source: FinetuneOutcome, fraction: float, out: Path) -> dict[str, Path]:
    """Fine-tune both arms on ``fraction`` of the target's labelled train rows; returns their model folders."""
    rows, validation = train_and_validation_rows(spark, cfg, plan, train, [str(train.target_platform)], fraction)
    source_stats = FeatureStats.from_json(source.stats_path.read_text())
    try:
        transfer = finetune_model(spark, cfg, rows, validation, source_stats.columns, model, train, start,
                                  out / f"transfer_{fraction:g}", init_model=source.model_dir, stats=source_stats,
                                  stage="transfer")
        target_only = finetune_model(spark, cfg, rows, validation, source_stats.columns, model, train, start,
                                     out / f"target_only_{fraction:g}", stage="target_only")
    finally:
        rows.unpersist()
    return {"transfer": transfer.model_dir, "target_only": target_only.model_dir}


def _source_model(spark: SparkSession, cfg: Config, plan: SnapshotPlan, model: ModelSettings, train: TrainSettings,
                  start: Pretrained, sources: list[str], out: Path) -> FinetuneOutcome:
    from propensity.features import FEATURE_COLUMNS

    rows, validation = train_and_validation_rows(spark, cfg, plan, train, sources)
    try:
        return finetune_model(spark, cfg, rows, validation, list(FEATURE_COLUMNS), model, train, start,
                              out / "source", stage="source")
    finally:
        rows.unpersist()


def _scores(arm: str, fraction: float, model_dir: Path, start: Pretrained, test_rows: pd.DataFrame
            ) -> list[dict[str, Any]]:
    aucs = test_auc(model_dir, start.tokenizer_dir, test_rows)
    return [{"fraction": fraction, "arm": arm, "task": t, "auc": v, "test_rows": len(test_rows)}
            for t, v in aucs.items()]


def _log_result(result: pd.DataFrame, target: str) -> None:
    mlflow.log_table(result, "transfer/result.json")
    mlflow.log_figure(plot_auc(result[result["arm"] != "source_only"], target), "transfer/auc_vs_fraction.png")
    for record in result.to_dict("records"):
        if np.isfinite(record["auc"]):
            mlflow.log_metric(f"{record['arm']}.{record['task']}.auc.f{record['fraction']:g}", float(record["auc"]))


def run_transfer_experiment(spark: SparkSession, cfg: Config, model: ModelSettings, train: TrainSettings,
                            fractions: Sequence[float] = DEFAULT_FRACTIONS) -> pd.DataFrame:
    """Run the experiment for ``train.target_platform``; returns columns fraction, arm, task, auc, test_rows.

    :raises PropensityError: no target platform is set, or no pretrained encoder exists.
    """
    if not train.target_platform:
        raise PropensityError("the transfer experiment needs training.target_platform (the held-out platform)")
    plan = data.load_plan(spark, cfg)
    start = find_pretrained(cfg, train, model.max_length)
    sources = source_platforms(spark, cfg, plan, train)
    test_rows = labelled(data.examples(spark, cfg, [plan.test], [train.target_platform])).toPandas()
    mlflow_utils.setup_mlflow(cfg)
    with mlflow.start_run(run_name="transfer-experiment", tags={"stage": "transfer"}) as run:
        out = mlflow_utils.checkpoint_dir(cfg, "teacher", "transfer", run.info.run_id)
        mlflow.log_params({"target": train.target_platform, "sources": ",".join(sources),
                           "fractions": ",".join(f"{f:g}" for f in fractions), "mode": train.transfer_mode})
        source = _source_model(spark, cfg, plan, model, train, start, sources, out)
        records = _scores("source_only", 0.0, source.model_dir, start, test_rows)
        for fraction in fractions:
            for arm, model_dir in _arms(spark, cfg, plan, model, train, start, source, fraction, out).items():
                records += _scores(arm, fraction, model_dir, start, test_rows)
        result = pd.DataFrame(records)
        _log_result(result, train.target_platform)
    return result
