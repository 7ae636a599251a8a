"""Export a fitted pipeline to ONNX and verify it against the pipeline before it may be served.

The ONNX file is a second, faster way to run the same model (onnxruntime, without importing
scikit-learn). It is written only if its labels equal the pipeline's on the hold-out rows and on
generated rows spanning the training data, and its probabilities stay within a stated tolerance.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Tree ensembles compare float32 thresholds inside onnxruntime: probabilities may move by a
# vote's share near a threshold; linear models agree to rounding.
PROBABILITY_TOLERANCE = {"linear": 1e-9, "tree": 0.05}
GENERATED_ROWS = 5000


def export(
    pipeline: Any, X_train: np.ndarray, X_test: np.ndarray, seed: int, task: str
) -> tuple[bytes | None, dict[str, Any]]:
    """Return (model.onnx bytes or None, the record that goes into metadata.json)."""
    try:
        from skl2onnx import to_onnx

        options = {"zipmap": False} if task == "classification" else None  # probabilities: a tensor
        model = to_onnx(pipeline, X_train[:1].astype(np.float64), options=options)
        data = model.SerializeToString()
        rows = np.vstack([X_test, _generated(X_train, seed)])
        record = verify(data, pipeline, rows, task)
    except Exception as e:  # optional: not every model converts or runs; say why, keep sklearn
        return None, {
            "exported": False,
            "verified": False,
            "reason": f"{type(e).__name__}: {e}"[:300],
        }
    return (data if record["verified"] else None), record


def verify(data: bytes, pipeline: Any, rows: np.ndarray, task: str) -> dict[str, Any]:
    """Compare the ONNX model with the pipeline on rows: labels exactly, probabilities closely."""
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: rows})
    expected = pipeline.predict(rows)
    labels = np.asarray(outputs[0]).reshape(expected.shape)
    record: dict[str, Any] = {"exported": True, "rows_checked": len(rows)}
    if task == "regression":
        difference = float(np.max(np.abs(labels.astype(np.float64) - expected)))
        scale = float(np.max(np.abs(expected))) or 1.0
        record.update(max_prediction_difference=difference, tolerance=1e-6 * scale)
        record["verified"] = difference <= record["tolerance"]
        return record
    mismatched = int(np.sum(labels.astype(str) != expected.astype(str)))
    kind = "tree" if hasattr(pipeline[-1], "estimators_") else "linear"
    difference = float(np.max(np.abs(outputs[1] - pipeline.predict_proba(rows))))
    record.update(
        labels_mismatched=mismatched,
        max_probability_difference=difference,
        tolerance=PROBABILITY_TOLERANCE[kind],
    )
    record["verified"] = mismatched == 0 and difference <= record["tolerance"]
    return record


def _generated(X: np.ndarray, seed: int) -> np.ndarray:
    """Rows drawn uniformly over the training data's range, a little beyond its edges."""
    low, high = np.nanmin(X, axis=0), np.nanmax(X, axis=0)
    with np.errstate(over="ignore"):
        margin = (high - low) * 0.1
    if not (np.isfinite(low - margin).all() and np.isfinite(high + margin).all()):
        return np.empty((0, X.shape[1]))  # data too extreme to span: the hold-out rows only
    rng = np.random.default_rng(seed)
    return rng.uniform(low - margin, high + margin, size=(GENERATED_ROWS, X.shape[1]))
