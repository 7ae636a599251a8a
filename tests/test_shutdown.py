"""Stopping the real server under load, as Cloud Run does: SIGTERM to gunicorn's master.

The server is the Dockerfile's CMD (tests/conftest.run_service). On SIGTERM every request in
flight is answered, no worker aborts or is killed, and the master exits within Cloud Run's 10 s
grace. A worker forked from a master that had imported onnxruntime used to abort at exit
(`terminate called after throwing an instance of 'std::system_error'`) or hang there until
gunicorn killed it: see Service.__init__.
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from function.store import ModelStore
from tests.conftest import KEY, Running, run_service, train_artifact, wait_until

GRACE_SECONDS = 10  # Cloud Run sends SIGKILL this long after SIGTERM
# What a worker that died at exit leaves in the log: the C++ runtime's last words, and gunicorn's
# "Worker (pid:N) was sent SIGKILL! Perhaps out of memory?" or "… exited with code N.".
DEATHS = ("terminate called", "was sent SIG", "exited with code", "Traceback")
BODY = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]] * 20}).encode()
HEADERS = {"X-API-Key": KEY, "Content-Type": "application/json"}
CLIENTS = 4


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


class Load:
    """Clients posting without pause, each on its kept-alive connection, until the server
    stops answering them. `signalled` is set just before the signal is sent: a request whose
    bytes were all written before then was sent before the signal."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.address = urlsplit(url)
        self.headers = {**HEADERS, **(headers or {})}
        self.signalled = threading.Event()
        self.closing = threading.Event()  # a stopping worker answered with Connection: close
        self.outcomes: list[tuple[bool, int | str]] = []  # (sent before the signal, status|error)
        self._threads = [threading.Thread(target=self._client) for _ in range(CLIENTS)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        wait_until(lambda: self._answered() >= len(self._threads) * 2, 30, "the load to run")
        return self

    def __exit__(self, *exc: object) -> None:
        for thread in self._threads:
            thread.join(GRACE_SECONDS)

    def _answered(self) -> int:
        return sum(1 for _, outcome in self.outcomes if outcome == 200)

    def _client(self) -> None:
        connection = http.client.HTTPConnection(
            self.address.hostname, self.address.port, timeout=GRACE_SECONDS
        )
        try:
            while True:
                try:
                    connection.request("POST", "/predict", BODY, self.headers)
                except OSError:  # refused: the server no longer listens; nothing was sent
                    return
                before = not self.signalled.is_set()
                try:
                    response = connection.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException) as e:
                    self.outcomes.append((before, type(e).__name__))
                    return
                self.outcomes.append((before, response.status))
                if response.status != 200:
                    return
                if response.getheader("Connection", "").lower() == "close":
                    self.closing.set()  # the next request opens a new connection
        finally:
            connection.close()


class HeldRequest:
    """A request certainly in flight at the signal: its connection has been answered once (a
    worker accepted it), then the next request's headers and half its body are sent."""

    def __init__(self, url: str) -> None:
        address = urlsplit(url)
        self.connection = http.client.HTTPConnection(
            address.hostname, address.port, timeout=GRACE_SECONDS
        )
        self.connection.request("POST", "/predict", BODY, HEADERS)
        answer = self.connection.getresponse()
        answer.read()
        assert answer.status == 200
        self.connection.putrequest("POST", "/predict")
        for name, value in {**HEADERS, "Content-Length": str(len(BODY))}.items():
            self.connection.putheader(name, value)
        self.connection.endheaders(BODY[: len(BODY) // 2])

    def finish(self) -> int:
        """Send the rest of the body; return the answer's status."""
        try:
            self.connection.send(BODY[len(BODY) // 2 :])
            response = self.connection.getresponse()
            response.read()
            return response.status
        finally:
            self.connection.close()


def deaths(log: str) -> list[str]:
    """The log's lines that tell of a worker dying instead of exiting."""
    return [line for line in log.splitlines() if any(death in line for death in DEATHS)]


def exit_within_grace(process: subprocess.Popen[str], signalled_at: float) -> int | None:
    """The process's exit status, or None if it still runs GRACE_SECONDS after the signal."""
    try:
        return process.wait(max(0.0, signalled_at + GRACE_SECONDS - time.monotonic()))
    except subprocess.TimeoutExpired:
        return None


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
