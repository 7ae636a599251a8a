"""The model's lifecycle in one process: load it on cold start, then follow current.json.

`ModelLoader.run` is the body of the process's "model-loader" thread. It loads the configured
version, retrying with bounded backoff until it works (the instance is not ready meanwhile, and
`reason` says why), then, with MODEL_REFRESH_SECONDS, polls current.json and swaps in a newly
promoted (or rolled back) version once it is verified and warmed. Requests read `model` once: it is
replaced by one assignment, so a request finishes on the model it started with.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable

from function.config import Config
from function.errors import ModelrunError, StoreUnavailable
from function.model import LoadedModel, load_model
from function.store import ModelStore
from function.telemetry import Telemetry

log = logging.getLogger("modelrun.loader")

RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0


class ModelLoader:
    """Holds the served model; its thread loads it and keeps it current."""

    def __init__(
        self,
        config: Config,
        store: ModelStore,
        telemetry: Telemetry,
        on_first_load: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.store = store
        self.telemetry = telemetry
        self.model: LoadedModel | None = None
        self._on_first_load = on_first_load
        self._reason = "the model is not loaded yet"  # written by the loader thread only
        self._stop = threading.Event()

    @property
    def reason(self) -> str:
        """Why no model is served yet (the last load's failure, or that none was tried)."""
        return self._reason

    def run(self) -> None:
        """Load the model, then follow current.json if asked to; return when stopped."""
        self._cold_start()
        if self.config.model_refresh_seconds > 0:
            self._follow_current()

    def stop(self) -> None:
        self._stop.set()

    def _cold_start(self) -> None:
        """Load the configured version, retrying with bounded backoff until it works."""
        delay = RETRY_FIRST_SECONDS
        while not self._stop.is_set():
            model, _ = self._try_load("model not loaded")
            if model is not None:
                self.model = model
                self._on_first_load()
                return
            log.info("retrying the model load in %.1fs", delay)
            self._stop.wait(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    def _follow_current(self) -> None:
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
                self._reason = reason
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
