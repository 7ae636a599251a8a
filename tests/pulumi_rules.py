"""The Pulumi CLI's own rules for Pulumi.yaml and Pulumi.<stack>.yaml, applied here.

The CLI cannot be installed on this machine, so these rules are read from its source and written
down as Python, message for message, so that a project file the CLI would refuse fails our suite
with the CLI's own words. Sources (pulumi/pulumi, sdk/go/common/workspace/):

- project.json: the JSON schema of a project file. A config entry is a string, an integer, a
  boolean, an array (shorthand) or a declaration whose only attributes are type, items,
  description, secret, default and value; `type` is one of string, integer, boolean, array; an
  array (and an array's items) needs `items`.
- project.go, RewriteShorthandConfigValues: shorthand under a project key is its default, under
  another namespace its value.
- project.go, Project.Validate: no key takes both default and value; a project key's array needs
  items and a typed default must match its type (ValidateConfigValue); a key outside the
  project's namespace takes no type, no default, and must have a value.
- config.go, mergeConfig: a project key with neither default nor value that the stack does not
  set is reported as "Stack 'S' is missing configuration value(s) ..."; then every explicitly
  typed key's stack value is checked (validateStackConfigValue): a `secret` key must be encrypted
  in the stack, and the value must be of the declared type.
- project_test.go: the failing examples in tests/test_pulumi_rules.py are Pulumi's own.

What the program then receives is what this module returns: every key namespaced
(`modelrun:cpu`), every value a string (objects as JSON), secret keys listed apart.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TYPES = ("string", "integer", "boolean", "array")
DECLARATION_ATTRIBUTES = ("type", "items", "description", "secret", "default", "value")
GO_INTEGER = re.compile(r"^[+-]?[0-9]+$")  # what Go's strconv.Atoi accepts


class PulumiError(ValueError):
    """The CLI refuses the project or the stack, with this message."""


@dataclass(frozen=True)
class Declaration:
    """One entry of Pulumi.yaml's `config` (a ProjectConfigType)."""

    type: str | None = None
    items: dict[str, Any] | None = None
    description: str = ""
    secret: bool = False
    default: Any = None
    value: Any = None


@dataclass(frozen=True)
class Project:
    name: str
    config: dict[str, Declaration]


@dataclass(frozen=True)
class StackValue:
    """A value in a stack file: a string, or JSON for an object; `secure` when encrypted."""

    text: str
    secure: bool = False
    is_object: bool = False


@dataclass
class MergedConfig:
    """The configuration the program receives: namespaced keys, string values."""

    values: dict[str, str] = field(default_factory=dict)
    secret_keys: list[str] = field(default_factory=list)


def load_project(text: str) -> Project:
    """Parse and validate a Pulumi.yaml as the CLI's LoadProject does."""
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict):
        raise PulumiError(f"expected project to be an object, was '{type(raw).__name__}'")
    name = raw.get("name")
    if "name" not in raw:
        raise PulumiError("project is missing a 'name' attribute")
    if not isinstance(name, str) or not name:
        raise PulumiError("project is missing a non-empty string 'name' attribute")
    if not raw.get("runtime"):
        raise PulumiError("project is missing a 'runtime' attribute")
    config = raw.get("config") or {}
    if isinstance(config, str):  # the deprecated spelling of stackConfigDir
        config = {}
    if not isinstance(config, dict):
        raise PulumiError("#/config: expected object or null")
    declarations = {key: _declaration(name, key, entry) for key, entry in config.items()}
    project = Project(name, declarations)
    _validate(project)
    return project


def load_stack(project: Project, text: str) -> dict[str, StackValue]:
    """Parse a Pulumi.<stack>.yaml's config, every key namespaced (bare keys are the project's)."""
    raw = yaml.safe_load(text) or {}
    values: dict[str, StackValue] = {}
    for key, value in (raw.get("config") or {}).items():
        full = key if ":" in key else f"{project.name}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            values[full] = StackValue(str(value["secure"]), secure=True)
        elif isinstance(value, dict | list):
            values[full] = StackValue(json.dumps(value), is_object=True)
        else:
            values[full] = StackValue(_go_format(value))
    return values


def merge(
    stack_name: str,
    project: Project,
    stack: dict[str, StackValue],
    decrypt: dict[str, str] | None = None,
) -> MergedConfig:
    """Apply the project's defaults and values to the stack, then validate it (mergeConfig).

    `decrypt` gives the plaintext of the stack's secure values, as the secrets provider would.
    """
    merged = dict(stack)
    missing = []
    for key in sorted(project.config):
        declaration = project.config[key]
        full = _namespaced(project.name, key)
        if full in merged:
            continue
        source = declaration.default if declaration.default is not None else declaration.value
        if source is None:
            if full.split(":", 1)[0] == project.name:
                missing.append(key)
            continue
        merged[full] = _config_value(source)
    if missing:
        noun = "value" if len(missing) == 1 else "values"
        raise PulumiError(
            f"Stack '{stack_name}' is missing configuration {noun} {_missing_keys(missing)}"
        )
    plaintext = {
        k: (decrypt or {}).get(k, "[secret]") if v.secure else v.text for k, v in merged.items()
    }
    for key in sorted(project.config):
        declaration = project.config[key]
        full = _namespaced(project.name, key)
        if declaration.type is None or full not in merged:
            continue
        value = merged[full]
        if declaration.secret and not value.secure:
            raise PulumiError(
                f"Stack '{stack_name}' with configuration key '{key}' must be encrypted "
                "as it's secret"
            )
        content: Any = json.loads(plaintext[full]) if value.is_object else plaintext[full]
        if not valid_value(declaration.type, declaration.items, content):
            raise PulumiError(
                f"Stack '{stack_name}' with configuration key '{key}' must be of type "
                f"'{_full_type_name(declaration.type, declaration.items)}'"
            )
    return MergedConfig(plaintext, sorted(k for k, v in merged.items() if v.secure))


def load(
    project_file: Path, stack_name: str, decrypt: dict[str, str] | None = None
) -> MergedConfig:
    """Load Pulumi.yaml and its Pulumi.<stack>.yaml beside it, and merge them."""
    project = load_project(project_file.read_text())
    stack_file = project_file.with_name(f"Pulumi.{stack_name}.yaml")
    stack = load_stack(project, stack_file.read_text() if stack_file.exists() else "")
    return merge(stack_name, project, stack, decrypt)


def valid_value(type_name: str, items: dict[str, Any] | None, value: Any) -> bool:
    """ValidateConfigValue: does a value (from YAML, or a stack's string) fit the type?"""
    if type_name == "string":
        return isinstance(value, str)
    if type_name == "integer":
        if isinstance(value, bool):
            return False
        if isinstance(value, int):
            return True
        if isinstance(value, float):
            return value == int(value)
        return isinstance(value, str) and bool(GO_INTEGER.match(value))
    if type_name == "boolean":
        return isinstance(value, bool) or value in ("true", "false")
    if not isinstance(value, list) or items is None:
        return False
    return all(valid_value(items["type"], items.get("items"), item) for item in value)


def _declaration(project: str, key: str, entry: Any) -> Declaration:
    where = f"#/config/{key}"
    if isinstance(entry, bool | int | str | list):
        # RewriteShorthandConfigValues
        if _namespaced(project, key).split(":", 1)[0] == project:
            return Declaration(default=entry)
        return Declaration(value=entry)
    if not isinstance(entry, dict):
        raise PulumiError(f"{where}: expected string, integer, boolean or object")
    for attribute in entry:
        if attribute not in DECLARATION_ATTRIBUTES:
            allowed = ", ".join(f"'{a}'" for a in DECLARATION_ATTRIBUTES)
            raise PulumiError(
                f"{where}: '{attribute}' not allowed; the allowed attributes are {allowed}"
            )
    type_name = entry.get("type")
    if type_name is not None and type_name not in TYPES:
        raise PulumiError(f"{where}/type: value must be one of {', '.join(TYPES)}")
    if "items" in entry:
        _check_items(f"{where}/items", entry["items"])
    if "secret" in entry and not isinstance(entry["secret"], bool):
        raise PulumiError(f"{where}/secret: expected boolean")
    return Declaration(
        type=type_name,
        items=entry.get("items"),
        description=entry.get("description", ""),
        secret=bool(entry.get("secret", False)),
        default=entry.get("default"),
        value=entry.get("value"),
    )


def _check_items(where: str, items: Any) -> None:
    if not isinstance(items, dict) or "type" not in items:
        raise PulumiError(f"{where}: missing properties: 'type'")
    if items["type"] not in TYPES:
        raise PulumiError(f"{where}/type: value must be one of {', '.join(TYPES)}")
    if items["type"] == "array":
        if "items" not in items:
            raise PulumiError(f"{where}: missing properties: 'items'")
        _check_items(f"{where}/items", items["items"])


def _validate(project: Project) -> None:
    for key, declaration in project.config.items():
        if declaration.default is not None and declaration.value is not None:
            raise PulumiError(
                f"project config '{key}' cannot have both a 'default' and 'value' attribute"
            )
        if _namespaced(project.name, key).split(":", 1)[0] == project.name:
            if declaration.type == "array" and declaration.items is None:
                raise PulumiError(
                    f"The configuration key '{key}' declares an array but does not specify "
                    "the underlying type via the 'items' attribute"
                )
            if (
                declaration.type is not None
                and declaration.default is not None
                and not valid_value(declaration.type, declaration.items, declaration.default)
            ):
                raise PulumiError(
                    f"The default value specified for configuration key '{key}' is not of the "
                    f"expected type '{_full_type_name(declaration.type, declaration.items)}'"
                )
        else:
            if declaration.type is not None:
                raise PulumiError(
                    f"Configuration key '{key}' is not namespaced by the project and should "
                    "not define a type"
                )
            if declaration.default is not None:
                raise PulumiError(
                    f"Configuration key '{key}' is not namespaced by the project and should "
                    "not define a default value. Did you mean to use the 'value' attribute "
                    "instead of 'default'?"
                )
            if declaration.value is None:
                raise PulumiError(
                    f"Configuration key '{key}' is namespaced and must provide an attribute 'value'"
                )


def _namespaced(project: str, key: str) -> str:
    return key if ":" in key else f"{project}:{key}"


def _config_value(value: Any) -> StackValue:
    """createConfigValue: a primitive as Go's %v prints it, anything else as JSON."""
    if isinstance(value, bool | int | str):
        return StackValue(_go_format(value))
    return StackValue(json.dumps(value), is_object=True)


def _go_format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _full_type_name(type_name: str, items: dict[str, Any] | None) -> str:
    if items is not None:
        return f"array<{_full_type_name(items['type'], items.get('items'))}>"
    return type_name


def _missing_keys(keys: list[str]) -> str:
    """formatMissingKeys: 'a', 'a' and 'b', 'a', 'b' and 'c'."""
    if len(keys) == 1:
        return f"'{keys[0]}'"
    quoted = [f"'{k}'" for k in sorted(keys)]
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]
