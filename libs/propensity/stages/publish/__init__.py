"""The ``publish`` stage: ``inventory_demand`` and ``ads_audiences`` from ``user_scores``
(:mod:`~propensity.stages.publish.publish`).
"""
