"""MLflow tracking: where runs and the registry live (under ``storage.root`` by default) and logging helpers.

Locally the tracking store is ``sqlite:///<storage.root>/mlflow.db`` (a database-backed
store, so the model registry works) and artifacts go to ``<storage.root>/mlartifacts``.
On Databricks ``mlflow.tracking_uri: databricks`` and ``mlflow.registry_uri: databricks-uc``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.tracking import MlflowClient

from propensity.core.config import Config


def tracking_uri(cfg: Config) -> str:
    """``mlflow.tracking_uri``, or the SQLite store under ``storage.root``."""
    return cfg.mlflow.tracking_uri or f"sqlite:///{cfg.root / 'mlflow.db'}"


def registry_uri(cfg: Config) -> str:
    """``mlflow.registry_uri``, or the tracking URI."""
    return cfg.mlflow.registry_uri or tracking_uri(cfg)


def _is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:", "postgresql:", "mysql:")) or "://" not in uri


def setup_mlflow(cfg: Config) -> str:
    """Point this process's MLflow at the configured stores and experiment; returns the experiment id.

    A new experiment on a local store puts its artifacts under ``<storage.root>/mlartifacts``.
    """
    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:"):
        cfg.root.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(registry_uri(cfg))
    experiment = mlflow.get_experiment_by_name(cfg.mlflow.experiment)
    if experiment is not None:
        experiment_id: str = experiment.experiment_id
    elif _is_local_store(uri):
        location = (cfg.root / "mlartifacts" / cfg.mlflow.experiment).as_uri()
        experiment_id = mlflow.create_experiment(cfg.mlflow.experiment, artifact_location=location)
    else:
        experiment_id = mlflow.create_experiment(cfg.mlflow.experiment)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def client(cfg: Config) -> MlflowClient:
    """A client on the configured tracking and registry stores."""
    return MlflowClient(tracking_uri=tracking_uri(cfg), registry_uri=registry_uri(cfg))


def log_params(prefix: str, values: dict[str, Any]) -> None:
    """Log ``values`` as ``prefix.key`` params of the active run (lists joined by commas)."""
    params = {f"{prefix}.{k}": ",".join(map(str, v)) if isinstance(v, list) else v for k, v in values.items()}
    mlflow.log_params(params)


_SECRET_WORDS = ("password", "secret", "token", "key")


def stored_path(cfg: Config, path: str | Path) -> str:
    """``path`` as MLflow may see it: relative to ``storage.root`` (``<storage.root>/...``), else its file name.

    MLflow runs are shared more widely than the machine: absolute paths name users' home folders
    and mounts, so they never go there.
    """
    p = Path(path)
    try:
        return f"<storage.root>/{p.resolve().relative_to(cfg.root).as_posix()}"
    except ValueError:
        return f"<path>/{p.name}"


def _redact(value: Any, key: str, cfg: Config) -> Any:
    if isinstance(value, dict):
        return {k: _redact(v, k, cfg) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, key, cfg) for v in value]
    if not isinstance(value, str) or not value:
        return value
    if any(word in key.lower() for word in _SECRET_WORDS):
        return "<redacted>"
    if "@" in value and "://" in value:  # credentials inside a URI (postgresql://user:password@host)
        return value.split("://", 1)[0] + "://<redacted>@" + value.rsplit("@", 1)[1]
    if value.startswith("sqlite:///"):
        return "sqlite:///" + stored_path(cfg, value.removeprefix("sqlite:///"))
    if value.startswith(("/", "~", "file:")) or (len(value) > 2 and value[1] == ":" and value[2] in "\\/"):
        return stored_path(cfg, value.removeprefix("file://"))
    return value


def redacted_config(cfg: Config) -> dict[str, Any]:
    """The resolved configuration as MLflow may keep it: absolute paths (feeds, storage, jars) shortened by
    :func:`stored_path`, keys named like secrets and credentials in URIs replaced by ``<redacted>``."""
    data: dict[str, Any] = dataclasses.asdict(cfg)
    redacted: dict[str, Any] = _redact(data, "", cfg)
    return redacted


def log_resolved_config(cfg: Config, artifact_file: str = "config/resolved.yml") -> None:
    """Log the configuration the run used (:func:`redacted_config`) as one YAML artifact."""
    mlflow.log_text(yaml.safe_dump(redacted_config(cfg), sort_keys=False, default_flow_style=False), artifact_file)


def checkpoint_dir(cfg: Config, *parts: str) -> Path:
    """``<storage.root>/checkpoints/<parts...>``, created."""
    path = cfg.root.joinpath("checkpoints", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
