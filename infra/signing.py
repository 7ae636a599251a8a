"""The key that signs published models (function/core/signing.py): a Cloud KMS EC P-256 key.

The trainer's account may only sign with it (roles/cloudkms.signer on this one key); the
service and the batch job are given its public key as MODEL_PUBLIC_KEY, read here at `up` with
the deployer's credentials, so the runtime account needs no Cloud KMS permission at all.

Cloud KMS never deletes a key ring or a key, nor frees their names: destroying the key only
schedules its versions' destruction (after destroy_scheduled_duration, 30 days by default), and
then nothing it signed can be verified with a new key of the same name. So the key is protected
with the stack's deletion protection, and the ring, which cannot be deleted at all, is only
forgotten (retain_on_delete): a stack made again under the same name adopts it with
`pulumi import gcp:kms/keyRing:KeyRing ...` (README, "Deploy").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
from pulumi_gcp.kms import CryptoKeyVersionTemplateArgs
from pulumi_gcp.kms.outputs import GetKMSCryptoKeyVersionPublicKeyResult

from function.core.signing import ALGORITHM

FIRST_VERSION = 1
SIGNER = "roles/cloudkms.signer"
PUBLIC_KEY_VIEWER = "roles/cloudkms.publicKeyViewer"


@dataclass
class SigningKeyArgs:
    project: str
    region: str
    key_ring_id: str
    key_id: str
    protect: bool
    labels: dict[str, str]


class SigningKey(pulumi.ComponentResource):
    """A key ring and an asymmetric signing key in it; `version` signs, `public_key_pem`
    verifies."""

    def __init__(self, name: str, args: SigningKeyArgs, opts: pulumi.ResourceOptions):
        super().__init__("modelrun:gcp:SigningKey", name, None, opts)
        ring = gcp.kms.KeyRing(
            f"{name}-ring",
            project=args.project,
            location=args.region,
            name=args.key_ring_id,
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
        )
        self.key = gcp.kms.CryptoKey(
            name,
            key_ring=ring.id,
            name=args.key_id,
            purpose="ASYMMETRIC_SIGN",
            # The one algorithm both Cloud KMS and the offline key make (function/core/signing.py).
            version_template=CryptoKeyVersionTemplateArgs(algorithm=ALGORITHM),
            labels=args.labels,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        # The version `modelrun publish --signing-key` names (train.yml: MODEL_SIGNING_KEY).
        self.version = pulumi.Output.concat(self.key.id, f"/cryptoKeyVersions/{FIRST_VERSION}")
        public = gcp.kms.get_kms_crypto_key_version_output(
            crypto_key=self.key.id,
            version=FIRST_VERSION,
            opts=pulumi.InvokeOutputOptions(parent=self),
        )
        self.public_key_pem: pulumi.Output[str] = public.apply(lambda r: _pem(r.public_keys))
        self.register_outputs({"version": self.version, "public_key_pem": self.public_key_pem})

    def grant(self, name: str, role: str, member: pulumi.Input[str]) -> gcp.kms.CryptoKeyIAMMember:
        """Grant one role on this key alone: SIGNER (sign, and nothing else: not even read its
        versions' public keys) or PUBLIC_KEY_VIEWER (read the public key; every `up` does, as
        whoever runs it: the program's data source above)."""
        return gcp.kms.CryptoKeyIAMMember(
            name,
            crypto_key_id=self.key.id,
            role=role,
            member=member,
            opts=pulumi.ResourceOptions(parent=self),
        )


def _pem(public_keys: Sequence[GetKMSCryptoKeyVersionPublicKeyResult] | None) -> str:
    """The version's public key; Cloud KMS gives it once the version is enabled."""
    if not public_keys:
        raise ValueError("the signing key's first version has no public key yet")
    return public_keys[0].pem
