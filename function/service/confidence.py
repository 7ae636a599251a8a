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
Counted on the request path, so kept in plain sums under one lock, as model_calls.py does; the
series are declared in function/service/metrics.py and exported by function/service/counted.py.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

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


class Confidence:
    """Each (version, role)'s summed top-class probability and rows."""

    def __init__(self) -> None:
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

    def cells(self) -> list[tuple[str, str, float, float]]:
        """(version, role, summed probability, rows), copied under the lock."""
        with self._lock:
            return [(v, r, total, rows) for (v, r), (total, rows) in self._sums.items()]
