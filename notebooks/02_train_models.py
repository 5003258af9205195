# Databricks notebook source
# MAGIC %md
# MAGIC # Train interactively: teacher, student, evaluation
# MAGIC The weekly `train` job runs the same library functions as separate tasks. Here they run one cell at a
# MAGIC time so you can change the config (`--set`-style overrides below) and look at each result. Use a GPU
# MAGIC ML-runtime cluster with `conf/gpu.yml` for bert-base size, or the CPU defaults for a quick look.

# COMMAND ----------

dbutils.widgets.text("catalog", "main", "Catalog")
dbutils.widgets.text("schema", "propensity", "Schema")
dbutils.widgets.text("overlays", "conf/databricks.yml", "Config overlays (comma-separated)")
dbutils.widgets.text("overrides", "training.epochs=3", "Overrides key=value (comma-separated)")
catalog = dbutils.widgets.get("catalog")
schema = dbutils.widgets.get("schema")
overlays = [p.strip() for p in dbutils.widgets.get("overlays").split(",") if p.strip()]
overrides = [o.strip() for o in dbutils.widgets.get("overrides").split(",") if o.strip()]

# COMMAND ----------

from propensity.core.config import load_config
from propensity.core.datasets import plan_snapshots
from propensity.core.spark import get_spark
from propensity.stages.features import ensure_snapshots

cfg = load_config(overlays, [f"storage.catalog={catalog}", f"storage.schema={schema}", *overrides])
spark = get_spark(cfg)
plan = plan_snapshots(spark, cfg)
ensure_snapshots(spark, cfg, plan)  # the training plan's snapshots, built where missing
print(plan.describe())

# COMMAND ----------

# MAGIC %md ## 1. Pretrain the teacher encoder (masked LM on every platform's behaviour texts)

# COMMAND ----------

from propensity.stages.training.pretrain import run_pretrain

checkpoint = run_pretrain(spark, cfg)
checkpoint

# COMMAND ----------

# MAGIC %md ## 2. Fine-tune the teacher's purchase / click / churn heads (registers `propensity_teacher`)

# COMMAND ----------

from propensity.stages.training.finetune import run_finetune

teacher = run_finetune(spark, cfg, plan=plan)
teacher

# COMMAND ----------

# MAGIC %md ## 3. Distil the student (registers `propensity_student`)

# COMMAND ----------

from propensity.stages.training.distill import run_distill

student = run_distill(spark, cfg, plan=plan)
student

# COMMAND ----------

# MAGIC %md ## 4. Evaluate every model against the MLlib baselines; the gates move `@champion`

# COMMAND ----------

from propensity.stages.evaluation.evaluate import run_evaluate

report = run_evaluate(spark, cfg, plan=plan)
print(report.format())

# COMMAND ----------

display(spark.sql(f"""
    SELECT model_name, model_version, task, platform, split, round(auc, 4) AS auc, round(pr_auc, 4) AS pr_auc
    FROM {cfg.table('model_evaluations')}
    WHERE evaluated_at = (SELECT max(evaluated_at) FROM {cfg.table('model_evaluations')})
    ORDER BY split, task, platform, auc DESC"""))
