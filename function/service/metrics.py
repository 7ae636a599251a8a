"""Every series the service exports, named here once: its OpenTelemetry name, kind, unit, help
text, buckets, and how an instance's workers combine a gauge.

A new series is one line below, e.g.

    EMPTY_BODIES = counter("modelrun.requests.empty_body", "{request}", "Requests with no body.")

recorded with `telemetry.add(EMPTY_BODIES, 1, {...})` (or `telemetry.record` for a histogram)
wherever a Telemetry is at hand (handlers and responses have one), and a row in README's metrics
table. tests/test_telemetry.py checks every declared series reaches the page.
OpenTelemetry's Prometheus exporter gives the Prometheus names: dots become underscores, a
unit of seconds adds `_seconds`, a counter adds `_total`, attribute `model.version` becomes
label `model_version` (`modelrun.requests.empty_body` → `modelrun_requests_empty_body_total`).

Most series are OpenTelemetry instruments (function/service/telemetry.py). Those marked
`counted` are kept in plain arrays instead, because they are counted on the request path where an
SDK instrument costs more (the model calls, function/service/model_calls.py) or would have to hash
an attribute set per cell (the drift bins, function/core/drift.py); the exporter receives them as
OpenTelemetry data points (function/service/counted.py), so there is one export and one naming.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "histogram", "gauge"]
Combine = Callable[[Iterable[float]], float]

# OpenTelemetry's recommended boundaries for http.server.request.duration (semantic conventions).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
WAIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# The exporter's unit suffixes for the units used here (its `map_unit`; `{…}` annotations drop).
_UNIT_SUFFIX = {"s": "seconds"}


@dataclass(frozen=True, eq=False)  # each is declared once: compared and hashed by identity
class Series:
    """One exported series."""

    name: str  # OpenTelemetry's name
    kind: Kind
    unit: str
    description: str
    buckets: tuple[float, ...] | None = None  # a histogram's upper bounds
    workers: Combine | None = None  # a gauge: how workers' values make the instance's (else sum)
    counted: bool = False  # kept in arrays outside the SDK, handed to the exporter as points

    @property
    def prometheus(self) -> str:
        """The family name the Prometheus exporter gives it (a counter's samples add `_total`)."""
        name = re.sub(r"[^a-zA-Z0-9_:]", "_", self.name)
        suffix = _UNIT_SUFFIX.get(self.unit)
        return f"{name}_{suffix}" if suffix and not name.endswith(f"_{suffix}") else name


SERIES: list[Series] = []


def _declared(series: Series) -> Series:
    if any(s.name == series.name for s in SERIES):
        raise ValueError(f"series {series.name} is declared twice")
    SERIES.append(series)
    return series


def counter(name: str, unit: str, description: str, counted: bool = False) -> Series:
    return _declared(Series(name, "counter", unit, description, counted=counted))


def histogram(
    name: str, unit: str, description: str, buckets: tuple[float, ...], counted: bool = False
) -> Series:
    return _declared(Series(name, "histogram", unit, description, buckets, counted=counted))


def gauge(name: str, description: str, workers: Combine | None, counted: bool = False) -> Series:
    return _declared(Series(name, "gauge", "", description, workers=workers, counted=counted))


# --- requests and answers ----------------------------------------------------------------------
REQUEST_DURATION = histogram(
    "http.server.request.duration", "s", "Duration of HTTP server requests.", DURATION_BUCKETS
)
PREDICTIONS = counter(
    "modelrun.predictions",
    "{prediction}",
    "Predictions made, by model version and predicted class.",
)
BATCH_SIZE = histogram(
    "modelrun.batch.size", "{instance}", "Rows (instances) per prediction request.", BATCH_BUCKETS
)
AUTH_FAILURES = counter(
    "modelrun.auth.failures", "{request}", "Requests refused for a missing or wrong API key."
)
ERRORS = counter("modelrun.errors", "{error}", "Error answers and failed model loads, by kind.")
CALL_ROWS = histogram(
    "modelrun.model.call.rows",
    "{instance}",
    "Rows per micro-batched model call (several requests' rows together).",
    BATCH_BUCKETS,
)
QUEUE_WAIT = histogram(
    "modelrun.batching.queue.wait",
    "s",
    "Time a request waited for its micro-batch to start.",
    WAIT_BUCKETS,
)

# --- the model ---------------------------------------------------------------------------------
MODEL_LOAD_DURATION = histogram(
    "modelrun.model.load.duration",
    "s",
    "Time to fetch, verify, unpickle and warm up a model, by outcome.",
    LOAD_BUCKETS,
)
MODEL_INFO = gauge(
    "modelrun.model.info", "1 for the model version being served, labelled with its identity.", max
)
MODEL_READY = gauge(
    "modelrun.model.ready", "1 when a verified model and the API keys are loaded, else 0.", min
)

# --- rollouts: each version's calls (role "answer", or "shadow" for a candidate scoring beside
# the current one) and how a shadow compares ----------------------------------------------------
MODEL_CALLS = counter(
    "modelrun.model.calls",
    "",
    "Model calls by version, role (answer or shadow) and outcome (ok, error).",
    counted=True,
)
MODEL_DURATION = histogram(
    "modelrun.model.duration",
    "s",
    "Time a version's model took for a request's rows, by role.",
    CALL_BUCKETS,
    counted=True,
)
SHADOW_PREDICTIONS = counter(
    "modelrun.shadow.predictions",
    "{prediction}",
    "A shadow candidate's predictions, by version and class (never answered).",
)
SHADOW_ROWS = counter(
    "modelrun.shadow.rows", "{row}", "Rows a shadow candidate scored beside the current version."
)
SHADOW_AGREED = counter(
    "modelrun.shadow.agreed",
    "{row}",
    "Rows where the shadow candidate's label equals the current version's.",
)
SHADOW_DIFFERENCE = counter(
    "modelrun.shadow.difference",
    "1",
    "Sum over rows of the mean absolute difference of probabilities "
    "(or of predictions, for a regressor) between candidate and current.",
)
SHADOW_DROPPED = counter(
    "modelrun.shadow.dropped",
    "{request}",
    "Requests a shadow candidate could not keep up with (its queue was full).",
)
ROLLOUT_CANDIDATE = gauge(
    "modelrun.rollout.candidate",
    "1 for a rollout's candidate, labelled with its mode and whether this "
    "instance loaded it or refused it.",
    max,
)

# --- live quality: the confidence-based accuracy estimate (function/service/confidence.py) ------
CONFIDENCE_SUM = counter(
    "modelrun.confidence.sum",
    "",
    "Summed top-class probability of the rows scored, by version and role.",
    counted=True,
)
CONFIDENCE_ROWS = counter(
    "modelrun.confidence.rows", "", "Rows scored with probabilities, by version and role.",
    counted=True,
)  # fmt: skip
HOLDOUT_ACCURACY = gauge(
    "modelrun.holdout.accuracy",
    "The version's accuracy on its hold-out rows at training (its metadata).",
    max,  # the same metadata in every worker
    counted=True,
)
ESTIMATE_TRUSTED = gauge(
    "modelrun.estimate.trusted",
    "1 where training found the version's probabilities calibrated (the live estimate holds), "
    "0 where not or not recorded.",
    min,
    counted=True,
)
PAYLOAD_DROPPED = counter(
    "modelrun.payload.dropped",
    "{record}",
    "Payload records not written, by reason (queue_full: the writer fell behind; write_failed, "
    "unwritable).",
)

# --- drift: live rows by the bins of the version's baseline (function/core/drift.py) -----------
DRIFT_ROWS = counter(
    "modelrun.drift.rows",
    "",
    "Rows scored, by watched feature and bin of its baseline.",
    counted=True,
)
DRIFT_REFERENCE = gauge(
    "modelrun.drift.reference_ratio",
    "Share of the training rows in each feature's bin.",
    max,
    counted=True,
)
DRIFT_OUT_OF_RANGE = counter(
    "modelrun.drift.out_of_range", "", "Numbers below or above the training range.", counted=True
)
DRIFT_PREDICTION_ROWS = counter(
    "modelrun.drift.prediction_rows",
    "",
    "Predictions, by class or by bin of the baseline.",
    counted=True,
)
DRIFT_PREDICTION_REFERENCE = gauge(
    "modelrun.drift.prediction_reference_ratio",
    "Share of the hold-out predictions in each class or bin.",
    max,
    counted=True,
)

# The process's own series come from prometheus_client's ProcessCollector, under its names;
# memory and open descriptors add up across workers, these do not.
PROCESS_GAUGES: dict[str, Combine] = {"process_start_time_seconds": min, "process_max_fds": max}

# How workers' values of each gauge make the instance's (function/service/workers.py); a
# reference share is the same training's in every worker, a model version is shown while any
# worker serves it, and the instance is ready only when its least ready worker is.
ACROSS_WORKERS: dict[str, Combine] = {
    **{s.prometheus: s.workers for s in SERIES if s.kind == "gauge" and s.workers},
    **PROCESS_GAUGES,
}
