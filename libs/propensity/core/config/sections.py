"""Config sections for storage, Spark, feeds, features, evaluation, scoring and publishing.

Every field has a default and a help text; ``__post_init__`` raises
:class:`~propensity.core.errors.ConfigError` naming the dotted key of a bad value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from propensity.core.config.fields import at_least, option, within
from propensity.core.errors import ConfigError

EVENT_FORMATS = ("rees46", "taobao", "retailrocket")
AD_FORMATS = ("taobao_ads",)
_SQL_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class StorageConfig:
    """Where tables, locks, MLflow data and checkpoints live."""

    root: str = option("Directory for all local state (Delta tables in warehouse/, write locks, mlflow, checkpoints).",
                       default="var/propensity")
    schema: str = option("Database (schema) holding every table.", default="propensity")
    catalog: str | None = option("Unity Catalog name on Databricks; null locally.", default=None)
    lock_wait_seconds: int = option(
        "How long a write waits while another process writes the same table (local storage) before failing.",
        default=900)

    def __post_init__(self) -> None:
        for key in ("schema", "catalog"):
            value = getattr(self, key)
            if value is not None and not _SQL_IDENTIFIER.match(value):
                raise ConfigError(f"storage.{key}={value!r} is not a valid SQL identifier; use letters, digits and _")
        at_least("storage", self, 0, "lock_wait_seconds")


def _default_spark_conf() -> dict[str, str]:
    # Small local tables: fewer snapshot partitions make each Delta commit much cheaper.
    return {"spark.databricks.delta.snapshotPartitions": "2",
            "spark.sql.adaptive.coalescePartitions.enabled": "true"}


@dataclass
class SparkConfig:
    """How the local Spark session is built (under spark-submit and on Databricks only ``conf`` applies)."""

    master: str = option("Spark master for local runs.", default="local[*]")
    app_name: str = option("Spark application name.", default="propensity")
    shuffle_partitions: int = option("spark.sql.shuffle.partitions for local runs.", default=8)
    driver_memory: str = option("spark.driver.memory for local runs.", default="4g")
    delta_jars_dir: str | None = option(
        "Folder with pre-fetched Delta jars (air-gapped); null: the venv's jars, else Maven.", default=None)
    delta_package: str = option("Maven coordinates of Delta when no jar folder is found.",
                                default="io.delta:delta-spark_2.13:4.0.1")
    ui_enabled: bool = option("Start the Spark UI.", default=False)
    conf: dict[str, str] = option("Extra Spark settings, passed as they are.", default_factory=_default_spark_conf)

    def __post_init__(self) -> None:
        at_least("spark", self, 1, "shuffle_partitions")


@dataclass
class PlatformConfig:
    """One platform's behaviour-event feed."""

    name: str = option("Platform name, used in table names and as the id prefix.", default="")
    format: str = option(f"Raw format: one of {', '.join(EVENT_FORMATS)}.", default="")
    events: str = option("Path or glob of the raw event CSV files.", default="")
    items: str | None = option("Optional item catalog CSV (item_id,title,category,brand,price).", default=None)


@dataclass
class AdsConfig:
    """One platform's ad impression/click feed."""

    platform: str = option("Platform the ads were shown on.", default="")
    format: str = option(f"Raw format: one of {', '.join(AD_FORMATS)}.", default="taobao_ads")
    path: str = option("Path or glob of the raw ad log CSV files.", default="")
    ad_feature: str | None = option("Optional ad_feature CSV (adgroup_id,cate_id,campaign_id,customer,brand,price).",
                                    default=None)


@dataclass
class IngestConfig:
    """Ingestion behaviour."""

    reprocess: bool = option("Read files again even if already ingested (events stay deduplicated).", default=False)
    earliest_event_date: str = option("Events before this UTC date (YYYY-MM-DD) are rejected as implausible.",
                                      default="2000-01-01")
    future_tolerance_hours: float = option(
        "Events later than their file's modification time plus this many hours are rejected (clock skew,"
        " mislabelled time zones).", default=24.0)
    max_price: float = option("Prices above this (in the feed's currency) are rejected as absurd.", default=1e9)

    def __post_init__(self) -> None:
        try:
            date.fromisoformat(self.earliest_event_date)
        except ValueError as e:
            raise ConfigError(f"ingest.earliest_event_date={self.earliest_event_date!r} is not a date;"
                              " use YYYY-MM-DD") from e
        within("ingest", self, "future_tolerance_hours", 0.0, 24.0 * 366)
        within("ingest", self, "max_price", 0.0, 1e15, low_open=True)


@dataclass
class FeaturesConfig:
    """Point-in-time feature and label windows (see docs/labels.md)."""

    lookback_days: int = option("Feature window before the snapshot date, in days.", default=30)
    purchase_horizon_days: int = option("Purchase label horizon, in days.", default=7)
    click_horizon_days: int = option("Ad click label horizon, in days.", default=7)
    churn_horizon_days: int = option("Churn label horizon, in days.", default=30)
    max_sequence_events: int = option("Most recent events kept in behavior_text and event_ids (the models read"
                                      " the newest teacher.max_length - 1 of them).", default=127)
    snapshot_step_days: int = option("Days between the training plan's snapshot dates (train, validation, test).",
                                     default=7)
    min_history_days: int = option("Days of events (capped at lookback_days) a train snapshot needs before it.",
                                   default=7)
    train_step_days: int = option("Days between train snapshot dates; 0: snapshot_step_days. A denser train grid"
                                  " gives more labelled rows from the same history.", default=0)
    max_train_snapshots: int = option("Newest train snapshots kept in the plan; 0: all.", default=0)

    def __post_init__(self) -> None:
        at_least("features", self, 1, "lookback_days", "purchase_horizon_days", "click_horizon_days",
                 "churn_horizon_days", "max_sequence_events", "snapshot_step_days", "min_history_days")
        at_least("features", self, 0, "max_train_snapshots", "train_step_days", hint=" (0: the default)")

    @property
    def max_horizon_days(self) -> int:
        """The longest label horizon."""
        return max(self.purchase_horizon_days, self.click_horizon_days, self.churn_horizon_days)


@dataclass
class ScoringConfig:
    """Batch scoring."""

    model_uri: str = option("Model to score with; an alias URI follows the registry (champion).",
                            default="models:/propensity_student@champion")
    batch_size: int = option("Rows per forward pass inside a Python worker (128 keeps a layer's activations in a"
                             " core's cache on CPU).", default=128)
    arrow_batch_size: int = option("spark.sql.execution.arrow.maxRecordsPerBatch while scoring.", default=4096)
    torch_threads: int = option("torch threads per Python worker; 0 means cores / worker processes.", default=0)

    def __post_init__(self) -> None:
        at_least("scoring", self, 1, "batch_size", "arrow_batch_size")
        at_least("scoring", self, 0, "torch_threads", hint=" (0: automatic)")


@dataclass
class PublishConfig:
    """Downstream tables for inventory and ads."""

    high_click_fraction: float = option("Share of scored users per platform in the high_click audience.",
                                        default=0.1)
    churn_threshold: float = option("churn_score at or above which a user is at risk.", default=0.5)
    valuable_min_spend: float = option("Spend in the lookback that makes a user valuable for churn_risk.",
                                       default=1.0)

    def __post_init__(self) -> None:
        within("publish", self, "high_click_fraction", 0.0, 1.0, low_open=True)
        within("publish", self, "churn_threshold", 0.0, 1.0)
        within("publish", self, "valuable_min_spend", 0.0, 1e12)


def _default_lr_reg_params() -> list[float]:
    return [1e-4, 1e-3, 1e-2, 1e-1]


def _default_gbt_grid() -> list[list[int]]:
    return [[20, 3], [30, 3]]


@dataclass
class EvaluationConfig:
    """Model comparison, baselines and the champion gates."""

    gate_margin: float = option("Test AUC by which a model must beat the best baseline on every task to become"
                                " champion.", default=0.0)
    fusion_weight_step: float = option("Grid step of the fusion weight w chosen on validation.", default=0.05)
    lr_reg_params: list[float] = option("L2 strengths (regParam) tried for baseline_lr; the best validation AUC"
                                        " per task wins.", default_factory=_default_lr_reg_params)
    gbt_grid: list[list[int]] = option("[trees, depth] pairs tried for baseline_gbt; the best validation AUC per"
                                       " task wins.", default_factory=_default_gbt_grid)
    ablations: bool = option("Also train and evaluate the sequence-only teacher (propensity finetune) and report the"
                             " teacher's features-only variant, so the encoder's share is visible.", default=True)
    bootstrap_rounds: int = option("Bootstrap rounds of the AUC-difference intervals (paired, test snapshot).",
                                   default=200)

    def __post_init__(self) -> None:
        within("evaluation", self, "gate_margin", -1.0, 1.0, low_open=True, high_open=True, example="0.0")
        within("evaluation", self, "fusion_weight_step", 0.0, 0.5, low_open=True)
        at_least("evaluation", self, 10, "bootstrap_rounds")
        if not self.lr_reg_params or any(not 0.0 <= r < 1e6 for r in self.lr_reg_params):
            raise ConfigError(f"evaluation.lr_reg_params={self.lr_reg_params} must be a non-empty list of numbers"
                              " >= 0, e.g. [0.001, 0.01]")
        if not self.gbt_grid or any(len(g) != 2 or min(g) < 1 for g in self.gbt_grid):
            raise ConfigError(f"evaluation.gbt_grid={self.gbt_grid} must be a non-empty list of [trees, depth]"
                              " pairs of positive integers, e.g. [[30, 3], [60, 5]]")


@dataclass
class MlflowConfig:
    """MLflow tracking and registry (default: a SQLite store under storage.root)."""

    tracking_uri: str | None = option("Tracking URI; null: sqlite:///<storage.root>/mlflow.db.", default=None)
    registry_uri: str | None = option("Registry URI; null: same as the tracking URI.", default=None)
    experiment: str = option("Experiment name.", default="propensity")


@dataclass
class MonitorConfig:
    """Drift monitoring of scores and input features (``propensity monitor``)."""

    psi_warn: float = option("PSI at or above which a comparison is marked warn (rule of thumb: < 0.1 stable).",
                             default=0.1)
    psi_alert: float = option("PSI at or above which a comparison is an alert: one line each, exit code 4"
                              " (rule of thumb: > 0.25 major shift).", default=0.25)
    bins: int = option("Bins of the reference histograms (quantiles of the model's reference scores and features;"
                       " ties merge bins).", default=10)
    top_features: int = option("Input features monitored besides the scores: the ones most correlated with the"
                               " model's scores on its reference snapshot.", default=5)
    min_rows: int = option("Rows a platform needs on both sides of a comparison for it to warn or alert (PSI of"
                           " fewer rows is noise); smaller comparisons are reported as few_rows.", default=200)

    def __post_init__(self) -> None:
        within("monitor", self, "psi_warn", 0.0, 10.0, low_open=True)
        within("monitor", self, "psi_alert", 0.0, 10.0, low_open=True)
        if self.psi_alert < self.psi_warn:
            raise ConfigError(f"monitor.psi_alert={self.psi_alert} must be >= monitor.psi_warn={self.psi_warn}")
        at_least("monitor", self, 2, "bins")
        at_least("monitor", self, 0, "top_features", "min_rows")


@dataclass
class MaintenanceConfig:
    """Table upkeep (``propensity maintain``) and erasure (``propensity forget``)."""

    vacuum_retain_hours: int = option("VACUUM retention of `propensity maintain`: older unreferenced files are"
                                      " deleted (time travel reaches back this far).", default=168)
    erasure_retain_hours: int = option("VACUUM retention of `propensity forget`: 0 deletes the erased person's old"
                                       " files at once (time travel to before the erasure is lost; a reader of an"
                                       " older version running at that moment fails).", default=0)

    def __post_init__(self) -> None:
        at_least("maintenance", self, 0, "vacuum_retain_hours", "erasure_retain_hours")


@dataclass
class SqlServerConfig:
    """``propensity sql-server``: who may log in over JDBC (it is read-only for everyone; see docs/security.md)."""

    credentials_file: str | None = option(
        "File of user:password lines (readable by its owner only) for JDBC logins; null: the"
        " PROPENSITY_SQL_USER / PROPENSITY_SQL_PASSWORD environment variables.", default=None)
