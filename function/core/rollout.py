"""Rollouts: a candidate version shadows or answers a share of the traffic, as data in the store.

The state is one small document beside current.json, rollout.json, written with the same
compare-and-swap as current.json (function/core/store.py), so that two commands run at once cannot
lose
an update:

    {"schema_version": 1,
     "active": {"version", "sha256", "mode": "shadow" | "canary", "percent", "started_at",
                "current", "model_bytes"} | null,
     "history": [{...the same fields, "ended_at", "outcome": "promoted" | "aborted"}, ...]}

`RolloutState` is that document as a value, and `parse_state` its one parser (a document from
before schema_version has the same shape: version 1).

Every instance follows it through the refresh it already does (function/service/loader.py): it
loads and
verifies the candidate beside the current model. In shadow, the candidate scores the same rows off
the request's path (function/service/shadow.py); in a canary, it answers the clients whose hash
falls in
its share: the hash of the `X-Client-Id` header when sent, else of the API key, so one client sees
one version. A shadow may score a random share of the requests only (a partial shadow).

Ending a rollout is one write too: `promote` records the outcome first (whoever ends a rollout
first wins, promote or abort), then points current.json at the candidate. Instances keep a
promoted candidate loaded until current.json names it, then swap it in without loading it again.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field
from typing import Any

from function.core.artifact import SHA256_PATTERN, encode_metadata
from function.core.errors import Conflict, ModelrunError, NotFound, StoreUnavailable
from function.core.store import ROLLOUT_FILE, ModelStore, check_version_id, utc_now

MODES = ("shadow", "canary")
OUTCOMES = ("promoted", "aborted")
SCHEMA_VERSION = 1
CLIENT_HEADER = "X-Client-Id"  # a canary client's identity when sent; else its API key
MAX_CLIENT_ID = 256
HISTORY_KEPT = 20
MIB = 1024 * 1024


class RolloutRefused(Conflict):
    """A rollout that cannot start, or a candidate an instance will not load (it would not fit)."""


@dataclass(frozen=True)
class Rollout:
    """A rollout in progress."""

    version: str  # the candidate
    sha256: str
    mode: str  # shadow or canary
    percent: float  # a canary's share of clients; a shadow's share of requests
    started_at: str
    current: str  # the version current when it started, which it is compared with
    model_bytes: int  # the candidate's model file: what it adds to each worker's memory

    def describe(self) -> str:
        if self.mode == "shadow" and self.percent >= 100:
            return "shadow"
        return f"{self.mode} {self.percent:g}%"

    def shadows(self) -> bool:
        """Whether a shadow candidate scores this request: all, or a random share of them."""
        return self.percent >= 100 or random.random() * 100 < self.percent  # noqa: S311

    def answers(self, client: str) -> bool:
        """Whether the candidate answers this client: a stable hash of the client (and the
        candidate, so that each rollout picks its own share) below the canary's percentage."""
        if self.mode != "canary":
            return False
        digest = hashlib.sha256(f"{self.version}\0{client}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % 10_000 < round(self.percent * 100)


@dataclass(frozen=True)
class Ended:
    """A rollout that ended, as rollout.json's history records it."""

    rollout: Rollout
    ended_at: str
    outcome: str  # promoted or aborted

    @property
    def version(self) -> str:
        return self.rollout.version

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self.rollout), "ended_at": self.ended_at, "outcome": self.outcome}


@dataclass(frozen=True)
class RolloutState:
    """rollout.json: the rollout in progress (None when none) and the ended ones, newest first."""

    active: Rollout | None = None
    history: tuple[Ended, ...] = field(default=())
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "active": asdict(self.active) if self.active else None,
            "history": [ended.to_json() for ended in self.history],
        }


def parse_percent(text: str) -> float:
    """A canary's share: more than 0 and at most 100 percent, to a hundredth."""
    try:
        percent = float(text)
    except ValueError:
        raise ValueError(f"expected a percentage, got {text!r}") from None
    return check_percent(percent, text)


def check_percent(percent: float, shown: str | None = None) -> float:
    """More than 0 and at most 100 percent, to a hundredth; NaN and the infinities are neither
    (json.loads reads NaN and Infinity, float() reads "inf")."""
    if not 0 < percent <= 100 or round(percent * 100) == 0:
        raise ValueError(
            f"expected a percentage above 0 and at most 100, got {shown or repr(percent):.40}"
        )
    return percent


def check_fits(current_bytes: int, candidate_bytes: int, limit_mb: float, where: str) -> None:
    """Refuse a candidate that, beside the served model, exceeds one worker's model memory."""
    if limit_mb <= 0:
        return
    needed = (current_bytes + candidate_bytes) / MIB
    if needed > limit_mb:
        raise RolloutRefused(
            f"{where}: the current and the candidate models need about {needed:.1f} MiB in each "
            f"worker, more than MODEL_MEMORY_MB={limit_mb:g} allows"
        )


def read_state(store: ModelStore) -> tuple[RolloutState, str | None]:
    """Return rollout.json (an empty state if absent) and its token."""
    try:
        data, token = store.read_document(ROLLOUT_FILE)
    except NotFound:
        return RolloutState(), None
    try:
        return parse_state(data), token
    except (ValueError, TypeError, KeyError, ModelrunError) as e:
        raise StoreUnavailable(f"{store.uri}/{ROLLOUT_FILE} is corrupt: {e}") from e


def parse_state(data: bytes) -> RolloutState:
    """rollout.json checked like a request: an error naming the field that is wrong."""
    state = json.loads(data)
    if not isinstance(state, dict) or not isinstance(state.get("history"), list):
        raise TypeError("not an object with a history")
    schema = state.get("schema_version", SCHEMA_VERSION)  # before it: the same shape
    if schema != SCHEMA_VERSION:
        raise ValueError(f"schema_version {schema!r:.20} is not {SCHEMA_VERSION}")
    history = []
    for i, ended in enumerate(state["history"]):
        if not isinstance(ended, dict):
            raise TypeError("history must hold objects")
        try:
            outcome, ended_at = ended["outcome"], ended["ended_at"]
            if outcome not in OUTCOMES:
                raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r:.40}")
            if not isinstance(ended_at, str):
                raise TypeError(f"ended_at must be a string, got {type(ended_at).__name__}")
            history.append(Ended(_rollout(ended), ended_at, outcome))
        except (ValueError, TypeError, KeyError, ModelrunError) as e:
            raise type(e)(f"history[{i}]: {e}") from e
    active = None if state.get("active") is None else _rollout(state["active"])
    return RolloutState(active, tuple(history))


def active(store: ModelStore) -> Rollout | None:
    """The rollout in progress (None when there is none)."""
    return read_state(store)[0].active


def start(
    store: ModelStore, version: str, mode: str, percent: float = 100.0, memory_mb: float = 0.0
) -> Rollout:
    """Start a rollout of a complete, verified version that is not current."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    state, token = read_state(store)
    if state.active:
        running = state.active
        raise Conflict(
            f"a rollout of {running.version} ({running.describe()}) is in progress in "
            f"{store.uri}: promote or abort it first"
        )
    pointer, _ = store.current()
    if pointer is None:
        raise NotFound(f"no version of {store.uri} is current: promote one before a rollout")
    if pointer.version == version:
        raise Conflict(f"{version} is already current in {store.uri}: nothing to roll out")
    metadata = store.verify(version)
    size = metadata.model_bytes  # the sizes the metadata records: no model is downloaded twice
    current_size = store.metadata(pointer.version).model_bytes
    check_fits(current_size, size, memory_mb, f"rollout of {version}")
    rollout = Rollout(
        version=version,
        sha256=metadata.sha256,
        mode=mode,
        percent=percent,
        # To the millisecond: the verdict counts the samples Prometheus took after it.
        started_at=utc_now("milliseconds"),
        current=pointer.version,
        model_bytes=size,
    )
    _write(store, RolloutState(rollout, state.history), token, "starting")
    return rollout


def abort(store: ModelStore, judged: Rollout | None = None) -> Rollout:
    """End the rollout in progress (only if it is still the one `judged`, when given); the
    candidate is dropped and current.json is untouched."""
    return _end(store, "aborted", judged)


def promote(store: ModelStore, judged: Rollout | None = None) -> Rollout:
    """End the rollout in progress (only if it is still the one `judged`, when given), then
    make its candidate current."""
    rollout = _end(store, "promoted", judged)
    try:
        store.promote(rollout.version)
    except ModelrunError as e:
        raise type(e)(
            f"the rollout of {rollout.version} ended as promoted, but promoting it failed: {e}; "
            f"run `promote {rollout.version}`"
        ) from e
    return rollout


def _end(store: ModelStore, outcome: str, judged: Rollout | None) -> Rollout:
    state, token = read_state(store)
    rollout = state.active
    if rollout is None:
        last = state.history[0] if state.history else None
        ended = f" (the last one, of {last.version}, was {last.outcome})" if last else ""
        raise NotFound(f"no rollout is in progress in {store.uri}{ended}")
    if judged is not None and rollout != judged:
        raise Conflict(
            f"the rollout in {store.uri} changed since it was judged (now {rollout.version}, "
            f"{rollout.describe()}): nothing was {outcome}"
        )
    history = (Ended(rollout, utc_now(), outcome), *state.history)[:HISTORY_KEPT]
    _write(store, RolloutState(None, history), token, "ending")
    return rollout


def _write(store: ModelStore, state: RolloutState, token: str | None, doing: str) -> None:
    try:
        store.write_document(ROLLOUT_FILE, encode_metadata(state.to_json()), if_token=token)
    except Conflict as e:
        raise Conflict(
            f"{store.uri}/{ROLLOUT_FILE} was changed by someone else while {doing} the rollout; "
            "nothing was overwritten - check `rollout status` and retry"
        ) from e


def _rollout(fields: Any) -> Rollout:
    """Parse rollout.json's `active` (or a history record) like a request: every field of its
    type, a percentage finite and within 0-100 (json.loads takes NaN and Infinity, and float()
    takes "inf")."""
    if not isinstance(fields, dict):
        raise TypeError("active must be an object")
    text = {name: fields[name] for name in ("version", "sha256", "mode", "started_at", "current")}
    for name, value in text.items():
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    percent, model_bytes = fields["percent"], fields["model_bytes"]
    if isinstance(percent, bool) or not isinstance(percent, int | float):
        raise TypeError(f"percent must be a number, got {type(percent).__name__}")
    check_percent(percent)
    if isinstance(model_bytes, bool) or not isinstance(model_bytes, int) or model_bytes < 0:
        raise TypeError(f"model_bytes must be a count of bytes, got {model_bytes!r:.40}")
    check_version_id(text["version"])
    check_version_id(text["current"])
    if text["mode"] not in MODES:
        raise ValueError(f"unknown mode {text['mode']!r:.40}")
    if not SHA256_PATTERN.match(text["sha256"]):
        raise ValueError("sha256 must be 64 hex digits")
    return Rollout(percent=float(percent), model_bytes=model_bytes, **text)
