"""The reference of every config key, generated from the dataclasses: ``conf/base.yml`` and ``docs/config.md``.

The defaults and help texts live in the dataclasses only; ``conf/base.yml`` is rendered from
them by :func:`defaults_yaml` (``propensity config --defaults``), and a test keeps the file
equal to the rendering, so the two cannot drift.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

import yaml

from propensity.core.config.root import Config

BASE_HEADER = """\
# Every config key with its default and help text, generated from the config dataclasses by
# `propensity config --defaults > conf/base.yml` (a test checks it is current). Do not edit:
# change values in an overlay (conf/local.yml, conf/databricks.yml, your own --conf file)
# or with --set dotted.key=value. Sized for a 2-core machine; conf/gpu.yml holds GPU sizes.
"""


@dataclass(frozen=True)
class Key:
    """One config key: dotted name (``[]`` marks list entries), type, default (as YAML) and help."""

    name: str
    type: str
    default: str
    help: str
    section: bool


def _type_name(hint: Any) -> str:
    text = str(hint).replace("typing.", "")
    return getattr(hint, "__name__", text) if isinstance(hint, type) else text


def _yaml(value: Any) -> str:
    """A value in YAML flow style, on one line."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _element(hint: Any) -> Any:
    """The dataclass inside ``list[...]``, or None."""
    if typing.get_origin(hint) is list and dataclasses.is_dataclass(typing.get_args(hint)[0]):
        return typing.get_args(hint)[0]
    return None


def describe(cls: type[Any] = Config, prefix: str = "") -> list[Key]:
    """Every config key of ``cls`` (sections, list entries and their fields), in declaration order."""
    keys: list[Key] = []
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        name, hint = f"{prefix}{f.name}", hints[f.name]
        value = getattr(defaults, f.name)
        nested: Any = hint if dataclasses.is_dataclass(hint) else _element(hint)
        is_section = dataclasses.is_dataclass(hint)
        default = "" if is_section else _yaml(value)
        keys.append(Key(name, "section" if is_section else _type_name(hint), default, f.metadata.get("help", ""),
                        is_section))
        if nested is not None:
            keys.extend(describe(nested, f"{name}." if is_section else f"{name}[]."))
    return keys


def defaults_yaml() -> str:
    """``conf/base.yml``: every key with its default, each preceded by its help as a comment."""
    lines = [BASE_HEADER.rstrip()]
    defaults = Config()
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        lines.append("")
        lines.append(f"# {f.metadata.get('help', '')}")
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            lines.append(f"{f.name}:")
            lines.extend(_section_lines(value))
        else:
            lines.append(f"{f.name}: {_yaml(value)}")
    return "\n".join(lines) + "\n"


def _section_lines(section: Any) -> list[str]:
    lines: list[str] = []
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        lines.append(f"  # {f.metadata.get('help', '')}")
        if isinstance(value, dict) and value:
            lines.append(f"  {f.name}:")
            lines.extend(f"    {_yaml(k)}: {_yaml(v)}" for k, v in value.items())
        else:
            lines.append(f"  {f.name}: {_yaml(value)}")
    return lines
