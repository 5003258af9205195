"""Building blocks of the config sections: fields with help text and range checks naming the dotted key."""

from __future__ import annotations

import math
from dataclasses import field
from typing import Any

from propensity.core.errors import ConfigError


def option(text: str, **kwargs: Any) -> Any:
    """A dataclass field whose metadata carries its help text (shown by ``propensity config --keys`` and docs)."""
    return field(metadata={"help": text}, **kwargs)


def at_least(section: str, obj: object, minimum: float, *keys: str, hint: str = "") -> None:
    """Every ``obj.<key>`` is ``>= minimum``.

    :raises ConfigError: naming ``section.key``, the value and the bound.
    """
    for key in keys:
        value = getattr(obj, key)
        if not value >= minimum:
            raise ConfigError(f"{section}.{key}={value} must be >= {minimum:g}{hint}")


def one_of(section: str, obj: object, key: str, choices: tuple[str, ...]) -> None:
    """``obj.<key>`` is one of ``choices``.

    :raises ConfigError: naming ``section.key``, the value and the choices.
    """
    value = getattr(obj, key)
    if value not in choices:
        raise ConfigError(f"{section}.{key}={value!r} is unknown; use one of {', '.join(choices)}")


def within(section: str, obj: object, key: str, low: float, high: float, *, low_open: bool = False,
           high_open: bool = False, example: str = "") -> None:
    """``obj.<key>`` lies in the interval from ``low`` to ``high`` (closed unless said otherwise).

    :raises ConfigError: naming ``section.key``, the value and the interval.
    """
    value = getattr(obj, key)
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (math.isfinite(value) and above and below):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"{section}.{key}={value} must be in {interval}{f', e.g. {example}' if example else ''}")
