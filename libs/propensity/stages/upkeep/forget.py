"""``propensity forget``: erase people from every table, purge the files that held them, keep an audit row.

A request names a person by ``--user-id U`` or by one account, ``--platform P
--platform-user-id X``; ``--file F`` holds many (one per line: ``U``, or ``P,X``; ``#`` starts a
comment). The person is every account linked to them: the ``user_id`` values found in
``identity_map`` and ``events`` for the identifier, and all their ``(platform, platform_user_id)``.

Removed, in one ``DELETE`` per table:

* ``events``, ``identity_map``: rows of those user ids or accounts;
* ``bronze_<feed>``: raw rows of the feed's platform whose raw line has one of the accounts'
  ids as a field; ``rejects``: rejected lines with any of the ids as a field (an item id equal
  to the person's id removes that line too: erasure errs on the side of removing);
* ``training_examples``, ``user_scores``, ``user_keys``: rows of those user ids;
* ``ads_audiences``: rows of their ``user_key`` (the HMAC of the user id).

Then each table whose deletion vectors are on is rewritten (``REORG TABLE ... APPLY (PURGE)``)
and every one is vacuumed with ``maintenance.erasure_retain_hours`` (default 0: the old files
are deleted at once; Delta's retention check is lifted for this command only). A row per
request goes to ``erasure_requests``: who, when, the HMAC of the identifier (never the id in
clear), the rows removed per table and the retention. Running a request again removes nothing
more and records a row with ``rows_deleted`` 0. Aggregates (``inventory_demand``,
``score_drift``, ``drift_reference``, ``model_evaluations``) hold no per-person rows.

What stays (see the README): the Delta log's older commits (file statistics may hold an id as a
column minimum or maximum) until log retention removes them, the raw feed files, and models
trained before the erasure (in MLflow and under ``storage.root/checkpoints``).
"""

from __future__ import annotations

import getpass
import json
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pyspark.sql import SparkSession

from propensity.core.config import Config
from propensity.core.errors import UsageError
from propensity.core.locks import table_lock
from propensity.core.privacy import pseudonym, pseudonym_key
from propensity.core.tables import BRONZE_PREFIX, ensure_table
from propensity.stages.upkeep.delta import deletion_vectors_enabled, delta_tables, vacuum


@dataclass(frozen=True)
class Subject:
    """One identifier of a request: a ``user_id``, or a ``platform_user_id`` on ``platform``."""

    value: str
    platform: str | None = None

    @property
    def kind(self) -> str:
        """``user_id`` or ``platform_user_id``."""
        return "user_id" if self.platform is None else "platform_user_id"

    def hashed(self, key: bytes) -> str:
        """The HMAC recorded instead of the identifier (for a user id it equals the published ``user_key``)."""
        return pseudonym(key, self.value if self.platform is None else f"{self.platform}:{self.value}")


def read_subjects(path: Path) -> list[Subject]:
    """The identifiers of a request file (``U`` or ``P,X`` per line, ``#`` comments).

    :raises UsageError: the file is missing or a line has more than two fields.
    """
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise UsageError(f"--file {path}: cannot be read ({e.strerror}); give a file with one `user_id` or"
                         " `platform,platform_user_id` per line") from e
    subjects = []
    for number, line in enumerate(lines, 1):
        fields = [f.strip() for f in line.split("#", 1)[0].split(",")]
        if fields == [""]:
            continue
        if len(fields) > 2 or not all(fields):
            raise UsageError(f"--file {path} line {number}: {line.strip()!r} is neither `user_id` nor"
                             " `platform,platform_user_id`")
        subjects.append(Subject(fields[0]) if len(fields) == 1 else Subject(fields[1], fields[0]))
    return subjects


@dataclass(frozen=True)
class ErasureResult:
    """What one ``forget`` run removed."""

    subjects: int
    accounts: int
    deleted: dict[str, int]
    retain_hours: int
    purged: list[str]

    def format(self) -> str:
        """Lines for the CLI."""
        removed = ", ".join(f"{t}={n}" for t, n in sorted(self.deleted.items()) if n) or "nothing (already erased)"
        lines = [f"forget: {self.subjects} request(s), {self.accounts} account(s); rows deleted: {removed}",
                 f"VACUUM RETAIN {self.retain_hours} HOURS on {len(self.deleted)} table(s): files older than that"
                 " holding the removed rows are deleted; time travel to before the erasure is gone"]
        if self.purged:
            lines.append(f"deletion vectors purged (REORG TABLE ... APPLY (PURGE)) in {', '.join(self.purged)}")
        return "\n".join(lines)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _in(values: Iterable[str]) -> str:
    return ", ".join(_quote(v) for v in sorted(set(values))) or "NULL"


def resolve(spark: SparkSession, cfg: Config, subjects: Sequence[Subject], existing: set[str]
            ) -> tuple[set[str], set[tuple[str, str]]]:
    """The user ids and ``(platform, platform_user_id)`` accounts of the people named by ``subjects``."""
    users = {s.value for s in subjects if s.platform is None}
    accounts = {(s.platform, s.value) for s in subjects if s.platform is not None}
    sources = [cfg.table(t) for t in ("identity_map", "events") if t in existing]
    if accounts:
        pairs = " OR ".join(f"(platform = {_quote(p)} AND platform_user_id = {_quote(x)})" for p, x in accounts)
        for table in sources:
            users |= {r[0] for r in spark.sql(f"SELECT DISTINCT user_id FROM {table} WHERE {pairs}").collect()}
    if users:
        for table in sources:
            accounts |= {(r[0], r[1]) for r in spark.sql(
                f"SELECT DISTINCT platform, platform_user_id FROM {table} WHERE user_id IN ({_in(users)})").collect()}
    return users, accounts


def _field_match(column: str, ids: Iterable[str]) -> str:
    """SQL: some comma-separated field of ``column`` (quotes and blanks stripped) is one of ``ids``."""
    return f"exists(split({column}, ','), f -> trim(regexp_replace(f, '\"', '')) IN ({_in(ids)}))"


def deletions(cfg: Config, users: set[str], accounts: set[tuple[str, str]], existing: set[str], key: bytes
              ) -> dict[str, str]:
    """``{table: WHERE condition}`` of every existing table that can hold the person."""
    account = " OR ".join(f"(platform = {_quote(p)} AND platform_user_id = {_quote(x)})"
                          for p, x in sorted(accounts)) or "FALSE"
    by_user = f"user_id IN ({_in(users)})"
    where = {"events": f"{by_user} OR {account}", "identity_map": f"{by_user} OR {account}",
             "training_examples": by_user, "user_scores": by_user, "user_keys": by_user,
             "ads_audiences": f"user_key IN ({_in(pseudonym(key, u) for u in users)})",
             "rejects": _field_match("raw", {x for _, x in accounts} | users)}
    platforms = {p for p, _ in accounts}
    for table in existing:
        if table.startswith(BRONZE_PREFIX):
            feed = table.removeprefix(BRONZE_PREFIX)
            platform = next((p for p in platforms if feed in (p, f"{p}_ads")), None)
            ids = {x for p, x in accounts if p == platform} if platform else set()
            if ids:
                where[table] = _field_match("_raw", ids)
    return {t: w for t, w in where.items() if t in existing}


def forget(spark: SparkSession, cfg: Config, subjects: Sequence[Subject], requested_by: str | None = None
           ) -> ErasureResult:
    """Erase the people named by ``subjects`` (see the module docstring).

    :raises MissingSecretError: ``PROPENSITY_PSEUDONYM_KEY`` is not set (the audit row and the published
        pseudonyms need it).
    :raises UsageError: no subject.
    """
    if not subjects:
        raise UsageError("nothing to forget: give --user-id, --platform with --platform-user-id, or --file")
    key = pseudonym_key("forget")
    existing = set(delta_tables(spark, cfg))
    users, accounts = resolve(spark, cfg, subjects, existing)
    conditions = deletions(cfg, users, accounts, existing, key)
    deleted = {}
    hours = cfg.maintenance.erasure_retain_hours
    purged = []
    for table, condition in sorted(conditions.items()):
        qualified = cfg.table(table)
        with table_lock(spark, cfg, table):
            row = spark.sql(f"DELETE FROM {qualified} WHERE {condition}").first()
            deleted[table] = int(row[0]) if row is not None and row[0] is not None else 0
            if deletion_vectors_enabled(spark, qualified):
                spark.sql(f"REORG TABLE {qualified} APPLY (PURGE)")
                purged.append(table)
            vacuum(spark, qualified, hours)
    _record(spark, cfg, subjects, key, len(accounts), deleted, hours, requested_by)
    return ErasureResult(len(subjects), len(accounts), deleted, hours, purged)


def _requester(given: str | None) -> str:
    if given:
        return given
    for variable in ("DATABRICKS_USER", "USER"):
        if os.environ.get(variable):
            return os.environ[variable]
    try:
        return getpass.getuser()
    except OSError:
        return "unknown"


def _record(spark: SparkSession, cfg: Config, subjects: Sequence[Subject], key: bytes, accounts: int,
            deleted: dict[str, int], hours: int, requested_by: str | None) -> None:
    table = ensure_table(spark, cfg, "erasure_requests")
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    who = _requester(requested_by)
    total = sum(deleted.values())
    rows = [(str(uuid.uuid4()), now, who, s.kind, s.platform, s.hashed(key), accounts, total,
             json.dumps(deleted, sort_keys=True), hours) for s in subjects]
    with table_lock(spark, cfg, "erasure_requests"):
        spark.createDataFrame(rows, spark.table(table).schema).writeTo(table).append()
