"""Where a model's weights start: typed starting points instead of flags.

- :class:`PretrainedEncoder`: an encoder from ``propensity pretrain`` with new heads: the teacher;
- :class:`ContinueFrom`: a saved propensity model, heads included, trained further on new rows
  (adapting to a target platform);
- :class:`NewEncoder`: an encoder of a given size with random weights: the student.

:func:`find_pretrained` finds the newest pretraining output (``LATEST`` under
``<storage.root>/checkpoints/teacher/pretrain``); :func:`resolve_checkpoint` checks a local
Hugging Face BERT folder (``training.init_checkpoint``) whose layers pretraining starts from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from propensity.core.config import Config, ModelSettings
from propensity.core.errors import ConfigError, DataNotReadyError
from propensity.core.tracking import checkpoint_dir
from propensity.models.encoder import ENCODER_META_FILE, bert_config, encoder_positions
from propensity.models.network import FeatureStats

ENCODER_DIR = "encoder"
LATEST_FILE = "LATEST"


@dataclass(frozen=True)
class PretrainedEncoder:
    """A pretrained encoder folder (written by ``propensity pretrain``); new heads go on top."""

    encoder_dir: Path


@dataclass(frozen=True)
class ContinueFrom:
    """A saved propensity model (weights, heads and feature statistics) to train further."""

    model_dir: Path
    stats: FeatureStats


@dataclass(frozen=True)
class NewEncoder:
    """A new encoder of ``size`` with random weights."""

    size: ModelSettings

    def bert_config(self) -> dict[str, Any]:
        """The ``BertConfig`` (as a dict) of the new encoder."""
        return dict(bert_config(self.size).to_dict())


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
    return path if (path / ENCODER_DIR / ENCODER_META_FILE).is_file() else None


def mark_latest(cfg: Config, out_dir: Path) -> None:
    """Make ``out_dir`` the newest pretraining output."""
    (pretrain_root(cfg) / LATEST_FILE).write_text(str(out_dir) + "\n")


def find_pretrained(cfg: Config, size: ModelSettings) -> PretrainedEncoder:
    """The newest pretraining output.

    :raises DataNotReadyError: ``propensity pretrain`` has not run under this ``storage.root``.
    :raises ConfigError: the encoder has fewer positions than ``size.max_length``.
    """
    latest = latest_pretrained(cfg)
    if latest is None:
        raise DataNotReadyError(f"no pretrained teacher encoder under {pretrain_root(cfg)};"
                                " run `propensity pretrain` first")
    check_positions(latest / ENCODER_DIR, size.max_length, f"the pretrained encoder in {latest}")
    return PretrainedEncoder(latest / ENCODER_DIR)


def resolve_checkpoint(path: str, max_length: int) -> Path:
    """``training.init_checkpoint``: a local Hugging Face BERT folder whose transformer layers pretraining
    starts from (its size wins over the ``teacher`` section's).

    :raises ConfigError: it is not a model folder, or has fewer positions than ``max_length``.
    """
    folder = Path(path)
    key = "training.init_checkpoint"
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{key}={path!r} is not a Hugging Face model folder (no config.json);"
                          " give a local folder written by save_pretrained")
    check_positions(folder, max_length, f"{key}={path!r}")
    return folder


def check_positions(encoder_dir: Path, max_length: int, where: str) -> None:
    """Make sure the encoder at ``encoder_dir`` has at least ``max_length`` positions.

    :raises ConfigError: it has fewer (``where`` names the encoder in the message).
    """
    positions = encoder_positions(encoder_dir)
    if max_length > positions:
        raise ConfigError(f"teacher.max_length={max_length} exceeds the {positions} positions of {where};"
                          f" set teacher.max_length <= {positions} or pretrain again")
