"""infra/signing.py under mocks: the model-signing key in Cloud KMS, who may use it (key-level
grants only), and the public key handed to the service and the batch job."""

from __future__ import annotations

import pytest

from function.core.signing import ALGORITHM, load_public_keys
from tests.support.infra import (
    BATCH,
    PUBLIC_KEY_PEM,
    Stack,
    account_email,
    container,
    iam_members,
    infra_module,
    run_program,
    stack_config,
)

KEY = "gcp:kms/cryptoKey:CryptoKey"


@pytest.fixture(scope="module")
def stack() -> Stack:
    """One run of the program for this file: with the batch job, which verifies too."""
    return run_program(stack_config(**BATCH))


def test_the_key_signs_with_the_algorithm_the_service_verifies_and_is_protected(
    stack: Stack,
) -> None:
    key = stack.one(KEY)
    ring = stack.one("gcp:kms/keyRing:KeyRing")

    assert key.inputs["purpose"] == "ASYMMETRIC_SIGN"
    assert key.inputs["versionTemplate"]["algorithm"] == ALGORITHM == "EC_SIGN_P256_SHA256"
    assert key.inputs["keyRing"] == f"{ring.name}-id"
    assert (ring.inputs["name"], ring.inputs["location"]) == ("modelrun-dev", "europe-west1")
    assert key.protect is True  # Cloud KMS never deletes it: a destroy only schedules it
    assert "cloudkms.googleapis.com" in {
        r.inputs["service"] for r in stack.of_type("gcp:projects/service:Service")
    }


def test_only_the_trainer_may_sign_and_only_on_this_key(stack: Stack) -> None:
    kms_grants = [r for r in iam_members(stack) if "cloudkms" in r.inputs.get("role", "")]
    on_key = [r for r in kms_grants if r.type == "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember"]

    assert sorted((r.inputs["role"], r.inputs["member"]) for r in on_key) == [
        # the deployer reads the public key at every `up` (test_infra_second_up.py), no more
        ("roles/cloudkms.publicKeyViewer", f"serviceAccount:{account_email(stack, 'deployer')}"),
        ("roles/cloudkms.signer", f"serviceAccount:{account_email(stack, 'trainer')}"),
    ]
    assert {r.inputs["cryptoKeyId"] for r in on_key} == {f"{stack.one(KEY).name}-id"}
    assert kms_grants == on_key  # no project-level Cloud KMS role for anyone
    runtime = f"serviceAccount:{account_email(stack, 'runtime')}"
    assert not [r for r in kms_grants if r.inputs["member"] == runtime]  # it gets the key as text


def test_the_service_and_the_batch_job_verify_with_the_keys_public_half(stack: Stack) -> None:
    env = {e["name"]: e.get("value") for e in container(stack)["envs"]}
    job = stack.one("gcp:cloudrunv2/job:Job").inputs
    [app] = job["template"]["template"]["containers"]
    job_env = {e["name"]: e.get("value") for e in app["envs"]}

    assert env["MODEL_PUBLIC_KEY"] == job_env["MODEL_PUBLIC_KEY"] == PUBLIC_KEY_PEM
    assert len(load_public_keys(env["MODEL_PUBLIC_KEY"])) == 1  # as the service reads it
    assert "ALLOW_UNSIGNED_MODELS" not in env  # unsigned versions refused unless configured
    assert stack.outputs["signingPublicKey"] == PUBLIC_KEY_PEM
    assert stack.outputs["signingKey"] == f"{stack.one(KEY).name}-id/cryptoKeyVersions/1"
    assert "gcp:kms/getKMSCryptoKeyVersion:getKMSCryptoKeyVersion" in stack.invokes


def test_unsigned_versions_can_be_allowed_for_a_bucket_published_before_signing() -> None:
    # A stack setting like the others (modelrun:allowUnsignedModels), which the batch job shares.
    assert "ALLOW_UNSIGNED_MODELS" in infra_module("stack_config").SERVICE_SETTINGS
    assert "ALLOW_UNSIGNED_MODELS" in infra_module("batch_job").SHARED_SETTINGS
