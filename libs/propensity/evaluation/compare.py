"""``propensity evaluate``: teacher, student, their fusion and the MLlib baselines, then the gates.

1. The newest ``propensity_teacher`` and ``propensity_student`` versions score the validation
   and test rows (each pinned to its version).
2. The fusion weights are chosen on validation; the fusion is logged and registered as
   ``propensity_fusion`` and its scores are the weighted mix of the two members' scores.
3. ``baseline_lr`` and ``baseline_gbt`` are fitted on the train snapshots and score the same rows.
4. All metric rows go to ``model_evaluations`` in one commit; a comparison table (test AUC
   per model and task) is printed and logged to the MLflow run ``evaluate``.
5. Each of the three models gets ``@champion`` only if it passes its gates
   (:mod:`propensity.evaluation.gates`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd
from pyspark.sql import SparkSession

from propensity.config import Config
from propensity.errors import PropensityError
from propensity.evaluation import baselines, evaluate
from propensity.evaluation.gates import Gate, apply_gates, check_gates
from propensity.training import data, mlflow_utils
from propensity.training.model import TASKS

if TYPE_CHECKING:
    from propensity.features import SnapshotPlan

log = logging.getLogger(__name__)

TEACHER = mlflow_utils.TEACHER_MODEL_NAME
STUDENT = mlflow_utils.STUDENT_MODEL_NAME
FUSION = mlflow_utils.FUSION_MODEL_NAME


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


def _latest(cfg: Config, name: str, stage: str) -> mlflow_utils.RegisteredModelVersion:
    registered = mlflow_utils.registered_name(cfg, name)
    try:
        version = mlflow_utils.resolve_version(cfg, f"models:/{registered}/latest")
    except ValueError as e:
        raise PropensityError(f"no {registered} model to evaluate; run `propensity {stage}` first") from e
    assert version is not None
    return version


def _fusion(cfg: Config, run_id: str, teacher: pd.DataFrame, student: pd.DataFrame, uris: dict[str, str],
            example: pd.DataFrame) -> tuple[mlflow_utils.RegisteredModelVersion, dict[str, float], pd.DataFrame]:
    """Choose the weights on validation, register the fusion, and return its scored rows."""
    from propensity.training.distill import model_artifacts
    from propensity.training.fusion import choose_weights, fuse, log_fusion_model

    merged = teacher.merge(student[[*evaluate.KEYS, *[f"{t}_score" for t in TASKS]]], on=evaluate.KEYS,
                           suffixes=("", "_student"), validate="one_to_one")
    val = merged[merged["split"] == "validation"]
    known = {t: val[f"label_{t}"].notna().to_numpy() for t in TASKS}
    weights = choose_weights({t: val.loc[known[t], f"label_{t}"].to_numpy() for t in TASKS},
                             {t: val.loc[known[t], f"{t}_score"].to_numpy() for t in TASKS},
                             {t: val.loc[known[t], f"{t}_score_student"].to_numpy() for t in TASKS},
                             cfg.evaluation.fusion_weight_step)
    teacher_files = model_artifacts(cfg, uris[TEACHER], "the teacher")
    student_files = model_artifacts(cfg, uris[STUDENT], "the student")
    version = log_fusion_model((teacher_files.model_dir, teacher_files.tokenizer_dir),
                               (student_files.model_dir, student_files.tokenizer_dir), weights, example,
                               mlflow_utils.registered_name(cfg, FUSION),
                               mlflow_utils.checkpoint_dir(cfg, "fusion", run_id))
    scores = fuse(merged[[f"{t}_score" for t in TASKS]].set_axis(list(TASKS), axis=1),
                  merged[[f"{t}_score_student" for t in TASKS]].set_axis(list(TASKS), axis=1), weights)
    fused = merged[[c for c in evaluate.SCORED_COLUMNS if not c.endswith("_score")]].copy()
    for t in TASKS:
        fused[f"{t}_score"] = scores[t].to_numpy()
    return version, weights, fused


def test_auc_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Test AUC over all platforms, one row per model and one column per task."""
    frame = pd.DataFrame([r for r in rows if r["split"] == "test" and r["platform"] == "all"])
    table = frame.pivot_table(index="model_name", columns="task", values="auc", aggfunc="first")
    return table.reindex(columns=list(TASKS))


def run_evaluate_all(spark: SparkSession, cfg: Config, plan: SnapshotPlan | None = None) -> EvaluationReport:
    """``propensity evaluate``: every model and baseline into ``model_evaluations``, then the gates.

    :raises PropensityError: the teacher or the student has not been trained yet.
    """
    from propensity.features import FEATURE_COLUMNS
    from propensity.training.finetune import labelled
    from propensity.training.pyfunc import input_example

    plan = plan or data.load_plan(spark, cfg)
    mlflow_utils.setup_mlflow(cfg)
    members = {TEACHER: _latest(cfg, TEACHER, "finetune"), STUDENT: _latest(cfg, STUDENT, "distill")}
    uris = {name: v.model_uri for name, v in members.items()}
    rows_df = evaluate.split_rows(spark, cfg, plan).persist()
    try:
        with mlflow.start_run(run_name="evaluate", tags={"stage": "evaluate"}) as run:
            mlflow.log_params({"evaluate.validation_snapshot": plan.validation.isoformat(),
                               "evaluate.test_snapshot": plan.test.isoformat(),
                               **{f"evaluate.model.{k}": v for k, v in uris.items()}})
            scored = {name: evaluate.score_model(spark, cfg, uri, rows_df)[2] for name, uri in uris.items()}
            example = input_example(rows_df.limit(5).toPandas(), list(FEATURE_COLUMNS))
            fusion, weights, scored[FUSION] = _fusion(cfg, run.info.run_id, scored[TEACHER], scored[STUDENT], uris,
                                                      example)
            members[FUSION] = fusion
            metric_rows: list[dict[str, Any]] = []
            for name, frame in scored.items():
                metric_rows += evaluate.model_metric_rows(name, members[name].version, members[name].model_uri,
                                                          frame)
            train_rows = data.sample_rows(labelled(data.examples(spark, cfg, plan.train)),
                                          cfg.training.max_train_rows, cfg.training.seed)
            for name in baselines.BASELINES:
                result = baselines.fit_and_score(train_rows, rows_df, list(FEATURE_COLUMNS), name, cfg.evaluation,
                                                 cfg.training.seed)
                metric_rows += evaluate.model_metric_rows(name, None, f"mllib:{name}", result.scored)
            evaluate.log_summary(metric_rows)
            table = test_auc_table(metric_rows)
            mlflow.log_text(table.to_string(), "evaluation/test_auc.txt")
            test_auc = {str(m): {t: _float(table.loc[m, t]) for t in TASKS} for m in table.index}
            checked = check_gates(test_auc, {n: v.version for n, v in members.items()},
                                  list(baselines.BASELINES), cfg.evaluation.gate_margin)
            promoted = apply_gates(cfg, members, checked)
            mlflow.log_metrics({f"gate_passed.{n}": float(ok) for n, ok in promoted.items()})
            evaluate.write_evaluations(spark, cfg, metric_rows, run.info.run_id)
    finally:
        rows_df.unpersist()
    return EvaluationReport(table, weights, checked, promoted, {n: v.version for n, v in members.items()})


def _float(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)
