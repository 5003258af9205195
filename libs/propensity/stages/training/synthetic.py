"""Synthetic standalone jobs: random token rows as Parquet + a job JSON, for throughput checks without Spark.

On a GPU machine without Java::

    python -m propensity.stages.training.synthetic finetune /tmp/job --rows 20000 --size bert-base --gpu
    torchrun --standalone --nproc_per_node=1 -m propensity.stages.training.train_fn finetune /tmp/job/job.json

The train function prints samples/s every ``log_every_steps`` steps and a summary at the end.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from propensity.core.config import ModelSettings, TeacherSettings, TrainSettings
from propensity.core.schema import FEATURE_COLUMNS
from propensity.core.sequence import EVENT_FIELDS, FIELD_SIZES, SEQUENCE_COLUMN, TARGET_TYPE
from propensity.stages.training.loaders import DataSource

#: Named model sizes: the CPU default and bert-base.
SIZES = {
    "base": TeacherSettings(),
    "bert-base": TeacherSettings(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072,
                                 max_length=256, head_hidden_size=256),
}
N_FEATURES = len(FEATURE_COLUMNS)


def _write(path: Path, columns: dict[str, np.ndarray], files: int) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.mkdir(parents=True, exist_ok=True)
    arrays = {k: pa.array(list(v), type=pa.list_(pa.from_numpy_dtype(v.dtype))) for k, v in columns.items()}
    table = pa.table(arrays)
    step = math.ceil(table.num_rows / files)
    for i in range(files):
        pq.write_table(table.slice(i * step, step), path / f"part-{i:03d}.parquet", row_group_size=2048)
    return str(path)


def synthetic_rows(rows: int, model: ModelSettings, seed: int = 0) -> dict[str, np.ndarray]:
    """Random full-length event sequences, features and labels (a third of the click labels unknown)."""
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.integers(1, FIELD_SIZES[f], size=(rows, model.max_length), dtype=np.int32)
                    for f in EVENT_FIELDS], axis=2)
    ids[:, 0, :] = 0
    ids[:, 0, 0] = TARGET_TYPE
    labels = rng.integers(0, 2, size=(rows, 3)).astype(np.float32)
    known = np.ones_like(labels)
    known[::3, 1] = 0.0
    return {SEQUENCE_COLUMN: ids.reshape(rows, -1), "features": rng.normal(size=(rows, N_FEATURES)).astype(np.float32),
            "labels": labels, "label_mask": known}


def write_job(kind: str, out_dir: Path, rows: int, model: ModelSettings, train: TrainSettings) -> Path:
    """Write Parquet rows and ``job.json`` for :mod:`propensity.stages.training.train_fn`; returns the JSON path."""
    from propensity.models.encoder import bert_config
    from propensity.stages.training.train_fn import FinetuneJob, PretrainJob, job_to_json

    data = synthetic_rows(rows, model, train.seed)
    columns = data if kind == "finetune" else {SEQUENCE_COLUMN: data[SEQUENCE_COLUMN]}
    source = DataSource(rows=rows, parquet_url=_write(out_dir / "rows", columns, files=8))
    config = bert_config(model).to_dict()
    features = [f"f{i}" for i in range(N_FEATURES)]
    job: PretrainJob | FinetuneJob
    if kind == "pretrain":
        job = PretrainJob(bert_config=config, train=train, data=source, out_dir=str(out_dir / "out"))
    else:
        job = FinetuneJob(bert_config=config, feature_columns=features,
                          feature_stats={"columns": features, "mean": [0.0] * N_FEATURES, "std": [1.0] * N_FEATURES},
                          head_hidden_size=model.head_hidden_size, train=train, data=source,
                          out_dir=str(out_dir / "out"), epochs=train.epochs, transfer_mode=train.transfer_mode,
                          extra_meta={"max_length": model.max_length})
    path = out_dir / "job.json"
    path.write_text(job_to_json(job))
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m propensity.stages.training.synthetic {pretrain,finetune} OUT_DIR [--rows N] [--size S] [--gpu]``."""
    parser = argparse.ArgumentParser(description="Write a synthetic standalone training job.")
    parser.add_argument("kind", choices=("pretrain", "finetune"))
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--size", choices=sorted(SIZES), default="base")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--gpu", action="store_true", help="use_gpu: nccl and bf16 autocast")
    args = parser.parse_args(argv)
    train = replace(TrainSettings(), batch_size=args.batch_size, epochs=args.epochs, pretrain_epochs=args.epochs,
                    use_gpu=args.gpu, log_every_steps=20, workers_count=4)
    print(write_job(args.kind, args.out_dir, args.rows, SIZES[args.size], train))
    return 0


if __name__ == "__main__":
    sys.exit(main())
