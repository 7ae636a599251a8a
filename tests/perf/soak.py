"""A bounded soak: N requests against the service started as the container starts it.

    make soak                 # 100,000 requests
    make soak REQUESTS=20000

Reports errors (any unexpected status), throughput, latency percentiles, and the serving
worker's RSS after warm-up and at the end. One request in ten is deliberately invalid (422),
so the error path is soaked too. Run on demand, not in `make test`.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from function.core.store import ModelStore
from local import container
from local.mirror import ROOT, free_port, process, wait_for
from training.__main__ import main as training

KEY = "soak-key-0123456789abcdef"
GOOD = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}).encode()
BAD = json.dumps({"instances": [[5.1, 3.5, "x", 0.2]]}).encode()


def worker_pid(master: int) -> int:
    """The gunicorn worker serving requests: the master's only child."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(children[0])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def client(port: int, count: int, latencies: list[float], errors: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json", "X-API-Key": KEY}
    for i in range(count):
        bad = i % 10 == 9
        started = time.perf_counter()
        try:
            conn.request("POST", "/predict", body=BAD if bad else GOOD, headers=headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as e:
            errors.append(f"{type(e).__name__}: {e}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            continue
        latencies.append(time.perf_counter() - started)
        if response.status != (422 if bad else 200):
            errors.append(f"status {response.status}")
    conn.close()


def run(port: int, total: int, threads: int) -> tuple[list[float], list[str], float]:
    latencies: list[float] = []
    errors: list[str] = []
    share = total // threads
    workers = [
        threading.Thread(target=client, args=(port, share, latencies, errors))
        for _ in range(threads)
    ]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return latencies, errors, time.perf_counter() - started


@contextlib.contextmanager
def served(tmp: Path, **settings: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A trained Iris served as the container serves it, one worker (one process to watch):
    yield its port and master process once it is ready."""
    artifact = tmp / "artifact"
    if training(["train", "--out", str(artifact)]) != 0:
        raise SystemExit("training failed")
    store = ModelStore((tmp / "store" / "iris").as_uri())
    store.promote(store.publish(artifact))
    port = free_port()
    env = {
        **os.environ,
        **container.environment(),
        "MODEL_URI": store.uri,
        "API_KEYS": KEY,
        "ALLOW_UNSIGNED_MODELS": "true",  # the versions here are published unsigned
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "HOME": str(tmp),
        "WORKERS": "1",  # one process to watch for growth
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_PER_SECOND": "0",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **settings,
    }
    with process(container.command(), tmp / "service.log", env) as server:
        wait_for(f"http://127.0.0.1:{port}/ready", timeout=60)
        yield port, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=int(os.environ.get("REQUESTS", 100_000)))
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, served(Path(tmp)) as (port, server):
        pid = worker_pid(server.pid)
        warmup = min(5_000, args.requests // 10)
        run(port, warmup, args.threads)
        rss_start = rss_mb(pid)
        latencies, errors, seconds = run(port, args.requests, args.threads)
        rss_end = rss_mb(pid)
        alive = server.poll() is None
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    result = {
        "requests": len(latencies) + len([e for e in errors if not e.startswith("status")]),
        "unexpected": len(errors),
        "first_errors": errors[:5],
        "seconds": round(seconds, 1),
        "requests_per_second": round(len(latencies) / seconds, 1),
        "latency_ms": {"p50": round(q[49] * 1000, 2), "p99": round(q[98] * 1000, 2)},
        "rss_mb_after_warmup": round(rss_start, 1),
        "rss_mb_at_end": round(rss_end, 1),
        "rss_growth_mb": round(rss_end - rss_start, 1),
        "process_alive": alive,
        "threads": args.threads,
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "tests" / "perf" / "results"
    out.mkdir(exist_ok=True)
    (out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    if errors or not alive:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
