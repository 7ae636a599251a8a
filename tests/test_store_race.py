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

from function.errors import Conflict
from function.store import ModelStore


@pytest.fixture(params=["file", "gcs"])
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], ModelStore]:
    """Return a factory: each promoter gets its own store object (and its own GCS client)."""
    if request.param == "file":
        uri = (tmp_path / "iris").as_uri()
    else:
        emulator = request.getfixturevalue("fake_gcs")
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.host)
        uri = f"gs://{emulator.bucket}/models/race-{time.monotonic_ns()}"
    return lambda: ModelStore(uri, timeout=5)


def test_of_two_concurrent_promotions_exactly_one_wins(
    make_store: Callable[[], ModelStore], iris_artifact: Path, forest_artifact: Path
) -> None:
    setup = make_store()
    setup.publish(iris_artifact, "v1")
    setup.publish(forest_artifact, "v2")
    setup.publish(iris_artifact, "v3")
    setup.promote("v1")  # two others race: promoting the current one again is a no-op
    both_read = threading.Barrier(2, timeout=10)

    def promote(version: str) -> str:
        store = make_store()
        real_current = store.current

        def current_then_wait():  # type: ignore[no-untyped-def]
            result = real_current()
            both_read.wait()  # both have read current.json before either writes
            return result

        store.current = current_then_wait  # type: ignore[method-assign]
        try:
            store.promote(version)
        except Conflict as e:
            return f"conflict: {e}"
        return "won"

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(promote, ["v2", "v3"]))

    assert sorted(o.split(":")[0] for o in outcomes) == ["conflict", "won"]
    assert "changed by someone else" in next(o for o in outcomes if o != "won")
    winner = ["v2", "v3"][outcomes.index("won")]
    pointer, _ = setup.current()
    assert pointer is not None
    assert pointer["version"] == winner
    assert pointer["history"] == ["v1"]


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
    chain = [pointer["version"], *pointer["history"]]
    # Every promotion that reported success is in the chain: none was silently overwritten.
    assert sorted(chain) == sorted(won)
