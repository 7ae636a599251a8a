"""Per-key token buckets: each instance lets a key spend `burst` at once and `rate` a second."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from function.errors import TooManyRequests


class TokenBuckets:
    """One bucket per caller identity (a key's digest, never the key); rate 0 turns it off.

    rate and burst are the instance's; with several worker processes each keeps its own
    buckets at 1/workers of both, so together they allow about the instance's rate.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        workers: int = 1,
    ) -> None:
        self.instance_rate, self.instance_burst = rate, burst
        self.rate = rate / workers
        self.burst = max(1.0, burst / workers)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # identity -> (tokens, last refill)
        self._lock = threading.Lock()

    def take(self, identity: str) -> None:
        """Spend one token, or raise 429 saying how long until one is back."""
        if self.rate <= 0:
            return
        with self._lock:
            now = self.clock()
            tokens, last = self._buckets.get(identity, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[identity] = (tokens, now)
                wait = (1 - tokens) / self.rate
                raise TooManyRequests(
                    f"rate limit of {self.instance_rate:g} requests/s (burst "
                    f"{self.instance_burst}) per key exceeded; retry in {wait:.2f}s",
                    retry_after=wait,
                )
            self._buckets[identity] = (tokens - 1, now)
