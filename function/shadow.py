"""A shadow candidate scores the rows the current version answered, off the request's path.

A request hands over its rows and its answer (`submit`, a non-blocking put) and returns at once;
the candidate's own thread scores them and records how it compares. The queue is bounded: what it
cannot keep up with is dropped and counted, so a slow or hung candidate costs clients nothing,
and one that raises is counted as the candidate's error. Nothing here can change an answer.

The thread runs at a lower CPU priority than the request threads, and requests that queued up
while it was busy are scored together in one call: under load a candidate costs a fraction of
a call per request (tests/perf/bench.py measures it). The candidate's model time is recorded
for calls that scored one request, so that it compares with the answers' times.

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
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from function.batching import stack_inputs
from function.model import LoadedModel
from function.predict import Prediction, run_model
from function.telemetry import Telemetry

log = logging.getLogger("modelrun.shadow")

QUEUE_REQUESTS = 64  # requests waiting for the candidate before more are dropped
SHADOW_BATCH = 32  # queued requests scored together in one call
SHADOW_NICENESS = 10  # the scoring thread's nice value: the request threads come first
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
        # Below the request threads for the CPU (Linux gives each thread its own nice value):
        # when the instance is busy, answers come first and the candidate lags, then drops.
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SHADOW_NICENESS)
        while True:
            batch = [self._queue.get()]
            # Requests that queued up while the candidate was busy are scored in one call: a
            # lagging candidate catches up at a fraction of the cost of one call each.
            while len(batch) < SHADOW_BATCH and batch[-1] is not None:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            items = [item for item in batch if item is not None]
            if items and not self._stop.is_set():
                self.score(items)
            if len(items) < len(batch) or self._stop.is_set():
                return

    def score(self, batch: list[Answered]) -> None:
        """Score requests' rows with the candidate (in one call) and record the comparison."""
        candidate = self.candidate
        want = candidate.has_probabilities and any(
            item.prediction.probabilities is not None for item in batch
        )
        rows = sum(len(item.prediction.labels) for item in batch)
        started = time.perf_counter()
        try:
            X = batch[0].X if len(batch) == 1 else stack_inputs([item.X for item in batch])
            labels, probabilities = run_model(candidate.estimator, X, want)
            labels = labels.tolist()
            if len(labels) != rows:
                raise ValueError(f"{len(labels)} answers for {rows} rows")
        except Exception as e:  # the candidate's failure is counted; no client sees it
            self._failed(e, len(batch))
            return
        seconds = time.perf_counter() - started
        version = candidate.version
        for _ in batch:  # a call's time is one request's only when it scored one request
            self.telemetry.scored(version, "shadow", seconds, ok=True, timed=len(batch) == 1)
        classifier = candidate.metadata["task"] == "classification"
        self.telemetry.predicted(version, labels, classifier, shadow=True)
        classes = [str(c) for c in candidate.estimator.classes_] if want else []
        agreed, difference, start = 0, 0.0, 0
        for item in batch:
            current = item.prediction
            end = start + len(current.labels)
            both = probabilities is not None and current.probabilities is not None
            same_classes = both and classes == current.classes
            counts = compare(
                current.labels,
                labels[start:end],
                current.probabilities if same_classes else None,
                probabilities[start:end] if same_classes and probabilities is not None else None,
                classifier,
            )
            agreed, difference, start = agreed + counts[0], difference + counts[1], end
        self.telemetry.compared(version, rows, agreed, difference)

    def _failed(self, error: Exception, requests: int) -> None:
        before, self._failures = self._failures, self._failures + requests
        # Logged at the 1st, 10th and 100th failure, then every 1,000th: a log, not a flood.
        crossed = any(before < mark <= self._failures for mark in (1, 10, 100))
        if crossed or self._failures // 1000 > before // 1000:
            log.warning(
                "shadow candidate %s failed (%d requests so far): %s: %s",
                self.candidate.version,
                self._failures,
                type(error).__name__,
                error,
            )
        for _ in range(requests):
            self.telemetry.scored(self.candidate.version, "shadow", 0.0, ok=False)


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
