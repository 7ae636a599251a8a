"""The standing attack suite (issue 35): each attack on the HTTP layer against one real server,
started as the image starts it, through a raw socket (tests/attacks.py).

No attack's request is ever whole, so an answer at all says the server did not wait to read it
whole; each row asserts its status and that the connection closed after it; the app's answers
keep their problem+json and security headers. The bounds under load (memory, others' latency)
are `make attack`'s.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from function.core.store import ModelStore
from function.service.responses import SECURITY_HEADERS
from tests.attacks import ATTACKS, JSON, KEYED, LIMIT, Attack, half_sent_heads, post, send
from tests.conftest import KEY, Running, descendants, run_service
from tests.perf.soak import rss_mb

pytestmark = pytest.mark.slow  # one real server for the module

THREADS = 4  # run_service's: the slowloris below holds more connections than that
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def attacked(iris_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("attacked")
    store = ModelStore((tmp / "iris").as_uri())
    store.promote(store.publish(iris_artifact, "v1"))
    env = {"MODEL_URI": store.uri, "API_KEYS": KEY, "RATE_LIMIT_PER_SECOND": "0",
           "MAX_REQUEST_BYTES": str(LIMIT), "THREADS": str(THREADS)}  # fmt: skip
    with run_service(env, tmp) as running:
        yield running


def port(running: Running) -> int:
    return int(urlsplit(running.url).port or 0)


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_an_attack_is_refused_before_its_rest_is_read(attacked: Running, attack: Attack) -> None:
    answer = send(port(attacked), attack.head, attack.rest)

    assert answer.status == attack.status, answer.body[:300]
    assert answer.closed  # Connection: close, and closed: nothing drains the rest
    if attack.app:  # the service's own answer: its protocol's body, its headers
        v2 = attack.head.split()[1].startswith(b"/v2")
        assert answer.headers["content-type"] == f"application/{'json' if v2 else 'problem+json'}"
        assert answer.headers["x-content-type-options"] == "nosniff"
    else:  # the HTTP layer's short plain answer, which never echoes the request
        assert answer.headers["content-type"] == "text/plain; charset=utf-8"
        assert b"aaaaaaaa" not in answer.body and len(answer.body) < 200
    for name, value in SECURITY_HEADERS.items():  # every answer, whoever gives it
        assert answer.headers[name.lower()] == value


def test_a_refused_request_is_never_told_100_continue(attacked: Running) -> None:
    expects = b"Expect: 100-continue\r\nContent-Length: 34\r\n\r\n"
    refused = send(port(attacked), post("/predict", JSON, expects))  # no key: 401, body unsent

    assert refused.status == 401 and refused.closed
    row = b'{"features": [5.1, 3.5, 1.4, 0.2]}'
    with socket.create_connection(("127.0.0.1", port(attacked)), timeout=10) as sock:
        sock.sendall(post("/predict", JSON, KEYED, expects))
        assert sock.recv(65_536) == b"HTTP/1.1 100 Continue\r\n\r\n"  # once the app reads
        sock.sendall(row)
        answered = sock.recv(65_536)
    assert answered.startswith(b"HTTP/1.1 200 OK")


def test_no_request_line_is_echoed_in_a_log_line(attacked: Running) -> None:
    send(port(attacked), b"GET /" + b"b" * 20_000 + b" HTTP/1.1\r\nHost: attack\r\n\r\n")

    assert max(map(len, attacked.output().splitlines()), default=0) < 8192
    assert "bbbbbbbb" not in attacked.output()


def test_bodies_refused_unread_cost_the_worker_no_memory(attacked: Running) -> None:
    (worker,) = descendants(attacked.process.pid)
    before = rss_mb(worker)
    claim = post("/predict", JSON, b"Content-Length: 200000000\r\n\r\n")

    for _ in range(6):  # issue 35: six of these took a worker from 88 to 1,117 MiB
        assert send(port(attacked), claim, b"x" * (32 * MiB)).status == 401

    assert rss_mb(worker) - before < 32


def test_half_sent_heads_hold_no_thread(attacked: Running) -> None:
    held = half_sent_heads(port(attacked), 5 * THREADS)
    try:
        answer = send(port(attacked), b"GET /health HTTP/1.1\r\nHost: probe\r\n\r\n", guard=5)
        keyed = send(
            port(attacked),
            post("/predict", JSON, KEYED, b"Content-Length: 34\r\n\r\n",
                 b'{"features": [5.1, 3.5, 1.4, 0.2]}'),
            guard=5,
        )  # fmt: skip
    finally:
        for sock in held:
            sock.close()

    assert answer.status == 200 and not answer.closed
    assert keyed.status == 200 and not keyed.closed, keyed.body  # a body read whole: kept alive


def test_refused_clients_that_keep_their_sockets_hold_nothing(attacked: Running) -> None:
    # gunicorn waits, in the worker's one loop, up to 2 s for each closed connection's client
    # to close too: ten such clients kept /health from answering for 20 s.
    held = []
    for _ in range(10):
        sock = socket.create_connection(("127.0.0.1", port(attacked)), timeout=10)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: attack\r\nContent-Length: 10\r\n\r\n")
        held.append(sock)  # answered 413 and closed by the server; never read, never closed
    try:
        answer = send(port(attacked), b"GET /health HTTP/1.1\r\nHost: probe\r\n\r\n", guard=5)
    finally:
        for sock in held:
            sock.close()

    assert answer.status == 200


def test_pipelined_requests_on_a_kept_alive_connection_are_all_answered(
    attacked: Running,
) -> None:
    # The worker gathers each head itself: one that came with the previous request must not wait
    # for the socket to become readable again.
    row = b'{"features": [5.1, 3.5, 1.4, 0.2]}'
    predict = post("/predict", JSON, KEYED, b"Content-Length: %d\r\n\r\n%s" % (len(row), row))
    with socket.create_connection(("127.0.0.1", port(attacked)), timeout=10) as sock:
        sock.sendall(predict + predict + b"GET /health HTTP/1.1\r\nHost: attack\r\n\r\n")
        received = b""
        while received.count(b"HTTP/1.1 ") < 3 or not received.endswith(b"}"):
            chunk = sock.recv(65_536)
            assert chunk, received
            received += chunk

    assert received.count(b"HTTP/1.1 200 OK") == 3


def test_still_healthy_after_the_attacks(attacked: Running) -> None:
    for attack in ATTACKS:
        send(port(attacked), attack.head, attack.rest)
    time.sleep(0.1)

    assert attacked.get("/health").status_code == 200
    assert attacked.process.poll() is None
    assert "Traceback" not in attacked.output()
