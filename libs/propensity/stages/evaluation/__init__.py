"""The ``evaluate`` stage: every model and baseline scored into ``model_evaluations``; the champion gates.

- :mod:`~propensity.stages.evaluation.evaluate`: :func:`run_evaluate`, the stage;
- :mod:`~propensity.stages.evaluation.baselines`: the MLlib baselines;
- :mod:`~propensity.stages.evaluation.fusion`: the fusion's weights;
- :mod:`~propensity.stages.evaluation.gates`: the champion gates;
- :mod:`~propensity.stages.evaluation.results`: metric rows, plots and the table commit;
- :mod:`~propensity.stages.evaluation.plots`: ROC and calibration figures.
"""
