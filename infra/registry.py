"""The Artifact Registry Docker repository for the service's images."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
from pulumi_gcp.artifactregistry import (
    RepositoryCleanupPolicyArgs,
    RepositoryCleanupPolicyConditionArgs,
    RepositoryCleanupPolicyMostRecentVersionsArgs,
)


@dataclass
class ImageRegistryArgs:
    project: str
    region: str
    repository_id: str
    images_to_keep: int
    labels: dict[str, str]


class ImageRegistry(pulumi.ComponentResource):
    """A Docker repository that keeps the recent images and deletes old untagged ones."""

    def __init__(self, name: str, args: ImageRegistryArgs, opts: pulumi.ResourceOptions):
        super().__init__("modelrun:gcp:ImageRegistry", name, None, opts)
        self.repository = gcp.artifactregistry.Repository(
            name,
            project=args.project,
            location=args.region,
            repository_id=args.repository_id,
            format="DOCKER",
            description="modelrun service images",
            labels=args.labels,
            cleanup_policy_dry_run=False,  # policies only act when this is explicitly off
            cleanup_policies=[
                RepositoryCleanupPolicyArgs(
                    id="keep-recent",
                    action="KEEP",
                    most_recent_versions=RepositoryCleanupPolicyMostRecentVersionsArgs(
                        keep_count=args.images_to_keep
                    ),
                ),
                RepositoryCleanupPolicyArgs(
                    id="delete-old-untagged",
                    action="DELETE",
                    condition=RepositoryCleanupPolicyConditionArgs(
                        tag_state="UNTAGGED", older_than="604800s"
                    ),
                ),
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.url = pulumi.Output.concat(
            args.region, "-docker.pkg.dev/", args.project, "/", self.repository.repository_id
        )
        self.register_outputs({"url": self.url})
