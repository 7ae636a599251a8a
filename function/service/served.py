"""What a request reads: the served model and a rollout's candidate, as one immutable snapshot.

The loader thread (function/service/loader.py) builds a new `Served` and publishes it with one
assignment. A request reads the snapshot once and uses only that value: it cannot see a new model
beside the old candidate, whatever order it looks at the fields in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from function.core.errors import NotReady
from function.core.model import LoadedModel
from function.core.rollout import Rollout
from function.service.shadow import ShadowScorer

NOT_LOADED = "the model is not loaded yet"


@dataclass(frozen=True)
class Candidate:
    """A rollout's candidate, loaded and verified beside the current model."""

    model: LoadedModel
    rollout: Rollout
    shadow: ShadowScorer | None = None  # its scorer, in shadow mode


@dataclass(frozen=True)
class Served:
    """One instant of what this process serves."""

    model: LoadedModel | None = None
    candidate: Candidate | None = None  # a rollout in progress, loaded here
    refused: tuple[Rollout, str] | None = None  # a rollout's candidate not loaded, and why
    unreadable: str | None = None  # why rollout.json, last read, could not be used
    ready: bool = False  # the model loaded, and a rollout in progress joined: serve
    reason: str = NOT_LOADED  # why no model is served yet (the last load's failure)

    def require_model(self) -> LoadedModel:
        """The served model, or 503 with the reason there is none."""
        if self.model is None:
            raise NotReady(self.reason)
        return self.model

    def serving(self, client: str, version: str | None) -> tuple[LoadedModel, ShadowScorer | None]:
        """The model that answers this client, and a shadow candidate to score beside it.

        In a canary the candidate answers the clients its share hashes to; a request naming a
        version (the Open Inference Protocol's path) gets that one when it is loaded here.
        """
        model, candidate = self.require_model(), self.candidate
        if candidate is None:
            return model, None
        if version == candidate.model.version:
            return candidate.model, None
        if candidate.shadow is not None:
            return model, candidate.shadow if candidate.rollout.shadows() else None
        chosen = version is None and candidate.rollout.answers(client)
        return (candidate.model if chosen else model), None

    def named(self, version: str | None) -> LoadedModel:
        """The served model, or the candidate when `version` names it."""
        model = self.require_model()
        if self.candidate is not None and version == self.candidate.model.version:
            return self.candidate.model
        return model

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

    def candidate_state(self) -> dict[str, str] | None:
        """The rollout's candidate as the metrics show it: its version, mode and state."""
        shown = self.rollout()
        if shown is None or "version" not in shown:
            return None
        return {"model.version": shown["version"], "mode": shown["mode"], "state": shown["state"]}
