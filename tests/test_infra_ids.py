"""The Pulumi program under Pulumi's mocks (tests/support/infra.py): two stacks in one project
share no id, and every id keeps within Google's limits."""

from __future__ import annotations

import re

import pytest

from tests.support.infra import (
    Stack,
    account_email,
    run_program,
    stack_config,
)

# The inputs that are physical ids, unique within a project (or, for a bucket, globally).
PHYSICAL_IDS = {
    "gcp:serviceaccount/account:Account": "accountId",
    "gcp:iam/workloadIdentityPool:WorkloadIdentityPool": "workloadIdentityPoolId",
    "gcp:secretmanager/secret:Secret": "secretId",
    "gcp:artifactregistry/repository:Repository": "repositoryId",
    "gcp:storage/bucket:Bucket": "name",
    "gcp:cloudrunv2/service:Service": "name",
}


def physical_ids(stack: Stack) -> set[tuple[str, str]]:
    return {
        (typ, r.inputs[field]) for typ, field in PHYSICAL_IDS.items() for r in stack.of_type(typ)
    }


@pytest.mark.parametrize(
    "first, second",
    [("dev", "prod"), ("production-europe-west1-a", "production-europe-west1-b")],
)
def test_two_stacks_in_one_project_share_no_id(first: str, second: str) -> None:
    one = physical_ids(run_program(stack_config(first), stack=first))
    other = physical_ids(run_program(stack_config(second), stack=second))

    assert len(one) == len(other) == 9  # three accounts, two secrets, one of each other kind
    assert not {i for _, i in one} & {i for _, i in other}


@pytest.mark.parametrize("stack_name", ["dev", "production-europe-west1-a", "A_Very.Odd-Name"])
def test_ids_keep_within_googles_limits(stack_name: str) -> None:
    ids = physical_ids(run_program(stack_config(stack_name), stack=stack_name))

    rules = {
        "gcp:serviceaccount/account:Account": r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$",
        "gcp:iam/workloadIdentityPool:WorkloadIdentityPool": r"^(?!gcp-)[a-z0-9-]{4,32}$",
        "gcp:secretmanager/secret:Secret": r"^[A-Za-z0-9_-]{1,255}$",
        "gcp:artifactregistry/repository:Repository": r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$",
        "gcp:storage/bucket:Bucket": r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$",
        "gcp:cloudrunv2/service:Service": r"^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$",
    }
    for typ, value in ids:
        assert re.match(rules[typ], value), (typ, value)


def test_the_prefix_and_the_pool_id_can_be_set() -> None:
    stack = run_program(
        stack_config(
            **{"modelrun:resourcePrefix": "churn-prod", "modelrun:identityPoolId": "gh-2026"}
        )
    )

    pool = stack.one("gcp:iam/workloadIdentityPool:WorkloadIdentityPool")
    assert pool.inputs["workloadIdentityPoolId"] == "gh-2026"
    assert stack.one("gcp:cloudrunv2/service:Service").inputs["name"] == "churn-prod"
    assert account_email(stack, "runtime").startswith("churn-prod-runtime@")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"modelrun:resourcePrefix": "Churn"}, "modelrun:resourcePrefix must be"),
        ({"modelrun:identityPoolId": "gcp-github"}, "modelrun:identityPoolId must be"),
        ({"modelrun:identityPoolId": "gh"}, "modelrun:identityPoolId must be"),
    ],
)
def test_bad_ids_are_refused(changes: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        run_program(stack_config(**changes))

    assert refused.value.setting in changes  # the error names the setting to change
