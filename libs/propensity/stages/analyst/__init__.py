"""The analyst path: SQL on the project's tables (:mod:`~propensity.stages.analyst.sql`) and the JDBC server
(:mod:`~propensity.stages.analyst.server`).
"""
