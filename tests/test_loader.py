"""function/service/loader.py on its own: cold start with retries, readiness reason, following
current.json, refusing a bad candidate once, stopping. A real folder store and real artifacts;
the telemetry is the service's own, read back from its page."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from function.core.errors import StoreUnavailable
from function.core.store import ModelStore
from function.service.served import Served
from tests.conftest import wait_until
from tests.support.loader import errors_counted, loader_for


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore((tmp_path / "iris").as_uri())


def test_cold_start_retries_until_a_version_is_promoted(
    store: ModelStore, iris_artifact: Path
) -> None:
    loader, thread, first_loads = loader_for(store)
    try:
        wait_until(lambda: "promoted" in loader.state.reason, 5, "a first failed attempt")
        assert loader.state.model is None
        assert "no version of" in loader.state.reason

        store.promote(store.publish(iris_artifact, "v1"))
        wait_until(lambda: loader.state.model is not None, 10, "the retry")
    finally:
        loader.stop()
        thread.join(5)

    assert loader.state.model is not None and loader.state.model.version == "v1"
    assert first_loads == ["loaded"]
    assert not thread.is_alive()  # without refresh, the thread ends once loaded


def test_it_follows_current_json_and_refuses_a_bad_candidate_once(
    store: ModelStore, iris_artifact: Path, forest_artifact: Path
) -> None:
    store.promote(store.publish(iris_artifact, "v1"))
    loader, thread, _ = loader_for(store, MODEL_REFRESH_SECONDS="0.05")
    try:
        wait_until(lambda: loader.state.model is not None, 10, "the cold start")
        store.promote(store.publish(forest_artifact, "v2"))
        wait_until(lambda: loader.state.model.version == "v2", 10, "the swap")  # type: ignore[union-attr]

        store.publish(iris_artifact, "v3")
        for file in (Path(store.uri.removeprefix("file://")) / "versions" / "v3").glob("model.*"):
            file.write_bytes(b"tampered after promotion")
        # Pointed at as a bucket writer could, past promote's checks. (Promoting first and
        # tampering after raced the 50 ms poll, which could load v3 in between.)
        pointer, token = store.current()
        assert pointer is not None
        store._point("v3", store.metadata("v3").sha256, [pointer.version], token)
        time.sleep(0.5)  # ten polls: refused once, not retried while current.json is unchanged
    finally:
        loader.stop()
        thread.join(5)

    served = loader.state.model
    assert served is not None and served.version == "v2"  # never the tampered one
    assert errors_counted(loader, "model_refresh") == 1  # refused once, not at every poll
    assert not thread.is_alive()  # stop() ends the refresh loop


def test_a_failed_load_says_why_and_a_stop_ends_the_retries(store: ModelStore) -> None:
    (Path(store.uri.removeprefix("file://"))).mkdir(parents=True)
    (Path(store.uri.removeprefix("file://")) / "current.json").write_text(json.dumps({"x": 1}))
    loader, thread, first_loads = loader_for(store)
    try:
        wait_until(lambda: loader.state.reason != "the model is not loaded yet", 5, "a failure")
    finally:
        loader.stop()
        thread.join(5)

    assert "current.json" in loader.state.reason
    assert not thread.is_alive()
    assert first_loads == []


def test_an_instance_is_ready_only_once_it_has_joined_the_rollout(
    store: ModelStore, iris_artifact: Path, forest_artifact: Path
) -> None:
    """A canary's clients must meet their version on a new instance too: the candidate is loaded
    before the instance says it is ready, however slowly the store answers."""
    from function.core import rollout

    store.promote(store.publish(iris_artifact, "v1"))
    store.publish(forest_artifact, "v2")
    rollout.start(store, "v2", "canary", 50)
    real_read = store.backend.read
    candidate_reads = threading.Event()

    def slow_candidate(key: str, limit: int | None = None):  # type: ignore[no-untyped-def]
        if key.startswith("versions/v2/"):
            candidate_reads.set()
            time.sleep(0.5)
        return real_read(key, limit)

    store.backend.read = slow_candidate  # type: ignore[method-assign]
    loader, thread, first_loads = loader_for(store)
    try:
        assert candidate_reads.wait(10)
        assert loader.state.model is not None and not loader.state.ready and first_loads == []
        wait_until(lambda: loader.state.ready, 20, "ready")
        assert loader.state.candidate is not None and loader.state.candidate.model.version == "v2"
        assert first_loads == ["loaded"]
    finally:
        loader.stop()
        thread.join(5)


def consistent(served: Served) -> str | None:
    """What is mixed in one snapshot: a candidate beside the model it was promoted to, or beside
    a model its rollout was not started from (None when the snapshot is whole)."""
    candidate, model = served.candidate, served.model
    if candidate is None:
        return None
    if model is None or candidate.model.version == model.version:
        return f"candidate {candidate.model.version} beside model {model and model.version}"
    if candidate.rollout.current != model.version:
        return f"a rollout from {candidate.rollout.current} beside model {model.version}"
    return None


def test_a_promoted_candidate_never_stays_beside_itself_when_rollout_json_cannot_be_read(
    store: ModelStore, iris_artifact: Path, forest_artifact: Path
) -> None:
    """current.json names the candidate, rollout.json cannot be read: the snapshot has the new
    model and no candidate, never the new model beside the old candidate."""
    from function.core import rollout

    store.promote(store.publish(iris_artifact, "v1"))
    store.publish(forest_artifact, "v2")
    rollout.start(store, "v2", "canary", 50)
    followed = ModelStore(store.uri)  # the loader's own, whose reads of rollout.json fail
    cut = threading.Event()
    real_read = followed.backend.read

    def read(key: str, limit: int | None = None) -> tuple[bytes, str]:
        if cut.is_set() and key == rollout.ROLLOUT_FILE:
            raise StoreUnavailable(f"{followed.uri}/{key}: unreachable (cut by the test)")
        return real_read(key, limit)

    followed.backend.read = read  # type: ignore[method-assign]
    loader, thread, _ = loader_for(followed, MODEL_REFRESH_SECONDS="0.02")
    try:
        wait_until(lambda: loader.state.candidate is not None, 10, "the candidate")
        cut.set()
        wait_until(lambda: loader.state.unreadable is not None, 10, "a failed read")
        rollout.promote(store)
        wait_until(lambda: loader.state.model.version == "v2", 10, "the swap")  # type: ignore[union-attr]
        served = loader.state
    finally:
        loader.stop()
        thread.join(5)

    assert served.model is not None and served.model.version == "v2"
    assert served.candidate is None, consistent(served)


def test_a_reader_never_sees_a_mixed_state_under_concurrent_swaps(
    store: ModelStore, iris_artifact: Path, forest_artifact: Path
) -> None:
    """Rollouts started and promoted back and forth while a reader takes snapshots as fast as it
    can: every snapshot is one instant's (model and candidate belong together)."""
    from function.core import rollout

    store.promote(store.publish(iris_artifact, "v1"))
    store.publish(forest_artifact, "v2")
    loader, thread, _ = loader_for(store, MODEL_REFRESH_SECONDS="0.2")
    stop = threading.Event()
    mixed: list[str] = []
    seen: set[tuple[str, str | None]] = set()

    def reader() -> None:
        while not stop.is_set():
            served = loader.state  # one read: everything below is this snapshot's
            if served.model is not None:
                candidate = served.candidate.model.version if served.candidate else None
                seen.add((served.model.version, candidate))
            problem = consistent(served)
            if problem:
                mixed.append(problem)
            time.sleep(0)  # let the loader's thread run

    reading = threading.Thread(target=reader, daemon=True)
    reading.start()
    try:
        wait_until(lambda: loader.state.ready, 10, "the cold start")
        for other in ("v2", "v1", "v2", "v1"):
            rollout.start(store, other, "canary", 50)
            wait_until(lambda: loader.state.candidate is not None, 10, f"candidate {other}")
            rollout.promote(store)
            wait_until(lambda: loader.state.model.version == other, 10, f"{other} served")  # type: ignore[union-attr]  # noqa: B023
    finally:
        stop.set()
        reading.join(5)
        loader.stop()
        thread.join(5)

    assert mixed == []
    assert {("v1", "v2"), ("v2", "v1"), ("v1", None), ("v2", None)} <= seen  # it saw each state
