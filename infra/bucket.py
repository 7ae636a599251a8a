"""The model store bucket: private, versioned, protected."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
from pulumi_gcp.storage import (
    BucketEncryptionArgs,
    BucketLifecycleRuleActionArgs,
    BucketLifecycleRuleArgs,
    BucketLifecycleRuleConditionArgs,
    BucketVersioningArgs,
)


@dataclass
class ModelBucketArgs:
    project: str
    region: str
    bucket_name: str
    noncurrent_version_days: int
    protect: bool
    kms_key: str | None
    labels: dict[str, str]


class ModelBucket(pulumi.ComponentResource):
    """Uniform access, public access prevention enforced, object versioning, old versions expire."""

    def __init__(self, name: str, args: ModelBucketArgs, opts: pulumi.ResourceOptions):
        super().__init__("modelrun:gcp:ModelBucket", name, None, opts)
        grants: list[pulumi.Resource] = []
        if args.kms_key:
            # CMEK: the project's Cloud Storage agent must be able to use the key first.
            agent = gcp.storage.get_project_service_account_output(project=args.project)
            grants.append(
                gcp.kms.CryptoKeyIAMMember(
                    f"{name}-cmek",
                    crypto_key_id=args.kms_key,
                    role="roles/cloudkms.cryptoKeyEncrypterDecrypter",
                    member=agent.email_address.apply(lambda email: f"serviceAccount:{email}"),
                    opts=pulumi.ResourceOptions(parent=self),
                )
            )
        self.bucket = gcp.storage.Bucket(
            name,
            name=args.bucket_name,
            project=args.project,
            location=args.region,
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            versioning=BucketVersioningArgs(enabled=True),
            lifecycle_rules=[
                BucketLifecycleRuleArgs(
                    action=BucketLifecycleRuleActionArgs(type="Delete"),
                    condition=BucketLifecycleRuleConditionArgs(
                        with_state="ARCHIVED",
                        days_since_noncurrent_time=args.noncurrent_version_days,
                    ),
                )
            ],
            encryption=BucketEncryptionArgs(default_kms_key_name=args.kms_key)
            if args.kms_key
            else None,
            force_destroy=not args.protect,
            labels=args.labels,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect, depends_on=grants),
        )
        self.name = self.bucket.name
        self.register_outputs({"name": self.name})
