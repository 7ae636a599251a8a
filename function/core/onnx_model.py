"""Serve a verified ONNX export through onnxruntime, shaped like an estimator for the core.

Nothing here imports scikit-learn: with MODEL_RUNTIME=auto and a verified model.onnx, a cold
start skips importing it and unpickling the pipeline.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class OnnxModel:
    """predict / predict_proba / classes_ / n_features_in_ over an onnxruntime session."""

    def __init__(self, data: bytes, metadata: dict[str, Any]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One thread per call: requests run on their own threads, and 2 vCPUs are all there is.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        graph_input = self.session.get_inputs()[0]
        self.input = graph_input.name
        # Tree graphs take float32, as scikit-learn's trees do (see training/onnx_export.py).
        self.float32 = graph_input.type == "tensor(float)"
        self.n_features_in_ = len(metadata["feature_names"])
        self.classifier = metadata["task"] == "classification"
        if self.classifier:
            self.classes_ = np.asarray(metadata["class_names"])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self._run(X)[0]).reshape(len(X))

    def _run(self, X: np.ndarray) -> list[Any]:
        if not self.float32:
            return self.session.run(None, {self.input: np.asarray(X, dtype=np.float64)})
        with np.errstate(over="ignore"):
            X32 = np.asarray(X, dtype=np.float32)
        if not np.isfinite(X32).all():  # as scikit-learn's trees refuse it
            raise ValueError("a value is too large for float32, which this tree model compares in")
        return self.session.run(None, {self.input: X32})


class OnnxProbabilities(OnnxModel):
    """A classifier whose pipeline has predict_proba: the graph's second output is its
    probabilities. (An SVC without them outputs decision scores there, never served as such.)"""

    def predict_both(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels and probabilities from one run of the graph."""
        labels, probabilities = self._run(X)
        return np.asarray(labels).reshape(len(X)), np.asarray(probabilities)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self._run(X)[1])


def onnx_model(data: bytes, metadata: dict[str, Any]) -> OnnxModel:
    """The verified export as an estimator: with predict_proba when the pipeline had it (the
    export's record says; records older than the field were all made from such pipelines)."""
    classifier = metadata["task"] == "classification"
    if classifier and metadata.get("onnx", {}).get("probabilities", True):
        return OnnxProbabilities(data, metadata)
    return OnnxModel(data, metadata)
