"""Adaptive micro-batching: concurrent requests share one model call.

A request that finds no other in progress runs at once (no added latency). When several are in
progress, they queue; one batcher thread takes what is waiting (up to max_rows, waiting at most
max_wait for the others in progress), stacks the rows, calls the model once per (model,
probabilities) group, and hands each request its own slice. If a combined call fails, each request
in it is run alone, so one request's error never reaches another.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from function.core.predict import Run


@dataclass
class _Request:
    estimator: Any
    X: Any  # a matrix or a DataFrame
    probabilities: bool
    enqueued: float = field(default_factory=time.perf_counter)
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple[Any, Any] | None = None
    error: BaseException | None = None


class MicroBatcher:
    """Coalesce concurrent model calls; `run` has the signature of a direct model call."""

    def __init__(
        self,
        run: Run,
        max_rows: int,
        max_wait_seconds: float,
        on_batch: Callable[[int, list[float]], None] | None = None,
    ) -> None:
        self._run = run
        self.max_rows = max_rows
        self.max_wait = max_wait_seconds
        self._on_batch = on_batch or (lambda rows, waits: None)
        self._queue: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._active = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def run(self, estimator: Any, X: Any, probabilities: bool) -> tuple[Any, Any]:
        """Return (predictions, probabilities or None) for X, alone or in a shared call."""
        with self._lock:
            self._active += 1
            alone = self._active == 1
        try:
            if alone or len(X) >= self.max_rows:
                return self._run(estimator, X, probabilities)
            request = _Request(estimator, X, probabilities)
            self._ensure_thread()
            self._queue.put(request)
            request.done.wait()
            if request.error is not None:
                raise request.error
            assert request.result is not None
            return request.result
        finally:
            with self._lock:
                self._active -= 1

    def _ensure_thread(self) -> None:
        # Started on first use, in the serving process (gunicorn forks after import).
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            rows = len(batch[0].X)
            deadline = batch[0].enqueued + self.max_wait
            while rows < self.max_rows:
                try:
                    request = self._queue.get_nowait()
                except queue.Empty:
                    # Wait a little only while requests in progress have not queued yet.
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0 or self._active <= len(batch):
                        break
                    try:
                        request = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
                batch.append(request)
                rows += len(request.X)
            self._serve(batch)

    def _serve(self, batch: list[_Request]) -> None:
        started = time.perf_counter()
        groups: dict[tuple[int, bool], list[_Request]] = {}
        for request in batch:
            groups.setdefault((id(request.estimator), request.probabilities), []).append(request)
        for group in groups.values():
            self._serve_group(group)
        self._on_batch(sum(len(r.X) for r in batch), [started - r.enqueued for r in batch])

    def _serve_group(self, group: list[_Request]) -> None:
        if len(group) > 1:
            first = group[0]
            try:
                stacked = stack_inputs([r.X for r in group])
                labels, probabilities = self._run(first.estimator, stacked, first.probabilities)
            except BaseException:  # noqa: S110 - rerun alone below: each keeps its own error
                pass
            else:
                start = 0
                for request in group:
                    end = start + len(request.X)
                    request.result = (
                        labels[start:end],
                        None if probabilities is None else probabilities[start:end],
                    )
                    start = end
                    request.done.set()
                return
        for request in group:
            try:
                request.result = self._run(request.estimator, request.X, request.probabilities)
            except BaseException as e:
                request.error = e
            request.done.set()


def stack_inputs(parts: list[Any]) -> Any:
    """Requests' rows as one input: matrices stacked, or DataFrames concatenated."""
    if isinstance(parts[0], np.ndarray):
        return np.vstack(parts)
    import pandas as pd

    return pd.concat(parts, ignore_index=True)
