"""``propensity evaluate``: teacher, student, their fusion and the MLlib baselines, then the gates.

1. The newest ``propensity_teacher`` and ``propensity_student`` versions score the validation
   and test rows (each pinned to its version, through the scoring job's own Spark path).
2. The fusion weights are chosen on validation; the fusion is logged and registered as
   ``propensity_fusion`` and its scores are the weighted mix of the two members' scores.
3. ``baseline_lr`` and ``baseline_gbt`` are fitted on the train snapshots and score the same rows.
4. All metric rows go to ``model_evaluations`` in one commit; a comparison table (test AUC
   per model and task) is printed and logged to the MLflow run ``evaluate``.
5. Each of the three models gets ``@champion`` only if it passes its gates
   (:mod:`~propensity.stages.evaluation.gates`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import mlflow
import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from propensity.core.config import Config
from propensity.core.datasets import SnapshotPlan, examples, labelled, sample_rows, split_rows, training_plan
from propensity.core.schema import FEATURE_COLUMNS, SCORE_COLUMNS, TASKS
from propensity.core.tracking import checkpoint_dir, setup_mlflow
from propensity.models.pyfunc import fuse, input_example, log_fusion_model
from propensity.models.registry import (
    FUSION_MODEL_NAME,
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
    log_summary,
    model_metric_rows,
    write_evaluations,
)

log = logging.getLogger(__name__)

TEACHER = TEACHER_MODEL_NAME
STUDENT = STUDENT_MODEL_NAME
FUSION = FUSION_MODEL_NAME
_SCORES = [SCORE_COLUMNS[t] for t in TASKS]


@dataclass
class EvaluationReport:
    """What ``propensity evaluate`` found: test AUCs, fusion weights, gates and promotions."""

    test_auc: pd.DataFrame
    fusion_weights: dict[str, float]
    gates: list[Gate]
    promoted: dict[str, bool]
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[Gate]:
        """The gates that failed."""
        return [g for g in self.gates if not g.passed]

    def format(self) -> str:
        """The comparison table, fusion weights and one line per gate."""
        lines = ["test AUC (all platforms):", self.test_auc.to_string(float_format=lambda v: f"{v:.4f}"),
                 "fusion weights (teacher share): " + ", ".join(f"{t}={w:g}" for t, w in self.fusion_weights.items())]
        lines += [g.describe() for g in self.gates]
        lines += [f"{name} v{self.versions.get(name, '?')}: " + ("now @champion" if ok else "not promoted;"
                  " the previous @champion (if any) stays") for name, ok in self.promoted.items()]
        return "\n".join(lines)


def score_model(spark: SparkSession, cfg: Config, version: RegisteredModelVersion, rows: DataFrame) -> pd.DataFrame:
    """``rows`` scored by one registered model version, as pandas (``SCORED_COLUMNS``)."""
    keep = [c for c in SCORED_COLUMNS if c not in _SCORES]
    return score_frame(spark, cfg, rows, resolve_model(cfg, version.model_uri), keep=keep).toPandas()


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
    version = log_fusion_model((teacher_files.model_dir, teacher_files.tokenizer_dir),
                               (student_files.model_dir, student_files.tokenizer_dir), weights, example,
                               registered_name(cfg, FUSION), checkpoint_dir(cfg, "fusion", run_id))
    scores = fuse(merged[_SCORES].set_axis(list(TASKS), axis=1),
                  merged[[f"{c}_student" for c in _SCORES]].set_axis(list(TASKS), axis=1), weights)
    fused = merged[[c for c in SCORED_COLUMNS if c not in _SCORES]].copy()
    for t in TASKS:
        fused[SCORE_COLUMNS[t]] = scores[t].to_numpy()
    return version, weights, fused


def test_auc_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Test AUC over all platforms, one row per model and one column per task."""
    frame = pd.DataFrame([r for r in rows if r["split"] == "test" and r["platform"] == "all"])
    table = frame.pivot_table(index="model_name", columns="task", values="auc", aggfunc="first")
    return table.reindex(columns=list(TASKS))


def run_evaluate(spark: SparkSession, cfg: Config, plan: SnapshotPlan | None = None) -> EvaluationReport:
    """``propensity evaluate``: every model and baseline into ``model_evaluations``, then the gates.

    :param plan: snapshot dates; None: the training plan of ``events`` (its snapshots must be built).
    :raises ModelNotFoundError: the teacher or the student has not been trained yet.
    """
    plan = plan or training_plan(spark, cfg)
    setup_mlflow(cfg)
    members = {TEACHER: latest_version(cfg, TEACHER, "finetune"), STUDENT: latest_version(cfg, STUDENT, "distill")}
    rows_df = split_rows(spark, cfg, plan).persist()
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
            metric_rows: list[dict[str, Any]] = []
            for name, frame in scored.items():
                metric_rows += model_metric_rows(name, members[name].version, members[name].model_uri, frame)
            train_rows = sample_rows(labelled(examples(spark, cfg, plan.train)), cfg.training.max_train_rows,
                                     cfg.training.seed)
            for name in baselines.BASELINES:
                result = baselines.fit_and_score(train_rows, rows_df, list(FEATURE_COLUMNS), name, cfg.evaluation,
                                                 cfg.training.seed)
                metric_rows += model_metric_rows(name, None, f"mllib:{name}", result.scored)
            log_summary(metric_rows)
            table = test_auc_table(metric_rows)
            mlflow.log_text(table.to_string(), "evaluation/test_auc.txt")
            test_auc = {str(m): {t: _float(table.loc[m, t]) for t in TASKS} for m in table.index}
            checked = check_gates(test_auc, {n: v.version for n, v in members.items()},
                                  list(baselines.BASELINES), cfg.evaluation.gate_margin)
            promoted = apply_gates(cfg, members, checked)
            mlflow.log_metrics({f"gate_passed.{n}": float(ok) for n, ok in promoted.items()})
            write_evaluations(spark, cfg, metric_rows, run.info.run_id)
    finally:
        rows_df.unpersist()
    return EvaluationReport(table, weights, checked, promoted, {n: v.version for n, v in members.items()})


def _float(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)
