"""Scoring throughput benchmark (README, "Benchmarks"): rows/s of three ways to score the same rows.

Self-contained: no feeds, no trained models. It makes synthetic ``event_ids`` sequences (the
models' input, see docs/features.md), builds a teacher and a student with **random weights** at the
config's ``teacher`` / ``student`` sizes (throughput does not depend on the weights),
registers both in a temporary MLflow registry, and scores N synthetic users (a cached Spark
DataFrame, counted before any timing) with

* ``scoring``: our job's path, :func:`propensity.models.spark_scoring.score_frame` (``mapInArrow``);
* ``spark_udf``: ``mlflow.pyfunc.spark_udf`` on the same registered model version;
* ``torch_loop``: the ceiling, a plain loop in this process, no Spark: fit a batch's sequences to
  the model's positions, run the network, next batch, with ``torch.set_num_threads`` = Spark's task slots x torch
  threads per worker (the same total threads as the Spark paths).

Each method first runs once over all the rows as a warm-up (models loaded in every Python
worker, buffers and kernels made); then ``rounds`` timed runs over the same rows follow, the
methods taking turns, and the best round counts (the slowest is shown too: the spread is the
machine's noise). Both Spark paths are forced with a ``noop`` write of all their output
columns. Afterwards the three ways score the same 512 rows and their scores are compared, so
each really ran the model. A profile (microseconds per row, one thread) shows where the time
goes. By default the teacher is measured through ``scoring`` and ``torch_loop`` only
(``full=True`` adds its ``spark_udf`` run).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from propensity.core.config import Config, ModelSettings
from propensity.core.schema import DOUBLE_FEATURES, FEATURE_COLUMNS, INT_FEATURES, TASKS
from propensity.core.sequence import EVENT_FIELDS, FIELD_SIZES, SEQUENCE_COLUMN, TARGET_TYPE
from propensity.models.encoder import EventEncoder, bert_config
from propensity.models.network import FeatureStats, PropensityModel, save_model
from propensity.models.pyfunc import PropensityPyfunc
from propensity.models.registry import ResolvedModel, resolve_model
from propensity.models.sequence import FlatSequences
from propensity.models.spark_scoring import arrow_frame, flat_sequences, score_frame, worker_threads

#: The three ways of scoring the same rows (see the module docstring).
METHODS = ("scoring", "spark_udf", "torch_loop")
ROLES = ("student", "teacher")
#: Registered model names used in the benchmark's own (temporary) MLflow registry.
MODEL_NAMES = {"teacher": "bench_teacher", "student": "bench_student"}
RESULT_TYPE = ", ".join(f"{t} double" for t in TASKS)

_PLATFORMS = ("shop", "app", "market")

#: Rows of the one-thread profile.
PROFILE_ROWS = 2048

#: The profile step holding the rows/s of the data path alone (:func:`spark_overhead`).
DATA_PATH_STEP = "spark + Arrow data path, no model (rows/s)"
#: The same data path with the rows read from a Delta table, as the scoring job reads the features.
DELTA_DATA_PATH_STEP = "same, rows read from a Delta table (rows/s)"


@dataclass(frozen=True)
class BenchModel:
    """One benchmark model: its local folders, registry URI and the version the scoring job resolved."""

    role: str
    model_dir: Path
    max_length: int
    uri: str
    resolved: ResolvedModel


@dataclass
class Measurement:
    """One method with one model: the rows scored and the seconds of each timed run (rounds)."""

    role: str
    method: str
    rows: int
    seconds: list[float] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        """Throughput of the best (fastest) timed run, in rows per second."""
        return self.rows / min(self.seconds) if min(self.seconds) > 0 else math.inf

    @property
    def slowest_rows_per_s(self) -> float:
        """Throughput of the slowest timed run (shows the noise between rounds)."""
        return self.rows / max(self.seconds) if max(self.seconds) > 0 else math.inf


@dataclass
class BenchResult:
    """Everything one run measured: throughputs, the per-row profile and the cross-checks."""

    users: int
    total_threads: int
    measurements: list[Measurement] = field(default_factory=list)
    #: (role, step) -> microseconds per row, one thread.
    profile: dict[tuple[str, str], float] = field(default_factory=dict)
    #: role -> largest absolute score difference between the methods on the same 512 rows.
    max_score_diff: dict[str, float] = field(default_factory=dict)
    #: Rows the profile was measured on.
    profile_rows: int = 0

    def get(self, role: str, method: str) -> Measurement:
        """The measurement of ``method`` with the ``role`` model.

        :raises KeyError: that pair was not measured.
        """
        for m in self.measurements:
            if m.role == role and m.method == method:
                return m
        raise KeyError(f"no measurement for {role} / {method}")

    def rate(self, role: str, method: str) -> float:
        """Rows/s of ``method`` with the ``role`` model (its best round)."""
        return self.get(role, method).rows_per_s


# ------------------------------------------------------------------------------------------------ synthetic data


def synthetic_sequences(n: int, events: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` ``event_ids`` values with between ``events // 4`` and ``events`` events (random ids per field)."""
    rng = np.random.default_rng(seed)
    out = []
    for length in rng.integers(max(1, events // 4), events + 1, size=n):
        ids = np.stack([rng.integers(1, FIELD_SIZES[f], size=length + 1, dtype=np.int32) for f in EVENT_FIELDS], 1)
        ids[0] = 0
        ids[0, 0], ids[0, 1] = TARGET_TYPE, ids[1, 1]
        out.append(ids.reshape(-1))
    return out


def synthetic_rows(n: int, events: int, seed: int = 0) -> pd.DataFrame:
    """``n`` scoring rows: ``user_id``, ``platform``, ``behavior_text`` and the feature columns (some NULLs)."""
    rng = np.random.default_rng(seed + 1)
    data: dict[str, object] = {
        "user_id": [f"u{i:07d}" for i in range(n)],
        "platform": rng.choice(_PLATFORMS, size=n),
        SEQUENCE_COLUMN: synthetic_sequences(n, events, seed),
    }
    for column in INT_FEATURES:
        data[column] = rng.poisson(rng.uniform(0.2, 20.0), size=n).astype(np.int32)
    for column in DOUBLE_FEATURES:
        values = rng.exponential(rng.uniform(1.0, 200.0), size=n)
        values[rng.random(n) < 0.2] = np.nan  # e.g. days since the last purchase of a non-buyer
        data[column] = values
    return pd.DataFrame(data)[["user_id", "platform", SEQUENCE_COLUMN, *FEATURE_COLUMNS]]


def to_spark(spark: SparkSession, rows: pd.DataFrame, partitions: int) -> DataFrame:
    """``rows`` as a cached Spark DataFrame of ``partitions`` equal partitions, materialised (counted)."""
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    df = spark.createDataFrame(rows).repartition(partitions).cache()
    df.count()
    return df


# ------------------------------------------------------------------------------------------------------ models


def feature_stats(rows: pd.DataFrame) -> FeatureStats:
    """Mean and standard deviation of ``signed_log1p`` of each feature column (what training computes)."""
    x = rows[list(FEATURE_COLUMNS)].to_numpy(dtype=np.float64, na_value=np.nan)
    z = np.sign(x) * np.log1p(np.abs(x))
    return FeatureStats(columns=list(FEATURE_COLUMNS), mean=np.nan_to_num(np.nanmean(z, axis=0)).tolist(),
                        std=np.nan_to_num(np.nanstd(z, axis=0), nan=1.0).tolist())


def build_model(role: str, settings: ModelSettings, stats: FeatureStats, out_dir: Path, seed: int) -> Path:
    """A :class:`PropensityModel` with random weights at ``settings``' size, saved to ``out_dir``."""
    import torch

    torch.manual_seed(seed)
    model = PropensityModel(EventEncoder(bert_config(settings)), list(FEATURE_COLUMNS),
                            settings.head_hidden_size).eval()
    model.normalizer.set_stats(stats)
    return save_model(model, out_dir, extra={"max_length": settings.max_length, "stage": f"bench-{role}"})


def build_models(cfg: Config, rows: pd.DataFrame, work: Path) -> dict[str, BenchModel]:
    """Random teacher and student, registered as ``bench_teacher`` / ``bench_student``."""
    import mlflow

    from propensity.core.tracking import setup_mlflow
    from propensity.models.pyfunc import input_example, log_pyfunc_model

    stats = feature_stats(rows)
    stats_path = work / "feature_stats.json"
    stats_path.parent.mkdir(parents=True, exist_ok=True)
    stats_path.write_text(stats.to_json())
    example = input_example(rows.head(5), list(FEATURE_COLUMNS))
    setup_mlflow(cfg)
    models: dict[str, BenchModel] = {}
    for seed, (role, settings) in enumerate((("teacher", cfg.teacher), ("student", cfg.student))):
        model_dir = build_model(role, settings, stats, work / role / "model", seed)
        with mlflow.start_run(run_name=f"bench-{role}"):
            version = log_pyfunc_model(model_dir, stats_path, example, MODEL_NAMES[role])
        models[role] = BenchModel(role, model_dir, settings.max_length, version.model_uri,
                                  resolve_model(cfg, version.model_uri))
    return models


def register_random_student(cfg: Config, sample: pd.DataFrame, work: Path, name: str) -> str:
    """Register a student with random weights at ``cfg.student``'s size as ``name``; returns its model URI.

    ``sample`` (scoring rows) gives the feature statistics and the input example. Scoring cost does
    not depend on the weights, so benchmarks of the scoring stage need no training.
    """
    import mlflow

    from propensity.core.tracking import setup_mlflow
    from propensity.models.pyfunc import input_example, log_pyfunc_model

    stats = feature_stats(sample)
    stats_path = work / "feature_stats.json"
    stats_path.parent.mkdir(parents=True, exist_ok=True)
    stats_path.write_text(stats.to_json())
    model_dir = build_model("student", cfg.student, stats, work / "model", seed=0)
    setup_mlflow(cfg)
    with mlflow.start_run(run_name=f"bench-{name}"):
        version = log_pyfunc_model(model_dir, stats_path, input_example(sample.head(5), list(FEATURE_COLUMNS)), name)
    return version.model_uri


# -------------------------------------------------------------------------------------------------- measuring


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _noop(df: DataFrame) -> None:
    """Run ``df`` to the end: every output column is written to Spark's ``noop`` sink (nothing pruned)."""
    df.write.format("noop").mode("overwrite").save()


def scoring_method(spark: SparkSession, cfg: Config, model: BenchModel) -> Callable[[DataFrame], DataFrame]:
    """(a) Our job's scoring: :func:`score_frame` (``mapInArrow``, the model loaded once per worker)."""
    return lambda df: score_frame(spark, cfg, df, model.resolved)


def spark_udf_method(spark: SparkSession, cfg: Config, model: BenchModel) -> Callable[[DataFrame], DataFrame]:
    """(b) The same registered version through ``mlflow.pyfunc.spark_udf``, the same Arrow batch size and input
    types. The UDF is made once, so the warm-up and the timed run share its per-worker model cache."""
    import mlflow

    udf = mlflow.pyfunc.spark_udf(spark, model.uri, result_type=RESULT_TYPE, env_manager="local")
    inputs = [F.col(c) if c == SEQUENCE_COLUMN else F.col(c).cast("double") for c in model.resolved.input_columns]

    def apply(df: DataFrame) -> DataFrame:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.scoring.arrow_batch_size))
        scores = udf(*inputs)
        return df.select("user_id", "platform", *(scores[t].alias(f"{t}_score") for t in TASKS))

    return apply


class TorchLoop:
    """(c) The ceiling: the pyfunc's own core (:meth:`PropensityPyfunc.score`: fit a batch's sequences to the
    model's positions, run the network, next batch) called directly; one process, no Spark."""

    def __init__(self, model: BenchModel, threads: int, batch_rows: int) -> None:
        self.pyfunc = PropensityPyfunc().load(model.model_dir)
        self.threads = threads
        self.batch_rows = batch_rows

    def __call__(self, rows: pd.DataFrame) -> np.ndarray:
        """Probabilities ``(len(rows), 3)``."""
        import torch

        torch.set_num_threads(self.threads)
        return self.pyfunc.score(FlatSequences.from_rows(list(rows[SEQUENCE_COLUMN])), rows, self.batch_rows)


def measure(result: BenchResult, spark: SparkSession, cfg: Config, model: BenchModel, methods: Sequence[str],
            df: DataFrame, rows: pd.DataFrame, rounds: int, log: Callable[[str], None]) -> None:
    """Each of ``methods`` once as a warm-up over all the rows, then ``rounds`` rounds of timed runs over the
    same rows, the methods taking turns (so a disturbance on the machine hits one round, not one method).
    Each round ends with the model's one-thread :func:`profiler` measurement (each step keeps its best round),
    so the compute bound comes from the same minutes of this shared machine as the rates it is compared with."""
    actions: dict[str, Callable[[], object]] = {}
    for method in methods:
        if method == "torch_loop":
            actions[method] = partial(TorchLoop(model, result.total_threads, cfg.scoring.batch_size), rows)
        else:
            make = scoring_method if method == "scoring" else spark_udf_method
            actions[method] = partial(_noop, make(spark, cfg, model)(df))
        actions[method]()  # warm-up: models loaded in every Python worker, buffers and kernels made
    found = {method: Measurement(model.role, method, result.users) for method in methods}
    sample = rows.head(min(len(rows), PROFILE_ROWS))
    result.profile_rows = len(sample)
    profile = profiler(model, sample, cfg.scoring.batch_size)
    for _ in range(rounds):
        for method, action in actions.items():
            found[method].seconds.append(_timed(action))
        profile(result)
    for m in found.values():
        result.measurements.append(m)
        runs = ", ".join(f"{m.rows / s:,.0f}" for s in m.seconds)
        log(f"  {m.role:<8} {m.method:<11} {m.rows_per_s:>10,.0f} rows/s (rounds: {runs})")


def cross_check(result: BenchResult, spark: SparkSession, cfg: Config, model: BenchModel, sample: pd.DataFrame,
                partitions: int) -> None:
    """Score ``sample`` with all three methods and keep the largest difference (the methods ran the model)."""
    df = to_spark(spark, sample, partitions)
    by_user = sample["user_id"].to_numpy()
    outputs = [TorchLoop(model, result.total_threads, cfg.scoring.batch_size)(sample)]
    for make in (scoring_method, spark_udf_method):
        scored: pd.DataFrame = make(spark, cfg, model)(df).toPandas()
        got = scored.set_index("user_id").loc[by_user]
        outputs.append(got[[f"{t}_score" for t in TASKS]].to_numpy(dtype=np.float64))
    df.unpersist()
    if not all(np.isfinite(v).all() and v.shape == outputs[0].shape for v in outputs):
        raise RuntimeError(f"{model.role}: a scoring method returned NaN or missing scores")
    result.max_score_diff[model.role] = max(float(np.abs(v - outputs[0]).max()) for v in outputs)


def profiler(model: BenchModel, rows: pd.DataFrame, batch_size: int) -> Callable[[BenchResult], None]:
    """A function that measures the microseconds per row of each step of the model's own work in one thread,
    on Arrow batches as the scoring job gets them: fitting the sequences to the model's positions, feature
    preparation and the network's forward pass. The model and the batch are prepared here, once; each call
    measures again, and a step keeps its fastest measurement in ``result.profile``."""
    import torch

    pyfunc = PropensityPyfunc().load(model.model_dir)
    net = pyfunc.model
    if net is None:
        raise RuntimeError("the benchmark model did not load")
    batch = pa.RecordBatch.from_pandas(rows[[SEQUENCE_COLUMN, *FEATURE_COLUMNS]], preserve_index=False)
    starts = range(0, len(rows), batch_size)

    def per_row(action: Callable[[], object]) -> float:
        action()  # warm-up
        return _timed(action) / len(rows) * 1e6

    def fitted() -> list[np.ndarray]:
        sequences = flat_sequences(batch.column(0))
        return [sequences.rows(s, s + batch_size).fit(net.max_positions) for s in starts]

    def features() -> np.ndarray:
        return arrow_frame(batch, FEATURE_COLUMNS).to_numpy(dtype=np.float32, na_value=np.nan)

    ids, x = fitted(), features()

    def forward() -> None:
        with torch.inference_mode():
            for part, s in zip(ids, starts, strict=True):
                net(torch.from_numpy(part), torch.from_numpy(x[s:s + batch_size]))

    def measure_steps(result: BenchResult) -> None:
        torch.set_num_threads(1)
        for step, action in (("sequences: Arrow -> fitted ids", fitted), ("features: Arrow -> float32", features),
                             ("forward (1 thread)", forward)):
            found = per_row(action)
            result.profile[(model.role, step)] = min(found, result.profile.get((model.role, step), found))

    return measure_steps


def spark_overhead(spark: SparkSession, cfg: Config, df: DataFrame, rows: int, columns: Sequence[str]) -> float:
    """Rows/s of the scoring job's data path from ``df`` (``rows`` rows) with a model that does nothing
    (Arrow in, zeros out)."""
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.scoring.arrow_batch_size))

    def zeros(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            zero = pa.array(np.zeros(batch.num_rows))
            yield pa.RecordBatch.from_arrays([batch.column(0), batch.column(1), *[zero] * len(TASKS)],
                                             names=["user_id", "platform", *(f"{t}_score" for t in TASKS)])

    frame = df.select("user_id", "platform", *columns).mapInArrow(
        zeros, "user_id string, platform string, " + ", ".join(f"{t}_score double" for t in TASKS))
    _noop(frame)
    return rows / _timed(partial(_noop, frame))


def data_paths(spark: SparkSession, cfg: Config, rows: pd.DataFrame, partitions: int, columns: Sequence[str],
               work: Path) -> dict[str, float]:
    """:func:`spark_overhead` from the cached rows (what the scoring methods read here) and from a Delta table
    of the same rows (what the scoring job reads: decoding Parquet's nested ``event_ids`` costs the JVM more
    than reading the cache), by profile step."""
    df = to_spark(spark, rows, partitions)
    found = {DATA_PATH_STEP: spark_overhead(spark, cfg, df, len(rows), columns)}
    table = str(work / "data_path_delta")
    df.write.format("delta").mode("overwrite").save(table)
    df.unpersist()
    found[DELTA_DATA_PATH_STEP] = spark_overhead(spark, cfg, spark.read.format("delta").load(table), len(rows),
                                                 columns)
    return found


#: (model, method) pairs measured by default; ``full=True`` adds the teacher through ``spark_udf``.
PLAN = (("student", "scoring"), ("student", "spark_udf"), ("student", "torch_loop"),
        ("teacher", "scoring"), ("teacher", "torch_loop"))


def run(spark: SparkSession, cfg: Config, users: int, work: Path, log: Callable[[str], None] = print,
        full: bool = False, rounds: int = 2) -> BenchResult:
    """Build the models and rows, and measure the :data:`PLAN` (every method for both models with ``full``)."""
    slots = spark.sparkContext.defaultParallelism
    threads = worker_threads(spark, cfg)
    result = BenchResult(users=users, total_threads=slots * threads)
    events = cfg.features.max_sequence_events
    log(f"rows: {users:,} synthetic users, {events} events each; Spark task slots {slots}, torch threads"
        f" per worker {threads}, torch_loop threads {result.total_threads}; cpu cores {os.cpu_count()}")
    started = time.perf_counter()
    rows = synthetic_rows(users, events)
    models = build_models(cfg, rows, work)
    df = to_spark(spark, rows, slots)  # one partition per task slot: no straggler, no idle slot
    log(f"setup (data, tokenizer, models, registry, cached DataFrame): {time.perf_counter() - started:.0f}s")
    plan = [(r, m) for r in ROLES for m in METHODS if full or (r, m) in PLAN]
    for role in ROLES:
        measure(result, spark, cfg, models[role], [m for r, m in plan if r == role], df, rows, rounds, log)
    df.unpersist()
    for role in ROLES:
        cross_check(result, spark, cfg, models[role], rows.head(min(users, 512)), slots)
    for step, rate in data_paths(spark, cfg, rows, slots, models["student"].resolved.input_columns, work).items():
        result.profile[("both", step)] = rate
    return result


def table(result: BenchResult) -> str:
    """The measurements as a text table (best round, slowest round), then the profile."""
    lines = [f"{'model':<8} {'method':<11} {'rows':>7} {'best s':>7} {'rows/s':>8} {'slowest':>8}"
             f" {'vs torch_loop':>14}"]
    for m in result.measurements:
        ceiling = result.rate(m.role, "torch_loop")
        lines.append(f"{m.role:<8} {m.method:<11} {m.rows:>7,} {min(m.seconds):>7.2f} {m.rows_per_s:>8,.0f}"
                     f" {m.slowest_rows_per_s:>8,.0f} {m.rows_per_s / ceiling:>13.2f}x")
    lines.append("")
    lines.append(f"where the time goes (microseconds per row, one thread, {result.profile_rows:,} rows):")
    for (role, step), value in result.profile.items():
        unit = f"{value:>10,.0f}" if "rows/s" in step else f"{value:>10.1f}"
        lines.append(f"  {role:<8} {step:<46} {unit}")
    diffs = ", ".join(f"{r} {d:.1e}" for r, d in result.max_score_diff.items())
    lines.append(f"largest score difference between the three methods on 512 rows: {diffs}")
    return "\n".join(lines)
