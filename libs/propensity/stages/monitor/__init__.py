"""The ``monitor`` stage: drift of scores and input features (:mod:`~propensity.stages.monitor.monitor`)."""
