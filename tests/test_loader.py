"""function/service/loader.py on its own: cold start with retries, readiness reason, following
current.json, refusing a bad candidate once, stopping. A real folder store and real artifacts;
the telemetry is the service's own, read back from its page."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from function.core.store import ModelStore
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
        store._point("v3", store.metadata("v3")["sha256"], [pointer.version], token)
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
