"""Objects published as models by the fault tests. Importable by the service (repo root on path)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np


class SlowModel:
    """Answers after a few seconds of pure-Python work: a request time limit can stop it."""

    n_features_in_ = 4
    classes_ = np.array(["slow"])

    def predict(self, X: Any) -> Any:
        if np.asarray(X).any():  # the warm-up row is all zeros: fast
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                pass
        return np.array(["slow"] * len(X))


class NotAModel:
    """Unpickles fine, but has no predict."""

    n_features_in_ = 4


IRIS_CLASSES = np.array(["setosa", "versicolor", "virginica"])


class FailingModel:
    """Passes its warm-up, then raises on every call: a candidate with injected errors."""

    n_features_in_ = 4
    classes_ = IRIS_CLASSES

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, X: Any) -> Any:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("injected failure")
        return np.array(["setosa"] * len(X))


class HangingModel:
    """Passes its warm-up, then takes `seconds` for every call: a candidate that hangs."""

    n_features_in_ = 4
    classes_ = IRIS_CLASSES

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    def predict(self, X: Any) -> Any:
        self.calls += 1
        if self.calls > 1:
            time.sleep(self.seconds)
        return np.array(["setosa"] * len(X))
