"""Whether a rollout's candidate may go on: its figures beside the current version's, read from
Prometheus, and the criteria they must meet.

The figures come from the series every instance exports by version (function/service/telemetry.py),
over
the rollout so far (`--window` shortens it, never reaching before the rollout's start):
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

Counted exactly, from the counters' raw samples (`counted`): what each series counted after the
rollout's `started_at`, its value then subtracted, a restarted counter counted from zero. Not
`increase()`, which extrapolates its range's first and last samples to the range's ends
("the increase is extrapolated to cover the full time range ..., so that it is possible to get a
non-integer result even if a counter increases only by integer increments", prometheus.io/docs,
querying/functions: it once reported 285 requests where 264 had arrived, passing `min_requests`
early), and whose range would have to be a whole duration from now, reaching before the start.
The samples come from one instant query of a range selector (`NAME[Ns]`, evaluated at `time`:
"range vectors" are returned as `matrix`, prometheus.io/docs, querying/api), which Managed
Service for Prometheus answers as Prometheus 2.44 does (its "PromQL compatibility" page lists
only rate/irate windows, staleness and name matching as differences).

The URL is a Prometheus server's, or Managed Service for Prometheus's query API
(https://monitoring.googleapis.com/v1/projects/PROJECT/location/global/prometheus; the
`projects.location.prometheus.api.v1.query` method of the Cloud Monitoring API), which is called
with Application Default Credentials.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import requests

from function.core.rollout import Rollout
from training.errors import TrainingError, reason

MANAGED_PROMETHEUS_HOST = "monitoring.googleapis.com"
READ_SCOPE = "https://www.googleapis.com/auth/monitoring.read"
LATENCY_SLACK_SECONDS = 0.001  # p95s within 1 ms are equal: histogram buckets are coarser
# Prometheus's default lookback delta: an instant query at a time sees the last sample up to 5
# minutes before it. The samples are read from that far before the rollout's start, so that a
# series scraped then has its value at the start.
LOOKBACK_SECONDS = 300
DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


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
        """An instant query's series now: (labels, value)."""
        return [(r["metric"], float(r["value"][1])) for r in self._get(expr, None, "vector")]

    def samples(self, selector: str, span: Span) -> list[tuple[dict[str, str], Samples]]:
        """Each series' raw samples from the lookback before the span's start to its end."""
        seconds = math.ceil(span.end - span.start) + LOOKBACK_SECONDS
        found = self._get(f"{selector}[{seconds}s]", span.end, "matrix")
        return [(r["metric"], [(float(t), float(v)) for t, v in r["values"]]) for r in found]

    def _get(self, expr: str, at: float | None, kind: str) -> list[dict[str, Any]]:
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        try:
            response = requests.get(
                f"{self.url}/api/v1/query", params=params, headers=self._auth(),
                timeout=self.timeout,
            )  # fmt: skip
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
        if body["data"]["resultType"] != kind:
            raise TrainingError(
                f"Prometheus at {self.url} answered a {body['data']['resultType']}, not a {kind}"
            )
        return list(body["data"]["result"])

    def _auth(self) -> dict[str, str]:
        if not self.managed:
            return {}
        import google.auth
        import google.auth.transport.requests

        credentials, _ = google.auth.default(scopes=[READ_SCOPE])
        credentials.refresh(google.auth.transport.requests.Request())
        return {"Authorization": f"Bearer {credentials.token}"}


Samples = list[tuple[float, float]]  # (unix seconds, value), oldest first


@dataclass(frozen=True)
class Span:
    """The time counted: from the rollout's start (or --window ago, if later) to now."""

    start: float  # unix seconds
    end: float


def span_of(rollout: Rollout, window: str | None, now: float | None = None) -> Span:
    """The rollout so far, or its last `window` (a PromQL duration) if shorter."""
    end = time.time() if now is None else now
    started = dt.datetime.fromisoformat(rollout.started_at.replace("Z", "+00:00")).timestamp()
    return Span(max(started, end - parse_duration(window)) if window else started, end)


def parse_duration(text: str) -> float:
    """A PromQL duration (1h30m, 90s) in seconds."""
    if not re.fullmatch(f"(?:{DURATION.pattern})+", text):
        raise TrainingError(f"--window {text!r} must be a duration such as 30m, 1h or 1h30m")
    return float(sum(int(n) * UNIT_SECONDS[unit] for n, unit in DURATION.findall(text)))


def counted(samples: Samples, start: float) -> float:
    """What a counter counted after `start`, from its samples: each rise after its last value at
    `start` (0 for a series first seen later), and after a drop (the process restarted) the
    whole new value, as Prometheus's own functions treat a counter reset, but not extrapolated."""
    last = 0.0
    total = 0.0
    for at, value in samples:
        if at <= start:
            last = value
            continue
        total += value - last if value >= last else value
        last = value
    return total


def bucket_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """A histogram's q-quantile from its cumulative bucket counts by upper bound, as PromQL's
    histogram_quantile computes it (prometheus/promql/quantile.go, bucketQuantile): linear
    within the bucket the rank falls in, the second highest bound when it falls in +Inf. None
    when nothing was counted."""
    bounds = sorted(buckets)
    if not bounds or bounds[-1] != math.inf or buckets[math.inf] <= 0:
        return None
    counts = list(itertools.accumulate((buckets[b] for b in bounds), max))  # made monotonic
    rank = q * counts[-1]
    b = next(i for i, c in enumerate(counts) if c >= rank)
    if b == len(bounds) - 1:
        return bounds[-2] if len(bounds) > 1 else None
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, count = 0.0, counts[b]
    if b > 0:
        start, count, rank = bounds[b - 1], count - counts[b - 1], rank - counts[b - 1]
    return start + (bounds[b] - start) * (rank / count)


def figures(
    prometheus: Prometheus, rollout: Rollout, current: str, span: Span
) -> tuple[Figures, Figures]:
    """The current version's and the candidate's figures over the span, counted exactly."""
    role = "shadow" if rollout.mode == "shadow" else "answer"
    mine = {current: Figures(current, "answer"), rollout.version: Figures(rollout.version, role)}
    # Version ids are [A-Za-z0-9._-]: unescaped, a dot matches any character (a backslash would
    # need escaping twice, for PromQL's string and its regex), and each series found is kept
    # only if its version is one of these exactly.
    versions = "|".join(sorted(mine))
    where = f'model_version=~"{versions}"'

    def each(selector: str) -> Iterable[tuple[Figures, dict[str, str], float]]:
        for labels, samples in prometheus.samples(f"{selector}{{{where}}}", span):
            entry = mine.get(labels.get("model_version", ""))
            if entry is not None and labels.get("role", entry.role) == entry.role:
                yield entry, labels, counted(samples, span.start)

    for entry, labels, value in each("modelrun_model_calls_total"):
        entry.requests += value
        if labels.get("outcome") == "error":
            entry.errors += value
    buckets: dict[str, dict[float, float]] = {v: {} for v in mine}
    for entry, labels, value in each("modelrun_model_duration_seconds_bucket"):
        mine_buckets = buckets[entry.version]
        bound = float(labels["le"])
        mine_buckets[bound] = mine_buckets.get(bound, 0.0) + value
    for version, entry in mine.items():
        entry.p95 = bucket_quantile(0.95, buckets[version])
    candidate = mine[rollout.version]
    refused = f'modelrun_rollout_candidate{{model_version="{rollout.version}", state="refused"}}'
    candidate.refused = bool(prometheus.query(f"max({refused})"))
    if rollout.mode == "shadow":
        for series in ("rows", "agreed", "difference", "dropped"):  # Figures' fields too
            for entry, _, value in each(f"modelrun_shadow_{series}_total"):
                if entry is candidate:
                    setattr(entry, series, getattr(entry, series) + value)
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
