"""The model registry: names, resolving ``models:/`` URIs, and one local copy of each model version.

- :func:`resolve_version`: the version a ``models:/name/N``, ``models:/name/latest`` or
  ``models:/name@alias`` URI points at now (so results can name exactly what was used);
- :func:`resolve_model`: that version downloaded once under ``storage.root`` (scoring, evaluation
  and distillation all read this copy) with its input columns read from its signature;
- :func:`model_artifacts`: the weights folder inside such a copy.

With ``mlflow.registry_uri: databricks-uc`` registered names get the ``<catalog>.<schema>.``
prefix Unity Catalog needs (:func:`registered_name`).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import mlflow
from mlflow.tracking import MlflowClient

from propensity.core.config import Config
from propensity.core.errors import ModelNotFoundError
from propensity.core.tracking import client, registry_uri, setup_mlflow

TEACHER_MODEL_NAME = "propensity_teacher"
STUDENT_MODEL_NAME = "propensity_student"
FUSION_MODEL_NAME = "propensity_fusion"
#: The teacher trained without aggregate features (an ablation: what the sequence alone gives).
SEQUENCE_ONLY_MODEL_NAME = "propensity_teacher_sequence_only"
#: Alias of the version that passed its champion gates; scoring follows it by default.
CHAMPION_ALIAS = "champion"
#: Registered-model tag holding the last failed champion gates (so scoring can say why there is no champion).
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


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready for Spark workers: its local folder, registry name and version, and input columns."""

    local_path: str
    name: str
    version: str
    input_columns: tuple[str, ...]

    @property
    def model_uri(self) -> str:
        """The pinned URI (``models:/name/version``), or the folder of an unregistered model."""
        return f"models:/{self.name}/{self.version}" if self.version else self.local_path


class ModelArtifacts(NamedTuple):
    """A registered propensity model's local copy: its version and its pyfunc and weights folders."""

    version: RegisteredModelVersion
    pyfunc_dir: Path
    model_dir: Path


def registered_name(cfg: Config, name: str) -> str:
    """The registry name of a model: ``<catalog>.<schema>.<name>`` on Unity Catalog, else ``name``."""
    if registry_uri(cfg).startswith("databricks-uc"):
        catalog = cfg.storage.catalog or "main"
        return f"{catalog}.{cfg.storage.schema}.{name}"
    return name


def resolve_version(cfg: Config, model_uri: str) -> RegisteredModelVersion | None:
    """The registered version a ``models:/`` URI points at now; None for other URIs (``runs:/``, paths).

    :raises ModelNotFoundError: a ``models:/`` URI whose model, version or alias does not exist.
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
                raise ModelNotFoundError(f"model {name!r} has no registered versions; train it first"
                                         " (`propensity finetune` or `propensity distill`)")
            mv = max(versions, key=lambda v: int(v.version))
    except mlflow.exceptions.MlflowException as e:
        why = _gate_failure(c, name) if match["alias"] else None
        if why:
            raise ModelNotFoundError(f"model URI {model_uri!r} cannot be resolved: no version has alias"
                                     f" {match['alias']!r} because the champion gates failed ({why}); train a better"
                                     " model and run `propensity evaluate` again") from e
        raise ModelNotFoundError(f"model URI {model_uri!r} cannot be resolved: {e.message.splitlines()[0]}; check the"
                                 " name and version with the MLflow UI or train the model first") from e
    return RegisteredModelVersion(name=mv.name, version=str(mv.version), run_id=str(mv.run_id))


def latest_version(cfg: Config, name: str, made_by: str) -> RegisteredModelVersion:
    """The newest version of registered model ``name`` (without its Unity Catalog prefix).

    :raises ModelNotFoundError: there is none; the message names the stage ``made_by`` that makes it.
    """
    registered = registered_name(cfg, name)
    try:
        version = resolve_version(cfg, f"models:/{registered}/latest")
    except ModelNotFoundError as e:
        raise ModelNotFoundError(f"no {registered} model is registered; run `propensity {made_by}` first") from e
    if version is None:  # pragma: no cover - the URI above always matches
        raise ModelNotFoundError(f"no {registered} model is registered; run `propensity {made_by}` first")
    return version


def _gate_failure(c: MlflowClient, name: str) -> str | None:
    """The last champion-gate failure recorded on registered model ``name``, if any."""
    try:
        return c.get_registered_model(name).tags.get(GATE_FAILURE_TAG)
    except mlflow.exceptions.MlflowException:
        return None


def local_model_dir(cfg: Config) -> Path:
    """Where downloaded models are kept for the workers."""
    return cfg.root / "scoring" / "models"


def _slug(uri: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in uri)[-80:]


def resolve_model(cfg: Config, model_uri: str) -> ResolvedModel:
    """Resolve ``model_uri`` in the registry, download it once under ``storage.root``, check it loads,
    and read its input columns from its signature.

    :raises ModelNotFoundError: unknown model, version or alias, a failed download, or no input signature.
    """
    setup_mlflow(cfg)
    version = resolve_version(cfg, model_uri)
    name, number = (version.name, version.version) if version else (model_uri, "")
    target = local_model_dir(cfg) / (f"{name}-v{number}" if version else _slug(model_uri))
    uri = version.model_uri if version else model_uri
    if not (target / "MLmodel").exists():
        _download(uri, target)
    model = mlflow.pyfunc.load_model(str(target))
    schema = model.metadata.get_input_schema()
    if schema is None:
        raise ModelNotFoundError(f"{uri} has no input signature; log it with one (event_ids + features)")
    return ResolvedModel(str(target), name, number, tuple(schema.input_names()))


def _download(uri: str, target: Path) -> None:
    """Download into a private folder, then rename it into place: a process killed mid-download leaves no
    half model behind, and of two processes downloading at once one rename wins."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(partial))
        except Exception as e:
            raise ModelNotFoundError(f"cannot download {uri}: {str(e).splitlines()[0]}") from e
        if target.exists() and not (target / "MLmodel").exists():
            shutil.rmtree(target)  # a half download left by an older version
        try:
            partial.rename(target)
        except OSError:
            if not (target / "MLmodel").exists():  # not another process's complete download
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def model_artifacts(cfg: Config, model_uri: str, key: str) -> ModelArtifacts:
    """The version and local folders of the registered propensity model at ``model_uri``, downloaded once.

    :param key: the config key or option that named the URI, for messages.
    :raises ModelNotFoundError: the URI does not resolve to a registered propensity model.
    """
    version = resolve_version(cfg, model_uri)
    if version is None:
        raise ModelNotFoundError(f"{key}={model_uri!r} is not a models:/ URI; use e.g."
                                 " models:/propensity_teacher/latest")
    pyfunc_dir = Path(resolve_model(cfg, version.model_uri).local_path)
    model_dir = pyfunc_dir / "artifacts" / "model"
    if not (model_dir / "model.json").is_file():
        raise ModelNotFoundError(f"{key}: {version.model_uri} is not a propensity model (no model artifact);"
                                 " give a model registered by `propensity finetune` or `distill`")
    return ModelArtifacts(version, pyfunc_dir, model_dir)
