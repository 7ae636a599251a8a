"""modelrun on Google Cloud: wire the components of one stack and export what users need."""

from __future__ import annotations

import pulumi

import stack_config
from alerts import Alerts, AlertsArgs
from api_keys import ApiKeys, ApiKeysArgs
from apis import EDGE_APIS, PAYLOAD_APIS, SCHEDULER, Apis, ApisArgs
from batch_job import BatchJob, BatchJobArgs
from bucket import ModelBucket, ModelBucketArgs
from cloud_run import MetricsSidecarArgs, PredictionService, PredictionServiceArgs
from dashboard import Dashboard, DashboardArgs
from edge import Edge, EdgeArgs
from function.core.store import bucket_store, model_root
from github_deployer import GithubDeployer, GithubDeployerArgs
from payload_sink import PayloadSink, PayloadSinkArgs
from registry import ImageRegistry, ImageRegistryArgs
from signing import SigningKey, SigningKeyArgs

config = stack_config.load()
scheduled = config.batch is not None and config.batch.schedule is not None
payloads_on = config.payload_sample_rate > 0
extra_apis = (
    ((SCHEDULER,) if scheduled else ())
    + (EDGE_APIS if config.edge else ())
    + (PAYLOAD_APIS if payloads_on else ())
)
apis = Apis("apis", ApisArgs(config.project, extra_apis))
after_apis = pulumi.ResourceOptions(depends_on=apis.services)

registry = ImageRegistry(
    "modelrun",
    ImageRegistryArgs(
        project=config.project,
        region=config.region,
        repository_id=config.names.registry,
        images_to_keep=config.images_to_keep,
        labels=config.labels,
    ),
    after_apis,
)
models = ModelBucket(
    "models",
    ModelBucketArgs(
        project=config.project,
        region=config.region,
        bucket_name=config.names.bucket,
        noncurrent_version_days=config.noncurrent_version_days,
        protect=config.deletion_protection,
        kms_key=config.bucket_kms_key,
        labels=config.labels,
    ),
    after_apis,
)
keys = ApiKeys(
    "modelrun-api-keys",
    ApiKeysArgs(
        project=config.project,
        secret_id=config.names.secret,
        protect=config.deletion_protection,
        labels=config.labels,
        key=config.api_key,
    ),
    after_apis,
)
signing = SigningKey(
    "model-signing",
    SigningKeyArgs(
        project=config.project,
        region=config.region,
        key_ring_id=config.names.key_ring,
        key_id="models",
        protect=config.deletion_protection,
        labels=config.labels,
    ),
    after_apis,
)
shares = config.shares  # the app's and the collector's parts of the instance
service = PredictionService(
    "modelrun",
    PredictionServiceArgs(
        project=config.project,
        region=config.region,
        service_name=config.service_name,
        account_id=config.names.account("runtime"),
        image=config.image,
        model_name=config.model_name,
        environment=stack_config.service_environment(config),
        key_refresh_seconds=config.key_refresh_seconds,
        size=config.size,
        cpu=shares.app_cpu,
        memory=shares.app_memory,
        instance_billing=config.instance_billing,
        timeout_seconds=config.timeout_seconds,
        min_instances=config.min_instances,
        max_instances=config.max_instances,
        behind_edge=config.edge is not None,
        invoker_access=config.invoker_access,
        protect=config.deletion_protection,
        labels=config.labels,
        traffic_stable_revision=config.traffic_stable_revision,
        traffic_latest_percent=config.traffic_latest_percent,
        bucket=models.name,
        secret=keys.secret,
        secret_version=keys.version,
        public_key=signing.public_key_pem,
        sidecar=MetricsSidecarArgs(
            project=config.project,
            secret_id=config.names.metrics_config,
            protect=config.deletion_protection,
            labels=config.labels,
            image=config.metrics_sidecar_image,
            cpu=str(shares.sidecar_cpu),
            memory=str(shares.sidecar_memory),
            instance_billing=config.instance_billing,
        )
        if config.metrics_sidecar
        else None,
    ),
    after_apis,
)
batch = (
    BatchJob(
        "batch",
        BatchJobArgs(
            project=config.project,
            region=config.region,
            job_name=config.names.batch_job,
            bucket_name=config.names.batch_bucket,
            scheduler_account_id=config.names.account("scheduler"),
            protect=config.deletion_protection,
            labels=config.labels,
            model_name=config.model_name,
            model_version=config.model_version,
            model_sha256=config.model_sha256,
            service_settings=config.service_settings,
            settings=config.batch,
            model_bucket=models.name,
            image=service.image,
            account=service.account,
            public_key=signing.public_key_pem,
        ),
        after_apis,
    )
    if config.batch
    else None
)
# With a domain, the service is reachable only through the edge: the uptime check and the
# deploy's smoke test go there too.
edge = (
    Edge(
        "edge",
        EdgeArgs(config.project, config.region, config.names, config.edge, service.service),
        after_apis,
    )
    if config.edge
    else None
)
public_url = pulumi.Output.from_input(edge.url) if edge else service.url
alerts = Alerts(
    "alerts",
    AlertsArgs(
        project=config.project,
        service_url=public_url,
        invoker_access=config.invoker_access,
        emails=config.alert_emails,
        labels=config.labels,
        service=service.service,
        service_name=config.service_name,
        # Secret Manager names a secret projects/NUMBER/secrets/ID.
        project_number=keys.secret.name.apply(lambda name: name.split("/")[1]),
    ),
    after_apis,
)
dashboard = Dashboard(
    "dashboard",
    DashboardArgs(
        config.project, edge.blocked_metric.name if edge else None, service=config.service_name
    ),
    after_apis,
)
github = GithubDeployer(
    "github",
    GithubDeployerArgs(
        project=config.project,
        region=config.region,
        names=config.names,
        repository=config.github_repository,
        owner_id=config.github_owner_id,
        branch=config.github_branch,
        registry=registry.repository,
        service=service.service,
        runtime_account=service.account,
        secret=keys.secret,
        model_bucket=models.name,
        state_bucket=config.state_bucket,
        secrets_kms_key=config.secrets_kms_key,
        invokes_with_identity=config.invoker_access == "iam",
        signing_key=signing,
        batch_job=batch.job if batch else None,
    ),
    after_apis,
)

payloads = (
    PayloadSink(
        "payloads",
        PayloadSinkArgs(
            project=config.project,
            region=config.region,
            service_name=config.service_name,
            dataset_id=config.service_name.replace("-", "_") + "_payloads",
            retention_days=config.payload_retention_days,
            protect=config.deletion_protection,
            labels=config.labels,
        ),
        after_apis,
    )
    if payloads_on
    else None
)
if payloads:  # the trainer's `promote --auto --require-live-quality` reads them
    payloads.grant_reader("trainer", github.trainer.member)

outputs = {
    "serviceUrl": service.url,
    "candidateUrl": pulumi.Output.from_input(edge.url) if edge else service.candidate_url,
    "latestRevision": service.latest_revision,
    "dashboardUrl": dashboard.url,
    "serviceName": service.service.name,
    "image": service.image,
    "invokerAccess": config.invoker_access,
    "modelBucket": models.name,
    "modelStore": models.name.apply(bucket_store),
    "modelUri": models.name.apply(lambda name: model_root(bucket_store(name), config.model_name)),
    "apiKeySecret": keys.secret_id,
    "apiKey": keys.key,
    "imageRepository": registry.url,
    "workloadIdentityProvider": github.provider_name,
    "deployerServiceAccount": github.deployer.email,
    "trainerServiceAccount": github.trainer.email,
    "runtimeServiceAccount": service.account.email,
    "signingKey": signing.version,  # train.yml's MODEL_SIGNING_KEY
    "signingPublicKey": signing.public_key_pem,
}
if edge:
    outputs |= {"edgeUrl": edge.url, "edgeAddress": edge.address}
if payloads:
    outputs |= {"payloadDataset": payloads.dataset_ref}  # evaluate --bigquery PROJECT.DATASET
if batch:
    outputs |= {
        "batchJob": batch.job.name,
        "batchInput": batch.input_uri,
        "batchOutput": batch.output_uri,
    }
for key, value in outputs.items():
    pulumi.export(key, value)
