"""The two documents an instance follows in the store, each with the state it keeps between reads.

- `CurrentFollower`, current.json: a newly promoted (or rolled back) version is verified and
  warmed before it is served; one that fails verification is not tried again until current.json
  changes (its token). A store that cannot be reached is simply asked again next time.
- `RolloutFollower`, rollout.json (function/core/rollout.py): a rollout's candidate is loaded and
  verified beside the current model, in shadow with its own scorer (function/service/shadow.py);
  one this instance refuses is not tried again until rollout.json changes. A promoted candidate
  is kept until current.json names it, then becomes the model without being loaded again.

Each `follow` takes the snapshot served now (function/service/served.py) and returns the next;
the loader (function/service/loader.py) publishes it. Only the loader's thread calls them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

from function.core import rollout
from function.core.config import Config
from function.core.errors import ModelrunError, StoreUnavailable
from function.core.model import LoadedModel
from function.core.rollout import Rollout, check_fits
from function.core.store import ModelStore
from function.service.served import Candidate, Served
from function.service.shadow import ShadowScorer
from function.service.telemetry import ROLLOUT_UNREADABLE, Telemetry

log = logging.getLogger("modelrun.loader")

# Load what the configuration names, or a candidate's version by id: the model, or why not.
Load = Callable[[str, str | None], tuple[LoadedModel | None, Exception | None]]


class CurrentFollower:
    """current.json, and the token of the one whose version was refused."""

    def __init__(self, store: ModelStore, telemetry: Telemetry, load: Load) -> None:
        self.store = store
        self.telemetry = telemetry
        self.load = load
        self._refused_token: str | None = None

    def follow(self, served: Served, held: Sequence[LoadedModel]) -> Served:
        """Read current.json once; serve a new current version once verified and warmed (one of
        `held`, the rollout's candidates, without loading it again)."""
        model = served.model
        try:
            pointer, token = self.store.current()
        except ModelrunError as e:
            log.warning("cannot read current.json to refresh the model: %s", e)
            self.telemetry.error("model_refresh")
            return served
        if pointer is None or token == self._refused_token or model is None:
            return served
        named = (pointer.version, pointer.sha256)
        if named == (model.version, model.sha256):
            return served
        new = next((m for m in held if (m.version, m.sha256) == named), None)
        if new is not None:  # a rollout's candidate, promoted: loaded and verified already
            new = dataclasses.replace(new, promotion=pointer)
        else:
            new, error = self.load(f"candidate {pointer.version} refused", None)
            if new is None:
                self.telemetry.error("model_refresh")
                if not isinstance(error, StoreUnavailable):
                    self._refused_token = token
                return served
        log.info(
            "now serving %s version %s (was %s)",
            new.name,
            new.version,
            model.version,
            extra={"fields": {"version": new.version, "previous": model.version}},
        )
        return dataclasses.replace(served, model=new)


class RolloutFollower:
    """rollout.json, the token of the one whose candidate was refused, and a promoted candidate
    kept until current.json names it."""

    def __init__(self, config: Config, store: ModelStore, telemetry: Telemetry, load: Load) -> None:
        self.config = config
        self.store = store
        self.telemetry = telemetry
        self.load = load
        self._refused_token: str | None = None
        self.retired: LoadedModel | None = None  # a promoted candidate, until it is current

    def follow(self, served: Served) -> tuple[Served, bool]:
        """Read rollout.json once: load a new candidate, or let an ended rollout's go. Say False
        when the store could not be reached (for rollout.json or the candidate)."""
        model = served.model
        try:
            state, token = rollout.read_state(self.store)
        except ModelrunError as e:
            # Unreachable or corrupt alike: what is loaded (the candidate too) goes on serving.
            log.warning("cannot read rollout.json: %s", e)
            self.telemetry.error("model_refresh")
            if str(e) != served.unreadable:  # a change, counted once (model_refresh: each poll)
                self.telemetry.error(ROLLOUT_UNREADABLE)
            reached = not isinstance(e, StoreUnavailable)
            return dataclasses.replace(served, unreadable=str(e)), reached
        served = dataclasses.replace(served, unreadable=None)
        active = state.active
        if model is None or active is None or active.version == model.version:
            last = state.history[0] if state.history else None
            if served.candidate is not None:
                log.info("rollout of %s ended", served.candidate.model.version)
                # A promoted candidate waits here until current.json names it.
                promoted = last is not None and last.outcome == "promoted"
                self.retired = served.candidate.model if promoted else None
            elif self.retired is not None and (
                model is None
                or model.version == self.retired.version  # swapped in
                or last is None
                or last.version != self.retired.version  # another rollout since
            ):
                self.retired = None
            return dataclasses.replace(served, candidate=None, refused=None), True
        if served.candidate is not None and served.candidate.rollout == active:
            return served, True
        if token == self._refused_token:
            return served, True
        return self._start(served, model, active, token)

    def _start(
        self, served: Served, model: LoadedModel, active: Rollout, token: str | None
    ) -> tuple[Served, bool]:
        held = served.candidate.model if served.candidate else None
        if held is None or (held.version, held.sha256) != (active.version, active.sha256):
            try:
                check_fits(
                    model.model_bytes,
                    active.model_bytes,
                    self.config.model_memory_mb,
                    f"candidate {active.version}",
                )
            except ModelrunError as e:
                return self._refuse(served, active, token, e), True
            held, error = self.load(f"candidate {active.version} refused", active.version)
            if held is None:
                if isinstance(error, StoreUnavailable):
                    return served, False
                return self._refuse(served, active, token, error), True
            if held.sha256 != active.sha256:
                mismatch = ModelrunError(
                    f"version {active.version} has sha256 {held.sha256}, the rollout names "
                    f"{active.sha256}"
                )
                return self._refuse(served, active, token, mismatch), True
        shadow = ShadowScorer(held, self.telemetry).start() if active.mode == "shadow" else None
        self.retired = None
        log.info(
            "rollout: %s takes part as %s beside %s",
            active.version,
            active.describe(),
            model.version,
            extra={"fields": {"candidate": active.version, "mode": active.mode}},
        )
        candidate = Candidate(held, active, shadow)
        return dataclasses.replace(served, candidate=candidate, refused=None), True

    def _refuse(
        self, served: Served, active: Rollout, token: str | None, error: Exception | None
    ) -> Served:
        reason = f"{error}" if error is not None else "unknown"
        log.error("rollout of %s refused by this instance: %s", active.version, reason)
        self.telemetry.error("rollout_refused")
        self._refused_token = token
        return dataclasses.replace(served, candidate=None, refused=(active, reason))
