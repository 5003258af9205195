"""Config sections of the models and their training: ``teacher``, ``student``, ``training``, ``distill``.

Every field has a default and a help text, and ``__post_init__`` raises
:class:`~propensity.core.errors.ConfigError` naming the dotted key (``teacher.num_layers``);
the section named in messages is the class's ``SECTION``.

Defaults are sized for a 2-core CPU;
``conf/gpu.yml`` switches to bert-base size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from propensity.core.config.fields import at_least, one_of, option, within
from propensity.core.errors import ConfigError

TRANSFER_MODES = ("head", "full")
#: Activations of the encoder's feed-forward layers (names of ``transformers``' activation table).
ACTIVATIONS = ("gelu", "relu", "gelu_new", "silu")
_ACTIVATION_HELP = f"Activation of the feed-forward layers ({', '.join(ACTIVATIONS)})."


@dataclass
class ModelSettings:
    """Size of one BERT-family encoder (the ``teacher`` or ``student`` config section)."""

    hidden_size: int = option("Encoder hidden size.", default=128)
    num_layers: int = option("Transformer layers.", default=2)
    num_heads: int = option("Attention heads (must divide hidden_size).", default=4)
    intermediate_size: int = option("Feed-forward size inside each layer.", default=512)
    activation: str = option(_ACTIVATION_HELP, default="gelu")
    max_length: int = option("Positions of the event sequence: the target and the newest max_length - 1 events"
                             " (older ones are cut; at most features.max_sequence_events are stored).",
                             default=96)
    dropout: float = option("Dropout of the encoder and the heads.", default=0.1)
    head_hidden_size: int = option("Hidden units of each task head's deep part.", default=64)

    #: Config section named in error messages.
    SECTION: ClassVar[str] = "model"

    def __post_init__(self) -> None:
        s = self.SECTION
        at_least(s, self, 1, "hidden_size", "num_layers", "num_heads", "intermediate_size", "head_hidden_size")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"{s}.hidden_size={self.hidden_size} is not divisible by {s}.num_heads="
                              f"{self.num_heads}; choose num_heads dividing hidden_size")
        within(s, self, "max_length", 2, 4096)
        one_of(s, self, "activation", ACTIVATIONS)
        within(s, self, "dropout", 0.0, 1.0, high_open=True)

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

    hidden_size: int = option("Encoder hidden size.", default=64)
    num_layers: int = option("Transformer layers.", default=1)
    num_heads: int = option("Attention heads (must divide hidden_size).", default=2)
    # ReLU and a 2x feed-forward: about 30% less forward time than GELU at 4x, and the student's
    # AUC comes mostly from its wide part (measured on the demo data, README "Model quality").
    intermediate_size: int = option("Feed-forward size inside each layer.", default=128)
    activation: str = option(_ACTIVATION_HELP, default="relu")
    max_length: int = option("Positions of the event sequence: the target and the newest max_length - 1 events.",
                             default=48)
    head_hidden_size: int = option("Hidden units of each task head's deep part.", default=32)

    SECTION: ClassVar[str] = "student"


@dataclass
class TrainSettings:
    """How the training stages run (the ``training`` config section)."""

    pretrain_epochs: int = option("Most passes over the pretraining rows (masked-event modelling).", default=8)
    pretrain_patience: int = option("Pretraining stops after this many epochs without a validation-loss"
                                    " improvement of pretrain_min_delta (the curve has flattened).", default=1)
    pretrain_min_delta: float = option("Smallest validation-loss improvement that counts for pretraining.",
                                       default=0.01)
    epochs: int = option("Fine-tuning passes over the labelled train rows.", default=3)
    batch_size: int = option("Rows per step and process.", default=64)
    group_by_length: bool = option(
        "Batch rows of similar sequence length together (sorted within 8 shuffled batches) so that each batch"
        " is cut to its longest row: the same rows, less compute on padding.", default=True)
    learning_rate: float = option("AdamW learning rate of the encoder.", default=1e-3)
    head_learning_rate: float = option("AdamW learning rate of the task heads.", default=3e-3)
    weight_decay: float = option("AdamW weight decay (not applied to biases and LayerNorm).", default=0.01)
    warmup_fraction: float = option("Fraction of the steps with linear learning-rate warm-up.", default=0.06)
    mask_probability: float = option("Share of event positions masked for masked-event pretraining.",
                                     default=0.15)
    pretrain_sampled_classes: int = option(
        "Pretraining scores each masked event's item and category against the batch's true ids plus this many"
        " uniformly drawn ones (a sampled softmax) instead of all their ids (16384 items, 4096 categories);"
        " fields with at most this many ids, and the validation loss, use the full softmax. 0: the full softmax"
        " everywhere.", default=2048)
    num_processes: int = option("TorchDistributor processes (one per GPU with use_gpu).", default=2)
    local_mode: bool = option("TorchDistributor local mode: processes on the driver; false: Spark barrier tasks.",
                             default=True)
    use_gpu: bool = option("Train on GPUs (nccl, bf16 autocast); false: CPU with gloo.", default=False)
    log_every_steps: int = option("Log a progress line (samples/s, loss) every this many steps.", default=50)
    seed: int = option("Seed of sampling, masking, initialisation and shuffling.", default=42)
    init_checkpoint: str | None = option(
        "Local Hugging Face BERT checkpoint folder whose transformer layers pretraining starts from (its size"
        " wins); null: random weights of the teacher section's size.", default=None)
    transfer_mode: str = option("Fine-tuning: 'head' (frozen encoder) or 'full' (encoder trained too).",
                               default="full")
    source_platforms: list[str] = option("Platforms whose labels fine-tune the model; empty: all.",
                                         default_factory=list)
    target_platform: str | None = option("Platform adapted to after the source platforms (second fine-tuning"
                                        " step on its labels only); null: none.", default=None)
    target_label_fraction: float = option("Share of the target platform's labelled train rows used.",
                                         default=1.0)
    max_train_rows: int = option("Most labelled train rows fine-tuned on (random sample); 0: all.", default=20000)
    max_pretrain_rows: int = option("Most texts pretrained on (random sample); 0: all.", default=20000)
    max_eval_rows: int = option("Most validation rows scored after each epoch; 0: all.", default=5000)
    workers_count: int = option("petastorm reader threads per process.", default=2)
    threads_per_process: int = option("torch CPU threads per training process; 0: CPU cores / processes.",
                                     default=0)

    def __post_init__(self) -> None:
        at_least("training", self, 1, "pretrain_epochs", "pretrain_patience", "epochs", "batch_size",
                 "num_processes", "log_every_steps", "workers_count")
        within("training", self, "pretrain_min_delta", 0.0, 10.0)
        at_least("training", self, 0, "max_train_rows", "max_pretrain_rows", "max_eval_rows", "threads_per_process",
                 hint=" (0 means all rows / automatic)")
        at_least("training", self, 0, "pretrain_sampled_classes", hint=" (0: the full softmax)")
        for key in ("learning_rate", "head_learning_rate"):
            within("training", self, key, 0.0, 1.0, low_open=True, high_open=True, example="1e-3")
        within("training", self, "mask_probability", 0.0, 1.0, low_open=True, high_open=True, example="0.15")
        within("training", self, "warmup_fraction", 0.0, 1.0, high_open=True)
        within("training", self, "target_label_fraction", 0.0, 1.0, low_open=True)
        within("training", self, "weight_decay", 0.0, 10.0)
        one_of("training", self, "transfer_mode", TRANSFER_MODES)
        if self.target_platform is not None and self.target_platform in self.source_platforms:
            raise ConfigError(f"training.target_platform={self.target_platform!r} is also in"
                              " training.source_platforms; a target platform must be held out")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain mapping, for MLflow params and JSON."""
        return dataclasses.asdict(self)


@dataclass
class DistillConfig:
    """Knowledge distillation of the student from the teacher."""

    teacher_uri: str = option("Teacher whose probabilities the student learns from.",
                              default="models:/propensity_teacher/latest")
    alpha: float = option("Weight of the hard-label loss; 1 - alpha weighs the soft teacher loss.", default=0.5)
    temperature: float = option("Softening temperature T of the teacher's logits (the soft loss is scaled by T^2).",
                                default=2.0)

    def __post_init__(self) -> None:
        within("distill", self, "alpha", 0.0, 1.0)
        within("distill", self, "temperature", 0.0, 100.0, low_open=True, example="2.0")
