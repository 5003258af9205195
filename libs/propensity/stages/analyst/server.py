"""``propensity sql-server``: Spark's Thrift server (HiveServer2 protocol) over the project's tables.

BI tools and ``beeline -u jdbc:hive2://localhost:10000/propensity -n USER -p PASSWORD`` query
``user_scores`` and the other tables like any warehouse. The security model (docs/security.md):

* **Loopback only**: the server binds to ``localhost``.
* **Logins**: HiveServer2's CUSTOM authentication with our password check
  (``resources/java/PasswordAuthenticator.java``): the ``user:password`` lines of
  ``sql_server.credentials_file`` (readable by its owner only), else ``PROPENSITY_SQL_USER`` /
  ``PROPENSITY_SQL_PASSWORD``. Without credentials the server refuses to start; a connection
  without the right ones is refused before it can run anything.
* **Read-only for everyone**: a check rule in the JVM (``resources/java/ReadOnlyGuard.java``)
  refuses every statement that would change data or state, on the analyzed plan before it runs;
  SQL on file paths is off. Operators change data with ``propensity sql --allow-writes``, which
  takes the tables' write locks (a JDBC session could not).

The server runs in this process's own local Spark session, with its own catalog: it registers
every table of ``storage.root`` at start and every :data:`RESCAN_SECONDS` the ones created
since, so pipeline stages and ``propensity sql`` keep working on the same root meanwhile.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import stat
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from pyspark.sql import SparkSession

from propensity.core.config import Config
from propensity.core.errors import ConfigError, UsageError
from propensity.core.spark import get_spark
from propensity.core.tables import register_all
from propensity.stages.analyst.server_jar import AUTHENTICATOR, GUARD, server_jar

log = logging.getLogger(__name__)

#: Seconds between looks for tables created after the server started.
RESCAN_SECONDS = 5.0


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex((host, port)) != 0


def check_credentials(cfg: Config) -> str:
    """Say where logins come from; refuse to go on without any.

    :raises ConfigError: no credentials, or a credentials file that is missing, empty or readable by others.
    """
    path = cfg.sql_server.credentials_file
    if path:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"sql_server.credentials_file={path!r} does not exist; create it with one"
                              " user:password line per login (chmod 600)")
        if file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"sql_server.credentials_file={path!r} is readable by other users;"
                              f" run `chmod 600 {path}`")
        users = [line.split(":", 1)[0].strip() for line in file.read_text().splitlines() if ":" in line[1:-1]]
        if not users:
            raise ConfigError(f"sql_server.credentials_file={path!r} holds no user:password line")
        return f"users {', '.join(users)} from {path}"
    if os.environ.get("PROPENSITY_SQL_PASSWORD"):
        return f"user {os.environ.get('PROPENSITY_SQL_USER') or 'analyst'} from PROPENSITY_SQL_PASSWORD"
    raise ConfigError("propensity sql-server does not start without credentials: set PROPENSITY_SQL_PASSWORD"
                      " (user PROPENSITY_SQL_USER, default analyst) or sql_server.credentials_file"
                      " (user:password lines, chmod 600)")


def server_settings(cfg: Config, port: int) -> dict[str, str]:
    """The Spark settings of the server's session: its port, password check and read-only rule."""
    jar = str(server_jar())
    auth = {"hive.server2.authentication": "CUSTOM", "hive.server2.custom.authentication.class": AUTHENTICATOR}
    # HiveServer2 reads its authentication from JVM system properties, not from Spark's Hadoop conf alone.
    options = [f"-D{k}={v}" for k, v in auth.items()]
    if cfg.sql_server.credentials_file:
        options.append(f"-Dpropensity.sql.credentials={Path(cfg.sql_server.credentials_file).resolve()}")
    return {
        "spark.jars": jar, "spark.driver.extraClassPath": jar, "spark.sql.extensions": GUARD,
        "spark.driver.extraJavaOptions": " ".join(options), "spark.sql.runSQLOnFiles": "false",
        "spark.hadoop.hive.server2.thrift.port": str(port), "spark.hadoop.hive.server2.thrift.bind.host": "localhost",
        **{f"spark.hadoop.{k}": v for k, v in auth.items()},
    }


def start_thrift_server(spark: SparkSession, cfg: Config) -> object:
    """Register the tables, start the Thrift server over ``spark``'s catalog and arm the read-only rule."""
    if GUARD not in (spark.conf.get("spark.sql.extensions") or ""):
        raise UsageError("propensity sql-server needs its own local Spark session (its read-only rule cannot be"
                         " added to a session that is already running, as under spark-submit or on Databricks)")
    jvm = spark.sparkContext._jvm
    if jvm is None:  # pragma: no cover - a live session always has one
        raise RuntimeError("the Spark session has no JVM gateway")
    guard = _guard(spark)
    guard.trustThisThread()
    register_all(spark, cfg)
    spark.sql(f"USE {cfg.database}")
    server_object = getattr(jvm.org.apache.spark.sql.hive.thriftserver, "HiveThriftServer2$").__getattr__("MODULE$")
    server = server_object.startWithSparkSession(spark._jsparkSession, False)
    guard.arm()
    return server


def serve(cfg: Config, port: int) -> int:
    """Run the server until Ctrl-C or SIGTERM, then stop it and Spark cleanly."""
    if not 0 < port < 65536:
        raise UsageError(f"--port {port} is not a TCP port; use 1-65535")
    if not port_is_free(port):
        raise UsageError(f"port {port} is already in use; pick another with --port")
    logins = check_credentials(cfg)
    # The server reads its settings when the session starts.
    cfg.spark.conf.update(server_settings(cfg, port))
    spark = get_spark(cfg)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    server = start_thrift_server(spark, cfg)
    threading.Thread(target=_rescan, args=(spark, cfg, stop), name="propensity-rescan", daemon=True).start()
    url = f"jdbc:hive2://localhost:{port}/{cfg.storage.schema}"
    print(f"Thrift server (HiveServer2) on {url}", flush=True)
    print(f"logins: {logins}; read-only", flush=True)
    print(f"try: beeline -u {url} -n USER -p PASSWORD -e 'SHOW TABLES'; Ctrl-C stops it.", flush=True)
    while not stop.wait(0.5):
        pass
    log.info("stopping the Thrift server")
    server.stop()  # type: ignore[attr-defined]
    spark.stop()
    return 0


def _guard(spark: SparkSession) -> Any:
    """The read-only rule's class in the JVM."""
    return functools.reduce(getattr, GUARD.split("."), spark.sparkContext._jvm)


def _rescan(spark: SparkSession, cfg: Config, stop: threading.Event) -> None:
    """Register tables created after the start, until ``stop``."""
    _guard(spark).trustThisThread()
    while not stop.wait(RESCAN_SECONDS):
        try:
            for name in register_all(spark, cfg):
                log.info("serving new table %s", name)
        except Exception as e:  # a folder half-written by another process: try again next time
            log.debug("rescan failed: %s", e)
