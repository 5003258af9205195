"""The ``score`` stage: per-user probabilities into ``user_scores`` (:mod:`~propensity.stages.scoring.score`)."""
