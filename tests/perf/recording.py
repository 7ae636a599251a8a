"""What metrics cost the service: one request's recording, and one page.

    python tests/perf/recording.py ARTIFACT            # this tree's service (µs, ms)
    python tests/perf/recording.py ARTIFACT --options  # and the ways not taken, on this machine

The request is a one-row prediction's calls as app.py and the micro-batcher make them: the
HTTP histogram, predictions by class and the batch size, the model call by version, the batch's
rows and wait, and the drift bins (kept, counted 256 requests at a time). The page is what a
scrape renders (and, with several workers, what each writes every second): every series, with
the Iris baseline's drift bins for two versions. CPU time of this process, median of rounds.

`--options` times the alternatives of issue 32 for the same calls: the model calls as
OpenTelemetry instruments too; prometheus_client's own metrics, in one process and in its
multiprocess mode (PROMETHEUS_MULTIPROC_DIR, one file per worker, merged when read); and the
drift bins as OpenTelemetry observable instruments (a callback per scrape) instead of points.
Runs against any tree that has `prometheus_telemetry` (the page's drift argument is detected),
so a before/after pair is two runs with PYTHONPATH at each tree.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROUNDS, REQUESTS, PAGES = 7, 20_000, 200
ROUTE = "/v2/models/{name}/infer"


def cpu_us(call: Callable[[], object], times: int) -> float:
    """Median over ROUNDS of the CPU microseconds one call takes."""
    rounds = []
    for _ in range(ROUNDS):
        gc.collect()
        started = time.process_time()
        for _ in range(times):
            call()
        rounds.append((time.process_time() - started) / times * 1e6)
    return statistics.median(rounds)


def tree_telemetry(state: Callable[[], Any], drift: Any) -> tuple[Any, Callable[[], bytes]]:
    """This tree's telemetry and page, its drift counts exported as the tree does."""
    from function.core import drift as core
    from function.service import telemetry as module

    make: Any = module.prometheus_telemetry
    if "collectors" in inspect.signature(make).parameters:  # before issue 32: a collector
        collector: Any = core.DriftCollector  # type: ignore[attr-defined]
        return make(state, [collector(drift)] if drift else [])
    return make(state, drift)


def service_telemetry(artifact: Path) -> tuple[Any, Callable[[], bytes], Callable[[], None], Any]:
    """This tree's telemetry and page, with drift counted for the artifact; one request; the
    drift counts."""
    from function.core.drift import BASELINE_FILE, Drift, parse_baseline
    from function.core.model import LoadedModel
    from function.core.schema import from_metadata

    metadata = json.loads((artifact / "metadata.json").read_text())
    baseline = parse_baseline((artifact / BASELINE_FILE).read_bytes(), str(artifact))
    schema = from_metadata(metadata, str(artifact))
    drift = Drift(None)
    identity = {"model.name": "iris", "model.version": "v1", "model.sha256": "0" * 12}
    state: Callable[[], tuple[dict[str, str] | None, bool]] = lambda: (identity, True)  # noqa: E731
    telemetry, page = tree_telemetry(state, drift)
    models = [
        LoadedModel(None, {**metadata, "version": v}, 0.0, schema=schema, baseline=baseline)
        for v in ("v1", "v2")
    ]
    row, label = np.array([[5.1, 3.5, 1.4, 0.2]]), ["setosa"]
    for model in models:  # two versions' bins on the page, as after a swap
        for _ in range(300):
            drift.observe(model, row, label)
    model = models[1]

    def request() -> None:
        telemetry.request("POST", ROUTE, 200, 0.0012)
        telemetry.scored("v2", "answer", 0.0003, ok=True)
        telemetry.predicted("v2", label, True)
        drift.observe(model, row, label)
        telemetry.batched(1, [0.0001])

    return telemetry, page, request, drift


def options(artifact: Path) -> dict[str, float]:
    """The alternatives' cost for the same request, and the drift bins per scrape."""
    from opentelemetry.sdk.metrics import MeterProvider

    telemetry, _, request, drift = service_telemetry(artifact)
    meter = telemetry.provider.get_meter("options")
    calls = meter.create_counter("modelrun.model.calls")
    duration = meter.create_histogram("modelrun.model.duration", unit="s")

    def all_otel() -> None:  # the same request, the model call by SDK instruments
        request()
        calls.add(1, {"model.version": "v2", "role": "answer", "outcome": "ok"})
        duration.record(0.0003, {"model.version": "v2", "role": "answer"})

    out = {"request_us_model_calls_as_otel_instruments": cpu_us(all_otel, REQUESTS)}
    out |= {f"request_us_prometheus_client_{k}": v for k, v in prometheus_client_costs().items()}
    # The drift bins as observable instruments: one Observation per bin, hashed by the SDK.
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.metrics import Observation
    from prometheus_client import CollectorRegistry, generate_latest

    def observe(family: str, reference: bool) -> Callable[[Any], list[Observation]]:
        def callback(options: Any) -> list[Observation]:
            out = []
            for watch in drift.watches():
                watch.flush()
                for slot, count in zip(watch.slots, watch.counts.tolist(), strict=True):
                    if slot.family == family:
                        value = slot.reference or 0.0 if reference else count
                        out.append(Observation(value, {"model.version": watch.version,
                                                       **dict(slot.labels)}))  # fmt: skip
            return out

        return callback

    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    m = provider.get_meter("drift")
    m.create_observable_counter("modelrun.drift.rows", [observe("rows", False)])
    m.create_observable_gauge("modelrun.drift.reference_ratio", [observe("rows", True)])
    m.create_observable_counter("modelrun.drift.out_of_range", [observe("out_of_range", False)])
    m.create_observable_counter("modelrun.drift.prediction_rows", [observe("prediction", False)])
    m.create_observable_gauge(
        "modelrun.drift.prediction_reference_ratio", [observe("prediction", True)]
    )
    out["drift_page_ms_observable_instruments"] = (
        cpu_us(lambda: generate_latest(registry), PAGES) / 1000
    )
    # The drift families as this tree exports them: its page with them, less its page without.
    bare = tree_telemetry(lambda: (None, False), None)[1]
    full = tree_telemetry(lambda: (None, False), drift)[1]
    out["drift_page_ms_as_exported"] = (cpu_us(full, PAGES) - cpu_us(bare, PAGES)) / 1000
    out["drift_series"] = sum(len(w.slots) for w in drift.watches())
    return out


def prometheus_client_costs() -> dict[str, float]:
    """The request's seven records as prometheus_client metrics, in one process and in
    multiprocess mode (each value a memory-mapped file's; in a child process, as the mode is
    chosen when prometheus_client is imported)."""
    import subprocess
    import sys

    out = {}
    for mode in ("one_process", "multiprocess"):
        env = dict(os.environ)
        if mode == "multiprocess":
            env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="modelrun-mp-")
        result = subprocess.run(
            [sys.executable, __file__, "--prometheus-client"], env=env, capture_output=True,
            text=True, check=True,
        )  # fmt: skip
        out[mode] = float(result.stdout)
    return out


def prometheus_client_request() -> float:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    r = CollectorRegistry()
    http = Histogram("http_server_request_duration_seconds", "", ["http_request_method",
                     "http_response_status_code", "http_route"], registry=r)  # fmt: skip
    predictions = Counter("modelrun_predictions", "", ["model_version", "class"], registry=r)
    size = Histogram("modelrun_batch_size", "", registry=r)
    calls = Counter("modelrun_model_calls", "", ["model_version", "role", "outcome"], registry=r)
    duration = Histogram("modelrun_model_duration_seconds", "", ["model_version", "role"],
                         registry=r)  # fmt: skip
    rows = Histogram("modelrun_model_call_rows", "", registry=r)
    wait = Histogram("modelrun_batching_queue_wait_seconds", "", registry=r)

    def request() -> None:
        http.labels("POST", "200", ROUTE).observe(0.0012)
        predictions.labels("v2", "setosa").inc()
        size.observe(1)
        calls.labels("v2", "answer", "ok").inc()
        duration.labels("v2", "answer").observe(0.0003)
        rows.observe(1)
        wait.observe(0.0001)

    return cpu_us(request, REQUESTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("artifact", type=Path, nargs="?")
    parser.add_argument("--options", action="store_true")
    parser.add_argument("--prometheus-client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prometheus_client:
        print(prometheus_client_request())
        return
    _, page, request, _ = service_telemetry(args.artifact)
    figures = {"request_us": cpu_us(request, REQUESTS), "page_ms": cpu_us(page, PAGES) / 1000}
    if args.options:
        figures |= options(args.artifact)
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
