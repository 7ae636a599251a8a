"""Every stack setting, read once and checked at once.

Pulumi.yaml declares each key with its default, and the Pulumi CLI merges those defaults into the
stack's configuration before the program runs: the program therefore requires every key and
keeps no second copy of a default. An empty string means "not set" for the optional ones.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pulumi

import metrics_sidecar
from config_error import ConfigError
from gcp_limits import (
    ContainerShares,
    InstanceSize,
    check_edge,
    check_job,
    check_labels,
    container_shares,
    instance_size,
    label_value,
)
from resource_names import Names, names

# The service's own configuration rules (function/core/config.py) check the settings passed through.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from function.core.config import load_config
from function.core.errors import ConfigError as ServiceConfigError
from function.core.store import bucket_store, model_root

PLACEHOLDER_IMAGE = "us-docker.pkg.dev/cloudrun/container/hello"
REPOSITORY_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
INVOKER_ACCESS = ("public", "public-no-iam-check", "iam")
# Service variables (README's configuration table) a stack passes through, each from the
# modelrun: key of the same name in camelCase (MODEL_REFRESH_SECONDS <- modelRefreshSeconds).
SERVICE_SETTINGS = (
    "MODEL_REFRESH_SECONDS",
    "MAX_REQUEST_BYTES",
    "MAX_INSTANCES_PER_REQUEST",
    "STORE_TIMEOUT_SECONDS",
    "LOG_LEVEL",
    "METRICS_PUBLIC",
    "RATE_LIMIT_PER_SECOND",
    "RATE_LIMIT_BURST",
    "CORS_ORIGINS",
    "ALLOW_PICKLE",
    "ALLOW_UNSIGNED_MODELS",
    "MODEL_RUNTIME",
    "MICRO_BATCHING",
    "BATCH_MAX_ROWS",
    "BATCH_MAX_WAIT_MS",
    "UI",
    "DRIFT_FEATURES",
    "MODEL_MEMORY_MB",
)
# A model's share of the app container's memory when MODEL_MEMORY_MB is not set: half of it, split
# among the workers (each holds its own models); the rest is Python, the libraries and requests.
MODEL_MEMORY_SHARE = 0.5
TRAFFIC_TAGS = ("candidate", "stable")  # the tagged URLs of a split: latest revision, and stable


@dataclass(frozen=True)
class BatchSettings:
    """The batch job (modelrun:batchJob): its tasks, their size, and an optional schedule."""

    task_count: int
    parallelism: int  # 0: as many at once as the quota allows
    timeout_seconds: int  # per task
    max_retries: int  # per task
    cpu: str
    memory: str
    size: InstanceSize
    schedule: str | None  # cron, in time_zone; None: run by hand (gcloud run jobs execute)
    time_zone: str


@dataclass(frozen=True)
class EdgeSettings:
    """The protected edge (modelrun:domain): the domain, Cloud Armor's rules, request logs."""

    domain: str
    waf_sensitivity: int  # 0 turns the preconfigured WAF rules off
    rate_limit_count: int  # requests per IP ...
    rate_limit_interval_seconds: int  # ... in this window, before a ban
    ban_seconds: int
    deny_countries: tuple[str, ...]
    allow_countries: tuple[str, ...]  # empty: every country
    deny_ip_ranges: tuple[str, ...]
    allow_ip_ranges: tuple[str, ...]  # empty: every address
    log_sample_rate: float


@dataclass(frozen=True)
class StackConfig:
    """The settings of one stack (one environment)."""

    project: str
    region: str
    stack: str
    names: Names
    image: str | None  # None: keep the image the service runs (see cloud_run.py)
    model_name: str
    model_version: str
    model_sha256: str | None
    cpu: str
    memory: str
    size: InstanceSize
    min_instances: int
    max_instances: int
    timeout_seconds: int
    invoker_access: str
    deletion_protection: bool
    github_repository: str
    github_owner_id: str
    github_branch: str
    state_bucket: str | None
    secrets_kms_key: str | None
    bucket_kms_key: str | None
    noncurrent_version_days: int
    images_to_keep: int
    key_refresh_seconds: int
    api_key: pulumi.Output[str] | None
    service_settings: dict[str, str]
    metrics_sidecar: bool  # Managed Prometheus's sidecar scrapes METRICS_PORT
    metrics_sidecar_image: str
    instance_billing: bool  # CPU allocated for the instance's whole life, not per request
    alert_emails: list[str]
    # A traffic split between revisions (a new image rolled out gradually): None sends all to
    # the latest revision; a stable revision keeps 100 - traffic_latest_percent.
    traffic_stable_revision: str | None = None
    traffic_latest_percent: int = 100
    batch: BatchSettings | None = None  # None: no batch job
    edge: EdgeSettings | None = None  # None: the run.app URL only
    payload_sample_rate: float = 0.0  # above 0: payload records, and their sink (payload_sink.py)
    payload_retention_days: int = 90

    @property
    def labels(self) -> dict[str, str]:
        return {"app": "modelrun", "stack": label_value(self.stack)}

    @property
    def service_name(self) -> str:
        return self.names.service

    @property
    def shares(self) -> ContainerShares:
        """Each container's limits: the collector's share comes out of the instance's size."""
        millis, mib = (
            (metrics_sidecar.CPU_MILLIS, metrics_sidecar.MEMORY_MIB)
            if self.metrics_sidecar
            else (0, 0)
        )
        return container_shares(self.cpu, self.memory, self.size, millis, mib)


def setting_key(variable: str) -> str:
    """The key that sets a service variable: MODEL_REFRESH_SECONDS -> modelRefreshSeconds."""
    first, *rest = variable.lower().split("_")
    return first + "".join(word.capitalize() for word in rest)


def load() -> StackConfig:
    """Read and check the stack configuration; a bad value fails before any resource is planned."""
    gcp = pulumi.Config("gcp")
    cfg = pulumi.Config("modelrun")

    def optional(key: str) -> str | None:
        return cfg.require(key).strip() or None

    project = gcp.require("project")
    stack = pulumi.get_stack()
    cpu, memory = cfg.require("cpu"), cfg.require("memory")
    api_key = _api_key(cfg)
    config = StackConfig(
        project=project,
        region=gcp.require("region"),
        stack=stack,
        names=names(project, stack, optional("resourcePrefix"), optional("identityPoolId")),
        image=optional("image"),
        model_name=cfg.require("modelName"),
        model_version=cfg.require("modelVersion"),
        model_sha256=optional("modelSha256"),
        cpu=cpu,
        memory=memory,
        size=instance_size(cpu, memory, cfg.require_int("concurrency")),
        min_instances=cfg.require_int("minInstances"),
        max_instances=cfg.require_int("maxInstances"),
        timeout_seconds=cfg.require_int("timeoutSeconds"),
        invoker_access=cfg.require("invokerAccess"),
        deletion_protection=cfg.require_bool("deletionProtection"),
        github_repository=cfg.require("githubRepository"),
        github_owner_id=cfg.require("githubRepositoryOwnerId"),
        github_branch=cfg.require("githubBranch"),
        state_bucket=optional("stateBucket"),
        secrets_kms_key=optional("secretsKmsKey"),
        bucket_kms_key=optional("bucketKmsKey"),
        noncurrent_version_days=cfg.require_int("noncurrentVersionDays"),
        images_to_keep=cfg.require_int("imagesToKeep"),
        key_refresh_seconds=cfg.require_int("keyRefreshSeconds"),
        api_key=api_key,
        service_settings={
            name: value
            for name in SERVICE_SETTINGS
            if (value := cfg.require(setting_key(name)).strip())
        },
        metrics_sidecar=cfg.require_bool("metricsSidecar"),
        metrics_sidecar_image=optional("metricsSidecarImage") or metrics_sidecar.IMAGE,
        instance_billing=cfg.require_bool("instanceBasedBilling"),
        alert_emails=[str(e).strip() for e in cfg.require_object("alertEmails")],
        traffic_stable_revision=optional("trafficStableRevision"),
        traffic_latest_percent=cfg.require_int("trafficLatestPercent"),
        batch=_batch(cfg) if cfg.require_bool("batchJob") else None,
        edge=_edge(cfg, domain) if (domain := optional("domain")) else None,
        payload_sample_rate=_rate(cfg.require("payloadSampleRate")),
        payload_retention_days=cfg.require_int("payloadRetentionDays"),
    )
    _check(config)
    return config


API_KEY = "modelrun:apiKey"


def _api_key(cfg: pulumi.Config) -> pulumi.Output[str] | None:
    """modelrun:apiKey as a secret, or None (the default "") to generate one. Pulumi.yaml's
    `secret: true` enforces nothing on an untyped key: `pulumi config set modelrun:apiKey X`
    without `--secret` writes X in plain text into the committed stack file, and the program
    would be handed it as an ordinary value. Such a value is refused, not used."""
    # The raw value, to know whether one is set without reading a secret as plain text.
    if not (pulumi.runtime.get_config(API_KEY) or ""):
        return None
    if not pulumi.runtime.is_config_secret(API_KEY):
        raise ConfigError(
            API_KEY,
            f"{API_KEY} is stored in plain text in the stack file: remove it "
            f"(pulumi config rm {API_KEY}), rotate that key, and set it again with "
            f"pulumi config set --secret {API_KEY} ...",
        )
    return cfg.require_secret("apiKey")


def _batch(cfg: pulumi.Config) -> BatchSettings:
    """The batch job's settings, refused as Cloud Run would refuse them (infra/gcp_limits.py)."""
    cpu, memory = cfg.require("batchJobCpu"), cfg.require("batchJobMemory")
    settings = BatchSettings(
        task_count=cfg.require_int("batchJobTaskCount"),
        parallelism=cfg.require_int("batchJobParallelism"),
        timeout_seconds=cfg.require_int("batchJobTimeoutSeconds"),
        max_retries=cfg.require_int("batchJobMaxRetries"),
        cpu=cpu,
        memory=memory,
        size=instance_size(cpu, memory, 1, keys=("batchJobCpu", "batchJobMemory")),
        schedule=cfg.require("batchJobSchedule").strip() or None,
        time_zone=cfg.require("batchJobTimeZone"),
    )
    check_job(settings.task_count, settings.parallelism, settings.timeout_seconds,
              settings.max_retries)  # fmt: skip
    if settings.schedule and len(settings.schedule.split()) != 5:
        raise ConfigError(
            "modelrun:batchJobSchedule",
            "modelrun:batchJobSchedule must be a cron schedule of five fields (minute hour day "
            f"month weekday), like '0 2 * * *', got {settings.schedule!r}",
        )
    return settings


def _edge(cfg: pulumi.Config, domain: str) -> EdgeSettings:
    """The edge's settings, refused as Google Cloud would refuse them (infra/gcp_limits.py)."""

    rate = cfg.require("edgeLogSampleRate")
    try:
        sample_rate = float(rate)
    except ValueError:
        raise ConfigError(
            "modelrun:edgeLogSampleRate",
            f"modelrun:edgeLogSampleRate must be a number, got {rate!r}",
        ) from None
    settings = EdgeSettings(
        domain=domain.lower().rstrip("."),
        waf_sensitivity=cfg.require_int("edgeWafSensitivity"),
        rate_limit_count=cfg.require_int("edgeRateLimitCount"),
        rate_limit_interval_seconds=cfg.require_int("edgeRateLimitIntervalSeconds"),
        ban_seconds=cfg.require_int("edgeBanSeconds"),
        deny_countries=_listed(cfg.require("edgeDenyCountries").upper()),
        allow_countries=_listed(cfg.require("edgeAllowCountries").upper()),
        deny_ip_ranges=_listed(cfg.require("edgeDenyIpRanges")),
        allow_ip_ranges=_listed(cfg.require("edgeAllowIpRanges")),
        log_sample_rate=sample_rate,
    )
    check_edge(settings)
    return settings


def _rate(text: str) -> float:
    """modelrun:payloadSampleRate, a share from 0 to 1."""
    try:
        rate = float(text)
    except ValueError:
        rate = -1.0
    if not 0 <= rate <= 1:  # NaN too
        raise ValueError(f"modelrun:payloadSampleRate must be a number from 0 to 1, got {text!r}")
    return rate


def _listed(text: str) -> tuple[str, ...]:
    """A setting's comma-separated values."""
    return tuple(v.strip() for v in text.split(",") if v.strip())


def service_environment(config: StackConfig) -> dict[str, str]:
    """The service's plain variables (everything but the key and the model's URI)."""
    env = {
        "MODEL_VERSION": config.model_version,
        "ENVIRONMENT": "production",
        "GOOGLE_CLOUD_PROJECT": config.project,
        "WORKERS": str(config.size.workers),
        "THREADS": str(config.size.threads),
        # The app stops a request at the same limit Cloud Run enforces at its edge.
        "CLOUD_RUN_TIMEOUT_SECONDS": str(config.timeout_seconds),
        **config.service_settings,
    }
    if config.model_sha256:
        env["MODEL_SHA256"] = config.model_sha256
    if "MODEL_MEMORY_MB" not in env:
        share = config.shares.app_memory_mib * MODEL_MEMORY_SHARE / config.size.workers
        env["MODEL_MEMORY_MB"] = str(int(share))
    if config.key_refresh_seconds > 0:
        env["API_KEYS_REFRESH_SECONDS"] = str(config.key_refresh_seconds)
    if config.payload_sample_rate > 0:
        env["PAYLOAD_SAMPLE_RATE"] = f"{config.payload_sample_rate:g}"
    if config.metrics_sidecar:
        env["METRICS_PORT"] = str(metrics_sidecar.METRICS_PORT)  # on loopback: the sidecar's
    return env


def _check(config: StackConfig) -> None:
    if not REPOSITORY_PATTERN.match(config.github_repository):
        raise ConfigError(
            "modelrun:githubRepository",
            f"modelrun:githubRepository must be OWNER/NAME, got {config.github_repository!r}",
        )
    if not config.github_owner_id.isdigit():
        raise ConfigError(
            "modelrun:githubRepositoryOwnerId",
            "modelrun:githubRepositoryOwnerId must be the owner's numeric id "
            f"(gh api users/OWNER --jq .id), got {config.github_owner_id!r}",
        )
    if config.payload_retention_days < 1:
        raise ValueError(
            f"modelrun:payloadRetentionDays must be at least 1, got {config.payload_retention_days}"
        )
    if config.invoker_access not in INVOKER_ACCESS:
        raise ConfigError(
            "modelrun:invokerAccess",
            f"modelrun:invokerAccess must be one of {', '.join(INVOKER_ACCESS)}, "
            f"got {config.invoker_access!r}",
        )
    if not 0 <= config.min_instances <= config.max_instances:
        raise ConfigError(
            "modelrun:minInstances",
            f"need 0 <= modelrun:minInstances ({config.min_instances}) <= "
            f"modelrun:maxInstances ({config.max_instances})",
        )
    if config.instance_billing and config.size.cpu < 1:
        raise ConfigError(
            "modelrun:instanceBasedBilling",
            "modelrun:instanceBasedBilling needs modelrun:cpu of 1 or more, got "
            f"{config.size.cpu:g} (below 1 vCPU Cloud Run bills by request only)",
        )
    _check_traffic(config)
    _ = config.shares  # an instance too small to give the collector its share is refused here
    check_labels(config.labels, f"the stack name {config.stack!r}")
    if config.edge and config.invoker_access == "iam":
        raise ConfigError(
            "modelrun:domain",
            "modelrun:domain puts a load balancer in front, which forwards callers' requests "
            "without an identity token: use modelrun:invokerAccess public (or "
            "public-no-iam-check), where the API key is the gate",
        )
    if not 1 <= config.timeout_seconds <= 3600:
        raise ConfigError(
            "modelrun:timeoutSeconds",
            f"modelrun:timeoutSeconds must be 1..3600, got {config.timeout_seconds}",
        )
    # The service would refuse these at start, after the deploy: refuse them now, in its words.
    placeholders = {
        "MODEL_URI": model_root(bucket_store("bucket"), config.model_name),
        "API_KEYS": "k" * 32,
    }
    try:
        load_config({**service_environment(config), **placeholders})
    except ServiceConfigError as e:
        if e.setting not in SERVICE_SETTINGS:  # none, or one the stack derives (MODEL_VERSION...)
            raise ValueError(f"the service settings: {e}") from e
        key = f"modelrun:{setting_key(e.setting)}"
        raise ConfigError(key, f"{key} ({e.setting}): {e}") from e


def _check_traffic(config: StackConfig) -> None:
    """A split names a revision of this service (Cloud Run names them SERVICE-NNNNN-xxx) and
    gives the latest revision a whole percentage; without one, the latest takes all."""
    percent = config.traffic_latest_percent
    if not 0 <= percent <= 100:
        raise ConfigError(
            "modelrun:trafficLatestPercent",
            f"modelrun:trafficLatestPercent must be 0..100, got {percent}",
        )
    revision = config.traffic_stable_revision
    if revision is None:
        if percent != 100:
            raise ConfigError(
                "modelrun:trafficLatestPercent",
                f"modelrun:trafficLatestPercent {percent} needs modelrun:trafficStableRevision, "
                "the revision that keeps the rest (pulumi stack output latestRevision)",
            )
        return
    pattern = re.compile(rf"^{re.escape(config.service_name)}-[a-z0-9-]+$")
    if not pattern.match(revision) or len(revision) > 63:
        raise ConfigError(
            "modelrun:trafficStableRevision",
            f"modelrun:trafficStableRevision must name a revision of {config.service_name} "
            f"({config.service_name}-00001-abc), got {revision!r}",
        )
