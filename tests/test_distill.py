"""Student, fusion, baselines and gates: the distillation loss by hand, fusion weight selection,
gate logic against a real registry, and distil + evaluate end to end at a tiny size."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from pyspark.sql import SparkSession

from propensity.core.config import Config
from propensity.core.datasets import SnapshotPlan
from propensity.core.schema import FEATURE_COLUMNS, TASKS
from propensity.core.sequence import SEQUENCE_COLUMN
from propensity.core.tracking import client, setup_mlflow
from propensity.models.network import distillation_loss
from propensity.models.pyfunc import fuse
from propensity.models.registry import CHAMPION_ALIAS, GATE_FAILURE_TAG, RegisteredModelVersion
from propensity.stages.evaluation.evaluate import EvaluationReport
from propensity.stages.evaluation.fusion import choose_weights, weight_grid
from propensity.stages.evaluation.gates import Gate, apply_gates, check_gates

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _bce(z: float, y: float) -> float:
    p = 1.0 / (1.0 + math.exp(-z))
    return -(y * math.log(p) + (1.0 - y) * math.log(1.0 - p))


@pytest.mark.parametrize(("alpha", "temperature"), [(1.0, 1.0), (0.0, 1.0), (0.0, 4.0), (0.3, 2.0), (0.5, 0.5)])
def test_distillation_loss_matches_a_hand_computation(alpha: float, temperature: float) -> None:
    student = [[0.4, -1.2, 2.0], [-0.7, 0.1, 0.0]]
    teacher = [[1.5, -0.3, 0.8], [-2.0, 0.6, -1.1]]
    labels = [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]
    known = [[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]  # two NULL labels are left out
    expected_terms = []
    for i in range(2):
        for j in range(3):
            if not known[i][j]:
                continue
            soft_target = 1.0 / (1.0 + math.exp(-teacher[i][j] / temperature))
            soft = soft_target * _bce(student[i][j] / temperature, 1.0) + (1 - soft_target) * _bce(
                student[i][j] / temperature, 0.0)
            expected_terms.append(alpha * _bce(student[i][j], labels[i][j]) + (1 - alpha) * temperature**2 * soft)
    loss = distillation_loss(torch.tensor(student), torch.tensor(labels), torch.tensor(known), torch.tensor(teacher),
                             alpha, temperature)
    assert loss.item() == pytest.approx(sum(expected_terms) / len(expected_terms), rel=1e-5)


def test_distillation_loss_edges() -> None:
    z = torch.tensor([[0.3, -0.2, 1.0]], requires_grad=True)
    y = torch.tensor([[1.0, 0.0, 0.0]])
    nothing_known = distillation_loss(z, y, torch.zeros_like(y), torch.zeros_like(y), 0.5, 2.0)
    assert nothing_known.item() == 0.0
    nothing_known.backward()  # still differentiable
    # alpha = 1 is plain masked BCE; the teacher does not matter.
    a = distillation_loss(z, y, torch.ones_like(y), torch.tensor([[9.0, 9.0, 9.0]]), 1.0, 3.0)
    b = distillation_loss(z, y, torch.ones_like(y), torch.tensor([[-9.0, -9.0, -9.0]]), 1.0, 3.0)
    assert a.item() == pytest.approx(b.item())
    with pytest.raises(ValueError, match=r"alpha=1\.5 must be in \[0, 1\]"):
        distillation_loss(z, y, y, y, 1.5, 1.0)
    with pytest.raises(ValueError, match="temperature=0"):
        distillation_loss(z, y, y, y, 0.5, 0.0)


def test_fusion_weight_is_chosen_on_validation() -> None:
    assert weight_grid(0.25) == [0.0, 0.25, 0.5, 0.75, 1.0]
    labels = np.array([0, 0, 0, 1, 1, 1], dtype=float)
    good = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])  # separates perfectly
    noisy = np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.3])  # anti-correlated
    # purchase: only the teacher separates; every w reaching AUC 1 ties and the smallest wins.
    # click: only the student separates (w=0). churn: both separate, so w=0 already reaches AUC 1.
    weights = choose_weights({t: labels for t in TASKS},
                             {"purchase": good, "click": noisy, "churn": good},
                             {"purchase": noisy, "click": good, "churn": good}, 0.25)
    fused_purchase = weights["purchase"] * good + (1 - weights["purchase"]) * noisy
    assert np.all(np.diff(np.sort(fused_purchase[labels == 1])) >= 0)
    assert fused_purchase[labels == 1].min() > fused_purchase[labels == 0].max()  # AUC 1
    # the smallest grid weight reaching AUC 1 (0.75 * good + 0.25 * noisy separates, 0.5 does not)
    assert weights == {"purchase": 0.75, "click": 0.0, "churn": 0.0}
    teacher = pd.DataFrame({t: [0.2, 0.8] for t in TASKS})
    student = pd.DataFrame({t: [0.6, 0.4] for t in TASKS})
    fused = fuse(teacher, student, {"purchase": 1.0, "click": 0.0, "churn": 0.25})
    np.testing.assert_allclose(fused["purchase"], [0.2, 0.8])
    np.testing.assert_allclose(fused["click"], [0.6, 0.4])
    np.testing.assert_allclose(fused["churn"], [0.5, 0.5])


def test_check_gates_compares_with_the_best_baseline_per_task() -> None:
    auc = {"student": {"purchase": 0.80, "click": 0.70, "churn": 0.90},
           "baseline_lr": {"purchase": 0.79, "click": 0.71, "churn": 0.85},
           "baseline_gbt": {"purchase": 0.81, "click": 0.60, "churn": None}}
    gates = check_gates(auc, {"student": "3"}, ["baseline_lr", "baseline_gbt"], 0.0)
    by_task = {g.task: g for g in gates}
    assert (by_task["purchase"].baseline, by_task["purchase"].baseline_auc) == ("baseline_gbt", 0.81)
    assert (by_task["click"].baseline, by_task["click"].baseline_auc) == ("baseline_lr", 0.71)
    assert (by_task["churn"].baseline, by_task["churn"].baseline_auc) == ("baseline_lr", 0.85)
    assert [g.passed for g in gates] == [False, False, True]
    assert by_task["purchase"].describe() == ("gate FAILED: student v3 purchase test AUC 0.8000 vs baseline_gbt"
                                              " 0.8100 + margin 0")
    with_margin = check_gates(auc, {"student": "3"}, ["baseline_lr", "baseline_gbt"], 0.06)
    assert [g.passed for g in with_margin] == [False, False, False]
    assert not Gate("m", "1", "click", None, "baseline_lr", 0.5, 0.0).passed
    with pytest.raises(ValueError, match="no baseline to gate against"):
        check_gates(auc, {"student": "3"}, [], 0.0)


def model_input(rows: pd.DataFrame) -> pd.DataFrame:
    """``training_examples`` rows as the models' input: int32 ``event_ids`` and float64 features."""
    example = rows[[SEQUENCE_COLUMN, *FEATURE_COLUMNS]].astype({c: "float64" for c in FEATURE_COLUMNS})
    example[SEQUENCE_COLUMN] = [np.asarray(v, dtype=np.int32) for v in example[SEQUENCE_COLUMN]]
    return example


class _Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context: object, model_input: pd.DataFrame, params: object = None) -> pd.DataFrame:
        return pd.DataFrame({t: [0.5] * len(model_input) for t in TASKS})


def test_gates_keep_the_previous_champion_when_a_worse_model_comes(make_config: Callable[..., Config],
                                                                   tmp_path: pytest.TempPathFactory) -> None:
    cfg = make_config(overrides=[f"storage.root={tmp_path}", f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db"])
    setup_mlflow(cfg)
    versions = []
    for _ in range(2):
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(name="model", python_model=_Constant(), registered_model_name="gated",
                                           pip_requirements=["pandas"])
        versions.append(RegisteredModelVersion("gated", str(info.registered_model_version), "r"))
    registry = client(cfg)
    baselines = {"baseline_lr": {t: 0.7 for t in TASKS}, "baseline_gbt": {t: 0.72 for t in TASKS}}

    good = check_gates({**baselines, "gated": {t: 0.75 for t in TASKS}}, {"gated": "1"}, list(baselines), 0.0)
    assert apply_gates(cfg, {"gated": versions[0]}, good) == {"gated": True}
    assert str(registry.get_model_version_by_alias("gated", CHAMPION_ALIAS).version) == "1"

    worse = check_gates({**baselines, "gated": {"purchase": 0.9, "click": 0.71, "churn": 0.9}}, {"gated": "2"},
                        list(baselines), 0.0)
    assert apply_gates(cfg, {"gated": versions[1]}, worse) == {"gated": False}
    assert str(registry.get_model_version_by_alias("gated", CHAMPION_ALIAS).version) == "1"
    tag = registry.get_registered_model("gated").tags[GATE_FAILURE_TAG]
    assert tag == "gate FAILED: gated v2 click test AUC 0.7100 vs baseline_gbt 0.7200 + margin 0"

    assert apply_gates(cfg, {"gated": versions[1]}, good) == {"gated": True}
    assert str(registry.get_model_version_by_alias("gated", CHAMPION_ALIAS).version) == "2"
    assert GATE_FAILURE_TAG not in registry.get_registered_model("gated").tags


# ----------------------------------------------------------------------------------------------- end to end


@dataclass(frozen=True)
class Distilled:
    """A tiny teacher (pretrain + finetune), a student distilled from it, and ``propensity evaluate``."""

    cfg: Config
    plan: SnapshotPlan
    teacher: RegisteredModelVersion
    student: RegisteredModelVersion
    report: EvaluationReport


@pytest.fixture(scope="module")
def distilled(make_config: Callable[..., Config], spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
              ) -> Distilled:
    from test_training import make_examples

    from propensity.stages.evaluation.evaluate import run_evaluate
    from propensity.stages.training.distill import run_distill
    from propensity.stages.training.finetune import run_finetune
    from propensity.stages.training.pretrain import run_pretrain

    root = tmp_path_factory.mktemp("student")
    tiny = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
            "max_length": 16, "dropout": 0.1, "head_hidden_size": 8}
    small = {**tiny, "hidden_size": 16, "intermediate_size": 32, "max_length": 12, "head_hidden_size": 4}
    training = {"pretrain_epochs": 1, "epochs": 2, "batch_size": 16, "num_processes": 2, "log_every_steps": 5,
                "max_train_rows": 0, "max_pretrain_rows": 0, "max_eval_rows": 0, "workers_count": 1,
                "learning_rate": 3e-3, "head_learning_rate": 1e-2}
    overrides = [f"storage.root={root}", f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
                 "evaluation.gbt_grid=[[5, 2]]", "evaluation.lr_reg_params=[0.01]",
                 "evaluation.bootstrap_rounds=20", "distill.alpha=0.3", "distill.temperature=2.0",
                 *[f"teacher.{k}={v}" for k, v in tiny.items()], *[f"student.{k}={v}" for k, v in small.items()],
                 *[f"training.{k}={v}" for k, v in training.items()]]
    cfg = make_config(overrides=overrides)
    plan = make_examples(spark, cfg, users_per_date=50, seed=5)
    run_pretrain(spark, cfg)
    teacher = run_finetune(spark, cfg, plan=plan)
    student = run_distill(spark, cfg, plan=plan)
    return Distilled(cfg, plan, teacher, student, run_evaluate(spark, cfg, plan=plan))


@pytest.mark.slow
def test_student_is_distilled_from_the_pinned_teacher(distilled: Distilled, spark: SparkSession) -> None:
    from propensity.models.network import load_model

    cfg, teacher, student = distilled.cfg, distilled.teacher, distilled.student
    assert (student.name, student.version) == ("propensity_student", "1")
    run = client(cfg).get_run(student.run_id)
    assert run.data.params["distill.teacher"] == teacher.model_uri == "models:/propensity_teacher/1"
    assert run.data.params["distill.alpha"] == "0.3"
    assert run.data.params["student.hidden_size"] == "16"
    assert "distill_val_auc_purchase" in run.data.metrics
    local = cfg.root / "checkpoints" / "student" / "distill" / student.run_id / "model"
    model = load_model(local)
    assert model.encoder.config.hidden_size == 16 and model.encoder.config.num_hidden_layers == 1
    assert model.encoder.config.max_position_embeddings == 12

    setup_mlflow(cfg)
    rows = spark.table(cfg.table("training_examples")).limit(30).toPandas()
    example = model_input(rows)
    probs = mlflow.pyfunc.load_model(student.model_uri).predict(example)
    assert list(probs.columns) == list(TASKS)
    assert ((probs.to_numpy() > 0) & (probs.to_numpy() < 1)).all()


@pytest.mark.slow
def test_evaluate_covers_every_model_and_registers_the_fusion(distilled: Distilled, spark: SparkSession) -> None:
    cfg, report = distilled.cfg, distilled.report
    stored = spark.table(cfg.table("model_evaluations")).toPandas()
    assert set(stored["model_name"]) == {"propensity_teacher", "propensity_student", "propensity_fusion",
                                         "baseline_lr", "baseline_gbt"}
    all_test = stored[(stored["platform"] == "all") & (stored["split"] == "test") & (stored["variant"] == "full")
                      & (stored["segment"] == "all")]
    assert len(all_test) == 5 * 3
    assert set(stored["platform"]) == {"all", "shop", "app"}
    assert "features_only" in set(stored.loc[stored["model_name"] == "propensity_teacher", "variant"])
    assert {label.split(".")[0] for label in report.test_auc.index} == set(stored["model_name"])
    assert "propensity_teacher.features_only" in report.test_auc.index
    assert set(stored.loc[stored["model_name"] == "baseline_lr", "model_version"].isna()) == {True}
    assert len(report.gates) == 3 * 3
    for gate in report.gates:
        auc = all_test[(all_test["model_name"] == gate.model) & (all_test["task"] == gate.task)]["auc"].item()
        assert gate.auc == pytest.approx(auc)
    registry = client(cfg)
    for name, promoted in report.promoted.items():
        aliases = registry.get_registered_model(name).aliases
        assert (CHAMPION_ALIAS in aliases) == promoted
        assert promoted == all(g.passed for g in report.gates if g.model == name)

    # The registered fusion predicts w * teacher + (1 - w) * student with the chosen weights.
    setup_mlflow(cfg)
    rows = spark.table(cfg.table("training_examples")).limit(25).toPandas()
    example = model_input(rows)
    members = {n: mlflow.pyfunc.load_model(f"models:/{n}/1").predict(example)
               for n in ("propensity_teacher", "propensity_student")}
    fused = mlflow.pyfunc.load_model("models:/propensity_fusion/1").predict(example)
    expected = fuse(members["propensity_teacher"], members["propensity_student"], report.fusion_weights)
    pd.testing.assert_frame_equal(fused.reset_index(drop=True), expected.reset_index(drop=True))
    assert "test AUC (all platforms):" in report.format()
