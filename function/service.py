"""The running service's state: its model, its keys, and the threads that load them."""

from __future__ import annotations

import logging
import threading
import time

from werkzeug.datastructures import Headers

from function.auth import KeyRing, SecretKeySource, presented_key
from function.config import Config
from function.errors import ModelrunError, NotReady
from function.model import LoadedModel, load_model
from function.store import ModelStore
from function.telemetry import prometheus_telemetry

log = logging.getLogger("modelrun.service")

RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0


class Service:
    """Holds what requests read; start() loads the model and keys in the background."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = ModelStore(config.model_uri, timeout=config.store_timeout_seconds)
        self.keys = KeyRing(config.api_keys) if config.api_keys else KeyRing()
        self.secret = SecretKeySource(config, self.keys) if config.api_keys_secret else None
        self.model: LoadedModel | None = None
        self.reason = "the model is not loaded yet"
        self._started = False
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self.telemetry, self.metrics_page = prometheus_telemetry(self.model_state)

    def start(self) -> None:
        """Start loading (once per process; called after fork and on the first request)."""
        with self._start_lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._load_model, name="model-loader", daemon=True).start()
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
        """Raise 401 unless the request carries a valid key (unless keys are off in development)."""
        if self.config.auth_enabled:
            self.keys.check(presented_key(headers))

    def readiness(self) -> str | None:
        """Return why the service cannot serve yet, or None when it can."""
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
                "model.sha256": str(model.metadata["sha256"])[:12],
            }
            if model
            else None
        )
        return identity, self.readiness() is None

    def _load_model(self) -> None:
        delay = RETRY_FIRST_SECONDS
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                model = load_model(self.store, self.config.model_version, self.config.model_sha256)
            except ModelrunError as e:
                self.reason = f"{e.title}: {e}"
                log.error("model not loaded, retrying in %.1fs: %s", delay, self.reason)
            except Exception as e:  # a thread boundary: report, never die silently
                self.reason = f"unexpected {type(e).__name__}: {e}"
                log.exception("model not loaded, retrying in %.1fs", delay)
            else:
                self.telemetry.model_loaded(model.load_seconds, model.version, "success")
                self.model = model
                log.info(
                    "model %s version %s loaded in %.3fs",
                    model.name,
                    model.version,
                    model.load_seconds,
                    extra={"fields": {"model": model.name, "version": model.version}},
                )
                return
            self.telemetry.model_loaded(time.perf_counter() - started, None, "failure")
            self.telemetry.error("model_load")
            self._stop.wait(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)
