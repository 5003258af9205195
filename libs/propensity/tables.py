"""Delta table contracts (DESIGN section 3): columns, partitioning and CHECK constraints.

Every stage creates its tables through :func:`ensure_table`, so the schema lives in
one place and a table made by one stage is exactly what the next stage reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from propensity.config import Config
from propensity.errors import TableNotFoundError

EVENT_TYPES = ("view", "cart", "remove_from_cart", "favorite", "purchase", "ad_impression", "ad_click")
BEHAVIOUR_EVENT_TYPES = EVENT_TYPES[:5]
AD_EVENT_TYPES = EVENT_TYPES[5:]


@dataclass(frozen=True)
class TableSpec:
    """One Delta table: its columns as DDL, partition columns, CHECK constraints and properties."""

    columns: str
    partitioned_by: tuple[str, ...] = ()
    constraints: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    comment: str = ""


_EVENT_TYPE_LIST = ", ".join(f"'{t}'" for t in EVENT_TYPES)

TABLES: dict[str, TableSpec] = {
    "events": TableSpec(
        columns="""event_id STRING NOT NULL, platform STRING NOT NULL, platform_user_id STRING NOT NULL,
            user_id STRING NOT NULL, event_time TIMESTAMP NOT NULL, event_date DATE NOT NULL,
            event_type STRING NOT NULL, item_id STRING, category STRING, brand STRING, price DOUBLE,
            session_id STRING, campaign_id STRING, _source_file STRING NOT NULL, _ingested_at TIMESTAMP NOT NULL""",
        partitioned_by=("event_date",),
        constraints={"valid_event_type": f"event_type IN ({_EVENT_TYPE_LIST})",
                     "non_negative_price": "price IS NULL OR price >= 0"},
        comment="Unified behaviour and ad events of every platform, one row per distinct event.",
    ),
    "rejects": TableSpec(
        columns="""platform STRING NOT NULL, feed STRING NOT NULL, _source_file STRING NOT NULL, raw STRING,
            reason STRING NOT NULL, _ingested_at TIMESTAMP NOT NULL, _ingest_run_id STRING NOT NULL""",
        comment="Raw rows that could not be ingested, with the reason.",
    ),
    "identity_map": TableSpec(
        columns="""platform STRING NOT NULL, platform_user_id STRING NOT NULL, user_id STRING NOT NULL,
            linked BOOLEAN NOT NULL""",
        comment="Every platform account seen, resolved to one cross-platform user_id (linked = from identity file).",
    ),
    "items": TableSpec(
        columns="""platform STRING NOT NULL, item_id STRING NOT NULL, title STRING, category STRING, brand STRING,
            price DOUBLE, _source_file STRING, _ingested_at TIMESTAMP""",
        constraints={"non_negative_price": "price IS NULL OR price >= 0"},
        comment="Item catalogs per platform.",
    ),
    "training_examples": TableSpec(
        columns="""snapshot_date DATE NOT NULL, user_id STRING NOT NULL, platform STRING NOT NULL,
            behavior_text STRING NOT NULL,
            n_view_1d INT, n_view_7d INT, n_view_30d INT, n_cart_1d INT, n_cart_7d INT, n_cart_30d INT,
            n_remove_from_cart_1d INT, n_remove_from_cart_7d INT, n_remove_from_cart_30d INT, n_favorite_1d INT,
            n_favorite_7d INT, n_favorite_30d INT, n_purchase_1d INT, n_purchase_7d INT, n_purchase_30d INT,
            n_ad_impression_1d INT, n_ad_impression_7d INT, n_ad_impression_30d INT, n_ad_click_1d INT,
            n_ad_click_7d INT, n_ad_click_30d INT, all_n_view_1d INT, all_n_view_7d INT, all_n_view_30d INT,
            all_n_cart_1d INT, all_n_cart_7d INT, all_n_cart_30d INT, all_n_remove_from_cart_1d INT,
            all_n_remove_from_cart_7d INT, all_n_remove_from_cart_30d INT, all_n_favorite_1d INT,
            all_n_favorite_7d INT, all_n_favorite_30d INT, all_n_purchase_1d INT, all_n_purchase_7d INT,
            all_n_purchase_30d INT, all_n_ad_impression_1d INT, all_n_ad_impression_7d INT,
            all_n_ad_impression_30d INT, all_n_ad_click_1d INT, all_n_ad_click_7d INT, all_n_ad_click_30d INT,
            active_days_30d INT, all_active_days_30d INT, n_sessions_30d INT, distinct_items_30d INT,
            distinct_categories_30d INT, all_distinct_categories_30d INT, carts_without_purchase_30d INT,
            n_other_platforms_active_30d INT, other_n_behaviour_30d INT, other_n_purchase_30d INT,
            days_since_last_event DOUBLE, all_days_since_last_event DOUBLE, days_since_first_event DOUBLE,
            days_since_last_purchase DOUBLE, all_days_since_last_purchase DOUBLE, spend_7d DOUBLE,
            spend_30d DOUBLE, all_spend_30d DOUBLE, avg_price_viewed_30d DOUBLE, ctr_30d DOUBLE,
            all_ctr_30d DOUBLE,
            label_purchase INT, label_click INT, label_churn INT""",
        partitioned_by=("snapshot_date",),
        constraints={"valid_labels": "(label_purchase IS NULL OR label_purchase IN (0, 1))"
                                      " AND (label_click IS NULL OR label_click IN (0, 1))"
                                      " AND (label_churn IS NULL OR label_churn IN (0, 1))"},
        comment="Point-in-time features, behaviour text and labels per (snapshot_date, user_id, platform).",
    ),
    "model_evaluations": TableSpec(
        columns="""evaluated_at TIMESTAMP NOT NULL, model_name STRING NOT NULL, model_version STRING,
            model_uri STRING NOT NULL, task STRING NOT NULL, platform STRING NOT NULL, split STRING NOT NULL,
            snapshot_date DATE NOT NULL, auc DOUBLE, pr_auc DOUBLE, logloss DOUBLE, n BIGINT NOT NULL,
            positives BIGINT NOT NULL, mlflow_run_id STRING""",
        constraints={"valid_task": "task IN ('purchase', 'click', 'churn')",
                     "valid_split": "split IN ('validation', 'test')"},
        comment="Metrics per model, task, platform ('all' = every platform) and split; NULL where undefined.",
    ),
    "ingest_runs": TableSpec(
        columns="""run_id STRING NOT NULL, started_at TIMESTAMP NOT NULL, platform STRING NOT NULL,
            feed STRING NOT NULL, files BIGINT, skipped_files BIGINT, `read` BIGINT, accepted BIGINT,
            duplicates BIGINT, rejected BIGINT, events_written BIGINT""",
        comment="Per-run, per-feed accounting: read = accepted + duplicates + rejected.",
    ),
    "user_scores": TableSpec(
        columns="""snapshot_date DATE NOT NULL, user_id STRING NOT NULL, platform STRING NOT NULL,
            purchase_score DOUBLE NOT NULL, click_score DOUBLE NOT NULL, churn_score DOUBLE NOT NULL,
            model_name STRING NOT NULL, model_version STRING NOT NULL, scored_at TIMESTAMP NOT NULL""",
        partitioned_by=("snapshot_date",),
        constraints={f"{task}_score_in_unit_interval": f"{task}_score >= 0 AND {task}_score <= 1"
                     for task in ("purchase", "click", "churn")},
        properties={"delta.enableChangeDataFeed": "true"},
        comment="Per-user purchase, click and churn probabilities per snapshot, with the model that made them.",
    ),
    "inventory_demand": TableSpec(
        columns="""snapshot_date DATE NOT NULL, platform STRING NOT NULL, category STRING NOT NULL,
            expected_buyers DOUBLE NOT NULL, users_scored BIGINT NOT NULL""",
        partitioned_by=("snapshot_date",),
        constraints={"non_negative_demand": "expected_buyers >= 0"},
        comment="Expected buyers per platform and category: purchase scores spread over recent category mix.",
    ),
    "ads_audiences": TableSpec(
        columns="""snapshot_date DATE NOT NULL, platform STRING NOT NULL, audience STRING NOT NULL,
            user_id STRING NOT NULL, score DOUBLE NOT NULL, `rank` INT NOT NULL""",
        partitioned_by=("snapshot_date",),
        constraints={"score_in_unit_interval": "score >= 0 AND score <= 1"},
        comment="Audiences for the ads system: high_click and churn_risk users per platform, ranked.",
    ),
    "ingested_files": TableSpec(
        columns="""platform STRING NOT NULL, feed STRING NOT NULL, path STRING NOT NULL, size BIGINT NOT NULL,
            modified_at TIMESTAMP NOT NULL, run_id STRING NOT NULL, ingested_at TIMESTAMP NOT NULL""",
        comment="Files already ingested (path, size, mtime); they are skipped unless ingest.reprocess is set.",
    ),
}


def ensure_table(spark: SparkSession, cfg: Config, name: str) -> str:
    """Create table ``name`` if missing (with its constraints) and return its qualified name."""
    spec = TABLES[name]
    qualified = cfg.table(name)
    if spark.catalog.tableExists(qualified.replace("`", "")):
        return qualified
    ddl = f"CREATE TABLE IF NOT EXISTS {qualified} ({spec.columns}) USING DELTA"
    if spec.partitioned_by:
        ddl += f" PARTITIONED BY ({', '.join(spec.partitioned_by)})"
    if spec.comment:
        ddl += " COMMENT '" + spec.comment.replace("'", "\\'") + "'"
    if spec.properties:
        ddl += " TBLPROPERTIES (" + ", ".join(f"'{k}' = '{v}'" for k, v in spec.properties.items()) + ")"
    spark.sql(ddl)
    for constraint, check in spec.constraints.items():
        spark.sql(f"ALTER TABLE {qualified} ADD CONSTRAINT {constraint} CHECK ({check})")
    return qualified


#: Tables with a ``<name>_latest`` view: the rows of the newest ``snapshot_date`` (for analysts and BI tools).
LATEST_VIEWS = ("user_scores", "inventory_demand", "ads_audiences")


def ensure_latest_view(spark: SparkSession, cfg: Config, name: str) -> str:
    """Create the view ``<name>_latest`` (rows of ``name``'s newest snapshot) if missing; returns its name."""
    if name not in LATEST_VIEWS:
        raise ValueError(f"no latest view for table {name!r}; tables with one: {', '.join(LATEST_VIEWS)}")
    table = cfg.table(name)
    view = cfg.table(f"{name}_latest")
    if not spark.catalog.tableExists(view.replace("`", "")):
        spark.sql(f"CREATE VIEW IF NOT EXISTS {view} COMMENT 'Rows of {name} for its newest snapshot_date.'"
                  f" AS SELECT * FROM {table} WHERE snapshot_date = (SELECT max(snapshot_date) FROM {table})")
    return view


def require_table(spark: SparkSession, cfg: Config, name: str, made_by: str) -> str:
    """Qualified name of an existing table, or a :class:`TableNotFoundError` naming the stage to run."""
    qualified = cfg.table(name)
    if not spark.catalog.tableExists(qualified.replace("`", "")):
        raise TableNotFoundError(f"table {qualified.replace('`', '')} does not exist yet;"
                                 f" run `propensity {made_by}` first")
    return qualified
