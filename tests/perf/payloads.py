"""What payload records cost: the Iris model with PAYLOAD_SAMPLE_RATE=1 (every request recorded,
to stdout and a PAYLOAD_DIR) against 0, in alternating rounds (on, off, off, on, ...).

    make bench-payloads            # 4 pairs of 20 s
    make bench-payloads QUICK=1    # 2 pairs of 8 s

Each round starts the server as its container starts (the Dockerfile's CMD and ENV; the model
in a folder store), warms it up, then runs wrk at c=1 with one-row v2 requests: p50, and the
server's CPU per request (its process tree's utime + stime over the run). Goals (issue #33): at
most 5 % more CPU per request, p50 within noise. Every round is printed with the load average
beside it; the records written and dropped are checked against the requests sent.
Writes tests/perf/results/payloads.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from function.core.store import ModelStore
from tests.perf.bench import BODIES, KEY, PERF, metrics_page, one_client, start_modelrun, warmed_up
from training.__main__ import main as training

GOAL_CPU_RATIO = 1.05


def records_written(folder: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in folder.glob("*/*.jsonl"))


def dropped(page: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines()
               if line.startswith("modelrun_payload_dropped_total{"))  # fmt: skip


def recording_cost(store_uri: str, requests: int = 20_000) -> dict[str, float]:
    """The work one recorded one-row request adds, timed in this process with the Iris model as
    served: the request path's share (the sample's hash and the queue) and the writer's (the
    record, redaction and JSON, the two writes), in CPU microseconds per request. Steadier than
    the servers' CPU on a loaded machine: the same work, without the load's noise."""
    import io
    import time

    import numpy as np

    from function.core.config import load_config
    from function.core.model import load_model
    from function.core.predict import Prediction
    from function.service.payloads import Answered, Payloads, client_of

    config = load_config({"MODEL_URI": store_uri, "API_KEYS": KEY, "PAYLOAD_SAMPLE_RATE": "1",
                          "ALLOW_UNSIGNED_MODELS": "true"})  # fmt: skip
    model = load_model(ModelStore(store_uri), "v1", None)
    X = np.array([[5.1, 3.5, 1.4, 0.2]])
    prediction = Prediction(["setosa"], np.array([[0.97, 0.02, 0.01]]), ["setosa", "versicolor",
                                                                        "virginica"])  # fmt: skip
    path = write = 0.0
    with tempfile.TemporaryDirectory() as folder:
        writer = Payloads(config, lambda reason: None, stdout=io.StringIO)
        writer.folder = Path(folder)
        client = client_of("ab" * 32)
        for block in range(requests // 1000):
            started = time.process_time()
            for i in range(1000):
                request_id = f"{block:016x}{i:016x}"
                if writer.sampled(request_id):
                    writer.submit(Answered(request_id, time.time(), model, "answer", "v2",
                                           "/v2/models/iris/infer", 200, "ok", 1.0, client, X,
                                           prediction))  # fmt: skip
            flushed = time.process_time()
            assert writer.flush() == 1000
            path += flushed - started
            write += time.process_time() - flushed
    return {
        "request_path_us": round(path / requests * 1e6, 2),
        "writer_us": round(write / requests * 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    pairs, seconds = (2, 8.0) if args.quick else (4, 20.0)
    headers = {"X-API-Key": KEY}
    with tempfile.TemporaryDirectory(prefix="modelrun-payloads-bench-") as folder:
        tmp = Path(folder)
        assert training(["train", "--out", str(tmp / "iris"), "--no-report"]) == 0
        store = ModelStore((tmp / "store" / "iris").as_uri())
        store.promote(store.publish(tmp / "iris", "v1"))
        cost = recording_cost(store.uri)
        print(json.dumps({"in_process_cpu_us_per_recorded_request": cost}), flush=True)
        rounds: list[dict[str, float | str]] = []
        for pair in range(pairs):
            order = ("1", "0") if pair % 2 == 0 else ("0", "1")
            for rate in order:
                records = tmp / f"records-{pair}-{rate}"
                extra = {"PAYLOAD_SAMPLE_RATE": rate, "PAYLOAD_DIR": str(records),
                         "ALLOW_UNSIGNED_MODELS": "true"}  # fmt: skip
                server = start_modelrun(store.uri, "iris", "", tmp, extra=extra)
                try:
                    warmed_up(server, headers, BODIES["lr"])
                    c1, cpu = one_client(server, headers, seconds, tmp)
                    page = metrics_page(server, headers)
                finally:
                    server.stop()  # SIGTERM: the writer writes what it holds
                load = os.getloadavg()[0]
                row: dict[str, float | str] = {
                    "pair": pair + 1, "rate": rate, "cpu_ms_per_request": round(cpu, 4),
                    "p50_ms": c1["p50_ms"], "requests": c1["requests"],
                    "records": records_written(records), "dropped": dropped(page),
                    "load_1m": round(load, 2),
                }  # fmt: skip
                rounds.append(row)
                print(json.dumps(row), flush=True)
                if rate == "1" and row["records"] < c1["requests"]:
                    raise RuntimeError(f"fewer records than requests: {row}")
    on = [r for r in rounds if r["rate"] == "1"]
    off = [r for r in rounds if r["rate"] == "0"]
    ratios = [float(a["cpu_ms_per_request"]) / float(b["cpu_ms_per_request"])
              for a, b in zip(on, off, strict=True)]  # fmt: skip
    p50 = [float(a["p50_ms"]) / float(b["p50_ms"]) for a, b in zip(on, off, strict=True)]
    summary = {
        "cpu_ms_per_request_on": statistics.median(float(r["cpu_ms_per_request"]) for r in on),
        "cpu_ms_per_request_off": statistics.median(float(r["cpu_ms_per_request"]) for r in off),
        "cpu_ratio_median": round(statistics.median(ratios), 3),
        "p50_ratio_median": round(statistics.median(p50), 3),
        "goal_cpu_ratio": GOAL_CPU_RATIO,
        "in_process_cpu_us_per_recorded_request": cost,
    }
    print(json.dumps(summary), flush=True)
    results = PERF / "results"
    results.mkdir(exist_ok=True)
    (results / "payloads.json").write_text(json.dumps({"rounds": rounds, **summary}, indent=2))


if __name__ == "__main__":
    main()
