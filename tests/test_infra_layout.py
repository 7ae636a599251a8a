"""infra/'s layout (issue 32): Pulumi's language host runs the program with infra/ first on
sys.path, so its modules import each other by top-level name, as in Pulumi's own examples. Such a
name must not shadow a library; each component is handed the settings it uses (its Args, built in
__main__.py), never the whole StackConfig; and tests load infra/ in one place."""

from __future__ import annotations

import ast
import importlib.machinery
import re
import sys
from pathlib import Path

from tests.support.infra import INFRA, ROOT

# Libraries named as infra/'s modules once were (PyPI's config, PyGithub's github, limits, names):
# not installed here, so only this list can tell that infra/ must not take their names again.
LIBRARIES = frozenset({"config", "github", "limits", "names"})
# The only modules that see the whole stack configuration: the one that reads it, and the wiring.
WHOLE_CONFIG = frozenset({"stack_config.py", "__main__.py"})


def infra_modules() -> list[str]:
    return sorted(p.stem for p in INFRA.glob("*.py") if p.stem != "__main__")


def test_no_module_of_infra_shadows_a_library() -> None:
    # Where Python looks when infra/ is not first: the standard library, the venv, the repo root.
    elsewhere = [p for p in sys.path if p and Path(p).resolve() != INFRA.resolve()]

    for name in infra_modules():
        assert name not in sys.stdlib_module_names, f"infra/{name}.py shadows the stdlib's"
        assert name not in LIBRARIES, f"infra/{name}.py takes a library's name"
        found = importlib.machinery.PathFinder.find_spec(name, elsewhere)
        assert found is None, f"infra/{name}.py shadows {found.origin if found else ''}"


def components() -> list[tuple[str, ast.ClassDef]]:
    found = []
    for path in sorted(INFRA.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                ast.unparse(base) == "pulumi.ComponentResource" for base in node.bases
            ):
                found.append((path.name, node))
    return found


def test_each_component_takes_an_args_dataclass_not_the_stack_config() -> None:
    assert len(components()) > 15  # every component of the program, not none
    for module, component in components():
        init = next(
            f for f in component.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"
        )
        name, args = init.args.args[1:3]  # after self
        annotation = ast.unparse(args.annotation) if args.annotation else ""
        assert (name.arg, args.arg) == ("name", "args"), f"{module}: {component.name}"
        assert annotation.endswith("Args"), f"{module}: {component.name} takes {annotation}"
    for path in INFRA.glob("*.py"):
        if path.name not in WHOLE_CONFIG:
            assert "StackConfig" not in path.read_text(), f"{path.name} sees the whole config"


def test_tests_load_infra_in_one_place() -> None:
    one_place = ROOT / "tests" / "support" / "infra.py"
    for path in (ROOT / "tests").rglob("*.py"):
        if path != one_place and path != Path(__file__):
            assert not re.search(r"sys\.path\.(insert|append)", path.read_text()), path
