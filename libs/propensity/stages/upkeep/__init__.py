"""The ``upkeep`` stage: erasure of a person (``propensity forget``) and table maintenance (``propensity maintain``)."""
