"""Stop a request that runs past the time limit (CLOUD_RUN_TIMEOUT_SECONDS), cheaply and safely.

functions-framework's own limit (THREADED_TIMEOUT_ENABLED) starts a timer thread for every
request: measured here, 40 % more CPU per request. This keeps every request's deadline in one
table that one watchdog thread per process reads ten times a second.

How an overdue request is stopped, and where it may be. Pure-Python model code (a slow custom
estimator) can only be stopped from outside its thread: the watchdog raises DeadlineExceeded in
it with PyThreadState_SetAsyncExc, which lands at whatever Python instruction the thread runs
next. Landing inside code that keeps shared state (the micro-batcher's in-flight count, a rate
limit bucket, a telemetry counter) would corrupt it for every later request, so the exception is
only ever sent into an *interruptible* region, and the code that may run it is exactly this:

- the work inside `interruptible()`: parsing a request's rows and calling the model, pure work
  on the request's own data (function/service/app.py, function/service/service.py wrap those two
  and nothing
  else);
- `interruptible()`'s own exit, up to the point where it cancels a sent but not yet raised
  exception under the watchdog's lock. That code touches only this module's per-thread flag,
  and a flag left set is harmless: the watchdog sends at most one exception per request (it
  drops the deadline as it sends), and `guard()` resets the flag when the thread's next request
  begins.

Everywhere else a request that is overdue is stopped the ordinary way: `interruptible()` raises
DeadlineExceeded itself on entry when the deadline has passed. A call into C (most of a
scikit-learn model) finishes before any exception is raised, as before.
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

    def __init__(self, seconds: float, tick: float = TICK_SECONDS) -> None:
        self.seconds = seconds
        self.tick = tick
        self._due: dict[int, float] = {}  # thread id -> monotonic deadline
        self._open: set[int] = set()  # threads inside an interruptible region
        self._lock = threading.Lock()
        self._watching_in: int | None = None  # the process whose watchdog runs (forks lose it)

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Run one request under the time limit (no limit when seconds is 0)."""
        if self.seconds <= 0:
            yield
            return
        if self._watching_in != os.getpid():
            self._start_watchdog()
        thread = threading.get_ident()
        with self._lock:
            self._due[thread] = time.monotonic() + self.seconds
            self._open.discard(thread)  # a flag an earlier request left behind
        try:
            yield
        finally:
            with self._lock:  # once removed, the watchdog can no longer raise in this thread
                self._due.pop(thread, None)

    def interruptible(self) -> _Interruptible:
        """Run pure work on the request's own data, which the watchdog may stop part-way."""
        return _Interruptible(self)

    def _start_watchdog(self) -> None:
        with self._lock:
            if self._watching_in == os.getpid():
                return
            self._watching_in = os.getpid()
            threading.Thread(target=self._watch, name="request-deadlines", daemon=True).start()

    def _watch(self) -> None:
        while True:
            time.sleep(self.tick)
            now = time.monotonic()
            with self._lock:
                overdue = [t for t, due in self._due.items() if due <= now and t in self._open]
                for thread in overdue:
                    del self._due[thread]  # one exception per request, at most
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(
                        ctypes.c_ulong(thread), ctypes.py_object(DeadlineExceeded)
                    )


class _Interruptible:
    """`with deadlines.interruptible():` — a plain class, not a generator: its exit is a few
    instructions of this module's own, with nothing to finish later (a generator left behind by
    an exception would run its `finally` whenever it is collected, in any thread)."""

    def __init__(self, deadlines: Deadlines) -> None:
        self._deadlines = deadlines
        self._thread = 0

    def __enter__(self) -> None:
        deadlines = self._deadlines
        thread = threading.get_ident()
        with deadlines._lock:
            due = deadlines._due.get(thread)
            if due is None:  # no limit, or not a request's thread (the batcher's)
                return
            if time.monotonic() >= due:
                del deadlines._due[thread]
                raise DeadlineExceeded
            deadlines._open.add(thread)
            self._thread = thread

    def __exit__(self, *exc: object) -> None:
        if not self._thread:
            return
        with self._deadlines._lock:
            self._deadlines._open.discard(self._thread)
            # Sent, but not raised yet: cancel it, or it would land in the caller's code.
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread), None)
