"""Training throughput: teacher fine-tuning samples/s, and the share of the machine's matmul peak it reaches.

    .venv/bin/python benchmarks/training_bench.py [--rows 2048] [--epochs 2] [--root DIR]
        [--conf FILE] [--set key=value]

Self-contained and without Spark or Java, so the same command runs on a GPU machine with
``--conf conf/gpu.yml`` (bf16 there). It writes ``--rows`` synthetic labelled rows as Parquet
(event ids at the teacher's ``max_length`` positions, features, labels), and runs the pipeline's
own train function on them for a new teacher of the config's size, with the config's
``training`` settings (batch size, ``num_processes``, ``use_gpu``, threads), under ``torchrun``
exactly as TorchDistributor starts it::

    python -m torch.distributed.run --standalone --nproc_per_node=P \
        -m propensity.stages.training.train_fn finetune job.json

``samples/s`` is the train function's own count (all processes together, time in training steps
only: forward, backward, gradient all-reduce, optimizer). The work per sample is counted with
``torch.utils.flop_counter`` on one forward and backward pass of the same model on one batch
(matrix products and attention; element-wise operations are not counted, so the share is a
lower bound). The peak is the best rate of a large matrix product in this run: float32 with all
cores in one process on CPU, bf16 on a GPU. Prints, last::

    finetune_samples_per_s=N
    train_gflops_per_sample=X
    matmul_peak_gflops=X
    train_share_of_peak=X.XX
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import bench_options  # sibling files, not a package
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scoring_bench
import torch

from propensity.core.config import Config, load_config
from propensity.core.schema import FEATURE_COLUMNS, TASKS
from propensity.core.sequence import SEQUENCE_COLUMN
from propensity.models.encoder import EventEncoder, bert_config
from propensity.models.network import PropensityModel, masked_bce
from propensity.models.sequence import fit_positions
from propensity.stages.training.loaders import DataSource
from propensity.stages.training.train_fn import FinetuneJob, job_to_json


def training_rows(cfg: Config, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` rows as the train function reads them: ids fitted to the teacher's positions, raw features,
    labels and label masks (about a third of the click labels unknown, as on platforms without ads)."""
    rows = scoring_bench.synthetic_rows(n, cfg.features.max_sequence_events, seed)
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, len(TASKS))) < 0.3).astype(np.float32)
    known = np.ones_like(labels)
    known[rng.random(n) < 0.33, TASKS.index("click")] = 0.0
    return {SEQUENCE_COLUMN: fit_positions(list(rows[SEQUENCE_COLUMN]), cfg.teacher.max_length),
            "features": rows[list(FEATURE_COLUMNS)].to_numpy(dtype=np.float32, na_value=np.nan),
            "labels": labels, "label_mask": known}


def write_parquet(folder: Path, columns: dict[str, np.ndarray], files: int) -> str:
    """The rows as ``files`` Parquet files of list columns (petastorm shards by row group)."""
    folder.mkdir(parents=True)
    table = pa.table({k: pa.array(list(v), type=pa.list_(pa.from_numpy_dtype(v.dtype))) for k, v in columns.items()})
    step = -(-table.num_rows // files)
    for i in range(files):
        pq.write_table(table.slice(i * step, step), folder / f"part-{i:03d}.parquet")
    return str(folder)


def finetune_job(cfg: Config, rows: dict[str, np.ndarray], data_url: str, out_dir: Path, epochs: int
                 ) -> FinetuneJob:
    """A new teacher of ``cfg.teacher``'s size, trained with ``cfg.training`` (no validation: pure training)."""
    stats = scoring_bench.feature_stats(scoring_bench.synthetic_rows(512, 8))
    return FinetuneJob(feature_columns=list(FEATURE_COLUMNS), feature_stats=json.loads(stats.to_json()),
                       head_hidden_size=cfg.teacher.head_hidden_size, train=cfg.training,
                       data=DataSource(rows=len(rows["labels"]), parquet_url=data_url), out_dir=str(out_dir),
                       epochs=epochs, bert_config=dict(bert_config(cfg.teacher).to_dict()),
                       stage="bench", extra_meta={"max_length": cfg.teacher.max_length})


def run_train_function(job_path: Path, processes: int) -> None:
    """The train function under torchrun (one process: plain ``python -m``), as TorchDistributor runs it."""
    module = ["-m", "propensity.stages.training.train_fn", "finetune", str(job_path)]
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = [sys.executable, *(launcher if processes > 1 else []), *module]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(bench_options.REPO / "libs"),
                                                                     os.environ.get("PYTHONPATH")]))}
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)


def flops_per_sample(cfg: Config, rows: dict[str, np.ndarray], device: torch.device) -> float:
    """Floating-point operations of one forward and backward pass per row (``torch.utils.flop_counter``)."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = cfg.training.batch_size
    model = PropensityModel(EventEncoder(bert_config(cfg.teacher)), list(FEATURE_COLUMNS),
                            cfg.teacher.head_hidden_size).to(device).train()
    ids, features, labels, known = (torch.from_numpy(rows[k][:batch]).to(device)
                                    for k in (SEQUENCE_COLUMN, "features", "labels", "label_mask"))
    counter = FlopCounterMode(display=False)
    with counter:
        masked_bce(model(ids, features), labels, known).backward()
    return counter.get_total_flops() / batch


def matmul_peak(device: torch.device, seconds: float = 3.0) -> float:
    """Best FLOP/s of square matrix products (float32 on CPU with every core, bf16 on GPU)."""
    gpu = device.type == "cuda"
    n, dtype = (8192, torch.bfloat16) if gpu else (1024, torch.float32)
    if not gpu:
        torch.set_num_threads(os.cpu_count() or 1)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if gpu:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        if gpu:
            torch.cuda.synchronize()
        best = max(best, 10 * 2 * n ** 3 / (time.perf_counter() - start))
    return best


def main(argv: list[str] | None = None) -> int:
    """Measure and print; exit status 0 when it ran (the share is reported, not enforced)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=2048, help="synthetic training rows (default 2048)")
    parser.add_argument("--epochs", type=int, default=2, help="passes over the rows (default 2)")
    bench_options.add_common(parser, "work folder")
    args = parser.parse_args(argv)
    cfg = load_config(bench_options.overlays(args), args.overrides)
    if args.rows < cfg.training.batch_size * cfg.training.num_processes:
        parser.error(f"--rows must be at least training.batch_size x training.num_processes"
                     f" ({cfg.training.batch_size * cfg.training.num_processes})")
    root = bench_options.work_root(args, "propensity-train-bench-")
    device = torch.device("cuda" if cfg.training.use_gpu else "cpu")
    processes = cfg.training.num_processes
    print(f"training bench: teacher {cfg.teacher.num_layers} x {cfg.teacher.hidden_size}, {cfg.teacher.max_length}"
          f" positions, batch {cfg.training.batch_size} per process, {processes} process(es) on {device.type},"
          f" {args.rows:,} rows x {args.epochs} epochs; load average {os.getloadavg()[0]:.2f}", flush=True)
    try:
        rows = training_rows(cfg, args.rows)
        url = write_parquet(root / "rows", rows, files=max(2, 2 * processes))
        job_path = root / "job.json"
        job_path.write_text(job_to_json(finetune_job(cfg, rows, url, root / "out", args.epochs)))
        started = time.perf_counter()
        run_train_function(job_path, processes)
        wall = time.perf_counter() - started
        result = json.loads((root / "out" / "result.json").read_text())
        per_sample = flops_per_sample(cfg, rows, device)
        peak = matmul_peak(device)
    finally:
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)
    rate = float(result["samples_per_s"])
    print(f"train function: {wall:.0f}s in all (start-up and the end-of-epoch passes included);"
          f" {rate:,.0f} samples/s in training steps")
    print(f"work: {per_sample / 1e9:.3f} GFLOP per sample (forward + backward); achieved"
          f" {rate * per_sample / 1e9:,.1f} GFLOP/s; matmul peak {peak / 1e9:,.1f} GFLOP/s")
    print(f"finetune_samples_per_s={rate:.0f}")
    print(f"train_gflops_per_sample={per_sample / 1e9:.4f}")
    print(f"matmul_peak_gflops={peak / 1e9:.1f}")
    print(f"train_share_of_peak={rate * per_sample / peak:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
