"""Teacher training: settings, loss masking, MLM masking, head-mode freezing, and pretrain + finetune
end to end through TorchDistributor (2 local processes, gloo) and petastorm, with the MLflow registry.

Everything runs at a tiny size (1 layer, hidden 32, 16 tokens, a few hundred rows).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from pyspark.sql import SparkSession

from propensity.core.config import Config, TeacherSettings, TrainSettings
from propensity.core.datasets import SnapshotPlan
from propensity.core.errors import ConfigError
from propensity.core.schema import DOUBLE_FEATURES, EVENT_TYPES, FEATURE_COLUMNS, INT_FEATURES, TASKS
from propensity.core.sequence import FIELD_SIZES, FIELDS, SEQUENCE_COLUMN, TARGET_TYPE
from propensity.core.tables import ensure_table
from propensity.core.tracking import client, setup_mlflow
from propensity.models.encoder import EventEncoder, MaskedEventObjective, bert_config, mask_events, save_encoder
from propensity.models.network import (
    FeatureStats,
    PropensityModel,
    load_model,
    masked_bce,
    parameter_fingerprint,
    read_model_meta,
)
from propensity.models.registry import RegisteredModelVersion
from propensity.stages.training.loaders import DataSource
from propensity.stages.training.train_fn import (
    FinetuneJob,
    _propensity_model,
    finetune_fn,
    finetune_series_fn,
    job_from_json,
    job_to_json,
)
from propensity.stages.training.wide import LOGISTIC_C_GRID

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

PLATFORMS = ("shop", "app")
TINY = TeacherSettings(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_length=16, dropout=0.1,
                       head_hidden_size=8)


def tiny_encoder(dropout: float = 0.1) -> EventEncoder:
    """A new TINY event encoder (16 positions)."""
    return EventEncoder(bert_config(dataclasses.replace(TINY, dropout=dropout)))


def sequence(rng: np.random.Generator, platform: str, types: list[str], positions: int | None = None) -> np.ndarray:
    """``event_ids`` of a target on ``platform`` and events of ``types`` (random other fields), padded to
    ``positions`` when given."""
    plat = 1 + sum(map(ord, platform)) % (FIELD_SIZES["platform"] - 1)
    rows = [[TARGET_TYPE, plat, 0, 0, 0, 0, int(rng.integers(1, FIELD_SIZES["gap"])), 0]]
    for t in types:
        rows.append([EVENT_TYPES.index(t) + 1, plat, int(rng.integers(1, 6)), int(rng.integers(1, 6)),
                     int(rng.integers(1, FIELD_SIZES["price"])), int(rng.integers(1, 40)),
                     int(rng.integers(1, FIELD_SIZES["gap"])), int(rng.integers(1, FIELD_SIZES["age"]))])
    ids = np.asarray(rows, dtype=np.int32).reshape(-1)
    if positions is not None:
        ids = np.concatenate([ids, np.zeros(positions * FIELDS - len(ids), dtype=np.int32)])
    return ids


def tiny_training(**overrides: object) -> TrainSettings:
    values: dict[str, object] = {"pretrain_epochs": 1, "epochs": 2, "batch_size": 16, "num_processes": 2,
                                 "log_every_steps": 5, "max_train_rows": 0, "max_pretrain_rows": 0,
                                 "max_eval_rows": 0, "workers_count": 1, "learning_rate": 3e-3,
                                 "head_learning_rate": 1e-2}
    values.update(overrides)
    return TrainSettings(**values)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- fixture data


def _example(rng: np.random.Generator, snapshot: date, user: int, platform: str) -> dict[str, object]:
    """One training_examples row; buyers have cart and purchase events and purchase counts, so labels are
    learnable."""
    buyer = rng.random() < 0.4
    kinds = ["view"] * int(rng.integers(1, 4)) + (["cart", "purchase"] if buyer else [])
    kinds = [str(k) for k in rng.permutation(kinds)]
    text = " ".join(f"[{platform}] {k}" for k in kinds) + f" +1d <target:{platform}>"
    row: dict[str, object] = {**{c: 0 for c in INT_FEATURES}, **{c: 0.0 for c in DOUBLE_FEATURES}}
    row["n_view_30d"] = len(kinds)
    row["n_purchase_30d"] = int(buyer) * int(rng.integers(1, 3))
    row["days_since_last_event"] = float(rng.uniform(0, 10 if buyer else 30))
    has_ads = platform == "shop"
    row.update(snapshot_date=snapshot, user_id=f"u{user}", platform=platform, behavior_text=text,
               event_ids=sequence(rng, platform, kinds).tolist(),
               label_purchase=int(rng.random() < (0.8 if buyer else 0.1)),
               label_click=int(rng.random() < 0.3) if has_ads else None,
               label_churn=int(rng.random() < (0.1 if buyer else 0.6)))
    return row


def make_examples(spark: SparkSession, cfg: Config, users_per_date: int = 40, seed: int = 3) -> SnapshotPlan:
    """Write a small ``training_examples`` table (2 train dates, validation, test; 2 platforms) and its plan."""
    test = date(2026, 3, 1)
    plan = SnapshotPlan(train=[test - timedelta(days=21), test - timedelta(days=14)],
                        validation=test - timedelta(days=7), test=test)
    rng = np.random.default_rng(seed)
    rows = [_example(rng, d, u, p) for d in plan.all() for u in range(users_per_date) for p in PLATFORMS]
    table = ensure_table(spark, cfg, "training_examples")
    schema = spark.table(table).schema
    df = spark.createDataFrame([tuple(r[f.name] for f in schema.fields) for r in rows], schema)
    df.write.format("delta").mode("append").saveAsTable(table)
    return plan


def with_sizes(cfg: Config, training: TrainSettings) -> Config:
    """``cfg`` with the TINY teacher and ``training``."""
    return dataclasses.replace(cfg, teacher=TINY, training=training)


@dataclass(frozen=True)
class Trained:
    """A pretrained encoder and a fine-tuned, registered teacher on the fixture table."""

    cfg: Config
    plan: SnapshotPlan
    checkpoint: Path
    version: RegisteredModelVersion


@pytest.fixture(scope="module")
def trained(make_config: Callable[..., Config], spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
            ) -> Trained:
    """Pretrain, then fine-tune (both through TorchDistributor with 2 processes) on a fixture table."""
    from propensity.stages.training.finetune import run_finetune
    from propensity.stages.training.pretrain import run_pretrain

    root = tmp_path_factory.mktemp("teacher")
    cfg = make_config(overrides=[f"storage.root={root}", f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}"])
    plan = make_examples(spark, cfg)
    # fine-tune on shop, adapt to app
    cfg = with_sizes(cfg, tiny_training(target_platform="app", target_label_fraction=0.5))
    checkpoint = run_pretrain(spark, cfg)
    version = run_finetune(spark, cfg, plan=plan)
    return Trained(cfg, plan, checkpoint, version)


# ----------------------------------------------------------------------------------------------- unit tests


def test_settings_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"teacher\.hidden_size=30 is not divisible by teacher\.num_heads=4"):
        TeacherSettings(hidden_size=30, num_heads=4)
    with pytest.raises(ConfigError, match=r"training\.transfer_mode='frozen'"):
        TrainSettings(transfer_mode="frozen")
    with pytest.raises(ConfigError, match=r"training\.target_platform='app' is also in training\.source_platforms"):
        TrainSettings(source_platforms=["app"], target_platform="app")
    with pytest.raises(ConfigError, match=r"training\.num_processes=0"):
        TrainSettings(num_processes=0)


def test_masked_bce_leaves_null_labels_out() -> None:
    logits = torch.tensor([[0.5, -1.0, 2.0], [-0.3, 0.7, 0.1]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])  # the masked entries' labels must not matter
    known = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])

    def bce(z: float, y: float) -> float:
        p = 1 / (1 + math.exp(-z))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    expected = (bce(0.5, 1) + bce(2.0, 1) + bce(-0.3, 0)) / 3
    assert masked_bce(logits, labels, known).item() == pytest.approx(expected, rel=1e-6)
    flipped = labels.clone()
    flipped[0, 1], flipped[1, 2] = 1.0, 0.0
    assert masked_bce(logits, flipped, known).item() == pytest.approx(expected, rel=1e-6)
    assert masked_bce(logits, labels, torch.zeros_like(known)).item() == 0.0


def test_mask_events_never_masks_the_target_or_padding() -> None:
    rng = np.random.default_rng(0)
    ids = torch.tensor(np.stack([sequence(rng, "shop", ["view", "cart", "view", "purchase"], 8)
                                 for _ in range(64)])).long().view(64, 8, FIELDS)
    picked = mask_events(ids, 0.5, torch.Generator().manual_seed(1)).masked
    assert picked[:, [0, 5, 6, 7]].sum() == 0
    assert 0.3 < picked[:, 1:5].float().mean() < 0.7
    empty = torch.zeros((2, 8, FIELDS), dtype=torch.long)
    empty[:, 0, 0] = TARGET_TYPE
    assert mask_events(empty, 0.5).masked.sum() == 0
    one = mask_events(ids[:1], 0.0).masked
    assert one.sum() == 1  # at least one event per batch


def test_the_sampled_softmax_scores_each_true_item_among_the_drawn_ones_and_validation_the_full_one() -> None:
    rng = np.random.default_rng(3)
    ids = torch.tensor(np.stack([sequence(rng, "shop", ["view", "cart", "view", "purchase", "view"], 8)
                                 for _ in range(16)])).long().view(16, 8, FIELDS)
    masked = mask_events(ids, 0.5, torch.Generator().manual_seed(2)).masked
    torch.manual_seed(0)
    objective = MaskedEventObjective(tiny_encoder(dropout=0.0), sampled_classes=64)
    full = MaskedEventObjective(objective.encoder, sampled_classes=0)
    full.transform = objective.transform
    objective.eval()
    full.eval()
    with torch.no_grad():  # validation: the full softmax whatever the setting
        assert torch.equal(objective(ids, masked)[0], full(ids, masked)[0])

    table = objective.encoder.embedding.table("item").weight
    states = torch.randn(5, table.shape[1])
    truth = torch.tensor([7, 7, 300, 9000, 16383])
    objective.train()
    torch.manual_seed(5)
    logits, target = objective._scores(states, truth, objective.encoder.embedding.table("item"))
    torch.manual_seed(5)
    drawn = torch.randint(1, FIELD_SIZES["item"], (64,))
    candidates = torch.unique(torch.cat([truth, drawn]))
    assert logits.shape == (5, len(candidates)) and len(candidates) <= 5 + 64
    assert candidates[target].tolist() == truth.tolist()  # each row's target is its own item
    torch.testing.assert_close(logits, states @ table[candidates].detach().t())
    loss, _, _ = objective(ids, masked)
    loss.backward()
    assert table.grad is not None and table.grad.abs().sum() > 0
    small = objective.encoder.embedding.table("type")  # fewer ids than sampled_classes: all of them
    assert objective._scores(states[:, :], torch.tensor([1, 2, 1, 2, 1]), small)[0].shape == (5, small.weight.shape[0])


def _write_parquet(path: Path, columns: dict[str, np.ndarray], files: int = 2) -> str:
    path.mkdir(parents=True)
    table = pa.table({k: pa.array(list(v), type=pa.list_(pa.from_numpy_dtype(v.dtype))) for k, v in columns.items()})
    step = math.ceil(table.num_rows / files)
    for i in range(files):
        pq.write_table(table.slice(i * step, step), path / f"part-{i}.parquet")
    return str(path)


def _finetune_parquet(tmp_path: Path, n: int = 96, seed: int = 0, name: str = "rows",
                      informative: bool = False) -> str:
    """Rows for the train function; ``informative``: labels follow the first feature (plus noise)."""
    rng = np.random.default_rng(seed)
    ids = np.stack([sequence(rng, "shop", ["view", "cart"], 16) for _ in range(n)])
    features = rng.normal(size=(n, 2)).astype(np.float32)
    labels = rng.integers(0, 2, size=(n, 3)).astype(np.float32)
    if informative:
        labels = (features[:, :1] + rng.normal(size=(n, 3)) > 0).astype(np.float32)
    known = np.ones_like(labels)
    known[::2, 1] = 0.0
    return _write_parquet(tmp_path / name, {SEQUENCE_COLUMN: ids, "features": features, "labels": labels,
                                            "label_mask": known})


@pytest.mark.parametrize("mode", ["head", "full"])
def test_head_mode_freezes_the_encoder(tmp_path: Path, mode: str) -> None:
    """In-process run of the train function (no Spark): 'head' leaves every encoder weight bit-identical."""
    url = _finetune_parquet(tmp_path)
    torch.manual_seed(0)
    save_encoder(tiny_encoder(), tmp_path / "encoder")
    job = FinetuneJob(feature_columns=["a", "b"],
                      feature_stats={"columns": ["a", "b"], "mean": [0.0, 0.0], "std": [1.0, 1.0]},
                      head_hidden_size=8, train=tiny_training(transfer_mode=mode, num_processes=1), epochs=2,
                      # No validation: the best of the trained epochs is kept (with validation the untrained
                      # starting point is a candidate too, and may win on these few rows).
                      data=DataSource(rows=96, parquet_url=url), validation=None,
                      out_dir=str(tmp_path / "out"), transfer_mode=mode, init_encoder=str(tmp_path / "encoder"),
                      extra_meta={"max_length": 16})
    torch.manual_seed(job.train.seed)
    start = _propensity_model(job)  # the train function's starting point, with the same seed
    result = finetune_fn(job_from_json(job_to_json(job)))  # type: ignore[arg-type]

    trained = load_model(tmp_path / "out" / "model")
    same_encoder = all(torch.equal(a, b) for a, b in zip(start.encoder.state_dict().values(),
                                                         trained.encoder.state_dict().values(), strict=True))
    assert same_encoder is (mode == "head")
    assert all(not p.requires_grad for p in start.encoder.parameters()) is (mode == "head")
    assert (result["encoder_fingerprint_before"] == result["encoder_fingerprint_after"]) is (mode == "head")
    assert parameter_fingerprint(trained.encoder) == result["encoder_fingerprint_after"]
    for task in TASKS:
        assert not torch.equal(start.heads[task].deep[0].weight, trained.heads[task].deep[0].weight)
    assert [h["epoch"] for h in result["history"]] == [1, 2]


def test_heads_keep_their_regression_and_weigh_the_deep_part_on_validation(tmp_path: Path) -> None:
    """In-process run with a logistic start and validation: the wide part stays as fitted, each task's
    deep_scale is one of DEEP_SCALES, and the saved model scores validation exactly as the kept epoch did."""
    from propensity.models.metrics import roc_auc
    from propensity.stages.training.loaders import DataSource as Source
    from propensity.stages.training.train_fn import DEEP_SCALES, predict_parts

    url = _finetune_parquet(tmp_path, n=128, informative=True)
    val_url = _finetune_parquet(tmp_path, n=96, seed=1, name="val", informative=True)
    wide = {t: {"weight": [0.8 + i, -0.1], "bias": 0.05 * i} for i, t in enumerate(TASKS)}
    job = FinetuneJob(bert_config=tiny_encoder().config.to_dict(), feature_columns=["a", "b"],
                      feature_stats={"columns": ["a", "b"], "mean": [0.0, 0.0], "std": [1.0, 1.0]},
                      head_hidden_size=8, train=tiny_training(num_processes=1), epochs=2,
                      data=Source(rows=128, parquet_url=url), validation=Source(rows=96, parquet_url=val_url),
                      out_dir=str(tmp_path / "out"), wide_init=wide, extra_meta={"max_length": 16})
    result = finetune_fn(job)

    trained = load_model(tmp_path / "out" / "model")
    for task in TASKS:
        head = trained.heads[task]
        torch.testing.assert_close(head.wide.weight[0], torch.tensor(wide[task]["weight"]))
        assert head.wide.bias.item() == pytest.approx(wide[task]["bias"])
    assert set(result["deep_scales"]) == set(TASKS) and set(result["deep_scales"].values()) <= set(DEEP_SCALES)
    assert trained.deep_scales() == pytest.approx(result["deep_scales"])
    kept = next(h for h in result["history"] if h["epoch"] == result["best_epoch"])
    assert {t: kept[f"val_deep_scale_{t}"] for t in TASKS} == result["deep_scales"]
    with Source(rows=96, parquet_url=val_url).loader(0, 1, 32, 1, 1, shuffle=False) as batches:
        parts = predict_parts(trained, batches, torch.device("cpu"))
    scales = np.array([result["deep_scales"][t] for t in TASKS])
    logits = parts["wide"] + scales * parts["deep"]
    for i, task in enumerate(TASKS):
        rows = parts["label_mask"][:, i] > 0
        assert roc_auc(parts["labels"][rows, i], logits[rows, i]) == pytest.approx(kept[f"val_auc_{task}"], abs=1e-6)


def test_a_series_trains_each_job_into_its_own_folder_in_order(tmp_path: Path) -> None:
    """In-process: finetune_series_fn runs its jobs one after another and returns their summaries in
    order; each folder holds the model of its own job (a head-mode and a full-mode run of one encoder)."""
    url = _finetune_parquet(tmp_path)
    torch.manual_seed(0)
    save_encoder(tiny_encoder(), tmp_path / "encoder")
    jobs = [FinetuneJob(feature_columns=["a", "b"],
                        feature_stats={"columns": ["a", "b"], "mean": [0.0, 0.0], "std": [1.0, 1.0]},
                        head_hidden_size=8, train=tiny_training(transfer_mode=mode, num_processes=1), epochs=1,
                        data=DataSource(rows=96, parquet_url=url), out_dir=str(tmp_path / mode),
                        transfer_mode=mode, init_encoder=str(tmp_path / "encoder"), stage=f"run_{mode}",
                        extra_meta={"max_length": 16}) for mode in ("head", "full")]
    results = finetune_series_fn(jobs)["results"]

    assert [r["stage"] for r in results] == ["run_head", "run_full"]
    assert [r["out_dir"] for r in results] == [str(tmp_path / "head"), str(tmp_path / "full")]
    for result, mode in zip(results, ("head", "full"), strict=True):
        saved = load_model(tmp_path / mode / "model")
        assert read_model_meta(tmp_path / mode / "model")["transfer_mode"] == mode
        assert parameter_fingerprint(saved.encoder) == result["encoder_fingerprint_after"]
        assert (result["encoder_fingerprint_after"] == result["encoder_fingerprint_before"]) is (mode == "head")
    with pytest.raises(ValueError, match="at least one job"):
        finetune_series_fn([])


def test_a_series_refuses_a_run_that_continues_from_another_of_it(spark: SparkSession, tmp_path: Path,
                                                                   make_config: Callable[..., Config]) -> None:
    from propensity.stages.training.fit import FitSpec, TrainingRows, fit_series
    from propensity.stages.training.start import ContinueFrom, NewEncoder

    cfg = make_config()
    rows = TrainingRows(spark.range(1), None)
    first = FitSpec("source", TINY, NewEncoder(TINY), tmp_path / "source")
    continued = ContinueFrom(tmp_path / "source" / "model", FeatureStats([], [], []))
    second = FitSpec("adapt", TINY, continued, tmp_path / "adapt")
    with pytest.raises(ValueError, match="run 'adapt' continues from another run of the same series"):
        fit_series(spark, cfg, [(rows, first), (rows, second)])
    with pytest.raises(ValueError, match="at least one run"):
        fit_series(spark, cfg, [])
    assert not (tmp_path / "source").exists()  # refused before anything was written


def test_transfer_arms_are_compared_with_source_only_and_the_largest_target_only_on_the_same_rows() -> None:
    from sklearn.metrics import roc_auc_score

    from propensity.stages.training.transfer import compare_arms, format_transfer

    rng = np.random.default_rng(3)
    rows = pd.DataFrame({"label_purchase": (rng.random(300) < 0.3).astype(float), "label_click": np.nan,
                         "label_churn": (rng.random(300) < 0.5).astype(float)})

    def scores(noise: float) -> pd.DataFrame:
        return pd.DataFrame({t: rows[f"label_{t}"].fillna(0) + rng.normal(0, noise, len(rows)) for t in TASKS})

    keys = [("source_only", 0.0), ("transfer", 0.5), ("target_only", 0.5), ("transfer", 1.0), ("target_only", 1.0)]
    probs = {key: scores(noise) for key, noise in zip(keys, (1.0, 0.8, 1.5, 0.5, 1.2), strict=True)}
    result = compare_arms(probs, rows, rounds=100, seed=1).set_index(["arm", "fraction", "task"])

    def auc(key: tuple[str, float], task: str) -> float:
        return float(roc_auc_score(rows[f"label_{task}"], probs[key][task]))

    for arm, fraction in keys:
        for task in ("purchase", "churn"):
            r = result.loc[(arm, fraction, task)]
            assert r["auc"] == pytest.approx(auc((arm, fraction), task))
            assert r["vs_source_only"] == pytest.approx(r["auc"] - auc(("source_only", 0.0), task))
            assert r["vs_target_only_largest"] == pytest.approx(r["auc"] - auc(("target_only", 1.0), task))
            assert r["vs_source_only_low"] <= r["vs_source_only"] <= r["vs_source_only_high"]
            assert (r["labelled"], r["positives"]) == (300, int(rows[f"label_{task}"].sum()))
    assert (result.loc[("source_only", 0.0, "purchase"), ["vs_source_only_low", "vs_source_only_high"]] == 0).all()
    assert result.loc[("transfer", 1.0, "churn"), "vs_target_only_largest_low"] > 0  # noise 0.5 vs 1.2: clear
    assert result.xs("click", level="task")[["auc", "vs_source_only", "vs_source_only_low"]].isna().all().all()

    printed = format_transfer(result.reset_index())
    assert "transfer minus source-only (paired bootstrap 95% interval):" in printed
    purchase = result.loc[("transfer", 0.5, "purchase")]
    assert f"{purchase['vs_target_only_largest']:+.4f} [{purchase['vs_target_only_largest_low']:+.4f}," in printed
    assert f"purchase 300 / {int(rows['label_purchase'].sum())}, click 0 / 0" in printed


def test_logistic_start_chooses_its_regularisation_on_validation_log_loss() -> None:
    from propensity.models.metrics import log_loss
    from propensity.models.network import fit_logistic
    from propensity.stages.training.wide import choose_logistic

    rng = np.random.default_rng(4)

    def rows(n: int, noise_features: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = rng.normal(size=(n, 2 + noise_features))
        y = (x[:, 0] - x[:, 1] + rng.normal(size=n) > 0).astype(float)
        return torch.tensor(x), torch.tensor(y)

    # few rows, many useless features: a strongly regularised fit generalises better
    x, y = rows(60, 40)
    vx, vy = rows(3000, 40)
    few = choose_logistic(x, y, vx, vy)
    losses = {}
    for c in LOGISTIC_C_GRID:
        w, b = fit_logistic(x, y, c=c)
        losses[c] = log_loss(vy.numpy(), torch.sigmoid(vx @ torch.tensor(w, dtype=torch.float64) + b).numpy())
    assert few["c"] == min(losses, key=losses.__getitem__) and few["c"] < 1.0
    assert few["val_log_loss"] == pytest.approx(losses[few["c"]])
    weight, bias = fit_logistic(x, y, c=few["c"])
    assert few["weight"] == pytest.approx(weight) and few["bias"] == pytest.approx(bias)
    # plenty of rows, only useful features: little regularisation
    x, y = rows(5000, 0)
    vx, vy = rows(3000, 0)
    assert choose_logistic(x, y, vx, vy)["c"] >= 0.1
    assert choose_logistic(x, y, None, None)["c"] == 1.0


def test_choose_deep_scales_per_task() -> None:
    from propensity.stages.training.train_fn import choose_deep_scales

    rng = np.random.default_rng(3)
    n = 4000
    s1, s2 = rng.normal(size=n), rng.normal(size=n)
    y = (s1 + s2 + 0.3 * rng.normal(size=n) > 0).astype(float)
    wide = np.stack([s1 + s2, rng.normal(size=n), s1, s1], axis=1)
    # task 0: the deep part is noise; task 1: it carries all the signal; task 2: the best mix is
    # s1 + s2 = wide + 0.25 * deep; task 3: one class only, so no AUC (keeps 1)
    deep = np.stack([3.0 * rng.normal(size=n), s1 + s2, 4.0 * s2, s2], axis=1)
    labels = np.stack([y, y, y, np.zeros(n)], axis=1)
    scales = choose_deep_scales(wide, deep, labels, np.ones_like(labels))
    assert scales[0] == 0.0 and scales[1] == 1.0 and scales[3] == 1.0
    assert scales[2] == pytest.approx(0.25, abs=0.06)


def _ids(n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.tensor(np.stack([sequence(rng, "shop", ["view"] * int(rng.integers(1, 10)), 16) for _ in range(n)]))


def test_deep_scale_weighs_the_deep_part_and_survives_save_and_load(tmp_path: Path) -> None:
    from propensity.models.network import save_model

    torch.manual_seed(0)
    model = PropensityModel(tiny_encoder(0.0), ["a", "b"], 8).eval()
    ids, feats = _ids(4), torch.randn(4, 2)
    wide, deep = model.forward_parts(ids, feats)
    model.set_deep_scales({"purchase": 0.0, "churn": 0.3})
    logits = model(ids, feats)
    torch.testing.assert_close(logits, wide + torch.tensor([0.0, 1.0, 0.3]) * deep)

    save_model(model, tmp_path / "new")
    loaded = load_model(tmp_path / "new")
    assert loaded.deep_scales() == pytest.approx({"purchase": 0.0, "click": 1.0, "churn": 0.3})
    torch.testing.assert_close(loaded(ids, feats), logits)


def test_the_pyfunc_scores_rows_of_any_length_as_one_uncut_pass_does(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Scoring sorts rows by length and cuts each pass's padding: every row keeps its own probabilities."""
    from propensity.models import encoder as encoder_module
    from propensity.models.network import save_model
    from propensity.models.pyfunc import PropensityPyfunc
    from propensity.models.sequence import FlatSequences

    torch.manual_seed(0)
    save_model(PropensityModel(tiny_encoder(0.0), ["a"], 8).eval(), tmp_path / "model")
    pyfunc = PropensityPyfunc().load(tmp_path / "model")
    rng = np.random.default_rng(2)
    rows = [sequence(rng, "shop", ["view"] * n) for n in (12, 1, 30, 0, 4, 7)] + [None]
    features = pd.DataFrame({"a": rng.normal(size=len(rows))})
    batched = pyfunc.score(FlatSequences.from_rows(rows), features, batch_rows=3)
    alone = np.concatenate([pyfunc.score(FlatSequences.from_rows(rows[i:i + 1]), features.iloc[i:i + 1], 1)
                            for i in range(len(rows))])
    monkeypatch.setattr(encoder_module, "trim_padding", lambda ids: ids)
    uncut = pyfunc.score(FlatSequences.from_rows(rows), features, batch_rows=len(rows))
    np.testing.assert_allclose(batched, uncut, atol=1e-6)
    np.testing.assert_allclose(alone, uncut, atol=1e-6)
    assert len(np.unique(uncut[:, 0].round(6))) == len(rows)  # the rows differ: order mix-ups would show


def test_the_sequence_only_model_needs_no_features() -> None:
    torch.manual_seed(0)
    model = PropensityModel(tiny_encoder(0.0), [], 8).eval()
    with torch.no_grad():
        logits = model(_ids(3, seed=1), torch.zeros((3, 0)))
    assert logits.shape == (3, len(TASKS)) and all(model._head(t).wide is None for t in TASKS)


def test_feature_normalizer_uses_saved_statistics() -> None:
    model = PropensityModel(tiny_encoder(0.0), ["a", "b"], 8)
    model.normalizer.set_stats(FeatureStats(["a", "b"], [math.log1p(3.0), 0.0], [2.0, 0.0]))
    z = model.normalizer(torch.tensor([[3.0, 5.0], [float("nan"), 0.0]]))
    assert z[0, 0].item() == pytest.approx(0.0, abs=1e-6)
    assert z[0, 1].item() == pytest.approx(math.log1p(5.0), rel=1e-6)  # std 0 is treated as 1
    assert z[1, 0].item() == 0.0


# ----------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_pretrain_writes_the_encoder_and_its_curve(trained: Trained) -> None:
    from propensity.stages.training.start import latest_pretrained

    cfg, checkpoint = trained.cfg, trained.checkpoint
    assert (checkpoint / "encoder" / "encoder.json").is_file() and (checkpoint / "encoder" / "encoder.pt").is_file()
    assert latest_pretrained(cfg) == checkpoint
    registry = client(cfg)
    run = registry.get_run(checkpoint.name)
    assert run.data.params["teacher.num_layers"] == "1"
    assert "pretrain_train_loss" in run.data.metrics and "pretrain_val_loss" in run.data.metrics
    curve = registry.get_metric_history(run.info.run_id, "pretrain_val_loss")
    assert len(curve) == int(run.data.metrics["pretrain_epochs_run"]) >= 1
    assert {a.path for a in registry.list_artifacts(run.info.run_id)} >= {"config"}


@pytest.mark.slow
def test_finetune_registers_a_model_that_predicts_the_same_after_reload(trained: Trained,
                                                                        spark: SparkSession) -> None:
    from propensity.models.pyfunc import PropensityPyfunc, input_example

    cfg, version = trained.cfg, trained.version
    assert version.name == "propensity_teacher"
    run = client(cfg).get_run(version.run_id)
    history = client(cfg).get_metric_history(version.run_id, "finetune_val_auc_purchase")
    assert [m.step for m in history] == [0, 1, 2]
    assert "finetune_train_loss" in run.data.metrics

    rows = spark.table(cfg.table("training_examples")).limit(40).toPandas()
    model_dir = cfg.root / "checkpoints" / "teacher" / "finetune" / version.run_id / "adapt" / "model"
    before = PropensityPyfunc().load(model_dir).predict(None, rows)
    setup_mlflow(cfg)
    loaded = mlflow.pyfunc.load_model(version.model_uri)
    example = rows[[SEQUENCE_COLUMN, *FEATURE_COLUMNS]].astype({c: "float64" for c in FEATURE_COLUMNS})
    example[SEQUENCE_COLUMN] = [np.asarray(v, dtype=np.int32) for v in example[SEQUENCE_COLUMN]]
    after = loaded.predict(example)
    assert list(after.columns) == list(TASKS)
    pd.testing.assert_frame_equal(after.reset_index(drop=True), before.reset_index(drop=True))
    assert ((after.to_numpy() > 0) & (after.to_numpy() < 1)).all()

    # the example MLflow keeps with the model is made up: no training row's events or features
    logged = json.loads((Path(mlflow.artifacts.download_artifacts(version.model_uri)) / "input_example.json")
                        .read_text())
    example_rows = pd.DataFrame(logged["data"], columns=logged["columns"])
    sequences = {tuple(v) for v in spark.table(cfg.table("training_examples")).toPandas()[SEQUENCE_COLUMN]}
    assert len(example_rows) > 0 and not {tuple(v) for v in example_rows[SEQUENCE_COLUMN]} & sequences
    assert (example_rows[list(FEATURE_COLUMNS)].to_numpy() == 0).all()
    assert loaded.predict(input_example(rows.head(3), list(FEATURE_COLUMNS))).shape == (3, len(TASKS))


@pytest.mark.slow
def test_the_sequence_only_teacher_trains_in_the_teachers_launch_and_logs_to_its_own_run(trained: Trained) -> None:
    from propensity.models.registry import SEQUENCE_ONLY_MODEL_NAME

    cfg, teacher = trained.cfg, trained.version
    tracking = client(cfg)
    (ablation,) = tracking.search_model_versions(f"name = '{SEQUENCE_ONLY_MODEL_NAME}'")
    run = tracking.get_run(ablation.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["variant"] == "sequence_only"
    assert [m.step for m in tracking.get_metric_history(run.info.run_id, "sequence_only_val_auc_purchase")] == [0, 1, 2]
    assert not any(k.startswith("finetune_") for k in run.data.metrics)
    assert not any(k.startswith("sequence_only") for k in tracking.get_run(teacher.run_id).data.metrics)
    model_dir = cfg.root / "checkpoints" / "teacher" / "sequence_only" / run.info.run_id / "model"
    assert read_model_meta(model_dir)["stage"] == "sequence_only"
    assert load_model(model_dir).feature_columns == []
    assert run.data.params["sequence_only.best_epoch"] in {"0", "1", "2"}


def test_an_ablation_run_is_marked_failed_when_the_teacher_fails(make_config: Callable[..., Config],
                                                                  tmp_path: Path) -> None:
    from propensity.stages.training.finetune import _ablation_run

    cfg = make_config(overrides=[f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
                                 f"storage.root={tmp_path}"])
    experiment_id = setup_mlflow(cfg)
    with pytest.raises(RuntimeError, match="teacher failed"), _ablation_run(cfg, experiment_id) as run_id:
        assert run_id is not None and client(cfg).get_run(run_id).info.status == "RUNNING"
        raise RuntimeError("teacher failed")
    assert client(cfg).get_run(run_id).info.status == "FAILED"
    off = dataclasses.replace(cfg, evaluation=dataclasses.replace(cfg.evaluation, ablations=False))
    with _ablation_run(off, experiment_id) as none:
        assert none is None


@pytest.mark.slow
def test_finetune_adapts_to_the_target_platform(trained: Trained) -> None:
    cfg, version = trained.cfg, trained.version
    run = client(cfg).get_run(version.run_id)
    assert run.data.params["finetune.sources"] == "shop"
    assert "adapt_val_auc_purchase" in run.data.metrics and "finetune_val_auc_purchase" in run.data.metrics
    adapted = cfg.root / "checkpoints" / "teacher" / "finetune" / version.run_id / "adapt" / "model"
    assert (adapted / "model.pt").is_file()
    kept = read_model_meta(adapted)
    assert run.data.params["adapt.best_epoch"] == str(kept["best_epoch"])
    assert {t: float(run.data.params[f"adapt.deep_scale.{t}"]) for t in TASKS} == kept["deep_scales"]
    assert load_model(adapted).deep_scales() == pytest.approx(kept["deep_scales"])
    assert float(run.data.params["finetune.wide_c.purchase"]) in LOGISTIC_C_GRID  # the source step's start
    assert not any(k.startswith("adapt.wide_c") for k in run.data.params)  # continued, not restarted


@pytest.mark.slow
def test_the_transfer_experiment_trains_every_arm_in_one_launch(trained: Trained, spark: SparkSession,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Source model first, then both arms of every fraction in a single TorchDistributor launch; each arm's
    model starts where its arm says and its test AUCs are the ones logged to MLflow."""
    from propensity.stages.training import fit
    from propensity.stages.training.transfer import run_transfer_experiment

    launches: list[str] = []
    real = fit.run_distributed

    def counted(fn: Any, job: Any, train: TrainSettings) -> dict[str, Any]:
        launches.append(fn.__name__)
        return real(fn, job, train)

    monkeypatch.setattr(fit, "run_distributed", counted)
    cfg = with_sizes(trained.cfg, tiny_training(target_platform="app", transfer_mode="head", epochs=1))
    result = run_transfer_experiment(spark, cfg, fractions=(0.5, 1.0), plan=trained.plan)

    assert launches == ["finetune_fn", "finetune_series_fn"]
    arms = {(r.arm, r.fraction) for r in result.itertuples()}
    assert arms == {("source_only", 0.0), ("transfer", 0.5), ("target_only", 0.5), ("transfer", 1.0),
                    ("target_only", 1.0)}
    assert all(tasks == sorted(TASKS) for tasks in result.groupby(["arm", "fraction"])["task"].apply(sorted))
    assert set(result["test_rows"]) == {40}  # the fixture's app users on the test date
    source = result[result["arm"] == "source_only"].set_index("task")["auc"]
    for r in result[result["task"] != "click"].itertuples():
        assert r.vs_source_only == pytest.approx(r.auc - source[r.task])
    known = result[result["task"] != "click"]  # no click labels on app
    assert known["auc"].between(0.0, 1.0).all() and result[result["task"] == "click"]["auc"].isna().all()
    out = cfg.root / "checkpoints" / "teacher" / "transfer"
    (run_dir,) = [d for d in out.iterdir() if d.is_dir()]
    for fraction in ("0.5", "1"):
        assert read_model_meta(run_dir / f"transfer_{fraction}" / "model")["encoder_source"] == str(
            run_dir / "source" / "model")
        assert read_model_meta(run_dir / f"target_only_{fraction}" / "model")["encoder_source"].endswith("encoder")
    (run,) = client(cfg).search_runs([client(cfg).get_experiment_by_name(cfg.mlflow.experiment).experiment_id],
                                     "tags.stage = 'transfer'")
    for r in known.itertuples():
        assert run.data.metrics[f"{r.arm}.{r.task}.auc.f{r.fraction:g}"] == pytest.approx(r.auc)
        assert run.data.metrics[f"{r.arm}.{r.task}.vs_source_only.f{r.fraction:g}"] == pytest.approx(
            r.vs_source_only)
        assert run.data.metrics[f"{r.arm}.{r.task}.vs_target_only_largest_high.f{r.fraction:g}"] == pytest.approx(
            r.vs_target_only_largest_high)


@pytest.mark.slow
def test_finetune_head_mode_twice_adds_versions(trained: Trained, spark: SparkSession) -> None:
    """A second run (head mode, 1 process) adds a version and leaves the first one in place."""
    from propensity.stages.training.finetune import run_finetune

    cfg, first = trained.cfg, trained.version
    head = with_sizes(cfg, tiny_training(transfer_mode="head", epochs=1, num_processes=1))
    second = run_finetune(spark, head, plan=trained.plan)
    assert int(second.version) == int(first.version) + 1
    versions = client(cfg).search_model_versions("name = 'propensity_teacher'")
    assert sorted(int(v.version) for v in versions) == [int(first.version), int(second.version)]
    assert client(cfg).get_run(second.run_id).data.params["training.transfer_mode"] == "head"


@pytest.mark.slow
def test_spark_scoring_equals_the_pyfunc_and_metric_rows_cover_every_group(trained: Trained,
                                                                           spark: SparkSession) -> None:
    """The one Spark scoring path (evaluate, distill, score) gives the registered pyfunc's exact probabilities."""
    from propensity.core.datasets import split_rows
    from propensity.stages.evaluation.evaluate import score_model
    from propensity.stages.evaluation.results import model_metric_rows
    from propensity.stages.evaluation.segments import COLD_START, cold_start

    cfg, version = trained.cfg, trained.version
    rows = split_rows(spark, cfg, trained.plan).withColumn(COLD_START, cold_start())
    scored = score_model(spark, cfg, version, rows).sort_values(["split", "platform", "user_id"])
    frame = rows.toPandas().sort_values(["split", "platform", "user_id"])
    setup_mlflow(cfg)
    example = frame[[SEQUENCE_COLUMN, *FEATURE_COLUMNS]].astype({c: "float64" for c in FEATURE_COLUMNS})
    example[SEQUENCE_COLUMN] = [np.asarray(v, dtype=np.int32) for v in example[SEQUENCE_COLUMN]]
    expected = mlflow.pyfunc.load_model(version.model_uri).predict(example)
    for task in TASKS:
        np.testing.assert_allclose(scored[f"{task}_score"].to_numpy(), expected[task].to_numpy(), rtol=0, atol=1e-7)
    result = pd.DataFrame(model_metric_rows("propensity_teacher", version.version, version.model_uri, scored))
    assert set(result["split"]) == {"validation", "test"}
    assert set(result["platform"]) == {"shop", "app", "all"}
    # click labels exist on 'shop' only: no click row for 'app'
    assert not ((result["task"] == "click") & (result["platform"] == "app")).any()
    assert result["auc"].between(0, 1).all()


def test_init_checkpoint_is_checked_and_starts_the_encoder(tmp_path: Path) -> None:
    from transformers import BertModel

    from propensity.models.encoder import new_encoder_from
    from propensity.stages.training.start import resolve_checkpoint

    hf = BertModel(tiny_encoder(0.0).config, add_pooling_layer=False)
    hf.save_pretrained(str(tmp_path / "hf"))
    assert resolve_checkpoint(str(tmp_path / "hf"), 16) == tmp_path / "hf"
    started = new_encoder_from(tiny_encoder().config, tmp_path / "hf")
    for name, weight in hf.state_dict().items():
        torch.testing.assert_close(started.body.state_dict()[name], weight)
    with pytest.raises(ConfigError, match=r"teacher\.max_length=32 exceeds the 16 positions"):
        resolve_checkpoint(str(tmp_path / "hf"), 32)
    with pytest.raises(ConfigError, match=r"training\.init_checkpoint=.* is not a Hugging Face model folder"):
        resolve_checkpoint(str(tmp_path), 16)


def test_fit_logistic_matches_sklearn_and_heads_start_from_it() -> None:
    from sklearn.linear_model import LogisticRegression

    from propensity.models.network import fit_logistic

    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 3))
    y = (x @ np.array([1.5, -2.0, 0.0]) + rng.normal(size=400) > 0.3).astype(float)
    weight, bias = fit_logistic(torch.tensor(x), torch.tensor(y))
    reference = LogisticRegression(C=1.0, tol=1e-10, max_iter=1000).fit(x, y)
    np.testing.assert_allclose(weight, reference.coef_[0], atol=1e-4)
    assert bias == pytest.approx(reference.intercept_[0], abs=1e-4)

    model = PropensityModel(tiny_encoder(0.0), ["a", "b", "c"], 8).eval()
    model.start_from_logistic({t: {"weight": weight, "bias": bias} for t in TASKS})
    logits = model(_ids(6), torch.tensor(x[:6], dtype=torch.float32))
    z = model.normalizer(torch.tensor(x[:6], dtype=torch.float32)).double()
    expected = z @ torch.tensor(weight, dtype=torch.float64) + bias
    for i in range(len(TASKS)):
        torch.testing.assert_close(logits[:, i].double(), expected, atol=1e-5, rtol=1e-5)


def test_the_logged_example_passes_as_a_serving_request(tmp_path: Path) -> None:
    """A serving endpoint gets JSON (integers are int64): the logged example, sent as JSON, must pass the
    signature; the rows Spark scores (``ARRAY<INT>``, int32) must too, with the same probabilities."""
    from propensity.models.network import save_model
    from propensity.models.pyfunc import input_example, log_pyfunc_model

    model = PropensityModel(tiny_encoder(), ["a", "b"], 8).eval()
    model_dir = save_model(model, tmp_path / "model", extra={"max_length": 16})
    stats = tmp_path / "feature_stats.json"
    stats.write_text(FeatureStats(columns=["a", "b"], mean=[0.0, 0.0], std=[1.0, 1.0]).to_json())
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({SEQUENCE_COLUMN: [sequence(rng, "shop", ["view", "cart"], 16) for _ in range(3)],
                         "a": [1.0, 2.0, 3.0], "b": [0.0, 1.0, 0.5]})
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        # an experiment of this store (not one an earlier test chose) with its artifacts under tmp_path:
        # a sqlite store's default artifact root is ./mlruns in the working directory
        mlflow.set_experiment(experiment_id=mlflow.create_experiment(
            "serving_check", artifact_location=(tmp_path / "artifacts").as_uri()))
        with mlflow.start_run():
            version = log_pyfunc_model(model_dir, stats, input_example(rows, ["a", "b"]), "serving_check")
        check_serving(version.model_uri, rows, model_dir)
    finally:
        mlflow.set_tracking_uri(previous)


def check_serving(model_uri: str, rows: pd.DataFrame, model_dir: Path) -> None:
    """The logged example as JSON passes the signature; Spark-typed rows score the same by every path."""
    from mlflow.models import convert_input_example_to_serving_input, validate_serving_input

    from propensity.models.pyfunc import PropensityPyfunc
    from propensity.models.spark_scoring import _batch_scorer

    logged = mlflow.pyfunc.load_model(model_uri)
    assert str(logged.metadata.get_input_schema().input_types_dict()[SEQUENCE_COLUMN]) == "Array(long)"
    example = json.loads((Path(mlflow.artifacts.download_artifacts(model_uri)) / "input_example.json")
                         .read_text())
    served = validate_serving_input(model_uri, convert_input_example_to_serving_input(
        pd.DataFrame(example["data"], columns=example["columns"])))
    assert served.shape == (3, len(TASKS))

    assert rows[SEQUENCE_COLUMN][0].dtype == np.int32  # as Spark hands ARRAY<INT> to pandas
    expected = PropensityPyfunc().load(model_dir).predict(None, rows)
    pd.testing.assert_frame_equal(logged.predict(rows), expected)
    # the scoring job calls our own models on the Arrow batch, without MLflow's per-row signature
    # conversion: the same numbers (to float32 rounding of a different matrix blocking) whatever the rows per
    # forward pass
    batch = pa.RecordBatch.from_pandas(rows, preserve_index=False)
    direct = _batch_scorer(logged, list(rows.columns))
    for rows_per_call in (1, 2, 3):
        np.testing.assert_allclose(direct(batch, rows_per_call), expected.to_numpy(), rtol=0, atol=1e-6)


def test_a_pyfunc_of_another_kind_scores_through_mlflow_in_chunks() -> None:
    """A model that is not ours gets pandas frames of at most the asked rows, its numbers as doubles."""
    from mlflow.exceptions import MlflowException

    from propensity.models.spark_scoring import _batch_scorer

    calls: list[pd.DataFrame] = []

    class Foreign:
        def unwrap_python_model(self) -> None:
            raise MlflowException("not a python model")

        def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
            calls.append(frame)
            ids = frame[SEQUENCE_COLUMN].map(lambda v: np.nan if v is None else len(v)).to_numpy()
            return pd.DataFrame({"purchase": frame["a"], "click": ids, "churn": frame["a"] / 10})

    batch = pa.RecordBatch.from_pydict({SEQUENCE_COLUMN: [[1, 2], [3], [4, 5, 6], None, []],
                                        "a": pa.array([1, 2, None, 4, 5], pa.int32())})
    scores = _batch_scorer(Foreign(), [SEQUENCE_COLUMN, "a"])(batch, 2)
    assert [len(c) for c in calls] == [2, 2, 1]
    assert all(c["a"].dtype == np.float64 for c in calls)
    expected = [[1, 2, 0.1], [2, 1, 0.2], [np.nan, 3, np.nan], [4, np.nan, 0.4], [5, 0, 0.5]]
    np.testing.assert_allclose(scores, expected)
