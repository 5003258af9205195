"""The command line as a user runs it: exit codes, one-line errors, clean stdout."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from propensity.cli import PYSPARK_EXCEPTION_LOGGERS, VERBS, build_parser
from propensity.core.config import Config


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    return subprocess.run([sys.executable, "-m", "propensity", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def test_parser_knows_every_verb_and_global_options() -> None:
    args = build_parser().parse_args(["sql", "SELECT 1", "--format", "json", "--conf", "a.yml", "--set", "x=1"])
    assert (args.verb, args.query, args.format, args.conf, args.overrides) == \
        ("sql", "SELECT 1", "json", ["a.yml"], ["x=1"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sql", "SELECT 1", "--format", "xml"])


@pytest.mark.slow
def test_config_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    result = _run(["--set", "features.lookbak_days=3", "ingest"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == ("propensity ingest: error: unknown config key features.lookbak_days;"
                                     " known keys: lookback_days, purchase_horizon_days, click_horizon_days,"
                                     " churn_horizon_days, max_sequence_events, snapshot_step_days,"
                                     " min_history_days, train_step_days, max_train_snapshots")
    assert result.stdout == ""


@pytest.mark.slow
def test_missing_feed_file_and_sql_json(tmp_path: Path) -> None:
    """One Spark process: a missing feed fails in one line; sql --format json prints pure JSON."""
    root = f"storage.root={tmp_path / 'state'}"
    missing = _run(["--set", root, "--set", "platforms=[{name: shop, format: rees46, events: /nowhere/*.csv}]",
                    "ingest"], tmp_path)
    assert missing.returncode == 2, missing.stderr
    last = missing.stderr.strip().splitlines()[-1]
    assert last == ("propensity ingest: error: platform shop events (rees46): no file matches '/nowhere/*.csv';"
                    " check the path in your config")
    assert "Traceback" not in missing.stderr

    result = _run(["--set", root, "sql", "SELECT 1 AS x, 'a' AS y UNION ALL SELECT 2, NULL", "--format", "json"],
                  tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"x": 1, "y": "a"}, {"x": 2, "y": None}]


@pytest.mark.slow
def test_config_verb_prints_the_resolved_config_and_keys(tmp_path: Path) -> None:
    import yaml

    result = _run(["--set", "distill.alpha=0.7", "--set", "training.epochs=5", "config"], tmp_path)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["distill"]["alpha"] == 0.7 and resolved["training"]["epochs"] == 5
    assert resolved["teacher"]["hidden_size"] == 128
    keys = _run(["config", "--keys"], tmp_path)
    lines = {line.split()[0]: line for line in keys.stdout.splitlines()}
    assert "Weight of the hard-label loss" in lines["distill.alpha"]
    assert "evaluation.gate_margin" in lines


@pytest.mark.slow
def test_training_verb_before_ingest_is_one_line(tmp_path: Path) -> None:
    result = _run(["--set", f"storage.root={tmp_path / 'state'}", "distill"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("propensity distill: error: table ")
    assert "run `propensity ingest` first" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------------ one error policy, every verb

def _verb_cases(tmp_path: Path) -> list[tuple[list[str], str]]:
    """(arguments, expected start of the message) of each verb run where its input is missing or bad."""
    not_a_demo = tmp_path / "not-a-demo"
    not_a_demo.mkdir()
    (not_a_demo / "keep.txt").write_text("mine")
    return [
        (["generate", "--out", str(tmp_path / "feeds"), "--users", "5"], "--users 5 is too small"),
        (["ingest"], "no feeds configured"),
        (["features"], "give --snapshot-date YYYY-MM-DD or --training-set"),
        (["features", "--snapshot-date", "2026-03-01"], "table .*events does not exist yet; run `propensity ingest`"),
        (["pretrain"], "table .*training_examples does not exist yet; run `propensity features` first"),
        (["finetune"], "table .*events does not exist yet; run `propensity ingest` first"),
        (["distill"], "table .*events does not exist yet; run `propensity ingest` first"),
        (["evaluate"], "table .*events does not exist yet; run `propensity ingest` first"),
        (["score", "--snapshot-date", "2026-03-01"], "model URI 'models:/propensity_student@champion' cannot be"),
        (["publish", "--snapshot-date", "2026-03-01"],
         "PROPENSITY_PSEUDONYM_KEY is not set, so publish refuses to run: export a secret"),
        (["monitor", "--snapshot-date", "2026-03-01"],
         "table .*user_scores does not exist yet; run `propensity score`"),
        (["forget"], "nothing to forget: give --user-id, --platform with --platform-user-id, or --file"),
        (["forget", "--file", str(tmp_path / "missing.txt")], "--file .*missing.txt: cannot be read"),
        (["maintain", "--set", "maintenance.vacuum_retain_hours=-1"],
         r"maintenance.vacuum_retain_hours=-1 must be >= 0"),
        (["sql", "SELEC 1"], "query failed: .*PARSE_SYNTAX_ERROR"),
        (["sql", "SELECT no_such_column"], "query failed: .*UNRESOLVED_COLUMN.* `no_such_column` cannot be resolved"),
        (["sql", "DROP TABLE events"],
         "propensity sql only reads: DropTable changes data or state and was not run; an operator can run it with"
         " --allow-writes$"),
        (["sql-server", "--port", "0"], "--port 0 is not a TCP port"),
        (["config", "--set", "training.epochs=0"], r"training.epochs=0 must be >= 1"),
        (["demo", "--root", str(not_a_demo)], "PROPENSITY_PSEUDONYM_KEY is not set, so the demo's publish step"),
    ]


def _pyspark_logs_to_captured_stderr() -> None:
    """pyspark logs each JVM exception it converts through handlers bound to the stderr of their first use
    (maybe an earlier test's): point them at this test's, so that a leaked stack trace shows."""
    from pyspark.logger import PySparkLogger

    for name in PYSPARK_EXCEPTION_LOGGERS:
        for handler in PySparkLogger.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(sys.stderr)


def test_every_verb_fails_with_one_line_and_exit_code_2(spark: object, make_config: Callable[..., Config],
                                                        tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each verb on a missing table, model or snapshot, or a bad argument: exit code 2, one line on stderr."""
    import re

    monkeypatch.delenv("PROPENSITY_PSEUDONYM_KEY", raising=False)

    from propensity.cli import main

    cfg = make_config(overrides=[f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    common = ["--set", f"storage.root={cfg.storage.root}", "--set", f"storage.schema={cfg.storage.schema}",
              "--set", f"mlflow.tracking_uri={cfg.mlflow.tracking_uri}"]
    cases = _verb_cases(tmp_path)
    assert {args[0] for args, _ in cases} == set(VERBS)
    _pyspark_logs_to_captured_stderr()
    for args, message in cases:
        code = main([*args, *common])
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2, (args, err)
        assert len(lines) == 1 and "Traceback" not in err, (args, err)
        assert re.match(rf"propensity {args[0]}: error: {message}", lines[0]), (args, lines[0])
    # with the secret set, the demo gets as far as its --root check
    monkeypatch.setenv("PROPENSITY_PSEUDONYM_KEY", "cli-test-pseudonym-key-0001")
    assert main(["demo", "--root", str(tmp_path / "not-a-demo"), *common]) == 2
    assert re.match("propensity demo: error: --root .* is not empty and was not made by `propensity demo`; choose"
                    " another folder$",
                    capsys.readouterr().err.strip())
