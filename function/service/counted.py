"""The series counted outside the OpenTelemetry SDK, as OpenTelemetry data points.

The model calls (function/service/model_calls.py) and the drift bins (function/core/drift.py)
are counted in plain arrays, cheaper on the request path than an SDK instrument, and with no
attribute set hashed per cell (nor the SDK's cap of 2,000 sets per instrument). When the exporter
reads, they are turned into the SDK's own data model (`Sum`, `Gauge`, `Histogram` points) under
the names in function/service/metrics.py, and exported with the instruments' by the one
Prometheus reader (function/service/telemetry.py): the OpenTelemetry specification's
MetricProducer, which bridges pre-aggregated data into a reader.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    Sum,
)

from function.core.drift import Drift
from function.service.confidence import Confidence, holdout_accuracy, trusted
from function.service.metrics import (
    CONFIDENCE_ROWS,
    CONFIDENCE_SUM,
    DRIFT_OUT_OF_RANGE,
    DRIFT_PREDICTION_REFERENCE,
    DRIFT_PREDICTION_ROWS,
    DRIFT_REFERENCE,
    DRIFT_ROWS,
    ESTIMATE_TRUSTED,
    HOLDOUT_ACCURACY,
    MODEL_CALLS,
    MODEL_DURATION,
    Series,
)
from function.service.model_calls import BUCKETS, ModelCalls

log = logging.getLogger("modelrun.drift")
CUMULATIVE = AggregationTemporality.CUMULATIVE
Points = list[tuple[dict[str, str], float]]


def model_calls(calls: ModelCalls, start: int) -> list[Metric]:
    """Each version's calls by outcome, and the timed ones' durations (when there are any)."""
    now = time.time_ns()
    counted: Points = []
    durations: list[HistogramDataPoint] = []
    for cell in calls.cells():
        version = {"model.version": cell.version, "role": cell.role}
        counted.append(({**version, "outcome": "ok"}, cell.ok))
        if cell.errors:
            counted.append(({**version, "outcome": "error"}, cell.errors))
        if any(cell.buckets):  # min and max are not kept: Prometheus' histograms have none
            durations.append(
                HistogramDataPoint(
                    version, start, now, sum(cell.buckets), cell.sum, list(cell.buckets),
                    list(BUCKETS), min=0.0, max=0.0,
                )
            )  # fmt: skip
    metrics = [_number(MODEL_CALLS, counted, start, now)] if counted else []
    if durations:
        data = Histogram(durations, CUMULATIVE)
        metrics.append(_metric(MODEL_DURATION, data))
    return metrics


def drift_bins(drift: Drift, start: int) -> list[Metric]:
    """Every kept version's bins: rows counted, and the training's share of each (the families
    with a point only)."""
    now = time.time_ns()
    families: dict[str, Points] = {"rows": [], "reference": [], "out_of_range": [],
                                   "prediction": [], "prediction_reference": []}  # fmt: skip
    for watch in drift.watches():
        try:
            watch.flush()
        except Exception:  # what was counted before is still shown
            log.exception("counting drift rows for version %s failed", watch.version)
        counts = watch.counts.copy()
        for slot, count in zip(watch.slots, counts.tolist(), strict=True):
            labels = {"model.version": watch.version, **dict(slot.labels)}
            if slot.family == "rows":
                families["rows"].append((labels, count))
                families["reference"].append((labels, slot.reference or 0.0))
            elif slot.family == "out_of_range":
                families["out_of_range"].append((labels, count))
            elif slot.family == "prediction":
                families["prediction"].append((labels, count))
                families["prediction_reference"].append((labels, slot.reference or 0.0))
    series = {"rows": DRIFT_ROWS, "reference": DRIFT_REFERENCE, "out_of_range": DRIFT_OUT_OF_RANGE,
              "prediction": DRIFT_PREDICTION_ROWS,
              "prediction_reference": DRIFT_PREDICTION_REFERENCE}  # fmt: skip
    return [
        _number(series[family], points, start, now) for family, points in families.items() if points
    ]


def confidence(sums: Confidence, models: Callable[[], list[Any]], start: int) -> list[Metric]:
    """Each version's confidence sums, and the served versions' hold-out accuracy and trust."""
    now = time.time_ns()
    total: Points = []
    rows: Points = []
    for version, role, summed, counted in sums.cells():
        labels = {"model.version": version, "role": role}
        total.append((labels, summed))
        rows.append((labels, counted))
    accuracy: Points = []
    trust: Points = []
    for model in models():
        if not model.has_probabilities:
            continue
        labels = {"model.version": model.version}
        held = holdout_accuracy(model.metadata.raw)
        if held is not None:
            accuracy.append((labels, held))
        trust.append((labels, 1.0 if trusted(model.metadata.raw) else 0.0))
    families = ((CONFIDENCE_SUM, total), (CONFIDENCE_ROWS, rows), (HOLDOUT_ACCURACY, accuracy),
                (ESTIMATE_TRUSTED, trust))  # fmt: skip
    return [_number(series, points, start, now) for series, points in families if points]


def _number(series: Series, points: Sequence[tuple[dict[str, str], float]], start: int,
            now: int) -> Metric:  # fmt: skip
    """A counter's or gauge's points, as the SDK would have aggregated them."""
    data_points = [NumberDataPoint(labels, start, now, value) for labels, value in points]
    if series.kind == "gauge":
        return _metric(series, Gauge(data_points))
    return _metric(series, Sum(data_points, CUMULATIVE, is_monotonic=True))


def _metric(series: Series, data: Sum | Gauge | Histogram) -> Metric:
    return Metric(series.name, series.description, series.unit, data)
