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
from stack_config import PLACEHOLDER_IMAGE, TRAFFIC_TAGS, StackConfig, service_environment

PORT = 8080
INGRESS_EDGE_ONLY = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"  # internal-and-cloud-load-balancing
LATEST = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
REVISION = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"
# Where the image sits in the service's inputs, as a Pulumi property path.
IMAGE_PATH = "template.containers[0].image"


@dataclass
class PredictionServiceArgs:
    config: StackConfig
    bucket: pulumi.Output[str]
    secret: gcp.secretmanager.Secret
    secret_version: gcp.secretmanager.SecretVersion
    public_key: pulumi.Output[str]  # MODEL_PUBLIC_KEY: the signing key's (infra/signing.py)


class PredictionService(pulumi.ComponentResource):
    """A runtime account that can read only the model bucket and the key secret, and the service."""

    def __init__(self, name: str, args: PredictionServiceArgs, opts: pulumi.ResourceOptions):
        super().__init__("modelrun:gcp:PredictionService", name, None, opts)
        config = args.config
        child = pulumi.ResourceOptions(parent=self)
        self.account = gcp.serviceaccount.Account(
            f"{name}-runtime",
            project=config.project,
            account_id=config.names.account("runtime"),
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
            project=config.project,
            secret_id=args.secret.secret_id,
            role="roles/secretmanager.secretAccessor",
            member=member,
            opts=child,
        )
        sidecar = (
            MetricsSidecar(
                f"{name}-metrics",
                config,
                self.account,
                pulumi.ResourceOptions(parent=self, depends_on=opts.depends_on),
            )
            if config.metrics_sidecar
            else None
        )
        app = ServiceTemplateContainerArgs(
            name=metrics_sidecar.APP_CONTAINER,
            image=config.image or PLACEHOLDER_IMAGE,
            ports=ServiceTemplateContainerPortsArgs(container_port=PORT),
            envs=_environment(config, args.bucket, args.secret, args.public_key),
            resources=ServiceTemplateContainerResourcesArgs(
                limits={"cpu": config.shares.app_cpu, "memory": config.shares.app_memory},
                # Request-based billing unless modelrun:instanceBasedBilling (README, Monitoring).
                cpu_idle=not config.instance_billing,
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
            name=config.service_name,
            project=config.project,
            location=config.region,
            # With the edge, only the load balancer may reach the service: its run.app URL
            # refuses outside traffic (infra/edge.py).
            ingress=INGRESS_EDGE_ONLY if config.edge else "INGRESS_TRAFFIC_ALL",
            # For organisations whose policy forbids allUsers: Cloud Run skips its invoker check
            # and the app's API key is the only gate (README, "Who can reach the URL").
            invoker_iam_disabled=config.invoker_access == "public-no-iam-check",
            deletion_protection=config.deletion_protection,
            labels=config.labels,
            # Service-level scaling, stated explicitly: left out, the provider shows a diff forever.
            scaling=ServiceScalingArgs(min_instance_count=config.min_instances),
            template=ServiceTemplateArgs(
                service_account=self.account.email,
                # Below 1 vCPU Cloud Run requires the first generation (infra/gcp_limits.py).
                execution_environment="EXECUTION_ENVIRONMENT_GEN1"
                if config.size.first_generation
                else "EXECUTION_ENVIRONMENT_GEN2",
                max_instance_request_concurrency=config.size.concurrency,
                timeout=f"{config.timeout_seconds}s",
                # Both bounds set: min alone triggers a permadiff (terraform-provider-google#20399).
                scaling=ServiceTemplateScalingArgs(
                    min_instance_count=config.min_instances,
                    max_instance_count=config.max_instances,
                ),
                containers=[app, *([sidecar.container] if sidecar else [])],
                volumes=[sidecar.volume] if sidecar else None,
            ),
            traffics=traffic_split(config),
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
                ignore_changes=None if config.image else [IMAGE_PATH],
            ),
        )
        if config.invoker_access == "public":
            # Public on the network only: every route but the probes checks an API key.
            gcp.cloudrunv2.ServiceIamMember(
                f"{name}-public",
                project=config.project,
                location=config.region,
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
            if config.traffic_stable_revision
            else self.url
        )
        self.register_outputs({"url": self.url, "image": self.image})


def _environment(
    config: StackConfig,
    bucket: pulumi.Output[str],
    secret: gcp.secretmanager.Secret,
    public_key: pulumi.Output[str],
) -> list[ServiceTemplateContainerEnvArgs]:
    env = [
        ServiceTemplateContainerEnvArgs(
            name="MODEL_URI",
            value=bucket.apply(lambda name: model_root(bucket_store(name), config.model_name)),
        ),
        # Only versions this key signed load (the trainer signs; a bucket writer cannot).
        ServiceTemplateContainerEnvArgs(name="MODEL_PUBLIC_KEY", value=public_key),
    ]
    env += [
        ServiceTemplateContainerEnvArgs(name=name, value=value)
        for name, value in service_environment(config).items()
    ]
    if config.key_refresh_seconds > 0:
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
        config: StackConfig,
        account: gcp.serviceaccount.Account,
        opts: pulumi.ResourceOptions,
    ) -> None:
        super().__init__("modelrun:gcp:MetricsSidecar", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        member = account.member
        # The documented way to give the sidecar a configuration: a secret mounted as a file. It
        # holds no secret, only where to scrape.
        secret = gcp.secretmanager.Secret(
            f"{name}-config",
            project=config.project,
            secret_id=config.names.metrics_config,
            deletion_protection=config.deletion_protection,
            replication=gcp.secretmanager.SecretReplicationArgs(
                auto=gcp.secretmanager.SecretReplicationAutoArgs()
            ),
            labels=config.labels,
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
                project=config.project,
                secret_id=secret.secret_id,
                role="roles/secretmanager.secretAccessor",
                member=member,
                opts=child,
            ),
            # Writing time series is granted per project: Cloud Monitoring has no narrower scope.
            gcp.projects.IAMMember(
                f"{name}-writes-metrics",
                project=config.project,
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
            image=config.metrics_sidecar_image,
            # Started once the app passes its startup probe; with no probe of its own, the
            # collector never holds the instance back from serving.
            depends_ons=[metrics_sidecar.APP_CONTAINER],
            volume_mounts=[
                ServiceTemplateContainerVolumeMountArgs(
                    name="metrics-config", mount_path=metrics_sidecar.CONFIG_DIR
                )
            ],
            resources=ServiceTemplateContainerResourcesArgs(
                limits={
                    "cpu": str(config.shares.sidecar_cpu),
                    "memory": str(config.shares.sidecar_memory),
                },
                cpu_idle=not config.instance_billing,
            ),
        )
        self.register_outputs({})


def traffic_split(config: StackConfig) -> list[ServiceTrafficArgs]:
    """All traffic to the latest revision; or, with a stable revision, a split between the two,
    each reachable alone at its tag's URL (https://TAG---SERVICE-...run.app).

    Stated even when it is all to the latest: the provider keeps a split it no longer sees
    (traffics is computed), and Cloud Run keeps the last split for every later deploy.
    """
    percent = config.traffic_latest_percent
    revision = config.traffic_stable_revision
    if revision is None:
        return [ServiceTrafficArgs(type=LATEST, percent=100)]
    candidate, stable = TRAFFIC_TAGS
    return [
        ServiceTrafficArgs(type=LATEST, percent=percent, tag=candidate),
        ServiceTrafficArgs(type=REVISION, revision=revision, percent=100 - percent, tag=stable),
    ]
