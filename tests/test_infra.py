"""The Pulumi program under Pulumi's mocks: policy assertions on every resource it declares.

The Pulumi CLI and the GCP provider plugin cannot run here, so the engine is replaced by
pulumi.runtime's mock monitor (the official unit-test path). The program itself, its config
reading and every resource's resolved inputs are real.
"""

from __future__ import annotations

import importlib
import json
import re
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pulumi.runtime.mocks import MockMonitor

from tests.pulumi_rules import MergedConfig, StackValue, load_project, load_stack, merge

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
PROJECT = "my-modelrun-dev"
REPOSITORY = "my-org/modelrun"
OWNER_ID = "123456789"
EDGE_ADDRESS = "203.0.113.7"  # what GCP would allocate (documentation range)
# The signing key's public key, as Cloud KMS would give it (a fresh P-256 key's).
PUBLIC_KEY_PEM = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


@dataclass
class Registered:
    """One resource as the engine saw it."""

    type: str
    name: str
    inputs: dict[str, Any]
    urn: str
    parent: str
    dependencies: list[str]
    protect: bool
    ignore_changes: list[str] = field(default_factory=list)


@dataclass
class Stack:
    resources: list[Registered]
    outputs: dict[str, Any]
    secret_outputs: set[str] = field(default_factory=set)
    invokes: list[str] = field(default_factory=list)  # the data sources the program read

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.type == typ]

    def one(self, typ: str, name: str | None = None) -> Registered:
        found = [r for r in self.of_type(typ) if name is None or r.name == name]
        assert len(found) == 1, f"expected one {typ} {name or ''}, found {len(found)}"
        return found[0]


class Mocks(pulumi.runtime.Mocks):
    """Return each resource's inputs plus the attributes GCP would compute; note each data
    source the program reads (every `up` reads them again, with the runner's credentials)."""

    def __init__(self) -> None:
        super().__init__()
        self.invokes: list[str] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        short = args.typ.split(":")[-1]
        if short == "Account":
            state["email"] = f"{args.inputs['accountId']}@{PROJECT}.iam.gserviceaccount.com"
            state["name"] = f"projects/{PROJECT}/serviceAccounts/{state['email']}"
            # The provider's own output: "the identity of the service account in the form
            # serviceAccount:{email}" (pulumi_gcp.serviceaccount.Account.member).
            state["member"] = f"serviceAccount:{state['email']}"
        elif short == "Secret":
            state["name"] = f"projects/123/secrets/{args.inputs['secretId']}"
            return f"projects/{PROJECT}/secrets/{args.inputs['secretId']}", state
        elif short == "Service" and "cloudrunv2" in args.typ:
            name = args.inputs["name"]
            state["uri"] = f"https://{name}-abc-ew.a.run.app"
            state["latestReadyRevision"] = (
                f"projects/{PROJECT}/locations/europe-west1/services/{name}/revisions/{name}-00002-xyz"
            )
        elif short == "WorkloadIdentityPool":
            state["name"] = (
                f"projects/123/locations/global/workloadIdentityPools/{args.inputs['workloadIdentityPoolId']}"
            )
        elif short == "WorkloadIdentityPoolProvider":
            state["name"] = (
                f"projects/123/locations/global/workloadIdentityPools/"
                f"{args.inputs['workloadIdentityPoolId']}/providers/"
                f"{args.inputs['workloadIdentityPoolProviderId']}"
            )
        elif short == "RandomPassword":
            state["result"] = "generated-key-" + "x" * 26
        elif short == "GlobalAddress":
            state["address"] = EDGE_ADDRESS
        elif short == "SecurityPolicy":
            state["selfLink"] = f"https://www.googleapis.com/compute/v1/{args.name}"
        return f"{args.name}-id", state

    def call(
        self, args: pulumi.runtime.MockCallArgs
    ) -> tuple[dict[str, Any], list[Any]] | dict[str, Any]:
        self.invokes.append(args.token)
        if args.token == "gcp:storage/getProjectServiceAccount:getProjectServiceAccount":
            return {"emailAddress": "service-123@gs-project-accounts.iam.gserviceaccount.com"}
        if args.token == "gcp:organizations/getProject:getProject":
            return {"number": "123", "projectId": args.args.get("projectId")}
        if args.token == "gcp:kms/getKMSCryptoKeyVersion:getKMSCryptoKeyVersion":
            return {"publicKeys": [{"algorithm": "EC_SIGN_P256_SHA256", "pem": PUBLIC_KEY_PEM}]}
        return {}


class RecordingMonitor(MockMonitor):
    """The mock monitor, also keeping what only the request carries: parent, depends_on, protect."""

    def __init__(self, mocks: Mocks) -> None:
        super().__init__(mocks)
        self.requests: dict[str, Any] = {}

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        self.requests[response.urn] = request
        return response


def stack_config(
    stack: str = "dev", secrets: dict[str, str] | None = None, **changes: Any
) -> MergedConfig:
    """The configuration the Pulumi CLI would hand the program: Pulumi.yaml's defaults merged
    with the example stack file (Pulumi.dev.yaml), plus `changes` set on the stack as
    `pulumi config set` would (a list or a dict as `--path` would), and `secrets` as
    `pulumi config set --secret` would. A file or a
    change the CLI would refuse raises its error (tests/pulumi_rules.py)."""
    project = load_project((ROOT / "Pulumi.yaml").read_text())
    values = load_stack(project, (ROOT / "Pulumi.dev.yaml").read_text())
    values.update(
        {
            key: StackValue(json.dumps(value), is_object=True)
            if isinstance(value, (list, dict))
            else StackValue(value)
            for key, value in changes.items()
        }
    )
    values.update({key: StackValue("v1:encrypted", secure=True) for key in secrets or {}})
    return merge(stack, project, values, decrypt=secrets)


def run_program(config: MergedConfig, stack: str = "dev") -> Stack:
    """Run infra/__main__.py under mocks with this config; return what it declared."""
    mocks = Mocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="modelrun", stack=stack, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(config.values, config.secret_keys)
    infra_module("config")  # Pulumi runs the program with its folder on the path
    namespace: dict[str, Any] = {}
    secret: set[str] = set()

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        namespace.update(runpy.run_path(str(INFRA / "__main__.py")))
        outputs = namespace["outputs"]

        def note_secrets(name: str, output: pulumi.Output[Any]) -> pulumi.Output[Any]:
            return pulumi.Output.from_input(output.is_secret()).apply(
                lambda is_secret: secret.add(name) if is_secret else None
            )

        return pulumi.Output.all(
            pulumi.Output.all(**outputs).apply(lambda v: namespace.update(resolved=v)),
            *[note_secrets(k, pulumi.Output.from_input(v)) for k, v in outputs.items()],
        )

    program()
    resources = []
    for urn, registration in monitor.resources.items():
        request = monitor.requests[urn]
        resources.append(
            Registered(
                type=request.type,
                name=request.name,
                inputs=registration.state,
                urn=urn,
                parent=request.parent,
                dependencies=list(request.dependencies),
                protect=request.protect,
                ignore_changes=list(request.ignoreChanges),
            )
        )
    return Stack(resources, namespace["resolved"], secret, mocks.invokes)


def infra_module(name: str) -> Any:
    """Import one of infra/'s modules as Pulumi runs them (infra/ on the path)."""
    if str(INFRA) not in sys.path:
        sys.path.insert(0, str(INFRA))
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def stack() -> Stack:
    return run_program(stack_config())


IAM_MEMBER_TYPES = re.compile(r"IAMMember$|IamMember$")


def iam_members(stack: Stack) -> list[Registered]:
    return [r for r in stack.resources if IAM_MEMBER_TYPES.search(r.type)]


def account_email(stack: Stack, suffix: str) -> str:
    emails = [r.inputs["email"] for r in stack.of_type("gcp:serviceaccount/account:Account")]
    return next(e for e in emails if e.split("@")[0].endswith(suffix))


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


# --- Cloud Run's admission rules (infra/limits.py cites the documentation) ---------------

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
    with pytest.raises(ValueError, match=message):
        run_program(stack_config(**changes))


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


# --- the service -------------------------------------------------------------------------


SERVICE = "gcp:cloudrunv2/service:Service"


def container(stack: Stack) -> dict[str, Any]:
    return stack.one(SERVICE).inputs["template"]["containers"][0]


def test_service_environment_and_secret_reference(stack: Stack) -> None:
    env = {e["name"]: e for e in container(stack)["envs"]}
    bucket = stack.one("gcp:storage/bucket:Bucket").inputs["name"]

    assert env["MODEL_URI"]["value"] == f"gs://{bucket}/models/iris"
    assert env["MODEL_VERSION"]["value"] == "current"
    assert env["ENVIRONMENT"]["value"] == "production"
    assert env["CLOUD_RUN_TIMEOUT_SECONDS"]["value"] == "30"
    assert env["WORKERS"]["value"] == "1"  # one per vCPU (cpu defaults to 1)
    assert "value" not in env["API_KEYS"]
    assert env["API_KEYS"]["valueSource"]["secretKeyRef"] == {
        "secret": "modelrun-dev-api-keys",
        "version": "latest",
    }


@pytest.mark.parametrize(
    "cpu, memory, concurrency, workers, threads",
    [
        ("1", "1Gi", "40", "1", "40"),
        ("2", "2Gi", "80", "2", "40"),  # the case: the instance holds all 80
        ("4000m", "4Gi", "10", "4", "3"),
        ("0.5", "512Mi", "1", "1", "1"),
    ],
)
def test_workers_and_threads_hold_the_concurrency(
    cpu: str, memory: str, concurrency: str, workers: str, threads: str
) -> None:
    stack = run_program(
        stack_config(
            **{"modelrun:cpu": cpu, "modelrun:memory": memory, "modelrun:concurrency": concurrency}
        )
    )

    env = {e["name"]: e["value"] for e in container(stack)["envs"] if "value" in e}
    template = stack.one("gcp:cloudrunv2/service:Service").inputs["template"]
    assert (env["WORKERS"], env["THREADS"]) == (workers, threads)
    assert int(env["WORKERS"]) * int(env["THREADS"]) >= template["maxInstanceRequestConcurrency"]
    assert template["maxInstanceRequestConcurrency"] == int(concurrency)


def test_environment_names_are_ones_the_service_reads(stack: Stack) -> None:
    readme = (ROOT / "README.md").read_text()
    for env in container(stack)["envs"]:
        assert f"`{env['name']}`" in readme, f"{env['name']} is not in the README's table"


def test_key_refresh_mode_points_the_app_at_the_secret() -> None:
    stack = run_program(stack_config(**{"modelrun:keyRefreshSeconds": "120"}))

    env = {e["name"]: e for e in container(stack)["envs"]}
    assert "API_KEYS" not in env
    assert env["API_KEYS_SECRET"]["value"] == (
        f"projects/{PROJECT}/secrets/modelrun-dev-api-keys/versions/latest"
    )
    assert env["API_KEYS_REFRESH_SECONDS"]["value"] == "120"


def test_probes_sizing_and_scaling(stack: Stack) -> None:
    service = stack.one("gcp:cloudrunv2/service:Service").inputs
    template = service["template"]
    c = container(stack)

    assert c["startupProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["resources"]["startupCpuBoost"] is True
    assert c["resources"]["limits"] == {"cpu": "750m", "memory": "768Mi"}  # the collector: the rest
    assert c["ports"]["containerPort"] == 8080
    assert template["scaling"] == {"minInstanceCount": 0, "maxInstanceCount": 5}
    assert service["scaling"] == {"minInstanceCount": 0}
    assert template["maxInstanceRequestConcurrency"] == 40
    assert template["timeout"] == "30s"
    assert template["serviceAccount"] == account_email(stack, "runtime")
    assert service["deletionProtection"] is True
    assert c["image"] == "us-docker.pkg.dev/cloudrun/container/hello"


def test_service_waits_for_the_secret_version_and_its_grants(stack: Stack) -> None:
    service = stack.one("gcp:cloudrunv2/service:Service")
    needed = [
        stack.one("gcp:secretmanager/secretVersion:SecretVersion", "modelrun-api-keys-v1").urn,
        stack.one("gcp:secretmanager/secretIamMember:SecretIamMember", "modelrun-reads-keys").urn,
        stack.one("gcp:storage/bucketIAMMember:BucketIAMMember", "modelrun-reads-models").urn,
    ]

    for urn in needed:
        assert urn in service.dependencies


def test_resources_wait_for_the_apis(stack: Stack) -> None:
    apis = {r.urn for r in stack.of_type("gcp:projects/service:Service")}
    assert "run.googleapis.com" in {
        r.inputs["service"] for r in stack.of_type("gcp:projects/service:Service")
    }
    components = [
        r for r in stack.resources if r.type.startswith("modelrun:gcp:") and r.name != "apis"
    ]

    assert components
    for component in components:
        assert apis <= set(component.dependencies), component.name


def test_every_resource_belongs_to_a_component(stack: Stack) -> None:
    for resource in stack.resources:
        if resource.type.startswith("modelrun:gcp:"):
            assert (
                resource.parent.endswith("::modelrun-dev")
                or "pulumi:pulumi:Stack" in resource.parent
            )
        else:
            assert "modelrun:gcp:" in resource.parent, resource.name


def test_registry_cleans_up_old_untagged_images(stack: Stack) -> None:
    repository = stack.one("gcp:artifactregistry/repository:Repository").inputs

    assert repository["format"] == "DOCKER"
    assert repository["cleanupPolicyDryRun"] is False
    policies = {p["id"]: p for p in repository["cleanupPolicies"]}
    assert policies["keep-recent"]["action"] == "KEEP"
    assert policies["keep-recent"]["mostRecentVersions"]["keepCount"] == 10
    assert policies["delete-old-untagged"]["condition"]["tagState"] == "UNTAGGED"


# --- the key and the outputs -------------------------------------------------------------


def test_secret_replication_and_generated_value(stack: Stack) -> None:
    secret = stack.one("gcp:secretmanager/secret:Secret", "modelrun-api-keys").inputs
    password = stack.one("random:index/randomPassword:RandomPassword").inputs

    assert secret["replication"] == {"auto": {}}
    assert password["length"] >= 32


def test_outputs_are_present_and_the_key_is_secret(stack: Stack) -> None:
    assert set(stack.outputs) == {
        "serviceUrl",
        "candidateUrl",
        "latestRevision",
        "dashboardUrl",
        "serviceName",
        "image",
        "invokerAccess",
        "modelBucket",
        "modelStore",
        "modelUri",
        "apiKeySecret",
        "apiKey",
        "imageRepository",
        "workloadIdentityProvider",
        "deployerServiceAccount",
        "trainerServiceAccount",
        "runtimeServiceAccount",
        "signingKey",
        "signingPublicKey",
    }
    assert stack.outputs["serviceUrl"].startswith("https://")
    bucket = stack.outputs["modelBucket"]
    assert stack.outputs["modelStore"] == f"gs://{bucket}/models"
    assert stack.outputs["modelUri"] == f"gs://{bucket}/models/iris"
    assert stack.outputs["workloadIdentityProvider"].endswith("/providers/github")
    assert "apiKey" in stack.secret_outputs
    assert stack.secret_outputs == {"apiKey"}


def test_a_configured_key_is_used_and_stays_secret() -> None:
    stack = run_program(stack_config(secrets={"modelrun:apiKey": "configured-key-0123456789"}))

    assert not stack.of_type("random:index/randomPassword:RandomPassword")
    assert stack.outputs["apiKey"] == "configured-key-0123456789"
    assert "apiKey" in stack.secret_outputs


def test_a_key_set_without_secret_is_refused() -> None:
    # `pulumi config set modelrun:apiKey X` without --secret: X is plain text in the stack file.
    with pytest.raises(ValueError, match="modelrun:apiKey is stored in plain text"):
        run_program(stack_config(**{"modelrun:apiKey": "configured-key-0123456789"}))


# --- the stack files ---------------------------------------------------------------------


def test_pulumi_yaml_describes_every_key_the_program_reads() -> None:
    declared = set(load_project((ROOT / "Pulumi.yaml").read_text()).config)
    source = (INFRA / "config.py").read_text()
    read = {f"modelrun:{k}" for k in re.findall(r'(?:cfg\.require\w*|optional)\("(\w+)"', source)}
    read |= {f"gcp:{k}" for k in re.findall(r'gcp\.require\("(\w+)"\)', source)}
    settings = infra_module("config")
    read |= {f"modelrun:{settings.setting_key(v)}" for v in settings.SERVICE_SETTINGS}

    # gcp:project cannot be declared (a provider key takes only a value): every stack sets it.
    assert read - {"gcp:project"} == declared


# --- image continuity (docs/ARCHITECTURE.md) -------------------------------------------

IMAGE = "europe-west1-docker.pkg.dev/my-modelrun-dev/modelrun-dev/modelrun@sha256:" + "a" * 64


def at_path(value: Any, path: str) -> Any:
    """Follow a Pulumi property path (`template.containers[0].image`) into resource inputs."""
    for name, index in re.findall(r"(\w+)(?:\[(\d+)\])?", path):
        value = value[name]
        if index:
            value = value[int(index)]
    return value


def planned_inputs(old: dict[str, Any], new: Registered) -> dict[str, Any]:
    """The inputs the engine sends on an update: the program's, except that every path in
    ignoreChanges keeps the value from the stack's state. This is the documented rule
    (https://www.pulumi.com/docs/iac/concepts/options/ignorechanges/): "Pulumi ignores a
    property by using the old value from the state instead of the value provided by the
    Pulumi program ... Ignored properties will still be used from the program when there is no
    previous value in the state, most importantly when creating the resource." The engine
    itself cannot run here; this applies its rule to what the program really registered."""
    inputs = json.loads(json.dumps(new.inputs))
    for path in new.ignore_changes:
        *parents, last = re.findall(r"(\w+)(?:\[(\d+)\])?", path)
        target = inputs
        for name, index in parents:
            target = target[name][int(index)] if index else target[name]
        name, index = last
        old_value = at_path(old, path)
        if index:
            target[name][int(index)] = old_value
        else:
            target[name] = old_value
    return inputs


def test_without_an_image_the_first_up_runs_the_placeholder() -> None:
    stack = run_program(stack_config())

    service = stack.one("gcp:cloudrunv2/service:Service")
    assert at_path(service.inputs, "template.containers[0].image") == (
        "us-docker.pkg.dev/cloudrun/container/hello"
    )
    assert service.ignore_changes == ["template.containers[0].image"]


def test_an_up_without_an_image_keeps_the_deployed_one() -> None:
    # CI's deploy: `pulumi config set modelrun:image IMAGE` in its checkout, then `pulumi up`.
    deployed = run_program(stack_config(**{"modelrun:image": IMAGE}))
    service = deployed.one("gcp:cloudrunv2/service:Service")
    assert service.ignore_changes == []  # a given image is always applied
    state = service.inputs

    # An administrator's later `pulumi up` from a checkout where modelrun:image is unset,
    # changing something else.
    later = run_program(stack_config(**{"modelrun:maxInstances": "7"}))
    planned = planned_inputs(state, later.one("gcp:cloudrunv2/service:Service"))

    assert at_path(planned, "template.containers[0].image") == IMAGE
    assert planned["template"]["scaling"]["maxInstanceCount"] == 7  # the rest does change
    assert deployed.outputs["image"] == IMAGE


def test_a_new_image_replaces_the_deployed_one() -> None:
    old = run_program(stack_config(**{"modelrun:image": IMAGE}))
    newer = IMAGE.replace("a" * 64, "b" * 64)

    later = run_program(stack_config(**{"modelrun:image": newer}))
    planned = planned_inputs(
        old.one("gcp:cloudrunv2/service:Service").inputs,
        later.one("gcp:cloudrunv2/service:Service"),
    )

    assert at_path(planned, "template.containers[0].image") == newer


# What a `gcloud builds submit` of the image needs of the account it runs as (Google's "Custom
# Service Account for Cloud Build"): its log, its uploaded source, and the push.
BUILD_ROLES = (
    "roles/logging.logWriter",
    "roles/storage.objectViewer",
    "roles/artifactregistry.writer",
)


def test_the_first_image_steps_say_which_roles_cloud_build_needs() -> None:
    readme = (ROOT / "README.md").read_text()
    deploy = readme.split("\n## Deploy to Google Cloud\n", 1)[1].split("\n## ", 1)[0]
    note = deploy.split("If step 7's build fails", 1)[1].split("\nWhat `pulumi up` creates", 1)[0]

    granted = re.findall(r"add-iam-policy-binding.*?--role (\S+)", note.replace("\\\n", " "))

    assert "gcloud builds submit" in deploy
    assert "-compute@developer.gserviceaccount.com" in note  # the account new projects use
    assert sorted(granted) == sorted(BUILD_ROLES)


def test_the_mlflow_on_cloud_run_recipe_sends_traffic_where_the_server_listens() -> None:
    # Cloud Run sends requests to 8080 unless the service names another port ("Container runtime
    # contract": "By default, requests are sent to 8080, but you can configure Cloud Run to send
    # requests to the port of your choice").
    readme = (ROOT / "README.md").read_text()
    recipe = readme.split("**Running MLflow on Cloud Run.**", 1)[1].split("\n### ", 1)[0]
    (command,) = re.findall(r"```bash\n(gcloud run deploy mlflow.*?)```", recipe, re.S)
    dockerfile = (ROOT / "local" / "mlflow" / "Dockerfile").read_text()

    cloud_run_port = re.search(r"--port (\d+)", command)
    server_port = re.search(r'--args "[^"]*--port,(\d+)', command)
    image_port = re.search(r'"--port", "(\d+)"', dockerfile)

    assert cloud_run_port and server_port and image_port
    assert cloud_run_port.group(1) == server_port.group(1) == image_port.group(1)
    assert "--host,0.0.0.0" in command  # the ingress container listens on every address


# --- two stacks in one project ---------------------------------------------------------

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
    with pytest.raises(ValueError, match=message):
        run_program(stack_config(**changes))


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
    "changes, message",
    [
        ({"modelrun:logLevel": "LOUD"}, r"modelrun:logLevel \(LOG_LEVEL\): LOG_LEVEL='LOUD'"),
        ({"modelrun:corsOrigins": "*"}, r"modelrun:corsOrigins \(CORS_ORIGINS\)"),
        (  # a cross-setting rule of the service's, refused before the deploy
            {"modelrun:modelRefreshSeconds": "60", "modelrun:modelVersion": "20260101T000000Z-ab"},
            "MODEL_REFRESH_SECONDS follows current.json",
        ),
    ],
)
def test_service_settings_the_service_would_refuse_are_refused(
    changes: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        run_program(stack_config(**changes))


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
    passed_through = set(infra_module("config").SERVICE_SETTINGS)

    assert len(rows) > 25
    for variable, cell in rows.items():
        if cell.startswith("not set: "):
            assert variable not in envs, f"{variable} is set by infra, yet the README says not"
            continue
        assert variable in envs or variable in passed_through, f"infra never sets {variable}"
        for key in re.findall(r"`((?:modelrun|gcp):\w+)`", cell):
            assert key in declared | {"gcp:project"}, f"{variable}'s cell names unknown {key}"
    for variable in passed_through:
        assert f"`modelrun:{infra_module('config').setting_key(variable)}`" == rows[variable]


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
    with pytest.raises(ValueError, match=message):
        run_program(stack_config(**changes))


def test_model_memory_is_half_the_instance_shared_among_its_workers() -> None:
    env = {e["name"]: e.get("value") for e in container(run_program(stack_config()))["envs"]}
    assert env["MODEL_MEMORY_MB"] == "384"  # 1 GiB less the collector's 256 MiB, one worker
    two = run_program(stack_config(**{"modelrun:cpu": "2", "modelrun:memory": "4Gi"}))
    env = {e["name"]: e.get("value") for e in container(two)["envs"]}
    assert (env["WORKERS"], env["MODEL_MEMORY_MB"]) == ("2", "960")
    set_one = run_program(stack_config(**{"modelrun:modelMemoryMb": "300"}))
    env = {e["name"]: e.get("value") for e in container(set_one)["envs"]}
    assert env["MODEL_MEMORY_MB"] == "300"


# --- the batch job (modelrun:batchJob) ------------------------------------------------------

JOB = "gcp:cloudrunv2/job:Job"
BATCH = {"modelrun:batchJob": "true"}


@pytest.fixture(scope="module")
def batch_stack() -> Stack:
    return run_program(stack_config(**BATCH))


def test_no_batch_job_unless_asked(stack: Stack) -> None:
    assert not stack.of_type(JOB)
    assert not stack.of_type("modelrun:gcp:BatchJob")
    assert not stack.of_type("gcp:cloudscheduler/job:Job")
    assert "batchJob" not in stack.outputs


def test_the_batch_job_scores_with_the_services_image_account_and_model(batch_stack: Stack) -> None:
    job = batch_stack.one(JOB).inputs
    task = job["template"]["template"]
    [app] = task["containers"]
    service_env = {e["name"]: e.get("value") for e in container(batch_stack)["envs"]}
    env = {e["name"]: e["value"] for e in app["envs"]}
    bucket = batch_stack.one("gcp:storage/bucket:Bucket", "batch-files").inputs["name"]

    assert job["name"] == "modelrun-dev-batch"
    assert (job["template"]["taskCount"], job["template"]["parallelism"]) == (10, 0)
    assert (task["timeout"], task["maxRetries"]) == ("3600s", 3)
    assert task["serviceAccount"] == account_email(batch_stack, "runtime")
    assert app["image"] == container(batch_stack)["image"]
    assert app["commands"] == ["python", "-m", "function.batch"]
    assert app["args"] == ["--input", f"gs://{bucket}/input/",
                           "--output", f"gs://{bucket}/output/{{execution}}/"]  # fmt: skip
    assert app["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}
    assert env == {k: service_env[k] for k in ("MODEL_URI", "MODEL_VERSION", "MODEL_PUBLIC_KEY")}
    assert batch_stack.outputs["batchJob"] == "modelrun-dev-batch"
    assert batch_stack.outputs["batchInput"] == f"gs://{bucket}/input/"


def test_the_batch_bucket_is_private_and_written_only_under_output(batch_stack: Stack) -> None:
    """A policy: the runtime account reads the batch bucket and may write in it only under
    output/ (an IAM condition on the object name); nothing else on it is granted."""
    files = batch_stack.one("gcp:storage/bucket:Bucket", "batch-files").inputs
    grants = [r.inputs for r in batch_stack.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")
              if r.inputs["bucket"] == files["name"]]  # fmt: skip
    runtime = f"serviceAccount:{account_email(batch_stack, 'runtime')}"

    assert files["publicAccessPrevention"] == "enforced"
    assert files["uniformBucketLevelAccess"] is True
    # what a killed task left half-written goes after a day; nothing else is ever deleted
    assert files["lifecycleRules"] == [
        {
            "action": {"type": "Delete"},
            "condition": {"age": 1, "matchesSuffixes": [".modelrun-tmp"]},
        }
    ]
    assert {g["member"] for g in grants} == {runtime}
    readers = [g for g in grants if g["role"] == "roles/storage.objectViewer"]
    writers = [g for g in grants if g["role"] != "roles/storage.objectViewer"]
    assert len(readers) == 1 and "condition" not in readers[0]
    assert [g["role"] for g in writers] == ["roles/storage.objectUser"]
    assert writers[0]["condition"]["expression"] == (
        f'resource.name.startsWith("projects/_/buckets/{files["name"]}/objects/output/")'
    )


def test_a_deploy_may_update_the_batch_job(batch_stack: Stack) -> None:
    deployer = f"serviceAccount:{account_email(batch_stack, 'deployer')}"
    on_job = batch_stack.of_type("gcp:cloudrunv2/jobIamMember:JobIamMember")

    assert [(r.inputs["role"], r.inputs["member"]) for r in on_job] == [
        ("roles/run.developer", deployer)
    ]
    assert on_job[0].inputs["name"] == "modelrun-dev-batch"


def test_a_schedule_runs_the_job_as_an_account_that_may_only_run_it() -> None:
    stack = run_program(stack_config(**BATCH, **{"modelrun:batchJobSchedule": "0 2 * * *"}))
    schedule = stack.one("gcp:cloudscheduler/job:Job").inputs
    scheduler = account_email(stack, "scheduler")
    grants = [r for r in iam_members(stack) if r.inputs["member"] == f"serviceAccount:{scheduler}"]

    assert (schedule["schedule"], schedule["timeZone"]) == ("0 2 * * *", "Etc/UTC")
    assert schedule["httpTarget"]["httpMethod"] == "POST"
    assert schedule["httpTarget"]["uri"] == (
        f"https://run.googleapis.com/v2/projects/{PROJECT}/locations/europe-west1/"
        "jobs/modelrun-dev-batch:run"
    )
    assert schedule["httpTarget"]["oauthToken"]["serviceAccountEmail"] == scheduler
    assert [(r.type, r.inputs["role"], r.inputs["name"]) for r in grants] == [
        ("gcp:cloudrunv2/jobIamMember:JobIamMember", "roles/run.invoker", "modelrun-dev-batch")
    ]
    assert "cloudscheduler.googleapis.com" in {
        r.inputs["service"] for r in stack.of_type("gcp:projects/service:Service")
    }


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"modelrun:batchJobTaskCount": "0"}, "batchJobTaskCount must be 1..10000"),
        ({"modelrun:batchJobTaskCount": "10001"}, "batchJobTaskCount must be 1..10000"),
        ({"modelrun:batchJobParallelism": "11"}, "batchJobParallelism must be 0"),
        ({"modelrun:batchJobTimeoutSeconds": "604801"}, "168 hours"),
        ({"modelrun:batchJobMaxRetries": "11"}, "batchJobMaxRetries must be 0..10"),
        ({"modelrun:batchJobCpu": "3"}, "modelrun:batchJobCpu above 1 must be 2, 4, 6 or 8"),
        ({"modelrun:batchJobMemory": "8Gi"}, "batchJobMemory 8Gi needs modelrun:batchJobCpu"),
        ({"modelrun:batchJobSchedule": "nightly"}, "batchJobSchedule must be a cron schedule"),
    ],
)  # fmt: skip
def test_job_settings_cloud_run_would_refuse_are_refused(
    changes: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        run_program(stack_config(**BATCH, **changes))


def test_job_settings_are_not_checked_while_there_is_no_job() -> None:
    run_program(stack_config(**{"modelrun:batchJobTaskCount": "0"}))


# --- the protected edge (modelrun:domain) -------------------------------------------------------

DOMAIN = "api.example.com"
EDGE = {"modelrun:domain": DOMAIN}
# "Preconfigured WAF rules overview" (https://cloud.google.com/armor/docs/waf-rules), CRS 3.3:
# every rule name it lists. A rule the policy names must be one of them.
DOCUMENTED_WAF_RULES = {
    f"{rule}-v33-{track}"
    for rule in ("sqli", "xss", "lfi", "rfi", "rce", "methodenforcement", "scannerdetection",
                 "protocolattack", "php", "sessionfixation", "java", "nodejs")
    for track in ("stable", "canary")
}  # fmt: skip
# What a rule's match expression may be (Cloud Armor's rules language, "Custom rules language
# reference", https://cloud.google.com/armor/docs/rules-language-reference): these shapes only.
WAF_EXPRESSION = re.compile(
    r"^evaluatePreconfiguredWaf\('([a-z]+-v33-stable)', \{'sensitivity': [1-4]\}\)$"
)
IP_TEST = r"inIpRange\(origin\.ip, '[0-9a-fA-F.:/]+'\)"
REGION_TEST = r"origin\.region_code == '[A-Z]{2}'"


def one_of(test: str) -> re.Pattern[str]:
    return re.compile(rf"^!?\(?{test}( \|\| {test})*\)?$")


@pytest.fixture(scope="module")
def edge_stack() -> Stack:
    return run_program(stack_config(**EDGE))


def by_type(stack: Stack, short: str) -> list[Registered]:
    return [r for r in stack.resources if r.type.endswith(f":{short}")]


def run_app_is_closed(stack: Stack) -> bool:
    """Outside traffic cannot reach the run.app URL: only the load balancer can."""
    return bool(stack.one(SERVICE).inputs["ingress"] == "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER")


def test_no_edge_unless_a_domain_is_set(stack: Stack) -> None:
    assert not [r for r in stack.resources if r.type.startswith("gcp:compute/")]
    assert not stack.of_type("modelrun:gcp:Edge")
    assert stack.one(SERVICE).inputs["ingress"] == "INGRESS_TRAFFIC_ALL"
    assert "edgeUrl" not in stack.outputs


def test_the_edge_wires_address_frontends_backend_armor_and_service(edge_stack: Stack) -> None:
    [neg] = by_type(edge_stack, "RegionNetworkEndpointGroup")
    [backend] = by_type(edge_stack, "BackendService")
    [policy] = by_type(edge_stack, "SecurityPolicy")
    [address] = by_type(edge_stack, "GlobalAddress")
    [certificate] = by_type(edge_stack, "ManagedSslCertificate")
    maps = {r.name: r.inputs for r in by_type(edge_stack, "URLMap")}
    https_proxy = by_type(edge_stack, "TargetHttpsProxy")[0].inputs
    http_proxy = by_type(edge_stack, "TargetHttpProxy")[0].inputs
    rules = {r.inputs["portRange"]: r.inputs for r in by_type(edge_stack, "GlobalForwardingRule")}

    assert neg.inputs["networkEndpointType"] == "SERVERLESS"
    assert neg.inputs["cloudRun"] == {"service": edge_stack.one(SERVICE).inputs["name"]}
    assert backend.inputs["backends"] == [{"group": f"{neg.name}-id"}]
    assert backend.inputs["loadBalancingScheme"] == "EXTERNAL_MANAGED"
    assert backend.inputs["securityPolicy"].endswith(policy.name)
    assert backend.inputs["logConfig"] == {"enable": True, "sampleRate": 1.0}
    assert certificate.inputs["managed"] == {"domains": [DOMAIN]}
    assert maps["edge-https"]["defaultService"] == f"{backend.name}-id"
    assert https_proxy["urlMap"] == "edge-https-id"
    assert https_proxy["sslCertificates"] == [f"{certificate.name}-id"]
    assert maps["edge-http"]["defaultUrlRedirect"]["httpsRedirect"] is True
    assert "defaultService" not in maps["edge-http"]  # HTTP never reaches the service
    assert http_proxy["urlMap"] == "edge-http-id"
    assert rules["443"]["target"] == "edge-https-id" and rules["80"]["target"] == "edge-http-id"
    assert rules["443"]["ipAddress"] == rules["80"]["ipAddress"] == f"{address.name}-id"
    assert edge_stack.outputs["edgeAddress"] == EDGE_ADDRESS
    assert (
        edge_stack.outputs["edgeUrl"] == edge_stack.outputs["candidateUrl"] == f"https://{DOMAIN}"
    )
    components = {r.type for r in edge_stack.resources if r.type.startswith("modelrun:gcp:")}
    assert {"modelrun:gcp:Edge", "modelrun:gcp:ServerlessBackend", "modelrun:gcp:EdgeAddress",
            "modelrun:gcp:HttpsFrontend", "modelrun:gcp:HttpRedirect"} <= components  # fmt: skip
    apis = {r.inputs["service"] for r in edge_stack.of_type("gcp:projects/service:Service")}
    assert {"compute.googleapis.com", "logging.googleapis.com"} <= apis


@pytest.mark.parametrize("access", ["public", "public-no-iam-check"])
def test_with_the_edge_the_run_app_url_refuses_outside_traffic(access: str) -> None:
    """A policy: whenever a domain is set, the service admits the load balancer only. The same
    check on the stack without the edge says open, so it can fail."""
    edged = run_program(stack_config(**EDGE, **{"modelrun:invokerAccess": access}))

    assert run_app_is_closed(edged)
    uptime = edged.one("gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig").inputs
    assert uptime["monitoredResource"]["labels"]["host"] == DOMAIN  # checked through the edge
    assert not run_app_is_closed(run_program(stack_config(**{"modelrun:invokerAccess": access})))


def test_the_edge_refuses_iam_only_invokers() -> None:
    with pytest.raises(ValueError, match="without an identity token"):
        run_program(stack_config(**EDGE, **{"modelrun:invokerAccess": "iam"}))


def test_the_armor_policy_rules_and_their_order(edge_stack: Stack) -> None:
    [policy] = by_type(edge_stack, "SecurityPolicy")
    rules = policy.inputs["rules"]
    priorities = [r["priority"] for r in rules]

    assert policy.inputs["advancedOptionsConfig"] == {"jsonParsing": "STANDARD"}
    assert priorities == sorted(set(priorities))  # unique, in evaluation order
    ban = next(r for r in rules if r["action"] == "rate_based_ban")
    # A request under the ban's threshold is allowed there (its conform action): every deny rule,
    # the WAF's included, must come first, or it never sees such a request.
    assert ban["priority"] > max(r["priority"] for r in rules if r["action"] == "deny(403)")
    assert rules[-2] == ban
    assert ban["rateLimitOptions"] == {
        "conformAction": "allow", "exceedAction": "deny(429)", "enforceOnKey": "IP",
        "rateLimitThreshold": {"count": 600, "intervalSec": 60}, "banDurationSec": 600,
    }  # fmt: skip
    waf = [
        r["match"]["expr"]["expression"]
        for r in rules
        if 500 <= r["priority"] < 1000 and "expr" in r["match"]
    ]
    assert len(waf) == 4 and all(WAF_EXPRESSION.match(e) for e in waf)
    assert {WAF_EXPRESSION.match(e).group(1) for e in waf} <= DOCUMENTED_WAF_RULES  # type: ignore[union-attr]
    assert {e.split("'")[1].split("-")[0] for e in waf} == {"sqli", "xss", "lfi", "rce"}
    assert rules[-1] == {
        "priority": 2147483647, "action": "allow", "description": "default",
        "match": {"versionedExpr": "SRC_IPS_V1", "config": {"srcIpRanges": ["*"]}},
    }  # fmt: skip
    assert all(r["action"] in ("allow", "deny(403)", "rate_based_ban") for r in rules)


CODES = [a + b for a in "ABCDEFGHIJ" for b in "KLMNO"]  # 50 codes of ISO 3166-1's shape
SUBEXPRESSION = re.compile(r"\|\|")


@pytest.mark.parametrize("count", [1, 5, 6, 50])
def test_deny_lists_are_split_into_rules_within_cloud_armors_limits(count: int) -> None:
    # "up to five subexpressions" an expression (Cloud Armor's rules language reference); ten
    # ranges a SRC_IPS_V1 match.
    countries = CODES[:count]
    ranges = [f"198.51.{i // 250}.{i % 250}/32" for i in range(count)]
    stack = run_program(stack_config(**EDGE, **{
        "modelrun:edgeDenyCountries": ",".join(countries),
        "modelrun:edgeDenyIpRanges": ",".join(ranges),
    }))  # fmt: skip
    rules = by_type(stack, "SecurityPolicy")[0].inputs["rules"]
    country_rules = [r for r in rules if 300 <= r["priority"] < 400]
    ip_rules = [r for r in rules if 100 <= r["priority"] < 200]

    assert [r["priority"] for r in country_rules] == list(range(300, 300 + -(-count // 5)))
    assert [r["priority"] for r in ip_rules] == list(range(100, 100 + -(-count // 10)))
    expressions = [r["match"]["expr"]["expression"] for r in country_rules]
    assert all(len(SUBEXPRESSION.findall(e)) + 1 <= 5 for e in expressions)
    assert [c for e in expressions for c in re.findall(r"'([A-Z]{2})'", e)] == countries
    assert [i for r in ip_rules for i in r["match"]["config"]["srcIpRanges"]] == ranges
    assert all(r["action"] == "deny(403)" for r in country_rules + ip_rules)


@pytest.mark.parametrize("count, refused", [(1, False), (5, False), (6, True), (50, True)])
@pytest.mark.parametrize("key", ["edgeAllowCountries", "edgeAllowIpRanges"])
def test_an_allow_list_is_one_expression_of_at_most_five(
    key: str, count: int, refused: bool
) -> None:
    values = CODES[:count] if "Countries" in key else [f"203.0.113.{i}/32" for i in range(count)]
    config = stack_config(**EDGE, **{f"modelrun:{key}": ",".join(values)})

    if refused:
        with pytest.raises(Exception, match=f"modelrun:{key} may list at most 5 entries"):
            run_program(config)
        return
    rules = by_type(run_program(config), "SecurityPolicy")[0].inputs["rules"]
    [gate] = [r for r in rules if r["priority"] in (200, 400)]
    assert len(SUBEXPRESSION.findall(gate["match"]["expr"]["expression"])) + 1 == count


def test_allow_and_deny_lists_become_rules_before_the_rest() -> None:
    denied = [f"198.51.100.{i}/32" for i in range(12)]
    stack = run_program(stack_config(**EDGE, **{
        "modelrun:edgeDenyIpRanges": ",".join(denied),
        "modelrun:edgeAllowIpRanges": "203.0.113.0/24, 2001:db8::/32",
        "modelrun:edgeDenyCountries": "kp,ir", "modelrun:edgeAllowCountries": "FR,DE",
        "modelrun:edgeWafSensitivity": "0",
    }))  # fmt: skip
    rules = {r["priority"]: r for r in by_type(stack, "SecurityPolicy")[0].inputs["rules"]}

    assert rules[100]["match"]["config"]["srcIpRanges"] == denied[:10]  # ten a rule
    assert rules[101]["match"]["config"]["srcIpRanges"] == denied[10:]
    expressions = {p: rules[p]["match"]["expr"]["expression"] for p in (200, 300, 400)}
    assert (
        expressions[200]
        == "!(inIpRange(origin.ip, '203.0.113.0/24') || inIpRange(origin.ip, '2001:db8::/32'))"
    )
    assert expressions[300] == "origin.region_code == 'KP' || origin.region_code == 'IR'"
    assert expressions[400] == "!(origin.region_code == 'FR' || origin.region_code == 'DE')"
    assert one_of(IP_TEST).match(expressions[200]) and one_of(REGION_TEST).match(expressions[400])
    assert all(rules[p]["action"] == "deny(403)" for p in (100, 101, 200, 300, 400))
    assert not [p for p in rules if 500 <= p < 1000]  # sensitivity 0: no WAF rules


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"modelrun:domain": "not a domain"}, "modelrun:domain must be a DNS name"),
        ({"modelrun:edgeWafSensitivity": "5"}, "edgeWafSensitivity must be 0..4"),
        ({"modelrun:edgeRateLimitCount": "10001"}, "edgeRateLimitCount must be 1..10000"),
        ({"modelrun:edgeRateLimitIntervalSeconds": "45"}, "IntervalSeconds must be one of"),
        ({"modelrun:edgeBanSeconds": "0"}, "edgeBanSeconds must be at least 1"),
        ({"modelrun:edgeDenyCountries": "FRA"}, "ISO 3166-1 alpha-2"),
        ({"modelrun:edgeAllowIpRanges": "10.0.0.300/8"}, "is not an IP range"),
        ({"modelrun:edgeLogSampleRate": "2"}, "edgeLogSampleRate must be a number from 0 to 1"),
    ],
)  # fmt: skip
def test_edge_settings_google_cloud_would_refuse_are_refused(
    changes: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        run_program(stack_config(**{**EDGE, **changes}))


def test_the_dashboard_has_an_edge_row_of_blocked_requests_by_rule(edge_stack: Stack) -> None:
    [metric] = by_type(edge_stack, "Metric")
    tiles = json.loads(edge_stack.one("gcp:monitoring/dashboard:Dashboard").inputs["dashboardJson"])
    edge_tiles = [t for t in tiles["mosaicLayout"]["tiles"] if "edge" in t["widget"]["title"]]

    assert metric.inputs["filter"] == (
        'resource.type="http_load_balancer" AND jsonPayload.enforcedSecurityPolicy.outcome="DENY"'
    )
    assert metric.inputs["labelExtractors"] == {
        "rule": "EXTRACT(jsonPayload.enforcedSecurityPolicy.priority)"
    }
    [tile] = edge_tiles
    query = tile["widget"]["xyChart"]["dataSets"][0]["timeSeriesQuery"]["timeSeriesFilter"]
    assert query["filter"] == f'metric.type="logging.googleapis.com/user/{metric.inputs["name"]}"'
    assert query["aggregation"]["groupByFields"] == ["metric.label.rule"]


def test_every_edge_resource_belongs_to_an_edge_component(edge_stack: Stack) -> None:
    components = {r.urn for r in edge_stack.resources if r.type.startswith("modelrun:gcp:")}
    edge_parts = [r for r in edge_stack.resources
                  if r.type.startswith(("gcp:compute/", "gcp:logging/"))]  # fmt: skip

    assert len(edge_parts) == 12
    assert all(r.parent in components for r in edge_parts)
