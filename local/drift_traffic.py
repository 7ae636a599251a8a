"""Traffic for watching drift happen: rows drawn from the training data, then the same rows with
one feature moved, sent to the service as a client would.

`make monitor DRIFT=1` (local/monitor.py) replays both for a person to watch; the end-to-end test
(tests/test_drift.py) sends them and waits for the real Alertmanager's webhook.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import requests

from training.data import load_iris

SHIFTED_FEATURE = "petal_length"
BATCH_ROWS = 50


def iris_rows(seed: int = 0) -> tuple[list[str], np.ndarray]:
    """The default model's features and its rows (the data it was trained from), shuffled."""
    data = load_iris()
    rows = data.frame.to_numpy(dtype=np.float64)
    return data.feature_names, rows[np.random.default_rng(seed).permutation(len(rows))]


def shifted(names: list[str], rows: np.ndarray, feature: str, deviations: float) -> np.ndarray:
    """The rows with one feature moved by that many of its standard deviations."""
    moved = rows.copy()
    j = names.index(feature)
    moved[:, j] += deviations * rows[:, j].std()
    return moved


def send(
    url: str,
    key: str,
    rows: np.ndarray,
    until: Callable[[], bool],
    pause: float = 0.1,
) -> int:
    """Post the rows in batches, round and round, until `until()` holds; return the rows sent.
    Every answer must be 200: a refused row would not be counted."""
    sent, start = 0, 0
    with requests.Session() as session:
        while not until():
            batch = rows[start : start + BATCH_ROWS]
            start = (start + BATCH_ROWS) % len(rows)
            answer = session.post(
                f"{url}/predict",
                json={"instances": batch.tolist()},
                headers={"X-API-Key": key},
                timeout=10,
            )
            answer.raise_for_status()
            sent += len(batch)
            time.sleep(pause)
    return sent


def replay(url: str, key: str, shift: Callable[[], bool], stop: threading.Event) -> None:
    """Training-like rows until `shift()` holds, then rows with SHIFTED_FEATURE moved by two
    standard deviations, until stopped."""
    names, rows = iris_rows()
    print("drift traffic: rows drawn from the training data", flush=True)
    send(url, key, rows, lambda: stop.is_set() or shift())
    if stop.is_set():
        return
    print(f"drift traffic: now {SHIFTED_FEATURE} moved by two standard deviations", flush=True)
    send(url, key, shifted(names, rows, SHIFTED_FEATURE, 2.0), stop.is_set)
