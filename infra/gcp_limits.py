"""Cloud Run's admission rules for an instance's size and a job's tasks, checked when the stack
is read.

Cloud Run refuses a revision that breaks these, after `pulumi up` has started changing things;
here they fail before anything is planned, naming the setting. Source: "Configure CPU limits for
services" (https://cloud.google.com/run/docs/configuring/services/cpu) and "Configure memory
limits for services" (https://cloud.google.com/run/docs/configuring/services/memory-limits):

- vCPU: any value from 0.08 to 1 in steps of 0.001; above 1, a value of its table: 2, 4, 6 or 8
  ("You can change this to any of the values shown in the following table").
- memory: at most 32 GiB; above 4 GiB needs 2 vCPU, above 8 GiB 4, above 16 GiB 6, above 24 GiB 8;
  4 vCPU need at least 2 GiB, 6 and 8 vCPU at least 4 GiB; at least 512 MiB in the second
  generation execution environment (128 MiB in the first).
- below 1 vCPU: more than 512 MiB needs 0.5 vCPU, more than 1 GiB needs 1 vCPU; concurrency must
  be 1; billing must be request-based; the first generation execution environment.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from config_error import ConfigError

MEMORY_PATTERN = re.compile(r"^([0-9]+)(Mi|Gi|M|G)$")
MEMORY_UNITS_MIB = {"Mi": 1.0, "Gi": 1024.0, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
GIB = 1024
# More than this much memory (MiB) needs at least this many vCPUs.
MEMORY_NEEDS_CPU = ((24 * GIB, 8), (16 * GIB, 6), (8 * GIB, 4), (4 * GIB, 2), (GIB, 1), (512, 0.5))
CPU_NEEDS_MEMORY = {4: 2 * GIB, 6: 4 * GIB, 8: 4 * GIB}  # vCPUs -> least memory (MiB)
WHOLE_CPUS = (1, 2, 4, 6, 8)


@dataclass(frozen=True)
class InstanceSize:
    """An instance's size as Cloud Run admits it."""

    cpu: float  # vCPUs
    memory_mib: float
    concurrency: int

    @property
    def first_generation(self) -> bool:
        """Below 1 vCPU Cloud Run requires the first generation execution environment."""
        return self.cpu < 1

    @property
    def workers(self) -> int:
        """Worker processes: one per whole vCPU (Python runs on one core per process)."""
        return max(1, int(self.cpu))

    @property
    def threads(self) -> int:
        """Threads per worker, so that the workers together hold `concurrency` requests."""
        return math.ceil(self.concurrency / self.workers)


def instance_size(
    cpu: str, memory: str, concurrency: int, keys: tuple[str, str] = ("cpu", "memory")
) -> InstanceSize:
    """Parse modelrun:cpu, modelrun:memory and modelrun:concurrency (or a job's `keys`, whose
    tasks take one request: concurrency 1); refuse what Cloud Run would, naming the key."""
    cpu_key, memory_key = (f"modelrun:{k}" for k in keys)
    vcpus = _cpu(cpu, cpu_key)
    mib = _memory(memory, memory_key)
    if not 1 <= concurrency <= 1000:
        raise ConfigError(
            "modelrun:concurrency", f"modelrun:concurrency must be 1..1000, got {concurrency}"
        )
    for above, needs in MEMORY_NEEDS_CPU:
        if mib > above and vcpus < needs:
            raise ConfigError(
                memory_key,
                f"{memory_key} {memory} needs {cpu_key} of at least {needs:g}, got {cpu}",
            )
    if mib > 32 * GIB:
        raise ConfigError(memory_key, f"{memory_key} may be at most 32Gi, got {memory}")
    if vcpus < 1:
        least = 128  # the first generation's least
    else:
        least = max([512] + [m for c, m in CPU_NEEDS_MEMORY.items() if c <= vcpus])
    if mib < least:
        raise ConfigError(
            memory_key,
            f"{memory_key} must be at least {least:g}Mi with {cpu_key} {cpu}, got {memory}",
        )
    if vcpus < 1 and concurrency != 1:
        raise ConfigError(
            cpu_key, f"{cpu_key} below 1 ({cpu}) requires modelrun:concurrency 1, got {concurrency}"
        )
    return InstanceSize(vcpus, mib, concurrency)


@dataclass(frozen=True)
class ContainerShares:
    """The limits of each container of an instance, as Cloud Run takes them."""

    app_cpu: str
    app_memory: str
    app_memory_mib: float
    sidecar_cpu: str | None = None
    sidecar_memory: str | None = None


def container_shares(
    cpu: str, memory: str, size: InstanceSize, sidecar_millis: int, sidecar_mib: int
) -> ContainerShares:
    """Split the instance (modelrun:cpu, modelrun:memory) between the app and a sidecar, so the
    instance's total, which Cloud Run admits and bills, stays exactly the configured size; without
    a sidecar (sidecar_millis 0) the app has it all. Refuse an instance too small to share."""
    if not sidecar_millis:
        return ContainerShares(cpu, memory, size.memory_mib)
    app_millis = round(size.cpu * 1000) - sidecar_millis
    app_mib = int(size.memory_mib) - sidecar_mib
    if app_millis < sidecar_millis or app_mib < sidecar_mib:
        raise ConfigError(
            "modelrun:metricsSidecar",
            f"modelrun:metricsSidecar takes {sidecar_millis}m vCPU and {sidecar_mib}Mi out of the "
            f"instance: modelrun:cpu must be at least {2 * sidecar_millis / 1000:g} and "
            f"modelrun:memory at least {2 * sidecar_mib}Mi, got {cpu} and {memory}",
        )
    return ContainerShares(
        f"{app_millis}m", f"{app_mib}Mi", app_mib, f"{sidecar_millis}m", f"{sidecar_mib}Mi"
    )


def _cpu(text: str, key: str) -> float:
    try:
        value = Decimal(text[:-1]) / 1000 if text.endswith("m") else Decimal(text)
        if not value.is_finite():
            raise InvalidOperation
    except InvalidOperation:
        raise ConfigError(
            key,
            f"{key} must be a number of vCPUs like 1, 2 or 0.5 (or millicores, 500m), got {text!r}",
        ) from None
    if value < 1:
        if value < Decimal("0.08") or value != value.quantize(Decimal("0.001")):
            raise ConfigError(
                key, f"{key} below 1 must be from 0.08 in steps of 0.001, got {text!r}"
            )
    elif value not in WHOLE_CPUS:
        raise ConfigError(
            key, f"{key} above 1 must be 2, 4, 6 or 8 (Cloud Run's table), got {text!r}"
        )
    return float(value)


def _memory(text: str, key: str) -> float:
    match = MEMORY_PATTERN.match(text)
    if not match:
        raise ConfigError(key, f"{key} must be like 512Mi, 1Gi or 2G, got {text!r}")
    return int(match.group(1)) * MEMORY_UNITS_MIB[match.group(2)]


# A job's tasks ("Create jobs", https://cloud.google.com/run/docs/create-jobs; "Set parallelism"
# and "Set maximum retries", https://cloud.google.com/run/docs/configuring/parallelism and
# .../max-retries): up to 10,000 tasks; a task's timeout up to 168 hours (7 days); 0 to 10
# retries per task; parallelism from 0 (as many as the quota allows) up to the task count. Its
# CPU and memory follow the table above ("Configure CPU limits for jobs").
MAX_TASKS = 10_000
MAX_TASK_SECONDS = 168 * 3600
MAX_RETRIES = 10


def check_job(tasks: int, parallelism: int, timeout_seconds: int, retries: int) -> None:
    """Refuse a job's task settings that Cloud Run would, naming the key."""
    if not 1 <= tasks <= MAX_TASKS:
        raise ConfigError(
            "modelrun:batchJobTaskCount",
            f"modelrun:batchJobTaskCount must be 1..{MAX_TASKS}, got {tasks}",
        )
    if not 0 <= parallelism <= tasks:
        raise ConfigError(
            "modelrun:batchJobParallelism",
            f"modelrun:batchJobParallelism must be 0 (as many as possible) up to "
            f"modelrun:batchJobTaskCount ({tasks}), got {parallelism}",
        )
    if not 1 <= timeout_seconds <= MAX_TASK_SECONDS:
        raise ConfigError(
            "modelrun:batchJobTimeoutSeconds",
            f"modelrun:batchJobTimeoutSeconds must be 1..{MAX_TASK_SECONDS} (168 hours), "
            f"got {timeout_seconds}",
        )
    if not 0 <= retries <= MAX_RETRIES:
        raise ConfigError(
            "modelrun:batchJobMaxRetries",
            f"modelrun:batchJobMaxRetries must be 0..{MAX_RETRIES}, got {retries}",
        )


# The edge (infra/edge.py). Cloud Armor's rate-based ban ("Rate limiting overview",
# https://cloud.google.com/armor/docs/rate-limiting-overview): a threshold of 1 to 10,000
# requests, counted over one of these intervals; preconfigured WAF rules take a sensitivity of 0
# to 4 ("Tune preconfigured WAF rules"); a region code is ISO 3166-1 alpha-2; the backend
# service's log sample rate is 0 to 1 ("External Application Load Balancer logging").
RATE_LIMIT_INTERVALS = (10, 30, 60, 120, 180, 240, 300, 600, 900, 1200, 1800, 2700, 3600)
DOMAIN_PATTERN = re.compile(r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
COUNTRY_PATTERN = re.compile(r"^[A-Z]{2}$")
# "up to five subexpressions" in an advanced match condition ("Configure custom rules language
# attributes", https://cloud.google.com/armor/docs/rules-language-reference).
ALLOW_LIST_MAX = 5


def check_edge(edge: Any) -> None:
    """Refuse edge settings Google Cloud would refuse, naming the key."""
    import ipaddress

    if not DOMAIN_PATTERN.match(edge.domain):
        raise ConfigError(
            "modelrun:domain",
            f"modelrun:domain must be a DNS name like api.example.com, got {edge.domain!r}",
        )
    if not 0 <= edge.waf_sensitivity <= 4:
        raise ConfigError(
            "modelrun:edgeWafSensitivity",
            f"modelrun:edgeWafSensitivity must be 0..4, got {edge.waf_sensitivity}",
        )
    if not 1 <= edge.rate_limit_count <= 10_000:
        raise ConfigError(
            "modelrun:edgeRateLimitCount",
            f"modelrun:edgeRateLimitCount must be 1..10000, got {edge.rate_limit_count}",
        )
    if edge.rate_limit_interval_seconds not in RATE_LIMIT_INTERVALS:
        raise ConfigError(
            "modelrun:edgeRateLimitIntervalSeconds",
            "modelrun:edgeRateLimitIntervalSeconds must be one of "
            f"{', '.join(map(str, RATE_LIMIT_INTERVALS))}, got {edge.rate_limit_interval_seconds}",
        )
    if edge.ban_seconds < 1:
        raise ConfigError(
            "modelrun:edgeBanSeconds",
            f"modelrun:edgeBanSeconds must be at least 1, got {edge.ban_seconds}",
        )
    for key, codes in (("edgeDenyCountries", edge.deny_countries),
                       ("edgeAllowCountries", edge.allow_countries)):  # fmt: skip
        bad = [c for c in codes if not COUNTRY_PATTERN.match(c)]
        if bad:
            raise ConfigError(
                f"modelrun:{key}",
                f"modelrun:{key} takes ISO 3166-1 alpha-2 codes (FR, US), got {bad}",
            )
    # Cloud Armor's five subexpressions an expression (infra/armor.py): an allow list is one
    # expression; a deny list is split, within the hundred priorities its rules have.
    for key, allowed in (("edgeAllowIpRanges", edge.allow_ip_ranges),
                         ("edgeAllowCountries", edge.allow_countries)):  # fmt: skip
        if len(allowed) > ALLOW_LIST_MAX:
            raise ConfigError(
                f"modelrun:{key}",
                f"modelrun:{key} may list at most {ALLOW_LIST_MAX} entries (Cloud Armor allows "
                "five subexpressions in one rule's expression, and an allow list cannot be split "
                f"across rules), got {len(allowed)}",
            )
    for key, denied, per_rule in (("edgeDenyIpRanges", edge.deny_ip_ranges, 10),
                                  ("edgeDenyCountries", edge.deny_countries, 5)):  # fmt: skip
        if len(denied) > per_rule * 100:
            raise ConfigError(
                f"modelrun:{key}",
                f"modelrun:{key} may list at most {per_rule * 100} entries ({per_rule} a Cloud "
                f"Armor rule, 100 rules), got {len(denied)}",
            )
    for key, ranges in (("edgeDenyIpRanges", edge.deny_ip_ranges),
                        ("edgeAllowIpRanges", edge.allow_ip_ranges)):  # fmt: skip
        for value in ranges:
            try:
                ipaddress.ip_network(value)
            except ValueError as e:
                raise ConfigError(
                    f"modelrun:{key}", f"modelrun:{key}: {value!r} is not an IP range: {e}"
                ) from None
    if not 0 <= edge.log_sample_rate <= 1:
        raise ConfigError(
            "modelrun:edgeLogSampleRate",
            f"modelrun:edgeLogSampleRate must be a number from 0 to 1, got {edge.log_sample_rate}",
        )


# Labels ("Labels overview", https://cloud.google.com/resource-manager/docs/labels-overview,
# requirements): keys and values at most 63 characters of lowercase letters, digits, underscores
# and dashes; a key starts with a lowercase letter; a value may be empty.
LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")


def label_value(text: str) -> str:
    """Text as a label value: lowercase, every other character a dash, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]


def check_labels(labels: dict[str, str], where: str) -> None:
    """Refuse labels Google Cloud would refuse, naming where they come from."""
    for key, value in labels.items():
        if not LABEL_KEY.match(key) or not LABEL_VALUE.match(value):
            raise ValueError(
                f"{where}: label {key}={value!r} is not a Google Cloud label (lowercase letters, "
                "digits, _ and -, at most 63 characters; a key starts with a letter)"
            )


# Display names: a service account's at most 100 characters ("Create service accounts",
# https://cloud.google.com/iam/docs/service-accounts-create); a workload identity pool's and its
# provider's at most 32 (the IAM API's WorkloadIdentityPool and WorkloadIdentityPoolProvider
# references, displayName).
ACCOUNT_DISPLAY_NAME = 100
POOL_DISPLAY_NAME = 32


def check_display_name(name: str, limit: int, what: str) -> str:
    """The name, refused (naming what it is for) when longer than the API takes."""
    if not name or len(name) > limit:
        raise ValueError(f"{what}: display name {name!r} must be 1..{limit} characters")
    return name


# An uptime check ("REST Resource: projects.uptimeCheckConfigs",
# https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.uptimeCheckConfigs): `period`
# "Currently, the only supported values are 60s (1 minute), 300s (5 minutes), 600s (10 minutes),
# and 900s (15 minutes)"; `timeout` between 1 and 60 seconds, and no longer than the period.
UPTIME_PERIODS = ("60s", "300s", "600s", "900s")


def check_uptime(period: str, timeout: str) -> None:
    """Refuse an uptime check's period and timeout the Monitoring API would refuse."""
    if period not in UPTIME_PERIODS:
        raise ValueError(
            f"uptime check period must be one of {', '.join(UPTIME_PERIODS)}, got {period}"
        )
    seconds = int(timeout.removesuffix("s")) if re.fullmatch(r"\d+s", timeout) else 0
    if not 1 <= seconds <= 60 or seconds > int(period.removesuffix("s")):
        raise ValueError(f"uptime check timeout must be 1s..60s, within the period, got {timeout}")


# A mosaic dashboard (Cloud Monitoring Dashboards API, MosaicLayout and MosaicLayout.Tile):
# "The number of columns must be between 1 and 48, inclusive"; a tile's xPos and yPos cannot be
# negative, "Tiles must be contained within the specified number of columns", and a tile has a
# width and a height of at least 1.
MOSAIC_COLUMNS = 48


def check_mosaic(document: dict[str, Any]) -> None:
    """Refuse a mosaic layout the Dashboards API would refuse, naming the widget."""
    layout = document["mosaicLayout"]
    columns = layout["columns"]
    if not 1 <= columns <= MOSAIC_COLUMNS:
        raise ValueError(f"a mosaic dashboard has 1..{MOSAIC_COLUMNS} columns, got {columns}")
    for tile in layout["tiles"]:
        x, y = tile.get("xPos", 0), tile.get("yPos", 0)
        width, height = tile.get("width", 0), tile.get("height", 0)
        title = tile["widget"].get("title", "")
        if x < 0 or y < 0 or width < 1 or height < 1 or x + width > columns:
            raise ValueError(
                f"widget {title!r}: its tile (x {x}, y {y}, {width}x{height}) must lie within the "
                f"{columns} columns with a width and height of at least 1 (its Grafana gridPos)"
            )
