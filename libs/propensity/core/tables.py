"""Delta table contracts: columns (with their meaning), partitioning, CHECK constraints and properties.

Every stage creates its tables through :func:`ensure_table` and reads another stage's through
:func:`require_table`, whose error names the stage to run first; so the schema lives here only
and a table made by one stage is exactly what the next one reads. How tables are found and
created safely is :mod:`propensity.core.storage`'s business. ``docs/tables.md`` is
generated from :data:`TABLES`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from propensity.core.config import Config
from propensity.core.errors import TableNotFoundError
from propensity.core.locks import table_lock
from propensity.core.schema import (
    DOUBLE_FEATURES,
    EVENT_TYPES,
    INT_FEATURES,
    LABEL_COLUMNS,
    SCORE_COLUMNS,
    TASKS,
    TEXT_COLUMN,
)
from propensity.core.sequence import SEQUENCE_COLUMN
from propensity.core.storage import (
    delta_path,
    folder_catalog,
    remove_uncommitted,
    table_dir,
    table_exists,
    tables_on_disk,
)


@dataclass(frozen=True)
class Col:
    """One column: name, SQL type, whether it may be NULL, and what it means."""

    name: str
    type: str
    comment: str
    nullable: bool = True

    def ddl(self) -> str:
        """The column's DDL fragment (names are backquoted: ``read`` and ``rank`` are keywords)."""
        return f"`{self.name}` {self.type}{'' if self.nullable else ' NOT NULL'} COMMENT '{_quoted(self.comment)}'"


@dataclass(frozen=True)
class TableSpec:
    """One Delta table: columns, partition columns, CHECK constraints, properties and its meaning."""

    columns: tuple[Col, ...]
    comment: str
    written_by: str
    partitioned_by: tuple[str, ...] = ()
    constraints: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    #: Columns queries filter by besides the partition columns: ``propensity maintain`` Z-orders on them.
    zorder_by: tuple[str, ...] = ()

    @property
    def column_names(self) -> tuple[str, ...]:
        """Column names in table order."""
        return tuple(c.name for c in self.columns)

    def ddl_columns(self) -> str:
        """The column list of ``CREATE TABLE``."""
        return ", ".join(c.ddl() for c in self.columns)


def _required(name: str, type_: str, comment: str) -> Col:
    return Col(name, type_, comment, nullable=False)


_EVENT_TYPE_LIST = ", ".join(f"'{t}'" for t in EVENT_TYPES)
_INGESTED = (_required("_source_file", "STRING", "Raw file the row was read from."),
             _required("_ingested_at", "TIMESTAMP", "Start of the ingest run that wrote the row (UTC)."))
_SNAPSHOT = _required("snapshot_date", "DATE", "Snapshot date T (T 00:00 UTC): features before T, labels after.")
_USER = _required("user_id", "STRING", "Cross-platform user id (from identity_map).")
_PLATFORM = _required("platform", "STRING", "Platform name (from the config).")
_USER_KEY = _required("user_key", "STRING", "Keyed pseudonym of user_id: hex HMAC-SHA256 with the secret in"
                                          " PROPENSITY_PSEUDONYM_KEY (the mapping stays in user_keys).")
_MODEL = (_required("model_name", "STRING", "Registered model."), _required("model_version", "STRING", "Its version."))


def _feature_columns() -> tuple[Col, ...]:
    counts = tuple(Col(n, "INT", "Point-in-time count; see docs/features.md.") for n in INT_FEATURES)
    values = tuple(Col(n, "DOUBLE", "Point-in-time value; see docs/features.md.") for n in DOUBLE_FEATURES)
    return counts + values


_LABEL_RULES = {
    "label_purchase": "1: a purchase on this platform in [T, T + purchase_horizon_days); NULL at scoring time.",
    "label_click": "1: an ad click on this platform in [T, T + click_horizon_days); 0: impressions but no click;"
                   " NULL: no impression there, or scoring time.",
    "label_churn": "1: no behaviour event on this platform in [T, T + churn_horizon_days); NULL at scoring time.",
}

TABLES: dict[str, TableSpec] = {
    "events": TableSpec(
        columns=(
            _required("event_id", "STRING", "Deterministic id: a hash of what identifies the raw event."),
            _PLATFORM,
            _required("platform_user_id", "STRING", "The user's id on this platform, as in the feed."),
            _USER,
            _required("event_time", "TIMESTAMP", "When the event happened (UTC)."),
            _required("event_date", "DATE", "UTC date of event_time (partition column)."),
            _required("event_type", "STRING", f"One of {', '.join(EVENT_TYPES)}."),
            Col("item_id", "STRING", "Item (or ad group for ad events) id on this platform."),
            Col("category", "STRING", "Category code or id, from the feed or the item catalog."),
            Col("brand", "STRING", "Brand, from the feed or the item catalog."),
            Col("price", "DOUBLE", "Item price, from the feed or the item catalog."),
            Col("session_id", "STRING", "Session (rees46), transaction (retailrocket) or ad slot (taobao_ads)."),
            Col("campaign_id", "STRING", "Ad campaign (ad events with an ad_feature file)."),
            *_INGESTED,
        ),
        comment="Unified behaviour and ad events of every platform, one row per distinct event.",
        written_by="ingest",
        partitioned_by=("event_date",),
        zorder_by=("user_id",),
        constraints={"valid_event_type": f"event_type IN ({_EVENT_TYPE_LIST})",
                     "non_negative_price": "price IS NULL OR price >= 0"},
    ),
    "rejects": TableSpec(
        columns=(
            _PLATFORM,
            _required("feed", "STRING", "events, ads, items, ad_feature or identity."),
            _required("_source_file", "STRING", "Raw file the line was read from."),
            Col("raw", "STRING", "The original line."),
            _required("reason", "STRING", "Why the line was refused (the first rule it broke)."),
            _required("_ingested_at", "TIMESTAMP", "Start of the ingest run (UTC)."),
            _required("_ingest_run_id", "STRING", "The ingest run (ingest_runs.run_id)."),
        ),
        comment="Raw rows that could not be ingested, with the reason.",
        written_by="ingest",
    ),
    "identity_map": TableSpec(
        columns=(
            _PLATFORM,
            _required("platform_user_id", "STRING", "The user's id on this platform."),
            _USER,
            _required("linked", "BOOLEAN", "True when the link came from the identity file."),
        ),
        comment="Every platform account seen, resolved to one cross-platform user_id (linked = from identity file).",
        written_by="ingest",
    ),
    "items": TableSpec(
        columns=(
            _PLATFORM,
            _required("item_id", "STRING", "Item id on this platform."),
            Col("title", "STRING", "Item title."),
            Col("category", "STRING", "Category code or id."),
            Col("brand", "STRING", "Brand."),
            Col("price", "DOUBLE", "Price."),
            Col("_source_file", "STRING", "Catalog file the row came from."),
            Col("_ingested_at", "TIMESTAMP", "Start of the ingest run (UTC)."),
        ),
        comment="Item catalogs per platform.",
        written_by="ingest",
        constraints={"non_negative_price": "price IS NULL OR price >= 0"},
    ),
    "training_examples": TableSpec(
        columns=(
            _SNAPSHOT, _USER, _PLATFORM,
            _required(TEXT_COLUMN, "STRING", "The user's recent events on all platforms as words, for people;"
                                             " see docs/features.md."),
            _required(SEQUENCE_COLUMN, "ARRAY<INT>", "The same events as integer ids, what the models read;"
                                                     " see docs/features.md."),
            *_feature_columns(),
            *(Col(c, "INT", _LABEL_RULES[c]) for c in LABEL_COLUMNS),
        ),
        comment="Point-in-time features, behaviour text and labels per (snapshot_date, user_id, platform).",
        written_by="features",
        partitioned_by=("snapshot_date",),
        zorder_by=("platform", "user_id"),
        constraints={"valid_labels": " AND ".join(f"({c} IS NULL OR {c} IN (0, 1))" for c in LABEL_COLUMNS)},
    ),
    "model_evaluations": TableSpec(
        columns=(
            _required("evaluated_at", "TIMESTAMP", "When `propensity evaluate` ran (UTC)."),
            _required("model_name", "STRING", "Registered model name, or baseline_lr / baseline_gbt."),
            Col("model_version", "STRING", "Registered model version (NULL for baselines)."),
            _required("model_uri", "STRING", "The exact model scored (models:/name/version or mllib:name)."),
            _required("variant", "STRING", "full; for the teacher also features_only (its wide logistic regression"
                                           " alone) and sequence_only (a teacher trained without aggregate"
                                           " features); baselines: the tuned parameters' variant is full."),
            _required("task", "STRING", f"One of {', '.join(TASKS)}."),
            _required("platform", "STRING", "A platform, or 'all' for every platform together."),
            _required("segment", "STRING", "all, or cold_start: rows with at most 3 behaviour events on their"
                                           " platform in the lookback and some on another platform."),
            _required("split", "STRING", "validation or test."),
            _SNAPSHOT,
            Col("auc", "DOUBLE", "ROC AUC (NULL with one class only)."),
            Col("pr_auc", "DOUBLE", "Average precision (NULL without positives)."),
            Col("logloss", "DOUBLE", "Mean log loss."),
            Col("ece", "DOUBLE", "Expected calibration error (10 equal-width bins)."),
            Col("predicted_over_observed", "DOUBLE", "Sum of predicted probabilities / positives (1: calibrated"
                                                     " totals; NULL without positives)."),
            Col("baseline", "STRING", "The best baseline on this task (by test AUC), for the interval."),
            Col("auc_diff_ci_low", "DOUBLE", "Lower bound of the paired bootstrap 95% interval of the AUC minus the"
                                             " best baseline's (test split, all platforms)."),
            Col("auc_diff_ci_high", "DOUBLE", "Upper bound of that interval."),
            _required("n", "BIGINT", "Rows with a label."),
            _required("positives", "BIGINT", "Rows with label 1."),
            Col("mlflow_run_id", "STRING", "The MLflow run of the evaluation (plots, tables)."),
        ),
        comment="Metrics per model, variant, task, platform ('all' = every platform), segment and split; NULL where"
                " undefined.",
        written_by="evaluate",
        constraints={"valid_task": "task IN (" + ", ".join(f"'{t}'" for t in TASKS) + ")",
                     "valid_split": "split IN ('validation', 'test')",
                     "valid_variant": "variant IN ('full', 'features_only', 'sequence_only')",
                     "valid_segment": "segment IN ('all', 'cold_start')"},
    ),
    "ingest_runs": TableSpec(
        columns=(
            _required("run_id", "STRING", "Id of the ingest run."),
            _required("started_at", "TIMESTAMP", "Start of the run (UTC)."),
            _PLATFORM,
            _required("feed", "STRING", "events, ads, items, ad_feature or identity."),
            Col("files", "BIGINT", "Files of the feed."),
            Col("skipped_files", "BIGINT", "Files skipped as already ingested."),
            Col("read", "BIGINT", "Lines read."),
            Col("accepted", "BIGINT", "Distinct new rows accepted."),
            Col("duplicates", "BIGINT", "Lines that repeat an accepted or earlier row."),
            Col("rejected", "BIGINT", "Lines written to rejects."),
            Col("events_written", "BIGINT", "Rows added to events (a clicked impression adds two)."),
        ),
        comment="Per-run, per-feed accounting: read = accepted + duplicates + rejected.",
        written_by="ingest",
    ),
    "user_scores": TableSpec(
        columns=(
            _SNAPSHOT, _USER, _PLATFORM,
            *(_required(SCORE_COLUMNS[t], "DOUBLE", f"Probability of {t} (see docs/labels.md).") for t in TASKS),
            _required("model_name", "STRING", "Registered model that scored the row."),
            _required("model_version", "STRING", "Its version."),
            _required("scored_at", "TIMESTAMP", "When the scoring run started (UTC)."),
        ),
        comment="Per-user purchase, click and churn probabilities per snapshot, with the model that made them.",
        written_by="score",
        partitioned_by=("snapshot_date",),
        zorder_by=("platform", "user_id"),
        constraints={f"{c}_in_unit_interval": f"{c} >= 0 AND {c} <= 1" for c in SCORE_COLUMNS.values()},
        properties={"delta.enableChangeDataFeed": "true"},
    ),
    "inventory_demand": TableSpec(
        columns=(
            _SNAPSHOT, _PLATFORM,
            _required("category", "STRING", "Category of the users' recent behaviour events."),
            _required("expected_buyers", "DOUBLE", "Sum over scored users of purchase_score times the category's"
                                                   " share of their recent events on the platform."),
            _required("users_scored", "BIGINT", "Scored users with the category in their recent events."),
        ),
        comment="Expected buyers per platform and category: purchase scores spread over recent category mix.",
        written_by="publish",
        partitioned_by=("snapshot_date",),
        constraints={"non_negative_demand": "expected_buyers >= 0"},
    ),
    "ads_audiences": TableSpec(
        columns=(
            _SNAPSHOT, _PLATFORM,
            _required("audience", "STRING", "high_click or churn_risk."),
            _USER_KEY,
            _required("score", "DOUBLE", "click_score (high_click) or churn_score (churn_risk)."),
            _required("rank", "INT", "1 = strongest within audience and platform."),
        ),
        comment="Audiences for the ads system: high_click and churn_risk users per platform, ranked; users by"
                " pseudonym (user_key), never by id.",
        written_by="publish",
        partitioned_by=("snapshot_date",),
        constraints={"score_in_unit_interval": "score >= 0 AND score <= 1"},
    ),
    "user_keys": TableSpec(
        columns=(
            _USER,
            _USER_KEY,
            _required("created_at", "TIMESTAMP", "When publish first pseudonymised the user (UTC)."),
        ),
        comment="Internal: user_id -> user_key, the only link between published pseudonyms and people (never"
                " published; the *_latest views join it so they show user_key only).",
        written_by="publish",
        zorder_by=("user_id",),
    ),
    "drift_reference": TableSpec(
        columns=(
            *_MODEL,
            _required("reference_snapshot", "DATE", "The model's test snapshot (validation if it logged none),"
                                                    " scored by the model: its training-time distribution."),
            _PLATFORM,
            _required("variable", "STRING", "A score column (purchase_score, ...) or an input feature."),
            _required("kind", "STRING", "score or feature."),
            Col("importance", "DOUBLE", "Features: largest |correlation| with a task's score on the reference (why"
                                        " it is monitored); NULL for scores."),
            _required("edges", "ARRAY<DOUBLE>", "Bin edges (reference quantiles, ties merged): bin i holds"
                                                " edges[i-1] <= x < edges[i]; the first and last bins are open."),
            _required("counts", "ARRAY<BIGINT>", "Reference rows per bin (one more than edges)."),
            _required("null_count", "BIGINT", "Reference rows with NULL (a bin of its own in the PSI)."),
            _required("rows", "BIGINT", "Reference rows of the platform."),
            Col("mean", "DOUBLE", "Mean of the non-NULL values."),
            Col("threshold", "DOUBLE", "The share_above cut: churn_score: publish.churn_threshold; otherwise the"
                                       " reference's top publish.high_click_fraction quantile."),
            Col("share_above", "DOUBLE", "Share of reference rows at or above threshold."),
            _required("created_at", "TIMESTAMP", "When `propensity monitor` first saw the model version (UTC)."),
        ),
        comment="Fixed-bin histograms of each model version's scores and most important features on its reference"
                " snapshot; written once per model version by `propensity monitor` (also logged to the model's"
                " MLflow run as monitor/drift_reference.json).",
        written_by="monitor",
    ),
    "score_drift": TableSpec(
        columns=(
            _required("monitored_at", "TIMESTAMP", "When `propensity monitor` ran (UTC)."),
            _SNAPSHOT,
            *_MODEL,
            _PLATFORM,
            _required("variable", "STRING", "A score column (purchase_score, ...) or an input feature."),
            _required("kind", "STRING", "score or feature."),
            _required("comparison", "STRING", "reference (the model's reference snapshot) or previous (the newest"
                                              " earlier snapshot in user_scores)."),
            _required("baseline_snapshot", "DATE", "The snapshot compared against."),
            _required("rows", "BIGINT", "Rows of the platform at snapshot_date."),
            _required("baseline_rows", "BIGINT", "Rows of the platform at baseline_snapshot."),
            Col("mean", "DOUBLE", "Mean at snapshot_date (non-NULL values)."),
            Col("baseline_mean", "DOUBLE", "Mean at baseline_snapshot."),
            Col("threshold", "DOUBLE", "The cut of share_above (see drift_reference.threshold)."),
            Col("share_above", "DOUBLE", "Share of rows at or above threshold at snapshot_date."),
            Col("baseline_share_above", "DOUBLE", "The same at baseline_snapshot."),
            _required("psi", "DOUBLE", "Population stability index over the reference's fixed bins (+ a NULL bin),"
                                       " shares floored at 1e-4."),
            _required("status", "STRING", "ok, warn (psi >= monitor.psi_warn), alert (psi >= monitor.psi_alert) or"
                                          " few_rows (fewer than monitor.min_rows rows on a side: never alerts)."),
            Col("mlflow_run_id", "STRING", "The MLflow run of the monitor (drift plot)."),
        ),
        comment="Drift of scores and top input features per snapshot, platform and variable, against the model's"
                " reference and the previous scored snapshot; appended by every `propensity monitor` run.",
        written_by="monitor",
        constraints={"valid_status": "status IN ('ok', 'warn', 'alert', 'few_rows')",
                     "valid_comparison": "comparison IN ('reference', 'previous')"},
    ),
    "erasure_requests": TableSpec(
        columns=(
            _required("request_id", "STRING", "Id of the request (uuid4)."),
            _required("requested_at", "TIMESTAMP", "When `propensity forget` ran (UTC)."),
            _required("requested_by", "STRING", "Who ran it: --requested-by, else the OS or Databricks user."),
            _required("identifier_kind", "STRING", "user_id or platform_user_id: what the request named."),
            Col("platform", "STRING", "The platform of a platform_user_id request."),
            _required("subject_key", "STRING", "HMAC-SHA256 (PROPENSITY_PSEUDONYM_KEY) of the identifier as given,"
                                               " never the id in clear; for user_id requests it equals user_key."),
            _required("accounts", "INT", "Platform accounts of the person found in identity_map and events."),
            _required("rows_deleted", "BIGINT", "Rows deleted over every table (0 when repeated)."),
            _required("tables", "STRING", "JSON: rows deleted per table."),
            _required("retain_hours", "INT", "VACUUM retention used (maintenance.erasure_retain_hours)."),
        ),
        comment="Audit trail of erasure requests: who, when, what (keyed hashes only) and what was removed.",
        written_by="forget",
    ),
    "ingested_files": TableSpec(
        columns=(
            _PLATFORM,
            _required("feed", "STRING", "events, ads, items, ad_feature or identity."),
            _required("path", "STRING", "The file."),
            _required("size", "BIGINT", "Its size in bytes when read."),
            _required("modified_at", "TIMESTAMP", "Its modification time when read (UTC)."),
            _required("run_id", "STRING", "The ingest run that read it."),
            _required("ingested_at", "TIMESTAMP", "When (UTC)."),
        ),
        comment="Files already ingested (path, size, mtime); they are skipped unless ingest.reprocess is set.",
        written_by="ingest",
    ),
}

#: Bronze tables are named ``bronze_<feed>``: one per event or ad feed, raw fields as read.
BRONZE_PREFIX = "bronze_"

#: Tables with a ``<name>_latest`` view: the rows of the newest ``snapshot_date`` (for analysts and BI tools).
LATEST_VIEWS = ("user_scores", "inventory_demand", "ads_audiences")


def create_table_ddl(target: str, spec: TableSpec) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for ``spec`` at ``target`` (a name or ``delta.`path```), constraints included.

    CHECK constraints go in as ``delta.constraints.*`` properties, so the table and its constraints
    are one Delta commit: a crash cannot leave a table without them.
    """
    ddl = f"CREATE TABLE IF NOT EXISTS {target} ({spec.ddl_columns()}) USING DELTA"
    if spec.partitioned_by:
        ddl += f" PARTITIONED BY ({', '.join(spec.partitioned_by)})"
    ddl += f" COMMENT '{_quoted(spec.comment)}'"
    properties = {**spec.properties, **{f"delta.constraints.{k}": v for k, v in spec.constraints.items()}}
    if properties:
        ddl += " TBLPROPERTIES (" + ", ".join(f"'{k}' = '{_quoted(v)}'" for k, v in properties.items()) + ")"
    return ddl


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def ensure_table(spark: SparkSession, cfg: Config, name: str) -> str:
    """Create table ``name`` if missing (one commit, constraints included) and return its qualified name."""
    qualified = cfg.table(name)
    if not table_exists(spark, cfg, name):
        create_table(spark, cfg, name, lambda target: spark.sql(create_table_ddl(target, TABLES[name])))
    return qualified


def view_sources(name: str) -> list[str]:
    """The tables view ``<name>_latest`` reads: ``name``, and ``user_keys`` when ``name`` is keyed by ``user_id``."""
    return [name, "user_keys"] if "user_id" in TABLES[name].column_names else [name]


def latest_view_sql(cfg: Config, name: str) -> str:
    """The query of view ``<name>_latest``: ``name``'s newest snapshot, users by ``user_key`` only.

    ``user_scores`` is internal and keyed by ``user_id``; its view joins ``user_keys`` (written by
    publish) and leaves ``user_id`` out, so nothing read by other systems carries a raw id.
    """
    table = cfg.table(name)
    newest = f"snapshot_date = (SELECT max(snapshot_date) FROM {table})"
    if "user_keys" not in view_sources(name):
        return f"SELECT * FROM {table} WHERE {newest}"
    columns = ", ".join("k.user_key" if c == "user_id" else f"t.`{c}`" for c in TABLES[name].column_names)
    return (f"SELECT {columns} FROM {table} t JOIN {cfg.table('user_keys')} k ON t.user_id = k.user_id"
            f" WHERE t.{newest}")


def create_table(spark: SparkSession, cfg: Config, name: str, create: Callable[[str], object]) -> bool:
    """Create table ``name`` with ``create(target)`` under its write lock, unless it exists by then.

    ``create`` makes the table at ``target`` in one Delta commit: a ``delta.`path``` identifier in the
    folder catalog (then registered here), the qualified name in a persistent catalog. A folder
    left without a committed version by a killed creation is removed first.

    :returns: whether ``create`` ran (False: another process created the table meanwhile).
    """
    with table_lock(spark, cfg, name):
        if table_exists(spark, cfg, name):
            return False
        folder = table_dir(spark, cfg, name)
        if folder is not None:
            remove_uncommitted(folder)
        if folder is not None and folder_catalog(spark, cfg):
            create(delta_path(folder))
            table_exists(spark, cfg, name)
        else:
            create(cfg.table(name))
        return True


def ensure_latest_view(spark: SparkSession, cfg: Config, name: str, replace: bool = False) -> str:
    """(Re)create the view ``<name>_latest`` (rows of ``name``'s newest snapshot, see :func:`latest_view_sql`)."""
    if name not in LATEST_VIEWS:
        raise ValueError(f"no latest view for table {name!r}; tables with one: {', '.join(LATEST_VIEWS)}")
    view = cfg.table(f"{name}_latest")
    if replace or not spark.catalog.tableExists(view.replace("`", "")):
        spark.sql(f"CREATE OR REPLACE VIEW {view} COMMENT 'Rows of {name} for its newest snapshot_date (users by"
                  f" user_key).' AS {latest_view_sql(cfg, name)}")
    return view


def drop_table(spark: SparkSession, cfg: Config, name: str) -> None:
    """Drop table ``name`` and, in the folder catalog (where tables are external), its folder too."""
    with table_lock(spark, cfg, name):
        folder = table_dir(spark, cfg, name)
        spark.sql(f"DROP TABLE IF EXISTS {cfg.table(name)}")
        if folder is not None and folder_catalog(spark, cfg):
            shutil.rmtree(folder, ignore_errors=True)


def find_table(spark: SparkSession, cfg: Config, name: str) -> bool:
    """Whether table or latest view ``name`` exists, registering it (and a view's table) on the way."""
    base = name.removesuffix("_latest")
    if name != base and base in LATEST_VIEWS:
        if not all(table_exists(spark, cfg, table) for table in view_sources(base)):
            return False
        ensure_latest_view(spark, cfg, base)
        return True
    return table_exists(spark, cfg, name)


def register_all(spark: SparkSession, cfg: Config) -> list[str]:
    """Register every table of the local warehouse and its latest views; returns the new names."""
    known = {t.name for t in spark.catalog.listTables(cfg.storage.schema)}
    found = [*tables_on_disk(cfg), *(f"{t}_latest" for t in LATEST_VIEWS)]
    return [name for name in found if name not in known and find_table(spark, cfg, name)]


def require_table(spark: SparkSession, cfg: Config, name: str) -> str:
    """Qualified name of an existing table, or a :class:`TableNotFoundError` naming the stage that writes it."""
    qualified = cfg.table(name)
    if not table_exists(spark, cfg, name):
        made_by = TABLES[name].written_by if name in TABLES else "ingest"
        raise TableNotFoundError(f"table {qualified.replace('`', '')} does not exist yet;"
                                 f" run `propensity {made_by}` first")
    return qualified
