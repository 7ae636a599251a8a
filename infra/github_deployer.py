"""Keyless GitHub Actions access: a Workload Identity pool, and the accounts workflows act as."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
from pulumi_gcp.iam import WorkloadIdentityPoolProviderOidcArgs

from gcp_limits import (
    ACCOUNT_DISPLAY_NAME,
    POOL_DISPLAY_NAME,
    check_display_name,
)
from resource_names import Names
from signing import PUBLIC_KEY_VIEWER, SIGNER, SigningKey

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
# Each account is bound to the one workflow that needs it, by the token's `workflow_ref` claim
# ("OWNER/REPO/.github/workflows/FILE@REF": GitHub's "OpenID Connect reference", token claims):
# another workflow on the same branch cannot deploy or publish models.
WORKFLOWS = {"deployer": "deploy.yml", "trainer": "train.yml"}


def workflow_ref(repository: str, workflow: str, branch: str) -> str:
    """The workflow_ref claim of a run of `workflow` on `branch`."""
    return f"{repository}/.github/workflows/{workflow}@refs/heads/{branch}"


@dataclass
class GithubDeployerArgs:
    project: str
    region: str
    names: Names
    repository: str  # OWNER/NAME
    owner_id: str  # the owner's numeric GitHub id
    branch: str
    registry: gcp.artifactregistry.Repository
    service: gcp.cloudrunv2.Service
    runtime_account: gcp.serviceaccount.Account
    secret: gcp.secretmanager.Secret
    model_bucket: pulumi.Output[str]
    state_bucket: str | None
    secrets_kms_key: str | None
    invokes_with_identity: bool  # the service checks run.invoker: the smoke test needs it
    signing_key: SigningKey | None = None  # the trainer signs what it publishes with it
    batch_job: gcp.cloudrunv2.Job | None = None  # a deploy updates its image too


class GithubDeployer(pulumi.ComponentResource):
    """Only workflows of one repository's branch can act as the deployer or the trainer.

    deployer: push images to the registry, update the one service (and the batch job, when there
    is one), act as their runtime account,
    read the API key for the smoke test (and invoke the service, when it checks run.invoker), and
    (if named) use the Pulumi state bucket and KMS key.
    trainer: write objects in the model bucket, nothing else.
    """

    def __init__(self, name: str, args: GithubDeployerArgs, opts: pulumi.ResourceOptions):
        super().__init__("modelrun:gcp:GithubDeployer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        refs = {
            role: workflow_ref(args.repository, workflow, args.branch)
            for role, workflow in WORKFLOWS.items()
        }
        pool = gcp.iam.WorkloadIdentityPool(
            name,
            project=args.project,
            workload_identity_pool_id=args.names.pool_id,
            display_name=check_display_name("GitHub Actions", POOL_DISPLAY_NAME, "the pool"),
            opts=child,
        )
        self.provider = gcp.iam.WorkloadIdentityPoolProvider(
            name,
            project=args.project,
            workload_identity_pool_id=pool.workload_identity_pool_id,
            workload_identity_pool_provider_id=args.names.pool_provider,
            # The repository's name may be longer than a provider's display name: cut.
            display_name=f"GitHub {args.repository}"[:POOL_DISPLAY_NAME],
            oidc=WorkloadIdentityPoolProviderOidcArgs(issuer_uri=GITHUB_ISSUER),
            attribute_mapping={
                "google.subject": "assertion.sub",
                "attribute.repository": "assertion.repository",
                "attribute.repository_owner_id": "assertion.repository_owner_id",
                "attribute.ref": "assertion.ref",
                "attribute.workflow_ref": "assertion.workflow_ref",
            },
            # Tokens from any other repository or branch are refused before any binding is read.
            # A name can be renamed away and registered again by someone else; the owner's
            # numeric id cannot, so it is checked too (GitHub's OIDC claim repository_owner_id).
            # Only the two workflows' tokens are admitted at all.
            attribute_condition=(
                f"assertion.repository_owner_id == '{args.owner_id}' && "
                f"assertion.repository == '{args.repository}' && "
                f"assertion.ref == 'refs/heads/{args.branch}' && "
                f"assertion.workflow_ref in [{', '.join(repr(r) for r in refs.values())}]"
            ),
            opts=child,
        )

        def principals(role: str) -> pulumi.Output[str]:
            """Tokens of the one workflow that acts as this account."""
            return pool.name.apply(
                lambda pool_name: (
                    f"principalSet://iam.googleapis.com/{pool_name}"
                    f"/attribute.workflow_ref/{refs[role]}"
                )
            )

        self.deployer = self._account(
            name, "deployer", "deploys modelrun", args, principals("deployer")
        )
        self.trainer = self._account(
            name, "trainer", "publishes models", args, principals("trainer")
        )
        deployer = self.deployer.member
        trainer = self.trainer.member

        gcp.artifactregistry.RepositoryIamMember(
            f"{name}-pushes-images",
            project=args.project,
            location=args.region,
            repository=args.registry.repository_id,
            role="roles/artifactregistry.writer",
            member=deployer,
            opts=child,
        )
        on_service = {"deploys-service": "roles/run.developer"}
        if args.invokes_with_identity:
            on_service["invokes-for-smoke-test"] = "roles/run.invoker"
        for purpose, role in on_service.items():
            gcp.cloudrunv2.ServiceIamMember(
                f"{name}-{purpose}",
                project=args.project,
                location=args.region,
                name=args.service.name,
                role=role,
                member=deployer,
                opts=child,
            )
        if args.batch_job is not None:
            gcp.cloudrunv2.JobIamMember(
                f"{name}-deploys-batch-job",
                project=args.project,
                location=args.region,
                name=args.batch_job.name,
                role="roles/run.developer",
                member=deployer,
                opts=child,
            )
        gcp.serviceaccount.IAMMember(
            f"{name}-acts-as-runtime",
            service_account_id=args.runtime_account.name,
            role="roles/iam.serviceAccountUser",
            member=deployer,
            opts=child,
        )
        gcp.secretmanager.SecretIamMember(
            f"{name}-reads-key-for-smoke-test",
            project=args.project,
            secret_id=args.secret.secret_id,
            role="roles/secretmanager.secretAccessor",
            member=deployer,
            opts=child,
        )
        if args.state_bucket:
            gcp.storage.BucketIAMMember(
                f"{name}-uses-state",
                bucket=args.state_bucket,
                role="roles/storage.objectUser",
                member=deployer,
                opts=child,
            )
        if args.secrets_kms_key:
            gcp.kms.CryptoKeyIAMMember(
                f"{name}-decrypts-state-secrets",
                crypto_key_id=args.secrets_kms_key,
                role="roles/cloudkms.cryptoKeyEncrypterDecrypter",
                member=deployer,
                opts=child,
            )
        gcp.storage.BucketIAMMember(
            f"{name}-trainer-publishes",
            bucket=args.model_bucket,
            role="roles/storage.objectUser",
            member=trainer,
            opts=child,
        )
        if args.signing_key is not None:
            args.signing_key.grant(f"{name}-trainer-signs", SIGNER, trainer)
            # CI's `up` reads the key's public key again, for the service's MODEL_PUBLIC_KEY.
            args.signing_key.grant(f"{name}-reads-signing-public-key", PUBLIC_KEY_VIEWER, deployer)
        self.provider_name = self.provider.name
        self.register_outputs(
            {
                "provider": self.provider_name,
                "deployer": self.deployer.email,
                "trainer": self.trainer.email,
            }
        )

    def _account(
        self,
        component: str,
        role: str,
        purpose: str,
        args: GithubDeployerArgs,
        principals: pulumi.Output[str],
    ) -> gcp.serviceaccount.Account:
        name = f"{component}-{role}"
        account = gcp.serviceaccount.Account(
            name,
            project=args.project,
            account_id=args.names.account(role),
            display_name=check_display_name(
                f"GitHub Actions: {purpose}", ACCOUNT_DISPLAY_NAME, f"the {role} account"
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        gcp.serviceaccount.IAMMember(
            f"{name}-from-github",
            service_account_id=account.name,
            role="roles/iam.workloadIdentityUser",
            member=principals,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return account
