"""A shadow candidate scores the rows the current version answered, off the request's path.

A request hands over its rows and its answer (`submit`, a non-blocking put) and returns at once;
the candidate's own thread scores them and records how it compares. The queue is bounded: what it
cannot keep up with is dropped and counted, so a slow or hung candidate costs clients nothing,
and one that raises is counted as the candidate's error. Nothing here can change an answer.

How a candidate compares with the current version, per row:
- a classifier: agreement is an equal label; the difference is the mean absolute difference of
  the two probability vectors (when both were computed over the same classes), else 0 or 1 by
  label;
- a regressor: agreement is an answer within 1 % of the current one; the difference is the
  absolute difference of the two.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from function.model import LoadedModel
from function.predict import Prediction, run_model
from function.telemetry import Telemetry

log = logging.getLogger("modelrun.shadow")

QUEUE_REQUESTS = 64  # requests waiting for the candidate before more are dropped
REGRESSION_AGREEMENT = 0.01  # a regressor agrees within 1 % of the current answer


@dataclass(frozen=True)
class Answered:
    """What the current version answered for a request's rows."""

    X: Any
    prediction: Prediction


class ShadowScorer:
    """One candidate's queue and thread; stopped when its rollout ends."""

    def __init__(
        self, candidate: LoadedModel, telemetry: Telemetry, queue_size: int = QUEUE_REQUESTS
    ) -> None:
        self.candidate = candidate
        self.telemetry = telemetry
        self._queue: queue.Queue[Answered | None] = queue.Queue(queue_size)
        self._stop = threading.Event()
        self._failures = 0

    def start(self) -> ShadowScorer:
        name = f"shadow-{self.candidate.version}"
        threading.Thread(target=self._run, name=name, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop scoring; a thread stuck in a hung candidate is left behind (it is a daemon)."""
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)  # wakes the thread if it waits

    def submit(self, X: Any, prediction: Prediction) -> None:
        """Hand a request's rows and answer to the candidate, or drop them if it lags."""
        try:
            self._queue.put_nowait(Answered(X, prediction))
        except queue.Full:
            self.telemetry.dropped(self.candidate.version)

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self._queue.get()
            if item is None or self._stop.is_set():
                return
            self.score(item)

    def score(self, item: Answered) -> None:
        """Score one request's rows with the candidate and record the comparison."""
        candidate, current = self.candidate, item.prediction
        want = current.probabilities is not None and candidate.has_probabilities
        started = time.perf_counter()
        try:
            labels, probabilities = run_model(candidate.estimator, item.X, want)
            labels = labels.tolist()
            if len(labels) != len(current.labels):
                raise ValueError(f"{len(labels)} answers for {len(current.labels)} rows")
        except Exception as e:  # the candidate's failure is counted; no client sees it
            self._failures += 1
            if self._failures in (1, 10, 100) or self._failures % 1000 == 0:
                log.warning(
                    "shadow candidate %s failed (%d so far): %s: %s",
                    candidate.version,
                    self._failures,
                    type(e).__name__,
                    e,
                )
            self.telemetry.scored(candidate.version, "shadow", 0.0, ok=False)
            return
        self.telemetry.scored(candidate.version, "shadow", time.perf_counter() - started, ok=True)
        classifier = candidate.metadata["task"] == "classification"
        self.telemetry.predicted(candidate.version, labels, classifier, shadow=True)
        classes = [str(c) for c in candidate.estimator.classes_] if want else []
        same_classes = probabilities is not None and classes == current.classes
        agreed, difference = compare(
            current.labels,
            labels,
            current.probabilities if same_classes else None,
            probabilities if same_classes else None,
            classifier,
        )
        self.telemetry.compared(candidate.version, len(labels), agreed, difference)


def compare(
    current: list[Any],
    candidate: list[Any],
    current_probabilities: np.ndarray | None,
    candidate_probabilities: np.ndarray | None,
    classifier: bool,
) -> tuple[int, float]:
    """Rows that agree, and the summed per-row difference (see the module's description)."""
    if not classifier:
        a = np.asarray(current, dtype=np.float64)
        b = np.asarray(candidate, dtype=np.float64)
        gap = np.abs(a - b)
        agreed = int((gap <= REGRESSION_AGREEMENT * np.maximum(np.abs(a), 1e-9)).sum())
        return agreed, float(gap.sum())
    same = [x == y for x, y in zip(current, candidate, strict=True)]
    if current_probabilities is None or candidate_probabilities is None:
        return sum(same), float(len(same) - sum(same))
    gap = np.abs(np.asarray(current_probabilities) - np.asarray(candidate_probabilities))
    return sum(same), float(gap.mean(axis=1).sum())
