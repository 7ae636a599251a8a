"""The Pulumi program under Pulumi's mocks (tests/support/infra.py): the instance sizes Cloud
Run admits and refuses (infra/gcp_limits.py cites the documentation)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.support.infra import (
    run_program,
    stack_config,
)

REFUSED_SIZES = [
    ({"modelrun:cpu": "two"}, "modelrun:cpu must be a number of vCPUs"),
    ({"modelrun:cpu": "0"}, "modelrun:cpu below 1 must be from 0.08"),
    ({"modelrun:cpu": "0.05", "modelrun:concurrency": "1"}, "from 0.08"),
    ({"modelrun:cpu": "0.1234", "modelrun:concurrency": "1"}, "in steps of 0.001"),
    ({"modelrun:cpu": "1.5"}, "above 1 must be 2, 4, 6 or 8"),
    ({"modelrun:cpu": "3"}, "above 1 must be 2, 4, 6 or 8"),
    ({"modelrun:cpu": "16", "modelrun:memory": "32Gi"}, "must be 2, 4, 6 or 8"),
    ({"modelrun:memory": "lots"}, "modelrun:memory must be like 512Mi"),
    ({"modelrun:cpu": "4", "modelrun:memory": "1Gi"}, "at least 2048Mi with modelrun:cpu 4"),
    ({"modelrun:cpu": "6", "modelrun:memory": "2Gi"}, "at least 4096Mi with modelrun:cpu 6"),
    ({"modelrun:cpu": "8", "modelrun:memory": "3Gi"}, "at least 4096Mi with modelrun:cpu 8"),
    ({"modelrun:cpu": "1", "modelrun:memory": "5Gi"}, "5Gi needs modelrun:cpu of at least 2"),
    ({"modelrun:cpu": "2", "modelrun:memory": "9Gi"}, "needs modelrun:cpu of at least 4"),
    ({"modelrun:cpu": "4", "modelrun:memory": "17Gi"}, "needs modelrun:cpu of at least 6"),
    ({"modelrun:cpu": "6", "modelrun:memory": "25Gi"}, "needs modelrun:cpu of at least 8"),
    ({"modelrun:cpu": "8", "modelrun:memory": "33Gi"}, "at most 32Gi"),
    ({"modelrun:cpu": "1", "modelrun:memory": "256Mi"}, "at least 512Mi"),
    ({"modelrun:cpu": "0.5"}, "requires modelrun:concurrency 1, got 40"),
    (
        {"modelrun:cpu": "0.4", "modelrun:memory": "1Gi", "modelrun:concurrency": "1"},
        "1Gi needs modelrun:cpu of at least 0.5",
    ),
    (
        {"modelrun:cpu": "0.5", "modelrun:memory": "2Gi", "modelrun:concurrency": "1"},
        "2Gi needs modelrun:cpu of at least 1",
    ),
    ({"modelrun:concurrency": "1001"}, "modelrun:concurrency must be 1..1000"),
]


@pytest.mark.parametrize("changes, message", REFUSED_SIZES)
def test_sizes_cloud_run_refuses_are_refused_naming_the_setting(
    changes: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        run_program(stack_config(**changes))

    assert refused.value.setting in changes  # the error names the setting to change


@pytest.mark.parametrize(
    "changes, generation",
    [
        (
            {
                "modelrun:cpu": "0.08",
                "modelrun:memory": "128Mi",
                "modelrun:concurrency": "1",
                "modelrun:metricsSidecar": "false",
            },
            "GEN1",
        ),
        ({"modelrun:cpu": "0.5", "modelrun:memory": "1Gi", "modelrun:concurrency": "1"}, "GEN1"),
        ({"modelrun:cpu": "1", "modelrun:memory": "4Gi"}, "GEN2"),
        ({"modelrun:cpu": "2", "modelrun:memory": "8Gi"}, "GEN2"),
        ({"modelrun:cpu": "4", "modelrun:memory": "2Gi"}, "GEN2"),
        ({"modelrun:cpu": "8", "modelrun:memory": "32Gi"}, "GEN2"),
        ({"modelrun:cpu": "2000m", "modelrun:memory": "2G"}, "GEN2"),
    ],
)
def test_sizes_cloud_run_admits_are_deployed(changes: dict[str, str], generation: str) -> None:
    stack = run_program(stack_config(**changes))

    template = stack.one("gcp:cloudrunv2/service:Service").inputs["template"]
    assert template["executionEnvironment"] == f"EXECUTION_ENVIRONMENT_{generation}"
    # What Cloud Run admits and bills is the instance: every container's limits together (a
    # decimal size, 2G, loses its fraction of a MiB in the app's share).
    cpu, mib = instance_total(template)
    assert cpu == vcpus(changes["modelrun:cpu"])
    assert 0 <= mebibytes(changes["modelrun:memory"]) - mib < 1


def vcpus(text: str) -> float:
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def mebibytes(text: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi|M|G)", text).groups()  # type: ignore[union-attr]
    return int(number) * {"Mi": 1.0, "Gi": 1024.0, "M": 1e6 / 2**20, "G": 1e9 / 2**20}[unit]


def instance_total(template: dict[str, Any]) -> tuple[float, float]:
    """The instance's vCPUs and MiB: the sum of its containers' limits (none set: Cloud Run's
    default container size, 1 vCPU and 512 MiB)."""
    limits = [c.get("resources", {}).get("limits") or {} for c in template["containers"]]
    return (
        round(sum(vcpus(lim.get("cpu", "1")) for lim in limits), 3),
        round(sum(mebibytes(lim.get("memory", "512Mi")) for lim in limits), 3),
    )


@pytest.mark.parametrize("sidecar", ["true", "false"])
@pytest.mark.parametrize("cpu, memory", [("1", "1Gi"), ("2", "4Gi"), ("0.5", "512Mi")])
def test_the_instance_total_is_the_configured_size(cpu: str, memory: str, sidecar: str) -> None:
    changes = {"modelrun:cpu": cpu, "modelrun:memory": memory, "modelrun:metricsSidecar": sidecar}
    if vcpus(cpu) < 1:
        changes["modelrun:concurrency"] = "1"
    stack = run_program(stack_config(**changes))

    template = stack.one("gcp:cloudrunv2/service:Service").inputs["template"]

    assert instance_total(template) == (vcpus(cpu), mebibytes(memory))
    assert len(template["containers"]) == (2 if sidecar == "true" else 1)


def test_an_instance_too_small_to_share_with_the_collector_is_refused() -> None:
    small = {"modelrun:cpu": "0.25", "modelrun:memory": "512Mi", "modelrun:concurrency": "1"}

    with pytest.raises(ValueError, match="modelrun:metricsSidecar takes 250m vCPU and 256Mi"):
        run_program(stack_config(**small))
    run_program(stack_config(**small, **{"modelrun:metricsSidecar": "false"}))
