"""Where a model's weights start: typed starting points instead of flags.

- :class:`PretrainedEncoder`: an encoder from ``propensity pretrain`` (or a local Hugging Face
  checkpoint, ``training.init_checkpoint``) with new heads: the teacher;
- :class:`ContinueFrom`: a saved propensity model, heads included, trained further on new rows
  (adapting to a target platform);
- :class:`NewEncoder`: an encoder of a given size with random weights over an existing
  tokenizer: the student.

:func:`find_pretrained` finds the newest pretraining output (``LATEST`` under
``<storage.root>/checkpoints/teacher/pretrain``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from propensity.core.config import Config, ModelSettings
from propensity.core.errors import ConfigError, DataNotReadyError
from propensity.core.tracking import checkpoint_dir
from propensity.models.network import FeatureStats

ENCODER_DIR = "encoder"
TOKENIZER_DIR = "tokenizer"
LATEST_FILE = "LATEST"


@dataclass(frozen=True)
class PretrainedEncoder:
    """A pretrained encoder (Hugging Face folder) and its tokenizer folder; new heads go on top."""

    encoder_dir: Path
    tokenizer_dir: Path


@dataclass(frozen=True)
class ContinueFrom:
    """A saved propensity model (weights, heads and feature statistics) to train further."""

    model_dir: Path
    tokenizer_dir: Path
    stats: FeatureStats


@dataclass(frozen=True)
class NewEncoder:
    """A new encoder of ``size`` with random weights over the tokenizer at ``tokenizer_dir``."""

    size: ModelSettings
    tokenizer_dir: Path

    def bert_config(self) -> dict[str, Any]:
        """The ``BertConfig`` (as a dict) of the new encoder over the tokenizer's vocabulary."""
        from propensity.models.network import bert_config
        from propensity.models.tokenizer import load_tokenizer

        tok = load_tokenizer(self.tokenizer_dir)
        return dict(bert_config(self.size, len(tok), pad_token_id=int(tok.pad_token_id)).to_dict())


Start = PretrainedEncoder | ContinueFrom | NewEncoder


def pretrain_root(cfg: Config) -> Path:
    """Folder holding one subfolder per pretraining run and the ``LATEST`` pointer."""
    return checkpoint_dir(cfg, "teacher", "pretrain")


def latest_pretrained(cfg: Config) -> Path | None:
    """The newest pretraining output folder, or None if ``propensity pretrain`` never ran here."""
    pointer = pretrain_root(cfg) / LATEST_FILE
    if not pointer.is_file():
        return None
    path = Path(pointer.read_text().strip())
    return path if (path / ENCODER_DIR).is_dir() and (path / TOKENIZER_DIR).is_dir() else None


def mark_latest(cfg: Config, out_dir: Path) -> None:
    """Make ``out_dir`` the newest pretraining output."""
    (pretrain_root(cfg) / LATEST_FILE).write_text(str(out_dir) + "\n")


def find_pretrained(cfg: Config, size: ModelSettings) -> PretrainedEncoder:
    """The newest pretraining output, else ``training.init_checkpoint``.

    :raises DataNotReadyError: neither exists.
    :raises ConfigError: the encoder has fewer positions than ``size.max_length``.
    """
    latest = latest_pretrained(cfg)
    if latest is not None:
        check_positions(latest / ENCODER_DIR, size.max_length, f"the pretrained encoder in {latest}")
        return PretrainedEncoder(latest / ENCODER_DIR, latest / TOKENIZER_DIR)
    if cfg.training.init_checkpoint:
        return resolve_checkpoint(cfg.training.init_checkpoint, size.max_length)
    raise DataNotReadyError(f"no pretrained teacher encoder under {pretrain_root(cfg)};"
                            " run `propensity pretrain` first or set training.init_checkpoint")


def resolve_checkpoint(path: str, max_length: int) -> PretrainedEncoder:
    """The encoder and tokenizer of ``training.init_checkpoint``: a folder written by ``propensity pretrain``
    (``encoder/`` + ``tokenizer/``) or a local Hugging Face BERT folder with its ``tokenizer.json``.

    :raises ConfigError: it is neither, or has fewer positions than ``max_length``.
    """
    folder = Path(path)
    key = "training.init_checkpoint"
    ours = PretrainedEncoder(folder / ENCODER_DIR, folder / TOKENIZER_DIR)
    found = ours if (ours.encoder_dir / "config.json").is_file() else PretrainedEncoder(folder, folder)
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
