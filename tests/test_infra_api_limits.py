"""Each Google API's documented limits, checked before anything is planned (infra/gcp_limits.py
cites the sources; docs/ARCHITECTURE.md, "API limits", lists them). Every rule is tested on values
the API takes and on values it refuses, so that a rule that checked nothing would fail here."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.infra import ROOT, infra_module, run_program, stack_config

LABEL = re.compile(r"^[a-z0-9_-]{0,63}$")


def all_labels(stack: Any) -> list[tuple[str, dict[str, str]]]:
    """Every labels / userLabels map the program sets on a resource, with the resource."""
    found = []
    for resource in stack.resources:
        for field in ("labels", "userLabels"):
            value = resource.inputs.get(field)
            if (
                isinstance(value, dict)
                and resource.type != "gcp:monitoring/notificationChannel:NotificationChannel"
            ):
                found.append((f"{resource.name}.{field}", value))
    return found


@pytest.mark.parametrize("stack_name", ["dev", "A_Very.Odd-Name", "x" * 80])
def test_every_label_is_one_google_cloud_takes(stack_name: str) -> None:
    stack = run_program(stack_config(stack_name), stack=stack_name)

    labels = all_labels(stack)

    assert labels
    for where, values in labels:
        for key, value in values.items():
            assert re.match(r"^[a-z][a-z0-9_-]{0,62}$", key), (where, key)
            assert LABEL.match(value), (where, key, value)


@pytest.mark.parametrize(
    "labels, refused",
    [({"stack": "dev"}, False), ({"stack": ""}, False), ({"stack": "Dev"}, True),
     ({"stack": "a.b"}, True), ({"stack": "x" * 64}, True), ({"1st": "x"}, True),
     ({"k" * 64: "x"}, True)],
)  # fmt: skip
def test_the_label_rule_refuses_what_google_cloud_refuses(
    labels: dict[str, str], refused: bool
) -> None:
    limits = infra_module("gcp_limits")

    if refused:
        with pytest.raises(ValueError, match="is not a Google Cloud label"):
            limits.check_labels(labels, "the test")
    else:
        limits.check_labels(labels, "the test")


@pytest.mark.parametrize(
    "period, timeout, refused",
    [("60s", "10s", False), ("900s", "60s", False), ("120s", "10s", True),
     ("60s", "0s", True), ("60s", "61s", True), ("60s", "10", True)],
)  # fmt: skip
def test_uptime_check_periods_and_timeouts(period: str, timeout: str, refused: bool) -> None:
    limits = infra_module("gcp_limits")
    alerts = infra_module("alerts")

    limits.check_uptime(alerts.UPTIME_PERIOD, alerts.UPTIME_TIMEOUT)  # what the program uses
    if refused:
        with pytest.raises(ValueError, match="uptime check"):
            limits.check_uptime(period, timeout)
    else:
        limits.check_uptime(period, timeout)


def grafana_with(tmp_path: Path, **grid: int) -> Path:
    """The Grafana dashboard with its first panel moved."""
    document = json.loads((ROOT / "local" / "grafana" / "dashboards" / "modelrun.json").read_text())
    document["panels"][0]["gridPos"].update(grid)
    path = tmp_path / "modelrun.json"
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(
    "grid, refused",
    [({}, False), ({"x": 20, "w": 4}, False), ({"x": 21, "w": 4}, True), ({"w": 0}, True),
     ({"h": 0}, True), ({"x": -1}, True)],
)  # fmt: skip
def test_dashboard_tiles_keep_within_the_mosaic(
    tmp_path: Path, grid: dict[str, int], refused: bool
) -> None:
    # Grafana's 24 columns are the mosaic's 48 (grid x2): x 21 + w 4 ends at column 50.
    dashboard = infra_module("dashboard")
    source = grafana_with(tmp_path, **grid)

    if refused:
        with pytest.raises(ValueError, match="must lie within the 48 columns"):
            dashboard.dashboard(source)
    else:
        dashboard.dashboard(source)


def test_display_names_keep_within_their_limits() -> None:
    limits = infra_module("gcp_limits")
    stack = run_program(stack_config(**{"modelrun:githubRepository": "an-org/" + "r" * 90}))

    for resource in stack.resources:
        name = resource.inputs.get("displayName")
        if resource.type.startswith("gcp:iam/workloadIdentityPool"):
            assert 1 <= len(name) <= limits.POOL_DISPLAY_NAME, name
        if resource.type == "gcp:serviceaccount/account:Account":
            assert 1 <= len(name) <= limits.ACCOUNT_DISPLAY_NAME, name
    with pytest.raises(ValueError, match="must be 1..32 characters"):
        limits.check_display_name("x" * 33, limits.POOL_DISPLAY_NAME, "the pool")
