"""Configuration: YAML files loaded into validated dataclasses.

- :mod:`~propensity.core.config.sections` and :mod:`~propensity.core.config.models`: the sections,
  one dataclass each, every field with a default and a help text;
- :mod:`~propensity.core.config.root`: :class:`Config`, the whole configuration;
- :mod:`~propensity.core.config.loader`: :func:`load_config` (``conf/base.yml`` + overlays + ``--set``);
- :mod:`~propensity.core.config.reference`: every key with its default and help (``conf/base.yml``,
  ``docs/config.md`` and ``propensity config --keys`` are generated from it).
"""

from propensity.core.config.loader import config_from_dict, load_config, read_yaml, repo_conf_dir
from propensity.core.config.models import (
    DistillConfig,
    ModelSettings,
    StudentSettings,
    TeacherSettings,
    TrainSettings,
)
from propensity.core.config.root import Config
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

__all__ = [
    "AD_FORMATS",
    "EVENT_FORMATS",
    "AdsConfig",
    "Config",
    "DistillConfig",
    "EvaluationConfig",
    "FeaturesConfig",
    "IngestConfig",
    "MaintenanceConfig",
    "MlflowConfig",
    "ModelSettings",
    "MonitorConfig",
    "PlatformConfig",
    "PublishConfig",
    "ScoringConfig",
    "SparkConfig",
    "SqlServerConfig",
    "StorageConfig",
    "StudentSettings",
    "TeacherSettings",
    "TrainSettings",
    "config_from_dict",
    "load_config",
    "read_yaml",
    "repo_conf_dir",
]
