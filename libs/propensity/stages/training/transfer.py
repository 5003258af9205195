"""Transfer experiment: does a model fine-tuned on other platforms adapt to a new one with few labels?

1. the encoder comes from the newest ``propensity pretrain`` run (all platforms, no labels);
2. a *source* model is fine-tuned on the labels of every platform but the target;
3. for each label fraction (e.g. 5%, 20%, 100% of the target's labelled train rows):
   *transfer* continues from the source model on that fraction of target labels, and
   *target-only* starts from the pretrained encoder with new heads on the same rows
   (all arms in one TorchDistributor launch);
4. both are scored on the target platform's test snapshot: AUC per task, and each model's AUC
   minus the source-only model's and minus target-only's with the largest fraction (100% by
   default), with paired bootstrap 95% intervals on the same test rows
   (``evaluation.bootstrap_rounds``): a difference inside its interval's noise is no difference.

The result (one row per fraction, arm and task) is printed (:func:`format_transfer`), logged to
an MLflow run ``transfer-experiment`` as a table and as a plot of AUC against label fraction.
"""

from __future__ import annotations

import dataclasses
import logging
import math
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
from propensity.models.metrics import auc_difference, roc_auc
from propensity.models.pyfunc import PropensityPyfunc
from propensity.stages.training.finetune import source_platforms
from propensity.stages.training.fit import FitOutcome, FitSpec, fit_heads, fit_series, training_rows
from propensity.stages.training.start import PretrainedEncoder, find_pretrained

log = logging.getLogger(__name__)

DEFAULT_FRACTIONS = (0.05, 0.2, 1.0)
ARMS = ("transfer", "target_only")


#: What every model is compared with: column prefix -> ``(arm, fraction, description)``; fraction None: the
#: largest one.
REFERENCES: dict[str, tuple[str, float | None, str]] = {
    "vs_source_only": ("source_only", 0.0, "source-only"),
    "vs_target_only_largest": ("target_only", None, "target-only with the largest fraction")}


def predictions(outcome: FitOutcome, rows: pd.DataFrame) -> pd.DataFrame:
    """Probabilities (one column per task) of a saved model on ``rows`` (``training_examples`` columns)."""
    return PropensityPyfunc().load(outcome.model_dir).predict(None, rows)


def compare_arms(probs: dict[tuple[str, float], pd.DataFrame], rows: pd.DataFrame, rounds: int, seed: int
                 ) -> pd.DataFrame:
    """Per ``(arm, fraction)`` and task: test AUC, labelled rows and positives, and for each of
    :data:`REFERENCES` the AUC difference with its paired bootstrap 95% interval (columns ``<ref>``,
    ``<ref>_low``, ``<ref>_high``; NaN where the reference is missing or the AUC undefined)."""
    largest = max((f for arm, f in probs if arm == "target_only"), default=None)
    references = {name: (arm, largest if fraction is None else fraction)
                  for name, (arm, fraction, _) in REFERENCES.items()}
    records: list[dict[str, Any]] = []
    for (arm, fraction), scores in probs.items():
        for task in TASKS:
            known = rows[f"label_{task}"].notna().to_numpy()
            y = rows.loc[known, f"label_{task}"].to_numpy(float)
            p = scores.loc[known, task].to_numpy()
            record: dict[str, Any] = {"fraction": fraction, "arm": arm, "task": task, "auc": roc_auc(y, p),
                                      "test_rows": len(rows), "labelled": int(known.sum()),
                                      "positives": int(y.sum())}
            for name, key in references.items():
                diff, low, high = (auc_difference(y, p, probs[key].loc[known, task].to_numpy(), rounds, seed)
                                   if key in probs else (math.nan, math.nan, math.nan))
                record.update({name: diff, f"{name}_low": low, f"{name}_high": high})
            records.append(record)
    return pd.DataFrame(records)


def format_transfer(result: pd.DataFrame) -> str:
    """Test AUC per arm and fraction, then each transfer model's difference to the references
    (``diff [low, high]``) and the labelled test rows / positives per task."""
    aucs = result.pivot_table(index=["arm", "fraction"], columns="task", values="auc", sort=False)
    lines = [aucs.reindex(columns=list(TASKS)).to_string(float_format=lambda v: f"{v:.4f}")]
    transfer = result[result["arm"] == "transfer"]
    for name, (_, _, description) in REFERENCES.items():
        cells = transfer.assign(cell=[f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]" if math.isfinite(d) else "nan"
                                      for d, lo, hi in zip(transfer[name], transfer[f"{name}_low"],
                                                           transfer[f"{name}_high"], strict=True)])
        table = cells.pivot_table(index="fraction", columns="task", values="cell", aggfunc="first")
        lines += [f"transfer minus {description} (paired bootstrap 95% interval):",
                  table.reindex(columns=list(TASKS)).to_string()]
    counts = result.drop_duplicates("task").set_index("task").reindex(list(TASKS))
    lines.append("labelled test rows / positives: " + ", ".join(
        f"{t} {r.labelled} / {r.positives}" for t, r in counts.iterrows()))
    return "\n".join(lines)


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


def _log_result(result: pd.DataFrame, target: str) -> None:
    mlflow.log_table(result, "transfer/result.json")
    mlflow.log_figure(plot_auc(result[result["arm"] != "source_only"], target), "transfer/auc_vs_fraction.png")
    metrics = {}
    for record in result.to_dict("records"):
        name = f"{record['arm']}.{record['task']}"
        for key in ("auc", *[f"{ref}{end}" for ref in REFERENCES for end in ("", "_low", "_high")]):
            if np.isfinite(record[key]):
                metrics[f"{name}.{key}.f{record['fraction']:g}"] = float(record[key])
    mlflow.log_metrics(metrics)


def run_transfer_experiment(spark: SparkSession, cfg: Config, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                            plan: SnapshotPlan | None = None) -> pd.DataFrame:
    """Run the experiment for ``training.target_platform`` (in ``training.transfer_mode``, for
    ``training.epochs`` per arm); returns :func:`compare_arms`' frame.

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
        probs = {("source_only", 0.0): predictions(source, test_rows)}
        for arm, fraction, outcome in _arms(spark, cfg, plan, start, source, fractions, out):
            probs[(arm, fraction)] = predictions(outcome, test_rows)
        result = compare_arms(probs, test_rows, cfg.evaluation.bootstrap_rounds, cfg.training.seed)
        _log_result(result, target)
    return result
