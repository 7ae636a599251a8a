"""The prediction service on Cloud Run, the identity it runs as, and its metrics sidecar."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
from pulumi_gcp.cloudrunv2 import (
    ServiceScalingArgs,
    ServiceTemplateArgs,
    ServiceTemplateContainerArgs,
    ServiceTemplateContainerEnvArgs,
    ServiceTemplateContainerEnvValueSourceArgs,
    ServiceTemplateContainerEnvValueSourceSecretKeyRefArgs,
    ServiceTemplateContainerLivenessProbeArgs,
    ServiceTemplateContainerLivenessProbeHttpGetArgs,
    ServiceTemplateContainerPortsArgs,
    ServiceTemplateContainerResourcesArgs,
    ServiceTemplateContainerStartupProbeArgs,
    ServiceTemplateContainerStartupProbeHttpGetArgs,
    ServiceTemplateContainerVolumeMountArgs,
    ServiceTemplateScalingArgs,
    ServiceTemplateVolumeArgs,
    ServiceTemplateVolumeSecretArgs,
    ServiceTemplateVolumeSecretItemArgs,
    ServiceTrafficArgs,
)

import metrics_sidecar
from function.core.store import bucket_store, model_root
from gcp_limits import InstanceSize
from stack_config import PLACEHOLDER_IMAGE, TRAFFIC_TAGS

PORT = 8080
INGRESS_EDGE_ONLY = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"  # internal-and-cloud-load-balancing
LATEST = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
REVISION = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"
# Where the image sits in the service's inputs, as a Pulumi property path.
IMAGE_PATH = "template.containers[0].image"


@dataclass
class MetricsSidecarArgs:
    project: str
    secret_id: str  # the secret that holds its RunMonitoring configuration
    protect: bool
    labels: dict[str, str]
    image: str
    cpu: str  # its share of the instance (gcp_limits.container_shares)
    memory: str
    instance_billing: bool


@dataclass
class PredictionServiceArgs:
    project: str
    region: str
    service_name: str
    account_id: str  # the runtime account's
    image: str | None  # None: keep the image the service runs (see below)
    model_name: str
    environment: dict[str, str]  # the plain variables (stack_config.service_environment)
    key_refresh_seconds: int  # above 0 the app reads the key secret itself, and again
    size: InstanceSize
    cpu: str  # the app container's share of the instance (gcp_limits.container_shares)
    memory: str
    instance_billing: bool
    timeout_seconds: int
    min_instances: int
    max_instances: int
    behind_edge: bool  # modelrun:domain: only the load balancer may reach the service
    invoker_access: str
    protect: bool
    labels: dict[str, str]
    traffic_stable_revision: str | None  # None: all traffic to the latest revision
    traffic_latest_percent: int
    bucket: pulumi.Output[str]
    secret: gcp.secretmanager.Secret
    secret_version: gcp.secretmanager.SecretVersion
    public_key: pulumi.Output[str]  # MODEL_PUBLIC_KEY: the signing key's (infra/signing.py)
    sidecar: MetricsSidecarArgs | None = None  # None: modelrun:metricsSidecar off


class PredictionService(pulumi.ComponentResource):
    """A runtime account that can read only the model bucket and the key secret, and the service."""

    def __init__(self, name: str, args: PredictionServiceArgs, opts: pulumi.ResourceOptions):
        super().__init__("modelrun:gcp:PredictionService", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.account = gcp.serviceaccount.Account(
            f"{name}-runtime",
            project=args.project,
            account_id=args.account_id,
            display_name="modelrun prediction service (runtime)",
            opts=child,
        )
        member = self.account.member
        bucket_reader = gcp.storage.BucketIAMMember(
            f"{name}-reads-models",
            bucket=args.bucket,
            role="roles/storage.objectViewer",
            member=member,
            opts=child,
        )
        key_reader = gcp.secretmanager.SecretIamMember(
            f"{name}-reads-keys",
            project=args.project,
            secret_id=args.secret.secret_id,
            role="roles/secretmanager.secretAccessor",
            member=member,
            opts=child,
        )
        sidecar = (
            MetricsSidecar(
                f"{name}-metrics",
                args.sidecar,
                self.account,
                pulumi.ResourceOptions(parent=self, depends_on=opts.depends_on),
            )
            if args.sidecar
            else None
        )
        app = ServiceTemplateContainerArgs(
            name=metrics_sidecar.APP_CONTAINER,
            image=args.image or PLACEHOLDER_IMAGE,
            ports=ServiceTemplateContainerPortsArgs(container_port=PORT),
            envs=_environment(args),
            resources=ServiceTemplateContainerResourcesArgs(
                limits={"cpu": args.cpu, "memory": args.memory},
                # Request-based billing unless modelrun:instanceBasedBilling (README, Monitoring).
                cpu_idle=not args.instance_billing,
                startup_cpu_boost=True,
            ),
            startup_probe=ServiceTemplateContainerStartupProbeArgs(
                http_get=ServiceTemplateContainerStartupProbeHttpGetArgs(path="/ready", port=PORT),
                period_seconds=2,
                timeout_seconds=2,
                failure_threshold=60,
            ),
            liveness_probe=ServiceTemplateContainerLivenessProbeArgs(
                http_get=ServiceTemplateContainerLivenessProbeHttpGetArgs(
                    path="/health", port=PORT
                ),
                period_seconds=30,
                timeout_seconds=5,
                failure_threshold=3,
            ),
        )
        self.service = gcp.cloudrunv2.Service(
            name,
            name=args.service_name,
            project=args.project,
            location=args.region,
            # With the edge, only the load balancer may reach the service: its run.app URL
            # refuses outside traffic (infra/edge.py).
            ingress=INGRESS_EDGE_ONLY if args.behind_edge else "INGRESS_TRAFFIC_ALL",
            # For organisations whose policy forbids allUsers: Cloud Run skips its invoker check
            # and the app's API key is the only gate (README, "Who can reach the URL").
            invoker_iam_disabled=args.invoker_access == "public-no-iam-check",
            deletion_protection=args.protect,
            labels=args.labels,
            # Service-level scaling, stated explicitly: left out, the provider shows a diff forever.
            scaling=ServiceScalingArgs(min_instance_count=args.min_instances),
            template=ServiceTemplateArgs(
                service_account=self.account.email,
                # Below 1 vCPU Cloud Run requires the first generation (infra/gcp_limits.py).
                execution_environment="EXECUTION_ENVIRONMENT_GEN1"
                if args.size.first_generation
                else "EXECUTION_ENVIRONMENT_GEN2",
                max_instance_request_concurrency=args.size.concurrency,
                timeout=f"{args.timeout_seconds}s",
                # Both bounds set: min alone triggers a permadiff (terraform-provider-google#20399).
                scaling=ServiceTemplateScalingArgs(
                    min_instance_count=args.min_instances,
                    max_instance_count=args.max_instances,
                ),
                containers=[app, *([sidecar.container] if sidecar else [])],
                volumes=[sidecar.volume] if sidecar else None,
            ),
            traffics=traffic_split(args.traffic_stable_revision, args.traffic_latest_percent),
            # A revision started before its account can read the secret fails with "Permission
            # denied on secret": create the grants (and the secret's first version) first.
            # Without modelrun:image the image is the one the service runs: the engine keeps
            # the stored value of an ignored property on update and uses the placeholder only
            # on create (docs/ARCHITECTURE.md, "Image continuity").
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[
                    args.secret_version,
                    key_reader,
                    bucket_reader,
                    *(sidecar.grants if sidecar else []),
                ],
                ignore_changes=None if args.image else [IMAGE_PATH],
            ),
        )
        if args.invoker_access == "public":
            # Public on the network only: every route but the probes checks an API key.
            gcp.cloudrunv2.ServiceIamMember(
                f"{name}-public",
                project=args.project,
                location=args.region,
                name=self.service.name,
                role="roles/run.invoker",
                member="allUsers",
                opts=child,
            )
        self.url = self.service.uri
        self.image = self.service.template.apply(lambda t: (t.containers or [])[0].image)
        # The revision serving the latest template: the stable one of the next split.
        self.latest_revision = self.service.latest_ready_revision.apply(
            lambda name: (name or "").rsplit("/", 1)[-1]
        )
        # The URL that reaches the latest revision alone: during a split, its tag's
        # (Cloud Run serves each tagged target at https://TAG---HOST of the service's URL).
        self.candidate_url = (
            self.url.apply(lambda url: url.replace("https://", f"https://{TRAFFIC_TAGS[0]}---", 1))
            if args.traffic_stable_revision
            else self.url
        )
        self.register_outputs({"url": self.url, "image": self.image})


def _environment(args: PredictionServiceArgs) -> list[ServiceTemplateContainerEnvArgs]:
    secret = args.secret
    env = [
        ServiceTemplateContainerEnvArgs(
            name="MODEL_URI",
            value=args.bucket.apply(lambda name: model_root(bucket_store(name), args.model_name)),
        ),
        # Only versions this key signed load (the trainer signs; a bucket writer cannot).
        ServiceTemplateContainerEnvArgs(name="MODEL_PUBLIC_KEY", value=args.public_key),
    ]
    env += [
        ServiceTemplateContainerEnvArgs(name=name, value=value)
        for name, value in args.environment.items()
    ]
    if args.key_refresh_seconds > 0:
        # The app reads the secret itself and re-reads it: rotation needs no new revision.
        env.append(
            ServiceTemplateContainerEnvArgs(
                name="API_KEYS_SECRET",
                value=pulumi.Output.concat(secret.id, "/versions/latest"),
            )
        )
    else:
        # Cloud Run resolves the secret when an instance starts and injects it as API_KEYS.
        env.append(
            ServiceTemplateContainerEnvArgs(
                name="API_KEYS",
                value_source=ServiceTemplateContainerEnvValueSourceArgs(
                    secret_key_ref=ServiceTemplateContainerEnvValueSourceSecretKeyRefArgs(
                        secret=secret.secret_id, version="latest"
                    )
                ),
            )
        )
    return env


class MetricsSidecar(pulumi.ComponentResource):
    """Managed Service for Prometheus's collector beside the app (infra/metrics_sidecar.py): its
    RunMonitoring configuration in a secret it mounts, and the runtime account's two grants."""

    def __init__(
        self,
        name: str,
        args: MetricsSidecarArgs,
        account: gcp.serviceaccount.Account,  # the runtime account: the service's, made first
        opts: pulumi.ResourceOptions,
    ) -> None:
        super().__init__("modelrun:gcp:MetricsSidecar", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        member = account.member
        # The documented way to give the sidecar a configuration: a secret mounted as a file. It
        # holds no secret, only where to scrape.
        secret = gcp.secretmanager.Secret(
            f"{name}-config",
            project=args.project,
            secret_id=args.secret_id,
            deletion_protection=args.protect,
            replication=gcp.secretmanager.SecretReplicationArgs(
                auto=gcp.secretmanager.SecretReplicationAutoArgs()
            ),
            labels=args.labels,
            opts=child,
        )
        version = gcp.secretmanager.SecretVersion(
            f"{name}-config",
            secret=secret.id,
            secret_data=metrics_sidecar.config_text(),
            opts=child,
        )
        self.grants: list[pulumi.Resource] = [
            version,
            gcp.secretmanager.SecretIamMember(
                f"{name}-reads-config",
                project=args.project,
                secret_id=secret.secret_id,
                role="roles/secretmanager.secretAccessor",
                member=member,
                opts=child,
            ),
            # Writing time series is granted per project: Cloud Monitoring has no narrower scope.
            gcp.projects.IAMMember(
                f"{name}-writes-metrics",
                project=args.project,
                role="roles/monitoring.metricWriter",
                member=member,
                opts=child,
            ),
        ]
        self.volume = ServiceTemplateVolumeArgs(
            name="metrics-config",
            secret=ServiceTemplateVolumeSecretArgs(
                secret=secret.secret_id,
                items=[
                    ServiceTemplateVolumeSecretItemArgs(
                        path=metrics_sidecar.CONFIG_FILE, version="latest"
                    )
                ],
            ),
        )
        self.container = ServiceTemplateContainerArgs(
            name=metrics_sidecar.CONTAINER,
            image=args.image,
            # Started once the app passes its startup probe; with no probe of its own, the
            # collector never holds the instance back from serving.
            depends_ons=[metrics_sidecar.APP_CONTAINER],
            volume_mounts=[
                ServiceTemplateContainerVolumeMountArgs(
                    name="metrics-config", mount_path=metrics_sidecar.CONFIG_DIR
                )
            ],
            resources=ServiceTemplateContainerResourcesArgs(
                limits={"cpu": args.cpu, "memory": args.memory},
                cpu_idle=not args.instance_billing,
            ),
        )
        self.register_outputs({})


def traffic_split(revision: str | None, percent: int) -> list[ServiceTrafficArgs]:
    """All traffic to the latest revision; or, with a stable revision, a split between the two,
    each reachable alone at its tag's URL (https://TAG---SERVICE-...run.app).

    Stated even when it is all to the latest: the provider keeps a split it no longer sees
    (traffics is computed), and Cloud Run keeps the last split for every later deploy.
    """
    if revision is None:
        return [ServiceTrafficArgs(type=LATEST, percent=100)]
    candidate, stable = TRAFFIC_TAGS
    return [
        ServiceTrafficArgs(type=LATEST, percent=percent, tag=candidate),
        ServiceTrafficArgs(type=REVISION, revision=revision, percent=100 - percent, tag=stable),
    ]
