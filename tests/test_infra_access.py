"""The Pulumi program under Pulumi's mocks (tests/support/infra.py): who may do what. The
bucket's protection, what the public may call, each account's grants and the workflows that
may act as them."""

from __future__ import annotations

import pytest

from tests.support.infra import (
    OWNER_ID,
    REPOSITORY,
    ROOT,
    SERVICE,
    Stack,
    account_email,
    container,
    iam_members,
    run_program,
    stack_config,
)

# --- the bucket --------------------------------------------------------------------------


def test_bucket_is_private_versioned_and_protected(stack: Stack) -> None:
    bucket = stack.one("gcp:storage/bucket:Bucket")

    assert bucket.inputs["publicAccessPrevention"] == "enforced"
    assert bucket.inputs["uniformBucketLevelAccess"] is True
    assert bucket.inputs["versioning"] == {"enabled": True}
    assert bucket.inputs["forceDestroy"] is False
    assert bucket.protect is True
    rule = bucket.inputs["lifecycleRules"][0]
    assert rule["action"]["type"] == "Delete"
    assert rule["condition"]["withState"] == "ARCHIVED"
    assert rule["condition"]["daysSinceNoncurrentTime"] == 30


def test_nothing_is_granted_to_the_public_but_the_invoker(stack: Stack) -> None:
    public = [
        r for r in iam_members(stack) if r.inputs["member"] in ("allUsers", "allAuthenticatedUsers")
    ]

    assert [(r.type, r.inputs["role"]) for r in public] == [
        ("gcp:cloudrunv2/serviceIamMember:ServiceIamMember", "roles/run.invoker")
    ]


@pytest.mark.parametrize(
    "access, all_users, iam_disabled, deployer_invokes",
    [
        ("public", True, False, False),
        ("public-no-iam-check", False, True, False),
        ("iam", False, False, True),
    ],
)
def test_invoker_access_modes(
    access: str, all_users: bool, iam_disabled: bool, deployer_invokes: bool
) -> None:
    stack = run_program(stack_config(**{"modelrun:invokerAccess": access}))

    service = stack.one("gcp:cloudrunv2/service:Service").inputs
    invokers = [r for r in iam_members(stack) if r.inputs["role"] == "roles/run.invoker"]
    deployer = f"serviceAccount:{account_email(stack, 'deployer')}"
    assert any(r.inputs["member"] == "allUsers" for r in invokers) is all_users
    assert service.get("invokerIamDisabled", False) is iam_disabled
    assert any(r.inputs["member"] == deployer for r in invokers) is deployer_invokes
    assert stack.outputs["invokerAccess"] == access


def test_an_unknown_invoker_access_is_refused() -> None:
    with pytest.raises(Exception, match="modelrun:invokerAccess must be one of"):
        run_program(stack_config(**{"modelrun:invokerAccess": "private"}))


def test_cmek_is_optional_and_granted_to_the_storage_agent() -> None:
    key = "projects/p/locations/europe-west1/keyRings/r/cryptoKeys/k"
    stack = run_program(stack_config(**{"modelrun:bucketKmsKey": key}))

    bucket = stack.one("gcp:storage/bucket:Bucket")
    assert bucket.inputs["encryption"]["defaultKmsKeyName"] == key
    grant = stack.one("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember", "models-cmek")
    assert grant.inputs["member"].endswith("@gs-project-accounts.iam.gserviceaccount.com")
    assert grant.urn in bucket.dependencies


# --- identities and roles ----------------------------------------------------------------


def project_grants(stack: Stack) -> list[tuple[str, str]]:
    return [
        (r.inputs["role"], r.inputs["member"])
        for r in stack.resources
        if r.type.startswith("gcp:projects/iAM")
    ]


def test_no_service_account_keys_and_one_project_wide_grant(stack: Stack) -> None:
    types = {r.type for r in stack.resources}

    assert "gcp:serviceaccount/key:Key" not in types
    # Cloud Monitoring grants writing time series per project only: the sidecar's one role.
    runtime = f"serviceAccount:{account_email(stack, 'runtime')}"
    assert project_grants(stack) == [("roles/monitoring.metricWriter", runtime)]
    assert not [t for t in types if "IAMPolicy" in t or "IAMBinding" in t or "IamBinding" in t]


def test_without_the_sidecar_nothing_is_granted_on_the_project() -> None:
    stack = run_program(stack_config(**{"modelrun:metricsSidecar": "false"}))

    assert project_grants(stack) == []
    assert [c["name"] for c in stack.one(SERVICE).inputs["template"]["containers"]] == ["app"]
    assert "volumes" not in stack.one(SERVICE).inputs["template"]
    assert "METRICS_PORT" not in {e["name"] for e in container(stack)["envs"]}
    assert not stack.of_type("modelrun:gcp:MetricsSidecar")


def test_runtime_account_reads_only_its_bucket_and_secret(stack: Stack) -> None:
    runtime = f"serviceAccount:{account_email(stack, 'runtime')}"

    grants = sorted(
        (r.type, r.inputs["role"]) for r in iam_members(stack) if r.inputs["member"] == runtime
    )

    assert grants == [
        ("gcp:projects/iAMMember:IAMMember", "roles/monitoring.metricWriter"),  # the sidecar's
        ("gcp:secretmanager/secretIamMember:SecretIamMember", "roles/secretmanager.secretAccessor"),
        ("gcp:secretmanager/secretIamMember:SecretIamMember", "roles/secretmanager.secretAccessor"),
        ("gcp:storage/bucketIAMMember:BucketIAMMember", "roles/storage.objectViewer"),
    ]
    secrets = {
        r.inputs["secretId"]
        for r in stack.of_type("gcp:secretmanager/secretIamMember:SecretIamMember")
        if r.inputs["member"] == runtime
    }
    assert secrets == {"modelrun-dev-api-keys", "modelrun-dev-metrics-config"}
    bucket = stack.one("gcp:storage/bucket:Bucket").inputs["name"]
    assert (
        stack.one("gcp:storage/bucketIAMMember:BucketIAMMember", "modelrun-reads-models").inputs[
            "bucket"
        ]
        == bucket
    )


def test_deployer_has_the_least_roles_to_push_and_deploy(stack: Stack) -> None:
    deployer = f"serviceAccount:{account_email(stack, 'deployer')}"

    grants = sorted(
        (r.type.split(":")[-1], r.inputs["role"])
        for r in iam_members(stack)
        if r.inputs["member"] == deployer
    )

    assert grants == [
        ("BucketIAMMember", "roles/storage.objectUser"),  # the Pulumi state bucket
        ("CryptoKeyIAMMember", "roles/cloudkms.publicKeyViewer"),  # the signing key's, alone
        ("IAMMember", "roles/iam.serviceAccountUser"),
        ("RepositoryIamMember", "roles/artifactregistry.writer"),
        ("SecretIamMember", "roles/secretmanager.secretAccessor"),
        ("ServiceIamMember", "roles/run.developer"),
    ]
    acts_as = stack.one("gcp:serviceaccount/iAMMember:IAMMember", "github-acts-as-runtime")
    assert acts_as.inputs["serviceAccountId"].endswith(account_email(stack, "runtime"))
    state = stack.one("gcp:storage/bucketIAMMember:BucketIAMMember", "github-uses-state")
    assert state.inputs["bucket"] == "my-modelrun-dev-pulumi-state"


def test_trainer_can_only_write_the_model_bucket_and_sign(stack: Stack) -> None:
    trainer = f"serviceAccount:{account_email(stack, 'trainer')}"

    grants = {r.type: r.inputs for r in iam_members(stack) if r.inputs["member"] == trainer}

    assert set(grants) == {
        "gcp:storage/bucketIAMMember:BucketIAMMember",
        "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember",  # tests/test_infra_signing.py
    }
    inputs = grants["gcp:storage/bucketIAMMember:BucketIAMMember"]
    assert inputs["role"] == "roles/storage.objectUser"
    assert inputs["bucket"] == stack.one("gcp:storage/bucket:Bucket").inputs["name"]


def test_github_provider_admits_only_the_repository_and_branch(stack: Stack) -> None:
    provider = stack.one("gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider")

    assert provider.inputs["oidc"]["issuerUri"] == "https://token.actions.githubusercontent.com"
    deploy_ref = f"{REPOSITORY}/.github/workflows/deploy.yml@refs/heads/main"
    train_ref = f"{REPOSITORY}/.github/workflows/train.yml@refs/heads/main"
    assert provider.inputs["attributeCondition"] == (
        f"assertion.repository_owner_id == '{OWNER_ID}' && "
        f"assertion.repository == '{REPOSITORY}' && assertion.ref == 'refs/heads/main' && "
        f"assertion.workflow_ref in ['{deploy_ref}', '{train_ref}']"
    )
    assert provider.inputs["attributeMapping"]["attribute.repository_owner_id"] == (
        "assertion.repository_owner_id"
    )
    assert provider.inputs["attributeMapping"]["attribute.workflow_ref"] == "assertion.workflow_ref"


def test_the_deployer_and_the_trainer_are_each_bound_to_their_own_workflow(stack: Stack) -> None:
    # GitHub's token carries workflow_ref, "OWNER/REPO/.github/workflows/FILE@REF" ("OpenID
    # Connect reference"); each account admits the tokens of one workflow of this repository.
    impersonation = {
        r.inputs["serviceAccountId"].split("/")[-1].split("@")[0]: r.inputs["member"]
        for r in iam_members(stack)
        if r.inputs["role"] == "roles/iam.workloadIdentityUser"
    }
    workflows = ROOT / ".github" / "workflows"

    assert sorted(impersonation) == ["modelrun-dev-deployer", "modelrun-dev-trainer"]
    for account, workflow in (("deployer", "deploy.yml"), ("trainer", "train.yml")):
        member = impersonation[f"modelrun-dev-{account}"]
        assert member.startswith("principalSet://iam.googleapis.com/projects/")
        assert member.endswith(
            f"/attribute.workflow_ref/{REPOSITORY}/.github/workflows/{workflow}@refs/heads/main"
        )
        assert (workflows / workflow).is_file()
    assert "id-token: write" in (workflows / "deploy.yml").read_text()
    assert "id-token: write" in (workflows / "train.yml").read_text()


def test_a_malformed_repository_is_refused() -> None:
    with pytest.raises(Exception, match="githubRepository must be OWNER/NAME"):
        run_program(stack_config(**{"modelrun:githubRepository": "just-a-name"}))


def test_the_owner_id_must_be_numeric() -> None:
    with pytest.raises(Exception, match="githubRepositoryOwnerId must be the owner's numeric id"):
        run_program(stack_config(**{"modelrun:githubRepositoryOwnerId": "my-org"}))
