"""Physical names of the stack's resources: derived from the stack, unique per stack, and within
each Google Cloud name's rules, so that two stacks (dev, prod) can share one project.

The rules, as pulumi_gcp's own argument docs state them (from the Google APIs):
- service account `account_id`: 6-30 characters, [a-z][-a-z0-9]*[a-z0-9] (RFC 1035);
- Workload Identity pool and provider ids: 4-32 characters of [a-z0-9-], never starting `gcp-`;
  a deleted pool's id stays taken for 30 days, hence `modelrun:identityPoolId`;
- Artifact Registry repository id: [a-z]([a-z0-9-]*[a-z0-9])?, at most 63;
- Secret Manager secret id: at most 255 of [A-Za-z0-9_-];
- Cloud Run service name: [a-z]([-a-z0-9]*[a-z0-9])?, at most 49;
- Cloud Storage bucket: 3-63 characters, globally unique, no "goog" prefix, no "google".
A name too long for its rule keeps its start and ends in a digest of the whole, so two long
names that differ only at the end still differ.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from config_error import ConfigError

PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9-]{2,20}[a-z0-9]$")
POOL_PATTERN = re.compile(r"^(?!gcp-)[a-z0-9-]{4,32}$")


@dataclass(frozen=True)
class Names:
    """Every physical id the stack creates."""

    prefix: str
    project: str
    pool_id: str

    def account(self, role: str) -> str:
        return fit(f"{self.prefix}-{role}", 30)

    @property
    def service(self) -> str:
        return fit(self.prefix, 49)

    @property
    def registry(self) -> str:
        return fit(self.prefix, 63)

    @property
    def secret(self) -> str:
        return fit(f"{self.prefix}-api-keys", 255)

    @property
    def metrics_config(self) -> str:
        return fit(f"{self.prefix}-metrics-config", 255)

    @property
    def key_ring(self) -> str:
        """Cloud KMS key ring id: at most 63 of [a-zA-Z0-9_-]; never freed once used."""
        return fit(self.prefix, 63)

    @property
    def bucket(self) -> str:
        return fit(f"{self.project}-{self.prefix}-models", 63)

    def edge(self, part: str) -> str:
        """A load balancer part's name (Compute Engine's rule: RFC 1035, at most 63)."""
        return fit(f"{self.prefix}-{part}", 63)

    @property
    def batch_job(self) -> str:
        return fit(f"{self.prefix}-batch", 49)

    @property
    def batch_bucket(self) -> str:
        return fit(f"{self.project}-{self.prefix}-batch", 63)

    @property
    def pool_provider(self) -> str:
        return "github"  # unique within its pool


def names(project: str, stack: str, prefix: str | None, pool_id: str | None) -> Names:
    """The names for one stack; `prefix` and `pool_id` override the derived ones."""
    if prefix is None:
        prefix = fit("modelrun-" + re.sub(r"[^a-z0-9]+", "-", stack.lower()).strip("-"), 22)
    elif not PREFIX_PATTERN.match(prefix):
        raise ConfigError(
            "modelrun:resourcePrefix",
            f"modelrun:resourcePrefix must be 4-22 characters of a-z, 0-9 and '-', starting "
            f"with a letter and not ending with '-', got {prefix!r}",
        )
    bucket = Names(prefix, project, "").bucket
    if bucket.startswith("goog") or "google" in bucket:
        raise ConfigError(
            "modelrun:resourcePrefix",
            f"the bucket name {bucket!r} may not start with 'goog' or hold 'google': "
            "change modelrun:resourcePrefix",
        )
    if pool_id is None:
        pool_id = fit(f"{prefix}-github", 32)
    elif not POOL_PATTERN.match(pool_id):
        raise ConfigError(
            "modelrun:identityPoolId",
            f"modelrun:identityPoolId must be 4-32 characters of a-z, 0-9 and '-', not starting "
            f"with 'gcp-', got {pool_id!r}",
        )
    return Names(prefix, project, pool_id)


def fit(name: str, limit: int) -> str:
    """`name` if it fits in `limit` characters, else its start and a digest of the whole."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    return f"{name[: limit - 7].rstrip('-')}-{digest}"
