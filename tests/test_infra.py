"""The Pulumi program under Pulumi's mocks: policy assertions on every resource it declares.

The Pulumi CLI and the GCP provider plugin cannot run here, so the engine is replaced by
pulumi.runtime's mock monitor (the official unit-test path). The program itself, its config
reading and every resource's resolved inputs are real.
"""

from __future__ import annotations

import json
import re
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime.mocks import MockMonitor

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
PROJECT = "my-modelrun-dev"
REPOSITORY = "my-org/modelrun"


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


@dataclass
class Stack:
    resources: list[Registered]
    outputs: dict[str, Any]
    secret_outputs: set[str] = field(default_factory=set)

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.type == typ]

    def one(self, typ: str, name: str | None = None) -> Registered:
        found = [r for r in self.of_type(typ) if name is None or r.name == name]
        assert len(found) == 1, f"expected one {typ} {name or ''}, found {len(found)}"
        return found[0]


class Mocks(pulumi.runtime.Mocks):
    """Return each resource's inputs plus the attributes GCP would compute."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        short = args.typ.split(":")[-1]
        if short == "Account":
            state["email"] = f"{args.inputs['accountId']}@{PROJECT}.iam.gserviceaccount.com"
            state["name"] = f"projects/{PROJECT}/serviceAccounts/{state['email']}"
        elif short == "Secret":
            state["name"] = f"projects/123/secrets/{args.inputs['secretId']}"
            return f"projects/{PROJECT}/secrets/{args.inputs['secretId']}", state
        elif short == "Service" and "cloudrunv2" in args.typ:
            state["uri"] = f"https://{args.inputs['name']}-abc-ew.a.run.app"
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
        return f"{args.name}-id", state

    def call(
        self, args: pulumi.runtime.MockCallArgs
    ) -> tuple[dict[str, Any], list[Any]] | dict[str, Any]:
        if args.token == "gcp:storage/getProjectServiceAccount:getProjectServiceAccount":
            return {"emailAddress": "service-123@gs-project-accounts.iam.gserviceaccount.com"}
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


def stack_config(**changes: str) -> dict[str, str]:
    """The example stack file's config, with changes."""
    config = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    return {k: str(v) for k, v in {**config, **changes}.items()}


def run_program(config: dict[str, str], secret_keys: list[str] | None = None) -> Stack:
    """Run infra/__main__.py under mocks with this config; return what it declared."""
    mocks = Mocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="modelrun", stack="dev", preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(config, secret_keys or [])
    if str(INFRA) not in sys.path:
        sys.path.insert(0, str(INFRA))  # Pulumi runs the program with its folder on the path
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
            *[note_secrets(k, v) for k, v in outputs.items()],
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
            )
        )
    return Stack(resources, namespace["resolved"], secret)


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


def test_public_invoker_can_be_switched_off() -> None:
    stack = run_program(stack_config(**{"modelrun:publicInvoker": "false"}))

    assert not [r for r in iam_members(stack) if r.inputs["member"] == "allUsers"]


def test_cmek_is_optional_and_granted_to_the_storage_agent() -> None:
    key = "projects/p/locations/europe-west1/keyRings/r/cryptoKeys/k"
    stack = run_program(stack_config(**{"modelrun:bucketKmsKey": key}))

    bucket = stack.one("gcp:storage/bucket:Bucket")
    assert bucket.inputs["encryption"]["defaultKmsKeyName"] == key
    grant = stack.one("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember", "models-cmek")
    assert grant.inputs["member"].endswith("@gs-project-accounts.iam.gserviceaccount.com")
    assert grant.urn in bucket.dependencies


# --- identities and roles ----------------------------------------------------------------


def test_no_service_account_keys_and_no_project_wide_grants(stack: Stack) -> None:
    types = {r.type for r in stack.resources}

    assert "gcp:serviceaccount/key:Key" not in types
    assert not [t for t in types if t.startswith("gcp:projects/iAM")]
    assert not [t for t in types if "IAMPolicy" in t or "IAMBinding" in t or "IamBinding" in t]


def test_runtime_account_reads_only_its_bucket_and_secret(stack: Stack) -> None:
    runtime = f"serviceAccount:{account_email(stack, 'runtime')}"

    grants = sorted(
        (r.type, r.inputs["role"]) for r in iam_members(stack) if r.inputs["member"] == runtime
    )

    assert grants == [
        ("gcp:secretmanager/secretIamMember:SecretIamMember", "roles/secretmanager.secretAccessor"),
        ("gcp:storage/bucketIAMMember:BucketIAMMember", "roles/storage.objectViewer"),
    ]
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


def test_trainer_can_only_write_the_model_bucket(stack: Stack) -> None:
    trainer = f"serviceAccount:{account_email(stack, 'trainer')}"

    grants = [(r.type, r.inputs) for r in iam_members(stack) if r.inputs["member"] == trainer]

    assert len(grants) == 1
    typ, inputs = grants[0]
    assert typ == "gcp:storage/bucketIAMMember:BucketIAMMember"
    assert inputs["role"] == "roles/storage.objectUser"
    assert inputs["bucket"] == stack.one("gcp:storage/bucket:Bucket").inputs["name"]


def test_github_provider_admits_only_the_repository_and_branch(stack: Stack) -> None:
    provider = stack.one("gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider")

    assert provider.inputs["oidc"]["issuerUri"] == "https://token.actions.githubusercontent.com"
    assert provider.inputs["attributeCondition"] == (
        f"assertion.repository == '{REPOSITORY}' && assertion.ref == 'refs/heads/main'"
    )
    impersonation = [
        r for r in iam_members(stack) if r.inputs["role"] == "roles/iam.workloadIdentityUser"
    ]
    assert len(impersonation) == 2
    for grant in impersonation:
        assert grant.inputs["member"].endswith(f"/attribute.repository/{REPOSITORY}")
        assert grant.inputs["member"].startswith("principalSet://iam.googleapis.com/projects/")


def test_a_malformed_repository_is_refused() -> None:
    with pytest.raises(Exception, match="githubRepository must be OWNER/NAME"):
        run_program(stack_config(**{"modelrun:githubRepository": "just-a-name"}))


@pytest.mark.parametrize("cpu", ["two", "0"])
def test_a_malformed_cpu_is_refused(cpu: str) -> None:
    with pytest.raises(Exception, match="modelrun:cpu must be"):
        run_program(stack_config(**{"modelrun:cpu": cpu}))


# --- the service -------------------------------------------------------------------------


def container(stack: Stack) -> dict[str, Any]:
    return stack.one("gcp:cloudrunv2/service:Service").inputs["template"]["containers"][0]


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
        "secret": "modelrun-api-keys",
        "version": "latest",
    }


@pytest.mark.parametrize("cpu, workers", [("2", "2"), ("4000m", "4"), ("0.5", "1")])
def test_a_worker_per_vcpu(cpu: str, workers: str) -> None:
    stack = run_program(stack_config(**{"modelrun:cpu": cpu}))

    env = {e["name"]: e for e in container(stack)["envs"]}
    assert env["WORKERS"]["value"] == workers
    assert container(stack)["resources"]["limits"]["cpu"] == cpu


def test_environment_names_are_ones_the_service_reads(stack: Stack) -> None:
    readme = (ROOT / "README.md").read_text()
    for env in container(stack)["envs"]:
        assert f"`{env['name']}`" in readme, f"{env['name']} is not in the README's table"


def test_key_refresh_mode_points_the_app_at_the_secret() -> None:
    stack = run_program(stack_config(**{"modelrun:keyRefreshSeconds": "120"}))

    env = {e["name"]: e for e in container(stack)["envs"]}
    assert "API_KEYS" not in env
    assert env["API_KEYS_SECRET"]["value"] == (
        f"projects/{PROJECT}/secrets/modelrun-api-keys/versions/latest"
    )
    assert env["API_KEYS_REFRESH_SECONDS"]["value"] == "120"


def test_probes_sizing_and_scaling(stack: Stack) -> None:
    service = stack.one("gcp:cloudrunv2/service:Service").inputs
    template = service["template"]
    c = container(stack)

    assert c["startupProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["resources"]["startupCpuBoost"] is True
    assert c["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
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
        stack.one("gcp:secretmanager/secretVersion:SecretVersion").urn,
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
    secret = stack.one("gcp:secretmanager/secret:Secret").inputs
    password = stack.one("random:index/randomPassword:RandomPassword").inputs

    assert secret["replication"] == {"auto": {}}
    assert password["length"] >= 32


def test_outputs_are_present_and_the_key_is_secret(stack: Stack) -> None:
    assert set(stack.outputs) == {
        "serviceUrl",
        "modelBucket",
        "modelUri",
        "apiKeySecret",
        "apiKey",
        "imageRepository",
        "workloadIdentityProvider",
        "deployerServiceAccount",
        "trainerServiceAccount",
        "runtimeServiceAccount",
    }
    assert stack.outputs["serviceUrl"].startswith("https://")
    assert stack.outputs["workloadIdentityProvider"].endswith("/providers/github")
    assert "apiKey" in stack.secret_outputs
    assert stack.secret_outputs == {"apiKey"}


def test_a_configured_key_is_used_and_stays_secret() -> None:
    stack = run_program(
        stack_config(**{"modelrun:apiKey": "configured-key-0123456789"}), ["modelrun:apiKey"]
    )

    assert not stack.of_type("random:index/randomPassword:RandomPassword")
    assert stack.outputs["apiKey"] == "configured-key-0123456789"
    assert "apiKey" in stack.secret_outputs


# --- the stack files ---------------------------------------------------------------------


def test_pulumi_yaml_describes_every_key_the_program_reads() -> None:
    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    source = (INFRA / "config.py").read_text()
    pattern = r'(?:cfg\.(?:get|require)\w*\(|_bool\(cfg, )"(\w+)"'
    read = {f"modelrun:{k}" for k in re.findall(pattern, source)}
    read |= {f"gcp:{k}" for k in re.findall(r'gcp\.(?:get|require)\w*\("(\w+)"\)', source)}

    assert read == set(declared)
    assert all(declared[k].get("description") for k in declared)
    assert declared["modelrun:apiKey"]["secret"] is True


def test_example_stack_sets_only_declared_keys() -> None:
    declared = set(yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"])
    example = set(yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"])

    assert example <= declared
    assert {"gcp:project", "modelrun:githubRepository"} <= example
    json.dumps(sorted(example))
