"""The layering of docs/architecture.md, checked on every import (function-level ones included), and the
files generated from the code (docs, conf/base.yml, jobs/, entry points) kept current."""

from __future__ import annotations

import ast
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from propensity import docgen, verbs
from propensity.cli import VERBS, build_parser

PACKAGE = Path(__file__).resolve().parents[1] / "libs" / "propensity"
#: What each layer may import from the project (besides itself).
ALLOWED_BELOW = {"core": {"core"}, "models": {"core", "models"}}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every project import in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "propensity"]


def _layer(module: str) -> str:
    """``core``, ``models``, ``stages.<name>`` or ``top``."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("core", "models"):
        return parts[1]
    if len(parts) > 2 and parts[1] == "stages":
        return f"stages.{parts[2]}"
    return "top"


def violations(files: list[Path]) -> list[str]:
    """Every import that breaks the layering: upwards, or from one stage package into another."""
    found = []
    for path in files:
        layer = _layer(_module(path))
        for line, name in _imports(path):
            target = _layer(name)
            if layer == "top" or target == layer or (target in ("core", "models") and layer.startswith("stages.")):
                continue
            if target in ALLOWED_BELOW.get(layer, set()):
                continue
            found.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({layer}) imports {name} ({target})")
    return found


def test_layers_never_import_upwards_and_stages_never_import_each_other() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 40
    assert violations(files) == []


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    bad = PACKAGE / "stages" / "scoring" / "_probe_for_test.py"
    bad.write_text("def f() -> None:\n    from propensity.stages.features import build_training_examples\n")
    try:
        assert violations([bad]) == ["propensity/stages/scoring/_probe_for_test.py:2 (stages.scoring) imports"
                                     " propensity.stages.features.build_training_examples (stages.features)"]
    finally:
        bad.unlink()
    core = PACKAGE / "core" / "_probe_for_test.py"
    core.write_text("import propensity.models.registry\n")
    try:
        assert len(violations([core])) == 1
    finally:
        core.unlink()


def test_generated_files_are_current() -> None:
    stale = docgen.stale()
    assert stale == [], f"stale generated files (run `make docs`): {[str(p) for p in stale]}"


def test_verbs_are_listed_once_and_everything_follows_the_list() -> None:
    assert set(VERBS) == {*verbs.JOB_VERBS, *verbs.TOOL_VERBS}
    subparsers = next(a for a in build_parser()._actions if a.dest == "verb")
    assert list(subparsers.choices) == [*verbs.JOB_VERBS, *verbs.TOOL_VERBS]  # type: ignore[attr-defined]
    scripts = {ep.name: ep for ep in entry_points(group="console_scripts") if ep.name.startswith("propensity")}
    assert set(scripts) == {"propensity", *(f"propensity-{v}" for v in verbs.JOB_VERBS)}
    for verb in verbs.JOB_VERBS:
        assert callable(scripts[f"propensity-{verb}"].load())
    jobs = {p.stem for p in (PACKAGE.parents[1] / "jobs").glob("*.py")}
    assert jobs == set(verbs.JOB_VERBS)


def test_an_unknown_entry_point_is_an_attribute_error() -> None:
    import propensity.cli

    with pytest.raises(AttributeError):
        propensity.cli.demo_entry  # noqa: B018 (demo is a tool verb, not a job)
