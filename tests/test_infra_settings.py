"""The Pulumi program under Pulumi's mocks (tests/support/infra.py): the service's settings
reach its container, and a new image rolls out gradually between revisions."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.pulumi_rules import load_project
from tests.support.infra import (
    ROOT,
    Stack,
    container,
    infra_module,
    run_program,
    stack_config,
)

# --- service settings ------------------------------------------------------------------


def test_service_settings_reach_the_container() -> None:
    stack = run_program(
        stack_config(
            **{
                "modelrun:modelRefreshSeconds": "60",
                "modelrun:corsOrigins": "https://app.example.com",
                "modelrun:rateLimitPerSecond": "0",
            }
        )
    )

    env = {e["name"]: e.get("value") for e in container(stack)["envs"]}
    assert env["MODEL_REFRESH_SECONDS"] == "60"
    assert env["CORS_ORIGINS"] == "https://app.example.com"
    assert env["RATE_LIMIT_PER_SECOND"] == "0"
    assert "LOG_LEVEL" not in env  # unset: the service's own default


@pytest.mark.parametrize(
    "changes, message, setting",
    [
        (
            {"modelrun:logLevel": "LOUD"},
            r"modelrun:logLevel \(LOG_LEVEL\): LOG_LEVEL='LOUD'",
            "modelrun:logLevel",
        ),
        (
            {"modelrun:corsOrigins": "*"},
            r"modelrun:corsOrigins \(CORS_ORIGINS\)",
            "modelrun:corsOrigins",
        ),
        (  # a cross-setting rule of the service's, refused before the deploy
            {"modelrun:modelRefreshSeconds": "60", "modelrun:modelVersion": "20260101T000000Z-ab"},
            "MODEL_REFRESH_SECONDS follows current.json",
            "modelrun:modelRefreshSeconds",
        ),
    ],
)
def test_service_settings_the_service_would_refuse_are_refused(
    changes: dict[str, str], message: str, setting: str
) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        run_program(stack_config(**changes))

    assert refused.value.setting == setting  # the service's error names its variable


def configuration_table() -> dict[str, str]:
    """README's configuration table: each variable -> its "in the cloud" cell."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            for variable in re.findall(r"`([A-Z0-9_]+)`", cells[0]):
                rows[variable] = cells[-1]
    return rows


def test_every_configuration_variable_is_set_in_the_cloud_or_explained() -> None:
    """Each variable of the README's table is set by infra, from the stack setting its "in the
    cloud" cell names, or that cell says "not set" and why."""
    rows = configuration_table()
    declared = set(load_project((ROOT / "Pulumi.yaml").read_text()).config)
    envs = {}
    # the two ways to pass keys, and a pinned model
    for changes in ({"modelrun:modelSha256": "0" * 64}, {"modelrun:keyRefreshSeconds": "60"}):
        envs.update({e["name"]: e for e in container(run_program(stack_config(**changes)))["envs"]})
    passed_through = set(infra_module("stack_config").SERVICE_SETTINGS)

    assert len(rows) > 25
    for variable, cell in rows.items():
        if cell.startswith("not set: "):
            assert variable not in envs, f"{variable} is set by infra, yet the README says not"
            continue
        assert variable in envs or variable in passed_through, f"infra never sets {variable}"
        for key in re.findall(r"`((?:modelrun|gcp):\w+)`", cell):
            assert key in declared | {"gcp:project"}, f"{variable}'s cell names unknown {key}"
    for variable in passed_through:
        assert f"`modelrun:{infra_module('stack_config').setting_key(variable)}`" == rows[variable]


# --- a new image rolled out gradually: traffic between revisions ------------------------


def traffics(stack: Stack) -> list[dict[str, Any]]:
    return list(stack.one("gcp:cloudrunv2/service:Service").inputs["traffics"])


def test_all_traffic_goes_to_the_latest_revision_unless_split(stack: Stack) -> None:
    # Stated, not left out: the provider keeps a split it no longer sees (traffics is computed).
    assert traffics(stack) == [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100}]
    assert stack.outputs["candidateUrl"] == stack.outputs["serviceUrl"]
    assert stack.outputs["latestRevision"] == "modelrun-dev-00002-xyz"  # the short name


def test_a_split_keeps_the_stable_revision_and_tags_both() -> None:
    stack = run_program(
        stack_config(
            **{
                "modelrun:trafficStableRevision": "modelrun-dev-00001-abc",
                "modelrun:trafficLatestPercent": 10,
            }
        )
    )
    assert traffics(stack) == [
        {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 10, "tag": "candidate"},
        {
            "type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
            "revision": "modelrun-dev-00001-abc",
            "percent": 90,
            "tag": "stable",
        },
    ]
    assert sum(t["percent"] for t in traffics(stack)) == 100
    # Cloud Run's tag URL: https://TAG---HOST; the deploy workflow smoke-tests it.
    assert stack.outputs["candidateUrl"] == "https://candidate---modelrun-dev-abc-ew.a.run.app"
    for tag in ("candidate", "stable"):  # a tag is part of a DNS name: lowercase, short
        assert re.fullmatch(r"[a-z][a-z0-9-]{0,45}", tag)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"modelrun:trafficLatestPercent": 50}, "needs modelrun:trafficStableRevision"),
        (
            {"modelrun:trafficStableRevision": "other-service-00001-abc"},
            "must name a revision of modelrun-dev",
        ),
        (
            {
                "modelrun:trafficStableRevision": "modelrun-dev-00001-abc",
                "modelrun:trafficLatestPercent": 101,
            },
            "must be 0..100",
        ),
    ],
)
def test_a_split_cloud_run_would_refuse_is_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        run_program(stack_config(**changes))

    assert refused.value.setting in changes  # the error names the setting to change


def test_model_memory_is_half_the_instance_shared_among_its_workers() -> None:
    env = {e["name"]: e.get("value") for e in container(run_program(stack_config()))["envs"]}
    assert env["MODEL_MEMORY_MB"] == "384"  # 1 GiB less the collector's 256 MiB, one worker
    two = run_program(stack_config(**{"modelrun:cpu": "2", "modelrun:memory": "4Gi"}))
    env = {e["name"]: e.get("value") for e in container(two)["envs"]}
    assert (env["WORKERS"], env["MODEL_MEMORY_MB"]) == ("2", "960")
    set_one = run_program(stack_config(**{"modelrun:modelMemoryMb": "300"}))
    env = {e["name"]: e.get("value") for e in container(set_one)["envs"]}
    assert env["MODEL_MEMORY_MB"] == "300"
