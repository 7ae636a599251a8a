"""Stopping the real server under load, as Cloud Run does: SIGTERM to gunicorn's master.

The server is the Dockerfile's CMD (tests/conftest.run_service). On SIGTERM every request in
flight is answered, no worker aborts or is killed, and the master exits within Cloud Run's 10 s
grace. A worker forked from a master that had imported onnxruntime used to abort at exit
(`terminate called after throwing an instance of 'std::system_error'`) or hang there until
gunicorn killed it: see Service.__init__.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from function.core.store import ModelStore
from tests.conftest import KEY, Running, run_service, train_artifact, wait_until
from tests.support.shutdown import GRACE_SECONDS, HeldRequest, Load, deaths, exit_within_grace

pytestmark = pytest.mark.slow  # every test here starts a server or a process


@pytest.fixture(scope="module")
def sklearn_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Iris without model.onnx: scikit-learn serves it under the image's MODEL_RUNTIME=auto."""
    return train_artifact(tmp_path_factory.mktemp("iris-no-onnx"), "--no-onnx")


@pytest.fixture
def serve(
    request: pytest.FixtureRequest, iris_artifact: Path, sklearn_artifact: Path, tmp_path: Path
) -> Iterator[tuple[Running, str]]:
    """The server on runtime (onnx or sklearn) with that many workers; yield it and its runtime."""
    runtime, workers = request.param
    store = ModelStore((tmp_path / "iris").as_uri())
    store.promote(store.publish(iris_artifact if runtime == "onnx" else sklearn_artifact, "v1"))
    env = {"MODEL_URI": store.uri, "API_KEYS": KEY, "WORKERS": str(workers),
           "RATE_LIMIT_PER_SECOND": "0"}  # fmt: skip
    if runtime == "onnx":
        env["MODEL_RUNTIME"] = "onnx"  # else the image's default, auto
    with run_service(env, tmp_path) as running:
        yield running, runtime


@pytest.mark.parametrize(
    "serve", [("onnx", 1), ("onnx", 2), ("sklearn", 1), ("sklearn", 2)], indirect=True,
    ids=["onnx-1-worker", "onnx-2-workers", "sklearn-1-worker", "sklearn-2-workers"],
)  # fmt: skip
def test_sigterm_under_load_answers_every_request_in_flight_and_exits_cleanly(
    serve: tuple[Running, str],
) -> None:
    running, runtime = serve
    with Load(running.url) as load:
        held = [HeldRequest(running.url) for _ in range(2)]
        signalled_at = time.monotonic()
        load.signalled.set()
        running.process.send_signal(signal.SIGTERM)  # to the master, as Cloud Run sends it
        # A worker has begun to stop (it answers Connection: close); the held requests, sent in
        # part before the signal, are finished now.
        wait_until(load.closing.is_set, GRACE_SECONDS, "a stopping worker's Connection: close")
        held_statuses = [request.finish() for request in held]
    status = exit_within_grace(running.process, signalled_at)
    log = running.output()

    assert held_statuses == [200, 200]
    sent_before = [outcome for before, outcome in load.outcomes if before]
    assert sent_before and set(sent_before) == {200}  # every request sent before: answered
    answered = {outcome for _, outcome in load.outcomes if isinstance(outcome, int)}
    assert answered == {200}  # those sent after: answered, or refused a connection
    assert status == 0, f"still running {GRACE_SECONDS}s after SIGTERM" if status is None else log
    assert deaths(log) == []
    assert f"(runtime {runtime})" in log  # the runtime the case names served
