"""`propensity sql-server`: beeline reads the project's tables over JDBC; Ctrl-C stops it cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyspark
import pytest

BEELINE = Path(pyspark.__file__).parent / "bin" / "beeline"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "propensity", *args]


@pytest.mark.server
def test_beeline_queries_tables_through_the_thrift_server(tmp_path: Path) -> None:
    root = f"storage.root={tmp_path / 'state'}"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    setup = subprocess.run(_cli("--set", root, "sql", "CREATE TABLE user_scores USING DELTA AS SELECT * FROM VALUES"
                                " ('u1', 0.25), ('u2', 0.75) AS t(user_id, purchase_score)"),
                           env=env, capture_output=True, text=True, timeout=300, check=False)
    assert setup.returncode == 0, setup.stderr
    port = _free_port()
    server = subprocess.Popen(_cli("--set", root, "sql-server", "--port", str(port)), env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        banner = [server.stdout.readline() for _ in range(3)]
        assert banner[0].strip() == f"Thrift server (HiveServer2) on jdbc:hive2://localhost:{port}/propensity"
        query = subprocess.run([str(BEELINE), "-u", f"jdbc:hive2://localhost:{port}/propensity", "--silent=true",
                                "--outputformat=csv2", "-e", "SELECT user_id, purchase_score FROM user_scores"
                                " ORDER BY user_id"], env=env, capture_output=True, text=True, timeout=120,
                               check=False)
        assert query.returncode == 0, query.stderr
        lines = [line for line in query.stdout.splitlines() if line.strip()]
        # beeline echoes its prompt before the header when stdin is not a terminal.
        assert lines[-3].split("> ")[-1] == "user_id,purchase_score"
        assert lines[-2:] == ["u1,0.25", "u2,0.75"]

        busy = subprocess.run(_cli("--set", root, "sql", "SELECT 1"), env=env, capture_output=True, text=True,
                              timeout=300, check=False)
        assert busy.returncode == 2
        assert "is in use by another process" in busy.stderr.strip().splitlines()[-1]
    finally:
        server.send_signal(signal.SIGINT)
        deadline = time.time() + 60
        while server.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0
