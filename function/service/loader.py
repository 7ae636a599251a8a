"""The model's lifecycle in one process: load it on cold start, then follow the store.

`ModelLoader.run` is the body of the process's "model-loader" thread. It loads the configured
version, retrying with bounded backoff until it works (the instance is not ready meanwhile, and
`reason` says why), then, with MODEL_REFRESH_SECONDS, polls current.json and swaps in a newly
promoted (or rolled back) version once it is verified and warmed. Requests read `model` once: it is
replaced by one assignment, so a request finishes on the model it started with.

It follows rollout.json the same way (function/core/rollout.py): a rollout's candidate is loaded and
verified beside the current model (once on cold start, then at each refresh) and published as
`candidate`; in shadow it gets its own scorer (function/service/shadow.py). A promoted candidate is
kept
until current.json names it, then becomes `model` without being loaded again.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from function.core import rollout
from function.core.config import Config
from function.core.errors import ModelrunError, StoreUnavailable
from function.core.model import LoadedModel, load_model
from function.core.rollout import Rollout, check_fits
from function.core.store import ModelStore
from function.service.redaction import Redactor
from function.service.shadow import ShadowScorer
from function.service.telemetry import ROLLOUT_UNREADABLE, Telemetry

log = logging.getLogger("modelrun.loader")

RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
JOIN_ATTEMPTS = 3  # a rollout read or loaded on cold start: at most 0.5 + 1 s more before ready


@dataclass(frozen=True)
class Candidate:
    """A rollout's candidate, loaded and verified beside the current model."""

    model: LoadedModel
    rollout: Rollout
    shadow: ShadowScorer | None = None  # its scorer, in shadow mode


class ModelLoader:
    """Holds the served model (and a rollout's candidate); its thread loads them and keeps
    them current."""

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
        self.ready = False  # the model loaded, and a rollout in progress joined: serve
        self.candidate: Candidate | None = None  # a rollout in progress, loaded here
        # Only an instance that follows current.json takes part in rollouts: a pinned version
        # (MODEL_VERSION, MODEL_SHA256) is served alone.
        self.follows = config.model_version == "current" and not config.model_sha256
        self.refused: tuple[Rollout, str] | None = None  # a candidate not loaded, and why
        self.unreadable: str | None = None  # why rollout.json, last read, could not be used
        self._retired: LoadedModel | None = None  # a promoted candidate, until it is current
        self._refused_token: str | None = None  # rollout.json's token when refused
        self._on_first_load = on_first_load
        self._reason = "the model is not loaded yet"  # written by the loader thread only
        self._stop = threading.Event()

    @property
    def reason(self) -> str:
        """Why no model is served yet (the last load's failure, or that none was tried)."""
        return self._reason

    def candidate_state(self) -> dict[str, str] | None:
        """The rollout's candidate as the metrics show it: its version, mode and state."""
        shown = self.rollout()
        if shown is None or "version" not in shown:
            return None
        return {"model.version": shown["version"], "mode": shown["mode"], "state": shown["state"]}

    def rollout(self) -> dict[str, Any] | None:
        """The rollout this instance takes part in, as /model shows it (None when none); with
        `unreadable` when rollout.json could not be used at its last read."""
        shown: dict[str, Any] | None = None
        if self.candidate is not None:
            shown = {**dataclasses.asdict(self.candidate.rollout), "state": "loaded"}
        elif self.refused is not None:
            refused, reason = self.refused
            shown = {**dataclasses.asdict(refused), "state": "refused", "reason": reason}
        if self.unreadable is not None:
            shown = {**(shown or {"state": "unknown"}), "unreadable": self.unreadable}
        return shown

    def run(self) -> None:
        """Load the model, then follow current.json and rollout.json if asked to; return when
        stopped."""
        self._cold_start()
        if self.model is None:  # stopped before a load succeeded
            return
        if self.follows:
            self._reason = "joining the rollout in progress"
            self._join_rollout()
        self.ready = True
        self._on_first_load()
        if self.config.model_refresh_seconds > 0:
            refused: str | None = None
            while not self._stop.wait(self.config.model_refresh_seconds):
                refused = self._follow_current(refused)
                self._follow_rollout()

    def stop(self) -> None:
        self._stop.set()
        self._drop_candidate()

    def _cold_start(self) -> None:
        """Load the configured version, retrying with bounded backoff until it works."""
        delay = RETRY_FIRST_SECONDS
        while not self._stop.is_set():
            model, _ = self._try_load("model not loaded")
            if model is not None:
                self.model = model
                return
            log.info("retrying the model load in %.1fs", delay)
            self._stop.wait(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    def _follow_current(self, refused: str | None) -> str | None:
        """Read current.json once; verify and warm a new current version, then swap it in.
        Return current.json's token if its version was refused.

        A candidate that fails verification is never served and not tried again until
        current.json changes; a store that cannot be reached is simply asked again next time.
        """
        served = self.model
        try:
            pointer, token = self.store.current()
        except ModelrunError as e:
            log.warning("cannot read current.json to refresh the model: %s", e)
            self.telemetry.error("model_refresh")
            return refused
        if pointer is None or token == refused or served is None:
            return refused
        if (pointer["version"], pointer["sha256"]) == (served.version, served.sha256):
            return refused
        candidate = self._already_loaded(pointer)
        if candidate is not None:  # a rollout's candidate, promoted: loaded and verified already
            candidate = dataclasses.replace(candidate, promotion=pointer)
        else:
            candidate, error = self._try_load(f"candidate {pointer['version']} refused")
            if candidate is None:
                self.telemetry.error("model_refresh")
                return refused if isinstance(error, StoreUnavailable) else token
        self.model = candidate
        log.info(
            "now serving %s version %s (was %s)",
            candidate.name,
            candidate.version,
            served.version,
            extra={"fields": {"version": candidate.version, "previous": served.version}},
        )
        return refused

    def _already_loaded(self, pointer: dict[str, Any]) -> LoadedModel | None:
        """The rollout's candidate (in progress, or just promoted) if current.json names it."""
        held = self.candidate.model if self.candidate else self._retired
        if held is not None and (held.version, held.sha256) == (
            pointer["version"],
            pointer["sha256"],
        ):
            return held
        return None

    def _join_rollout(self) -> None:
        """On cold start, before the instance says it is ready: take part in a rollout, asking
        again a few times while the store cannot be reached, so that a canary's clients meet
        their version on a new instance too; then go on without (the refresh catches up)."""
        delay = RETRY_FIRST_SECONDS
        for _ in range(JOIN_ATTEMPTS):
            if self._follow_rollout() or self._stop.wait(delay):
                return
            delay *= 2

    def _follow_rollout(self) -> bool:
        """Read rollout.json once: load a new candidate, or let an ended rollout's go. Return
        False when the store could not be reached (for rollout.json or the candidate)."""
        served = self.model
        try:
            state, token = rollout.read_state(self.store)
        except ModelrunError as e:
            # Unreachable or corrupt alike: what is loaded (the candidate too) goes on serving.
            log.warning("cannot read rollout.json: %s", e)
            self.telemetry.error("model_refresh")
            if str(e) != self.unreadable:  # a change, counted once (model_refresh: each poll)
                self.telemetry.error(ROLLOUT_UNREADABLE)
            self.unreadable = str(e)
            return not isinstance(e, StoreUnavailable)
        self.unreadable = None
        active = rollout.active_in(state)
        if served is None or active is None or active.version == served.version:
            last = (state["history"] or [{}])[0]
            if self.candidate is not None:
                log.info("rollout of %s ended", self.candidate.model.version)
                # A promoted candidate waits here until current.json names it.
                promoted = last.get("outcome") == "promoted"
                self._retired = self.candidate.model if promoted else None
                self._drop_candidate()
            elif self._retired is not None and (
                served is None
                or served.version == self._retired.version  # swapped in
                or last.get("version") != self._retired.version  # another rollout since
            ):
                self._retired = None
            self.refused = None
            return True
        if self.candidate is not None and self.candidate.rollout == active:
            return True
        if token == self._refused_token:
            return True
        return self._start_candidate(active, token, served)

    def _start_candidate(self, active: Rollout, token: str | None, served: LoadedModel) -> bool:
        held = self.candidate.model if self.candidate else None
        if held is None or (held.version, held.sha256) != (active.version, active.sha256):
            try:
                check_fits(
                    served.model_bytes,
                    active.model_bytes,
                    self.config.model_memory_mb,
                    f"candidate {active.version}",
                )
            except ModelrunError as e:
                self._refuse(active, token, e)
                return True
            held, error = self._try_load(f"candidate {active.version} refused", active.version)
            if held is None:
                if isinstance(error, StoreUnavailable):
                    return False
                self._refuse(active, token, error)
                return True
            if held.sha256 != active.sha256:
                mismatch = ModelrunError(
                    f"version {active.version} has sha256 {held.sha256}, the rollout names "
                    f"{active.sha256}"
                )
                self._refuse(active, token, mismatch)
                return True
        shadow = ShadowScorer(held, self.telemetry).start() if active.mode == "shadow" else None
        previous, self.candidate = self.candidate, Candidate(held, active, shadow)
        self.refused, self._retired = None, None
        if previous is not None and previous.shadow is not None:
            previous.shadow.stop()
        log.info(
            "rollout: %s takes part as %s beside %s",
            active.version,
            active.describe(),
            served.version,
            extra={"fields": {"candidate": active.version, "mode": active.mode}},
        )
        return True

    def _refuse(self, active: Rollout, token: str | None, error: Exception | None) -> None:
        reason = f"{error}" if error is not None else "unknown"
        log.error("rollout of %s refused by this instance: %s", active.version, reason)
        self.telemetry.error("rollout_refused")
        self.refused, self._refused_token = (active, reason), token
        self._drop_candidate()

    def _drop_candidate(self) -> None:
        dropped, self.candidate = self.candidate, None
        if dropped is not None and dropped.shadow is not None:
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
