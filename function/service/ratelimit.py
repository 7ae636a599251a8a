"""Token buckets: each instance lets a key spend `burst` at once and `rate` a second, and a client
address send so many wrong keys (FAILED_KEYS_BURST at once, FAILED_KEYS_PER_SECOND after)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from function.core.errors import TooManyRequests

FAILED_KEYS_PER_SECOND = 1.0
FAILED_KEYS_BURST = 10
MAX_TRACKED = 10_000  # identities kept; past it, those whose bucket is full again are dropped


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
        per: str = "key",
    ) -> None:
        self.instance_rate, self.instance_burst = rate, burst
        self.rate = rate / workers
        self.burst = max(1.0, burst / workers)
        self.clock = clock
        self.per = per
        self._buckets: dict[str, tuple[float, float]] = {}  # identity -> (tokens, last refill)
        self._lock = threading.Lock()

    def take(self, identity: str, cost: int = 1) -> None:
        """Spend `cost` tokens (at most a full bucket), or raise 429 saying how long until they
        are back."""
        if self.rate <= 0:
            return
        with self._lock:
            now = self.clock()
            tokens, last = self._buckets.get(identity, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            spend = min(float(cost), self.burst)  # a smaller bucket than the cost still lets it by
            if tokens < spend:
                self._buckets[identity] = (tokens, now)
                wait = (spend - tokens) / self.rate
                raise TooManyRequests(
                    f"rate limit of {self.instance_rate:g} requests/s (burst "
                    f"{self.instance_burst}) per {self.per} exceeded; retry in {wait:.2f}s",
                    retry_after=wait,
                )
            self._buckets[identity] = (tokens - spend, now)
            if len(self._buckets) > MAX_TRACKED:  # many addresses must not grow memory forever
                self._forget_full(now)

    def _forget_full(self, now: float) -> None:
        self._buckets = {
            who: (tokens, last)
            for who, (tokens, last) in self._buckets.items()
            if tokens + (now - last) * self.rate < self.burst
        }
