"""One writer per table across processes on one ``storage.root``.

Delta's commit protocol on a local file system assumes one writing JVM (its log store checks
that version N+1 does not exist, then renames; two processes can both pass the check), so
every write to a project table runs inside :func:`table_lock`. Readers take no lock: a Delta
snapshot is consistent on its own.

The lock is an OS record lock (``fcntl``) on ``<storage.root>/locks/<schema>.<table>.lock``,
taken through ``java.nio.channels.FileChannel`` so that the Spark driver JVM holds it, not
Python: the JVM is the process that commits, and it can outlive a killed Python for a second
or two. The kernel releases the lock when the JVM exits, even on SIGKILL, so a crashed run
never leaves a stale lock behind. Threads of one process take turns through a Python lock
first, because a JVM refuses to lock one file twice.

A writer that finds the lock taken logs who holds it and waits up to
``storage.lock_wait_seconds``, then fails with :class:`~propensity.core.errors.StorageBusyError`.
With Unity Catalog (``storage.catalog`` set) the catalog coordinates commits and no lock is taken.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from propensity.core.config import Config
from propensity.core.errors import StorageBusyError

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.25
_guard = threading.Lock()
_thread_locks: dict[str, threading.RLock] = {}
_held: dict[str, Any] = {}


def lock_file(cfg: Config, name: str) -> Path:
    """The lock file of table ``name``."""
    return cfg.root / "locks" / f"{cfg.storage.schema}.{name}.lock"


@contextmanager
def table_lock(spark: SparkSession, cfg: Config, name: str) -> Iterator[None]:
    """Hold the write lock of table ``name`` (re-entrant within a thread; no-op with Unity Catalog).

    :raises StorageBusyError: another process kept it longer than ``storage.lock_wait_seconds``.
    """
    if cfg.storage.catalog:
        yield
        return
    path = lock_file(cfg, name)
    key = str(path)
    with _guard:
        thread_lock = _thread_locks.setdefault(key, threading.RLock())
    with thread_lock:
        if key in _held:  # this thread holds it further up the stack
            yield
            return
        _held[key] = _acquire(spark, path, name, cfg.storage.lock_wait_seconds)
        try:
            yield
        finally:
            _release(_held.pop(key))


def holder(path: Path) -> str:
    """Who last took the lock (the process writes it there), for messages."""
    try:
        return path.read_text().strip() or "another process"
    except OSError:
        return "another process"


def _acquire(spark: SparkSession, path: Path, name: str, wait_seconds: float) -> Any:
    path.parent.mkdir(parents=True, exist_ok=True)
    jvm = spark.sparkContext._jvm
    if jvm is None:  # pragma: no cover - a live session always has one
        raise RuntimeError("the Spark session has no JVM gateway")
    handle = jvm.java.io.RandomAccessFile(str(path), "rw")
    deadline = time.monotonic() + wait_seconds
    logged = False
    while True:
        lock = handle.getChannel().tryLock()
        if lock is not None:
            break
        if time.monotonic() >= deadline:
            handle.close()
            raise StorageBusyError(f"table {name} is being written by {holder(path)}; waited {wait_seconds:g}s."
                                   " Let that run finish, or raise storage.lock_wait_seconds")
        if not logged:
            log.info("waiting for table %s: it is being written by %s", name, holder(path))
            logged = True
        time.sleep(_POLL_SECONDS)
    handle.setLength(0)
    since = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    handle.write(bytearray(f"pid {os.getpid()} ({' '.join(sys.argv[:4])}) since {since}\n".encode()))
    return handle


def _release(handle: Any) -> None:
    handle.close()  # closing the channel releases its lock
