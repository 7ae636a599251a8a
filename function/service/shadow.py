"""A shadow candidate scores the rows the current version answered, off the request's path.

A request hands over its rows and its answer (`submit`, a non-blocking put) and returns at once;
the candidate's own thread scores them and records how it compares. The queue is bounded: what it
cannot keep up with is dropped and counted, so a slow or hung candidate costs clients nothing,
and one that raises is counted as the candidate's error. Nothing here can change an answer.

The thread scores the requests that arrive within 50 ms together, in one call, so that under load
a candidate costs a fraction of a call per request (tests/perf/bench.py measures it); the first of
each batch is also scored alone, and only that call's time is recorded, so that the candidate's
model time is one request's, as the answers' are. (A lower CPU priority for the thread was
measured and dropped: descheduled while holding the GIL, it made the request threads wait.)

How a candidate compares with the current version, per row:
- a classifier: agreement is an equal label; the difference is the mean absolute difference of
  the two probability vectors (when both were computed over the same classes), else 0 or 1 by
  label;
- a regressor: agreement is an answer within 1 % of the current one; the difference is the
  absolute difference of the two.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from function.core.model import LoadedModel
from function.core.predict import Prediction, run_model
from function.service.batching import stack_inputs
from function.service.telemetry import Telemetry

log = logging.getLogger("modelrun.shadow")

QUEUE_REQUESTS = 128  # requests waiting for the candidate before more are dropped
SHADOW_BATCH = 128  # requests scored together in one call, at most
SHADOW_LINGER_SECONDS = 0.05  # how long the first request of a batch waits for others
REGRESSION_AGREEMENT = 0.01  # a regressor agrees within 1 % of the current answer


# Called from the scorer's thread with the candidate, its answer for one request's rows (None
# when it failed) and the call's seconds: the request's payload record as the shadow's.
Recorder = Callable[[LoadedModel, Prediction | None, float], None]


@dataclass(frozen=True)
class Answered:
    """What the current version answered for a request's rows."""

    X: Any
    prediction: Prediction
    record: Recorder | None = None  # the request was sampled for payload records


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

    def submit(self, X: Any, prediction: Prediction, record: Recorder | None = None) -> None:
        """Hand a request's rows and answer to the candidate, or drop them if it lags."""
        try:
            self._queue.put_nowait(Answered(X, prediction, record))
        except queue.Full:
            self.telemetry.dropped(self.candidate.version)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None or self._stop.is_set():
                return
            # The requests that arrive within SHADOW_LINGER_SECONDS are scored together: under
            # load a candidate costs a fraction of a call per request. The first is scored alone
            # as well, so that the candidate's model time is one request's, as the answers' are.
            # Asleep meanwhile rather than woken by each request: one wake-up per batch.
            self._stop.wait(SHADOW_LINGER_SECONDS)
            batch, ended = [first], False
            while len(batch) < SHADOW_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    ended = True
                    break
                batch.append(item)
            if self._stop.is_set():
                return
            self.score(batch[:1], timed=True)
            if len(batch) > 1:
                self.score(batch[1:], timed=False)
            if ended:
                return

    def score(self, batch: list[Answered], timed: bool = True) -> None:
        """Score requests' rows with the candidate in one call and record the comparison."""
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
            _record(batch, None, None, [], candidate, 0.0)
            return
        seconds = time.perf_counter() - started
        version = candidate.version
        self.telemetry.scored(version, "shadow", seconds, ok=True, requests=len(batch), timed=timed)
        classifier = candidate.metadata.classifier
        self.telemetry.predicted(version, labels, classifier, shadow=True)
        if probabilities is not None:
            self.telemetry.confident(version, "shadow", probabilities)
        classes = [str(c) for c in candidate.estimator.classes_] if want else []
        _record(batch, labels, probabilities, classes, candidate, seconds)
        answers = [item.prediction for item in batch]
        current = list(itertools.chain.from_iterable(a.labels for a in answers))
        if probabilities is not None and all(
            a.probabilities is not None and a.classes == classes for a in answers
        ):  # the usual case, compared in one pass
            theirs = np.concatenate([a.probabilities for a in answers])
            agreed, difference = compare(current, labels, theirs, probabilities, classifier)
        else:  # labels only (a request without probabilities, or other classes)
            agreed, difference = compare(current, labels, None, None, classifier)
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
        self.telemetry.scored(self.candidate.version, "shadow", 0.0, ok=False, requests=requests)


def _record(
    batch: list[Answered],
    labels: list[Any] | None,
    probabilities: np.ndarray | None,
    classes: list[str],
    candidate: LoadedModel,
    seconds: float,
) -> None:
    """Hand each sampled request its own rows of the candidate's answer (None: it failed)."""
    start = 0
    for item in batch:
        end = start + len(item.prediction.labels)
        if item.record is not None:
            own = probabilities[start:end] if probabilities is not None else None
            answer = Prediction(labels[start:end], own, classes) if labels is not None else None
            try:
                item.record(candidate, answer, seconds)
            except Exception:  # a record is never worth the scorer's thread
                log.exception("the shadow's payload record could not be queued")
        start = end


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
