"""Command-line options every benchmark script shares: its work folder and the config it runs with."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OVERLAY = str(REPO / "conf" / "local.yml")


def add_common(parser: argparse.ArgumentParser, root_help: str) -> None:
    """``--root`` (``root_help`` says what it holds), ``--conf`` and ``--set``."""
    parser.add_argument("--root", type=Path, default=None,
                        help=f"{root_help} (default: a temporary folder, removed after)")
    parser.add_argument("--conf", action="append", default=None, help="config overlay (default conf/local.yml)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="dotted.key=value override")


def overlays(args: argparse.Namespace) -> list[str]:
    """The ``--conf`` overlays, ``conf/local.yml`` when none is given."""
    return list(args.conf or [DEFAULT_OVERLAY])


def work_root(args: argparse.Namespace, prefix: str) -> Path:
    """``--root`` as an absolute path, or a new temporary folder (the caller removes it when ``--root`` is unset)."""
    return args.root.resolve() if args.root else Path(tempfile.mkdtemp(prefix=prefix))
