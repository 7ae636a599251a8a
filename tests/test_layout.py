"""The map's import rule (docs/ARCHITECTURE.md, "The map"), read from every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Which part may import which: core is imported by all and imports none of them.
FORBIDDEN = {
    "function.core": ("function.service", "function.batch", "training", "infra", "local"),
    "function.service": ("function.batch", "training", "infra", "local"),
    "function.batch": ("function.service", "training", "infra", "local"),
    "training": ("function.service", "infra"),  # batch and local: only its batch and serve verbs
    "infra": ("function.service", "function.batch", "training", "local"),
    "local": ("infra",),  # the launchers: any part they launch
}
# training/ reaches these only from the verbs that hand over to them (training/__main__.py).
HANDED_OVER = {"training/__main__.py": {"function.batch.__main__", "local.serve"}}


def imported(source: str) -> set[str]:
    """Every module a source imports, at any depth (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def violations(part: str, sources: dict[str, str]) -> list[str]:
    """`module imports target` for each import of a part its rule forbids."""
    return [
        f"{name} imports {module}"
        for name, source in sorted(sources.items())
        for module in sorted(imported(source))
        if any(module == banned or module.startswith(banned + ".") for banned in FORBIDDEN[part])
    ]


def sources_of(part: str) -> dict[str, str]:
    folder = ROOT / Path(*part.split("."))
    return {str(p.relative_to(ROOT)): p.read_text() for p in folder.rglob("*.py")}


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_each_part_imports_only_what_the_map_allows(part: str) -> None:
    assert sources_of(part), part
    assert violations(part, sources_of(part)) == []


def test_training_reaches_batch_and_local_only_from_the_verbs_that_hand_over() -> None:
    found = {
        (name, module)
        for name, source in sources_of("training").items()
        for module in imported(source)
        if module.split(".")[0] == "local" or module.startswith("function.batch")
    }
    assert found == {(name, m) for name, ms in HANDED_OVER.items() for m in ms}


def test_the_rule_sees_a_lazy_import_inside_a_function() -> None:
    source = "def f():\n    from function.service.app import build\n"
    assert violations("function.core", {"core/x.py": source}) == [
        "core/x.py imports function.service.app"
    ]
    assert violations("function.service", {"service/x.py": source}) == []
