"""Child process for test_scoring's kill test: score once, then start a slow run and wait to be killed.

Usage: python scoring_kill_child.py STORAGE_ROOT
"""

from __future__ import annotations

import sys
import time
from datetime import date
from typing import Any

import mlflow
import pandas as pd
from delta.tables import DeltaTable
from test_scoring import _register, _toy_models, write_events_and_features

from propensity.core.config import load_config
from propensity.core.spark import get_spark
from propensity.stages.scoring.score import score_snapshot


def main(root: str) -> None:
    cfg = load_config(overrides=[f"storage.root={root}", "spark.master=local[2]", "spark.shuffle_partitions=2",
                                 f"mlflow.tracking_uri=sqlite:///{root}/mlflow.db"])
    spark = get_spark(cfg)
    write_events_and_features(spark, cfg)
    recency, _ = _toy_models()
    score_snapshot(spark, cfg, date(2026, 1, 20), _register(cfg, recency(), "recency"))
    version = DeltaTable.forName(spark, cfg.table("user_scores")).history(1).first()["version"]
    print(f"VERSION {version}", flush=True)

    class Slow(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined,misc]
        def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
            if len(model_input) > 1:
                time.sleep(600)
            n = len(model_input)
            return pd.DataFrame({"purchase": [0.1] * n, "click": [0.1] * n, "churn": [0.1] * n})

    slow = _register(cfg, Slow(), "slow")
    print("SLOW", flush=True)
    score_snapshot(spark, cfg, date(2026, 1, 20), slow)


if __name__ == "__main__":
    main(sys.argv[1])
