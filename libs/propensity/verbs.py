"""The verbs of ``propensity``, listed once.

The CLI's sub-commands are checked against these lists, ``setup.py`` makes one console entry
point ``propensity-<verb>`` per job verb (Databricks ``python_wheel_task``), ``jobs/<verb>.py``
(spark-submit) is generated for each, and the bundle's tasks may only call those entry points
(tests keep all of it in step). This module imports nothing, so ``setup.py`` can read it
before the package's dependencies are installed.
"""

#: The pipeline, in the order a run goes through it.
PIPELINE = ("generate", "ingest", "features", "pretrain", "finetune", "distill", "evaluate", "score", "publish")

#: Verbs a scheduled job runs: a console entry point and a ``jobs/`` script each.
JOB_VERBS = (*PIPELINE, "monitor", "forget", "maintain", "sql")

#: Verbs for people at a terminal only.
TOOL_VERBS = ("sql-server", "config", "demo")

#: Exit codes of every verb.
EXIT_OK = 0
#: An unexpected failure (a bug): the traceback is printed.
EXIT_FAILURE = 1
#: A user error (bad config, missing input, table or model, a refused statement): one line on stderr.
EXIT_USER_ERROR = 2
#: ``propensity evaluate``: a champion gate failed; the previous champion stays.
EXIT_GATE_FAILED = 3
#: ``propensity monitor``: a drift comparison reached ``monitor.psi_alert`` (one line per breach on stderr).
EXIT_DRIFT_ALERT = 4
