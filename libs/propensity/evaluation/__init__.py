"""Model evaluation: metrics per task, platform and split into ``model_evaluations``, plots to MLflow.

- :mod:`propensity.evaluation.metrics`: AUC, PR-AUC and log loss in NumPy;
- :mod:`propensity.evaluation.evaluate`: :func:`~propensity.evaluation.evaluate.run_evaluate`, the
  ``evaluate`` stage;
- :mod:`propensity.evaluation.plots`: ROC and calibration plots.

Submodules are imported on use, so the training processes can use the metrics without Spark.
"""
