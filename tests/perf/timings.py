"""How long what the test suite only orders takes: the suite asserts order and outcome (a test
that timed these flaked on a loaded machine), this reports the times.

    make bench-timings           # five runs of each in-process timing, one of each end to end
    make bench-timings QUICK=1   # the in-process timings only (a few seconds)

- rollout: after `rollout promote` or `abort`, how long until the other version's last answer,
  on two workers under load with MODEL_REFRESH_SECONDS=0.5 (tests/test_rollout.py asserts that
  the other version stops answering while the load runs, and every client then gets the new one);
- time limit: a request past CLOUD_RUN_TIMEOUT_SECONDS=1 on the real server, until its 503
  (tests/test_reliability.py asserts the 503 comes before the model's own 5 s);
- deadline: an overdue request stopped in its own thread, how long after its 0.3 s deadline
  (tests/test_deadline.py asserts not before it, and before the work's own end);
- lone request: one request through a micro-batcher with a 1 s batch wait
  (tests/test_batching.py asserts no batch and no wait for it).

Results go to tests/perf/results/timings.json. Run on demand, not in `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import requests

from function.core import rollout
from function.core.predict import run_model
from function.core.store import ModelStore
from function.service.batching import MicroBatcher
from function.service.deadline import DeadlineExceeded, Deadlines
from local.mirror import ROOT
from tests.artifacts import publish_object
from tests.conftest import KEY, OTHER_KEY, run_service, train_artifact
from tests.odd_models import SlowModel

ROW = [5.1, 3.5, 1.4, 0.2]
REFRESH_SECONDS = 0.5


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 4),
        "max": round(max(values), 4),
        "runs": len(values),
    }


def deadline_overshoot() -> float:
    """Seconds past a 0.3 s deadline until busy pure-Python work is stopped."""
    deadlines = Deadlines(0.3)
    started = time.monotonic()
    try:
        with deadlines.guard(), deadlines.interruptible():
            end = time.monotonic() + 5
            while time.monotonic() < end:
                pass
    except DeadlineExceeded:
        return time.monotonic() - started - 0.3
    raise AssertionError("the work was never stopped")


class Doubling:
    def predict(self, X: np.ndarray) -> np.ndarray:
        return X[:, 0] * 2


def lone_request() -> float:
    """Seconds one request takes through a micro-batcher whose batch wait is 1 s."""
    batcher = MicroBatcher(run_model, 64, 1.0, lambda rows, waits: None)
    started = time.perf_counter()
    batcher.run(Doubling(), np.array([[1.0, 0.0]]), False)
    return time.perf_counter() - started


def time_limit(iris: Path, tmp: Path) -> float:
    """Seconds until the 503 of a request past a 1 s time limit, on the real server."""
    store = ModelStore((tmp / "slow").as_uri())
    publish_object(store, "slow", SlowModel(), iris, tmp, class_names=["slow"])
    store.promote("slow")
    env = {"MODEL_URI": store.uri, "API_KEYS": KEY, "CLOUD_RUN_TIMEOUT_SECONDS": "1",
           "ALLOW_UNSIGNED_MODELS": "true"}  # fmt: skip
    with run_service(env, tmp) as running:
        started = time.monotonic()
        response = running.post("/predict", json={"features": ROW}, headers={"X-API-Key": KEY})
        took = time.monotonic() - started
    assert response.status_code == 503, response.text
    return took


def rollout_switch(end: str, iris: Path, forest: Path, tmp: Path) -> float:
    """Seconds from `rollout promote|abort` to the other version's last answer, on two workers
    following a folder store every 0.5 s, four clients posting as forty X-Client-Ids."""
    store = ModelStore((tmp / f"rollout-{end}" / "iris").as_uri(), timeout=5)
    store.promote(store.publish(iris, "v1"))
    store.publish(forest, "v2")
    rollout.start(store, "v2", "canary", 50)
    env = {"MODEL_URI": store.uri, "API_KEYS": f"{KEY},{OTHER_KEY}", "WORKERS": "2",
           "MODEL_REFRESH_SECONDS": str(REFRESH_SECONDS), "RATE_LIMIT_PER_SECOND": "0",
           "ALLOW_UNSIGNED_MODELS": "true"}  # fmt: skip
    answers: list[tuple[float, str]] = []
    stop = threading.Event()
    with run_service(env, tmp) as running:

        def client(seed: int) -> None:
            session, i = requests.Session(), seed
            while not stop.is_set():
                headers = {"X-API-Key": KEY, "X-Client-Id": f"c{i % 40}"}
                sent = time.monotonic()
                response = session.post(f"{running.url}/predict", json={"features": ROW},
                                        headers=headers, timeout=10)  # fmt: skip
                answers.append((sent, response.headers.get("X-Model-Version", "")))
                i += 4

        threads = [threading.Thread(target=client, args=(s,)) for s in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        commanded = time.monotonic()
        (rollout.promote if end == "promote" else rollout.abort)(store)
        time.sleep(REFRESH_SECONDS + 2.5)
        stop.set()
        for thread in threads:
            thread.join()
    want = "v2" if end == "promote" else "v1"
    assert {v for _, v in answers} == {"v1", "v2"}, "both versions answered before the command"
    return max(0.0, max(sent for sent, v in answers if v != want) - commanded)


def repeat(measure: Callable[[], float], runs: int) -> dict[str, float]:
    return summary([measure() for _ in range(runs)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the in-process timings only")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load": [round(x, 2) for x in os.getloadavg()],
        },
        "deadline_overshoot_seconds": repeat(deadline_overshoot, args.runs),
        "lone_request_seconds": repeat(lone_request, args.runs),
    }
    if not args.quick:
        with tempfile.TemporaryDirectory() as folder:
            tmp = Path(folder)
            iris = train_artifact(tmp / "iris")
            forest = train_artifact(tmp / "forest", "--estimator", "random_forest",
                                    "--param", "n_estimators=20")  # fmt: skip
            result["time_limit_503_seconds"] = {"limit": 1, **summary([time_limit(iris, tmp)])}
            for end in ("promote", "abort"):
                result[f"rollout_{end}_switch_seconds"] = {
                    "refresh": REFRESH_SECONDS,
                    **summary([rollout_switch(end, iris, forest, tmp)]),
                }
    print(json.dumps(result, indent=2))
    out = ROOT / "tests" / "perf" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "timings.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
