"""``propensity evaluate``: teacher, student, their fusion, the teacher's ablations and the tuned baselines; gates.

1. The newest ``propensity_teacher`` and ``propensity_student`` versions score the validation
   and test rows (each pinned to its version, through the scoring job's own Spark path).
2. Ablations (``evaluation.ablations``): the teacher's *features-only* variant (its wide logistic
   regressions alone) and the *sequence-only* teacher (``propensity_teacher_sequence_only``,
   trained without aggregate features) score the same rows.
3. The fusion weights are chosen on validation; the fusion is logged and registered as
   ``propensity_fusion`` and its scores are the weighted mix of the two members' scores.
4. ``baseline_lr`` and ``baseline_gbt`` are tuned on validation (:mod:`~.baselines`) and score the
   same rows.
5. Every model's AUC minus the best baseline's on the test snapshot gets a paired bootstrap 95%
   interval (all platforms; segments ``all`` and ``cold_start``).
6. All metric rows go to ``model_evaluations`` in one commit; a comparison table is printed and
   logged to the MLflow run ``evaluate``.
7. Each of the three models gets ``@champion`` only if it passes its gates
   (:mod:`~propensity.stages.evaluation.gates`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from pyspark.sql import DataFrame, SparkSession

from propensity.core.config import Config
from propensity.core.datasets import SnapshotPlan, examples, labelled, sample_rows, split_rows, training_plan
from propensity.core.errors import ModelNotFoundError
from propensity.core.schema import FEATURE_COLUMNS, SCORE_COLUMNS, TASKS
from propensity.core.tracking import checkpoint_dir, setup_mlflow
from propensity.models.metrics import auc_difference, roc_auc
from propensity.models.network import load_model, wide_probabilities
from propensity.models.pyfunc import fuse, input_example, log_fusion_model
from propensity.models.registry import (
    FUSION_MODEL_NAME,
    SEQUENCE_ONLY_MODEL_NAME,
    STUDENT_MODEL_NAME,
    TEACHER_MODEL_NAME,
    RegisteredModelVersion,
    latest_version,
    model_artifacts,
    registered_name,
    resolve_model,
)
from propensity.models.spark_scoring import score_frame
from propensity.stages.evaluation import baselines
from propensity.stages.evaluation.fusion import choose_weights
from propensity.stages.evaluation.gates import Gate, apply_gates, check_gates
from propensity.stages.evaluation.results import (
    KEYS,
    SCORED_COLUMNS,
    log_plots,
    log_summary,
    model_metric_rows,
    write_evaluations,
)
from propensity.stages.evaluation.segments import COLD_START, cold_start

log = logging.getLogger(__name__)

TEACHER = TEACHER_MODEL_NAME
STUDENT = STUDENT_MODEL_NAME
FUSION = FUSION_MODEL_NAME
_SCORES = [SCORE_COLUMNS[t] for t in TASKS]


@dataclass(frozen=True)
class Scored:
    """One evaluated model (or variant): what it is and its scored rows (``SCORED_COLUMNS``)."""

    name: str
    variant: str
    version: str | None
    model_uri: str
    rows: pd.DataFrame

    @property
    def label(self) -> str:
        """``name`` or ``name.variant``."""
        return self.name if self.variant == "full" else f"{self.name}.{self.variant}"


@dataclass
class EvaluationReport:
    """What ``propensity evaluate`` found: test AUCs (with intervals), fusion weights, gates and promotions."""

    test_auc: pd.DataFrame
    fusion_weights: dict[str, float]
    gates: list[Gate]
    promoted: dict[str, bool]
    versions: dict[str, str] = field(default_factory=dict)
    #: test rows of every model and variant: segment, task, auc and the interval against the best baseline
    comparison: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def failed(self) -> list[Gate]:
        """The gates that failed."""
        return [g for g in self.gates if not g.passed]

    def format(self) -> str:
        """The comparison tables, fusion weights and one line per gate."""
        lines = ["test AUC (all platforms):", self.test_auc.to_string(float_format=lambda v: f"{v:.4f}")]
        if not self.comparison.empty:
            lines += ["test AUC minus the best baseline, paired bootstrap 95% interval:",
                      format_comparison(self.comparison)]
        lines.append("fusion weights (teacher share): "
                     + ", ".join(f"{t}={w:g}" for t, w in self.fusion_weights.items()))
        lines += [g.describe() for g in self.gates]
        lines += [f"{name} v{self.versions.get(name, '?')}: " + ("now @champion" if ok else "not promoted;"
                  " the previous @champion (if any) stays") for name, ok in self.promoted.items()]
        return "\n".join(lines)


#: Label of the comparison table's rows that give each segment's test rows and positives.
COUNTS_ROW = "(test rows / positives)"


def format_comparison(comparison: pd.DataFrame) -> str:
    """``model  segment  task: auc (diff [low, high])`` as a table, one row per model and segment, after one
    row per segment with its labelled test rows and positives (an AUC of few positives says little)."""
    cells = comparison.assign(cell=[
        f"{r.auc:.4f} ({r.diff:+.4f} [{r.low:+.4f}, {r.high:+.4f}])" if math.isfinite(r.diff) else f"{r.auc:.4f}"
        for r in comparison.itertuples()])
    counts = comparison.drop_duplicates(["segment", "task"]).assign(
        model=COUNTS_ROW, cell=lambda f: [f"{r} / {p}" for r, p in zip(f["rows"], f["positives"], strict=True)])
    table = pd.concat([counts, cells]).pivot_table(index=["model", "segment"], columns="task", values="cell",
                                                   aggfunc="first", sort=False)
    return table.reindex(columns=list(TASKS)).to_string()


def score_model(spark: SparkSession, cfg: Config, version: RegisteredModelVersion, rows: DataFrame) -> pd.DataFrame:
    """``rows`` scored by one registered model version, as pandas (``SCORED_COLUMNS``)."""
    keep = [c for c in SCORED_COLUMNS if c not in _SCORES]
    return score_frame(spark, cfg, rows, resolve_model(cfg, version.model_uri), keep=keep).toPandas()


def features_only(cfg: Config, teacher: RegisteredModelVersion, rows: DataFrame, keys: pd.DataFrame) -> pd.DataFrame:
    """The teacher's features-only variant: its wide logistic regressions alone, on the rows of ``keys``."""
    model = load_model(model_artifacts(cfg, teacher.model_uri, "the teacher").model_dir)
    frame = rows.select(*KEYS, *model.feature_columns).toPandas()
    frame = keys[[c for c in SCORED_COLUMNS if c not in _SCORES]].merge(frame, on=KEYS, how="left",
                                                                         validate="one_to_one")
    features = torch.from_numpy(frame[model.feature_columns].to_numpy(dtype=np.float32, na_value=np.nan))
    probs = wide_probabilities(model, features).numpy().astype(np.float64)
    out = frame[[c for c in SCORED_COLUMNS if c not in _SCORES]].copy()
    for i, task in enumerate(TASKS):
        out[SCORE_COLUMNS[task]] = probs[:, i]
    return out


def _fusion(cfg: Config, run_id: str, teacher: pd.DataFrame, student: pd.DataFrame,
            members: dict[str, RegisteredModelVersion], example: pd.DataFrame
            ) -> tuple[RegisteredModelVersion, dict[str, float], pd.DataFrame]:
    """Choose the weights on validation, register the fusion, and return its scored rows."""
    merged = teacher.merge(student[[*KEYS, *_SCORES]], on=KEYS, suffixes=("", "_student"), validate="one_to_one")
    val = merged[merged["split"] == "validation"]
    known = {t: val[f"label_{t}"].notna().to_numpy() for t in TASKS}
    weights = choose_weights({t: val.loc[known[t], f"label_{t}"].to_numpy() for t in TASKS},
                             {t: val.loc[known[t], SCORE_COLUMNS[t]].to_numpy() for t in TASKS},
                             {t: val.loc[known[t], f"{SCORE_COLUMNS[t]}_student"].to_numpy() for t in TASKS},
                             cfg.evaluation.fusion_weight_step)
    teacher_files = model_artifacts(cfg, members[TEACHER].model_uri, "the teacher")
    student_files = model_artifacts(cfg, members[STUDENT].model_uri, "the student")
    version = log_fusion_model(teacher_files.model_dir, student_files.model_dir, weights, example,
                               registered_name(cfg, FUSION), checkpoint_dir(cfg, "fusion", run_id))
    scores = fuse(merged[_SCORES].set_axis(list(TASKS), axis=1),
                  merged[[f"{c}_student" for c in _SCORES]].set_axis(list(TASKS), axis=1), weights)
    fused = merged[[c for c in SCORED_COLUMNS if c not in _SCORES]].copy()
    for t in TASKS:
        fused[SCORE_COLUMNS[t]] = scores[t].to_numpy()
    return version, weights, fused


def test_auc_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Test AUC over all platforms and rows, one row per model (and variant) and one column per task."""
    frame = pd.DataFrame([r for r in rows if r["split"] == "test" and r["platform"] == "all"
                          and r.get("segment", "all") == "all"])
    frame["model"] = [n if v == "full" else f"{n}.{v}" for n, v in zip(frame["model_name"], frame["variant"],
                                                                         strict=True)]
    table = frame.pivot_table(index="model", columns="task", values="auc", aggfunc="first")
    return table.reindex(columns=list(TASKS))


def _best_baselines(baseline_rows: dict[str, pd.DataFrame]) -> dict[tuple[str, str], tuple[str, pd.DataFrame]]:
    """Per ``(segment, task)``, the baseline with the best test AUC and its scored rows."""
    best: dict[tuple[str, str], tuple[str, float, pd.DataFrame]] = {}
    for name, frame in baseline_rows.items():
        for segment, part in _test_segments(frame):
            for task in TASKS:
                known = part[f"label_{task}"].notna()
                auc = roc_auc(part.loc[known, f"label_{task}"].to_numpy(float),
                              part.loc[known, SCORE_COLUMNS[task]].to_numpy(float))
                auc = auc if math.isfinite(auc) else -math.inf
                if (segment, task) not in best or auc > best[(segment, task)][1]:
                    best[(segment, task)] = (name, auc, frame)
    return {key: (name, frame) for key, (name, _, frame) in best.items()}


def _test_segments(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    test = frame[frame["split"] == "test"]
    return [("all", test), ("cold_start", test[test[COLD_START].astype(bool)])]


def intervals(scored: list[Scored], baseline_rows: dict[str, pd.DataFrame], rounds: int, seed: int
              ) -> tuple[pd.DataFrame, dict[tuple[str, str, str, str], dict[str, Any]]]:
    """Paired bootstrap intervals of each model's test AUC minus the best baseline's (all platforms).

    :returns: a comparison frame (model, segment, task, rows, positives, auc, diff, low, high, baseline) and
        the same per ``(model name, variant, segment, task)`` for the ``model_evaluations`` rows.
    """
    best = _best_baselines(baseline_rows)
    records: list[dict[str, Any]] = []
    by_key: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for model in scored:
        for segment, part in _test_segments(model.rows):
            for task in TASKS:
                baseline, base_frame = best[(segment, task)]
                ref = part[KEYS].merge(base_frame[[*KEYS, SCORE_COLUMNS[task]]], on=KEYS, how="left")
                known = part[f"label_{task}"].notna().to_numpy()
                y = part[f"label_{task}"].to_numpy()[known].astype(float)
                p = part[SCORE_COLUMNS[task]].to_numpy()[known]
                q = ref[SCORE_COLUMNS[task]].to_numpy()[known]
                auc = roc_auc(y, p)
                diff, low, high = auc_difference(y, p, q, rounds, seed)
                row = {"model": model.label, "segment": segment, "task": task, "rows": int(known.sum()),
                       "positives": int(y.sum()), "auc": auc, "diff": diff, "low": low, "high": high,
                       "baseline": baseline}
                records.append(row)
                by_key[(model.name, model.variant, segment, task)] = row
    return pd.DataFrame(records), by_key


def _with_intervals(rows: list[dict[str, Any]], by_key: dict[tuple[str, str, str, str], dict[str, Any]]
                    ) -> list[dict[str, Any]]:
    """The metric rows, the test all-platform ones with their interval and baseline."""
    out = []
    for r in rows:
        found = by_key.get((r["model_name"], r["variant"], r["segment"], r["task"]))
        if found and r["split"] == "test" and r["platform"] == "all":
            r = {**r, "baseline": found["baseline"], "auc_diff_ci_low": _finite(found["low"]),
                 "auc_diff_ci_high": _finite(found["high"])}
        out.append(r)
    return out


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _ablations(spark: SparkSession, cfg: Config, teacher: RegisteredModelVersion, rows: DataFrame,
               teacher_rows: pd.DataFrame) -> list[Scored]:
    """The teacher's features-only variant and the sequence-only teacher (when one is registered)."""
    found = [Scored(TEACHER, "features_only", teacher.version, teacher.model_uri,
                    features_only(cfg, teacher, rows, teacher_rows))]
    try:
        sequence_only = latest_version(cfg, SEQUENCE_ONLY_MODEL_NAME, "finetune")
    except ModelNotFoundError:
        log.warning("no %s registered (evaluation.ablations was off at finetune time): its row is left out",
                    SEQUENCE_ONLY_MODEL_NAME)
        return found
    found.append(Scored(TEACHER, "sequence_only", sequence_only.version, sequence_only.model_uri,
                        score_model(spark, cfg, sequence_only, rows)))
    return found


def run_evaluate(spark: SparkSession, cfg: Config, plan: SnapshotPlan | None = None) -> EvaluationReport:
    """``propensity evaluate``: every model, variant and baseline into ``model_evaluations``, then the gates.

    :param plan: snapshot dates; None: the training plan of ``events`` (its snapshots must be built).
    :raises ModelNotFoundError: the teacher or the student has not been trained yet.
    """
    plan = plan or training_plan(spark, cfg)
    setup_mlflow(cfg)
    members = {TEACHER: latest_version(cfg, TEACHER, "finetune"), STUDENT: latest_version(cfg, STUDENT, "distill")}
    rows_df = split_rows(spark, cfg, plan).withColumn(COLD_START, cold_start()).persist()
    try:
        with mlflow.start_run(run_name="evaluate", tags={"stage": "evaluate"}) as run:
            mlflow.log_params({"evaluate.validation_snapshot": plan.validation.isoformat(),
                               "evaluate.test_snapshot": plan.test.isoformat(),
                               **{f"evaluate.model.{k}": v.model_uri for k, v in members.items()}})
            scored = {name: score_model(spark, cfg, version, rows_df) for name, version in members.items()}
            example = input_example(rows_df.limit(5).toPandas(), list(FEATURE_COLUMNS))
            fusion, weights, scored[FUSION] = _fusion(cfg, run.info.run_id, scored[TEACHER], scored[STUDENT], members,
                                                      example)
            members[FUSION] = fusion
            models = [Scored(n, "full", members[n].version, members[n].model_uri, f) for n, f in scored.items()]
            if cfg.evaluation.ablations:
                models += _ablations(spark, cfg, members[TEACHER], rows_df, scored[TEACHER])
            baseline_rows = _baselines(spark, cfg, plan, rows_df)
            comparison, by_key = intervals(models, baseline_rows, cfg.evaluation.bootstrap_rounds, cfg.training.seed)
            metric_rows: list[dict[str, Any]] = []
            for model in models:
                log_plots(model.name, model.version, model.rows, model.variant)
                metric_rows += model_metric_rows(model.name, model.version, model.model_uri, model.rows, model.variant)
            for name, frame in baseline_rows.items():
                log_plots(name, None, frame)
                metric_rows += model_metric_rows(name, None, f"mllib:{name}", frame)
            metric_rows = _with_intervals(metric_rows, by_key)
            log_summary(metric_rows)
            table = test_auc_table(metric_rows)
            mlflow.log_text(table.to_string(), "evaluation/test_auc.txt")
            mlflow.log_text(format_comparison(comparison), "evaluation/auc_vs_best_baseline.txt")
            test_auc = {str(m): {t: _float(table.loc[m, t]) for t in TASKS} for m in table.index}
            checked = check_gates(test_auc, {n: v.version for n, v in members.items()},
                                  list(baselines.BASELINES), cfg.evaluation.gate_margin)
            promoted = apply_gates(cfg, members, checked)
            mlflow.log_metrics({f"gate_passed.{n}": float(ok) for n, ok in promoted.items()})
            write_evaluations(spark, cfg, metric_rows, run.info.run_id)
    finally:
        rows_df.unpersist()
    return EvaluationReport(table, weights, checked, promoted, {n: v.version for n, v in members.items()}, comparison)


def _baselines(spark: SparkSession, cfg: Config, plan: SnapshotPlan, rows: DataFrame) -> dict[str, pd.DataFrame]:
    """Each baseline tuned on validation, scoring the evaluation rows; the chosen parameters go to MLflow."""
    train_rows = sample_rows(labelled(examples(spark, cfg, plan.train)), cfg.training.max_train_rows,
                             cfg.training.seed)
    found: dict[str, pd.DataFrame] = {}
    for name in baselines.BASELINES:
        result = baselines.fit_and_score(train_rows, rows, list(FEATURE_COLUMNS), name, cfg.evaluation,
                                         cfg.training.seed)
        mlflow.log_params({f"{name}.{task}.{k}": v for task, chosen in result.chosen.items()
                           for k, v in chosen.items() if k != "validation_auc"})
        found[name] = result.scored
    return found


def _float(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)
