"""Deployment surfaces: the Databricks bundle's structure and entry points, and the notebooks' format."""

from __future__ import annotations

import ast
import importlib
import re
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = yaml.safe_load((ROOT / "databricks.yml").read_text())
JOBS: dict[str, Any] = BUNDLE["resources"]["jobs"]
TRAIN_DAG = ["ingest", "features", "pretrain", "finetune", "distill", "evaluate"]


def _deps(task: dict[str, Any]) -> list[str]:
    return [d["task_key"] for d in task.get("depends_on", [])]


def test_targets_and_variables() -> None:
    assert set(BUNDLE["targets"]) == {"dev", "prod"}
    assert BUNDLE["targets"]["dev"]["mode"] == "development" and BUNDLE["targets"]["prod"]["mode"] == "production"
    assert set(BUNDLE["variables"]) == {"catalog", "schema", "etl_node_type", "gpu_node_type", "snapshot_date"}
    text = (ROOT / "databricks.yml").read_text()
    for name in BUNDLE["variables"]:
        assert f"${{var.{name}}}" in text, f"bundle variable {name} is declared but never used"


def test_train_job_is_the_training_dag_on_the_right_clusters() -> None:
    tasks = {t["task_key"]: t for t in JOBS["train"]["tasks"]}
    assert list(tasks) == TRAIN_DAG
    assert [_deps(tasks[k]) for k in TRAIN_DAG] == [[], *[[k] for k in TRAIN_DAG[:-1]]]
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in JOBS["train"]["job_clusters"]}
    assert "gpu" in clusters["gpu"]["spark_version"] and "gpu" not in clusters["etl"]["spark_version"]
    assert {k: tasks[k]["job_cluster_key"] for k in TRAIN_DAG} == {
        "ingest": "etl", "features": "etl", "pretrain": "gpu", "finetune": "gpu", "distill": "gpu",
        "evaluate": "etl"}
    assert "quartz_cron_expression" in JOBS["train"]["schedule"]


def test_daily_scoring_job() -> None:
    tasks = {t["task_key"]: t for t in JOBS["score_and_publish"]["tasks"]}
    assert [(k, _deps(t)) for k, t in tasks.items()] == [("ingest", []), ("features", ["ingest"]),
                                                           ("score", ["features"]), ("publish", ["score"]),
                                                           ("monitor", ["score"])]
    assert JOBS["train"]["job_clusters"][0]["new_cluster"][
        "spark_env_vars"]["PROPENSITY_PSEUDONYM_KEY"] == "{{secrets/propensity/pseudonym_key}}"
    assert [t["python_wheel_task"]["entry_point"] for t in JOBS["maintain"]["tasks"]] == ["propensity-maintain"]
    assert "SAT" in JOBS["maintain"]["schedule"]["quartz_cron_expression"]
    assert "--no-labels" in tasks["features"]["python_wheel_task"]["parameters"]
    assert JOBS["score_and_publish"]["schedule"]["quartz_cron_expression"].startswith("0 0 5 * * ")
    # the YAML anchors really share one cluster definition between the two jobs
    assert JOBS["score_and_publish"]["job_clusters"][0]["new_cluster"] == JOBS["train"]["job_clusters"][0][
        "new_cluster"]


@pytest.mark.parametrize("job", ["train", "score_and_publish", "maintain"])
def test_every_task_calls_an_existing_entry_point_with_catalog_and_schema(job: str) -> None:
    scripts = {ep.name: ep for ep in entry_points(group="console_scripts")}
    for task in JOBS[job]["tasks"]:
        wheel = task["python_wheel_task"]
        assert wheel["package_name"] == "propensity"
        entry = scripts[wheel["entry_point"]]
        assert callable(entry.load()), wheel["entry_point"]
        params = wheel["parameters"]
        assert params[params.index("--catalog") + 1] == "${var.catalog}"
        assert params[params.index("--schema") + 1] == "${var.schema}"
        dated = ("score", "publish", "monitor")
        if task["task_key"] in dated or (job == "score_and_publish" and task["task_key"] == "features"):
            assert params[params.index("--snapshot-date") + 1] == "${var.snapshot_date}"


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_databricks_source_with_widgets_and_real_imports(notebook: Path) -> None:
    text = notebook.read_text()
    assert text.startswith("# Databricks notebook source\n")
    cells = text.split("\n# COMMAND ----------\n")
    assert len(cells) >= 3
    assert "dbutils.widgets." in cells[1], "the first code cell declares the parameters (widgets)"
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("propensity"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{notebook.name}: {node.module}.{alias.name} does not exist"
    for cell in cells:
        if cell.lstrip().startswith("# MAGIC %sql"):
            assert re.search(r"SELECT", cell)


def test_setup_packages_every_subpackage_for_the_wheel() -> None:
    """``find_packages`` only sees folders with ``__init__.py``: a stage without one would be missing from the wheel."""
    from setuptools import find_packages

    packaged = set(find_packages(str(ROOT / "libs")))
    folders = {".".join(p.relative_to(ROOT / "libs").parts) for p in (ROOT / "libs" / "propensity").rglob("*")
               if p.is_dir() and any(p.glob("*.py"))}
    assert folders and folders <= packaged
    assert {"propensity.stages", "propensity.stages.ingest", "propensity.stages.training"} <= packaged


def test_cluster_overlay_trains_on_executors() -> None:
    from propensity.core.config import load_config

    cfg = load_config([ROOT / "conf" / "cluster.yml"])
    assert cfg.training.local_mode is False
    assert cfg.training.threads_per_process >= 1 and cfg.training.num_processes >= 1
    assert cfg.storage.root == "/shared/propensity"


class _Conf:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.values.get(key, default)


class _Session:
    """What check_delta reads of a session: the JVM (None here: no class check) and the SQL settings."""

    def __init__(self, values: dict[str, str]) -> None:
        self.conf = _Conf(values)
        self.sparkContext = type("Context", (), {"_jvm": None})()


def test_submitted_session_gets_delta_and_a_missing_setting_names_the_option() -> None:
    from propensity.core.config import load_config
    from propensity.core.errors import ConfigError
    from propensity.core.spark import DELTA_SESSION_CONF, check_delta, submitted_defaults

    cfg = load_config(None, ["storage.root=/mnt/shared/p", "spark.conf={spark.sql.adaptive.enabled: 'true'}"])
    defaults = submitted_defaults(cfg)
    assert defaults["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert defaults["spark.sql.catalog.spark_catalog"] == "org.apache.spark.sql.delta.catalog.DeltaCatalog"
    assert defaults["spark.sql.catalogImplementation"] == "hive"
    assert defaults["spark.sql.warehouse.dir"] == "/mnt/shared/p/warehouse"
    assert defaults["spark.sql.adaptive.enabled"] == "true" and defaults["spark.sql.session.timeZone"] == "UTC"
    assert "spark.master" not in defaults and "spark.jars" not in defaults
    # a user's own SQL extension is added to Delta's, not put in its place
    extended = submitted_defaults(load_config(None, ["spark.conf={spark.sql.extensions: org.example.Ext}"]))
    assert extended["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension,org.example.Ext"

    check_delta(_Session(dict(DELTA_SESSION_CONF)), "io.delta:delta-spark_2.13:4.0.1")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^the Spark session has spark\.sql\.extensions=<unset>; start it with"
                                          r" spark-submit --conf spark\.sql\.extensions=io\.delta\.sql\."
                                          r"DeltaSparkSessionExtension$"):
        check_delta(_Session({}), "io.delta:delta-spark_2.13:4.0.1")  # type: ignore[arg-type]
    other = {**DELTA_SESSION_CONF, "spark.sql.catalog.spark_catalog": "org.example.Catalog"}
    with pytest.raises(ConfigError, match=r"spark\.sql\.catalog\.spark_catalog=org\.example\.Catalog; start it with"
                                          r" spark-submit --conf spark\.sql\.catalog\.spark_catalog=org\.apache"):
        check_delta(_Session(other), "io.delta:delta-spark_2.13:4.0.1")  # type: ignore[arg-type]
