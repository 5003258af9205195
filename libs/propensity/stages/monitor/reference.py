"""The drift reference of a model version: its scores' and top features' fixed-bin histograms.

**Where it comes from.** On the first ``propensity monitor`` of a model version, the model
scores the ``training_examples`` rows of its own test snapshot (the ``*.test_snapshot`` param
of the MLflow run that registered it; ``*.validation_snapshot`` when the run logged no test
snapshot, as the distilled student does). That is the distribution the model was evaluated
on, independent of which day happened to be scored first. The histograms' edges are the
reference's quantiles per platform and variable (``monitor.bins``), so the bins are fixed for
the model version's life; the monitored features are the ``monitor.top_features`` features with
the largest absolute correlation with any task's score on those rows.

**Where it is kept.** In the Delta table ``drift_reference`` (one row per model version,
platform and variable) and, as ``monitor/drift_reference.json``, in the MLflow run that
registered the model version, so it travels with the model. It is made here rather than at
registration so that every registered version (teacher, student, fusion, older ones) gets
one the same way, and without scoring the test snapshot a second time in the training jobs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime

import mlflow
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from propensity.core.config import Config
from propensity.core.datasets import examples, sample_rows
from propensity.core.errors import DataNotReadyError, ModelNotFoundError
from propensity.core.locks import table_lock
from propensity.core.schema import FEATURE_COLUMNS, SCORE_COLUMNS, TASKS
from propensity.core.tables import ensure_table
from propensity.core.tracking import client
from propensity.models.registry import resolve_model
from propensity.models.spark_scoring import score_frame
from propensity.stages.monitor.histograms import Histogram, histograms, quantile_edges, to_long

log = logging.getLogger(__name__)

SCORE_VARIABLES = tuple(SCORE_COLUMNS[t] for t in TASKS)
ARTIFACT = "monitor/drift_reference.json"


@dataclass(frozen=True)
class ReferenceBins:
    """One platform and variable of a reference."""

    kind: str
    importance: float | None
    edges: tuple[float, ...]
    threshold: float | None
    histogram: Histogram


@dataclass(frozen=True)
class Reference:
    """A model version's reference: its snapshot and bins per ``(platform, variable)``."""

    model_name: str
    model_version: str
    snapshot: date
    bins: dict[tuple[str, str], ReferenceBins]

    @property
    def features(self) -> list[str]:
        """The monitored features, most important first."""
        found = {v: b.importance or 0.0 for (_, v), b in self.bins.items() if b.kind == "feature"}
        return sorted(found, key=lambda v: -found[v])


def reference_snapshot(params: dict[str, str], model: str) -> date:
    """The snapshot a model run names: its ``*.test_snapshot`` param, else its ``*.validation_snapshot``.

    :raises ModelNotFoundError: the run logged neither.
    """
    for suffix in (".test_snapshot", ".validation_snapshot"):
        found = sorted(v for k, v in params.items() if k.endswith(suffix))
        if found:
            return date.fromisoformat(found[-1])
    raise ModelNotFoundError(f"model {model} was registered by an MLflow run without a test_snapshot or"
                             " validation_snapshot param, so it has no drift reference; monitor a model trained"
                             " by `propensity finetune` or `distill`")


def load_reference(spark: SparkSession, cfg: Config, name: str, version: str) -> Reference | None:
    """The stored reference of ``name`` version ``version``, or None."""
    table = ensure_table(spark, cfg, "drift_reference")
    rows = (spark.table(table).where((F.col("model_name") == name) & (F.col("model_version") == version))
            .collect())
    if not rows:
        return None
    bins = {(r["platform"], r["variable"]): ReferenceBins(
        r["kind"], r["importance"], tuple(r["edges"]), r["threshold"],
        Histogram(tuple(int(c) for c in r["counts"]), int(r["null_count"]), r["mean"], r["share_above"]))
        for r in rows}
    return Reference(name, version, rows[0]["reference_snapshot"], bins)


#: Rows of the reference the feature importances are computed on (a seeded sample beyond that).
IMPORTANCE_ROWS = 20_000


def _importance(scored: DataFrame, features: list[str]) -> dict[str, float]:
    """Largest |Pearson correlation| of each feature with any task's score (0 for a constant feature)."""
    sample = pd.DataFrame(sample_rows(scored.select(*features, *SCORE_VARIABLES), IMPORTANCE_ROWS, seed=7)
                          .toPandas()).astype("float64")
    out: dict[str, float] = {}
    for f in features:
        values = [abs(sample[f].corr(sample[s])) for s in SCORE_VARIABLES] if sample[f].std() > 0 else []
        out[f] = float(max((v for v in values if v == v), default=0.0))
    return out


def build_reference(spark: SparkSession, cfg: Config, name: str, version: str) -> Reference:
    """Score the model's reference snapshot and compute its bins (see the module docstring).

    :raises ModelNotFoundError: the version or its run's snapshot params cannot be found.
    :raises DataNotReadyError: ``training_examples`` has no rows for the reference snapshot.
    """
    model = resolve_model(cfg, f"models:/{name}/{version}")
    run_id = client(cfg).get_model_version(name, version).run_id
    params = client(cfg).get_run(run_id).data.params if run_id else {}
    snapshot = reference_snapshot(params, f"{name} v{version}")
    rows = examples(spark, cfg, [snapshot])
    if rows.isEmpty():
        raise DataNotReadyError(f"training_examples has no rows for {snapshot}, the reference snapshot of {name}"
                                f" v{version}; run `propensity features --training-set` first")
    features = [c for c in FEATURE_COLUMNS if c in rows.columns]
    scored = score_frame(spark, cfg, rows, model, keep=("snapshot_date", "platform", *features)).persist()
    importance = _importance(scored, features)
    top = sorted(features, key=lambda f: -importance[f])[:cfg.monitor.top_features]
    variables = [*SCORE_VARIABLES, *top]
    long = to_long(scored, variables).persist()
    quantiles = quantile_edges(long, cfg.monitor.bins, 1.0 - cfg.publish.high_click_fraction)
    spec: dict[tuple[str, str], tuple[list[float], float | None]] = {}
    for (platform, variable), (edges, cut) in quantiles.items():
        spec[(platform, variable)] = (edges, cfg.publish.churn_threshold if variable == "churn_score" else cut)
    found = histograms(spark, long, spec)
    long.unpersist()
    scored.unpersist()
    bins = {(p, v): ReferenceBins("score" if v in SCORE_VARIABLES else "feature",
                                  None if v in SCORE_VARIABLES else importance[v], tuple(spec[(p, v)][0]),
                                  spec[(p, v)][1], h)
            for (_, p, v), h in found.items()}
    return Reference(name, version, snapshot, bins)


def save_reference(spark: SparkSession, cfg: Config, reference: Reference) -> None:
    """Append ``reference`` to ``drift_reference`` and log it as JSON to the model version's MLflow run."""
    table = ensure_table(spark, cfg, "drift_reference")
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    records = [(reference.model_name, reference.model_version, reference.snapshot, p, v, b.kind, b.importance,
                list(b.edges), list(b.histogram.counts), b.histogram.null_count, b.histogram.rows, b.histogram.mean,
                b.threshold, b.histogram.share_above, now)
               for (p, v), b in sorted(reference.bins.items())]
    same_model = (F.col("model_name") == F.lit(reference.model_name)) & (
        F.col("model_version") == F.lit(reference.model_version))
    with table_lock(spark, cfg, "drift_reference"):  # one reference per model version, also after a crash
        spark.createDataFrame(records, spark.table(table).schema).writeTo(table).overwrite(same_model)
    payload = {"model_name": reference.model_name, "model_version": reference.model_version,
               "reference_snapshot": reference.snapshot.isoformat(),
               "bins": [{"platform": p, "variable": v, "kind": b.kind, "importance": b.importance,
                         "edges": list(b.edges), "counts": list(b.histogram.counts),
                         "null_count": b.histogram.null_count, "mean": b.histogram.mean, "threshold": b.threshold,
                         "share_above": b.histogram.share_above} for (p, v), b in sorted(reference.bins.items())]}
    try:
        run_id = client(cfg).get_model_version(reference.model_name, reference.model_version).run_id
        if run_id:
            client(cfg).log_text(run_id, json.dumps(payload, indent=1), ARTIFACT)
    except mlflow.exceptions.MlflowException as e:  # the table holds it; the artifact is a copy
        log.warning("could not log %s to the model's run: %s", ARTIFACT, str(e).splitlines()[0])


def reference_for(spark: SparkSession, cfg: Config, name: str, version: str) -> tuple[Reference, bool]:
    """The stored reference of the model version, made and saved on first sight; and whether it is new."""
    stored = load_reference(spark, cfg, name, version)
    if stored is not None:
        return stored, False
    log.info("no drift reference for %s v%s yet: scoring its reference snapshot", name, version)
    reference = build_reference(spark, cfg, name, version)
    save_reference(spark, cfg, reference)
    return reference, True
