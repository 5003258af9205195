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

# petastorm 0.12 still uses pyarrow's legacy dataset API; its deprecation warnings are noise here.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm(\..*)?$")
warnings.filterwarnings("ignore", message=".*pyarrow.localfs is deprecated.*", category=FutureWarning)

Batch = dict[str, torch.Tensor]


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
               seed: int = 0, shuffle: bool = True) -> Iterator[Iterable[Batch]]:
        """Batches of shard ``rank`` of ``world`` as dicts of tensors.

        :param num_epochs: passes over the shard; None: endless (stop after a fixed step count,
            so that every process runs the same number of steps).
        :param shuffle: shuffle row groups and rows (within a buffer of 8 batches).
        """
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


def parquet_url(path: str) -> str:
    """A ``file://`` URL for a local path; URLs (``file:``, ``dbfs:``, ``s3:`` ...) are kept."""
    if "://" in path:
        return path
    return Path(path).resolve().as_uri()
