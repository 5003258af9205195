"""``propensity distill``: a small student encoder learns from the teacher (knowledge distillation).

The teacher (``distill.teacher_uri``, pinned to the version it points at now) scores the
labelled train rows once in Spark (:func:`~propensity.models.spark_scoring.score_frame`); its
logits travel with the rows into the petastorm cache, so no epoch recomputes them. The
student is a new encoder of the ``student`` section's size (it reads the newest events only), with
the same wide-and-deep heads, trained through the same TorchDistributor path as the teacher
on :func:`~propensity.models.network.distillation_loss` (``distill.alpha``,
``distill.temperature``), on every platform with all its weights trained. It is logged as a
pyfunc and registered as ``propensity_student``.
"""

from __future__ import annotations

import dataclasses
import logging

import mlflow
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from propensity.core.config import Config
from propensity.core.datasets import SnapshotPlan, training_plan
from propensity.core.schema import FEATURE_COLUMNS, SCORE_COLUMNS, TASKS
from propensity.core.tracking import checkpoint_dir, log_params, log_resolved_config, setup_mlflow
from propensity.models.pyfunc import input_example, log_pyfunc_model
from propensity.models.registry import (
    STUDENT_MODEL_NAME,
    RegisteredModelVersion,
    model_artifacts,
    registered_name,
    resolve_model,
)
from propensity.models.spark_scoring import score_frame
from propensity.stages.training.fit import TEACHER_LOGITS, FitSpec, fit_heads, log_selection, training_rows
from propensity.stages.training.start import NewEncoder
from propensity.stages.training.train_fn import Distillation

log = logging.getLogger(__name__)

#: Probabilities are clipped to [EPS, 1 - EPS] before they become logits.
EPS = 1e-6


def with_teacher_logits(spark: SparkSession, cfg: Config, teacher_uri: str, rows: DataFrame) -> DataFrame:
    """``rows`` plus ``teacher_logit_<task>`` columns: the teacher's logits, one Spark pass."""
    scored = score_frame(spark, cfg, rows, resolve_model(cfg, teacher_uri), keep=rows.columns)
    clipped = {t: F.least(F.greatest(F.col(SCORE_COLUMNS[t]), F.lit(EPS)), F.lit(1 - EPS)) for t in TASKS}
    logits = [(F.log(clipped[t]) - F.log(1 - clipped[t])).cast("float").alias(name)
              for t, name in zip(TASKS, TEACHER_LOGITS, strict=True)]
    return scored.select(*rows.columns, *logits)


def run_distill(spark: SparkSession, cfg: Config, plan: SnapshotPlan | None = None) -> RegisteredModelVersion:
    """``propensity distill``: train the student on the teacher's soft labels and register it.

    :param plan: snapshot dates; None: the training plan of ``events`` (its snapshots must be built).
    :returns: the registered ``propensity_student`` version.
    :raises ModelNotFoundError: no teacher at ``distill.teacher_uri``.
    :raises DataNotReadyError: a missing snapshot, or no labelled train rows.
    """
    plan = plan or training_plan(spark, cfg)
    setup_mlflow(cfg)
    teacher = model_artifacts(cfg, cfg.distill.teacher_uri, "distill.teacher_uri")
    # The student learns every platform with all its weights trained, whatever the teacher's transfer setting.
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, transfer_mode="full",
                                                                target_platform=None, source_platforms=[]))
    distillation = Distillation(alpha=cfg.distill.alpha, temperature=cfg.distill.temperature)
    with training_rows(spark, cfg, plan, []) as rows:
        soft = dataclasses.replace(rows, train=with_teacher_logits(spark, cfg, teacher.version.model_uri, rows.train))
        with mlflow.start_run(run_name="student-distill", tags={"stage": "distill", "model": "student"}) as run:
            log_params("student", cfg.student.to_dict())
            log_params("training", cfg.training.to_dict())
            log_params("distill", {**dataclasses.asdict(distillation), "teacher": teacher.version.model_uri})
            mlflow.log_params({"distill.train_snapshots": ",".join(d.isoformat() for d in plan.train),
                               "distill.validation_snapshot": plan.validation.isoformat(),
                               "distill.rows": rows.train.count()})
            log_resolved_config(cfg)
            spec = FitSpec("distill", cfg.student, NewEncoder(cfg.student),
                           checkpoint_dir(cfg, "student", "distill", run.info.run_id), distillation, run.info.run_id)
            outcome = fit_heads(spark, cfg, soft, spec)
            log_selection("distill", outcome)
            mlflow.log_metric("distill_samples_per_s", float(outcome.result["samples_per_s"]))
            example = input_example(rows.example(), list(FEATURE_COLUMNS))
            version = log_pyfunc_model(outcome.model_dir, outcome.stats_path, example,
                                       registered_name(cfg, STUDENT_MODEL_NAME))
    log.info("registered %s version %s (distilled from %s)", version.name, version.version, teacher.version.model_uri)
    return version
