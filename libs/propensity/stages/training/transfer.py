"""Transfer experiment: does a model fine-tuned on other platforms adapt to a new one with few labels?

1. the encoder comes from the newest ``propensity pretrain`` run (all platforms, no labels);
2. a *source* model is fine-tuned on the labels of every platform but the target;
3. for each label fraction (e.g. 5%, 20%, 100% of the target's labelled train rows):
   *transfer* continues from the source model on that fraction of target labels, and
   *target-only* starts from the pretrained encoder with new heads on the same rows
   (all arms in one TorchDistributor launch);
4. both are scored on the target platform's test snapshot: AUC per task.

The result (one row per fraction, arm and task) is printed, logged to an MLflow run
``transfer-experiment`` as a table and as a plot of AUC against label fraction.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pyspark.sql import SparkSession

from propensity.core.config import Config
from propensity.core.datasets import SnapshotPlan, examples, labelled, training_plan
from propensity.core.errors import ConfigError
from propensity.core.schema import TASKS
from propensity.core.tracking import checkpoint_dir, setup_mlflow
from propensity.models.metrics import roc_auc
from propensity.models.pyfunc import PropensityPyfunc
from propensity.stages.training.finetune import source_platforms
from propensity.stages.training.fit import FitOutcome, FitSpec, fit_heads, fit_series, training_rows
from propensity.stages.training.start import PretrainedEncoder, find_pretrained

log = logging.getLogger(__name__)

DEFAULT_FRACTIONS = (0.05, 0.2, 1.0)
ARMS = ("transfer", "target_only")


def test_auc(outcome: FitOutcome, rows: pd.DataFrame) -> dict[str, float]:
    """AUC per task of a saved model on ``rows`` (``training_examples`` columns, NULL labels skipped)."""
    probs = PropensityPyfunc().load(outcome.model_dir).predict(None, rows)
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


def _arms(spark: SparkSession, cfg: Config, plan: SnapshotPlan, start: PretrainedEncoder, source: FitOutcome,
          fractions: Sequence[float], out: Path) -> list[tuple[str, float, FitOutcome]]:
    """Fine-tune both arms on each fraction of the target's labelled train rows, all in one launch;
    returns ``(arm, fraction, outcome)`` in fraction order."""
    target = str(cfg.training.target_platform)
    continued = source.continued()
    with ExitStack() as stack:
        runs, keys = [], []
        for fraction in fractions:
            rows = stack.enter_context(training_rows(spark, cfg, plan, [target], fraction))
            runs += [(rows, FitSpec("transfer", cfg.teacher, continued, out / f"transfer_{fraction:g}")),
                     (rows, FitSpec("target_only", cfg.teacher, start, out / f"target_only_{fraction:g}"))]
            keys += [("transfer", fraction), ("target_only", fraction)]
        outcomes = fit_series(spark, cfg, runs)
    return [(arm, fraction, outcome) for (arm, fraction), outcome in zip(keys, outcomes, strict=True)]


def _scores(arm: str, fraction: float, outcome: FitOutcome, test_rows: pd.DataFrame) -> list[dict[str, Any]]:
    return [{"fraction": fraction, "arm": arm, "task": t, "auc": v, "test_rows": len(test_rows)}
            for t, v in test_auc(outcome, test_rows).items()]


def _log_result(result: pd.DataFrame, target: str) -> None:
    mlflow.log_table(result, "transfer/result.json")
    mlflow.log_figure(plot_auc(result[result["arm"] != "source_only"], target), "transfer/auc_vs_fraction.png")
    for record in result.to_dict("records"):
        if np.isfinite(record["auc"]):
            mlflow.log_metric(f"{record['arm']}.{record['task']}.auc.f{record['fraction']:g}", float(record["auc"]))


def run_transfer_experiment(spark: SparkSession, cfg: Config, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                            plan: SnapshotPlan | None = None) -> pd.DataFrame:
    """Run the experiment for ``training.target_platform`` (in ``training.transfer_mode``, for
    ``training.epochs`` per arm); returns columns fraction, arm, task, auc, test_rows.

    :raises ConfigError: no target platform is set.
    :raises DataNotReadyError: no pretrained encoder, or missing snapshots.
    """
    target = cfg.training.target_platform
    if not target:
        raise ConfigError("the transfer experiment needs training.target_platform (the held-out platform)")
    plan = plan or training_plan(spark, cfg)
    start = find_pretrained(cfg, cfg.teacher)
    sources = source_platforms(spark, cfg, plan)
    test_rows = labelled(examples(spark, cfg, [plan.test], [target])).toPandas()
    setup_mlflow(cfg)
    with mlflow.start_run(run_name="transfer-experiment", tags={"stage": "transfer"}) as run:
        out = checkpoint_dir(cfg, "teacher", "transfer", run.info.run_id)
        mlflow.log_params({"target": target, "sources": ",".join(sources),
                           "fractions": ",".join(f"{f:g}" for f in fractions), "mode": cfg.training.transfer_mode})
        with training_rows(spark, cfg, plan, sources) as rows:
            source = fit_heads(spark, cfg, dataclasses.replace(rows, wide=rows.train),
                               FitSpec("source", cfg.teacher, start, out / "source"))
        records = _scores("source_only", 0.0, source, test_rows)
        for arm, fraction, outcome in _arms(spark, cfg, plan, start, source, fractions, out):
            records += _scores(arm, fraction, outcome, test_rows)
        result = pd.DataFrame(records)
        _log_result(result, target)
    return result
