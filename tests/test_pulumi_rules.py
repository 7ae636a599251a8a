"""Pulumi.yaml and every committed Pulumi.<stack>.yaml, checked by the Pulumi CLI's own rules.

The rules live in tests/pulumi_rules.py (read from pulumi/pulumi's
sdk/go/common/workspace/project.go, project.json and config.go). The first group of tests runs
Pulumi's own examples from project_test.go through them, so that a rule written wrongly here
fails; the second applies them to this repository's files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pulumi_rules import PulumiError, load, load_project, load_stack, merge

ROOT = Path(__file__).resolve().parent.parent
STACK_FILES = sorted(ROOT.glob("Pulumi.*.yaml"))


# --- Pulumi's own examples (project_test.go) --------------------------------------------

REFUSED_PROJECTS = [
    (  # TestNamespacedProjectConfigShouldNotBeExplicitlyTyped
        "name: test\nruntime: dotnet\nconfig:\n  aws:region:\n    type: string\n"
        "    value:\n      region: us-west-1",
        "Configuration key 'aws:region' is not namespaced by the project and should not "
        "define a type",
    ),
    (  # TestProjectConfigCannotHaveBothValueAndDefault
        "name: test\nruntime: dotnet\nconfig:\n  instanceSize:\n    type: string\n"
        "    default: t3.micro\n    value: t4.large",
        "project config 'instanceSize' cannot have both a 'default' and 'value' attribute",
    ),
    (  # TestProjectConfigCannotBeTypedArrayWithoutItems (also refused by project.json)
        "name: test\nruntime: dotnet\nconfig:\n  instanceSize:\n    type: array\n"
        "    default: [t3.micro, t4.large]",
        "declares an array",
    ),
    (  # TestNamespacedProjectConfigShouldNotBeProvideDefault
        "name: test\nruntime: dotnet\nconfig:\n  aws:region:\n    default: us-west-1",
        "Configuration key 'aws:region' is not namespaced by the project and should not "
        "define a default value. Did you mean to use the 'value' attribute instead of "
        "'default'?",
    ),
    (  # TestProjectValidationFailsForIncorrectDefaultValueType
        "name: test\nruntime: dotnet\nconfig:\n  instanceSize:\n    type: integer\n"
        "    default: hello",
        "The default value specified for configuration key 'instanceSize' is not of the "
        "expected type 'integer'",
    ),
    (  # the same test, nested arrays
        "name: test\nruntime: dotnet\nconfig:\n  values:\n    type: array\n    items:\n"
        "      type: array\n      items:\n        type: string\n    default: [hello]",
        "The default value specified for configuration key 'values' is not of the expected "
        "type 'array<array<string>>'",
    ),
    (  # TestProjectValidationForNameAndRuntime / TestProjectLoadJSON
        "runtime: dotnet",
        "project is missing a 'name' attribute",
    ),
    ("name: test", "project is missing a 'runtime' attribute"),
    (  # project.json: a declaration has no other attributes
        "name: test\nruntime: dotnet\nconfig:\n  size:\n    type: string\n    defualt: x",
        "'defualt' not allowed",
    ),
    (  # Validate: a key of another namespace must carry a value
        "name: test\nruntime: dotnet\nconfig:\n  aws:region:\n    description: where",
        "Configuration key 'aws:region' is namespaced and must provide an attribute 'value'",
    ),
]


@pytest.mark.parametrize("text, message", REFUSED_PROJECTS)
def test_pulumis_refused_projects_are_refused_with_its_message(text: str, message: str) -> None:
    with pytest.raises(PulumiError) as refused:
        load_project(text)

    assert message in str(refused.value)


ACCEPTED_PROJECTS = [
    # TestProjectLoadsConfigSchemas
    "name: test\nruntime: dotnet\nconfig:\n  integerSchemaFull:\n    type: integer\n"
    "    description: a very important value\n    default: 1\n  integerSchemaSimple: 20\n"
    "  textSchemaFull:\n    type: string\n    default: t3.micro\n  textSchemaSimple: t4.large\n"
    "  booleanSchemaFull:\n    type: boolean\n    default: true\n  booleanSchemaSimple: false\n"
    "  simpleArrayOfStrings:\n    type: array\n    items:\n      type: string\n"
    "    default: [hello]\n  arrayOfArrays:\n    type: array\n    items:\n      type: array\n"
    "      items:\n        type: string\n  secretString:\n    type: string\n    secret: true\n",
    # TestNamespacedConfigValuesAreInheritedCorrectly
    "name: test\nruntime: dotnet\nconfig:\n  aws:region: us-west-1\n"
    '  pulumi:disable-default-providers: ["*"]\n  instanceSize: t3.micro',
]


@pytest.mark.parametrize("text", ACCEPTED_PROJECTS)
def test_pulumis_accepted_projects_load(text: str) -> None:
    load_project(text)


def test_stack_values_override_and_inherit_project_config() -> None:
    # TestStackConfigIsInheritedFromProjectConfig + TestNamespacedConfigValuesAreInheritedCorrectly
    project = load_project(
        "name: test\nruntime: dotnet\nconfig:\n  instanceSize: t3.micro\n  instanceCount: 20\n"
        "  protect: true\n  aws:region: us-west-1"
    )
    stack = load_stack(project, "config:\n  test:instanceSize: t4.large")

    merged = merge("dev", project, stack).values

    assert merged == {
        "test:instanceSize": "t4.large",
        "test:instanceCount": "20",
        "test:protect": "true",
        "aws:region": "us-west-1",
    }


@pytest.mark.parametrize(
    "project, message",
    [
        (  # TestStackConfigErrorsWhenMissingStackValueForConfigTypeWithNoDefault
            "config:\n  values:\n    type: array\n    items:\n      type: string",
            "Stack 'dev' is missing configuration value 'values'",
        ),
        (  # TestStackConfigErrorsWhenMissingTwoStackValueForConfigTypeWithNoDefault
            "config:\n  another:\n    type: string\n  values:\n    type: array\n    items:\n"
            "      type: string",
            "Stack 'dev' is missing configuration values 'another' and 'values'",
        ),
        (  # an untyped key without default is missing too: the type plays no part
            "config:\n  a:\n    description: x\n  b:\n    description: y\n  c:\n    description: z",
            "Stack 'dev' is missing configuration values 'a', 'b' and 'c'",
        ),
    ],
)
def test_a_project_key_without_default_must_be_set_by_the_stack(project: str, message: str) -> None:
    loaded = load_project("name: test\nruntime: dotnet\n" + project)

    with pytest.raises(PulumiError, match=message):
        merge("dev", loaded, load_stack(loaded, ""))


@pytest.mark.parametrize(
    "declaration, stack, message",
    [
        (  # TestStackConfigIntegerTypeIsCorrectlyValidated
            "importantNumber:\n    type: integer",
            "test:importantNumber: hello",
            "Stack 'dev' with configuration key 'importantNumber' must be of type 'integer'",
        ),
        (  # TestStackConfigErrorsWhenStackValueIsNotCorrectlyTyped
            "values:\n    type: array\n    items:\n      type: string\n    default: [value]",
            "test:values: someValue",
            "Stack 'dev' with configuration key 'values' must be of type 'array<string>'",
        ),
        (  # validateStackConfigValue: a secret key must be encrypted in the stack
            "password:\n    type: string\n    secret: true",
            "test:password: hunter2",
            "Stack 'dev' with configuration key 'password' must be encrypted as it's secret",
        ),
        (  # ... and a default counts as not encrypted
            'password:\n    type: string\n    secret: true\n    default: ""',
            "",
            "Stack 'dev' with configuration key 'password' must be encrypted as it's secret",
        ),
    ],
)
def test_stack_values_are_checked_against_declared_types(
    declaration: str, stack: str, message: str
) -> None:
    project = load_project(f"name: test\nruntime: dotnet\nconfig:\n  {declaration}")

    with pytest.raises(PulumiError, match=message):
        merge("dev", project, load_stack(project, f"config:\n  {stack}" if stack else ""))


def test_typed_stack_values_that_fit_are_accepted() -> None:
    project = load_project(
        "name: test\nruntime: dotnet\nconfig:\n  n:\n    type: integer\n  b:\n"
        "    type: boolean\n  s:\n    type: string\n    secret: true"
    )
    stack = load_stack(
        project, 'config:\n  test:n: "20"\n  test:b: true\n  test:s:\n    secure: v1:abc'
    )

    merged = merge("dev", project, stack, decrypt={"test:s": "plain"})

    assert merged.values == {"test:n": "20", "test:b": "true", "test:s": "plain"}
    assert merged.secret_keys == ["test:s"]


# --- this repository's project and stack files ----------------------------------------


def test_pulumi_yaml_loads() -> None:
    project = load_project((ROOT / "Pulumi.yaml").read_text())

    assert project.name == "modelrun"
    assert all(d.description for d in project.config.values())


def test_there_is_an_example_stack() -> None:
    assert ROOT / "Pulumi.dev.yaml" in STACK_FILES


@pytest.mark.parametrize("stack_file", STACK_FILES, ids=lambda p: p.name)
def test_every_committed_stack_merges_as_the_cli_would(stack_file: Path) -> None:
    stack = stack_file.name.split(".")[1]

    merged = load(ROOT / "Pulumi.yaml", stack)

    assert "gcp:project" in merged.values
    project = load_project((ROOT / "Pulumi.yaml").read_text())
    assert set(load_stack(project, stack_file.read_text())) <= set(project.config) | {
        "gcp:project"
    }, "the stack sets a key Pulumi.yaml does not describe"


@pytest.mark.parametrize("stack_file", STACK_FILES, ids=lambda p: p.name)
def test_no_committed_stack_pins_the_image(stack_file: Path) -> None:
    """A committed image would roll production back on an administrator's next `pulumi up`."""
    project = load_project((ROOT / "Pulumi.yaml").read_text())

    assert "modelrun:image" not in load_stack(project, stack_file.read_text())
