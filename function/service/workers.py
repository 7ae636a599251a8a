"""Several gunicorn workers make one instance: one metrics page, and ready only when all are.

Each worker keeps its own OpenTelemetry registry and loads its own model. A request reaches
one worker at random, so the workers share a folder: each writes its metrics page there
(every second, and at each scrape) and a mark once it is ready. A scrape is answered with all
pages merged: counters and histograms add up, and a finished worker's stay counted, so totals
never go backwards; gauges describe live processes: memory and open files add up, readiness is
the least ready worker's, and a model version is shown while any worker serves it. /ready
answers 200 only once every worker has marked itself ready, so that no request meets a worker
still loading.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

SNAPSHOT_SECONDS = 1.0
ADDED = {"counter", "histogram", "summary"}
GAUGES: dict[str, Callable[[Iterable[float]], float]] = {
    "modelrun_model_ready": min,
    "modelrun_model_info": max,
    "process_start_time_seconds": min,
    "process_max_fds": max,
    "modelrun_drift_reference_ratio": max,  # the same training shares in every worker
    "modelrun_drift_prediction_reference_ratio": max,
    "modelrun_rollout_candidate": max,  # a rollout's candidate, loaded (or refused) by any worker
    "modelrun_holdout_accuracy": max,  # the version's metadata, the same in every worker
    "modelrun_estimate_trusted": min,
}  # any other gauge (resident memory, open file descriptors) adds up


class Workers:
    """The folder an instance's workers share: their metrics pages and readiness marks."""

    def __init__(self, count: int, render: Callable[[], bytes], ready: Callable[[], bool]) -> None:
        # Made once in gunicorn's master, before it forks: every worker shares the folder.
        self.folder = Path(tempfile.mkdtemp(prefix="modelrun-metrics-"))
        self.count = count
        self.render = render
        self.ready = ready
        self._marked = False
        self._writing = threading.Lock()  # the page thread and a scrape may write at once

    def run(self, stop: threading.Event) -> None:
        """Write this worker's page (and mark, once ready) every SNAPSHOT_SECONDS until stopped."""
        while True:
            self.write()
            self.mark_if_ready()
            if stop.wait(SNAPSHOT_SECONDS):
                return

    def write(self) -> None:
        page = self.folder / f"{os.getpid()}.prom"
        partial = page.with_suffix(".partial")
        with self._writing:
            partial.write_bytes(self.render())
            os.replace(partial, page)  # a reader sees the old page or the new one, whole

    def page(self) -> bytes:
        """The instance's metrics page: every worker's, merged."""
        self.write()
        pages = []
        for path in self.folder.glob("*.prom"):
            try:
                pages.append((path.read_text(), _alive(int(path.stem))))
            except (OSError, ValueError):
                continue
        return merge(pages)

    def mark_if_ready(self) -> None:
        if not self._marked and self.ready():  # a worker, once ready, stays ready
            (self.folder / f"{os.getpid()}.ready").touch()
            self._marked = True

    def all_ready(self) -> bool:
        """Whether as many live workers as the instance runs have marked themselves ready."""
        self.mark_if_ready()
        marks = [int(path.stem) for path in self.folder.glob("*.ready")]
        return sum(map(_alive, marks)) >= self.count


def merge(pages: list[tuple[str, bool]]) -> bytes:
    """Merge Prometheus text pages, each with whether its worker still runs."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], list[float]]] = {}
    for text, alive in pages:
        try:
            parsed = list(text_string_to_metric_families(text))
        except ValueError:  # not a whole page (a full disk?): the others still answer
            continue
        for family in parsed:
            if family.type not in ADDED and not alive:
                continue  # a finished worker's state is gone; only its counts remain
            families.setdefault(family.name, family)
            samples = values.setdefault(family.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                samples.setdefault(key, []).append(sample.value)
    merged = []
    for name, family in families.items():
        combine = sum if family.type in ADDED else GAUGES.get(name, sum)
        result = Metric(family.name, family.documentation, family.type, family.unit)
        for (sample_name, labels), numbers in values[name].items():
            if sample_name.endswith("_created"):
                result.add_sample(sample_name, dict(labels), min(numbers))
            else:
                result.add_sample(sample_name, dict(labels), combine(numbers))
        merged.append(result)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(merged))
    return generate_latest(registry)


class _Fixed:
    """A collector that yields metric families already made."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
