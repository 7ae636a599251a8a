"""The API-key secret: a generated key, kept secret end to end."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_random as random
from pulumi_gcp.secretmanager import SecretReplicationArgs, SecretReplicationAutoArgs


@dataclass
class ApiKeysArgs:
    project: str
    secret_id: str
    protect: bool
    labels: dict[str, str]
    key: pulumi.Output[str] | None = None  # from `pulumi config set --secret modelrun:apiKey`


class ApiKeys(pulumi.ComponentResource):
    """A Secret Manager secret whose first version is a generated key (or the configured one).

    The payload is a comma-separated key list: to rotate, add a version holding "old,new",
    move clients to the new key, then add a version holding only "new" (see the README).
    """

    def __init__(self, name: str, args: ApiKeysArgs, opts: pulumi.ResourceOptions):
        super().__init__("modelrun:gcp:ApiKeys", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        key: pulumi.Output[str]
        if args.key is None:
            generated = random.RandomPassword(f"{name}-value", length=40, special=False, opts=child)
            key = pulumi.Output.secret(generated.result)
        else:
            key = pulumi.Output.secret(args.key)
        self.secret = gcp.secretmanager.Secret(
            name,
            project=args.project,
            secret_id=args.secret_id,
            replication=SecretReplicationArgs(auto=SecretReplicationAutoArgs()),
            deletion_protection=args.protect,
            labels=args.labels,
            opts=child,
        )
        self.version = gcp.secretmanager.SecretVersion(
            f"{name}-v1",
            secret=self.secret.id,
            secret_data=key,
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["secret_data"]),
        )
        self.key = key
        self.secret_id = self.secret.secret_id
        self.register_outputs({"secret_id": self.secret_id})
