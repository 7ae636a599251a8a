"""Whether a rollout's candidate may go on: its figures beside the current version's, read from
Prometheus, and the criteria they must meet.

The figures come from the series every instance exports by version (function/telemetry.py), over
the rollout so far (`--window` shortens it):
- requests: model calls, `modelrun_model_calls_total` (role "answer", or "shadow");
- error ratio: those whose outcome is "error";
- p95: the 95th percentile of `modelrun_model_duration_seconds`, each version's own model time;
- in shadow, agreement: rows whose label equals the current version's
  (`modelrun_shadow_agreed_total` / `modelrun_shadow_rows_total`), the mean absolute difference,
  and the requests the candidate could not keep up with (`modelrun_shadow_dropped_total`).

The verdict: promote when every criterion passes over at least `min_requests` of the candidate's
requests; abort when one fails clearly (its failure is certain whatever the remaining requests up
to the minimum bring), or when an instance refused to load the candidate
(`modelrun_rollout_candidate{state="refused"}`); else wait.

The URL is a Prometheus server's, or Managed Service for Prometheus's query API
(https://monitoring.googleapis.com/v1/projects/PROJECT/location/global/prometheus; the
`projects.location.prometheus.api.v1.query` method of the Cloud Monitoring API), which is called
with Application Default Credentials.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import requests

from function.rollout import Rollout
from training.errors import TrainingError, reason

MANAGED_PROMETHEUS_HOST = "monitoring.googleapis.com"
READ_SCOPE = "https://www.googleapis.com/auth/monitoring.read"
LATENCY_SLACK_SECONDS = 0.001  # p95s within 1 ms are equal: histogram buckets are coarser


@dataclass(frozen=True)
class Criteria:
    """What a candidate must show before it is promoted (the README's defaults)."""

    min_requests: int = 300
    max_error_increase: float = 0.01  # its error ratio may exceed the current one's by this
    max_latency_ratio: float = 1.25  # its p95 model time against the current one's
    min_agreement: float = 0.95  # shadow: rows with the current version's label


@dataclass
class Figures:
    """One version's figures over the window."""

    version: str
    role: str  # "answer" or "shadow"
    requests: float = 0.0
    errors: float = 0.0
    p95: float | None = None
    rows: float = 0.0  # shadow: rows compared
    agreed: float = 0.0
    difference: float = 0.0
    dropped: float = 0.0
    refused: bool = False  # some instance refused to load it (memory, verification)

    @property
    def error_ratio(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.rows if self.rows else None


@dataclass(frozen=True)
class Check:
    name: str
    state: str  # "pass", "fail" (clearly), or "wait"
    detail: str


@dataclass
class Verdict:
    checks: list[Check] = field(default_factory=list)

    @property
    def decision(self) -> str:
        """promote, abort or wait."""
        states = {c.state for c in self.checks}
        if "fail" in states:
            return "abort"
        return "promote" if states == {"pass"} else "wait"


class Prometheus:
    """A Prometheus HTTP API to query (a server's, or Managed Service for Prometheus's)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise TrainingError(f"--prometheus {url!r} must be an http(s):// URL")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.managed = parsed.netloc == MANAGED_PROMETHEUS_HOST

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query's series: (labels, value)."""
        try:
            response = requests.get(
                f"{self.url}/api/v1/query",
                params={"query": expr},
                headers=self._auth(),
                timeout=self.timeout,
            )
        except requests.RequestException as e:
            raise TrainingError(f"cannot reach Prometheus at {self.url}: {reason(e)}") from e
        try:
            body = response.json()
        except ValueError as e:
            raise TrainingError(
                f"Prometheus at {self.url} answered {response.status_code} with no JSON: is it "
                "a Prometheus API URL?"
            ) from e
        if response.status_code != 200 or body.get("status") != "success":
            raise TrainingError(
                f"Prometheus at {self.url} refused a query ({response.status_code}): "
                f"{body.get('error', body)}"
            )
        return [(r["metric"], float(r["value"][1])) for r in body["data"]["result"]]

    def _auth(self) -> dict[str, str]:
        if not self.managed:
            return {}
        import google.auth
        import google.auth.transport.requests

        credentials, _ = google.auth.default(scopes=[READ_SCOPE])
        credentials.refresh(google.auth.transport.requests.Request())
        return {"Authorization": f"Bearer {credentials.token}"}


def window_of(rollout: Rollout, window: str | None) -> str:
    """The query window: the one asked for, else the rollout so far (at least a minute)."""
    if window:
        return window
    started = dt.datetime.fromisoformat(rollout.started_at.replace("Z", "+00:00"))
    seconds = (dt.datetime.now(dt.UTC) - started).total_seconds()
    return f"{max(60, int(seconds) + 1)}s"


def figures(
    prometheus: Prometheus, rollout: Rollout, current: str, window: str
) -> tuple[Figures, Figures]:
    """The current version's and the candidate's figures over the window."""
    role = "shadow" if rollout.mode == "shadow" else "answer"
    mine = {current: Figures(current, "answer"), rollout.version: Figures(rollout.version, role)}
    versions = "|".join(sorted(mine))
    where = f'model_version=~"{versions}"'

    def each(expr: str) -> list[tuple[Figures, dict[str, str], float]]:
        found = []
        for labels, value in prometheus.query(expr):
            entry = mine.get(labels.get("model_version", ""))
            if entry is not None and labels.get("role", entry.role) == entry.role:
                found.append((entry, labels, value))
        return found

    calls = (
        "sum by (model_version, role, outcome) "
        f"(increase(modelrun_model_calls_total{{{where}}}[{window}]))"
    )
    for entry, labels, value in each(calls):
        entry.requests += value
        if labels.get("outcome") == "error":
            entry.errors += value
    p95 = (
        "histogram_quantile(0.95, sum by (model_version, role, le) "
        f"(increase(modelrun_model_duration_seconds_bucket{{{where}}}[{window}])))"
    )
    for entry, _, value in each(p95):
        entry.p95 = value if value == value else None  # NaN: no calls in the window
    candidate = mine[rollout.version]
    refused = f'modelrun_rollout_candidate{{model_version="{rollout.version}", state="refused"}}'
    candidate.refused = bool(prometheus.query(f"max({refused})"))
    if rollout.mode == "shadow":
        for series in ("rows", "agreed", "difference", "dropped"):  # Figures' fields too
            expr = (
                "sum by (model_version) "
                f"(increase(modelrun_shadow_{series}_total{{{where}}}[{window}]))"
            )
            for entry, _, value in each(expr):
                if entry is candidate:
                    setattr(entry, series, value)
    return mine[current], candidate


def judge(current: Figures, candidate: Figures, criteria: Criteria, shadow: bool) -> Verdict:
    """Each criterion's state, and so the decision."""
    verdict = Verdict()
    if candidate.refused:  # it may never get the traffic to be judged on
        refusal = (
            "an instance refused to load it (MODEL_MEMORY_MB, or its verification): see its log"
        )
        verdict.checks.append(Check("loading", "fail", refusal))
    enough = candidate.requests >= criteria.min_requests
    verdict.checks.append(
        Check(
            "traffic",
            "pass" if enough else "wait",
            f"{candidate.requests:.0f} candidate requests, at least {criteria.min_requests}",
        )
    )
    allowed = (current.error_ratio or 0.0) + criteria.max_error_increase
    # Clearly failing: the errors so far exceed what the minimum number of requests allows.
    errors_at_least = candidate.errors / max(candidate.requests, criteria.min_requests)
    ratio = candidate.error_ratio
    shown = "no requests yet" if ratio is None else f"{ratio:.2%}"
    increase = criteria.max_error_increase
    detail = f"error ratio {shown}, at most {allowed:.2%} (current's + {increase:.2%})"
    if errors_at_least > allowed:
        verdict.checks.append(Check("errors", "fail", detail))
    else:
        state = "pass" if enough and ratio is not None and ratio <= allowed else "wait"
        verdict.checks.append(Check("errors", state, detail))
    verdict.checks.append(_latency(current, candidate, criteria, enough))
    if shadow:
        verdict.checks.append(_agreement(candidate, criteria))
    return verdict


def _latency(current: Figures, candidate: Figures, criteria: Criteria, enough: bool) -> Check:
    if current.p95 is None or candidate.p95 is None:
        return Check("latency", "wait", "p95 model time not measured yet for both versions")
    limit = max(current.p95 * criteria.max_latency_ratio, current.p95 + LATENCY_SLACK_SECONDS)
    detail = (
        f"p95 {candidate.p95 * 1000:.2f} ms, at most {limit * 1000:.2f} ms (the current "
        f"{current.p95 * 1000:.2f} ms x {criteria.max_latency_ratio:g}, or + 1 ms)"
    )
    if not enough:
        return Check("latency", "wait", detail)
    return Check("latency", "pass" if candidate.p95 <= limit else "fail", detail)


def _agreement(candidate: Figures, criteria: Criteria) -> Check:
    agreement = candidate.agreement
    if agreement is None:
        return Check("agreement", "wait", "no rows compared yet")
    detail = (
        f"agreement {agreement:.2%} over {candidate.rows:.0f} rows, at least "
        f"{criteria.min_agreement:.2%}; mean absolute difference "
        f"{candidate.difference / candidate.rows:.4f}; {candidate.dropped:.0f} requests dropped"
    )
    disagreed = candidate.rows - candidate.agreed
    if disagreed / max(candidate.rows, criteria.min_requests) > 1 - criteria.min_agreement:
        return Check("agreement", "fail", detail)
    if candidate.rows < criteria.min_requests:
        return Check("agreement", "wait", detail)
    return Check("agreement", "pass" if agreement >= criteria.min_agreement else "fail", detail)


def describe(figures: Figures) -> str:
    """One version's figures on one line."""
    ratio = figures.error_ratio
    parts = [
        f"{figures.requests:.0f} requests",
        "errors -" if ratio is None else f"errors {ratio:.2%}",
        "p95 -" if figures.p95 is None else f"p95 {figures.p95 * 1000:.2f} ms",
    ]
    if figures.role == "shadow":
        agreement = figures.agreement
        parts.append("agreement -" if agreement is None else f"agreement {agreement:.2%}")
        parts.append(f"dropped {figures.dropped:.0f}")
    return ", ".join(parts)


def as_json(figures: Figures) -> dict[str, Any]:
    return {
        "version": figures.version,
        "role": figures.role,
        "requests": figures.requests,
        "error_ratio": figures.error_ratio,
        "p95_seconds": figures.p95,
        "agreement": figures.agreement,
        "dropped": figures.dropped,
    }
