"""gunicorn's threaded worker, with no thread held by a client that is slow to send.

gunicorn's gthread worker hands a connection to a thread as soon as it has a byte to read; the
thread then blocks until the request head is whole, and reads the body without a timeout. 41
connections with half-sent headers held every thread of a 40-thread worker, and /health
answered no one. Here:

- the worker's own loop (one thread, a selector) gathers each request head without blocking;
  the connection reaches a thread only once its head is whole, so parked connections cost a
  socket and their bytes, not a thread. A head not whole within HEAD_SECONDS is dropped; one over
  HEAD_BYTES is answered 431 (414 when its first line alone is over the limit) by the loop;
- a thread reading a body (or writing an answer) waits at most READ_SECONDS for the client;
- a request whose body the application did not read to its end closes its connection
  (`Connection: close`): gunicorn would otherwise read on (64 KiB, or 5 s, at most) to keep the
  connection, and the application refuses bodies it will not read (function/service/app.py);
- a connection is closed from the selector, never waited on in the worker's loop;
- what the HTTP layer refuses (414, 431, a malformed request's 400) is answered in a few bytes of
  text/plain with the service's security headers (function/service/app.py's), never gunicorn's HTML
  page,
  and never echoing the request;
- `Expect: 100-continue` is answered `100 Continue` when the application first reads the body,
  not before it runs (gunicorn's way): a request refused without reading its body (401, 413) is
  never invited to send it.

HTTP/1 in the clear only (what Cloud Run and Vertex AI send a container): no TLS, no HTTP/2.
Written against gthread as gunicorn 27.0.1 has it (function/requirements.txt pins it).
"""

from __future__ import annotations

import selectors
import socket
import struct
import time
from functools import partial
from typing import Any

from gunicorn import util
from gunicorn.http.body import Body, ChunkedReader, LengthReader
from gunicorn.http.message import Request as GunicornRequest
from gunicorn.http.parser import RequestParser
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

HEAD_SECONDS = 10.0  # to send a whole head, from the connection (kept alive: its next byte)
HEAD_BYTES = 32 * 1024  # a whole request head at most (nginx's default: 4 buffers of 8 KiB)
READ_SECONDS = 10.0  # the longest a thread waits on one read of a body, or one write
LINGER_SECONDS, LINGER_BYTES = 2.0, 64 * 1024  # gunicorn's close_graceful: until the client closes
END_OF_HEAD = b"\r\n\r\n"


class Request(GunicornRequest):
    body: Any  # gunicorn's, untyped
    _expected_100_continue: bool

    def should_close(self) -> bool:
        """Close the connection too when the application answered without reading the body."""
        return bool(super().should_close()) or not body_read(self.body)

    def set_body_reader(self) -> None:
        super().set_body_reader()
        if self._expected_100_continue:  # gunicorn would send it before the application runs
            self._expected_100_continue = False
            self.body = ContinueBody(self.body.reader, self.unreader.sock)


class ContinueBody(Body):
    """The body of a request whose client waits for `100 Continue` before sending it: sent at
    the first read, which the application makes only once it has accepted the request."""

    def __init__(self, reader: Any, sock: socket.socket) -> None:
        super().__init__(reader)
        self.sock, self.continued = sock, False

    def _read_reader(self, size: int) -> bytes:
        if not self.continued:
            self.continued = True
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        return bytes(super()._read_reader(size))


class Parser(RequestParser):
    mesg_class = Request


def body_read(body: Any) -> bool:
    """Whether a request's body has been received to its end (read, or buffered)."""
    reader = getattr(body, "reader", None)
    if isinstance(reader, LengthReader):
        return bool(reader.length == 0)
    if isinstance(reader, ChunkedReader):
        return reader.parser is None  # the last chunk was read
    return True  # no length and not chunked: a request has no body (RFC 9112 section 6.3)


class Worker(ThreadWorker):
    """gthread, whose connections wait for their whole head in the worker's selector."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.heads: dict[TConn, tuple[bytearray, float]] = {}  # parked: bytes so far, deadline
        self.lingering: dict[TConn, tuple[int, float]] = {}  # closing: bytes read away, deadline

    def enqueue_req(self, conn: TConn) -> None:
        """Hand the connection to a thread if its next head is whole; else park it."""
        held = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        conn.sock.setblocking(False)
        self.heads[conn] = (bytearray(held), time.monotonic() + HEAD_SECONDS)
        if self._gather(conn):  # a kept-alive client's next head is often there already
            return
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_head_readable, conn))

    def on_head_readable(self, conn: TConn, sock: socket.socket) -> None:
        if self._gather(conn):
            self.poller.unregister(sock)

    def _gather(self, conn: TConn) -> bool:
        """Read what the client has sent; hand over, refuse or drop the connection, and return
        True, once its head is whole, cannot be, or will not come; else return False."""
        head, _ = self.heads[conn]
        try:
            data = conn.sock.recv(HEAD_BYTES + 1 - len(head))
        except BlockingIOError:  # nothing yet (a pipelined head may be held already)
            data = None
        except OSError:
            data = b""
        if data == b"":  # the client left
            del self.heads[conn]
            self._close(conn)
            return True
        head += data or b""
        if END_OF_HEAD in head:  # whole: a thread parses it, with gunicorn's limits
            del self.heads[conn]
            if conn.parser is None:  # a new connection
                conn.parser = Parser(self.cfg, conn.sock, conn.client)
                _time_out_blocked_calls(conn.sock)
            conn.parser.unreader.unread(bytes(head))
            conn.data_ready = True  # else gthread waits on a thread for a first byte
            super().enqueue_req(conn)
            return True
        refusal = _refusal(head, self.cfg.limit_request_line)
        if refusal is None:
            return False
        del self.heads[conn]  # it can never be whole within the limits
        write_refusal(conn.sock, *refusal)  # a few hundred bytes: never blocks
        _discard_received(conn.sock)
        self._close(conn)
        return True

    def finish_request(self, conn: TConn, fs: Any) -> None:
        """As gthread's, but a connection done with is closed from the selector: gthread
        lingers for the client to close first (up to 2 s, in this loop, which then serves no
        one; five refused requests whose clients kept their sockets delayed /health by 6 s)."""
        if fs.cancelled() or fs.exception() is not None or fs.result() is not False:
            super().finish_request(conn, fs)
            return
        try:  # RFC 9112 section 9.6: our FIN first; read until theirs, so no reset cuts the answer
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        self.lingering[conn] = (0, time.monotonic() + LINGER_SECONDS)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_lingering, conn))

    def on_lingering(self, conn: TConn, sock: socket.socket) -> None:
        drained, deadline = self.lingering[conn]
        try:
            data = sock.recv(16 * 1024)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        drained += len(data)
        self.lingering[conn] = (drained, deadline)
        if not data or drained >= LINGER_BYTES:
            del self.lingering[conn]
            self.poller.unregister(sock)
            self._close(conn)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """gunicorn's logging and status for a request it could not handle; our answer."""
        captured = _Captured()
        super().handle_error(req, captured, addr, exc)
        _, status, reason = captured.data.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        try:
            write_refusal(client, int(status), reason)
        except OSError:
            self.log.debug("Failed to send error message.")

    def murder_pending(self) -> None:
        """Drop the connections whose head or close is overdue (a head after 2 s once the worker
        stops, as gunicorn does with idle kept-alive connections)."""
        super().murder_pending()
        now = time.monotonic()
        stopping = 0.0 if self.alive else HEAD_SECONDS - STOP_KEEPALIVE_LINGER
        for waiting, ahead in ((self.heads, stopping), (self.lingering, 0.0)):
            for conn in [c for c, (_, deadline) in waiting.items() if deadline <= now + ahead]:
                del waiting[conn]
                self.poller.unregister(conn.sock)
                self._close(conn)

    def _close(self, conn: TConn) -> None:
        self.nr_conns -= 1
        conn.close()


def _refusal(head: bytearray, line_limit: int) -> tuple[int, str, str] | None:
    """gunicorn's answer (status, reason, message) to a head that cannot be whole within limits,
    or None. Never the head itself: it is not echoed, in the answer or a log."""
    line_end = head.find(b"\r\n", 0, line_limit + 2)
    if line_end < 0 and len(head) > line_limit + 1:
        return 414, "URI Too Long", f"Request Line is too large (> {line_limit})"
    if len(head) > HEAD_BYTES:
        return (
            431,
            "Request Header Fields Too Large",
            f"the request head is over {HEAD_BYTES} bytes",
        )
    return None


def write_refusal(sock: socket.socket, status: int, reason: str, detail: str = "") -> None:
    """An HTTP-layer refusal: a line of text/plain (detail: ours, never the request's) with the
    service's security headers, and `Connection: close`."""
    from function.service.responses import SECURITY_HEADERS  # loaded: the worker serves its app

    body = f"{reason}: {detail}\n" if detail else f"{reason}\n"
    headers = {
        "Connection": "close",
        "Content-Type": "text/plain; charset=utf-8",
        "Content-Length": str(len(body)),
        **SECURITY_HEADERS,
    }
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    util.write_nonblock(sock, f"HTTP/1.1 {status} {reason}\r\n{head}\r\n{body}".encode("latin-1"))


class _Captured:
    """Stands in for the client's socket while gunicorn's handle_error writes its HTML answer,
    which may quote the request: only its status line is kept."""

    def __init__(self) -> None:
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0

    def sendall(self, data: bytes) -> None:
        self.data += data


def _time_out_blocked_calls(sock: socket.socket) -> None:
    """Make the kernel end a read or write blocked for READ_SECONDS (EAGAIN). Not Python's
    socket timeout: with one set, Python polls before every call, and each poll gives up the
    GIL; that cost a tenth of the throughput of one-row predictions."""
    interval = struct.pack("ll", int(READ_SECONDS), 0)  # a struct timeval
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, interval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, interval)


def _discard_received(sock: socket.socket) -> None:
    """Read away what the client has sent already (64 KiB at most, without waiting): closing a
    socket with unread bytes resets the connection, and the client may lose the answer."""
    for _ in range(4):
        try:
            if not sock.recv(16 * 1024):
                return
        except OSError:  # BlockingIOError: nothing more for now
            return
