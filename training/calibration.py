"""How far a classifier's confidence is from its accuracy on the hold-out: the expected
calibration error (ECE) of its top-class probability, which decides whether the live accuracy
estimated from confidence alone (the CBPE series) can be trusted."""

from __future__ import annotations

from typing import Any

import numpy as np

BINS = 15
# At most this far, on average, between confidence and accuracy: the estimate is then within a few
# points of the truth (the issue asks for 0.03 on a shifted stream of a calibrated model).
TRUSTED_ECE = 0.05


def expected_calibration_error(confidence: Any, correct: Any, bins: int = BINS) -> float:
    """The rows' weighted mean of |accuracy - mean confidence| over equal-width bins of the
    confidence, each bin (lo, hi] (the first also takes 0)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if confidence.size == 0:
        raise ValueError("no rows to measure calibration on")
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(error)


def calibration(pipeline: Any, X: Any, y: Any) -> dict[str, Any] | None:
    """The metadata's "calibration" record for a classifier with probabilities, else None."""
    if not hasattr(pipeline, "predict_proba"):
        return None
    try:
        probabilities = pipeline.predict_proba(X)
    except (AttributeError, NotImplementedError):  # SVC(probability=False) has the method
        return None
    correct = np.asarray(pipeline.predict(X)) == np.asarray(y)
    ece = expected_calibration_error(np.max(probabilities, axis=1), correct)
    return {"ece": ece, "bins": BINS, "trusted": ece <= TRUSTED_ECE}
