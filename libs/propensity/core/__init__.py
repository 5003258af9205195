"""The bottom layer: facts and plumbing every stage shares, and nothing stage-specific.

- :mod:`~propensity.core.errors`: the error policy (:class:`~propensity.core.errors.PropensityError`);
- :mod:`~propensity.core.schema`: event types, tasks, label, score and feature column names;
- :mod:`~propensity.core.config`: configuration (YAML -> validated dataclasses);
- :mod:`~propensity.core.tables`: the Delta table contracts;
- :mod:`~propensity.core.spark`: the one place a SparkSession is made;
- :mod:`~propensity.core.datasets`: the snapshot plan and the rows of each split;
- :mod:`~propensity.core.tracking`: MLflow tracking stores and logging helpers.
"""
