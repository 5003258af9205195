"""Config loading: defaults, overlays, --set overrides and errors that name the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from propensity.core.config import Config, load_config, repo_conf_dir
from propensity.core.config.reference import defaults_yaml, describe
from propensity.core.errors import ConfigError


def test_defaults_come_from_base_and_local() -> None:
    cfg = load_config()
    assert (cfg.storage.schema, cfg.storage.catalog, cfg.spark.master) == ("propensity", None, "local[*]")
    assert (cfg.features.lookback_days, cfg.features.purchase_horizon_days, cfg.features.click_horizon_days,
            cfg.features.churn_horizon_days) == (30, 7, 7, 30)
    assert cfg.table("events") == "`propensity`.`events`"


def test_overlays_merge_in_order_and_set_wins(tmp_path: Path) -> None:
    first = tmp_path / "a.yml"
    first.write_text("features:\n  lookback_days: 14\n  churn_horizon_days: 21\nstorage:\n  catalog: main\n")
    second = tmp_path / "b.yml"
    second.write_text("features:\n  lookback_days: 10\n")
    cfg = load_config([first, second], ["features.churn_horizon_days=28", "ingest.reprocess=true",
                                        "spark.conf.spark.sql.ansi.enabled=false"])
    assert (cfg.features.lookback_days, cfg.features.churn_horizon_days, cfg.features.purchase_horizon_days) == \
        (10, 28, 7)
    assert cfg.ingest.reprocess is True
    assert cfg.table("events") == "`main`.`propensity`.`events`"
    assert cfg.spark.conf["spark.sql.ansi.enabled"] == "false"


def test_platform_list_is_validated_and_indexable() -> None:
    cfg = load_config(overrides=["platforms=[{name: shop, format: rees46, events: /x/*.csv}]",
                                 "platforms.0.items=/x/items.csv"])
    assert cfg.platforms[0].items == "/x/items.csv" and cfg.platform_names == ["shop"]


@pytest.mark.parametrize(("override", "message"), [
    ("features.lookbak_days=3", r"unknown config key features.lookbak_days"),
    ("features.lookback_days=abc", r"features.lookback_days='abc' must be an integer"),
    ("features.lookback_days=0", r"features.lookback_days=0 must be >= 1"),
    ("ingest.reprocess=maybe", r"ingest.reprocess='maybe' must be true or false"),
    ("storage.schema=my-db", r"storage.schema='my-db' is not a valid SQL identifier"),
    ("platforms=[{name: a, format: rees46, events: x}, {name: a, format: taobao, events: y}]",
     r"platforms\[1\].name='a' is used twice"),
    ("platforms=[{name: Shop, format: rees46, events: x}]", r"platforms\[0\].name='Shop' must be lower-case"),
    ("platforms=[{name: a, format: rees46}]", r"platforms\[0\].events is empty"),
    ("ads=[{platform: a, format: criteo, path: x}]", r"ads\[0\].format='criteo' is unknown"),
    ("platforms=[{name: a, format: rees46, events: x, colour: red}]", r"unknown config key platforms\[0\].colour"),
    ("nonsense", r"must look like dotted.key=value"),
    ("teacher.num_heads=3", r"teacher.hidden_size=128 is not divisible by teacher.num_heads=3"),
    ("student.activation=tanh", r"student.activation='tanh' is unknown; use one of gelu, relu"),
    ("student.max_length=1", r"student.max_length=1 must be in \[2, 4096\]"),
    ("training.pretrain_sampled_classes=-1", r"training.pretrain_sampled_classes=-1 must be >= 0 \(0: the full"),
    ("training.transfer_mode=partial", r"training.transfer_mode='partial' is unknown; use one of head, full"),
    ("distill.alpha=1.5", r"distill.alpha=1.5 must be in \[0, 1\]"),
    ("distill.temperature=0", r"distill.temperature=0.0 must be in \(0, 100\], e.g. 2.0"),
    ("distill.temperature=.inf", r"distill.temperature=inf must be a finite number"),
    ("publish.valuable_min_spend=-5", r"publish.valuable_min_spend=-5.0 must be in \[0, 1e\+12\]"),
    ("publish.valuable_min_spend=.nan", r"publish.valuable_min_spend=nan must be a finite number"),
    ("training.learning_rate=-.inf", r"training.learning_rate=-inf must be a finite number"),
    ("evaluation.fusion_weight_step=0", r"evaluation.fusion_weight_step=0.0 must be in \(0, 0.5\]"),
])
def test_bad_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_training_platforms_must_be_configured_platforms() -> None:
    feeds = "platforms=[{name: shop, format: rees46, events: x}, {name: app, format: taobao, events: y}]"
    with pytest.raises(ConfigError, match=r"training.target_platform: 'market' is not a configured platform;"
                                          r" use one of shop, app"):
        load_config(overrides=[feeds, "training.target_platform=market"])
    with pytest.raises(ConfigError, match=r"training.target_platform='app' is also in training.source_platforms"):
        load_config(overrides=[feeds, "training.target_platform=app", "training.source_platforms=[app]"])
    cfg = load_config(overrides=[feeds, "training.target_platform=app", "training.source_platforms=[shop]"])
    assert (cfg.training.source_platforms, cfg.training.target_platform) == (["shop"], "app")


@pytest.mark.parametrize("overlays", [["conf/databricks.yml"], ["conf/databricks.yml", "conf/gpu.yml"]])
def test_shipped_overlays_load(overlays: list[str]) -> None:
    cfg = load_config(overlays)
    if "conf/gpu.yml" in overlays:
        assert (cfg.teacher.num_layers, cfg.teacher.hidden_size, cfg.training.use_gpu) == (12, 768, True)
        assert cfg.student.hidden_size < cfg.teacher.hidden_size


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file '.*nope.yml' not found"):
        load_config([tmp_path / "nope.yml"])
    bad = tmp_path / "bad.yml"
    bad.write_text("features: [unclosed\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML"):
        load_config([bad])
    twice = tmp_path / "twice.yml"
    twice.write_text("features:\n  lookback_days: 14\n  lookback_days: 21\n")
    with pytest.raises(ConfigError, match=r"twice.yml' is not valid YAML: key 'lookback_days' appears twice"
                                          r" in one mapping \(line 3\); keep one"):
        load_config([twice])


def test_every_field_has_help() -> None:
    keys = {k.name: k for k in describe()}
    assert keys["features.lookback_days"].help == "Feature window before the snapshot date, in days."
    assert keys["features.lookback_days"].default == "30" and keys["platforms[].format"].type == "str"
    assert all(k.help for k in keys.values())


def test_base_yml_is_the_dataclass_defaults() -> None:
    """conf/base.yml is rendered from the dataclasses (defaults and help), so the two cannot drift."""
    import dataclasses

    import yaml

    text = (repo_conf_dir() / "base.yml").read_text()
    assert text == defaults_yaml(), "conf/base.yml is stale: run `propensity config --defaults > conf/base.yml`"
    assert yaml.safe_load(text) == dataclasses.asdict(Config())


def test_mlflow_sees_no_absolute_path_or_secret(tmp_path: Path) -> None:
    from propensity.core.tracking import redacted_config

    cfg = load_config(overrides=[f"storage.root={tmp_path / 'state'}",
                                 f"platforms=[{{name: shop, format: rees46, events: '{tmp_path}/feeds/shop/*.csv'}}]",
                                 f"identity={tmp_path}/feeds/identity.csv",
                                 "mlflow.tracking_uri=postgresql://alice:s3cret@db.example.com/mlflow",
                                 "spark.conf={spark.hadoop.fs.s3a.secret.key: AKIA123}"])
    data = redacted_config(cfg)
    text = str(data)
    assert str(tmp_path) not in text and "s3cret" not in text and "AKIA123" not in text
    assert data["storage"]["root"] == "<storage.root>/."
    assert data["platforms"][0]["events"] == "<path>/*.csv" and data["identity"] == "<path>/identity.csv"
    assert data["mlflow"]["tracking_uri"] == "postgresql://<redacted>@db.example.com/mlflow"
    assert data["spark"]["conf"]["spark.hadoop.fs.s3a.secret.key"] == "<redacted>"
    assert data["features"] == dataclasses.asdict(cfg.features)
