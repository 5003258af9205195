"""The ``ingest`` stage: raw feeds into Delta (:func:`~propensity.stages.ingest.pipeline.ingest`)."""
