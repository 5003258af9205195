"""``propensity pretrain``: masked-language-model pretraining of the teacher encoder.

Texts are the ``behavior_text`` of every platform on the plan's train snapshots (a seeded
sample of ``training.max_pretrain_rows``); the validation snapshot's texts give the
validation MLM loss. Without ``training.init_checkpoint`` a WordPiece tokenizer is trained
on the texts and the encoder starts from random weights (size from the ``teacher``
section); with it, tokenizer and weights come from that local Hugging Face folder
(domain-adaptive continued pretraining; nothing is downloaded).

Output, under ``<storage.root>/checkpoints/teacher/pretrain/<mlflow run id>/``:
``encoder/`` (``BertForMaskedLM.save_pretrained``), ``tokenizer/`` and ``result.json``;
``LATEST`` next to it names the newest folder, which :mod:`propensity.training.finetune` uses.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from propensity.config import Config
from propensity.errors import ConfigError, PropensityError
from propensity.training import data, mlflow_utils
from propensity.training.loaders import DataSource
from propensity.training.model import bert_config
from propensity.training.settings import ModelSettings, TrainSettings
from propensity.training.train_fn import ENCODER_DIR, MlflowTarget, PretrainJob, pretrain_fn

if TYPE_CHECKING:
    from propensity.features import SnapshotPlan

log = logging.getLogger(__name__)

TOKENIZER_DIR = "tokenizer"
LATEST_FILE = "LATEST"


def pretrain_root(cfg: Config) -> Path:
    """Folder holding one subfolder per pretraining run and the ``LATEST`` pointer."""
    return mlflow_utils.checkpoint_dir(cfg, "teacher", "pretrain")


def latest_pretrained(cfg: Config) -> Path | None:
    """The newest pretraining output folder, or None if ``propensity pretrain`` never ran here."""
    pointer = pretrain_root(cfg) / LATEST_FILE
    if not pointer.is_file():
        return None
    path = Path(pointer.read_text().strip())
    return path if (path / ENCODER_DIR).is_dir() and (path / TOKENIZER_DIR).is_dir() else None


@dataclass(frozen=True)
class Pretrained:
    """A pretrained encoder: a Hugging Face model folder and its tokenizer folder."""

    encoder_dir: Path
    tokenizer_dir: Path


def resolve_checkpoint(path: str, max_length: int) -> Pretrained:
    """The encoder and tokenizer of ``training.init_checkpoint``: a folder written by ``propensity pretrain``
    (``encoder/`` + ``tokenizer/``) or a local Hugging Face BERT folder with its ``tokenizer.json``.

    :raises ConfigError: it is neither, or has fewer positions than ``teacher.max_length``.
    """
    folder = Path(path)
    key = "training.init_checkpoint"
    ours = Pretrained(folder / ENCODER_DIR, folder / TOKENIZER_DIR)
    found = ours if (ours.encoder_dir / "config.json").is_file() else Pretrained(folder, folder)
    if not (found.encoder_dir / "config.json").is_file():
        raise ConfigError(f"{key}={path!r} is not a Hugging Face model folder (no config.json);"
                          " give a local folder written by save_pretrained or by `propensity pretrain`")
    if not (found.tokenizer_dir / "tokenizer.json").is_file():
        raise ConfigError(f"{key}={path!r} has no tokenizer.json; the checkpoint's own fast tokenizer is needed")
    check_positions(found.encoder_dir, max_length, f"{key}={path!r}")
    return found


def check_positions(encoder_dir: Path, max_length: int, where: str) -> None:
    """Make sure the encoder at ``encoder_dir`` has at least ``max_length`` positions.

    :raises ConfigError: it has fewer (``where`` names the encoder in the message).
    """
    from transformers import BertConfig

    positions = BertConfig.from_pretrained(str(encoder_dir)).max_position_embeddings
    if max_length > positions:
        raise ConfigError(f"teacher.max_length={max_length} exceeds the {positions} positions of {where};"
                          f" set teacher.max_length <= {positions} or pretrain again")


def _prepare_start(texts: DataFrame, model: ModelSettings, train: TrainSettings, out_dir: Path
                   ) -> tuple[Path, Path | None]:
    """``(tokenizer folder, encoder to continue from or None)``: copied from ``training.init_checkpoint``,
    else a tokenizer trained on ``texts``."""
    from propensity.tokenizer import train_tokenizer

    target = out_dir / TOKENIZER_DIR
    if train.init_checkpoint:
        start = resolve_checkpoint(train.init_checkpoint, model.max_length)
        target.mkdir(parents=True, exist_ok=True)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
            if (start.tokenizer_dir / name).is_file():
                shutil.copy2(start.tokenizer_dir / name, target / name)
        return target, start.encoder_dir
    rows = (r["behavior_text"] for r in texts.select("behavior_text").toLocalIterator())
    return train_tokenizer(rows, model.vocab_size, target), None


def pretrain_job(model: ModelSettings, train: TrainSettings, tokenizer_dir: Path, out_dir: Path,
                 source: DataSource, validation: DataSource | None, init_encoder: Path | None = None,
                 target: MlflowTarget | None = None) -> PretrainJob:
    """The job :func:`~propensity.training.train_fn.pretrain_fn` runs, for a tokenizer and data.

    The architecture comes from ``model`` (vocabulary: the tokenizer's), or from ``init_encoder`` when given.
    """
    from propensity.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    config = bert_config(len(tok), model.hidden_size, model.num_layers, model.num_heads, model.intermediate_size,
                         model.max_length, model.dropout, pad_token_id=int(tok.pad_token_id))
    return PretrainJob(bert_config=config.to_dict(), train=train, data=source, validation=validation,
                       out_dir=str(out_dir), special_ids=sorted(int(i) for i in tok.all_special_ids),
                       mask_id=int(tok.mask_token_id), init_encoder=str(init_encoder) if init_encoder else None,
                       mlflow=target)


def pretrain_encoder(spark: SparkSession, cfg: Config, texts: DataFrame, validation_texts: DataFrame | None,
                     model: ModelSettings, train: TrainSettings, out_dir: Path,
                     run_id: str | None = None) -> dict[str, object]:
    """Tokeniser + MLM pretraining of ``texts`` (a ``behavior_text`` column) into ``out_dir``.

    :returns: the train function's summary (history, samples/s, ``out_dir``).
    """
    from propensity.tokenizer import tokenize_column
    from propensity.training.distributed import run_distributed

    tokenizer_dir, init_encoder = _prepare_start(texts, model, train, out_dir)
    if run_id is not None:
        mlflow.log_artifacts(str(tokenizer_dir), "tokenizer")
    frames = [data.mlm_frame(tokenize_column(df, str(tokenizer_dir), model.max_length)) if df is not None else None
              for df in (texts, validation_texts)]
    target = MlflowTarget(mlflow_utils.tracking_uri(cfg), run_id) if run_id else None
    with data.converters(spark, cfg, frames, train.num_processes, train.seed) as (source, val_source):
        assert source is not None
        job = pretrain_job(model, train, tokenizer_dir, out_dir, source, val_source, init_encoder, target)
        result = run_distributed(pretrain_fn, job, train)
    return result


def run_pretrain(spark: SparkSession, cfg: Config, teacher: ModelSettings, train: TrainSettings,
                 plan: SnapshotPlan | None = None) -> str:
    """``propensity pretrain``: pretrain the teacher encoder and return its checkpoint folder.

    :param plan: snapshot dates; None: planned from ``events`` (snapshots built if missing).
    :raises PropensityError: there are no texts on the train snapshots.
    """
    plan = plan or data.load_plan(spark, cfg)
    texts = data.sample_rows(texts_of(data.examples(spark, cfg, plan.train)), train.max_pretrain_rows,
                             train.seed).persist()
    validation = data.sample_rows(texts_of(data.examples(spark, cfg, [plan.validation])), train.max_eval_rows,
                                  train.seed)
    try:
        n = texts.count()
        if n == 0:
            raise PropensityError(f"no behaviour texts on the train snapshots {plan.train}; run `propensity features`")
        mlflow_utils.setup_mlflow(cfg)
        with mlflow.start_run(run_name="teacher-pretrain", tags={"stage": "pretrain", "model": "teacher"}) as run:
            out_dir = pretrain_root(cfg) / run.info.run_id
            mlflow_utils.log_params("teacher", teacher.to_dict())
            mlflow_utils.log_params("training", train.to_dict())
            mlflow.log_params({"pretrain.rows": n, "pretrain.snapshots": ",".join(d.isoformat() for d in plan.train)})
            mlflow_utils.log_resolved_config(cfg, {"teacher": teacher, "training": train})
            result = pretrain_encoder(spark, cfg, texts, validation, teacher, train, out_dir, run.info.run_id)
            mlflow.log_metric("pretrain_samples_per_s", float(str(result["samples_per_s"])))
            mlflow.set_tag("checkpoint", str(out_dir))
        (pretrain_root(cfg) / LATEST_FILE).write_text(str(out_dir) + "\n")
        log.info("pretrained encoder in %s", out_dir)
        return str(out_dir)
    finally:
        texts.unpersist()


def texts_of(df: DataFrame) -> DataFrame:
    """The non-empty ``behavior_text`` values of ``df``."""
    return df.where(F.length("behavior_text") > 0).select("behavior_text")
