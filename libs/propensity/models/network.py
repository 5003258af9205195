"""The propensity network: the event encoder plus three wide-and-deep sigmoid heads.

- :class:`FeatureNormalizer`: ``(signed_log1p(x) - mean) / std`` with statistics computed on
  the train rows (:class:`FeatureStats`) and stored as buffers, so they travel with the weights;
- :class:`PropensityModel`: the pooled sequence (:class:`~propensity.models.encoder.EventEncoder`)
  concatenated with the normalised aggregate features feeds one head per task (``purchase``,
  ``click``, ``churn``); each head is an MLP (deep) plus a linear term on the features alone
  (wide), so the model can represent a logistic regression on the features, and can start as
  one (:func:`fit_logistic`, :meth:`PropensityModel.start_from_logistic`); a per-task
  ``deep_scale`` (chosen on validation by fine-tuning) weighs the deep part. Without feature
  columns it is the *sequence-only* model (deep part only);
- :func:`masked_bce` and :func:`distillation_loss`;
- :func:`save_model` / :func:`load_model`: a folder with ``model.json`` and ``model.pt``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from transformers import BertConfig

from propensity.core.schema import TASKS
from propensity.models.encoder import EventEncoder, positions_of

MODEL_FILE = "model.pt"
MODEL_META_FILE = "model.json"
#: Normalised features are clipped to this many standard deviations.
FEATURE_CLIP = 8.0


@dataclass
class FeatureStats:
    """Per-feature mean and standard deviation of ``signed_log1p(x)`` on the train rows."""

    columns: list[str]
    mean: list[float]
    std: list[float]

    def __post_init__(self) -> None:
        if not len(self.columns) == len(self.mean) == len(self.std):
            raise ValueError(f"FeatureStats: {len(self.columns)} columns but {len(self.mean)} means and"
                             f" {len(self.std)} standard deviations")

    def to_json(self) -> str:
        """The statistics as JSON."""
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> FeatureStats:
        """Statistics written by :meth:`to_json`."""
        return cls(**json.loads(text))


def signed_log1p(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * log(1 + |x|)``: tames counts and amounts with long tails."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


class FeatureNormalizer(nn.Module):
    """Standardises raw aggregate features with statistics saved in the module's buffers."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))

    def set_stats(self, stats: FeatureStats) -> None:
        """Copy ``stats`` into the buffers (a zero standard deviation becomes 1)."""
        std = torch.tensor(stats.std, dtype=torch.float32)
        self.mean.copy_(torch.tensor(stats.mean, dtype=torch.float32))
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised features; NaN (a missing value) becomes 0, the train mean."""
        z = (signed_log1p(x.float()) - self.mean) / self.std
        return torch.nan_to_num(z, nan=0.0).clamp(-FEATURE_CLIP, FEATURE_CLIP)


class TaskHead(nn.Module):
    """One sigmoid head: MLP on [pooled ++ features] (deep) plus a linear term on the features (wide).

    The logit is ``wide + deep_scale * deep``. ``deep_scale`` (a buffer, 1 while training) is
    chosen per task on validation after training: 0 where the sequence adds nothing the
    features do not already say, so such a task falls back to its logistic regression.
    """

    deep_scale: torch.Tensor

    def __init__(self, hidden_size: int, n_features: int, head_hidden_size: int, dropout: float) -> None:
        super().__init__()
        self.deep = nn.Sequential(nn.Linear(hidden_size + n_features, head_hidden_size), nn.GELU(),
                                  nn.Dropout(dropout), nn.Linear(head_hidden_size, 1))
        self.wide = nn.Linear(n_features, 1) if n_features else None
        self.register_buffer("deep_scale", torch.ones(()))

    def start_from_logistic(self, weight: Sequence[float], bias: float) -> None:
        """Start as a logistic regression on the features: wide part set, deep output zeroed."""
        if self.wide is None:
            return
        out = cast(nn.Linear, self.deep[-1])
        with torch.no_grad():
            self.wide.weight.copy_(torch.tensor([list(weight)], dtype=self.wide.weight.dtype))
            self.wide.bias.fill_(float(bias))
            out.weight.zero_()
            out.bias.zero_()

    def parts(self, pooled: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The wide and the (unscaled) deep logit, each of shape ``(batch,)``."""
        deep = self.deep(torch.cat([pooled, features], dim=1)).squeeze(1)
        wide = self.wide(features).squeeze(1) if self.wide is not None else torch.zeros_like(deep)
        return wide, deep

    def forward(self, pooled: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch,)``."""
        wide, deep = self.parts(pooled, features)
        return wide + self.deep_scale.to(deep.dtype) * deep


class PropensityModel(nn.Module):
    """Event encoder + feature normaliser + one :class:`TaskHead` per task; outputs logits ``(batch, 3)``."""

    def __init__(self, encoder: EventEncoder, feature_columns: Sequence[str], head_hidden_size: int) -> None:
        super().__init__()
        self.feature_columns = list(feature_columns)
        self.head_hidden_size = head_hidden_size
        self.encoder = encoder
        self.normalizer = FeatureNormalizer(len(self.feature_columns))
        pooled = 2 * encoder.config.hidden_size
        self.heads = nn.ModuleDict({t: TaskHead(pooled, len(self.feature_columns), head_hidden_size,
                                                encoder.config.hidden_dropout_prob) for t in TASKS})
        self.encoder_frozen = False

    @property
    def config(self) -> BertConfig:
        """The encoder's BERT configuration."""
        return self.encoder.config

    @property
    def max_positions(self) -> int:
        """Positions of ``event_ids`` the model reads (the target and the newest events)."""
        return self.encoder.max_positions

    def freeze_encoder(self) -> None:
        """Stop training the encoder: no gradients, and dropout off (it stays in eval mode)."""
        self.encoder_frozen = True
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True) -> PropensityModel:
        """Like ``nn.Module.train``, but a frozen encoder stays in eval mode."""
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def encode(self, event_ids: torch.Tensor) -> torch.Tensor:
        """Pooled sequence embeddings ``(batch, 2 * hidden)`` of flat ids ``(batch, positions * FIELDS)``."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.encoder_frozen):
            return self.encoder.pooled(positions_of(event_ids))

    def start_from_logistic(self, wide: dict[str, dict[str, Any]]) -> None:
        """Start each task's head as the logistic regression ``wide[task]`` (``weight``, ``bias``)."""
        for task, fit in wide.items():
            self._head(task).start_from_logistic(fit["weight"], fit["bias"])

    def freeze_wide(self) -> None:
        """Keep every head's wide part (its logistic regression) as it is: the deep part learns the rest."""
        for task in TASKS:
            wide = self._head(task).wide
            if wide is not None:
                wide.requires_grad_(False)

    def deep_scales(self) -> dict[str, float]:
        """Each task's ``deep_scale``."""
        return {t: float(self._head(t).deep_scale) for t in TASKS}

    def set_deep_scales(self, scales: dict[str, float]) -> None:
        """Set the ``deep_scale`` of the heads named in ``scales``."""
        for task, scale in scales.items():
            self._head(task).deep_scale.fill_(float(scale))

    def _head(self, task: str) -> TaskHead:
        return cast(TaskHead, self.heads[task])

    def _head_inputs(self, event_ids: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What every head reads: pooled sequence embeddings and normalised features."""
        pooled = self.encode(event_ids)
        return pooled, self.normalizer(features).to(pooled.dtype)

    def forward(self, event_ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, len(TASKS))`` from flat event ids and the raw features (``(batch, 0)`` without)."""
        pooled, feats = self._head_inputs(event_ids, features)
        return torch.stack([self.heads[t](pooled, feats) for t in TASKS], dim=1)

    def forward_parts(self, event_ids: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Wide and unscaled deep logits, each ``(batch, len(TASKS))``."""
        pooled, feats = self._head_inputs(event_ids, features)
        wide, deep = zip(*(self._head(t).parts(pooled, feats) for t in TASKS), strict=True)
        return torch.stack(wide, dim=1), torch.stack(deep, dim=1)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, c: float = 1.0, steps: int = 100) -> tuple[list[float], float]:
    """L2-regularised logistic regression by L-BFGS, scikit-learn's objective
    ``c * sum(log loss) + ||w||^2 / 2`` (intercept not penalised). Returns ``(weights, intercept)``.
    """
    x, y = x.double(), y.double()
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")
    n = max(len(y), 1)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + (w @ w) / (2.0 * c * n)
        loss.backward()
        return loss

    optimizer.step(closure)
    return [float(v) for v in w.detach()], float(b.detach())


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the entries with ``label_mask`` 1 (a NULL label has mask 0).

    Returns 0 (with a gradient) when no entry of the batch has a label.
    """
    losses = nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")
    mask = label_mask.float()
    return (losses * mask).sum() / mask.sum().clamp(min=1.0)


def distillation_loss(logits: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor,
                      teacher_logits: torch.Tensor, alpha: float, temperature: float) -> torch.Tensor:
    """Knowledge-distillation loss per task, averaged over the entries with ``label_mask`` 1:

    ``alpha * BCE(z, y) + (1 - alpha) * T^2 * BCE(z / T, sigmoid(t / T))`` with ``z`` the student's
    and ``t`` the teacher's logit. ``T^2`` keeps the soft term's gradient on the scale of the hard
    one as ``T`` grows (Hinton et al., 2015). Returns 0 (with a gradient) when nothing has a label.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must be in [0, 1]")
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    z = logits.float()
    hard = nn.functional.binary_cross_entropy_with_logits(z, labels.float(), reduction="none")
    soft_targets = torch.sigmoid(teacher_logits.float() / temperature)
    soft = nn.functional.binary_cross_entropy_with_logits(z / temperature, soft_targets, reduction="none")
    losses = alpha * hard + (1.0 - alpha) * temperature**2 * soft
    mask = label_mask.float()
    return (losses * mask).sum() / mask.sum().clamp(min=1.0)


def parameter_fingerprint(module: nn.Module) -> str:
    """SHA-256 of every parameter's bytes, in name order: equal only if the weights are bit-identical."""
    digest = hashlib.sha256()
    for name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
        digest.update(name.encode())
        digest.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def linear_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_fraction`` of the steps, then linear decay to 10%."""
    warmup = max(1, math.ceil(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.1, 1.0 - 0.9 * (step - warmup) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def save_model(model: PropensityModel, out_dir: Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.json`` (architecture, feature columns, ``extra``) and ``model.pt`` (weights) to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"bert_config": model.config.to_dict(), "field_sizes": model.encoder.embedding.field_sizes,
            "feature_columns": model.feature_columns, "head_hidden_size": model.head_hidden_size,
            "tasks": list(TASKS), **(extra or {})}
    (out_dir / MODEL_META_FILE).write_text(json.dumps(meta, indent=1, default=str))
    torch.save(model.state_dict(), out_dir / MODEL_FILE)
    return out_dir


def read_model_meta(model_dir: Path) -> dict[str, Any]:
    """The ``model.json`` of a folder written by :func:`save_model`."""
    path = Path(model_dir) / MODEL_META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {MODEL_META_FILE} in {str(model_dir)!r}; is it a folder written by save_model?")
    meta: dict[str, Any] = json.loads(path.read_text())
    return meta


def load_model(model_dir: Path, map_location: str | torch.device = "cpu") -> PropensityModel:
    """Rebuild a :class:`PropensityModel` saved by :func:`save_model`, in eval mode."""
    meta = read_model_meta(model_dir)
    encoder = EventEncoder(BertConfig.from_dict(meta["bert_config"]), meta["field_sizes"])
    model = PropensityModel(encoder, meta["feature_columns"], int(meta["head_hidden_size"]))
    state = torch.load(Path(model_dir) / MODEL_FILE, map_location=map_location, weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def wide_probabilities(model: PropensityModel, features: torch.Tensor) -> torch.Tensor:
    """``(batch, len(TASKS))`` probabilities of the heads' wide parts alone: the logistic regressions on the
    normalised features (the model's *features-only* variant; no sequence is read).

    :raises ValueError: the model has no wide part (a sequence-only model).
    """
    if not model.feature_columns:
        raise ValueError("a sequence-only model has no wide part")
    with torch.no_grad():
        z = model.normalizer(features)
        logits = [cast(nn.Linear, model._head(t).wide)(z).squeeze(1) for t in TASKS]
    return torch.sigmoid(torch.stack(logits, dim=1))
