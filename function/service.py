"""The running service's state: its model, its keys, and the threads that load them."""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any

import numpy as np
from werkzeug.datastructures import Headers

from function.auth import KeyRing, SecretKeySource, presented_key
from function.batching import MicroBatcher, Run
from function.config import Config
from function.deadline import Deadlines
from function.errors import ModelrunError, NotReady, StoreUnavailable
from function.model import LoadedModel, load_model
from function.predict import run_model
from function.ratelimit import TokenBuckets
from function.store import ModelStore
from function.telemetry import prometheus_telemetry
from function.workers import Workers

log = logging.getLogger("modelrun.service")

RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
ANONYMOUS = "anonymous"  # the one caller identity when keys are off (development)


class Service:
    """Holds what requests read; start() loads the model and keys in the background.

    `model` is replaced by one assignment (atomic in Python): a request reads it once and
    finishes on that model even if a refresh swaps in another meanwhile.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = ModelStore(config.model_uri, timeout=config.store_timeout_seconds)
        if config.model_runtime != "sklearn":
            # Most versions carry a verified model.onnx: import its runtime here, in gunicorn's
            # master, so that the workers it forks share the memory (about 10 MB each).
            import onnxruntime  # noqa: F401
        self.keys = KeyRing(config.api_keys) if config.api_keys else KeyRing()
        self.secret = SecretKeySource(config, self.keys) if config.api_keys_secret else None
        self.deadlines = Deadlines(config.request_timeout_seconds)
        self.limits = TokenBuckets(
            config.rate_limit_per_second, config.rate_limit_burst, workers=config.workers
        )
        self.model: LoadedModel | None = None
        self.reason = "the model is not loaded yet"
        self._started = False
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self.telemetry, self.metrics_page = prometheus_telemetry(self.model_state)
        self.workers: Workers | None = None
        if config.workers > 1:  # one page and one readiness for the instance, whichever worker
            self.workers = Workers(
                config.workers, self.metrics_page, lambda: self._own_readiness() is None
            )
            self.metrics_page = self.workers.page
        deadlines = self.deadlines

        def run_in_time(estimator: object, X: np.ndarray, probabilities: bool) -> Any:
            with deadlines.interruptible():  # a slow model may be stopped here, and only here
                return run_model(estimator, X, probabilities)

        self.run_model: Run = run_in_time
        if config.micro_batching:
            batcher = MicroBatcher(
                run_in_time,
                config.batch_max_rows,
                config.batch_max_wait_ms / 1000,
                self.telemetry.batched,
            )
            self.run_model = batcher.run

    def start(self) -> None:
        """Start loading (once per process; called after fork and on the first request)."""
        if self._started:  # every request calls this: no lock once started
            return
        with self._start_lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._run_model, name="model-loader", daemon=True).start()
        if self.workers:
            threading.Thread(
                target=self.workers.run, args=(self._stop,), name="worker-pages", daemon=True
            ).start()
        if self.secret:
            threading.Thread(target=self.secret.run, name="key-refresher", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self.secret:
            self.secret.stop()

    def require_model(self) -> LoadedModel:
        """Return the loaded model, or raise 503 with the reason it is not there."""
        model = self.model
        if model is None:
            raise NotReady(self.reason)
        return model

    def authorize(self, headers: Headers) -> None:
        """Raise 401 without a valid key (unless keys are off in development), 429 over the rate."""
        identity = (
            self.keys.check(presented_key(headers)) if self.config.auth_enabled else ANONYMOUS
        )
        self.limits.take(identity)

    def readiness(self) -> str | None:
        """Return why the instance cannot serve yet, or None when it can."""
        reason = self._own_readiness()
        if reason is None and self.workers and not self.workers.all_ready():
            return "another worker process of this instance is still loading"
        return reason

    def _own_readiness(self) -> str | None:
        if self.model is None:
            return self.reason
        if self.config.auth_enabled and not self.keys.loaded:
            return "API keys are not loaded yet"
        return None

    def model_state(self) -> tuple[dict[str, str] | None, bool]:
        """Return the served model's identity (None before one is loaded) and readiness."""
        model = self.model
        identity = (
            {
                "model.name": model.name,
                "model.version": model.version,
                "model.sha256": model.sha256[:12],
                "model.runtime": model.runtime,
            }
            if model
            else None
        )
        return identity, self._own_readiness() is None  # this worker: pages merge

    def _run_model(self) -> None:
        self._cold_start()
        if self.config.model_refresh_seconds > 0:
            self._refresh()

    def _cold_start(self) -> None:
        """Load the configured version, retrying with bounded backoff until it works."""
        delay = RETRY_FIRST_SECONDS
        while not self._stop.is_set():
            model, _ = self._try_load("model not loaded")
            if model is not None:
                self.model = model
                if self.workers:  # now, not at the next page write: /ready waits for this mark
                    self.workers.mark_if_ready()
                return
            log.info("retrying the model load in %.1fs", delay)
            self._stop.wait(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    def _refresh(self) -> None:
        """Poll current.json; verify and warm a new current version, then swap it in.

        A candidate that fails verification is never served and not tried again until
        current.json changes; a store that cannot be reached is simply asked again next time.
        """
        refused: str | None = None  # current.json's token when its version was refused
        while not self._stop.wait(self.config.model_refresh_seconds):
            served = self.model
            try:
                pointer, token = self.store.current()
            except ModelrunError as e:
                log.warning("cannot read current.json to refresh the model: %s", e)
                self.telemetry.error("model_refresh")
                continue
            if pointer is None or token == refused or served is None:
                continue
            if (pointer["version"], pointer["sha256"]) == (served.version, served.sha256):
                continue
            candidate, error = self._try_load(f"candidate {pointer['version']} refused")
            if candidate is None:
                self.telemetry.error("model_refresh")
                if not isinstance(error, StoreUnavailable):
                    refused = token
                continue
            self.model = candidate
            log.info(
                "now serving %s version %s (was %s)",
                candidate.name,
                candidate.version,
                served.version,
                extra={"fields": {"version": candidate.version, "previous": served.version}},
            )

    def _try_load(self, failure: str) -> tuple[LoadedModel | None, Exception | None]:
        """Load what the configuration names; on failure log and count it, and return why."""
        started = time.perf_counter()
        try:
            model = load_model(
                self.store,
                self.config.model_version,
                self.config.model_sha256,
                self.config.allow_pickle,
                self.config.model_runtime,
            )
        except Exception as e:  # a thread boundary: every failure is reported, none kills it
            reason = f"{e.title}: {e}" if isinstance(e, ModelrunError) else f"unexpected {e!r}"
            if self.model is None:
                self.reason = reason
            log.error("%s: %s", failure, reason, exc_info=not isinstance(e, ModelrunError))
            self.telemetry.model_loaded(time.perf_counter() - started, None, "failure")
            self.telemetry.error("model_load")
            return None, e
        self.telemetry.model_loaded(model.load_seconds, model.version, "success")
        # What is loaded now (libraries, the model) lives as long as the process: out of the
        # cyclic collector's sight, a full collection no longer walks it. Such a collection,
        # set off by a request that allocates much (a 10,000-row batch), took up to 100 ms.
        gc.freeze()
        log.info(
            "model %s version %s verified and loaded in %.3fs (runtime %s)",
            model.name,
            model.version,
            model.load_seconds,
            model.runtime,
            extra={"fields": {"model": model.name, "version": model.version}},
        )
        return model, None
