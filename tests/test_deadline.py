"""The request time limit: one watchdog thread stops overdue requests, and only those."""

from __future__ import annotations

import threading
import time

import pytest

from function.deadline import TICK_SECONDS, DeadlineExceeded, Deadlines


def busy(seconds: float) -> None:
    """Pure-Python work, as a slow model's: an exception can reach it between instructions."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_an_overdue_request_is_stopped_in_its_own_thread() -> None:
    deadlines = Deadlines(0.3)
    started = time.monotonic()

    with pytest.raises(DeadlineExceeded), deadlines.guard():
        busy(5)

    assert 0.3 <= time.monotonic() - started < 0.3 + 5 * TICK_SECONDS


def test_a_request_in_time_is_never_interrupted_later() -> None:
    deadlines = Deadlines(0.2)

    with deadlines.guard():
        busy(0.05)
    busy(0.2 + 3 * TICK_SECONDS)  # past its deadline, outside the guard: nothing arrives


def test_only_the_overdue_thread_is_stopped() -> None:
    deadlines = Deadlines(0.3)
    outcomes: dict[str, str] = {}

    def run(name: str, work: float) -> None:
        try:
            with deadlines.guard():
                busy(work)
            outcomes[name] = "done"
        except DeadlineExceeded:
            outcomes[name] = "stopped"

    threads = [threading.Thread(target=run, args=("quick", 0.05)),
               threading.Thread(target=run, args=("slow", 3))]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert outcomes == {"quick": "done", "slow": "stopped"}


def test_no_limit_starts_no_watchdog() -> None:
    before = {t.name for t in threading.enumerate()}
    deadlines = Deadlines(0)

    with deadlines.guard():
        busy(0.05)

    assert deadlines._watching_in is None
    assert {t.name for t in threading.enumerate()} == before
