# Databricks notebook source
# MAGIC %md
# MAGIC # Explore the unified events
# MAGIC Per-platform volumes, rejects by reason and identity coverage after `propensity ingest`.

# COMMAND ----------

dbutils.widgets.text("catalog", "main", "Catalog")
dbutils.widgets.text("schema", "propensity", "Schema")
catalog = dbutils.widgets.get("catalog")
schema = dbutils.widgets.get("schema")

# COMMAND ----------

from propensity.core.config import load_config
from propensity.core.spark import get_spark

cfg = load_config(overrides=[f"storage.catalog={catalog}", f"storage.schema={schema}"])
spark = get_spark(cfg)

# COMMAND ----------

display(spark.sql(f"""
    SELECT platform, event_type, count(*) AS events, count(DISTINCT user_id) AS users,
           min(event_time) AS first_event, max(event_time) AS last_event
    FROM {cfg.table('events')} GROUP BY platform, event_type ORDER BY platform, event_type"""))

# COMMAND ----------

display(spark.sql(f"""
    SELECT platform, feed, regexp_extract(reason, '^[a-z /0-9]+', 0) AS reason, count(*) AS rows
    FROM {cfg.table('rejects')} GROUP BY 1, 2, 3 ORDER BY rows DESC"""))

# COMMAND ----------

display(spark.sql(f"""
    SELECT run_id, started_at, platform, feed, `read`, accepted, duplicates, rejected
    FROM {cfg.table('ingest_runs')} ORDER BY started_at DESC, platform"""))

# COMMAND ----------

display(spark.sql(f"""
    SELECT platforms, count(*) AS users FROM (
      SELECT user_id, count(DISTINCT platform) AS platforms FROM {cfg.table('identity_map')} GROUP BY user_id)
    GROUP BY platforms ORDER BY platforms"""))
