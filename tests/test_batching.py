"""Micro-batching: concurrent requests share model calls, each gets its own answer and error."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from function.core.predict import run_model
from function.core.store import ModelStore
from function.service.batching import MicroBatcher
from tests.conftest import KEY, run_service


class CountingModel:
    """Records how many rows each call carried; refuses rows whose first value is negative."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, X: np.ndarray) -> np.ndarray:
        time.sleep(0.01)  # long enough for others to queue behind it
        self.calls.append(len(X))
        if (X[:, 0] < 0).any():
            raise ValueError("negative")
        return X[:, 0] * 2


def test_concurrent_calls_are_coalesced_and_answers_routed_back() -> None:
    model = CountingModel()
    batches: list[tuple[int, list[float]]] = []
    batcher = MicroBatcher(run_model, 64, 0.005, lambda rows, waits: batches.append((rows, waits)))
    start = threading.Barrier(16)

    def call(i: int) -> Any:
        start.wait()
        return batcher.run(model, np.array([[float(i), 0.0]]), False)[0].tolist()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, range(16)))

    assert answers == [[2.0 * i] for i in range(16)]
    assert sum(model.calls) == 16
    assert len(model.calls) < 16  # fewer model calls than requests
    assert max(model.calls) > 1
    assert batches and all(w >= 0 for _, waits in batches for w in waits)


def test_an_error_stays_with_the_request_that_caused_it() -> None:
    model = CountingModel()
    batcher = MicroBatcher(run_model, 64, 0.005)
    start = threading.Barrier(8)

    def call(i: int) -> Any:
        start.wait()
        try:
            return batcher.run(model, np.array([[-1.0 if i == 3 else float(i), 0.0]]), False)[0]
        except ValueError as e:
            return str(e)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, range(8)))

    assert answers[3] == "negative"
    assert [a.tolist() for i, a in enumerate(answers) if i != 3] == [
        [2.0 * i] for i in range(8) if i != 3
    ]


def test_a_lone_request_runs_at_once() -> None:
    model = CountingModel()
    batches: list[int] = []
    batcher = MicroBatcher(run_model, 64, 30.0, lambda rows, waits: batches.append(rows))

    started = time.perf_counter()
    batcher.run(model, np.array([[1.0, 0.0]]), False)

    # Not the 30 s batch wait (a generous bound, not a timing: make bench-timings has that).
    assert time.perf_counter() - started < 10
    assert batches == []  # no batcher involved


@pytest.mark.slow
@pytest.mark.parametrize("artifact", ["iris_artifact", "forest_artifact"])
def test_batched_service_answers_like_the_estimator(
    request: pytest.FixtureRequest, artifact: str, tmp_path: Path
) -> None:
    path: Path = request.getfixturevalue(artifact)
    store = ModelStore((tmp_path / "iris").as_uri())
    store.promote(store.publish(path, "v1"))
    estimator = joblib.load(path / "model.joblib")
    rows = np.random.default_rng(1).uniform([4, 2, 1, 0], [8, 4.5, 7, 2.5], (48, 4)).round(2)
    env = {"MODEL_URI": store.uri, "API_KEYS": KEY, "MODEL_RUNTIME": "sklearn",
           "RATE_LIMIT_PER_SECOND": "0"}  # fmt: skip

    with run_service(env, tmp_path) as running:

        def call(row: np.ndarray) -> Any:
            body = {"instances": [row.tolist()]}
            return running.post("/predict", json=body, headers={"X-API-Key": KEY}).json()

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(call, rows))
        metrics = running.get("/metrics", headers={"X-API-Key": KEY}).text

    assert [a["predictions"][0] for a in answers] == estimator.predict(rows).tolist()
    got = np.array([list(a["probabilities"][0].values()) for a in answers])
    # Trees are exact; a linear model's BLAS may round a stacked matrix in the last bit.
    np.testing.assert_allclose(got, estimator.predict_proba(rows), rtol=0, atol=1e-12)
    assert "modelrun_model_call_rows_count" in metrics
