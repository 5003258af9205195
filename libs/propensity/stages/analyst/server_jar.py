"""The SQL server's Java side: ``propensity-sql-<hash>.jar`` with the password check and the read-only rule.

The sources are ``resources/java/*.java``; they compile with ``javac`` against pyspark's own jars
(HiveServer2's ``PasswdAuthenticationProvider``, Spark's extension API). ``make setup`` builds the
jar into the virtual environment (``python -m propensity.stages.analyst.server_jar``); where it
did not, the first ``propensity sql-server`` builds it once into ``~/.cache/propensity``
(``$XDG_CACHE_HOME``). The name carries a hash of the sources and the Spark version, so a
changed source or Spark is rebuilt, never run stale. Building takes a few seconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pyspark

from propensity.core.errors import UsageError

SOURCES = Path(__file__).parents[2] / "resources" / "java"
VENV_DIR = Path(sys.prefix) / "share" / "propensity"

#: Class names the session is configured with.
AUTHENTICATOR = "propensity.sql.PasswordAuthenticator"
GUARD = "propensity.sql.ReadOnlyGuard"


def jar_name() -> str:
    """The jar's file name: a hash of the sources and the Spark version."""
    digest = hashlib.sha256(pyspark.__version__.encode())
    for source in sorted(SOURCES.glob("*.java")):
        digest.update(source.name.encode() + source.read_bytes())
    return f"propensity-sql-{digest.hexdigest()[:12]}.jar"


def cache_dir() -> Path:
    """Where the jar is built when the virtual environment has none."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "propensity"


def server_jar() -> Path:
    """The jar for this source and Spark version, built on first use.

    :raises UsageError: it has to be built and there is no ``javac`` (a JDK).
    """
    name = jar_name()
    for folder in (VENV_DIR, cache_dir()):
        if (folder / name).is_file():
            return folder / name
    return build(cache_dir())


def build(folder: Path) -> Path:
    """Compile the sources against pyspark's jars into ``folder`` (atomically); returns the jar."""
    javac = _javac()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / jar_name()
    classpath = str(Path(pyspark.__file__).parent / "jars" / "*")
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        classes = Path(tmp) / "classes"
        result = subprocess.run([javac, "-nowarn", "-d", str(classes), "-cp", classpath,
                                 *map(str, sorted(SOURCES.glob("*.java")))], capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            raise RuntimeError(f"javac failed to build the SQL server's jar:\n{result.stderr}")
        partial = Path(tmp) / target.name
        with zipfile.ZipFile(partial, "w") as jar:
            for cls in sorted(classes.rglob("*.class")):
                jar.write(cls, cls.relative_to(classes).as_posix())
        os.replace(partial, target)
    return target


def _javac() -> str:
    home = os.environ.get("JAVA_HOME")
    candidates = [str(Path(home) / "bin" / "javac")] if home else []
    found = next((c for c in candidates if Path(c).is_file()), None) or shutil.which("javac")
    if found is None:
        raise UsageError("propensity sql-server builds a small jar once and needs javac for it; install a"
                         " Java 17 JDK (not just the runtime) or run `make setup` where one is installed")
    return found


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else VENV_DIR))
