"""``propensity sql-server``: Spark's Thrift server (HiveServer2 protocol) over the project's catalog.

BI tools and ``beeline -u jdbc:hive2://localhost:10000`` then query ``user_scores`` and the
other tables like any warehouse. The server runs inside this process's Spark session, so
it shares the Derby metastore under ``storage.root``; Derby admits one process at a time,
so while the server runs other ``propensity`` commands on the same root fail with a
message that says so (query through the server instead).
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from types import FrameType

from pyspark.sql import SparkSession

from propensity.core.config import Config
from propensity.core.errors import UsageError
from propensity.core.spark import get_spark

log = logging.getLogger(__name__)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex((host, port)) != 0


def start_thrift_server(spark: SparkSession, cfg: Config, port: int) -> object:
    """Start the Thrift server on ``localhost:port`` over ``spark``'s catalog; returns the JVM server."""
    if not 0 < port < 65536:
        raise UsageError(f"--port {port} is not a TCP port; use 1-65535")
    if not port_is_free(port):
        raise UsageError(f"port {port} is already in use; pick another with --port")
    jvm = spark.sparkContext._jvm
    if jvm is None:  # pragma: no cover - a live session always has one
        raise RuntimeError("the Spark session has no JVM gateway")
    spark.sql(f"USE {cfg.database}")
    server_object = getattr(jvm.org.apache.spark.sql.hive.thriftserver, "HiveThriftServer2$").__getattr__("MODULE$")
    return server_object.startWithSparkSession(spark._jsparkSession, False)


def serve(cfg: Config, port: int) -> int:
    """Run the server until Ctrl-C or SIGTERM, then stop it and Spark cleanly."""
    # The server reads its port from the Hadoop conf, fixed when the session starts.
    cfg.spark.conf.update({"spark.hadoop.hive.server2.thrift.port": str(port),
                           "spark.hadoop.hive.server2.thrift.bind.host": "localhost"})
    spark = get_spark(cfg)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    server = start_thrift_server(spark, cfg, port)
    print(f"Thrift server (HiveServer2) on jdbc:hive2://localhost:{port}/{cfg.storage.schema}", flush=True)
    print(f"try: beeline -u jdbc:hive2://localhost:{port}/{cfg.storage.schema} -e 'SHOW TABLES'", flush=True)
    print("Ctrl-C stops it.", flush=True)
    while not stop.wait(0.5):
        pass
    log.info("stopping the Thrift server")
    server.stop()  # type: ignore[attr-defined]
    spark.stop()
    return 0
