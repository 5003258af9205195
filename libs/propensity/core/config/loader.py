"""Loading configuration: YAML files merged and coerced into the validated :class:`~propensity.core.config.Config`.

Loading order: ``conf/base.yml``, then each ``--conf`` overlay in the order given
(default ``conf/local.yml``), then each ``--set dotted.key=value``. Mappings merge
key by key; lists and scalars replace. Unknown keys, duplicate keys, wrong types, non-finite
numbers and bad values raise :class:`~propensity.core.errors.ConfigError` naming the
dotted key. Relative paths are resolved against the current directory.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from propensity.core.config.root import Config
from propensity.core.errors import ConfigError

T = TypeVar("T")


def repo_conf_dir() -> Path:
    """The ``conf/`` folder: ``$PROPENSITY_CONF_DIR``, else the source checkout's, else ``./conf``."""
    env = os.environ.get("PROPENSITY_CONF_DIR")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[4] / "conf"
    return checkout if checkout.is_dir() else Path("conf")


def load_config(overlays: list[str | Path] | None = None, overrides: list[str] | None = None) -> Config:
    """Load ``base.yml``, then the overlays, then ``dotted.key=value`` overrides.

    :param overlays: YAML files applied in order over ``base.yml``; None means ``conf/local.yml``.
    :param overrides: ``dotted.key=value`` strings; values are parsed as YAML scalars.
    :raises ConfigError: a file is missing or malformed, or a key or value is bad.
    """
    conf_dir = repo_conf_dir()
    data = read_yaml(conf_dir / "base.yml")
    for overlay in [conf_dir / "local.yml"] if overlays is None else overlays:
        data = _merge(data, read_yaml(Path(overlay)))
    for override in overrides or []:
        _apply_override(data, override)
    return config_from_dict(data)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build a validated :class:`Config` from a plain mapping."""
    return _build(Config, data, "")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML loader that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in one mapping (line {key_node.start_mark.line + 1});"
                " keep one", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in a YAML config file.

    :raises ConfigError: the file is missing, not YAML, not a mapping, or repeats a key.
    """
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found; check the --conf path")
    try:
        loaded = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {problem}") from e
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
            if not math.isfinite(value):
                raise ConfigError(f"{key}={value!r} must be a finite number")
            return float(value)
        raise ConfigError(f"{key}={value!r} must be a number")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}={value!r} must be a string")
    raise ConfigError(f"{key}: unsupported config type {hint!r}")
