"""Issue 35's attacks on the HTTP layer as one table, and the raw socket client that sends them.

A raw socket, not an HTTP library: an attack is in its framing (a length it never sends, chunks
without an end, a head that never ends), and the client must see whether the server answered
before the rest was sent. tests/test_attacks.py asserts each row against a real server;
tests/perf/attack.py measures them under load (`make attack`).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from tests.conftest import KEY

LIMIT = 65_536  # the attacked server's MAX_REQUEST_BYTES
JSON = b"Content-Type: application/json\r\n"
KEYED = f"X-API-Key: {KEY}\r\n".encode()
CHUNK = b"%x\r\n" % 65_536 + b" " * 65_536 + b"\r\n"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes
    closed: bool  # the server closed the connection after answering


@dataclass(frozen=True)
class Attack:
    """A request head, what follows it (sent only until the server answers), and the answer.

    No attack's request is ever whole (its length is never sent in full, its chunks never end,
    its head has no end): an answer at all says the server did not wait for the rest."""

    name: str
    head: bytes
    rest: bytes  # sent after the head, a piece at a time, until the answer arrives
    status: int
    app: bool  # answered by the service (problem+json, security headers) or by the HTTP server


def post(path: str, *headers: bytes) -> bytes:
    return b"POST " + path.encode() + b" HTTP/1.1\r\nHost: attack\r\n" + b"".join(headers)


ATTACKS = [
    Attack(
        "200 MB to /predict without a key",
        post("/predict", JSON, b"Content-Length: 200000000\r\n\r\n"),
        b"x" * (4 * 1024 * 1024), 401, app=True,
    ),
    Attack(
        "a length over the limit, with a key, and no body",
        post("/predict", JSON, KEYED, b"Content-Length: 2000000\r\n\r\n"),
        b"", 413, app=True,
    ),
    Attack(
        "chunks past the limit, with a key, never ended",
        post("/predict", JSON, KEYED, b"Transfer-Encoding: chunked\r\n\r\n"),
        CHUNK * 4, 413, app=True,
    ),
    Attack(
        "128 MiB chunked to /predict without a key",
        post("/predict", JSON, b"Transfer-Encoding: chunked\r\n\r\n"),
        CHUNK * 64, 401, app=True,
    ),
    Attack(
        "a body to GET /health",
        b"GET /health HTTP/1.1\r\nHost: attack\r\nContent-Length: 134217728\r\n\r\n",
        b"x" * (4 * 1024 * 1024), 413, app=True,
    ),
    Attack(
        "a body to a v2 route that takes none",
        b"GET /v2/health/live HTTP/1.1\r\nHost: attack\r\nTransfer-Encoding: chunked\r\n\r\n",
        CHUNK * 4, 413, app=True,
    ),
    Attack(
        "a 20 MiB request line",
        b"GET /",
        b"a" * (20 * 1024 * 1024), 414, app=False,
    ),
    Attack(
        "a request line just over 8 KiB",
        b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\nHost: attack\r\n\r\n",
        b"", 414, app=False,
    ),
    Attack(
        "one header over 8 KiB",
        b"GET /health HTTP/1.1\r\nHost: attack\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n",
        b"", 431, app=False,
    ),
    Attack(
        "a malformed request line, which gunicorn's own page would quote",
        b"GET /aaaaaaaa\r\nHost: attack\r\n\r\n",
        b"", 400, app=False,
    ),
    Attack(
        "a malformed header line",
        b"GET /health HTTP/1.1\r\nHost: attack\r\nX-aaaaaaaa aaaaaaaa\r\n\r\n",
        b"", 400, app=False,
    ),
    Attack(
        "a head that grows past 32 KiB and never ends",
        b"GET /health HTTP/1.1\r\nHost: attack\r\n",
        b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(40)), 431, app=False,
    ),
]  # fmt: skip


def send(port: int, head: bytes, rest: bytes = b"", guard: float = 10.0) -> Answer:
    """Send the head, then the rest 64 KiB at a time until an answer starts arriving; return
    the answer and whether the server closed the connection after it. `guard` only keeps a
    hung server from hanging the caller."""
    with socket.create_connection(("127.0.0.1", port), timeout=guard) as sock:
        sock.sendall(head)
        sent = 0
        sock.setblocking(False)
        received = b""
        deadline = time.monotonic() + guard
        while sent < len(rest) and not received and time.monotonic() < deadline:
            try:
                received = sock.recv(65_536)
                break
            except BlockingIOError:
                pass
            try:
                sent += sock.send(rest[sent : sent + 65_536])
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:  # the server closed: its answer may still be there to read
                break
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        return _answer(sock, received)


def _answer(sock: socket.socket, received: bytes) -> Answer:
    data = received
    while b"\r\n\r\n" not in data:
        chunk = _recv(sock)
        if not chunk:
            raise AssertionError(f"the connection ended before an answer: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = _recv(sock)
        if not chunk:
            break
        body += chunk
    closed = _recv(sock) == b"" if headers.get("connection") == "close" else False
    return Answer(int(lines[0].split()[1]), headers, body[:length], closed)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65_536)
    except ConnectionResetError:
        return b""


def half_sent_heads(port: int, count: int) -> list[socket.socket]:
    """Connections that sent part of a request head and then nothing (a slowloris)."""
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: attack\r\nX-Slow: ")
        held.append(sock)
    return held
