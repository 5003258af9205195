"""``propensity distill``: a small student encoder learns from the teacher (knowledge distillation).

The teacher (``distill.teacher_uri``, pinned to the version it points at now) scores the
labelled train rows once in Spark (``mlflow.pyfunc.spark_udf``); its logits travel with the
rows into the petastorm cache, so no epoch recomputes them. The student is a new encoder of
the ``student`` section's size over the teacher's tokenizer, with the same wide-and-deep
heads, trained through the same TorchDistributor path as the teacher on
:func:`~propensity.training.model.distillation_loss` (``distill.alpha``,
``distill.temperature``). It is logged as a pyfunc and registered as ``propensity_student``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import mlflow
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from propensity.config import Config
from propensity.errors import PropensityError
from propensity.training import data, mlflow_utils
from propensity.training.model import TASKS
from propensity.training.pretrain import Pretrained

if TYPE_CHECKING:
    from propensity.features import SnapshotPlan

log = logging.getLogger(__name__)

#: Probabilities are clipped to [EPS, 1 - EPS] before they become logits.
EPS = 1e-6


class ModelArtifacts(NamedTuple):
    """A registered propensity model downloaded under ``storage.root``."""

    version: mlflow_utils.RegisteredModelVersion
    pyfunc_dir: Path
    model_dir: Path
    tokenizer_dir: Path


def model_artifacts(cfg: Config, model_uri: str, key: str = "distill.teacher_uri") -> ModelArtifacts:
    """The version, pyfunc folder, model folder and tokenizer folder of the propensity model at
    ``model_uri``, downloaded once.

    :param key: the config key or option that named the URI, for messages.
    :raises PropensityError: the URI does not resolve to a registered ``propensity`` model.
    """
    from propensity.scoring.score import resolve_model

    try:
        version = mlflow_utils.resolve_version(cfg, model_uri)
    except ValueError as e:
        raise PropensityError(f"{key}: {e}") from e
    if version is None:
        raise PropensityError(f"{key}={model_uri!r} is not a models:/ URI; use e.g. models:/propensity_teacher/latest")
    pyfunc_dir = Path(resolve_model(cfg, version.model_uri).local_path)
    local = pyfunc_dir / "artifacts"
    if not (local / "tokenizer" / "tokenizer.json").is_file() or not (local / "model").is_dir():
        raise PropensityError(f"{key}: {version.model_uri} is not a propensity model (no model and tokenizer"
                              " artifacts); give a model registered by `propensity finetune` or `distill`")
    return ModelArtifacts(version, pyfunc_dir, local / "model", local / "tokenizer")


def with_teacher_logits(spark: SparkSession, teacher_uri: str, rows: DataFrame) -> DataFrame:
    """``rows`` plus ``teacher_logit_<task>`` columns: the teacher's logits, one Spark pass.

    :param teacher_uri: the teacher pyfunc: a ``models:/`` URI or its local folder.
    """
    from propensity.evaluation.evaluate import score

    scored = score(spark, teacher_uri, rows)
    clipped = {t: F.least(F.greatest(F.col(f"{t}_score"), F.lit(EPS)), F.lit(1 - EPS)) for t in TASKS}
    columns = [(F.log(clipped[t]) - F.log(1 - clipped[t])).cast("float").alias(f"teacher_logit_{t}") for t in TASKS]
    return scored.select(*rows.columns, *columns)


def run_distill(spark: SparkSession, cfg: Config, plan: SnapshotPlan | None = None
                ) -> mlflow_utils.RegisteredModelVersion:
    """``propensity distill``: train the student on the teacher's soft labels and register it.

    :param plan: snapshot dates; None: planned from ``events``.
    :returns: the registered ``propensity_student`` version.
    :raises PropensityError: no teacher, or no labelled train rows.
    """
    from propensity.features import FEATURE_COLUMNS
    from propensity.training.finetune import finetune_model, labelled, log_selection, train_and_validation_rows
    from propensity.training.pyfunc import input_example, log_pyfunc_model

    plan = plan or data.load_plan(spark, cfg)
    mlflow_utils.setup_mlflow(cfg)
    teacher = model_artifacts(cfg, cfg.distill.teacher_uri)
    # The student is trained from scratch on every platform, all its weights trained.
    train = replace(cfg.training, transfer_mode="full", target_platform=None, source_platforms=[])
    rows, validation = train_and_validation_rows(spark, cfg, plan, train, [])
    features = list(FEATURE_COLUMNS)
    distill = {"alpha": cfg.distill.alpha, "temperature": cfg.distill.temperature}
    try:
        # the folder model_artifacts downloaded: no second download by spark_udf
        soft = with_teacher_logits(spark, str(teacher.pyfunc_dir), rows)
        with mlflow.start_run(run_name="student-distill", tags={"stage": "distill", "model": "student"}) as run:
            mlflow_utils.log_params("student", cfg.student.to_dict())
            mlflow_utils.log_params("training", train.to_dict())
            mlflow_utils.log_params("distill", {**distill, "teacher": teacher.version.model_uri})
            mlflow.log_params({"distill.train_snapshots": ",".join(d.isoformat() for d in plan.train),
                               "distill.validation_snapshot": plan.validation.isoformat(),
                               "distill.rows": rows.count()})
            mlflow_utils.log_resolved_config(cfg, {})
            out = mlflow_utils.checkpoint_dir(cfg, "student", "distill", run.info.run_id)
            outcome = finetune_model(spark, cfg, soft, validation, features, cfg.student, train,
                                     Pretrained(teacher.tokenizer_dir, teacher.tokenizer_dir), out, stage="distill",
                                     run_id=run.info.run_id, from_scratch=True, distill=distill,
                                     wide_rows=labelled(data.examples(spark, cfg, plan.train)))
            log_selection("distill", outcome)
            mlflow.log_metric("distill_samples_per_s", float(outcome.result["samples_per_s"]))
            example = input_example(validation.limit(5).toPandas(), features)
            version = log_pyfunc_model(outcome.model_dir, teacher.tokenizer_dir, outcome.stats_path, example,
                                       mlflow_utils.registered_name(cfg, mlflow_utils.STUDENT_MODEL_NAME))
    finally:
        rows.unpersist()
    log.info("registered %s version %s (distilled from %s)", version.name, version.version, teacher.version.model_uri)
    return version
