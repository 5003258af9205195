# Databricks notebook source
# MAGIC %md
# MAGIC # Analyst questions in SQL
# MAGIC Each cell answers one question on the propensity tables. Locally the same queries run with
# MAGIC `propensity sql "..."`, or through `propensity sql-server` from any JDBC/ODBC client.

# COMMAND ----------

dbutils.widgets.text("catalog", "main", "Catalog")
dbutils.widgets.text("schema", "propensity", "Schema")
spark.sql(f"USE CATALOG `{dbutils.widgets.get('catalog')}`")
spark.sql(f"USE SCHEMA `{dbutils.widgets.get('schema')}`")

# COMMAND ----------

# MAGIC %sql
# MAGIC -- 1. How much did each platform sell per day last week, and to how many buyers?
# MAGIC SELECT platform, event_date, count(*) AS purchases, count(DISTINCT user_id) AS buyers,
# MAGIC        round(sum(price), 2) AS revenue
# MAGIC FROM events
# MAGIC WHERE event_type = 'purchase' AND event_date >= date_sub((SELECT max(event_date) FROM events), 7)
# MAGIC GROUP BY platform, event_date ORDER BY event_date, platform

# COMMAND ----------

# MAGIC %sql
# MAGIC -- 2. How many customers shop on more than one platform?
# MAGIC SELECT platforms, count(*) AS users
# MAGIC FROM (SELECT user_id, count(DISTINCT platform) AS platforms FROM identity_map GROUP BY user_id)
# MAGIC GROUP BY platforms ORDER BY platforms

# COMMAND ----------

# MAGIC %sql
# MAGIC -- 3. Which categories convert carts into purchases best?
# MAGIC SELECT category, count_if(event_type = 'cart') AS carts, count_if(event_type = 'purchase') AS purchases,
# MAGIC        round(count_if(event_type = 'purchase') / nullif(count_if(event_type = 'cart'), 0), 3) AS conversion
# MAGIC FROM events GROUP BY category HAVING carts >= 20 ORDER BY conversion DESC LIMIT 20

# COMMAND ----------

# MAGIC %sql
# MAGIC -- 4. What is the click-through rate of each ad campaign?
# MAGIC SELECT campaign_id, count_if(event_type = 'ad_impression') AS impressions,
# MAGIC        count_if(event_type = 'ad_click') AS clicks,
# MAGIC        round(count_if(event_type = 'ad_click') / count_if(event_type = 'ad_impression'), 4) AS ctr
# MAGIC FROM events WHERE event_type IN ('ad_impression', 'ad_click')
# MAGIC GROUP BY campaign_id ORDER BY impressions DESC LIMIT 20

# COMMAND ----------

# MAGIC %sql
# MAGIC -- 5. How clean are the feeds: share of rejected rows per platform and feed in the latest run?
# MAGIC SELECT platform, feed, `read`, rejected, round(rejected / nullif(`read`, 0), 4) AS reject_rate
# MAGIC FROM ingest_runs WHERE run_id = (SELECT max_by(run_id, started_at) FROM ingest_runs)
# MAGIC ORDER BY reject_rate DESC
