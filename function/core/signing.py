"""Signed versions: the publisher signs metadata.json, every loader verifies it first.

metadata.json lists the sha256 of every other file of its version, so one signature over its
exact bytes covers the whole version. The signature sits beside it, in `metadata.sig`:

    {"schema_version": 1, "algorithm": "EC_SIGN_P256_SHA256",
     "key": "projects/.../cryptoKeyVersions/1" (or "local:sha256:..."), "signature": "<base64>"}

EC_SIGN_P256_SHA256 (ECDSA on P-256 over the SHA-256 digest, DER-encoded) because both signers
make it alike: Cloud KMS signs a digest we send (asymmetricSign's `digest` field), where
EC_SIGN_ED25519 is "pure mode (taking data as input)": the whole metadata.json would travel to
KMS; and `cryptography` signs and verifies P-256 offline. Whoever can write the bucket but does
not hold the private key cannot make a signature: changing a model and "fixing" its digest in
metadata.json breaks it.

What signs (a Cloud KMS key version, or a PEM file) is the publisher's (training/signers.py);
what verifies is the public key the service is given (MODEL_PUBLIC_KEY), as a `Trust`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from function.core.errors import IntegrityError

SIGNATURE_FILE = "metadata.sig"
ALGORITHM = "EC_SIGN_P256_SHA256"
SCHEMA_VERSION = 1
PEM_PUBLIC_KEY = "-----BEGIN PUBLIC KEY-----"
# What a refusal may say of the bypass, and only of an unsigned version: what it costs, first.
UNSIGNED = (
    "ALLOW_UNSIGNED_MODELS=true serves unsigned versions, for a store only you can write: it also "
    "lets anyone who can write the store run code in the service"
)
PUBLIC_KEY_HINT = "the publisher's public key (`modelrun public-key` prints the signing key's)"


class Signer(Protocol):
    """Signs a SHA-256 digest with an EC P-256 key; `key` names the key in metadata.sig."""

    key: str

    def sign(self, digest: bytes) -> bytes: ...


def sign_metadata(metadata: bytes, signer: Signer) -> bytes:
    """Return metadata.sig for these exact metadata.json bytes."""
    signature = signer.sign(hashlib.sha256(metadata).digest())
    document = {
        "schema_version": SCHEMA_VERSION,
        "algorithm": ALGORITHM,
        "key": signer.key,
        "signature": base64.b64encode(signature).decode(),
    }
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class Signature:
    """metadata.sig, parsed."""

    key: str
    signature: bytes


def parse_signature(data: bytes, where: str) -> Signature:
    """Parse metadata.sig, naming what is wrong with it."""
    try:
        document = json.loads(data)
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        if document.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"schema_version must be {SCHEMA_VERSION}")
        if document.get("algorithm") != ALGORITHM:
            raise ValueError(
                f"algorithm must be {ALGORITHM}, got {document.get('algorithm')!r:.40}"
            )
        key, signature = document.get("key"), document.get("signature")
        if not isinstance(key, str) or not isinstance(signature, str):
            raise ValueError("key and signature must be strings")
        return Signature(key, base64.b64decode(signature, validate=True))
    except (ValueError, UnicodeDecodeError, binascii.Error) as e:
        raise IntegrityError(f"{where} is not a valid signature file: {e}") from e


def key_id(public_key: Any) -> str:
    """A local key's name in metadata.sig: the SHA-256 of its public key (SubjectPublicKeyInfo)."""
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"local:sha256:{hashlib.sha256(der).hexdigest()[:32]}"


def load_public_keys(raw: str) -> tuple[Any, ...]:
    """MODEL_PUBLIC_KEY: one or more PEM public keys (P-256), inline or in a file named by path.

    More than one: a rotation, where versions signed by the old key or the new one both load.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    text = raw if raw.lstrip().startswith("-----BEGIN") else _read(raw)
    blocks = [f"{PEM_PUBLIC_KEY}{rest}" for rest in text.split(PEM_PUBLIC_KEY)[1:]]
    if not blocks:
        raise ValueError(f"expected a PEM public key ({PEM_PUBLIC_KEY} ...), or a file holding one")
    keys = []
    for block in blocks:
        key = serialization.load_pem_public_key(block.encode())
        if not (isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"):
            raise ValueError(f"{ALGORITHM} needs an EC P-256 public key")
        keys.append(key)
    return tuple(keys)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as e:
        raise ValueError(
            f"neither a PEM public key nor a file holding one ({path!r:.200}: {e.strerror})"
        ) from e


@dataclass(frozen=True)
class Trust:
    """Which versions a loader accepts: signed by one of `public_keys`; versions with no
    metadata.sig only with `allow_unsigned` (ALLOW_UNSIGNED_MODELS, for stores published
    before signing). A signature that does not verify is refused either way."""

    public_keys: tuple[Any, ...] = ()
    allow_unsigned: bool = False

    def check(self, metadata: bytes, signature: bytes | None, where: str) -> dict[str, Any] | None:
        """Refuse metadata.json bytes unless this trust accepts their signature; return what
        /model says of it: the key metadata.sig names and whether it was verified (None when
        the version is unsigned)."""
        if signature is None:
            if self.allow_unsigned:
                return None
            how = (
                "publish it again with `modelrun publish` (which signs)"
                if self.public_keys
                else "set MODEL_PUBLIC_KEY and publish it again with `modelrun publish`"
            )
            raise IntegrityError(f"{where} is unsigned (no {SIGNATURE_FILE}): {how}. {UNSIGNED}")
        parsed = parse_signature(signature, f"{where} {SIGNATURE_FILE}")
        said = {"key": parsed.key, "algorithm": ALGORITHM, "verified": bool(self.public_keys)}
        if not self.public_keys:
            if self.allow_unsigned:
                return said  # nothing to verify with, and unsigned versions are allowed anyway
            raise IntegrityError(
                f"{where} is signed by {parsed.key!r:.200}, but no MODEL_PUBLIC_KEY is set to "
                f"verify it with: set it to {PUBLIC_KEY_HINT}"
            )
        if not any(_verifies(key, parsed.signature, metadata) for key in self.public_keys):
            # No word of ALLOW_UNSIGNED_MODELS here: it never serves a version whose signature
            # fails, and a tampered version is exactly what it must not be suggested for.
            raise IntegrityError(
                f"{where} {SIGNATURE_FILE} does not verify with MODEL_PUBLIC_KEY (it names the "
                f"key {parsed.key!r:.200}): metadata.json was changed after signing, or another "
                f"key signed it. Check that MODEL_PUBLIC_KEY is {PUBLIC_KEY_HINT}, or publish "
                "the model again with `modelrun publish`"
            )
        return said


def _verifies(public_key: Any, signature: bytes, data: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
