"""``propensity monitor --snapshot-date D``: is today's scoring like the model's reference and like yesterday?

For the model that scored snapshot D (``user_scores``), per platform and variable (the three
scores and the model's most important input features, see
:mod:`~propensity.stages.monitor.reference`), two comparisons over the reference's fixed bins:

* ``reference``: D against the model's reference snapshot (its training-time distribution);
* ``previous``: D against the newest earlier snapshot in ``user_scores`` (scores from
  ``user_scores``, features from ``training_examples`` of that snapshot), when there is one.

Each gives the PSI, the means and the shares at or above the threshold, and a status: ``alert``
at ``monitor.psi_alert``, ``warn`` at ``monitor.psi_warn``, ``few_rows`` (never alerts) when a
side has fewer than ``monitor.min_rows`` rows. Rows are appended to ``score_drift``; a drift
plot (PNG) and the rows go to an MLflow run. Any alert makes the CLI print one line per breach
and exit with :data:`~propensity.verbs.EXIT_DRIFT_ALERT`, so the scheduled task shows red.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import mlflow
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from propensity.core.config import Config
from propensity.core.errors import DataNotReadyError
from propensity.core.locks import table_lock
from propensity.core.tables import ensure_table, require_table
from propensity.core.tracking import setup_mlflow
from propensity.stages.monitor.histograms import Histogram, histograms, psi, to_long
from propensity.stages.monitor.plots import drift_figure
from propensity.stages.monitor.reference import SCORE_VARIABLES, Reference, reference_for


@dataclass
class MonitorReport:
    """The rows written to ``score_drift`` and what they mean."""

    snapshot_date: date
    model: str
    reference_snapshot: date
    previous_snapshot: date | None
    rows: pd.DataFrame
    new_reference: bool
    psi_alert: float = 0.25
    mlflow_run_id: str | None = None
    plot: str | None = field(default=None)

    @property
    def alerts(self) -> pd.DataFrame:
        """Rows with status alert."""
        return self.rows[self.rows["status"] == "alert"]

    def breach_lines(self) -> list[str]:
        """One line per alert."""
        return [f"ALERT drift {r.variable} on {r.platform}: PSI {r.psi:.3f} >= {self.psi_alert:g} vs {r.comparison}"
                f" ({r.baseline_snapshot}); mean {_num(r.baseline_mean)} -> {_num(r.mean)}"
                for r in self.alerts.itertuples()]

    def format(self) -> str:
        """The summary line (and the worst comparisons)."""
        counts = self.rows["status"].value_counts().to_dict()
        worst = self.rows.sort_values("psi", ascending=False).head(1)
        top = (f"; max PSI {worst.iloc[0]['psi']:.3f} ({worst.iloc[0]['variable']} on {worst.iloc[0]['platform']}"
               f" vs {worst.iloc[0]['comparison']})" if len(worst) else "")
        previous = self.previous_snapshot.isoformat() if self.previous_snapshot else "none"
        return (f"monitor {self.snapshot_date}: {self.model} vs reference {self.reference_snapshot}"
                f"{' (new)' if self.new_reference else ''} and previous {previous}: {len(self.rows)} comparisons,"
                f" {counts.get('alert', 0)} alert, {counts.get('warn', 0)} warn, {counts.get('few_rows', 0)} few_rows"
                f"{top}")


def _num(value: float | None) -> str:
    return "NULL" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def status(value: float, rows: int, baseline_rows: int, cfg: Config) -> str:
    """ok, warn, alert or few_rows for one comparison."""
    if min(rows, baseline_rows) < cfg.monitor.min_rows:
        return "few_rows"
    if value >= cfg.monitor.psi_alert:
        return "alert"
    return "warn" if value >= cfg.monitor.psi_warn else "ok"


def _scored_model(scores: DataFrame, snapshot_date: date) -> tuple[str, str]:
    rows = scores.groupBy("model_name", "model_version").count().orderBy(F.col("count").desc()).collect()
    if not rows:
        raise DataNotReadyError(f"user_scores has no rows for {snapshot_date}; run"
                                f" `propensity score --snapshot-date {snapshot_date}` first")
    return rows[0]["model_name"], rows[0]["model_version"]


def _current(spark: SparkSession, cfg: Config, reference: Reference, dates: list[date]) -> DataFrame:
    """Long form of the scores (``user_scores``) and monitored features (``training_examples``) on ``dates``."""
    scores = spark.table(cfg.table("user_scores")).where(F.col("snapshot_date").isin(dates))
    long = to_long(scores, SCORE_VARIABLES)
    if reference.features:
        features = spark.table(require_table(spark, cfg, "training_examples")).where(
            F.col("snapshot_date").isin(dates))
        long = long.unionByName(to_long(features, reference.features))
    return long


def compare(reference: Reference, found: dict[tuple[object, str, str], Histogram], snapshot_date: date,
            previous: date | None, cfg: Config) -> pd.DataFrame:
    """One row per platform, variable and comparison (reference, previous) with PSI and status."""
    records = []
    for (platform, variable), bins in sorted(reference.bins.items()):
        now = found.get((snapshot_date, platform, variable))
        if now is None:
            continue
        baselines = [("reference", reference.snapshot, bins.histogram)]
        if previous is not None and (previous, platform, variable) in found:
            baselines.append(("previous", previous, found[(previous, platform, variable)]))
        for comparison, day, base in baselines:
            value = psi(base, now)
            records.append({
                "platform": platform, "variable": variable, "kind": bins.kind, "comparison": comparison,
                "baseline_snapshot": day, "rows": now.rows, "baseline_rows": base.rows, "mean": now.mean,
                "baseline_mean": base.mean, "threshold": bins.threshold, "share_above": now.share_above,
                "baseline_share_above": base.share_above, "psi": value,
                "status": status(value, now.rows, base.rows, cfg)})
    return pd.DataFrame.from_records(records, columns=[
        "platform", "variable", "kind", "comparison", "baseline_snapshot", "rows", "baseline_rows", "mean",
        "baseline_mean", "threshold", "share_above", "baseline_share_above", "psi", "status"])


def run_monitor(spark: SparkSession, cfg: Config, snapshot_date: date) -> MonitorReport:
    """Compare snapshot ``snapshot_date``'s scores and top features with the reference and the previous snapshot.

    :raises TableNotFoundError: ``user_scores`` does not exist.
    :raises DataNotReadyError: the snapshot is not scored, or the model's reference snapshot is not built.
    :raises ModelNotFoundError: the scoring model cannot be found or has no reference snapshot.
    """
    scores = spark.table(require_table(spark, cfg, "user_scores"))
    name, version = _scored_model(scores.where(F.col("snapshot_date") == F.lit(snapshot_date)), snapshot_date)
    setup_mlflow(cfg)
    reference, new = reference_for(spark, cfg, name, version)
    earlier = scores.where(F.col("snapshot_date") < F.lit(snapshot_date)).agg(F.max("snapshot_date")).first()
    previous = earlier[0] if earlier is not None else None
    dates = [snapshot_date] + ([previous] if previous else [])
    spec = {key: (list(b.edges), b.threshold) for key, b in reference.bins.items()}
    found = histograms(spark, _current(spark, cfg, reference, dates), spec)
    rows = compare(reference, found, snapshot_date, previous, cfg)
    report = MonitorReport(snapshot_date, f"{name} v{version}", reference.snapshot, previous, rows, new,
                           cfg.monitor.psi_alert)
    with mlflow.start_run(run_name=f"monitor-{snapshot_date}", tags={"stage": "monitor", "model": name,
                                                                      "model_version": version}) as run:
        report.mlflow_run_id = run.info.run_id
        mlflow.log_params({"monitor.snapshot_date": snapshot_date.isoformat(),
                           "monitor.reference_snapshot": reference.snapshot.isoformat(),
                           "monitor.previous_snapshot": previous.isoformat() if previous else "none",
                           "monitor.psi_warn": cfg.monitor.psi_warn, "monitor.psi_alert": cfg.monitor.psi_alert})
        if len(rows):
            mlflow.log_metric("max_psi", float(rows["psi"].max()))
            mlflow.log_metric("alerts", float((rows["status"] == "alert").sum()))
            mlflow.log_text(rows.to_csv(index=False), f"monitor/score_drift_{snapshot_date}.csv")
        report.plot = f"monitor/drift_{snapshot_date}.png"
        mlflow.log_figure(drift_figure(reference, found, snapshot_date, previous, rows), report.plot)
    _append(spark, cfg, report, name, version)
    return report


def _append(spark: SparkSession, cfg: Config, report: MonitorReport, name: str, version: str) -> None:
    table = ensure_table(spark, cfg, "score_drift")
    if report.rows.empty:
        return
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    records = [(now, report.snapshot_date, name, version, r.platform, r.variable, r.kind, r.comparison,
                r.baseline_snapshot, int(r.rows), int(r.baseline_rows), _float(r.mean), _float(r.baseline_mean),
                _float(r.threshold), _float(r.share_above), _float(r.baseline_share_above), float(r.psi), r.status,
                report.mlflow_run_id) for r in report.rows.itertuples()]
    same_run = ((F.col("snapshot_date") == F.lit(report.snapshot_date)) & (F.col("model_name") == F.lit(name))
                & (F.col("model_version") == F.lit(version)))
    with table_lock(spark, cfg, "score_drift"):  # a re-run replaces its rows: no duplicates after a crash
        spark.createDataFrame(records, spark.table(table).schema).writeTo(table).overwrite(same_run)


def _float(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return None if math.isnan(number) else number
