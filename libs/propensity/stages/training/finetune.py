"""``propensity finetune``: the teacher's three heads (and, in ``full`` mode, its encoder) on labels.

Rows: labelled ``training_examples`` of the plan's train snapshots on the source platforms
(``training.source_platforms``; empty: every platform but the target), a seeded sample of
``training.max_train_rows``; the validation snapshot scores each epoch and picks the best
one. With ``training.target_platform`` a second step adapts the model to that platform's
labels (``training.target_label_fraction`` of them), in the same transfer mode.

The encoder starts from the newest ``propensity pretrain`` output (or
``training.init_checkpoint``). Feature normalisation statistics come from the train rows
and are saved with the model. Each head starts as a logistic regression on the normalised
features and keeps it (:mod:`~propensity.stages.training.wide`); after each epoch every
task's deep part gets a weight in [0, 1] chosen on validation, and the starting point
competes with every epoch for "best on validation".
The result is logged as a pyfunc model and registered as ``propensity_teacher`` (a new
version each run). With ``evaluation.ablations`` a second teacher is trained the same way (in the
same TorchDistributor launch, logged to a run of its own) but without the aggregate features and
registered as ``propensity_teacher_sequence_only``:
``propensity evaluate`` reports it next to the teacher's features-only part, so a user sees
what the encoder adds on their own data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
from pyspark.sql import SparkSession

from propensity.core.config import Config
from propensity.core.datasets import SnapshotPlan, examples, training_plan
from propensity.core.errors import DataNotReadyError
from propensity.core.schema import FEATURE_COLUMNS
from propensity.core.tracking import (
    checkpoint_dir,
    client,
    log_params,
    log_resolved_config,
    setup_mlflow,
    stored_path,
)
from propensity.models.pyfunc import input_example, log_pyfunc_model
from propensity.models.registry import (
    SEQUENCE_ONLY_MODEL_NAME,
    TEACHER_MODEL_NAME,
    RegisteredModelVersion,
    registered_name,
)
from propensity.stages.training.fit import (
    FitOutcome,
    FitSpec,
    TrainingRows,
    fit_heads,
    fit_series,
    log_selection,
    training_rows,
)
from propensity.stages.training.start import PretrainedEncoder, find_pretrained

log = logging.getLogger(__name__)


def source_platforms(spark: SparkSession, cfg: Config, plan: SnapshotPlan) -> list[str]:
    """Source platforms: the configured ones, else every platform with rows except the target (empty: all).

    :raises DataNotReadyError: the target is the only platform.
    """
    train = cfg.training
    if train.source_platforms or train.target_platform is None:
        return list(train.source_platforms)
    rows = examples(spark, cfg, plan.train).select("platform").distinct().collect()
    sources = sorted(r["platform"] for r in rows if r["platform"] != train.target_platform)
    if not sources:
        raise DataNotReadyError(f"training.target_platform={train.target_platform!r} is the only platform;"
                                " a transfer needs at least one other source platform")
    return sources


def _log_run_inputs(cfg: Config, plan: SnapshotPlan, start: PretrainedEncoder, sources: list[str]) -> None:
    log_params("teacher", cfg.teacher.to_dict())
    log_params("training", cfg.training.to_dict())
    mlflow.log_params({"finetune.train_snapshots": ",".join(d.isoformat() for d in plan.train),
                       "finetune.validation_snapshot": plan.validation.isoformat(),
                       "finetune.test_snapshot": plan.test.isoformat(),
                       "finetune.sources": ",".join(sources) or "all",
                       "finetune.encoder": stored_path(cfg, start.encoder_dir)})
    log_resolved_config(cfg)


def run_finetune(spark: SparkSession, cfg: Config, plan: SnapshotPlan | None = None) -> RegisteredModelVersion:
    """``propensity finetune``: fine-tune the teacher, log it to MLflow and register a new version.

    :param plan: snapshot dates; None: the training plan of ``events`` (its snapshots must be built).
    :returns: the registered ``propensity_teacher`` version.
    :raises DataNotReadyError: no pretrained encoder, a missing snapshot, or no labelled rows.
    """
    plan = plan or training_plan(spark, cfg)
    start = find_pretrained(cfg, cfg.teacher)
    sources = source_platforms(spark, cfg, plan)
    experiment_id = setup_mlflow(cfg)
    with (_ablation_run(cfg, experiment_id) as ablation_id, training_rows(spark, cfg, plan, sources) as rows):
        with mlflow.start_run(run_name="teacher-finetune", tags={"stage": "finetune", "model": "teacher"}) as run:
            _log_run_inputs(cfg, plan, start, sources)
            mlflow.log_param("finetune.rows", rows.train.count())
            out = checkpoint_dir(cfg, "teacher", "finetune", run.info.run_id)
            specs = [FitSpec("finetune", cfg.teacher, start, out, run_id=run.info.run_id)]
            if ablation_id is not None:  # trained in the same launch, logged to its own run
                specs.append(FitSpec("sequence_only", cfg.teacher, start,
                                     checkpoint_dir(cfg, "teacher", "sequence_only", ablation_id),
                                     run_id=ablation_id, with_features=False))
            outcome, *ablation = fit_series(spark, cfg, [(rows, spec) for spec in specs])
            log_selection("finetune", outcome)
            if cfg.training.target_platform:
                outcome = _adapt(spark, cfg, plan, outcome, run.info.run_id)
                log_selection("adapt", outcome)
            mlflow.log_metric("finetune_samples_per_s", float(outcome.result["samples_per_s"]))
            version = log_pyfunc_model(outcome.model_dir, outcome.stats_path,
                                       input_example(rows.example(), list(FEATURE_COLUMNS)),
                                       registered_name(cfg, TEACHER_MODEL_NAME))
        log.info("registered %s version %s (run %s)", version.name, version.version, version.run_id)
        if ablation_id is not None:
            _register_sequence_only(cfg, ablation_id, ablation[0], rows)
    return version


@contextmanager
def _ablation_run(cfg: Config, experiment_id: str) -> Iterator[str | None]:
    """The sequence-only ablation's MLflow run (None without ``evaluation.ablations``): created first, so
    that it trains in the teacher's launch, and completed by :func:`_register_sequence_only`; marked
    FAILED when anything before that raises."""
    if not cfg.evaluation.ablations:
        yield None
        return
    tracking = client(cfg)
    run = tracking.create_run(experiment_id, run_name="teacher-sequence-only",
                              tags={"stage": "finetune", "model": "teacher", "variant": "sequence_only"})
    try:
        yield run.info.run_id
    except BaseException:
        tracking.set_terminated(run.info.run_id, "FAILED")
        raise


def _register_sequence_only(cfg: Config, run_id: str, outcome: FitOutcome, rows: TrainingRows
                            ) -> RegisteredModelVersion:
    """The ablation: the teacher trained the same way without aggregate features, registered on its own."""
    with mlflow.start_run(run_id=run_id):
        log_params("training", cfg.training.to_dict())
        log_selection("sequence_only", outcome)
        version = log_pyfunc_model(outcome.model_dir, outcome.stats_path, input_example(rows.example(), []),
                                   registered_name(cfg, SEQUENCE_ONLY_MODEL_NAME))
    log.info("registered %s version %s (the sequence-only ablation)", version.name, version.version)
    return version


def _adapt(spark: SparkSession, cfg: Config, plan: SnapshotPlan, source: FitOutcome, run_id: str) -> FitOutcome:
    """Second step: continue from the source model on the target platform's labels."""
    target = str(cfg.training.target_platform)
    with training_rows(spark, cfg, plan, [target], cfg.training.target_label_fraction) as rows:
        mlflow.log_param("adapt.rows", rows.train.count())
        return fit_heads(spark, cfg, rows, FitSpec("adapt", cfg.teacher, source.continued(),
                                                   source.model_dir.parent / "adapt", run_id=run_id))
