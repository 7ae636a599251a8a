"""Concurrent promotions: exactly one wins, the other gets a clear error, nothing is lost.

GCS runs on fake-gcs-server, which enforces ifGenerationMatch; gcp-storage-emulator ignores
preconditions, so a race there would prove nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from function.core import rollout
from function.core.errors import Conflict
from function.core.store import ModelStore


@pytest.fixture(params=["file", pytest.param("gcs", marks=pytest.mark.slow)])
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], ModelStore]:
    """Return a factory: each promoter gets its own store object (and its own GCS client)."""
    if request.param == "file":
        uri = (tmp_path / "iris").as_uri()
    else:
        emulator = request.getfixturevalue("fake_gcs")
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.host)
        uri = f"gs://{emulator.bucket}/race-{time.monotonic_ns()}/iris"
    return lambda: ModelStore(uri, timeout=5)


@pytest.fixture
def setup(
    make_store: Callable[[], ModelStore], iris_artifact: Path, forest_artifact: Path
) -> ModelStore:
    """The store the racers share: v1 current, v2 and v3 published beside it."""
    store = make_store()
    store.publish(iris_artifact, "v1")
    store.publish(forest_artifact, "v2")
    store.publish(iris_artifact, "v3")
    store.promote("v1")
    return store


def one_wins(act: Callable[[str], None], versions: list[str]) -> str:
    """Run act(version) for two versions at once; exactly one must win, the other must get the
    clear conflict. Return the winner."""

    def outcome(version: str) -> str:
        try:
            act(version)
        except Conflict as e:
            return f"conflict: {e}"
        return "won"

    with ThreadPoolExecutor(len(versions)) as pool:
        outcomes = list(pool.map(outcome, versions))
    assert sorted(o.split(":")[0] for o in outcomes) == ["conflict", "won"]
    assert "changed by someone else" in next(o for o in outcomes if o != "won")
    return versions[outcomes.index("won")]


def test_of_two_concurrent_promotions_exactly_one_wins(
    make_store: Callable[[], ModelStore], setup: ModelStore
) -> None:
    # v2 and v3 race: promoting the current one (v1) again would be a no-op
    both_read = threading.Barrier(2, timeout=10)

    def promote(version: str) -> None:
        store = make_store()
        real_current = store.current

        def current_then_wait():  # type: ignore[no-untyped-def]
            result = real_current()
            both_read.wait()  # both have read current.json before either writes
            return result

        store.current = current_then_wait  # type: ignore[method-assign]
        store.promote(version)

    winner = one_wins(promote, ["v2", "v3"])
    pointer, _ = setup.current()
    assert pointer is not None
    assert pointer.version == winner
    assert pointer.history == ("v1",)


def test_many_concurrent_promotions_lose_no_successful_one(
    make_store: Callable[[], ModelStore], iris_artifact: Path
) -> None:
    setup = make_store()
    versions = [f"v{i}" for i in range(6)]
    for version in versions:
        setup.publish(iris_artifact, version)
    start = threading.Barrier(len(versions), timeout=10)

    def promote(version: str) -> str | None:
        store = make_store()
        start.wait()
        try:
            store.promote(version)
        except Conflict:
            return None
        return version

    with ThreadPoolExecutor(len(versions)) as pool:
        won = [v for v in pool.map(promote, versions) if v]

    pointer, _ = setup.current()
    assert pointer is not None
    chain = [pointer.version, *pointer.history]
    # Every promotion that reported success is in the chain: none was silently overwritten.
    assert sorted(chain) == sorted(won)


# --- rollout.json: the same compare-and-swap ---------------------------------------------


def both_read_rollout(store: ModelStore, barrier: threading.Barrier) -> ModelStore:
    """Make this store object wait, once it has read rollout.json, until the other has too."""
    real_read = store.backend.read
    waited = []

    def read_then_wait(key: str, limit: int | None = None):  # type: ignore[no-untyped-def]
        try:
            return real_read(key, limit)  # NotFound while no rollout was ever written
        finally:
            if key == rollout.ROLLOUT_FILE and not waited:  # its first read (write reads too)
                waited.append(key)
                barrier.wait()

    store.backend.read = read_then_wait  # type: ignore[method-assign]
    return store


def test_of_two_concurrent_rollout_starts_exactly_one_wins(
    make_store: Callable[[], ModelStore], setup: ModelStore
) -> None:
    barrier = threading.Barrier(2, timeout=10)

    def start(version: str) -> None:
        rollout.start(both_read_rollout(make_store(), barrier), version, "shadow")

    winner = one_wins(start, ["v2", "v3"])
    active = rollout.active(setup)
    assert active is not None
    assert active.version == winner


def test_a_promote_and_an_abort_at_once_end_the_rollout_one_way(
    make_store: Callable[[], ModelStore], setup: ModelStore
) -> None:
    rollout.start(setup, "v2", "canary", 10)
    barrier = threading.Barrier(2, timeout=10)
    finish = {"promote": rollout.promote, "abort": rollout.abort}

    def end(how: str) -> str:
        try:
            finish[how](both_read_rollout(make_store(), barrier))
        except Conflict:
            return "conflict"
        return how

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(end, ["promote", "abort"]))

    assert outcomes.count("conflict") == 1
    won = next(o for o in outcomes if o != "conflict")
    state, _ = rollout.read_state(setup)
    assert state.active is None
    assert [h.outcome for h in state.history] == [{"promote": "promoted", "abort": "aborted"}[won]]
    pointer, _ = setup.current()
    assert pointer is not None
    # What the store says happened did happen: promoted means current, aborted means not.
    assert pointer.version == ("v2" if won == "promote" else "v1")
