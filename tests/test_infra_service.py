"""The Pulumi program under Pulumi's mocks (tests/support/infra.py): the Cloud Run service, its
key and the stack's outputs, and the stack files' description of every setting read."""

from __future__ import annotations

import re

import pytest

from tests.pulumi_rules import load_project
from tests.support.infra import (
    INFRA,
    PROJECT,
    ROOT,
    Stack,
    account_email,
    container,
    infra_module,
    run_program,
    stack_config,
)

# --- the service -------------------------------------------------------------------------


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
    source = (INFRA / "stack_config.py").read_text()
    read = {f"modelrun:{k}" for k in re.findall(r'(?:cfg\.require\w*|optional)\("(\w+)"', source)}
    read |= {f"gcp:{k}" for k in re.findall(r'gcp\.require\("(\w+)"\)', source)}
    settings = infra_module("stack_config")
    read |= {f"modelrun:{settings.setting_key(v)}" for v in settings.SERVICE_SETTINGS}

    # gcp:project cannot be declared (a provider key takes only a value): every stack sets it.
    assert read - {"gcp:project"} == declared
