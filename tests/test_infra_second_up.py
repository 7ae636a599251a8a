"""Every `pulumi up` after the first: CI's run against the state an administrator's run left.

The engine and the providers cannot run here. What each provider stores after a create is
rebuilt from its documented behaviour (below, with sources), and the engine's update rule for
`ignoreChanges` is the one tests/test_infra.py applies (`planned_inputs`). CI's run must change the
service's image and nothing else, and only what the deployer's roles (docs/ARCHITECTURE.md,
"What a later `up` changes") allow it to change.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from tests.support.infra import (
    IMAGE,
    ROOT,
    Registered,
    Stack,
    account_email,
    at_path,
    iam_members,
    planned_inputs,
    run_program,
    stack_config,
)

DASHBOARD = "gcp:monitoring/dashboard:Dashboard"
SERVICE = "gcp:cloudrunv2/service:Service"
IMAGE_PATH = "template.containers[0].image"


def proto3_json(value: Any, in_map: bool = False) -> Any:
    """What the Monitoring API answers for a document it was sent: proto3's JSON mapping omits a
    field that holds its default (0, "", false, an empty list), except a map's entries (labels).
    Written apart from infra/dashboard.py's api_form, from the rule itself."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if in_map or item not in (0, "", False, [], {}):
                out[key] = item if key == "labels" else proto3_json(item)
        return out
    if isinstance(value, list):
        return [proto3_json(item) for item in value]
    return value


def dashboard_as_returned(sent: str) -> str:
    """The dashboard JSON the provider stores after create: the API's form of what was sent, with
    the fields the API computes (name, etag) and the defaults it fills in (an xyChart's
    chartOptions mode and a dataSet's targetAxis, both seen in terraform-provider-google#7242)."""
    document = proto3_json(json.loads(sent))
    document |= {"name": "projects/123/dashboards/abc", "etag": "e1"}
    for tile in document["mosaicLayout"]["tiles"]:
        chart = tile["widget"].get("xyChart")
        if chart is not None:
            chart.setdefault("chartOptions", {"mode": "COLOR"})
            for data_set in chart["dataSets"]:
                data_set.setdefault("targetAxis", "Y1")
    return json.dumps(document)


def remove_computed_keys(old: Any, new: Any) -> Any:
    """terraform-provider-google's `removeComputedKeys` (google/services/monitoring/
    resource_monitoring_dashboard.go): drop from the state every key the configuration lacks,
    recursing into maps and, index by index, into lists of maps. A key the *state* lacks is not
    forgiven."""
    for key in list(old):
        value = old[key]
        if new.get(key) is None:
            del old[key]
        elif isinstance(value, dict):
            old[key] = remove_computed_keys(value, new[key])
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict) and i < len(new[key]):
                    value[i] = remove_computed_keys(item, new[key][i])
    return old


def dashboard_unchanged(state: str, program: str) -> bool:
    """The provider's `monitoringDashboardDiffSuppress`: no diff when the state, less what the
    configuration lacks, equals the configuration."""
    old, new = json.loads(state), json.loads(program)
    return bool(remove_computed_keys(old, new) == new)


def provider_state(resource: Registered) -> dict[str, Any]:
    """What the provider holds for a resource after its create."""
    state = copy.deepcopy(resource.inputs)
    if resource.type == DASHBOARD:
        state["dashboardJson"] = dashboard_as_returned(state["dashboardJson"])
    return state


def changes(before: Stack, after: Stack) -> dict[str, list[str]]:
    """The top-level inputs each resource of `after` would update, against `before`'s state."""
    previous = {r.urn: r for r in before.resources}
    found: dict[str, list[str]] = {}
    for resource in after.resources:
        if resource.type.startswith(("modelrun:", "pulumi:")):
            continue
        old = previous.get(resource.urn)
        if old is None:
            found[resource.urn] = ["<create>"]
            continue
        state = provider_state(old)
        planned = planned_inputs(state, resource)
        differ = []
        for key in sorted(set(state) | set(planned)):
            if resource.type == DASHBOARD and key == "dashboardJson":
                if not dashboard_unchanged(state[key], planned[key]):
                    differ.append(key)
            elif state.get(key) != planned.get(key):
                differ.append(key)
        if differ:
            found[resource.urn] = differ
    return found


def without_image(inputs: dict[str, Any]) -> dict[str, Any]:
    copied = copy.deepcopy(inputs)
    copied["template"]["containers"][0]["image"] = None
    return copied


@pytest.mark.parametrize(
    "changes_",
    [{}, {"modelrun:domain": "api.example.com"}, {"modelrun:batchJob": "true"}],
    ids=["default", "edge", "batch-job"],
)
def test_ci_up_after_an_administrators_changes_only_the_image(changes_: dict[str, str]) -> None:
    admin = run_program(stack_config(**changes_))
    ci = run_program(stack_config(**changes_, **{"modelrun:image": IMAGE}))

    changed = changes(admin, ci)

    service = ci.one(SERVICE)
    expected = {service.urn: ["template"]}
    if "modelrun:batchJob" in changes_:  # the job runs the service's image
        expected[ci.one("gcp:cloudrunv2/job:Job").urn] = ["template"]
    assert changed == expected
    old = planned_inputs(provider_state(admin.one(SERVICE)), admin.one(SERVICE))
    assert without_image(old) == without_image(service.inputs)
    assert at_path(service.inputs, IMAGE_PATH) == IMAGE


def test_the_dashboard_is_a_fixed_point_of_the_apis_normalisation() -> None:
    stack = run_program(stack_config())
    sent = stack.one(DASHBOARD).inputs["dashboardJson"]

    assert json.loads(sent) == proto3_json(json.loads(sent))
    assert dashboard_unchanged(dashboard_as_returned(sent), sent)


def test_the_diff_rule_sees_a_zero_the_api_dropped() -> None:
    # The provider's rule, on the case of terraform-provider-google#16173: a tile at xPos 0.
    sent = json.dumps({"mosaicLayout": {"tiles": [{"xPos": 0, "width": 2}]}})

    returned = json.dumps(proto3_json(json.loads(sent)) | {"name": "n", "etag": "e"})

    assert not dashboard_unchanged(returned, sent)


# --- what CI may touch, it may change -------------------------------------------------------


def permission_table() -> dict[str, tuple[str, str]]:
    """docs/ARCHITECTURE.md's table: resource type -> (permission an update needs, the role
    among the deployer's that holds it, or "—")."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    section = text.split("### What a later `up` changes", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| `([^`]+)` \| ([^|]+) \|", section, re.M)
    return {typ: (permission, role.strip().strip("`")) for typ, permission, role in rows}


def deployer_roles(stack: Stack) -> set[str]:
    deployer = f"serviceAccount:{account_email(stack, 'deployer')}"
    return {r.inputs["role"] for r in iam_members(stack) if r.inputs["member"] == deployer}


def test_every_managed_type_is_in_the_permission_table() -> None:
    everything = {
        "modelrun:domain": "api.example.com",
        "modelrun:batchJob": "true",
        "modelrun:batchJobSchedule": "0 2 * * *",
        "modelrun:alertEmails": ["ops@example.com"],
    }
    stack = run_program(stack_config(**everything))
    types = {r.type for r in stack.resources if not r.type.startswith(("modelrun:", "pulumi:"))}

    assert types <= set(permission_table())


@pytest.mark.parametrize("access", ["public", "iam"])
def test_ci_up_reads_only_what_the_deployer_may(access: str) -> None:
    # Every `up` reads the program's data sources again, as the runner: the deployer holds no
    # project-wide role to read the project with (its one exception, the storage agent of
    # modelrun:bucketKmsKey, is an administrator's setting). It reads one: the model-signing
    # key's public key, which it may read on that key alone.
    ci = run_program(stack_config(**{"modelrun:invokerAccess": access, "modelrun:image": IMAGE}))
    deployer = f"serviceAccount:{account_email(ci, 'deployer')}"
    key = ci.one("gcp:kms/cryptoKey:CryptoKey")
    may_read = {
        (r.inputs["cryptoKeyId"], r.inputs["role"])
        for r in iam_members(ci)
        if r.inputs["member"] == deployer and r.type.endswith("CryptoKeyIAMMember")
    }

    assert ci.invokes == ["gcp:kms/getKMSCryptoKeyVersion:getKMSCryptoKeyVersion"]
    # cloudkms.cryptoKeyVersions.viewPublicKey, on the key the invoke names
    assert may_read == {(f"{key.name}-id", "roles/cloudkms.publicKeyViewer")}


@pytest.mark.parametrize("batch", [False, True])
def test_ci_up_changes_nothing_outside_the_deployers_roles(batch: bool) -> None:
    extra = {"modelrun:batchJob": "true"} if batch else {}
    admin = run_program(stack_config(**extra))
    ci = run_program(stack_config(**extra, **{"modelrun:image": IMAGE}))
    table = permission_table()
    by_urn = {r.urn: r for r in ci.resources}

    changed_types = {by_urn[urn].type for urn in changes(admin, ci)}

    roles = deployer_roles(ci)
    assert changed_types
    for typ in changed_types:
        assert table[typ][1] in roles, f"CI's up changes {typ}, which needs {table[typ]}"
