"""MLflow wiring: tracking and registry under ``storage.root`` by default, and small helpers.

Locally the tracking store is ``sqlite:///<storage.root>/mlflow.db`` (a database-backed
store, so the model registry works) and artifacts go to ``<storage.root>/mlartifacts``.
With ``mlflow.tracking_uri: databricks`` and ``mlflow.registry_uri: databricks-uc``
registered model names get the ``<catalog>.<schema>.`` prefix Unity Catalog needs.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.tracking import MlflowClient

from propensity.config import Config

log = logging.getLogger(__name__)

TEACHER_MODEL_NAME = "propensity_teacher"
STUDENT_MODEL_NAME = "propensity_student"
FUSION_MODEL_NAME = "propensity_fusion"
#: Registered-model tag holding the last failed champion gates (written by propensity.evaluation.gates).
GATE_FAILURE_TAG = "propensity.last_gate_failure"
_URI_RE = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/]+)|/(?P<stage>[A-Za-z]+))?$")


@dataclass(frozen=True)
class RegisteredModelVersion:
    """A registered model version: ``name``, ``version``, the MLflow ``run_id`` that made it and its URI."""

    name: str
    version: str
    run_id: str

    @property
    def model_uri(self) -> str:
        """``models:/<name>/<version>``."""
        return f"models:/{self.name}/{self.version}"


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


def registered_name(cfg: Config, name: str) -> str:
    """The registry name of a model: ``<catalog>.<schema>.<name>`` on Unity Catalog, else ``name``."""
    if registry_uri(cfg).startswith("databricks-uc"):
        catalog = cfg.storage.catalog or "main"
        return f"{catalog}.{cfg.storage.schema}.{name}"
    return name


def client(cfg: Config) -> MlflowClient:
    """A client on the configured tracking and registry stores."""
    return MlflowClient(tracking_uri=tracking_uri(cfg), registry_uri=registry_uri(cfg))


def resolve_version(cfg: Config, model_uri: str) -> RegisteredModelVersion | None:
    """The registered version a ``models:/name/version`` or ``models:/name@alias`` URI points at.

    Returns None for other URIs (``runs:/...``, paths).
    :raises ValueError: a ``models:/`` URI whose model, version or alias does not exist.
    """
    match = _URI_RE.match(model_uri)
    if not match:
        return None
    c = client(cfg)
    name = match["name"]
    try:
        if match["version"]:
            mv = c.get_model_version(name, match["version"])
        elif match["alias"]:
            mv = c.get_model_version_by_alias(name, match["alias"])
        else:
            versions = c.search_model_versions(f"name = '{name}'")
            if not versions:
                raise ValueError(f"model {name!r} has no versions")
            mv = max(versions, key=lambda v: int(v.version))
    except mlflow.exceptions.MlflowException as e:
        why = _gate_failure(c, name) if match["alias"] else None
        if why:
            raise ValueError(f"model URI {model_uri!r} cannot be resolved: no version has alias {match['alias']!r}"
                             f" because the champion gates failed ({why}); train a better model and run"
                             " `propensity evaluate` again") from e
        raise ValueError(f"model URI {model_uri!r} cannot be resolved: {e.message}; check the name and"
                         " version with the MLflow UI or run `propensity finetune` first") from e
    return RegisteredModelVersion(name=mv.name, version=str(mv.version), run_id=str(mv.run_id))


def _gate_failure(c: MlflowClient, name: str) -> str | None:
    """The last champion-gate failure recorded on registered model ``name`` (see evaluation.gates), if any."""
    try:
        return c.get_registered_model(name).tags.get(GATE_FAILURE_TAG)
    except mlflow.exceptions.MlflowException:
        return None


def log_params(prefix: str, values: dict[str, Any]) -> None:
    """Log ``values`` as ``prefix.key`` params of the active run (lists joined by commas)."""
    params = {f"{prefix}.{k}": ",".join(map(str, v)) if isinstance(v, list) else v for k, v in values.items()}
    mlflow.log_params(params)


def log_resolved_config(cfg: Config, sections: dict[str, Any], artifact_file: str = "config/resolved.yml") -> None:
    """Log the whole configuration (plus the training sections given) as one YAML artifact."""
    data: dict[str, Any] = dataclasses.asdict(cfg)
    for key, value in sections.items():
        is_instance = dataclasses.is_dataclass(value) and not isinstance(value, type)
        data[key] = dataclasses.asdict(value) if is_instance else value
    mlflow.log_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), artifact_file)


def checkpoint_dir(cfg: Config, *parts: str) -> Path:
    """``<storage.root>/checkpoints/<parts...>``, created."""
    path = cfg.root.joinpath("checkpoints", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
