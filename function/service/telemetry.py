"""Metrics: every instrument is named here, once, and exported in Prometheus text format.

OpenTelemetry instruments are read by the Prometheus exporter into a registry of the process's
own, served on /metrics with the process collector's memory and CPU series.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client.registry import Collector

from function.service.confidence import Confidence
from function.service.model_calls import ModelCalls

# OpenTelemetry's recommended boundaries for http.server.request.duration (semantic conventions).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
WAIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
)


# modelrun.errors' kind when rollout.json cannot be read or parsed (counted once per change).
ROLLOUT_UNREADABLE = "rollout_unreadable"


class Telemetry:
    """The service's instruments; the model state is read through callbacks when scraped."""

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
        self.provider = MeterProvider(
            metric_readers=[reader],
            resource=Resource.create({"service.name": "modelrun"}),
        )
        meter = self.provider.get_meter("modelrun")
        self.request_duration = meter.create_histogram(
            "http.server.request.duration",
            unit="s",
            description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.predictions = meter.create_counter(
            "modelrun.predictions",
            unit="{prediction}",
            description="Predictions made, by model version and predicted class.",
        )
        self.batch_size = meter.create_histogram(
            "modelrun.batch.size",
            unit="{instance}",
            description="Rows (instances) per prediction request.",
            explicit_bucket_boundaries_advisory=BATCH_BUCKETS,
        )
        self.model_load_duration = meter.create_histogram(
            "modelrun.model.load.duration",
            unit="s",
            description="Time to fetch, verify, unpickle and warm up a model, by outcome.",
            explicit_bucket_boundaries_advisory=LOAD_BUCKETS,
        )
        self.auth_failures = meter.create_counter(
            "modelrun.auth.failures",
            unit="{request}",
            description="Requests refused for a missing or wrong API key.",
        )
        self.errors = meter.create_counter(
            "modelrun.errors",
            unit="{error}",
            description="Error answers and failed model loads, by kind.",
        )
        self.call_rows = meter.create_histogram(
            "modelrun.model.call.rows",
            unit="{instance}",
            description="Rows per micro-batched model call (several requests' rows together).",
            explicit_bucket_boundaries_advisory=BATCH_BUCKETS,
        )
        self.queue_wait = meter.create_histogram(
            "modelrun.batching.queue.wait",
            unit="s",
            description="Time a request waited for its micro-batch to start.",
            explicit_bucket_boundaries_advisory=WAIT_BUCKETS,
        )
        # By version, for rollouts: each version's calls and time (role "answer", or "shadow"
        # for a candidate scoring beside the current one) are counted by `calls`, which is
        # cheaper on the request path (function/service/model_calls.py); how a shadow compares,
        # here.
        self.shadow_predictions = meter.create_counter(
            "modelrun.shadow.predictions",
            unit="{prediction}",
            description="A shadow candidate's predictions, by version and class (never answered).",
        )
        self.shadow_rows = meter.create_counter(
            "modelrun.shadow.rows",
            unit="{row}",
            description="Rows a shadow candidate scored beside the current version.",
        )
        self.shadow_agreed = meter.create_counter(
            "modelrun.shadow.agreed",
            unit="{row}",
            description="Rows where the shadow candidate's label equals the current version's.",
        )
        self.shadow_difference = meter.create_counter(
            "modelrun.shadow.difference",
            unit="1",
            description="Sum over rows of the mean absolute difference of probabilities "
            "(or of predictions, for a regressor) between candidate and current.",
        )
        self.shadow_dropped = meter.create_counter(
            "modelrun.shadow.dropped",
            unit="{request}",
            description="Requests a shadow candidate could not keep up with (its queue was full).",
        )
        self.payload_dropped = meter.create_counter(
            "modelrun.payload.dropped",
            unit="{record}",
            description="Payload records not written, by reason (queue_full: the writer fell "
            "behind; write_failed, unwritable).",
        )
        meter.create_observable_gauge(
            "modelrun.rollout.candidate",
            callbacks=[self._observe_candidate],
            description="1 for a rollout's candidate, labelled with its mode and whether this "
            "instance loaded it or refused it.",
        )
        meter.create_observable_gauge(
            "modelrun.model.info",
            callbacks=[self._observe_info],
            description="1 for the model version being served, labelled with its identity.",
        )
        meter.create_observable_gauge(
            "modelrun.model.ready",
            callbacks=[self._observe_ready],
            description="1 when a verified model and the API keys are loaded, else 0.",
        )

    def request(self, method: str, route: str | None, status: int, seconds: float) -> None:
        """Record one answered request; route is the matched template, never the raw path."""
        attributes: dict[str, Any] = {
            "http.request.method": method if method in HTTP_METHODS else "_OTHER",
            "http.response.status_code": status,
        }
        if route:
            attributes["http.route"] = route
        self.request_duration.record(seconds, attributes)

    def predicted(
        self, version: str, predictions: Iterable[Any], classifier: bool, shadow: bool = False
    ) -> None:
        """Count predictions by version, and by class for a classifier (a shadow's apart)."""
        values = list(predictions)
        counter = self.shadow_predictions if shadow else self.predictions
        if not shadow:
            self.batch_size.record(len(values))
        if not classifier:
            counter.add(len(values), {"model.version": version})
            return
        for label, count in Counter(values).items():
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
        self.shadow_rows.add(rows, attributes)
        self.shadow_agreed.add(agreed, attributes)
        self.shadow_difference.add(difference, attributes)

    def confident(self, version: str, role: str, probabilities: Any) -> None:
        """Count rows by their top-class probability (function/service/confidence.py)."""
        self.confidence.add(version, role, probabilities)

    def payload_not_written(self, reason: str) -> None:
        self.payload_dropped.add(1, {"reason": reason})

    def dropped(self, version: str) -> None:
        self.shadow_dropped.add(1, {"model.version": version})

    def batched(self, rows: int, waits: list[float]) -> None:
        """Record one micro-batched model call and how long each of its requests waited."""
        self.call_rows.record(rows)
        for wait in waits:
            self.queue_wait.record(wait)

    def model_loaded(self, seconds: float, version: str | None, outcome: str) -> None:
        attributes = {"outcome": outcome, **({"model.version": version} if version else {})}
        self.model_load_duration.record(seconds, attributes)

    def auth_failed(self, reason: str) -> None:
        self.auth_failures.add(1, {"reason": reason})

    def error(self, kind: str) -> None:
        self.errors.add(1, {"kind": kind})

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
    collectors: Iterable[Collector] = (),
    candidate_state: Callable[[], dict[str, str] | None] = lambda: None,
    models: Callable[[], list[Any]] = list,
) -> tuple[Telemetry, Callable[[], bytes]]:
    """Return the service's Telemetry and a function rendering its /metrics page, which also
    shows the model calls by version (function/service/model_calls.py), the confidence sums and
    hold-out figures of the served `models` (function/service/confidence.py) and the families
    of `collectors` (the drift counts, kept in arrays: function/core/drift.py)."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)  # process_resident_memory_bytes, process_cpu_seconds_total
    calls, confidence = ModelCalls(), Confidence(models)
    for collector in [calls, confidence, *collectors]:
        registry.register(collector)
    reader = PrometheusMetricReader(scope_info_enabled=False, registry=registry)
    telemetry = Telemetry(reader, model_state, candidate_state, calls, confidence)
    return telemetry, lambda: generate_latest(registry)
