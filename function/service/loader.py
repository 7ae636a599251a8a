"""The model's lifecycle in one process: load it on cold start, then follow the store.

`ModelLoader.run` is the body of the process's "model-loader" thread. It loads the configured
version, retrying with bounded backoff until it works (the instance is not ready meanwhile, and
`state.reason` says why), then, with MODEL_REFRESH_SECONDS, follows current.json and rollout.json
(function/service/followers.py, each follower keeping its own state between reads).

What requests read is `state`, one immutable snapshot (function/service/served.py): the model, a
rollout's candidate, readiness. Only this thread builds a new one, and publishes it with one
assignment, so a request that reads `state` once finishes on the model (and candidate) it started
with, and never sees one without the other.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import threading
import time
from collections.abc import Callable

from function.core.config import Config
from function.core.errors import ModelrunError
from function.core.model import LoadedModel, load_model
from function.core.store import ModelStore
from function.service.followers import CurrentFollower, RolloutFollower
from function.service.redaction import Redactor
from function.service.served import Served
from function.service.telemetry import Telemetry

log = logging.getLogger("modelrun.loader")

RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
JOIN_ATTEMPTS = 3  # a rollout read or loaded on cold start: at most 0.5 + 1 s more before ready


class ModelLoader:
    """Publishes what this process serves; its thread loads it and keeps it current."""

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
        self.state = Served()  # read by requests, once each; replaced whole by _publish
        # Only an instance that follows current.json takes part in rollouts: a pinned version
        # (MODEL_VERSION, MODEL_SHA256) is served alone.
        self.follows = config.model_version == "current" and not config.model_sha256
        self.current = CurrentFollower(store, telemetry, self._try_load)
        self.rollouts = RolloutFollower(config, store, telemetry, self._try_load)
        self._on_first_load = on_first_load
        self._publishing = threading.Lock()  # this thread's publications and stop()'s
        self._stop = threading.Event()

    def run(self) -> None:
        """Load the model, then follow current.json and rollout.json if asked to; return when
        stopped."""
        self._cold_start()
        if self.state.model is None:  # stopped before a load succeeded
            return
        if self.follows:
            self._publish(dataclasses.replace(self.state, reason="joining the rollout in progress"))
            self._join_rollout()
        self._publish(dataclasses.replace(self.state, ready=True))
        self._on_first_load()
        if self.config.model_refresh_seconds > 0:
            while not self._stop.wait(self.config.model_refresh_seconds):
                self._refresh()

    def stop(self) -> None:
        self._stop.set()
        self._publish()  # drops the candidate (and stops its shadow)

    def _cold_start(self) -> None:
        """Load the configured version, retrying with bounded backoff until it works."""
        delay = RETRY_FIRST_SECONDS
        while not self._stop.is_set():
            model, _ = self._try_load("model not loaded")
            if model is not None:
                self._publish(dataclasses.replace(self.state, model=model))
                return
            log.info("retrying the model load in %.1fs", delay)
            self._stop.wait(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    def _refresh(self) -> None:
        """Read both documents once, and publish what they make of the state: one snapshot."""
        served = self.state
        held = [served.candidate.model] if served.candidate else []
        if self.rollouts.retired is not None:
            held.append(self.rollouts.retired)
        served = self.current.follow(served, held)
        served, _ = self.rollouts.follow(served)
        self._publish(served)

    def _join_rollout(self) -> None:
        """On cold start, before the instance says it is ready: take part in a rollout, asking
        again a few times while the store cannot be reached, so that a canary's clients meet
        their version on a new instance too; then go on without (the refresh catches up)."""
        delay = RETRY_FIRST_SECONDS
        for _ in range(JOIN_ATTEMPTS):
            served, reached = self.rollouts.follow(self.state)
            self._publish(served)
            if reached or self._stop.wait(delay):
                return
            delay *= 2

    def _publish(self, new: Served | None = None) -> None:
        """Serve `new` from now on (one assignment), and stop the shadow of a candidate it no
        longer has. Once stopped, or once the candidate is the model (promoted), it has none."""
        with self._publishing:
            new = self.state if new is None else new
            candidate = new.candidate
            if candidate is not None and (
                self._stop.is_set()
                or (new.model is not None and candidate.model.version == new.model.version)
            ):
                new = dataclasses.replace(new, candidate=None)
            old, self.state = self.state, new
        dropped = old.candidate
        kept = new.candidate.shadow if new.candidate else None
        if dropped is not None and dropped.shadow is not None and dropped.shadow is not kept:
            dropped.shadow.stop()

    def _try_load(
        self, failure: str, version: str | None = None
    ) -> tuple[LoadedModel | None, Exception | None]:
        """Load what the configuration names (or a candidate's version, by id); on failure log
        and count it, and return why."""
        started = time.perf_counter()
        try:
            model = load_model(
                self.store,
                version or self.config.model_version,
                None if version else self.config.model_sha256,
                self.config.allow_pickle,
                self.config.model_runtime,
            )
            # Named features this version has not would be recorded in the clear if renamed.
            Redactor(self.config.payload_redact, None).check(
                model.feature_names, f"version {model.version}"
            )
        except Exception as e:  # a thread boundary: every failure is reported, none kills it
            reason = f"{e.title}: {e}" if isinstance(e, ModelrunError) else f"unexpected {e!r}"
            if self.state.model is None:
                self._publish(dataclasses.replace(self.state, reason=reason))
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
