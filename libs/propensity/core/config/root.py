"""The whole configuration: one dataclass per section, checked across sections on load."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from propensity.core.config.fields import one_of, option
from propensity.core.config.models import DistillConfig, StudentSettings, TeacherSettings, TrainSettings
from propensity.core.config.sections import (
    AD_FORMATS,
    EVENT_FORMATS,
    AdsConfig,
    EvaluationConfig,
    FeaturesConfig,
    IngestConfig,
    MaintenanceConfig,
    MlflowConfig,
    MonitorConfig,
    PlatformConfig,
    PublishConfig,
    ScoringConfig,
    SparkConfig,
    SqlServerConfig,
    StorageConfig,
)
from propensity.core.errors import ConfigError

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


@dataclass
class Config:
    """The whole configuration."""

    storage: StorageConfig = option("Storage locations.", default_factory=StorageConfig)
    spark: SparkConfig = option("Local Spark session.", default_factory=SparkConfig)
    platforms: list[PlatformConfig] = option("Behaviour-event feeds, one per platform.", default_factory=list)
    ads: list[AdsConfig] = option("Ad feeds.", default_factory=list)
    identity: str | None = option("Identity CSV (platform,platform_user_id,user_id) or null.", default=None)
    ingest: IngestConfig = option("Ingestion behaviour.", default_factory=IngestConfig)
    features: FeaturesConfig = option("Feature and label windows.", default_factory=FeaturesConfig)
    teacher: TeacherSettings = option("Teacher encoder size.", default_factory=TeacherSettings)
    student: StudentSettings = option("Student encoder size.", default_factory=StudentSettings)
    training: TrainSettings = option("How pretraining, fine-tuning and distillation run.",
                                    default_factory=TrainSettings)
    distill: DistillConfig = option("Knowledge distillation.", default_factory=DistillConfig)
    evaluation: EvaluationConfig = option("Baselines, fusion and champion gates.", default_factory=EvaluationConfig)
    mlflow: MlflowConfig = option("MLflow tracking and registry.", default_factory=MlflowConfig)
    scoring: ScoringConfig = option("Batch scoring.", default_factory=ScoringConfig)
    publish: PublishConfig = option("Inventory and ads outputs.", default_factory=PublishConfig)
    monitor: MonitorConfig = option("Drift monitoring.", default_factory=MonitorConfig)
    maintenance: MaintenanceConfig = option("Table upkeep and erasure.", default_factory=MaintenanceConfig)
    sql_server: SqlServerConfig = option("The JDBC endpoint (propensity sql-server).",
                                         default_factory=SqlServerConfig)

    def __post_init__(self) -> None:
        _validate_feeds(self.platforms, self.ads)
        _validate_training_platforms(self.training, [p.name for p in self.platforms])

    @property
    def platform_names(self) -> list[str]:
        """Names of the platforms with a behaviour feed, in config order."""
        return [p.name for p in self.platforms]

    @property
    def database(self) -> str:
        """The quoted database (schema) holding every table, with its catalog where there is one."""
        prefix = f"`{self.storage.catalog}`." if self.storage.catalog else ""
        return f"{prefix}`{self.storage.schema}`"

    def table(self, name: str) -> str:
        """Fully qualified name of one of the project's tables."""
        return f"{self.database}.`{name}`"

    @property
    def root(self) -> Path:
        """``storage.root`` as an absolute path."""
        return Path(self.storage.root).resolve()


def _validate_training_platforms(training: TrainSettings, names: list[str]) -> None:
    if not names:
        return  # no feeds configured yet: nothing to check against
    for key, value in [("source_platforms", p) for p in training.source_platforms] + [
            ("target_platform", training.target_platform)]:
        if value is not None and value not in names:
            raise ConfigError(f"training.{key}: {value!r} is not a configured platform; use one of {', '.join(names)}")


def _validate_feeds(platforms: list[PlatformConfig], ads: list[AdsConfig]) -> None:
    seen: set[str] = set()
    for i, p in enumerate(platforms):
        key = f"platforms[{i}]"
        if not _NAME_RE.match(p.name):
            raise ConfigError(f"{key}.name={p.name!r} must be lower-case letters, digits and _ (start with a letter)")
        if p.name in seen:
            raise ConfigError(f"{key}.name={p.name!r} is used twice; platform names must be unique")
        seen.add(p.name)
        one_of(key, p, "format", EVENT_FORMATS)
        if not p.events:
            raise ConfigError(f"{key}.events is empty; give the path or glob of the platform's event files")
    for i, a in enumerate(ads):
        key = f"ads[{i}]"
        if not _NAME_RE.match(a.platform):
            raise ConfigError(f"{key}.platform={a.platform!r} must be lower-case letters, digits and _")
        one_of(key, a, "format", AD_FORMATS)
        if not a.path:
            raise ConfigError(f"{key}.path is empty; give the path or glob of the ad log files")
