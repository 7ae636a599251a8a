"""The live accuracy estimate before any label arrives (the CBPE idea: confidence-based
performance estimation), and what it is compared with.

A calibrated classifier's top-class probability is the chance that its label is right, so over
many rows the mean top-class probability estimates the accuracy. Exported per version and role:

    modelrun_confidence_sum_total{model_version, role}    summed top-class probability
    modelrun_confidence_rows_total{model_version, role}   rows scored with probabilities
    modelrun_holdout_accuracy{model_version}              metadata.metrics.holdout.accuracy
    modelrun_estimate_trusted{model_version}              1 where training found the
                                                          probabilities calibrated, else 0

`modelrun:estimated_accuracy` (local/prometheus/alerts.yml) is the ratio of the two rates. The
estimate holds only for calibrated probabilities: training records the calibration error as
`metadata["calibration"] = {"ece", "bins", "trusted"}`; a version without it, with `trusted`
false or an ECE above MAX_TRUSTED_ECE is shown as "estimate not trusted", and not alerted on.
Counted on the request path, so kept in plain sums under one lock, as model_calls.py does.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from function.core.model import LoadedModel

MAX_TRUSTED_ECE = 0.05  # an expected calibration error above this: the estimate is off by more


def trusted(metadata: dict[str, Any]) -> bool:
    """Whether a version's probabilities were found calibrated enough to estimate from."""
    calibration = metadata.get("calibration")
    if not isinstance(calibration, dict):
        return False
    ece = calibration.get("ece")
    if not isinstance(ece, int | float) or isinstance(ece, bool) or not math.isfinite(ece):
        return False
    return calibration.get("trusted") is not False and ece <= MAX_TRUSTED_ECE


def holdout_accuracy(metadata: dict[str, Any]) -> float | None:
    value = metadata.get("metrics", {}).get("holdout", {}).get("accuracy")
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


class Confidence(Collector):
    """The sums, and the served versions' hold-out figures, read at each scrape."""

    def __init__(self, models: Callable[[], list[LoadedModel]] = list) -> None:
        self._models = models
        self._sums: dict[tuple[str, str], list[float]] = {}  # (version, role) -> [sum, rows]
        self._lock = threading.Lock()

    def add(self, version: str, role: str, probabilities: np.ndarray) -> None:
        """Count a request's rows by their top-class probability."""
        total = float(probabilities.max(axis=1).sum())
        with self._lock:
            cell = self._sums.get((version, role))
            if cell is None:
                cell = self._sums[(version, role)] = [0.0, 0.0]
            cell[0] += total
            cell[1] += len(probabilities)

    def describe(self) -> Iterator[Any]:
        """The families' names, without reading the models (registered before they exist)."""
        yield from _families()

    def collect(self) -> Iterator[Any]:
        sums, rows, accuracy, trust = _families()
        with self._lock:
            cells = [(key, list(cell)) for key, cell in self._sums.items()]
        for (version, role), (total, count) in cells:
            sums.add_metric([version, role], total)
            rows.add_metric([version, role], count)
        if cells:
            yield sums
            yield rows
        shown = False
        for model in self._models():
            if not model.has_probabilities:
                continue
            held = holdout_accuracy(model.metadata)
            if held is not None:
                accuracy.add_metric([model.version], held)
            trust.add_metric([model.version], 1.0 if trusted(model.metadata) else 0.0)
            shown = True
        if shown:
            yield accuracy
            yield trust


def _families() -> tuple[Any, Any, Any, Any]:
    """Fresh, empty families: sums, rows, hold-out accuracy, trust."""
    sums = CounterMetricFamily(
        "modelrun_confidence_sum",
        "Summed top-class probability of the rows scored, by version and role.",
        labels=["model_version", "role"],
    )
    rows = CounterMetricFamily(
        "modelrun_confidence_rows",
        "Rows scored with probabilities, by version and role.",
        labels=["model_version", "role"],
    )
    accuracy = GaugeMetricFamily(
        "modelrun_holdout_accuracy",
        "The version's accuracy on its hold-out rows at training (its metadata).",
        labels=["model_version"],
    )
    trust = GaugeMetricFamily(
        "modelrun_estimate_trusted",
        "1 where training found the version's probabilities calibrated (the live estimate "
        "holds), 0 where not or not recorded.",
        labels=["model_version"],
    )
    return sums, rows, accuracy, trust
