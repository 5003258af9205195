"""Configuration: YAML files loaded into validated dataclasses.

Loading order: ``conf/base.yml``, then each ``--conf`` overlay in the order given
(default ``conf/local.yml``), then each ``--set dotted.key=value``. Mappings merge
key by key; lists and scalars replace. Every field has a default and a ``help``
text; unknown keys, wrong types and bad values raise :class:`ConfigError` naming
the dotted key. Relative paths are resolved against the current directory.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from propensity.errors import ConfigError
from propensity.training.settings import StudentSettings, TeacherSettings, TrainSettings

EVENT_FORMATS = ("rees46", "taobao", "retailrocket")
AD_FORMATS = ("taobao_ads",)
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")

T = TypeVar("T")


def _help(text: str, **kwargs: Any) -> Any:
    """Return a dataclass field whose metadata carries its help text."""
    return field(metadata={"help": text}, **kwargs)


@dataclass
class StorageConfig:
    """Where tables, metastore, MLflow data and checkpoints live."""

    root: str = _help("Directory for all local state (warehouse, metastore, mlflow).",
                      default="var/propensity")
    schema: str = _help("Database (schema) holding every table.", default="propensity")
    catalog: str | None = _help("Unity Catalog name on Databricks; null locally.",
                                default=None)

    def __post_init__(self) -> None:
        for key in ("schema", "catalog"):
            value = getattr(self, key)
            if value is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value):
                raise ConfigError(f"storage.{key}={value!r} is not a valid SQL identifier; use letters, digits and _")


@dataclass
class SparkConfig:
    """How the local Spark session is built (ignored under spark-submit and on Databricks)."""

    master: str = _help("Spark master for local runs.", default="local[*]")
    app_name: str = _help("Spark application name.", default="propensity")
    shuffle_partitions: int = _help("spark.sql.shuffle.partitions for local runs.", default=8)
    driver_memory: str = _help("spark.driver.memory for local runs.", default="4g")
    delta_jars_dir: str | None = _help(
        "Folder with pre-fetched Delta jars (air-gapped); null: the venv's jars, else Maven.", default=None
    )
    delta_package: str = _help("Maven coordinates of Delta when no jar folder is found.",
                               default="io.delta:delta-spark_2.13:4.0.1")
    ui_enabled: bool = _help("Start the Spark UI.", default=False)
    conf: dict[str, str] = _help("Extra Spark settings, passed as they are.", default_factory=dict)

    def __post_init__(self) -> None:
        if self.shuffle_partitions < 1:
            raise ConfigError(f"spark.shuffle_partitions={self.shuffle_partitions} must be >= 1")


@dataclass
class PlatformConfig:
    """One platform's behaviour-event feed."""

    name: str = _help("Platform name, used in table names and as the id prefix.", default="")
    format: str = _help(f"Raw format: one of {', '.join(EVENT_FORMATS)}.", default="")
    events: str = _help("Path or glob of the raw event CSV files.", default="")
    items: str | None = _help("Optional item catalog CSV (item_id,title,category,brand,price).", default=None)


@dataclass
class AdsConfig:
    """One platform's ad impression/click feed."""

    platform: str = _help("Platform the ads were shown on.", default="")
    format: str = _help(f"Raw format: one of {', '.join(AD_FORMATS)}.", default="taobao_ads")
    path: str = _help("Path or glob of the raw ad log CSV files.", default="")
    ad_feature: str | None = _help("Optional ad_feature CSV (adgroup_id,cate_id,campaign_id,customer,brand,price).",
                                   default=None)


@dataclass
class IngestConfig:
    """Ingestion behaviour."""

    reprocess: bool = _help("Read files again even if already ingested (events stay deduplicated).", default=False)


@dataclass
class FeaturesConfig:
    """Point-in-time feature and label windows (DESIGN section 5)."""

    lookback_days: int = _help("Feature window before the snapshot date, in days.", default=30)
    purchase_horizon_days: int = _help("Purchase label horizon, in days.", default=7)
    click_horizon_days: int = _help("Ad click label horizon, in days.", default=7)
    churn_horizon_days: int = _help("Churn label horizon, in days.", default=30)
    max_sequence_events: int = _help("Most recent events kept in behavior_text.", default=64)
    snapshot_step_days: int = _help("Days between the training plan's snapshot dates (train, validation, test).",
                                    default=7)
    min_history_days: int = _help("Days of events (capped at lookback_days) a train snapshot needs before it.",
                                  default=7)
    train_step_days: int = _help("Days between train snapshot dates; 0: snapshot_step_days. A denser train grid"
                                 " gives more labelled rows from the same history.", default=0)
    max_train_snapshots: int = _help("Newest train snapshots kept in the plan; 0: all.", default=0)

    def __post_init__(self) -> None:
        for key in ("lookback_days", "purchase_horizon_days", "click_horizon_days", "churn_horizon_days",
                    "max_sequence_events", "snapshot_step_days", "min_history_days"):
            value = getattr(self, key)
            if value < 1:
                raise ConfigError(f"features.{key}={value} must be >= 1")
        if self.max_train_snapshots < 0:
            raise ConfigError(f"features.max_train_snapshots={self.max_train_snapshots} must be >= 0 (0: all)")
        if self.train_step_days < 0:
            raise ConfigError(f"features.train_step_days={self.train_step_days} must be >= 0"
                              " (0: snapshot_step_days)")


@dataclass
class ScoringConfig:
    """Batch scoring (DESIGN section 8)."""

    model_uri: str = _help("Model to score with; an alias URI follows the registry (champion).",
                           default="models:/propensity_student@champion")
    batch_size: int = _help("Rows per model call inside a Python worker.", default=512)
    arrow_batch_size: int = _help("spark.sql.execution.arrow.maxRecordsPerBatch while scoring.", default=4096)
    torch_threads: int = _help("torch threads per Python worker; 0 means cores / worker processes.", default=0)

    def __post_init__(self) -> None:
        for key in ("batch_size", "arrow_batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"scoring.{key}={getattr(self, key)} must be >= 1")
        if self.torch_threads < 0:
            raise ConfigError(f"scoring.torch_threads={self.torch_threads} must be >= 0")


@dataclass
class PublishConfig:
    """Downstream tables for inventory and ads (DESIGN section 3)."""

    high_click_fraction: float = _help("Share of scored users per platform in the high_click audience.",
                                       default=0.1)
    churn_threshold: float = _help("churn_score at or above which a user is at risk.", default=0.5)
    valuable_min_spend: float = _help("Spend in the lookback that makes a user valuable for churn_risk.",
                                      default=1.0)

    def __post_init__(self) -> None:
        if not 0 < self.high_click_fraction <= 1:
            raise ConfigError(f"publish.high_click_fraction={self.high_click_fraction} must be in (0, 1]")
        if not 0 <= self.churn_threshold <= 1:
            raise ConfigError(f"publish.churn_threshold={self.churn_threshold} must be in [0, 1]")


@dataclass
class DistillConfig:
    """Knowledge distillation of the student from the teacher (DESIGN section 7)."""

    teacher_uri: str = _help("Teacher whose probabilities the student learns from.",
                             default="models:/propensity_teacher/latest")
    alpha: float = _help("Weight of the hard-label loss; 1 - alpha weighs the soft teacher loss.", default=0.5)
    temperature: float = _help("Softening temperature T of the teacher's logits (the soft loss is scaled by T^2).",
                               default=2.0)

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"distill.alpha={self.alpha} must be in [0, 1]")
        if self.temperature <= 0:
            raise ConfigError(f"distill.temperature={self.temperature} must be > 0, e.g. 2.0")


@dataclass
class EvaluationConfig:
    """Model comparison, baselines and the champion gates (DESIGN section 7)."""

    gate_margin: float = _help("Test AUC by which a model must beat the best baseline on every task to become"
                               " champion.", default=0.0)
    fusion_weight_step: float = _help("Grid step of the fusion weight w chosen on validation.", default=0.05)
    gbt_max_iter: int = _help("Trees of the gradient-boosted baseline.", default=40)
    gbt_max_depth: int = _help("Depth of the gradient-boosted baseline's trees.", default=4)

    def __post_init__(self) -> None:
        if not -1.0 < self.gate_margin < 1.0:
            raise ConfigError(f"evaluation.gate_margin={self.gate_margin} must be in (-1, 1), e.g. 0.0")
        if not 0.0 < self.fusion_weight_step <= 0.5:
            raise ConfigError(f"evaluation.fusion_weight_step={self.fusion_weight_step} must be in (0, 0.5]")
        for key in ("gbt_max_iter", "gbt_max_depth"):
            if getattr(self, key) < 1:
                raise ConfigError(f"evaluation.{key}={getattr(self, key)} must be >= 1")


@dataclass
class MlflowConfig:
    """MLflow tracking and registry (default: a SQLite store under storage.root)."""

    tracking_uri: str | None = _help("Tracking URI; null: sqlite:///<storage.root>/mlflow.db.", default=None)
    registry_uri: str | None = _help("Registry URI; null: same as the tracking URI.", default=None)
    experiment: str = _help("Experiment name.", default="propensity")


@dataclass
class Config:
    """The whole configuration."""

    storage: StorageConfig = _help("Storage locations.", default_factory=StorageConfig)
    spark: SparkConfig = _help("Local Spark session.", default_factory=SparkConfig)
    platforms: list[PlatformConfig] = _help("Behaviour-event feeds, one per platform.", default_factory=list)
    ads: list[AdsConfig] = _help("Ad feeds.", default_factory=list)
    identity: str | None = _help("Identity CSV (platform,platform_user_id,user_id) or null.", default=None)
    ingest: IngestConfig = _help("Ingestion behaviour.", default_factory=IngestConfig)
    features: FeaturesConfig = _help("Feature and label windows.", default_factory=FeaturesConfig)
    teacher: TeacherSettings = _help("Teacher encoder size.", default_factory=TeacherSettings)
    student: StudentSettings = _help("Student encoder size.", default_factory=StudentSettings)
    training: TrainSettings = _help("How pretraining, fine-tuning and distillation run.",
                                    default_factory=TrainSettings)
    distill: DistillConfig = _help("Knowledge distillation.", default_factory=DistillConfig)
    evaluation: EvaluationConfig = _help("Baselines, fusion and champion gates.", default_factory=EvaluationConfig)
    mlflow: MlflowConfig = _help("MLflow tracking and registry.", default_factory=MlflowConfig)
    scoring: ScoringConfig = _help("Batch scoring.", default_factory=ScoringConfig)
    publish: PublishConfig = _help("Inventory and ads outputs.", default_factory=PublishConfig)

    def __post_init__(self) -> None:
        _validate_feeds(self.platforms, self.ads)
        _validate_training_platforms(self.training, [p.name for p in self.platforms])

    @property
    def platform_names(self) -> list[str]:
        """Names of the platforms with a behaviour feed, in config order."""
        return [p.name for p in self.platforms]

    def table(self, name: str) -> str:
        """Fully qualified name of one of the project's tables."""
        prefix = f"`{self.storage.catalog}`." if self.storage.catalog else ""
        return f"{prefix}`{self.storage.schema}`.`{name}`"

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
        if p.format not in EVENT_FORMATS:
            raise ConfigError(f"{key}.format={p.format!r} is unknown; use one of {', '.join(EVENT_FORMATS)}")
        if not p.events:
            raise ConfigError(f"{key}.events is empty; give the path or glob of the platform's event files")
    for i, a in enumerate(ads):
        key = f"ads[{i}]"
        if not _NAME_RE.match(a.platform):
            raise ConfigError(f"{key}.platform={a.platform!r} must be lower-case letters, digits and _")
        if a.format not in AD_FORMATS:
            raise ConfigError(f"{key}.format={a.format!r} is unknown; use one of {', '.join(AD_FORMATS)}")
        if not a.path:
            raise ConfigError(f"{key}.path is empty; give the path or glob of the ad log files")


def repo_conf_dir() -> Path:
    """The ``conf/`` folder: ``$PROPENSITY_CONF_DIR``, else the source checkout's, else ``./conf``."""
    env = os.environ.get("PROPENSITY_CONF_DIR")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2] / "conf"
    return checkout if checkout.is_dir() else Path("conf")


def load_config(overlays: list[str | Path] | None = None, overrides: list[str] | None = None) -> Config:
    """Load ``base.yml``, then the overlays, then ``dotted.key=value`` overrides.

    :param overlays: YAML files applied in order over ``base.yml``; None means ``conf/local.yml``.
    :param overrides: ``dotted.key=value`` strings; values are parsed as YAML scalars.
    :raises ConfigError: a file is missing or malformed, or a key or value is bad.
    """
    conf_dir = repo_conf_dir()
    data = _read_yaml(conf_dir / "base.yml")
    for overlay in [conf_dir / "local.yml"] if overlays is None else overlays:
        data = _merge(data, _read_yaml(Path(overlay)))
    for override in overrides or []:
        _apply_override(data, override)
    return config_from_dict(data)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build a validated :class:`Config` from a plain mapping."""
    return _build(Config, data, "")


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found; check the --conf path")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    return loaded


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


_FREEFORM_MAPPINGS = {("spark", "conf")}


def _apply_override(data: dict[str, Any], override: str) -> None:
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {override!r} must look like dotted.key=value")
    parts = key.strip().split(".")
    # Keys of free-form mappings (spark.conf) contain dots themselves.
    for i in range(len(parts)):
        if tuple(parts[:i]) in _FREEFORM_MAPPINGS and i < len(parts):
            parts = [*parts[:i], ".".join(parts[i:])]
            break
    node: Any = data
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[_list_index(node, part, key)]
            continue
        node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"--set {key}: {part!r} is not a section")
    value = yaml.safe_load(raw) if raw.strip() else None
    if isinstance(node, list):
        node[_list_index(node, parts[-1], key)] = value
    else:
        node[parts[-1]] = value


def _list_index(node: list[Any], part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--set {key}: {part!r} is not an index of a list of {len(node)} entries")
    return int(part)


def _build(cls: type[T], data: Any, prefix: str) -> T:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown config key {where}{unknown[0]}; known keys: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(hints[name], value, f"{prefix}.{name}" if prefix else name)
              for name, value in data.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(args[0], item, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        # Spark settings are strings; YAML booleans become Spark's lower-case spelling.
        return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
    return _scalar(hint, value, key)


def _scalar(hint: Any, value: Any, key: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r} must be true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r} must be an integer")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}={value!r} must be a number")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}={value!r} must be a string")
    raise ConfigError(f"{key}: unsupported config type {hint!r}")


def describe(cls: type[Any] = Config, prefix: str = "") -> list[tuple[str, str]]:
    """List ``(dotted key, help)`` for every config field, for docs and ``--help``."""
    rows: list[tuple[str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        rows.append((key, f.metadata.get("help", "")))
        if dataclasses.is_dataclass(hints[f.name]):
            rows.extend(describe(hints[f.name], f"{key}."))
    return rows
