"""`make attack`: issue 35's HTTP attacks while normal clients predict, against the service
started as the container starts it (one worker, the image's 40 threads).

    make attack                # REQUESTS=10000 normal predictions before, and again during
    python -m tests.perf.attack --attackers 1

Reports the worker's RSS before and at its peak during the attacks (goal: within 64 MiB), the
normal clients' p99 before and during (goal: within 2x), their unexpected answers (goal: none),
and each attack's answers. The attacks (tests/attacks.py, the table tests/test_attacks.py
asserts) loop on ATTACKERS threads, beside a slowloris holding SLOW half-sent request heads
(5x the threads) and one stalled keyed body. Results: tests/perf/results/attack.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as EventLike
from pathlib import Path

from local.mirror import ROOT
from tests.attacks import ATTACKS, JSON, KEYED, LIMIT, half_sent_heads, post, send
from tests.conftest import KEY as ATTACK_KEY
from tests.perf.soak import KEY, rss_mb, run, served, worker_pid

CLIENTS = 4  # normal clients, each on a kept-alive connection
ATTACKERS = 4  # at once, as issue 35's four 8 MiB request lines
SLOW = 200  # half-sent heads held through the attack: 5x the image's 40 threads
STALLED = post("/predict", JSON, KEYED, b"Content-Length: 100\r\n\r\n")


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(sorted(latencies), n=100)[98] * 1000


def attack(
    port: int, attackers: int, stop: EventLike, results: Queue[dict[str, dict[str, int]]]
) -> None:
    """Send the table's attacks in turn on `attackers` threads until stopped; put the answers'
    counts on the queue. Run in a process of its own: the attackers' Python must not share
    the normal clients' GIL, or their p99 would measure this process, not the service."""
    answers: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)

    def loop() -> None:
        while not stop.is_set():
            for item in ATTACKS:
                try:
                    status = str(send(port, item.head, item.rest).status)
                except (OSError, AssertionError) as e:
                    status = type(e).__name__
                answers[item.name][status] += 1

    threads = [threading.Thread(target=loop) for _ in range(attackers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put({name: dict(counts) for name, counts in answers.items()})


def watch(pid: int, stop: EventLike, peak: list[float]) -> None:
    while not stop.wait(0.05):
        peak.append(rss_mb(pid))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=int(os.environ.get("REQUESTS", 10_000)))
    parser.add_argument("--attackers", type=int, default=ATTACKERS, help="attacking threads")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        served(Path(tmp), MAX_REQUEST_BYTES=str(LIMIT), API_KEYS=f"{KEY},{ATTACK_KEY}") as (
            port,
            server,
        ),
    ):
        pid = worker_pid(server.pid)
        run(port, min(2_000, args.requests // 10), CLIENTS)  # warm up
        rss_before = rss_mb(pid)
        before, before_errors, before_seconds = run(port, args.requests, CLIENTS)

        stop = multiprocessing.Event()
        results: Queue[dict[str, dict[str, int]]] = multiprocessing.Queue()
        attackers = multiprocessing.Process(
            target=attack, args=(port, args.attackers, stop, results)
        )
        peak = [rss_mb(pid)]
        held = half_sent_heads(port, SLOW)
        started = time.monotonic()
        stalled: list[int] = []
        threads = [
            threading.Thread(target=lambda: stalled.append(send(port, STALLED, guard=30).status)),
            threading.Thread(target=watch, args=(pid, stop, peak)),
        ]
        attackers.start()
        for thread in threads:
            thread.start()
        during, during_errors, during_seconds = run(port, args.requests, CLIENTS)
        stop.set()
        seconds = time.monotonic() - started
        answers = results.get()
        attackers.join()
        for thread in threads:
            thread.join()
        for sock in held:
            sock.close()
        alive = server.poll() is None
    result = {
        "normal_requests": args.requests,
        "normal_clients": CLIENTS,
        "attacking_threads": args.attackers,
        "attack_seconds": round(seconds, 1),
        "worker_rss_mb": {
            "before": round(rss_before, 1),
            "peak_during": round(max(peak), 1),
            "growth": round(max(peak) - rss_before, 1),
            "goal": "growth within 64",
        },
        "normal_p99_ms": {
            "before": round(p99(before), 2),
            "during": round(p99(during), 2),
            "ratio": round(p99(during) / p99(before), 2),
            "goal": "ratio within 2",
        },
        "normal_requests_per_second": {
            "before": round(len(before) / before_seconds, 1),
            "during": round(len(during) / during_seconds, 1),
        },
        "normal_unexpected": len(before_errors) + len(during_errors),
        "first_errors": (before_errors + during_errors)[:5],
        "attacks_per_second": round(sum(sum(c.values()) for c in answers.values()) / seconds, 1),
        "attacks": answers | {"a keyed body that stalls": {str(s): 1 for s in stalled}},
        "expected": {a.name: a.status for a in ATTACKS} | {"a keyed body that stalls": 408},
        "half_sent_heads_held": SLOW,
        "process_alive": alive,
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "tests" / "perf" / "results"
    out.mkdir(exist_ok=True)
    (out / "attack.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
