"""The seams around signed versions that issue #35's walk found open: a signed version copied
into another model's folder, a CLI that pointed at versions without verifying them, hints that
pointed at the bypass, the local batch command without a public key, and store documents read
whole however large. Real folder stores, a real artifact, real keys; the CLI runs in process."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from function.batch.__main__ import main as batch
from function.core.artifact import METADATA_FILE
from function.core.errors import IntegrityError
from function.core.model import load_model
from function.core.signing import ALGORITHM, SIGNATURE_FILE, Trust, load_public_keys
from function.core.store import CURRENT_FILE, DOCUMENT_LIMITS, ModelStore
from local.serve import warn_unverified
from tests.conftest import KEY, grpc_stand_in
from tests.inprocess import in_process
from training.__main__ import main as modelrun
from training.signers import KmsSigner, LocalSigner, load_private_key


def pem_key(path: Path) -> Path:
    """A fresh EC P-256 private key in a PEM file, as `--signing-key` takes one."""
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    return {"ours": pem_key(folder / "ours.pem"), "theirs": pem_key(folder / "theirs.pem")}


@pytest.fixture(scope="module")
def published(
    tmp_path_factory: pytest.TempPathFactory, iris_artifact: Path, keys: dict[str, Path]
) -> Path:
    """A store whose model iris has v1 (current) and v2, both signed with our key."""
    store = tmp_path_factory.mktemp("seams") / "store"
    iris = ModelStore((store / "iris").as_uri())
    signer = load_private_key(keys["ours"])
    iris.promote(iris.publish(iris_artifact, "v1", signer))
    iris.publish(iris_artifact, "v2", signer)
    return store


@pytest.fixture
def store(published: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the published store to tamper with; the CLI's environment as a user's shell
    has it (no public key set, unsigned versions not allowed: tests/conftest.py allows them)."""
    monkeypatch.delenv("MODEL_PUBLIC_KEY", raising=False)
    monkeypatch.delenv("MODELRUN_SIGNING_KEY", raising=False)
    monkeypatch.setenv("ALLOW_UNSIGNED_MODELS", "false")
    return Path(shutil.copytree(published, tmp_path / "store"))


def cli(
    capsys: pytest.CaptureFixture[str], store: Path, key: Path, *argv: str
) -> tuple[int, str, str]:
    """`modelrun ARGV --store STORE --signing-key KEY`: exit code, stdout, stderr."""
    code = modelrun([*argv, "--store", store.as_uri(), "--signing-key", str(key)])
    out, err = capsys.readouterr()
    return code, out, err


def trusting(key: Path, unsigned: bool = False) -> Trust:
    return Trust(load_public_keys(load_private_key(key).public_pem()), unsigned)


def change_metadata(folder: Path, **fields: Any) -> None:
    """Change a version's metadata.json as a store writer can (its signature then fails)."""
    metadata = json.loads((folder / METADATA_FILE).read_text())
    (folder / METADATA_FILE).write_text(json.dumps({**metadata, **fields}))


# --- 1. one model's signed version in another's folder ----------------------------------------


def test_a_signed_version_copied_into_another_models_folder_never_loads(
    store: Path, keys: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    (store / "wine" / "versions").mkdir(parents=True)
    shutil.copytree(store / "iris" / "versions" / "v1", store / "wine" / "versions" / "v1")
    shutil.copy(store / "iris" / CURRENT_FILE, store / "wine" / CURRENT_FILE)
    wine = ModelStore((store / "wine").as_uri(), trust=trusting(keys["ours"]))

    refusal = "metadata names model 'iris', not its folder's 'wine'"
    with pytest.raises(IntegrityError, match=refusal):  # the service's and a candidate's load
        load_model(wine, "current", None, runtime="sklearn")
    with pytest.raises(IntegrityError, match=refusal):  # the batch job's (its store is the same)
        wine.resolve("v1")
    code, _, err = cli(capsys, store, keys["ours"], "promote", "--name", "wine", "v1")
    assert code == 1 and refusal in err


# --- 2. the CLI verifies what it points at --------------------------------------------------


def test_the_cli_lists_marks_and_refuses_a_version_that_does_not_verify(
    store: Path, keys: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    change_metadata(store / "iris" / "versions" / "v2", estimator="tampered")

    code, out, _ = cli(capsys, store, keys["ours"], "list", "--name", "iris")
    assert code == 0
    assert "v2  REFUSED:" in out and "does not verify" in out
    code, _, err = cli(capsys, store, keys["ours"], "promote", "--name", "iris", "v2")
    assert code == 1 and "metadata.sig does not verify" in err
    code, _, err = cli(
        capsys, store, keys["ours"], "rollout", "start", "--name", "iris", "v2", "--canary", "10"
    )
    assert code == 1 and "metadata.sig does not verify" in err
    assert json.loads((store / "iris" / CURRENT_FILE).read_text())["version"] == "v1"


def test_the_cli_verifies_with_model_public_key_when_set(
    store: Path, keys: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    monkeypatch.setenv("MODEL_PUBLIC_KEY", load_private_key(keys["theirs"]).public_pem())

    code, _, err = cli(capsys, store, keys["ours"], "promote", "--name", "iris", "v2")

    assert code == 1 and "does not verify with MODEL_PUBLIC_KEY" in err


def test_rollback_never_goes_back_to_a_version_a_store_writer_put_there(
    store: Path, keys: dict[str, Path], capsys: pytest.CaptureFixture[str], iris_artifact: Path
) -> None:
    # A store writer publishes an unsigned version of their own and makes it current; the
    # publisher's next `publish --promote` records it as `previous`.
    ModelStore((store / "iris").as_uri()).promote(
        ModelStore((store / "iris").as_uri()).publish(iris_artifact, "evil")
    )
    assert cli(capsys, store, keys["ours"], "promote", "--name", "iris", "v2")[0] == 0
    assert json.loads((store / "iris" / CURRENT_FILE).read_text())["previous"] == "evil"

    code, _, err = cli(capsys, store, keys["ours"], "rollback", "--name", "iris")

    assert code == 1 and "evil is unsigned" in err
    assert json.loads((store / "iris" / CURRENT_FILE).read_text())["version"] == "v2"


# --- 3. hints never point at the bypass for a bad signature -----------------------------------


def test_a_bad_signature_is_never_told_to_allow_unsigned_models(
    store: Path, keys: dict[str, Path], capsys: pytest.CaptureFixture[str], iris_artifact: Path
) -> None:
    change_metadata(store / "iris" / "versions" / "v1", estimator="tampered")
    warn_unverified((store / "iris").as_uri(), load_private_key(keys["ours"]).public_pem())
    warned = capsys.readouterr().out
    assert "does not verify" in warned and "ALLOW_UNSIGNED_MODELS" not in warned
    assert "modelrun publish" in warned and "MODEL_PUBLIC_KEY" in warned

    iris = ModelStore((store / "iris").as_uri(), trust=trusting(keys["ours"]))
    iris.backend.write("versions/v3/" + METADATA_FILE, b"{}", None)  # unsigned, no .sig
    with pytest.raises(IntegrityError) as unsigned:
        iris.metadata("v3")
    assert "publish it again with `modelrun publish`" in str(unsigned.value)
    assert "for a store only you can write: it also lets anyone who can write the store run " \
           "code in the service" in str(unsigned.value)  # fmt: skip


# --- 4. the README's local batch command, with the key the CLI prints ------------------------


def test_public_key_prints_the_signing_keys_and_the_local_batch_command_loads_with_it(
    store: Path, keys: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    assert modelrun(["public-key", "--signing-key", str(keys["ours"])]) == 0
    printed = capsys.readouterr().out
    assert printed == load_private_key(keys["ours"]).public_pem()
    rows = tmp_path / "rows.csv"
    rows.write_text("sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n")
    argv = ["--model", (store / "iris").as_uri(), "--input", rows.as_uri(),
            "--output", (tmp_path / "scored").as_uri()]  # fmt: skip

    assert batch(argv) == 1  # as the README wrote it: no MODEL_PUBLIC_KEY
    monkeypatch.setenv("MODEL_PUBLIC_KEY", printed)  # MODEL_PUBLIC_KEY="$(modelrun public-key)"
    assert batch(argv) == 0
    assert (tmp_path / "scored" / "part-00000-of-00001.csv").read_text().count("\n") == 2


class FakeKmsPublicKey:
    """Cloud KMS's GetPublicKey for one key version (a gRPC stand-in: KMS is not reachable)."""

    def __init__(self, name: str, signer: LocalSigner) -> None:
        from google.cloud import kms

        self.name, self.pem = name, signer.public_pem()
        self.server = grpc_stand_in(
            "google.cloud.kms.v1.KeyManagementService",
            "GetPublicKey",
            self._answer,
            kms.GetPublicKeyRequest,
            kms.PublicKey,
        )
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"

    def _answer(self, request, context):  # type: ignore[no-untyped-def]
        import google_crc32c
        from google.cloud import kms

        return kms.PublicKey(
            pem=self.pem,
            pem_crc32c=google_crc32c.value(self.pem.encode()),
            algorithm=kms.CryptoKeyVersion.CryptoKeyVersionAlgorithm.EC_SIGN_P256_SHA256,
            name=request.name,
        )


@pytest.mark.slow  # a gRPC server
def test_a_kms_signing_keys_public_half_comes_from_get_public_key(keys: dict[str, Path]) -> None:
    import grpc
    from google.cloud import kms
    from google.cloud.kms_v1.services.key_management_service.transports import (
        KeyManagementServiceGrpcTransport,
    )

    name = "projects/p/locations/l/keyRings/r/cryptoKeys/models/cryptoKeyVersions/1"
    fake = FakeKmsPublicKey(name, load_private_key(keys["ours"]))
    fake.server.start()
    try:
        channel = grpc.insecure_channel(fake.address)
        client = kms.KeyManagementServiceClient(
            transport=KeyManagementServiceGrpcTransport(channel=channel)
        )
        assert KmsSigner(name, client, timeout=5).public_pem() == fake.pem
    finally:
        fake.server.stop(0)


# --- 7. a store document over its bound is refused unread ------------------------------------


def test_an_oversized_signature_or_model_is_refused_before_it_is_read(
    store: Path, keys: dict[str, Path]
) -> None:
    v1, v2 = store / "iris" / "versions" / "v1", store / "iris" / "versions" / "v2"
    with open(v1 / SIGNATURE_FILE, "r+b") as sig:
        sig.truncate(64 * 1024 * 1024)  # sparse: read whole, it would be 64 MiB of zeros
    iris = ModelStore((store / "iris").as_uri(), trust=trusting(keys["ours"]))

    with pytest.raises(
        IntegrityError, match=f"over its limit of {DOCUMENT_LIMITS[SIGNATURE_FILE]:,}"
    ):
        iris.metadata("v1")
    # A model larger than its signed metadata records is refused by its size, unread.
    with open(v2 / "model.joblib", "ab") as model:
        model.write(b"\0")
    with pytest.raises(IntegrityError, match="over its limit"):
        load_model(iris, "v2", None, runtime="sklearn")


def test_an_oversized_current_json_on_gcs_is_refused_by_its_size(gcs_uri: str) -> None:
    iris = ModelStore(gcs_uri, timeout=5)
    iris.backend.write(CURRENT_FILE, b" " * (DOCUMENT_LIMITS[CURRENT_FILE] + 1), None)

    with pytest.raises(IntegrityError, match="over its limit"):
        iris.current()
    assert os.environ["STORAGE_EMULATOR_HOST"]  # the real client, against the emulator


# --- 8. /model says who signed what it serves ------------------------------------------------


def test_model_says_the_served_version_is_signed_and_by_which_key(
    published: Path, keys: dict[str, Path]
) -> None:
    signer = load_private_key(keys["ours"])
    env = {"MODEL_URI": (published / "iris").as_uri(), "API_KEYS": KEY,
           "MODEL_PUBLIC_KEY": signer.public_pem(), "ALLOW_UNSIGNED_MODELS": "false"}  # fmt: skip
    with in_process(env) as served:
        said = served.client.get("/model", headers={"X-API-Key": KEY}).get_json()

    assert said["signature"] == {"key": signer.key, "algorithm": ALGORITHM, "verified": True}
