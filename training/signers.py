"""The publisher's signing keys (function/core/signing.py says what is signed, and how it is
checked).

`--signing-key` (or MODELRUN_SIGNING_KEY) names one:
- a Cloud KMS key version, projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/N:
  the private key never leaves KMS; the trainer's account may only sign with it (infra/signing.py);
- a PEM file holding an EC P-256 private key;
- nothing: the development key, .modelrun/dev-signing-key.pem in the repository (or the file
  MODELRUN_DEV_SIGNING_KEY names), made on first use (gitignored; `make clean-store` deletes
  it). `make serve` gives its public key to the service it starts; one in the cloud never
  trusts it.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from function.core.signing import Trust, key_id
from training.errors import TrainingError

ROOT = Path(__file__).resolve().parent.parent
DEV_KEY = ROOT / ".modelrun" / "dev-signing-key.pem"
KMS_KEY_VERSION = re.compile(
    r"\Aprojects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+/cryptoKeyVersions/[^/]+\Z"
)


class LocalSigner:
    """An EC P-256 private key in this process (a PEM file)."""

    def __init__(self, private_key: Any) -> None:
        self.private_key = private_key
        self.key = key_id(private_key.public_key())

    def sign(self, digest: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, utils

        return bytes(self.private_key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256()))))

    def public_pem(self) -> str:
        """The public key as MODEL_PUBLIC_KEY takes it."""
        from cryptography.hazmat.primitives import serialization

        return (
            self.private_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )


class KmsSigner:
    """A Cloud KMS EC_SIGN_P256_SHA256 key version, through google-cloud-kms (made on first use)."""

    def __init__(self, key: str, client: Any = None, timeout: float = 30.0) -> None:
        self.key = key
        self.timeout = timeout
        self._client = client

    def sign(self, digest: bytes) -> bytes:
        import google_crc32c
        from google.api_core import exceptions as gexc

        try:
            response = self._kms().asymmetric_sign(
                request={
                    "name": self.key,
                    "digest": {"sha256": digest},
                    "digest_crc32c": google_crc32c.value(digest),
                },
                timeout=self.timeout,
            )
        except gexc.GoogleAPICallError as e:
            raise TrainingError(f"Cloud KMS refused to sign with {self.key}: {e.message}") from e
        # Integrity in transit, as Cloud KMS advises: it saw our digest, we got its signature.
        if not response.verified_digest_crc32c or response.name != self.key:
            raise TrainingError(f"Cloud KMS did not confirm the digest it signed ({self.key})")
        if google_crc32c.value(response.signature) != response.signature_crc32c:
            raise TrainingError(
                f"the signature from Cloud KMS was corrupted in transit ({self.key})"
            )
        return bytes(response.signature)

    def public_pem(self) -> str:
        """The key version's public key, from Cloud KMS (getPublicKey), as MODEL_PUBLIC_KEY
        takes it."""
        import google_crc32c
        from google.api_core import exceptions as gexc

        try:
            response = self._kms().get_public_key(request={"name": self.key}, timeout=self.timeout)
        except gexc.GoogleAPICallError as e:
            raise TrainingError(
                f"Cloud KMS refused the public key of {self.key}: {e.message}; set "
                "MODEL_PUBLIC_KEY to it (pulumi stack output signingPublicKey): an account that "
                "may only sign cannot read it"
            ) from e
        if response.name != self.key or (
            google_crc32c.value(response.pem.encode()) != response.pem_crc32c
        ):
            raise TrainingError(
                f"the public key from Cloud KMS was corrupted in transit ({self.key})"
            )
        return str(response.pem)

    def _kms(self) -> Any:
        if self._client is None:
            from google.cloud import kms

            self._client = kms.KeyManagementServiceClient()
        return self._client


def open_signer(spec: str | None) -> LocalSigner | KmsSigner:
    """The signer a --signing-key names (the development key when none)."""
    if spec and KMS_KEY_VERSION.match(spec):
        return KmsSigner(spec)
    if spec and spec.startswith("projects/"):
        raise TrainingError(
            f"--signing-key {spec!r} is not a Cloud KMS key version: expected projects/P/"
            "locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/N"
        )
    return load_private_key(Path(spec)) if spec else dev_signer()


def trusted_public_key(environ: Mapping[str, str], spec: str | None) -> str:
    """The public key a command of this machine verifies versions with: MODEL_PUBLIC_KEY when
    set, else the public half of the signing key `spec` names (MODELRUN_SIGNING_KEY's, else the
    development key's), the key `publish` signs with; never none."""
    return environ.get("MODEL_PUBLIC_KEY", "").strip() or open_signer(spec).public_pem()


def verifying_trust(environ: Mapping[str, str], spec: str | None) -> Trust:
    """What the CLI verifies a version with before it points anything at it: the service's rule
    (MODEL_PUBLIC_KEY, ALLOW_UNSIGNED_MODELS), with trusted_public_key's key."""
    from function.core.config import load_trust

    return load_trust({**environ, "MODEL_PUBLIC_KEY": trusted_public_key(environ, spec)})


def load_private_key(path: Path) -> LocalSigner:
    """A LocalSigner from a PEM file holding an EC P-256 private key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as e:
        raise TrainingError(f"cannot read the signing key {path}: {e.strerror}") from e
    except (ValueError, TypeError) as e:
        raise TrainingError(f"{path} is not an unencrypted PEM private key: {e}") from e
    if not (isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"):
        raise TrainingError(f"{path} must hold an EC P-256 private key (EC_SIGN_P256_SHA256)")
    return LocalSigner(key)


def dev_signer(path: Path | None = None) -> LocalSigner:
    """The development key (MODELRUN_DEV_SIGNING_KEY: another file), made on first use, readable
    by this user only.

    Made in a staged file and linked into place: two first publishes at once both end up with
    the one key that won.
    """
    path = path or Path(os.environ.get("MODELRUN_DEV_SIGNING_KEY") or DEV_KEY)
    if not path.exists():
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        staged = path.parent / f".staged-{uuid.uuid4().hex}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            with contextlib.suppress(FileExistsError):
                os.link(staged, path)
        except OSError as e:
            raise TrainingError(
                f"cannot make the development signing key {path}: {e.strerror}; pass "
                "--signing-key (or set MODELRUN_SIGNING_KEY or MODELRUN_DEV_SIGNING_KEY)"
            ) from e
        finally:
            staged.unlink(missing_ok=True)
    return load_private_key(path)
