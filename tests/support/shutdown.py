"""Stopping a real server under load, as Cloud Run does: clients that post without pause, a
request held in flight at the signal, and what the log says of a worker that died at exit
(tests/test_shutdown.py, and `make serve`'s Ctrl-C in tests/test_serve.py)."""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
from urllib.parse import urlsplit

from tests.conftest import KEY, wait_until

GRACE_SECONDS = 10  # Cloud Run sends SIGKILL this long after SIGTERM
# What a worker that died at exit leaves in the log: the C++ runtime's last words, and gunicorn's
# "Worker (pid:N) was sent SIGKILL! Perhaps out of memory?" or "… exited with code N.".
DEATHS = ("terminate called", "was sent SIG", "exited with code", "Traceback")
BODY = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]] * 20}).encode()
HEADERS = {"X-API-Key": KEY, "Content-Type": "application/json"}
CLIENTS = 4


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
