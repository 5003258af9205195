"""Scoring and publishing: ``user_scores``, ``inventory_demand``, ``ads_audiences`` (DESIGN sections 3 and 8)."""
