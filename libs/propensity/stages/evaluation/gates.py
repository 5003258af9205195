"""Champion gates: a model becomes ``@champion`` only if it beats the best baseline on every task.

A gate compares a model's test AUC (``platform = 'all'``) on one task with the best
baseline's plus ``evaluation.gate_margin``. A model that passes all its gates gets the
registry alias ``champion`` on its registered model; one that fails keeps the previous
champion, and the failure is kept as the registered model's tag ``GATE_FAILURE_TAG`` so that
scoring can say why there is no champion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from propensity.core.config import Config
from propensity.core.schema import TASKS
from propensity.core.tracking import client
from propensity.models.registry import CHAMPION_ALIAS, GATE_FAILURE_TAG, RegisteredModelVersion


@dataclass(frozen=True)
class Gate:
    """One model's test AUC on one task against the best baseline's."""

    model: str
    version: str
    task: str
    auc: float | None
    baseline: str
    baseline_auc: float | None
    margin: float

    @property
    def passed(self) -> bool:
        """The model's AUC is at least the baseline's plus the margin (an undefined AUC fails)."""
        if self.auc is None or math.isnan(self.auc):
            return False
        if self.baseline_auc is None or math.isnan(self.baseline_auc):
            return True  # no baseline could be fitted for this task: nothing to beat
        return self.auc >= self.baseline_auc + self.margin

    def describe(self) -> str:
        """One line: the gate, both AUCs and the verdict."""
        verdict = "passed" if self.passed else "FAILED"
        return (f"gate {verdict}: {self.model} v{self.version} {self.task} test AUC {_fmt(self.auc)} vs"
                f" {self.baseline} {_fmt(self.baseline_auc)} + margin {self.margin:g}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def check_gates(test_auc: dict[str, dict[str, float | None]], candidates: dict[str, str], baselines: list[str],
                margin: float) -> list[Gate]:
    """Gates of each candidate ``{model name: version}`` on every task.

    :param test_auc: ``{model or baseline name: {task: test AUC over all platforms}}``.
    :raises ValueError: no baseline results to compare with.
    """
    if not baselines:
        raise ValueError("no baseline to gate against; evaluate baseline_lr and baseline_gbt first")
    gates: list[Gate] = []
    for model, version in candidates.items():
        for task in TASKS:
            scored = [(b, test_auc.get(b, {}).get(task)) for b in baselines]
            defined = [(b, a) for b, a in scored if a is not None and not math.isnan(a)]
            best, best_auc = max(defined, key=lambda p: float(p[1] or 0.0)) if defined else (baselines[0], None)
            gates.append(Gate(model, version, task, test_auc.get(model, {}).get(task), best, best_auc, margin))
    return gates


def apply_gates(cfg: Config, candidates: dict[str, RegisteredModelVersion], gates: list[Gate]
                ) -> dict[str, bool]:
    """Move ``@champion`` to each candidate whose gates all passed; returns ``{model name: promoted}``.

    A candidate that failed keeps the previous champion (if any); its failure is recorded as the
    registered model's ``GATE_FAILURE_TAG`` tag (removed again by the next promotion).
    """
    registry = client(cfg)
    promoted: dict[str, bool] = {}
    for name, version in candidates.items():
        own = [g for g in gates if g.model == name]
        failed = [g for g in own if not g.passed]
        if failed:
            registry.set_registered_model_tag(version.name, GATE_FAILURE_TAG, "; ".join(g.describe() for g in failed))
            promoted[name] = False
            continue
        registry.set_registered_model_alias(version.name, CHAMPION_ALIAS, version.version)
        if GATE_FAILURE_TAG in registry.get_registered_model(version.name).tags:
            registry.delete_registered_model_tag(version.name, GATE_FAILURE_TAG)
        promoted[name] = True
    return promoted
