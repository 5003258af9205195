"""Where a train function reads its rows: petastorm readers over Parquet, one shard per process.

A :class:`DataSource` is either a petastorm ``SparkDatasetConverter`` made from a Spark
DataFrame (under TorchDistributor) or a Parquet folder/URL (standalone, e.g. ``torchrun``
on a machine without Java). Both are read with petastorm's vectorised
``BatchedDataLoader``; process ``rank`` of ``world`` reads shard ``rank`` (whole Parquet
row groups), so the data must have at least ``world`` row groups.

This module imports no Spark: it runs inside the training processes.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from propensity.core.sequence import FIELDS, SEQUENCE_COLUMN

# petastorm 0.12 still uses pyarrow's legacy dataset API; its deprecation warnings are noise here.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm(\..*)?$")
warnings.filterwarnings("ignore", message=".*pyarrow.localfs is deprecated.*", category=FutureWarning)

Batch = dict[str, torch.Tensor]

#: Consecutive batches whose rows :func:`grouped_by_length` sorts by sequence length together.
LENGTH_GROUP_BATCHES = 8


@dataclass
class DataSource:
    """Rows for one training process group.

    :param rows: number of rows (all shards together).
    :param converter: a petastorm ``SparkDatasetConverter`` (picklable), or None.
    :param parquet_url: a Parquet folder path or ``file://`` URL, used when ``converter`` is None.
    """

    rows: int
    converter: Any = None
    parquet_url: str | None = None

    def __post_init__(self) -> None:
        if (self.converter is None) == (self.parquet_url is None):
            raise ValueError("DataSource needs exactly one of converter and parquet_url")
        if self.rows < 1:
            raise ValueError(f"DataSource rows={self.rows}: there is nothing to train or evaluate on")

    @contextmanager
    def loader(self, rank: int, world: int, batch_size: int, num_epochs: int | None, workers_count: int = 2,
               seed: int = 0, shuffle: bool = True, group_by_length: bool = False) -> Iterator[Iterable[Batch]]:
        """Batches of shard ``rank`` of ``world`` as dicts of tensors.

        :param num_epochs: passes over the shard; None: endless (stop after a fixed step count,
            so that every process runs the same number of steps).
        :param shuffle: shuffle row groups and rows (within a buffer of 8 batches).
        :param group_by_length: batches of rows of similar sequence length (:func:`grouped_by_length`).
        """
        with self._batches(rank, world, batch_size, num_epochs, workers_count, seed, shuffle) as batches:
            if not group_by_length:
                yield batches
                return
            generator = torch.Generator().manual_seed(seed + 104_729 * (rank + 1))
            yield _Regrouped(batches, batch_size, generator)

    @contextmanager
    def _batches(self, rank: int, world: int, batch_size: int, num_epochs: int | None, workers_count: int,
                 seed: int, shuffle: bool) -> Iterator[Iterable[Batch]]:
        from petastorm.pytorch import BatchedDataLoader

        capacity = 8 * batch_size if shuffle else 0
        reader_kwargs: dict[str, Any] = {"cur_shard": rank, "shard_count": world, "shuffle_row_groups": shuffle,
                                         "seed": seed}
        if self.converter is not None:
            with self.converter.make_torch_dataloader(
                    batch_size=batch_size, num_epochs=num_epochs, workers_count=workers_count,
                    shuffling_queue_capacity=capacity, data_loader_fn=BatchedDataLoader, **reader_kwargs) as dl:
                yield dl
            return
        from petastorm import make_batch_reader

        with make_batch_reader(parquet_url(str(self.parquet_url)), num_epochs=num_epochs,
                               workers_count=workers_count, **reader_kwargs) as reader:
            yield BatchedDataLoader(reader, batch_size=batch_size, shuffling_queue_capacity=capacity)


@dataclass
class _Regrouped:
    """An iterable of :func:`grouped_by_length` over ``batches`` (a new pass each time it is iterated)."""

    batches: Iterable[Batch]
    batch_size: int
    generator: torch.Generator

    def __iter__(self) -> Iterator[Batch]:
        return grouped_by_length(self.batches, self.batch_size, self.generator)


def sequence_lengths(event_ids: torch.Tensor) -> torch.Tensor:
    """Positions in use (target and events, not padding) of each row of flat ids ``(batch, positions * FIELDS)``."""
    return (event_ids.reshape(event_ids.shape[0], -1, FIELDS)[..., 0] != 0).sum(dim=1)


def grouped_by_length(batches: Iterable[Batch], batch_size: int, generator: torch.Generator,
                      group: int = LENGTH_GROUP_BATCHES) -> Iterator[Batch]:
    """The rows of ``batches`` again, in batches of ``batch_size`` rows of similar sequence length.

    Every ``group`` consecutive batches are pooled, sorted by length (ties in random order) and cut
    into batches that come out in random order, as Hugging Face's ``group_by_length`` does with its
    mega-batches. Each batch then costs what its longest row needs (the encoder cuts trailing
    padding), not the model's positions; the rows and the number of batches stay the same.
    """
    pending: list[Batch] = []
    for batch in batches:
        pending.append(batch)
        if len(pending) == group:
            yield from _regroup(pending, batch_size, generator)
            pending = []
    if pending:
        yield from _regroup(pending, batch_size, generator)


def _regroup(batches: list[Batch], batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
    pooled = {key: torch.cat([b[key] for b in batches]) for key in batches[0]}
    rows = pooled[SEQUENCE_COLUMN].shape[0]
    tie_break = torch.randperm(rows, generator=generator)
    order = torch.argsort(sequence_lengths(pooled[SEQUENCE_COLUMN]) * rows + tie_break)
    chunks = list(torch.split(order, batch_size))
    for i in torch.randperm(len(chunks), generator=generator).tolist():
        yield {key: value[chunks[i]] for key, value in pooled.items()}


def parquet_url(path: str) -> str:
    """A ``file://`` URL for a local path; URLs (``file:``, ``dbfs:``, ``s3:`` ...) are kept."""
    if "://" in path:
        return path
    return Path(path).resolve().as_uri()
