"""Launch a train function with ``TorchDistributor`` (``num_processes``, ``local_mode``, ``use_gpu`` from settings).

``local_mode: true`` runs the processes on the driver (``torchrun`` on this machine);
``false`` runs them as Spark barrier tasks on the executors. Every process gets the same
pickled job; the function returns the same result dict on every rank, which comes back here.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from propensity.core.config import TrainSettings
from propensity.core.errors import ConfigError

log = logging.getLogger(__name__)

J = TypeVar("J")

#: Set for the local training processes unless already set: OpenMP threads that sleep instead of spinning
#: while they wait. With spinning threads, a CPU shared with other work (Spark, other jobs) trained up to
#: 2x slower, measured on a 2-core machine.
CHILD_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


@contextmanager
def _child_env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables (those not set already) for child processes, then remove them again."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def run_distributed(fn: Callable[[J], dict[str, Any]], job: J, train: TrainSettings) -> dict[str, Any]:
    """Run ``fn(job)`` in ``train.num_processes`` processes through TorchDistributor; returns rank 0's result.

    :raises RuntimeError: a process failed (the message ends with its last output lines).
    """
    from pyspark.ml.torch.distributor import TorchDistributor

    if train.use_gpu and train.local_mode:
        import torch

        if torch.cuda.device_count() < train.num_processes:
            raise ConfigError(f"training.use_gpu is true but this machine has {torch.cuda.device_count()} CUDA"
                              f" device(s) for training.num_processes={train.num_processes}; set"
                              " training.use_gpu=false or run on a GPU machine")
    where = "on the driver" if train.local_mode else "as Spark barrier tasks"
    device = "GPU (nccl, bf16)" if train.use_gpu else "CPU (gloo)"
    log.info("TorchDistributor: %d process(es) %s on %s", train.num_processes, where, device)
    start = time.perf_counter()
    distributor = TorchDistributor(num_processes=train.num_processes, local_mode=train.local_mode,
                                   use_gpu=train.use_gpu)
    with _child_env(CHILD_ENV):
        result = distributor.run(fn, job)
    if not isinstance(result, dict):
        raise RuntimeError(f"the train function returned {type(result).__name__}, expected a dict")
    log.info("TorchDistributor finished in %.1fs", time.perf_counter() - start)
    return result
