"""Every stack setting, read once (Pulumi.yaml describes each key)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi

PLACEHOLDER_IMAGE = "us-docker.pkg.dev/cloudrun/container/hello"
REPOSITORY_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class StackConfig:
    """The settings of one stack (one environment)."""

    project: str
    region: str
    stack: str
    service_name: str
    image: str
    model_name: str
    model_version: str
    model_sha256: str | None
    cpu: str
    memory: str
    min_instances: int
    max_instances: int
    concurrency: int
    timeout_seconds: int
    public_invoker: bool
    deletion_protection: bool
    github_repository: str
    github_branch: str
    state_bucket: str | None
    secrets_kms_key: str | None
    bucket_kms_key: str | None
    noncurrent_version_days: int
    images_to_keep: int
    key_refresh_seconds: int
    api_key: pulumi.Output[str] | None

    @property
    def labels(self) -> dict[str, str]:
        return {"app": "modelrun", "stack": self.stack.lower()}


def load() -> StackConfig:
    """Read and check the stack configuration; a bad value fails before any resource is planned."""
    gcp = pulumi.Config("gcp")
    cfg = pulumi.Config("modelrun")
    config = StackConfig(
        project=gcp.require("project"),
        region=gcp.get("region") or "europe-west1",
        stack=pulumi.get_stack(),
        service_name=cfg.get("serviceName") or "modelrun",
        image=cfg.get("image") or PLACEHOLDER_IMAGE,
        model_name=cfg.get("modelName") or "iris",
        model_version=cfg.get("modelVersion") or "current",
        model_sha256=cfg.get("modelSha256"),
        cpu=cfg.get("cpu") or "1",
        memory=cfg.get("memory") or "1Gi",
        min_instances=cfg.get_int("minInstances") or 0,
        max_instances=cfg.get_int("maxInstances") or 10,
        concurrency=cfg.get_int("concurrency") or 40,
        timeout_seconds=cfg.get_int("timeoutSeconds") or 30,
        public_invoker=_bool(cfg, "publicInvoker", True),
        deletion_protection=_bool(cfg, "deletionProtection", True),
        github_repository=cfg.require("githubRepository"),
        github_branch=cfg.get("githubBranch") or "main",
        state_bucket=cfg.get("stateBucket"),
        secrets_kms_key=cfg.get("secretsKmsKey"),
        bucket_kms_key=cfg.get("bucketKmsKey"),
        noncurrent_version_days=cfg.get_int("noncurrentVersionDays") or 30,
        images_to_keep=cfg.get_int("imagesToKeep") or 10,
        key_refresh_seconds=cfg.get_int("keyRefreshSeconds") or 0,
        api_key=cfg.get_secret("apiKey"),
    )
    _check(config)
    return config


def _bool(cfg: pulumi.Config, key: str, default: bool) -> bool:
    value = cfg.get_bool(key)
    return default if value is None else value


def workers(cpu: str) -> int:
    """Worker processes for an instance of `cpu` vCPUs ("2", "1000m", "0.5"): one per whole vCPU.

    Set explicitly rather than counted in the container, where startup CPU boost could show more.
    """
    try:
        count = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    except ValueError:
        raise ValueError(
            f"modelrun:cpu must be a number of vCPUs like 1, 2 or 500m, got {cpu!r}"
        ) from None
    if count <= 0:
        raise ValueError(f"modelrun:cpu must be above 0, got {cpu!r}")
    return max(1, int(count))


def _check(config: StackConfig) -> None:
    workers(config.cpu)
    if not REPOSITORY_PATTERN.match(config.github_repository):
        raise ValueError(
            f"modelrun:githubRepository must be OWNER/NAME, got {config.github_repository!r}"
        )
    if not 0 <= config.min_instances <= config.max_instances:
        raise ValueError(
            f"need 0 <= modelrun:minInstances ({config.min_instances}) <= "
            f"modelrun:maxInstances ({config.max_instances})"
        )
    if not 1 <= config.concurrency <= 1000:
        raise ValueError(f"modelrun:concurrency must be 1..1000, got {config.concurrency}")
    if not 1 <= config.timeout_seconds <= 3600:
        raise ValueError(f"modelrun:timeoutSeconds must be 1..3600, got {config.timeout_seconds}")
    if config.model_sha256 and not re.fullmatch(r"[0-9a-f]{64}", config.model_sha256):
        raise ValueError("modelrun:modelSha256 must be 64 lowercase hexadecimal characters")
