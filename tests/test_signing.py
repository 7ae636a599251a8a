"""Signed versions (function/core/signing.py, training/signers.py): a bucket writer who is not the
publisher cannot have a model loaded, even after fixing its digests; unsigned versions load only
with ALLOW_UNSIGNED_MODELS. Real folder stores, a real artifact, real keys; Cloud KMS, which
cannot be reached here, is a small gRPC server the real google-cloud-kms client talks to."""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from function.batch.__main__ import parse_job
from function.batch.task import run_task
from function.core.artifact import METADATA_FILE, encode_metadata, sha256_hex
from function.core.config import load_config, load_trust
from function.core.errors import ConfigError, IntegrityError
from function.core.model import load_model
from function.core.signing import SIGNATURE_FILE, Trust
from function.core.store import ModelStore
from tests.conftest import grpc_stand_in, wait_until
from tests.support.loader import KEY, errors_counted, loader_for
from training.errors import TrainingError
from training.signers import KmsSigner, LocalSigner, dev_signer, open_signer

OURS = LocalSigner(ec.generate_private_key(ec.SECP256R1()))
THEIRS = LocalSigner(ec.generate_private_key(ec.SECP256R1()))
OUR_KEY = OURS.public_pem()


def trust(**env: str) -> Trust:
    """What a service configured with env would trust."""
    return load_config({"MODEL_URI": "file:///m", "API_KEYS": KEY, **env}).trust


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, iris_artifact: Path) -> Path:
    """A model root holding v-ours (signed by us), v-theirs (by another key) and v-old (unsigned,
    as published before signing); v-ours is current."""
    root = tmp_path_factory.mktemp("signed") / "iris"
    store = ModelStore(root.as_uri())
    store.promote(store.publish(iris_artifact, "v-ours", OURS))
    store.publish(iris_artifact, "v-theirs", THEIRS)
    store.publish(iris_artifact, "v-old")
    return root


@pytest.fixture
def root(published: Path, tmp_path: Path) -> Path:
    """A copy of the published model root, for a test to tamper with."""
    return Path(shutil.copytree(published, tmp_path / "iris"))


def load(root: Path, version: str, trusted: Trust | None) -> Any:
    """Load as the service does, through the model's own file (not its ONNX export)."""
    return load_model(ModelStore(root.as_uri(), trust=trusted), version, None, runtime="sklearn")


class Payload:
    """A pickle that creates a file when loaded: what a bucket writer's model.joblib runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def tamper(root: Path, version: str, marker: Path) -> None:
    """Replace the model with a payload and fix every digest metadata.json records, as whoever
    can write the bucket can."""
    folder = root / "versions" / version
    payload = pickle.dumps(Payload(marker))
    (folder / "model.joblib").write_bytes(payload)
    metadata = json.loads((folder / METADATA_FILE).read_bytes())
    metadata["sha256"] = sha256_hex(payload)
    metadata["files"]["model.joblib"] = {"sha256": sha256_hex(payload), "size": len(payload)}
    (folder / METADATA_FILE).write_bytes(encode_metadata(metadata))


def test_a_signed_version_loads_and_its_signature_covers_every_file(published: Path) -> None:
    model = load(published, "current", trust(MODEL_PUBLIC_KEY=OUR_KEY))

    assert model.version == "v-ours"
    listed = {*model.metadata.files, METADATA_FILE, SIGNATURE_FILE}
    assert {p.name for p in (published / "versions" / "v-ours").iterdir()} == listed
    signature = json.loads((published / "versions" / "v-ours" / SIGNATURE_FILE).read_text())
    assert signature["algorithm"] == "EC_SIGN_P256_SHA256"
    assert signature["key"] == OURS.key


def test_a_tampered_model_with_fixed_digests_is_refused_before_a_byte_is_read(
    root: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "payload-ran"
    tamper(root, "v-ours", marker)

    with pytest.raises(IntegrityError, match="does not verify with MODEL_PUBLIC_KEY"):
        load(root, "v-ours", trust(MODEL_PUBLIC_KEY=OUR_KEY))
    assert not marker.exists()
    # Without the check (as before signing), the digests agree and the payload runs.
    with pytest.raises(IntegrityError, match="not an estimator"):
        load(root, "v-ours", None)
    assert marker.exists()


def test_a_signature_by_another_key_is_refused_and_a_rotation_trusts_both(published: Path) -> None:
    with pytest.raises(IntegrityError, match=r"does not verify.*" + THEIRS.key):
        load(published, "v-theirs", trust(MODEL_PUBLIC_KEY=OUR_KEY))

    rotation = trust(MODEL_PUBLIC_KEY=OUR_KEY + THEIRS.public_pem())
    assert load(published, "v-theirs", rotation).version == "v-theirs"


@pytest.mark.parametrize(
    ("env", "refusal"),
    [
        ({"MODEL_PUBLIC_KEY": OUR_KEY}, r"v-old is unsigned \(no metadata.sig\)"),
        ({}, "set MODEL_PUBLIC_KEY and publish it again with `modelrun publish`"),
    ],
)
def test_an_unsigned_version_is_refused_unless_allowed(
    published: Path, env: dict[str, str], refusal: str
) -> None:
    with pytest.raises(IntegrityError, match=refusal):
        load(published, "v-old", trust(**env))

    allowed = trust(**env, ALLOW_UNSIGNED_MODELS="true")  # a store published before signing
    assert load(published, "v-old", allowed).version == "v-old"


def test_a_wrong_signature_is_refused_even_where_unsigned_versions_are_allowed(
    root: Path,
) -> None:
    allowed = trust(MODEL_PUBLIC_KEY=OUR_KEY, ALLOW_UNSIGNED_MODELS="true")
    with pytest.raises(IntegrityError, match="does not verify"):
        load(root, "v-theirs", allowed)

    (root / "versions" / "v-ours" / SIGNATURE_FILE).write_text('{"schema_version": 1}')
    with pytest.raises(IntegrityError, match="not a valid signature file: algorithm must be"):
        load(root, "v-ours", allowed)


def test_the_service_never_gets_ready_on_an_unsigned_version_and_keeps_serving_at_refresh(
    root: Path, tmp_path: Path
) -> None:
    env = {"MODEL_PUBLIC_KEY": OUR_KEY, "MODEL_REFRESH_SECONDS": "0.05"}
    store = ModelStore(root.as_uri(), trust=trust(**env))
    loader, thread, _ = loader_for(store, **env)
    try:
        wait_until(lambda: loader.state.model is not None, 10, "the cold start")
        tamper(root, "v-theirs", tmp_path / "payload-ran")
        pointer, token = store.current()
        assert pointer is not None
        # Pointed at as a bucket writer could (current.json is not signed: see the README).
        store._point("v-theirs", json.loads(
            (root / "versions" / "v-theirs" / METADATA_FILE).read_text())["sha256"],
            [pointer.version], token)  # fmt: skip
        wait_until(lambda: errors_counted(loader, "model_refresh") == 1, 10, "the refusal")
    finally:
        loader.stop()
        thread.join(5)
    assert loader.state.model is not None and loader.state.model.version == "v-ours"
    assert not (tmp_path / "payload-ran").exists()

    cold, thread, first_loads = loader_for(store, **env)  # current.json names v-theirs now
    try:
        wait_until(lambda: "does not verify" in cold.state.reason, 10, "the refusal at cold start")
    finally:
        cold.stop()
        thread.join(5)
    assert cold.state.model is None and first_loads == []


def test_a_batch_task_verifies_as_the_service_does(published: Path, tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n")
    argv = ["--input", rows.as_uri(), "--output", (tmp_path / "out").as_uri()]
    argv += ["--model", published.as_uri(), "--model-version", "v-old"]
    job = parse_job(argv, {"MODEL_PUBLIC_KEY": OUR_KEY})

    with pytest.raises(IntegrityError, match="unsigned"):
        run_task(job)
    assert not (tmp_path / "out").exists()


def test_the_settings_name_what_is_wrong(tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_text(OUR_KEY)
    assert len(load_trust({"MODEL_PUBLIC_KEY": str(key_file)}).public_keys) == 1

    from cryptography.hazmat.primitives import serialization

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    rsa_pem = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    for value, message in [
        (str(tmp_path / "missing.pem"), "neither a PEM public key nor a file holding one"),
        ("not a key", r"neither .* \('not a key': No such file"),
        (rsa_pem, "EC_SIGN_P256_SHA256 needs an EC P-256 public key"),
    ]:
        with pytest.raises(ConfigError, match=f"MODEL_PUBLIC_KEY is invalid: {message}"):
            load_trust({"MODEL_PUBLIC_KEY": value})
    with pytest.raises(ConfigError, match="ALLOW_UNSIGNED_MODELS='yes' is invalid"):
        load_trust({"ALLOW_UNSIGNED_MODELS": "yes"})


def test_publish_signs_with_the_key_it_is_given_and_the_dev_key_otherwise(
    iris_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.__main__ import main

    monkeypatch.setenv("MODELRUN_DEV_SIGNING_KEY", str(tmp_path / "dev" / "key.pem"))
    store = (tmp_path / "store").as_uri()
    assert main(["publish", "--store", store, str(iris_artifact), "--version", "v1"]) == 0
    dev = dev_signer()
    assert (tmp_path / "dev" / "key.pem").stat().st_mode & 0o777 == 0o600
    assert dev.key == dev_signer().key  # made once
    iris = tmp_path / "store" / "iris"
    assert load(iris, "v1", trust(MODEL_PUBLIC_KEY=dev.public_pem())).version == "v1"

    with pytest.raises(TrainingError, match="is not a Cloud KMS key version"):
        open_signer("projects/p/keyRings/r")


def test_a_signer_that_fails_leaves_nothing_in_the_store(
    iris_artifact: Path, tmp_path: Path
) -> None:
    class Broken:
        key = "broken"

        def sign(self, digest: bytes) -> bytes:
            raise TrainingError("no signature today")

    store = ModelStore((tmp_path / "iris").as_uri())
    with pytest.raises(TrainingError):
        store.publish(iris_artifact, "v1", Broken())
    assert store.versions() == []  # signed first, then written: not even an incomplete one


# --- Cloud KMS ----------------------------------------------------------------------------


class FakeKms:
    """KeyManagementService.AsymmetricSign for one key version, signing with a local key, over
    a real gRPC channel. `corrupt` flips the signature after its checksum is taken."""

    def __init__(self, name: str, signer: LocalSigner) -> None:
        from google.cloud import kms

        self.name, self.signer, self.corrupt = name, signer, False
        self.requests: list[Any] = []
        self.server = grpc_stand_in(
            "google.cloud.kms.v1.KeyManagementService",
            "AsymmetricSign",
            self._sign,
            kms.AsymmetricSignRequest,
            kms.AsymmetricSignResponse,
        )
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"

    def _sign(self, request, context):  # type: ignore[no-untyped-def]
        import google_crc32c
        import grpc
        from google.cloud import kms

        self.requests.append(request)
        if request.name != self.name:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"no signer role on {request.name}")
        digest = request.digest.sha256
        signature = self.signer.sign(digest)
        return kms.AsymmetricSignResponse(
            signature=signature[:-1] + bytes([signature[-1] ^ 1]) if self.corrupt else signature,
            signature_crc32c=google_crc32c.value(signature),
            verified_digest_crc32c=request.digest_crc32c == google_crc32c.value(digest),
            name=request.name,
        )


KMS_NAME = (
    "projects/p/locations/europe-west1/keyRings/modelrun/cryptoKeys/models/cryptoKeyVersions/1"
)


@pytest.fixture(scope="module")
def kms_server() -> Iterator[FakeKms]:
    server = FakeKms(KMS_NAME, OURS)
    server.server.start()
    yield server
    server.server.stop(0)


def kms_signer(server: FakeKms, name: str = KMS_NAME) -> KmsSigner:
    import grpc
    from google.cloud import kms
    from google.cloud.kms_v1.services.key_management_service.transports import (
        KeyManagementServiceGrpcTransport,
    )

    channel = grpc.insecure_channel(server.address)
    client = kms.KeyManagementServiceClient(
        transport=KeyManagementServiceGrpcTransport(channel=channel)
    )
    return KmsSigner(name, client, timeout=5)


@pytest.mark.slow  # a gRPC server
def test_a_version_signed_in_cloud_kms_loads_with_its_public_key(
    kms_server: FakeKms, iris_artifact: Path, tmp_path: Path
) -> None:
    store = ModelStore((tmp_path / "iris").as_uri())
    store.publish(iris_artifact, "v1", kms_signer(kms_server))

    assert load(tmp_path / "iris", "v1", trust(MODEL_PUBLIC_KEY=OUR_KEY)).version == "v1"
    signature = json.loads((tmp_path / "iris" / "versions" / "v1" / SIGNATURE_FILE).read_text())
    assert signature["key"] == KMS_NAME  # the key version, for the audit log and rotation
    assert kms_server.requests[-1].digest_crc32c  # the digest's checksum went with it


@pytest.mark.slow  # a gRPC server
def test_a_kms_refusal_or_a_corrupted_signature_stops_the_publish(
    kms_server: FakeKms, iris_artifact: Path, tmp_path: Path
) -> None:
    store = ModelStore((tmp_path / "iris").as_uri())
    with pytest.raises(TrainingError, match="Cloud KMS refused to sign"):
        store.publish(iris_artifact, "v1", kms_signer(kms_server, KMS_NAME[:-1] + "2"))
    kms_server.corrupt = True
    try:
        with pytest.raises(TrainingError, match="corrupted in transit"):
            store.publish(iris_artifact, "v2", kms_signer(kms_server))
    finally:
        kms_server.corrupt = False
    assert store.versions() == []
