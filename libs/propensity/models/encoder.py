"""The sequence encoder: one embedding per event field, summed per position, into a BERT encoder.

Each position of ``event_ids`` (see :mod:`propensity.core.sequence`: a target position, then the
user's events oldest to newest) becomes the sum of one learned embedding per field (type,
platform, category, brand, price bucket, item bucket, gap, age; id 0 embeds to zero), as in
BST / Transformers4Rec; ``transformers``' :class:`~transformers.BertModel` adds position
embeddings and runs self-attention over the positions (``inputs_embeds``, no word vocabulary).
So one position is one event: the encoder sees the whole 30-day lookback of most users within
a few dozen to a hundred positions, items by identity, time gaps, event ages and platforms.

:class:`MaskedEventObjective` pretrains it without labels: a share of the event positions is
replaced by a learned *mask* embedding and the encoder predicts those events' item, category
and type (output weights tied to the input embedding tables; the item's 16k ids through a sampled
softmax in training, the full one in validation).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from transformers import BertConfig, BertModel

from propensity.core.config import ModelSettings
from propensity.core.sequence import EVENT_FIELDS, FIELD_SIZES, FIELDS

ENCODER_FILE = "encoder.pt"
ENCODER_META_FILE = "encoder.json"
#: Fields the masked-event objective predicts (weights tied to their embedding tables).
PREDICTED_FIELDS = ("item", "category", "type")


def bert_config(size: ModelSettings) -> BertConfig:
    """The ``BertConfig`` of an encoder of ``size`` (positions = ``size.max_length``; no word vocabulary is
    used: positions come in as embeddings). Nothing is downloaded."""
    return BertConfig(vocab_size=1, hidden_size=size.hidden_size, num_hidden_layers=size.num_layers,
                      num_attention_heads=size.num_heads, intermediate_size=size.intermediate_size,
                      hidden_act=size.activation,
                      max_position_embeddings=size.max_length, hidden_dropout_prob=size.dropout,
                      attention_probs_dropout_prob=size.dropout, pad_token_id=0, type_vocab_size=1)


class EventEmbedding(nn.Module):
    """Sum of one embedding per field of each position; a masked position gets the learned mask vector."""

    def __init__(self, hidden_size: int, field_sizes: Mapping[str, int]) -> None:
        super().__init__()
        self.field_sizes = dict(field_sizes)
        # a list in EVENT_FIELDS order: "type" cannot be a module name
        self.tables = nn.ModuleList(nn.Embedding(field_sizes[f], hidden_size, padding_idx=0) for f in EVENT_FIELDS)
        self.mask = nn.Parameter(torch.zeros(hidden_size))
        for field in EVENT_FIELDS:
            weight = self.table(field).weight
            nn.init.normal_(weight, std=0.02)
            with torch.no_grad():
                weight[0].zero_()

    def table(self, field: str) -> nn.Embedding:
        """The embedding table of ``field``."""
        return cast(nn.Embedding, self.tables[EVENT_FIELDS.index(field)])

    def forward(self, ids: torch.Tensor, masked: torch.Tensor | None = None) -> torch.Tensor:
        """``(batch, positions, hidden)`` from ids ``(batch, positions, FIELDS)``."""
        out = sum(table(ids[..., i]) for i, table in enumerate(self.tables))
        if not isinstance(out, torch.Tensor):  # pragma: no cover - EVENT_FIELDS is never empty
            raise ValueError("no event fields")
        if masked is not None:
            out = torch.where(masked.unsqueeze(-1), self.mask.to(out.dtype).expand_as(out), out)
        return out


def positions_of(event_ids: torch.Tensor) -> torch.Tensor:
    """Flat ids ``(batch, positions * FIELDS)`` as ``(batch, positions, FIELDS)`` longs."""
    return event_ids.long().view(event_ids.shape[0], -1, FIELDS)


def attention_mask(ids: torch.Tensor) -> torch.Tensor:
    """1 where a position holds an event or the target (its type id is not 0)."""
    return (ids[..., 0] != 0).long()


def trim_padding(ids: torch.Tensor) -> torch.Tensor:
    """Ids ``(batch, positions, FIELDS)`` without the trailing positions that are padding in every row.

    Padding sits on the right and is masked out of attention, so the states of the kept positions are
    the same (to float rounding): a batch costs what its longest row needs, not the model's positions.
    A batch with a row of padding only (no target) is kept whole: such a row attends to padding, whose
    count would change its state.
    """
    mask = attention_mask(ids)
    if ids.shape[0] == 0 or not bool(mask[:, 0].all()):
        return ids
    keep = int(mask.amax(dim=0).nonzero().max()) + 1
    return ids if keep == ids.shape[1] else ids[:, :keep]


class EventEncoder(nn.Module):
    """Field embeddings + a BERT encoder; :meth:`forward` gives the hidden state of every position."""

    def __init__(self, config: BertConfig, field_sizes: Mapping[str, int] | None = None,
                 body: BertModel | None = None) -> None:
        super().__init__()
        self.config = config
        self.embedding = EventEmbedding(config.hidden_size, field_sizes or FIELD_SIZES)
        self.body = body if body is not None else BertModel(config, add_pooling_layer=False)
        # positions arrive as inputs_embeds: BERT's word table is never read, so it takes no gradient
        self.body.embeddings.word_embeddings.weight.requires_grad_(False)

    @property
    def max_positions(self) -> int:
        """Positions the encoder takes (the target included)."""
        return int(self.config.max_position_embeddings)

    def forward(self, ids: torch.Tensor, masked: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(hidden (batch, positions, hidden), attention mask (batch, positions))`` of ids ``(b, p, FIELDS)``."""
        mask = attention_mask(ids)
        out = self.body(inputs_embeds=self.embedding(ids, masked), attention_mask=mask)
        return out.last_hidden_state, mask

    def pooled(self, ids: torch.Tensor) -> torch.Tensor:
        """``(batch, 2 * hidden)``: the target position's state next to the mean over the event positions."""
        hidden, mask = self(trim_padding(ids))
        events = mask[:, 1:].unsqueeze(-1).to(hidden.dtype)
        mean = (hidden[:, 1:] * events).sum(1) / events.sum(1).clamp(min=1.0)
        return torch.cat([hidden[:, 0], mean], dim=1)


def save_encoder(encoder: EventEncoder, out_dir: Path) -> Path:
    """Write ``encoder.json`` (BERT config, field sizes) and ``encoder.pt`` (weights) to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"bert_config": encoder.config.to_dict(), "field_sizes": encoder.embedding.field_sizes}
    (out_dir / ENCODER_META_FILE).write_text(json.dumps(meta, indent=1))
    torch.save(encoder.state_dict(), out_dir / ENCODER_FILE)
    return out_dir


def load_encoder(encoder_dir: Path) -> EventEncoder:
    """An encoder saved by :func:`save_encoder`."""
    meta = json.loads((Path(encoder_dir) / ENCODER_META_FILE).read_text())
    encoder = EventEncoder(BertConfig.from_dict(meta["bert_config"]), meta["field_sizes"])
    encoder.load_state_dict(torch.load(Path(encoder_dir) / ENCODER_FILE, map_location="cpu", weights_only=True))
    return encoder


def encoder_positions(encoder_dir: Path) -> int:
    """Positions of the encoder saved in ``encoder_dir`` (ours or a Hugging Face BERT folder)."""
    ours = Path(encoder_dir) / ENCODER_META_FILE
    if ours.is_file():
        return int(json.loads(ours.read_text())["bert_config"]["max_position_embeddings"])
    return int(BertConfig.from_pretrained(str(encoder_dir)).max_position_embeddings)


def new_encoder_from(config: BertConfig, init_checkpoint: Path) -> EventEncoder:
    """A new encoder whose transformer layers start from a local Hugging Face BERT folder (its own size; the
    field embeddings are new, ``config`` is ignored)."""
    del config
    body = BertModel.from_pretrained(str(init_checkpoint), add_pooling_layer=False)
    return EventEncoder(body.config, body=body)


@dataclass(frozen=True)
class MaskedEvents:
    """A batch with some event positions masked: which, and their true ids."""

    masked: torch.Tensor
    targets: torch.Tensor


def mask_events(ids: torch.Tensor, probability: float, generator: torch.Generator | None = None) -> MaskedEvents:
    """Pick ``probability`` of the event positions (never the target at position 0, never padding) to mask;
    at least one per batch when there is any event."""
    candidates = attention_mask(ids).bool()
    candidates[:, 0] = False
    draw = torch.rand(candidates.shape, generator=generator, device=ids.device)
    picked = candidates & (draw < probability)
    if not picked.any() and candidates.any():
        picked.view(-1)[int(candidates.view(-1).nonzero()[0])] = True
    return MaskedEvents(picked, ids)


class MaskedEventObjective(nn.Module):
    """Pretraining: predict the item, category and type of masked event positions.

    ``forward(ids, masked)`` returns ``(mean cross-entropy over the predicted fields, correct item
    predictions, masked positions with a known item)``; the output layers share their weights with
    the input embeddings, and unknown values (id 0) are not predicted.

    With ``sampled_classes`` > 0, a field with more ids than that is scored in training against a
    sampled softmax: the batch's true ids plus ``sampled_classes`` ids drawn uniformly (one shared
    candidate set, as in-batch negatives), so the output layer costs a fraction of the 16k-way
    item softmax. In ``eval()`` mode every field is scored against all its ids, so the validation
    loss and item accuracy are the full cross-entropy and comparable between settings.
    """

    def __init__(self, encoder: EventEncoder, sampled_classes: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        self.sampled_classes = sampled_classes
        hidden = encoder.config.hidden_size
        self.transform = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden))

    def forward(self, ids: torch.Tensor, masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss, correct item predictions and the number of masked positions with a known item."""
        hidden, _ = self.encoder(ids, masked)
        picked = self.transform(hidden[masked]).float()
        truth = ids[masked]
        # every parameter takes part in the loss, even in a batch without events (DDP needs them all)
        loss = picked.sum() * 0.0
        correct = torch.zeros((), dtype=torch.long, device=hidden.device)
        known_items = torch.zeros((), dtype=torch.long, device=hidden.device)
        for name in PREDICTED_FIELDS:
            column = EVENT_FIELDS.index(name)
            known = truth[:, column] != 0
            logits, target = self._scores(picked[known], truth[known, column], self.encoder.embedding.table(name))
            if known.any():
                loss = loss + nn.functional.cross_entropy(logits, target) / len(PREDICTED_FIELDS)
            else:
                loss = loss + logits.sum() * 0.0
            if name == "item":
                correct = (logits.argmax(-1) == target).sum()
                known_items = known.sum()
        return loss, correct, known_items

    def _scores(self, states: torch.Tensor, truth: torch.Tensor,
                table: nn.Embedding) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of ``states`` over the field's ids (or, sampled, over the candidate ids) and the target
        index of each row in them."""
        weight = table.weight.float()
        classes = weight.shape[0]
        if not self.training or self.sampled_classes <= 0 or classes <= self.sampled_classes:
            return states @ weight.t(), truth
        drawn = torch.randint(1, classes, (self.sampled_classes,), device=truth.device)
        candidates = torch.unique(torch.cat([truth, drawn]))  # sorted, each id once
        return states @ weight[candidates].t(), torch.searchsorted(candidates, truth)


def describe(encoder: EventEncoder) -> dict[str, Any]:
    """The encoder's size, for MLflow params and logs."""
    c = encoder.config
    return {"layers": c.num_hidden_layers, "hidden": c.hidden_size, "positions": c.max_position_embeddings,
            "parameters": sum(p.numel() for p in encoder.parameters())}
