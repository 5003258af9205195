"""`propensity sql-server` with the real beeline pyspark ships: no login, no access; logged in, read-only."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyspark
import pytest
from pyspark.sql import SparkSession
from test_readonly import PWNED, STATEMENTS

from propensity.core.config import load_config
from propensity.core.errors import ConfigError
from propensity.core.storage import database_dir
from propensity.stages.analyst.server import RESCAN_SECONDS, check_credentials

BEELINE = Path(pyspark.__file__).parent / "bin" / "beeline"
ENV = {**os.environ, "PYSPARK_PYTHON": sys.executable}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _beeline(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """beeline's output and errors in one stream, in order."""
    return subprocess.run([str(BEELINE), "-u", url, "--outputformat=csv2", *args], env=ENV, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", timeout=900,
                          check=False)


def test_credentials_are_required_and_kept_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROPENSITY_SQL_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match=r"does not start without credentials: set PROPENSITY_SQL_PASSWORD"):
        check_credentials(load_config())
    logins = tmp_path / "logins"
    logins.write_text("analyst:s3cret\n")
    logins.chmod(0o644)
    cfg = load_config(overrides=[f"sql_server.credentials_file={logins}"])
    with pytest.raises(ConfigError, match=r"credentials_file=.* is readable by other users; run `chmod 600"):
        check_credentials(cfg)
    logins.chmod(0o600)
    assert check_credentials(cfg) == f"users analyst from {logins}"
    monkeypatch.setenv("PROPENSITY_SQL_PASSWORD", "x")
    assert check_credentials(load_config()) == "user analyst from PROPENSITY_SQL_PASSWORD"


def result_lines(output: str) -> list[str]:
    """beeline's output lines without the continuation prompt (``. . . . > ``) it may print before a result line."""
    return [re.sub(r"^(\. )+> ", "", line) for line in output.splitlines()]


def _blocks(output: str, url: str, statements: int) -> list[str]:
    """beeline -f output cut into one block per statement (each starts with the echoed prompt)."""
    return re.split(rf"^\d+: {re.escape(url)}> ", output, flags=re.MULTILINE)[1:statements + 1]


@pytest.mark.server
def test_beeline_needs_a_login_and_can_only_read(spark: SparkSession, tmp_path: Path) -> None:
    """Tables are folders written by another process (this one); the server finds them, and later ones too."""
    root = tmp_path / "state"
    cfg = load_config(overrides=[f"storage.root={root}"])
    # scores in two versions, so that RESTORE ... VERSION AS OF 0 would change it.
    for name, rows, mode in (("scores", [("u1", 0.25)], "errorifexists"), ("scores", [("u2", 0.75)], "append"),
                             ("other", [("u1", 0.5)], "errorifexists")):
        spark.createDataFrame(rows, "user_id STRING, score DOUBLE").write.format("delta").mode(mode).save(
            str(database_dir(cfg) / name))
    logins = tmp_path / "logins"
    logins.write_text("analyst:s3cret\n")
    logins.chmod(0o600)
    for leftover in (Path(PWNED), Path(f"{PWNED}.dir")):
        assert not leftover.exists(), f"remove {leftover} left by an earlier run"
    port = _free_port()
    url = f"jdbc:hive2://localhost:{port}/propensity"
    log = tmp_path / "server.log"
    with log.open("w") as out:  # a file, not a pipe nobody reads: a full pipe would block the server
        server = subprocess.Popen([sys.executable, "-m", "propensity", "--set", f"storage.root={root}", "--set",
                                   f"sql_server.credentials_file={logins}", "sql-server", "--port", str(port)],
                                  env=ENV, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        while server.poll() is None and "Ctrl-C stops it" not in log.read_text():
            time.sleep(0.5)
        banner = [line for line in log.read_text().splitlines() if line.startswith(("Thrift server", "logins:"))]
        assert banner == [f"Thrift server (HiveServer2) on {url}", f"logins: users analyst from {logins}; read-only"], \
            log.read_text()[-3000:]

        for login in ([], ["-n", "analyst"], ["-n", "analyst", "-p", "wrong"]):
            refused = _beeline(url, *login, "-e", "DROP TABLE scores")
            assert refused.returncode != 0 and "Error validating the login" in refused.stdout

        script = tmp_path / "statements.sql"
        script.write_text("".join(f"{query};\n" for query, _ in STATEMENTS))
        ran = _beeline(url, "-n", "analyst", "-p", "s3cret", "--force=true", "-f", str(script))
        blocks = _blocks(ran.stdout, url, len(STATEMENTS))
        assert len(blocks) == len(STATEMENTS), ran.stdout
        verdicts = [(query, "read-only SQL endpoint" not in block) for (query, _), block in zip(STATEMENTS, blocks,
                                                                                                 strict=True)]
        assert verdicts == STATEMENTS
        first = blocks[0].split("\n")
        assert first[1] == "user_id,score" and sorted(first[2:4]) == ["u1,0.25", "u2,0.75"], blocks[0]
        assert not Path(PWNED).exists() and not Path(f"{PWNED}.dir").exists()
        assert sorted(map(tuple, spark.read.format("delta").load(str(database_dir(cfg) / "scores")).collect())) == [
            ("u1", 0.25), ("u2", 0.75)]

        spark.createDataFrame([("x",)], "v STRING").write.format("delta").save(str(database_dir(cfg) / "later"))
        time.sleep(RESCAN_SECONDS * 2)
        later = _beeline(url, "-n", "analyst", "-p", "s3cret", "-e", "SELECT v FROM later")
        assert later.returncode == 0 and [line for line in result_lines(later.stdout)
                                                        if line in ("v", "x")] == ["v", "x"], later.stdout
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
    assert server.returncode == 0
    # One line per refused statement on the server's console, no stack traces.
    assert "\tat org.apache" not in log.read_text()
