"""Stop a request that runs past the time limit (CLOUD_RUN_TIMEOUT_SECONDS), cheaply.

functions-framework's own limit (THREADED_TIMEOUT_ENABLED) starts a timer thread for every
request: measured here, 40 % more CPU per request. This keeps every request's deadline in one
table that one watchdog thread per process reads ten times a second, and stops an overdue
request the same way: it raises DeadlineExceeded in the request's thread, which sees it at its
next Python instruction (a call into C, such as a model's, finishes first).
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

TICK_SECONDS = 0.1


class DeadlineExceeded(Exception):
    """Raised inside a request's thread once it has run past the time limit."""


class Deadlines:
    """The deadlines of the requests in flight in this process, and their watchdog."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._due: dict[int, float] = {}  # thread id -> monotonic deadline
        self._lock = threading.Lock()
        self._watching_in: int | None = None  # the process whose watchdog runs (forks lose it)

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Run the block under the time limit (no limit when seconds is 0)."""
        if self.seconds <= 0:
            yield
            return
        if self._watching_in != os.getpid():
            self._start_watchdog()
        thread = threading.get_ident()
        with self._lock:
            self._due[thread] = time.monotonic() + self.seconds
        try:
            yield
        finally:
            with self._lock:  # once removed, the watchdog can no longer raise in this thread
                self._due.pop(thread, None)

    def _start_watchdog(self) -> None:
        with self._lock:
            if self._watching_in == os.getpid():
                return
            self._watching_in = os.getpid()
            threading.Thread(target=self._watch, name="request-deadlines", daemon=True).start()

    def _watch(self) -> None:
        while True:
            time.sleep(TICK_SECONDS)
            now = time.monotonic()
            with self._lock:
                for thread in [t for t, due in self._due.items() if due <= now]:
                    del self._due[thread]
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(
                        ctypes.c_ulong(thread), ctypes.py_object(DeadlineExceeded)
                    )
