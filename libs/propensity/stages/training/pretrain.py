"""``propensity pretrain``: masked-language-model pretraining of the teacher encoder.

Texts are the ``behavior_text`` of every platform on the plan's train snapshots (a seeded
sample of ``training.max_pretrain_rows``); the validation snapshot's texts give the
validation MLM loss. Without ``training.init_checkpoint`` a WordPiece tokenizer is trained
on the texts and the encoder starts from random weights (size from the ``teacher``
section); with it, tokenizer and weights come from that local Hugging Face folder
(domain-adaptive continued pretraining; nothing is downloaded).

Output, under ``<storage.root>/checkpoints/teacher/pretrain/<mlflow run id>/``:
``encoder/`` (``BertForMaskedLM.save_pretrained``), ``tokenizer/`` and ``result.json``;
``LATEST`` next to it names the newest folder, which ``propensity finetune`` starts from.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import mlflow
from pyspark.sql import DataFrame, SparkSession

from propensity.core.config import Config, ModelSettings, TrainSettings
from propensity.core.datasets import SnapshotPlan, examples, sample_rows, training_plan
from propensity.core.errors import DataNotReadyError
from propensity.core.schema import TEXT_COLUMN
from propensity.core.tracking import log_params, log_resolved_config, setup_mlflow, tracking_uri
from propensity.models.network import bert_config
from propensity.models.tokenizer import load_tokenizer, tokenize_column, train_tokenizer
from propensity.stages.training import data
from propensity.stages.training.distributed import run_distributed
from propensity.stages.training.loaders import DataSource
from propensity.stages.training.start import TOKENIZER_DIR, mark_latest, pretrain_root, resolve_checkpoint
from propensity.stages.training.train_fn import MlflowTarget, PretrainJob, pretrain_fn

log = logging.getLogger(__name__)


def _prepare_start(texts: DataFrame, model: ModelSettings, train: TrainSettings, out_dir: Path
                   ) -> tuple[Path, Path | None]:
    """``(tokenizer folder, encoder to continue from or None)``: copied from ``training.init_checkpoint``,
    else a tokenizer trained on ``texts``."""
    target = out_dir / TOKENIZER_DIR
    if train.init_checkpoint:
        start = resolve_checkpoint(train.init_checkpoint, model.max_length)
        target.mkdir(parents=True, exist_ok=True)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
            if (start.tokenizer_dir / name).is_file():
                shutil.copy2(start.tokenizer_dir / name, target / name)
        return target, start.encoder_dir
    rows = (r[TEXT_COLUMN] for r in texts.select(TEXT_COLUMN).toLocalIterator())
    return train_tokenizer(rows, model.vocab_size, target), None


def pretrain_job(model: ModelSettings, train: TrainSettings, tokenizer_dir: Path, out_dir: Path,
                 source: DataSource, validation: DataSource | None, init_encoder: Path | None = None,
                 target: MlflowTarget | None = None) -> PretrainJob:
    """The job :func:`~propensity.stages.training.train_fn.pretrain_fn` runs, for a tokenizer and data.

    The architecture comes from ``model`` (vocabulary: the tokenizer's), or from ``init_encoder`` when given.
    """
    tok = load_tokenizer(tokenizer_dir)
    config = bert_config(model, len(tok), pad_token_id=int(tok.pad_token_id))
    return PretrainJob(bert_config=config.to_dict(), train=train, data=source, validation=validation,
                       out_dir=str(out_dir), special_ids=sorted(int(i) for i in tok.all_special_ids),
                       mask_id=int(tok.mask_token_id), init_encoder=str(init_encoder) if init_encoder else None,
                       mlflow=target)


def pretrain_encoder(spark: SparkSession, cfg: Config, texts: DataFrame, validation_texts: DataFrame | None,
                     model: ModelSettings, train: TrainSettings, out_dir: Path,
                     run_id: str | None = None) -> dict[str, Any]:
    """Tokeniser + MLM pretraining of ``texts`` (a ``behavior_text`` column) into ``out_dir``.

    :returns: the train function's summary (history, samples/s, ``out_dir``).
    """
    tokenizer_dir, init_encoder = _prepare_start(texts, model, train, out_dir)
    if run_id is not None:
        mlflow.log_artifacts(str(tokenizer_dir), "tokenizer")
    frames = [data.mlm_frame(tokenize_column(df, str(tokenizer_dir), model.max_length)) if df is not None else None
              for df in (texts, validation_texts)]
    target = MlflowTarget(tracking_uri(cfg), run_id) if run_id else None
    with data.converters(spark, cfg, frames, train.num_processes, train.seed) as (source, val_source):
        if source is None:  # pragma: no cover - the texts frame is never None
            raise DataNotReadyError("no texts to pretrain on")
        job = pretrain_job(model, train, tokenizer_dir, out_dir, source, val_source, init_encoder, target)
        result = run_distributed(pretrain_fn, job, train)
    return result


def run_pretrain(spark: SparkSession, cfg: Config, plan: SnapshotPlan | None = None) -> Path:
    """``propensity pretrain``: pretrain the teacher encoder (``teacher`` size) and return its checkpoint folder.

    :param plan: snapshot dates; None: the training plan of ``events`` (its snapshots must be built).
    :raises DataNotReadyError: a snapshot is missing, or there are no texts on the train snapshots.
    """
    train = cfg.training
    plan = plan or training_plan(spark, cfg)
    texts = sample_rows(data.texts_of(examples(spark, cfg, plan.train)), train.max_pretrain_rows,
                        train.seed).persist()
    validation = sample_rows(data.texts_of(examples(spark, cfg, [plan.validation])), train.max_eval_rows, train.seed)
    try:
        n = texts.count()
        if n == 0:
            raise DataNotReadyError(f"no behaviour texts on the train snapshots {plan.describe()};"
                                    " run `propensity features --training-set`")
        setup_mlflow(cfg)
        with mlflow.start_run(run_name="teacher-pretrain", tags={"stage": "pretrain", "model": "teacher"}) as run:
            out_dir = pretrain_root(cfg) / run.info.run_id
            log_params("teacher", cfg.teacher.to_dict())
            log_params("training", train.to_dict())
            mlflow.log_params({"pretrain.rows": n, "pretrain.snapshots": ",".join(d.isoformat() for d in plan.train)})
            log_resolved_config(cfg)
            result = pretrain_encoder(spark, cfg, texts, validation, cfg.teacher, train, out_dir, run.info.run_id)
            mlflow.log_metric("pretrain_samples_per_s", float(result["samples_per_s"]))
            mlflow.set_tag("checkpoint", str(out_dir))
        mark_latest(cfg, out_dir)
        log.info("pretrained encoder in %s", out_dir)
        return out_dir
    finally:
        texts.unpersist()
