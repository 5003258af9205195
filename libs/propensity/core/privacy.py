"""Keyed pseudonyms: what other systems see instead of a user id.

``user_key = hex(HMAC-SHA256(secret, user_id))``. The secret comes from the environment variable
:data:`KEY_ENV` only: locally you export it, in the Databricks bundle the cluster sets it from the
secret scope (``{{secrets/propensity/pseudonym_key}}``). It is never read from a config file, never
logged and never passed to MLflow. Without the key the pseudonyms cannot be recomputed or
reversed; the mapping ``user_id -> user_key`` is kept internally in ``user_keys``.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from propensity.core.errors import PropensityError

#: The environment variable holding the pseudonym secret.
KEY_ENV = "PROPENSITY_PSEUDONYM_KEY"
#: Shortest secret accepted (characters).
MIN_KEY_LENGTH = 16


class MissingSecretError(PropensityError):
    """The pseudonym secret is not set (or too short), so nothing may be published."""


def pseudonym_key(purpose: str) -> bytes:
    """The secret from :data:`KEY_ENV`.

    :param purpose: what needs it (``publish``, ``forget``), for the message.
    :raises MissingSecretError: unset, or shorter than :data:`MIN_KEY_LENGTH`.
    """
    value = os.environ.get(KEY_ENV, "")
    if len(value) < MIN_KEY_LENGTH:
        state = "is not set" if not value else f"is shorter than {MIN_KEY_LENGTH} characters"
        raise MissingSecretError(f"{KEY_ENV} {state}, so {purpose} refuses to run: export a secret of at least"
                                 f" {MIN_KEY_LENGTH} random characters (on Databricks the bundle sets it from"
                                 " secret scope propensity, key pseudonym_key)")
    return value.encode("utf-8")


def pseudonym(key: bytes, value: str) -> str:
    """Hex HMAC-SHA256 of ``value`` under ``key``."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def pseudonym_column(key: bytes, column: str | Column) -> Column:
    """A Spark column with :func:`pseudonym` of ``column`` (a vectorised UDF: the key stays out of query plans)."""

    @F.pandas_udf(StringType())  # type: ignore[call-overload]
    def keyed(values: pd.Series) -> pd.Series:
        return values.map(lambda v: None if v is None else pseudonym(key, str(v)))

    return keyed(F.col(column) if isinstance(column, str) else column)
