# Databricks notebook source
# MAGIC %md
# MAGIC # Score a snapshot and publish the downstream tables
# MAGIC What the daily `score_and_publish` job does: features at T (no labels), the champion model in a
# MAGIC pandas UDF, a MERGE into `user_scores`, then `inventory_demand` and `ads_audiences`.

# COMMAND ----------

dbutils.widgets.text("catalog", "main", "Catalog")
dbutils.widgets.text("schema", "propensity", "Schema")
dbutils.widgets.text("snapshot_date", "2026-01-01", "Snapshot date T (YYYY-MM-DD)")
dbutils.widgets.text("model_uri", "models:/propensity_student@champion", "Model URI")
catalog = dbutils.widgets.get("catalog")
schema = dbutils.widgets.get("schema")
snapshot_date = dbutils.widgets.get("snapshot_date")
model_uri = dbutils.widgets.get("model_uri")

# COMMAND ----------

from datetime import date

from propensity.core.config import load_config
from propensity.core.spark import get_spark
from propensity.stages.features import write_snapshot
from propensity.stages.publish.publish import publish
from propensity.stages.scoring.score import score_snapshot

cfg = load_config(["conf/databricks.yml"], [f"storage.catalog={catalog}", f"storage.schema={schema}"])
spark = get_spark(cfg)
day = date.fromisoformat(snapshot_date)

# COMMAND ----------

print(f"training_examples: {write_snapshot(spark, cfg, day, with_labels=False)} rows for {day} (no labels)")
result = score_snapshot(spark, cfg, day, model_uri)
print(result.format())

# COMMAND ----------

published = publish(spark, cfg, day)
published

# COMMAND ----------

display(spark.sql(f"""
    SELECT platform, count(*) AS users, round(avg(purchase_score), 3) AS purchase,
           round(avg(click_score), 3) AS click, round(avg(churn_score), 3) AS churn, max(model_version) AS version
    FROM {cfg.table('user_scores_latest')} GROUP BY platform ORDER BY platform"""))

# COMMAND ----------

display(spark.sql(f"SELECT * FROM {cfg.table('ads_audiences_latest')} ORDER BY audience, platform, rank LIMIT 50"))
