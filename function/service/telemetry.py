"""Metrics: the service's instruments, and the one export of every series in Prometheus text.

Every series is named in function/service/metrics.py. The instruments are OpenTelemetry's;
the series counted outside the SDK (function/service/counted.py) join them in the one
Prometheus reader, whose registry also holds the process collector's memory and CPU series and
is what /metrics renders.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Metric,
    MetricReader,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from function.core.drift import Drift
from function.service import counted, metrics
from function.service.confidence import Confidence
from function.service.metrics import Series
from function.service.model_calls import ModelCalls

HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
)
SERVICE = {"service.name": "modelrun"}


# modelrun.errors' kind when rollout.json cannot be read or parsed (counted once per change).
ROLLOUT_UNREADABLE = "rollout_unreadable"


class Telemetry:
    """The service's instruments, one per series of function/service/metrics.py that the SDK
    records; the model state is read through callbacks when scraped."""

    def __init__(
        self,
        reader: MetricReader,
        model_state: Callable[[], tuple[dict[str, str] | None, bool]],
        candidate_state: Callable[[], dict[str, str] | None] = lambda: None,
        calls: ModelCalls | None = None,
        confidence: Confidence | None = None,
    ) -> None:
        self._model_state = model_state
        self._candidate_state = candidate_state
        self.calls = calls or ModelCalls()
        self.confidence = confidence or Confidence()
        self.provider = MeterProvider(metric_readers=[reader], resource=Resource.create(SERVICE))
        meter = self.provider.get_meter("modelrun")
        callbacks = {
            metrics.MODEL_INFO: self._observe_info,
            metrics.MODEL_READY: self._observe_ready,
            metrics.ROLLOUT_CANDIDATE: self._observe_candidate,
        }
        self._counters: dict[Series, Counter] = {}
        self._histograms: dict[Series, Histogram] = {}
        for series in metrics.SERIES:
            if series.counted:
                continue
            if series.kind == "counter":
                self._counters[series] = meter.create_counter(
                    series.name, unit=series.unit, description=series.description
                )
            elif series.kind == "histogram":
                self._histograms[series] = meter.create_histogram(
                    series.name,
                    unit=series.unit,
                    description=series.description,
                    explicit_bucket_boundaries_advisory=series.buckets,
                )
            else:
                meter.create_observable_gauge(
                    series.name, callbacks=[callbacks[series]], description=series.description
                )
        # Those recorded on every request, looked up once.
        self._request_duration = self._histograms[metrics.REQUEST_DURATION]
        self._predictions = self._counters[metrics.PREDICTIONS]
        self._batch_size = self._histograms[metrics.BATCH_SIZE]
        self._call_rows = self._histograms[metrics.CALL_ROWS]
        self._queue_wait = self._histograms[metrics.QUEUE_WAIT]

    def add(self, series: Series, amount: float, attributes: dict[str, Any] | None = None) -> None:
        """Add to a counter of function/service/metrics.py."""
        self._counters[series].add(amount, attributes)

    def record(
        self, series: Series, value: float, attributes: dict[str, Any] | None = None
    ) -> None:
        """Record a value in a histogram of function/service/metrics.py."""
        self._histograms[series].record(value, attributes)

    def request(self, method: str, route: str | None, status: int, seconds: float) -> None:
        """Record one answered request; route is the matched template, never the raw path."""
        attributes: dict[str, Any] = {
            "http.request.method": method if method in HTTP_METHODS else "_OTHER",
            "http.response.status_code": status,
        }
        if route:
            attributes["http.route"] = route
        self._request_duration.record(seconds, attributes)

    def predicted(
        self, version: str, predictions: Iterable[Any], classifier: bool, shadow: bool = False
    ) -> None:
        """Count predictions by version, and by class for a classifier (a shadow's apart)."""
        values = list(predictions)
        counter = self._counters[metrics.SHADOW_PREDICTIONS] if shadow else self._predictions
        if not shadow:
            self._batch_size.record(len(values))
        if not classifier:
            counter.add(len(values), {"model.version": version})
            return
        for label, count in Tally(values).items():
            counter.add(count, {"model.version": version, "class": str(label)})

    def scored(
        self,
        version: str,
        role: str,
        seconds: float,
        ok: bool,
        requests: int = 1,
        timed: bool = True,
    ) -> None:
        """Record a version's model call for `requests` requests: its outcome, and its time
        when it was one request's (`timed`) and succeeded."""
        self.calls.record(version, role, seconds, ok, requests, timed)

    def compared(self, version: str, rows: int, agreed: int, difference: float) -> None:
        """Record how a shadow candidate's answers compare with the current version's."""
        attributes = {"model.version": version}
        self.add(metrics.SHADOW_ROWS, rows, attributes)
        self.add(metrics.SHADOW_AGREED, agreed, attributes)
        self.add(metrics.SHADOW_DIFFERENCE, difference, attributes)

    def confident(self, version: str, role: str, probabilities: Any) -> None:
        """Count rows by their top-class probability (function/service/confidence.py)."""
        self.confidence.add(version, role, probabilities)

    def payload_not_written(self, reason: str) -> None:
        self.add(metrics.PAYLOAD_DROPPED, 1, {"reason": reason})

    def dropped(self, version: str) -> None:
        self.add(metrics.SHADOW_DROPPED, 1, {"model.version": version})

    def batched(self, rows: int, waits: list[float]) -> None:
        """Record one micro-batched model call and how long each of its requests waited."""
        self._call_rows.record(rows)
        for wait in waits:
            self._queue_wait.record(wait)

    def model_loaded(self, seconds: float, version: str | None, outcome: str) -> None:
        attributes = {"outcome": outcome, **({"model.version": version} if version else {})}
        self.record(metrics.MODEL_LOAD_DURATION, seconds, attributes)

    def auth_failed(self, reason: str) -> None:
        self.add(metrics.AUTH_FAILURES, 1, {"reason": reason})

    def error(self, kind: str) -> None:
        self.add(metrics.ERRORS, 1, {"kind": kind})

    def _observe_info(self, options: CallbackOptions) -> Iterable[Observation]:
        identity, _ = self._model_state()
        return [Observation(1, identity)] if identity else []

    def _observe_candidate(self, options: CallbackOptions) -> Iterable[Observation]:
        candidate = self._candidate_state()
        return [Observation(1, candidate)] if candidate else []

    def _observe_ready(self, options: CallbackOptions) -> Iterable[Observation]:
        _, ready = self._model_state()
        return [Observation(1 if ready else 0)]


def prometheus_telemetry(
    model_state: Callable[[], tuple[dict[str, str] | None, bool]],
    drift: Drift | None = None,
    candidate_state: Callable[[], dict[str, str] | None] = lambda: None,
    models: Callable[[], list[Any]] = list,
) -> tuple[Telemetry, Callable[[], bytes]]:
    """Return the service's Telemetry and a function rendering its /metrics page: every series,
    the instruments' and those counted outside the SDK (the model calls by version, the drift
    bins of `drift`, the confidence sums and the served `models`' hold-out figures), through
    OpenTelemetry's Prometheus reader."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

    class Reader(PrometheusMetricReader):
        """The Prometheus reader, also handed the counted series when it reads."""

        def _receive_metrics(
            self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
        ) -> None:
            super()._receive_metrics(
                _with(metrics_data, produce()), timeout_millis=timeout_millis, **kwargs
            )

    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)  # process_resident_memory_bytes, process_cpu_seconds_total
    calls, confidence = ModelCalls(), Confidence()
    start = time.time_ns()

    def produce() -> list[Metric]:
        return [
            *counted.model_calls(calls, start),
            *(counted.drift_bins(drift, start) if drift else []),
            *counted.confidence(confidence, models, start),
        ]

    reader = Reader(scope_info_enabled=False, registry=registry)
    telemetry = Telemetry(reader, model_state, candidate_state, calls, confidence)
    return telemetry, lambda: generate_latest(registry)


def _with(data: MetricsData, produced: list[Metric]) -> MetricsData:
    """The SDK's collection with the counted series added, under the service's own scope."""
    if not produced:
        return data
    scope = ScopeMetrics(InstrumentationScope("modelrun"), produced, "")
    resources = list(data.resource_metrics) or [ResourceMetrics(Resource.create(SERVICE), [], "")]
    first = resources[0]
    resources[0] = ResourceMetrics(first.resource, [*first.scope_metrics, scope], first.schema_url)
    return MetricsData(resources)
