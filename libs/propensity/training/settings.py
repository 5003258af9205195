"""Settings of the training stages: model sizes (``teacher``, ``student``) and the ``training`` section.

Plain dataclasses in the style of :mod:`propensity.config`: every field has a default and a
``help`` text, and ``__post_init__`` raises :class:`~propensity.errors.ConfigError` naming
the dotted key (``teacher.num_layers``). The section named in messages is the class's
``SECTION`` (:class:`TeacherSettings`: ``teacher``, :class:`StudentSettings`: ``student``).

Defaults are sized for a 2-core CPU (the whole demo pipeline in about 15 minutes); the
GPU overlay proposed in the report switches to bert-base size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from propensity.errors import ConfigError

TRANSFER_MODES = ("head", "full")
T = TypeVar("T")


def _help(text: str, **kwargs: Any) -> Any:
    """A dataclass field whose metadata carries its help text."""
    return field(metadata={"help": text}, **kwargs)


@dataclass
class ModelSettings:
    """Size of one BERT-family encoder (the ``teacher`` or ``student`` config section)."""

    vocab_size: int = _help("Largest WordPiece vocabulary trained on the behaviour texts.", default=4000)
    hidden_size: int = _help("Encoder hidden size.", default=128)
    num_layers: int = _help("Transformer layers.", default=2)
    num_heads: int = _help("Attention heads (must divide hidden_size).", default=4)
    intermediate_size: int = _help("Feed-forward size inside each layer.", default=512)
    max_length: int = _help("Tokens per sequence, [CLS] and [SEP] included (older events are cut).",
                            default=96)
    dropout: float = _help("Dropout of the encoder and the heads.", default=0.1)
    head_hidden_size: int = _help("Hidden units of each task head's deep part.", default=64)

    #: Config section named in error messages.
    SECTION: ClassVar[str] = "model"

    def __post_init__(self) -> None:
        s = self.SECTION
        for key in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                    "head_hidden_size"):
            value = getattr(self, key)
            if value < 1:
                raise ConfigError(f"{s}.{key}={value} must be >= 1")
        if self.vocab_size < 16:
            raise ConfigError(f"{s}.vocab_size={self.vocab_size} is too small; use at least 16 (e.g. 4000)")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"{s}.hidden_size={self.hidden_size} is not divisible by {s}.num_heads="
                              f"{self.num_heads}; choose num_heads dividing hidden_size")
        if not 3 <= self.max_length <= 4096:
            raise ConfigError(f"{s}.max_length={self.max_length} must be in 3..4096")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{s}.dropout={self.dropout} must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain mapping, for MLflow params and JSON."""
        return dataclasses.asdict(self)


@dataclass
class TeacherSettings(ModelSettings):
    """The teacher encoder (config section ``teacher``): the larger model, pretrained with MLM."""

    SECTION: ClassVar[str] = "teacher"


@dataclass
class StudentSettings(ModelSettings):
    """The student encoder (config section ``student``), distilled from the teacher."""

    hidden_size: int = _help("Encoder hidden size.", default=64)
    num_layers: int = _help("Transformer layers.", default=1)
    num_heads: int = _help("Attention heads (must divide hidden_size).", default=2)
    intermediate_size: int = _help("Feed-forward size inside each layer.", default=256)
    head_hidden_size: int = _help("Hidden units of each task head's deep part.", default=32)

    SECTION: ClassVar[str] = "student"


@dataclass
class TrainSettings:
    """How the training stages run (the ``training`` config section)."""

    pretrain_epochs: int = _help("Passes over the pretraining rows (masked-language modelling).", default=2)
    epochs: int = _help("Fine-tuning passes over the labelled train rows.", default=3)
    batch_size: int = _help("Rows per step and process.", default=64)
    learning_rate: float = _help("AdamW learning rate of the encoder.", default=1e-3)
    head_learning_rate: float = _help("AdamW learning rate of the task heads.", default=3e-3)
    weight_decay: float = _help("AdamW weight decay (not applied to biases and LayerNorm).", default=0.01)
    warmup_fraction: float = _help("Fraction of the steps with linear learning-rate warm-up.", default=0.06)
    mask_probability: float = _help("Share of tokens masked for masked-language modelling.", default=0.15)
    num_processes: int = _help("TorchDistributor processes (one per GPU with use_gpu).", default=2)
    local_mode: bool = _help("TorchDistributor local mode: processes on the driver; false: Spark barrier tasks.",
                             default=True)
    use_gpu: bool = _help("Train on GPUs (nccl, bf16 autocast); false: CPU with gloo.", default=False)
    log_every_steps: int = _help("Log a progress line (samples/s, loss) every this many steps.", default=50)
    seed: int = _help("Seed of sampling, masking, initialisation and shuffling.", default=42)
    init_checkpoint: str | None = _help(
        "Local Hugging Face BERT checkpoint folder to start pretraining from (with its tokenizer);"
        " null: train a tokenizer and start from random weights.", default=None)
    transfer_mode: str = _help("Fine-tuning: 'head' (frozen encoder) or 'full' (encoder trained too).",
                               default="full")
    source_platforms: list[str] = field(default_factory=list, metadata={
        "help": "Platforms whose labels fine-tune the model; empty: all."})
    target_platform: str | None = _help("Platform adapted to after the source platforms (second fine-tuning"
                                        " step on its labels only); null: none.", default=None)
    target_label_fraction: float = _help("Share of the target platform's labelled train rows used.",
                                         default=1.0)
    max_train_rows: int = _help("Most labelled train rows fine-tuned on (random sample); 0: all.", default=20000)
    max_pretrain_rows: int = _help("Most texts pretrained on (random sample); 0: all.", default=20000)
    max_eval_rows: int = _help("Most validation rows scored after each epoch; 0: all.", default=5000)
    workers_count: int = _help("petastorm reader threads per process.", default=2)
    threads_per_process: int = _help("torch CPU threads per training process; 0: CPU cores / processes.",
                                     default=0)

    def __post_init__(self) -> None:
        for key in ("pretrain_epochs", "epochs", "batch_size", "num_processes", "log_every_steps",
                    "workers_count"):
            value = getattr(self, key)
            if value < 1:
                raise ConfigError(f"training.{key}={value} must be >= 1")
        for key in ("max_train_rows", "max_pretrain_rows", "max_eval_rows", "threads_per_process"):
            value = getattr(self, key)
            if value < 0:
                raise ConfigError(f"training.{key}={value} must be >= 0 (0 means all rows / automatic)")
        for key in ("learning_rate", "head_learning_rate"):
            value = getattr(self, key)
            if not 0.0 < value < 1.0:
                raise ConfigError(f"training.{key}={value} must be in (0, 1), e.g. 1e-3")
        self._check_fractions()
        if self.transfer_mode not in TRANSFER_MODES:
            raise ConfigError(f"training.transfer_mode={self.transfer_mode!r} is unknown;"
                              f" use one of {', '.join(TRANSFER_MODES)}")
        if self.target_platform is not None and self.target_platform in self.source_platforms:
            raise ConfigError(f"training.target_platform={self.target_platform!r} is also in"
                              " training.source_platforms; a target platform must be held out")

    def _check_fractions(self) -> None:
        if not 0.0 < self.mask_probability < 1.0:
            raise ConfigError(f"training.mask_probability={self.mask_probability} must be in (0, 1), e.g. 0.15")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(f"training.warmup_fraction={self.warmup_fraction} must be in [0, 1)")
        if not 0.0 < self.target_label_fraction <= 1.0:
            raise ConfigError(f"training.target_label_fraction={self.target_label_fraction} must be in (0, 1]")
        if self.weight_decay < 0:
            raise ConfigError(f"training.weight_decay={self.weight_decay} must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain mapping, for MLflow params and JSON."""
        return dataclasses.asdict(self)


def settings_from_dict(cls: type[T], data: dict[str, Any], section: str) -> T:
    """Build ``cls`` from a mapping (tests, benchmarks), with unknown keys reported as ``section.key``.

    :raises ConfigError: an unknown key or a bad value.
    """
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key {section}.{unknown[0]}; known keys: {', '.join(sorted(names))}")
    return cls(**data)
