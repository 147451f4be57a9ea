"""The gunicorn worker this service runs: gthread, with every request read in full before a thread runs it.

gunicorn's own worker types leave a slow client in charge: a sync worker reads a request in its only
process, a gthread worker in one of its threads, so a few clients sending their headers a byte at a
time take every worker (the arbiter then kills them for being silent). Here the main thread of each
worker process reads the bytes of every connection without blocking, on one selector (as waitress's
channels do), and gives a connection to a thread only once its request is complete. Threads then only
parse from memory, run the app and write the answer; slow or idle clients cost a socket, not a
thread. The model is still loaded once, before the fork (`preload_app`), and shared by the workers
(except LightGBM and XGBoost models, loaded in each worker: see gunicorn.conf.py).

- A request must arrive within REQUEST_TIMEOUT seconds (default 30), else 408 and the connection
  is closed. Requests announcing `Expect: 100-continue`, or a body over MAX_BODY_BYTES, go to a
  thread once their headers are in: the first waits for gunicorn's 100 Continue, the second is
  refused (413) from its Content-Length without reading the body.
- Errors found by the HTTP layer itself (a garbage request line, bad headers or Content-Length,
  oversized headers, a body that cannot be framed) are answered, like every other error of the
  service, as JSON: {"error": "..."} with a 4xx status, and the connection is closed.
- At most MAX_IN_FLIGHT requests (default: 16 per thread, 64 with the 4 default THREADS, as the
  fastapi worker's 64) are handed to the threads, running or waiting for one; past that, a complete
  request is answered at once on the main thread with 503 JSON and `Retry-After`, and its
  connection closed: never queued without bound (app/guard.py). The probes are never refused so.
- SIGTERM drains: the worker accepts the connections already waiting in the listen backlog, closes
  its listening socket, answers every request it has or is receiving (`Connection: close`), waits
  for kept-alive connections to send one more request or time out (KEEPALIVE seconds), then exits.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import selectors
import socket
import time
from collections import OrderedDict
from functools import partial
from typing import Any

from app.runtime import OPEN_PATHS, RETRY_AFTER, InFlight, log_request, request_id
from gunicorn import http, util
from gunicorn.http import errors
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import TConn, ThreadWorker

REQUEST_TIMEOUT = float(os.environ.get("REQUEST_TIMEOUT", "30"))
MAX_BODY_BYTES = int(os.environ.get("MAX_BODY_BYTES", 1024 * 1024))
HEAD_END = b"\r\n\r\n"
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*([0-9]{1,18})[ \t]*(?=\r\n)", re.IGNORECASE)
TRANSFER_ENCODING = re.compile(rb"\r\ntransfer-encoding[ \t]*:([^\r]*)(?=\r\n)", re.IGNORECASE)
CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")
TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
# What can begin a request line (a method, then a space), and a whole one: anything else is
# refused as soon as it arrives, not after REQUEST_TIMEOUT (a TLS hello, a bare LF, garbage).
METHOD_SO_FAR = re.compile(TOKEN + rb"{1,32}(?: |\Z)")
REQUEST_LINE = re.compile(TOKEN + rb"{1,32} [^\x00-\x20\x7f]+ HTTP/[0-9]\.[0-9]\r\n")
MAX_CHUNK_LINE = 1024
REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Conn(TConn):
    """A connection and the bytes of its next request received so far."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any) -> None:
        super().__init__(cfg, sock, client, server)
        self.received = bytearray()
        self.deadline = 0.0
        self.watched = False  # registered on the worker's selector
        self.framing = Framing()
        self.admitted = False  # counted in the worker's requests in flight until answered

    def close(self, graceful: bool = False) -> None:
        """Close without lingering: gunicorn's graceful close waits up to 2 s for the client's FIN
        on the thread that calls it, here the one that serves every connection of the process."""
        if graceful:
            try:
                self.sock.shutdown(socket.SHUT_WR)
                # Unread bytes make the kernel answer with a reset, which can cost the client the
                # answer it has not read yet: drain what has arrived, without waiting for more.
                self.sock.setblocking(False)
                for _ in range(16):
                    if not self.sock.recv(4096):
                        break
            except OSError:
                pass
        util.close(self.sock)


class BufferedWorker(ThreadWorker):
    """gunicorn's gthread worker, with requests read in full by the main thread (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.receiving: OrderedDict[Conn, None] = OrderedDict()  # in order of deadline
        # requests handed to the threads, running or queued: 16 a thread queue for a few ms of a small
        # model's time each; a slower model sizes it down (README: "Overload")
        self.in_flight = InFlight.from_environ(16 * self.cfg.threads)

    def load_wsgi(self) -> None:
        """The app, with its `Connection: close` honoured (gunicorn drops hop-by-hop headers): the
        adapter says so when it answers without having read a body it cannot frame."""
        super().load_wsgi()
        from app.server import service  # loaded now: its metrics count the requests refused here

        self.service = service
        app = self.wsgi

        def closing(environ: dict[str, Any], start_response: Any) -> Any:
            def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                if ("Connection", "close") in headers:
                    start_response.__self__.force_close()  # gunicorn's Response
                return start_response(status, headers, exc_info)

            return app(environ, start)

        self.wsgi = closing

    # -- reading requests on the main thread ---------------------------------------------------

    def accept(self, listener: Any) -> None:
        if self.cfg.is_ssl:  # TLS is read by the thread that runs the handshake: gunicorn's way
            super().accept(listener)
            return
        try:
            sock, addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self.receive(Conn(self.cfg, sock, addr, listener.getsockname()))

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        """A kept-alive connection sends its next request."""
        if not isinstance(conn, Conn):
            super().on_client_socket_readable(conn, client)
            return
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self.receive(conn)

    def receive(self, conn: Conn) -> None:
        """Wait for the whole request on the selector; bytes a client sent ahead come first."""
        if conn.parser is not None:
            conn.received += conn.parser.unreader.take_buffered()
        conn.sock.setblocking(False)
        conn.deadline = time.monotonic() + (REQUEST_TIMEOUT if self.alive else self.cfg.keepalive)
        self.receiving[conn] = None
        # Most requests are in already (a kept-alive connection is here because it is readable):
        # read now; the selector watches only for the rest.
        self.on_bytes(conn, conn.sock)
        if conn in self.receiving and not conn.watched:
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_bytes, conn))
            conn.watched = True

    def on_bytes(self, conn: Conn, sock: Any) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            data = None
        except OSError:
            data = b""
        if data == b"":  # the client has gone
            self.forget(conn)
            self.nr_conns -= 1
            conn.close()
            return
        if data:
            conn.received += data
        if not conn.received:
            return
        verdict = self.complete(conn)
        if isinstance(verdict, tuple):
            self.refuse(conn, *verdict)
        elif verdict:
            self.hand_over(conn)

    def complete(self, conn: Conn) -> bool | tuple[int, str]:
        """Whether a thread can now run the request without waiting for the client, or (status,
        why) for framing no thread could ever read (a thread would wait for bytes that never come).

        True too when what came is malformed in a way gunicorn's parser, on the thread, refuses
        from what is in memory: it is the parser of record; this decides when to hand over, and
        refuses early only what would otherwise hold a thread or wait for the timeout."""
        received = conn.received
        end = conn.framing.head_end(received)
        if isinstance(end, str):
            return 400, end
        if end < 0:
            cfg = self.cfg
            fields = cfg.limit_request_fields * (cfg.limit_request_field_size + 2)
            return len(received) > cfg.limit_request_line + fields + 4
        if conn.framing.body is None:  # the head is read once
            conn.framing.body = body_framing(bytes(received[: end + 2]))
        framing = conn.framing.body
        if isinstance(framing, str):
            return conn.framing.chunked_body(received, end + 4)
        return framing < 0 or framing > MAX_BODY_BYTES or len(received) - end - 4 >= framing

    def hand_over(self, conn: Conn) -> None:
        """The request is in: a thread parses it from memory and runs the app, or, with
        MAX_IN_FLIGHT requests already handed over, it is refused at once (503)."""
        self.forget(conn)
        method, path = request_line(conn.received)
        if path not in OPEN_PATHS:
            if not self.in_flight.admit():
                self.shed(conn, method, path)
                return
            conn.admitted = True
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
            conn.parser.unreader = BufferedUnreader(conn.sock)
        conn.parser.unreader.unread(bytes(conn.received))
        conn.received = bytearray()
        conn.framing = Framing()
        conn.data_ready = True
        self.enqueue_req(conn)

    def refuse(self, conn: Conn, status: int, message: str) -> None:
        """Answer a request that cannot be framed now, from this thread, and close."""
        self.forget(conn)
        self.nr_conns -= 1
        self.log.warning("Invalid request from ip=%s: %s", (conn.client or ("",))[0], message)
        write_json_error(conn.sock, status, message)
        self.count(*request_line(conn.received), status, time.perf_counter())
        conn.close(graceful=True)

    def shed(self, conn: Conn, method: str, path: str) -> None:
        """Answer 503 with Retry-After on this thread, close, and count it as the app counts requests."""
        started = time.perf_counter()
        message = (
            f"overloaded: {self.in_flight.limit} requests in progress on this worker; "
            f"retry after {RETRY_AFTER} s"
        )
        write_json_error(conn.sock, 503, message, {"Retry-After": RETRY_AFTER})
        self.service.metrics.shed()
        self.count(method, path, 503, started)
        self.nr_conns -= 1
        conn.close()

    def count(self, method: str, path: str, status: int, started: float) -> None:
        """An answer written here, not by the app: counted and logged as the app counts its own (the
        README: every answer is counted), its route label from the runtime's closed set."""
        metrics = self.service.metrics
        metrics.started()
        metrics.finished(path, status, started)
        log_request(method, path, status, started)

    def forget(self, conn: Conn) -> None:
        if conn.watched:
            self.poller.unregister(conn.sock)
            conn.watched = False
        del self.receiving[conn]

    def murder_pending(self) -> None:
        """Also close the connections whose request did not arrive in time (408 if it had begun)."""
        super().murder_pending()
        now = time.monotonic()
        while self.receiving:
            conn = next(iter(self.receiving))
            if conn.deadline > now:
                break
            self.forget(conn)
            self.nr_conns -= 1
            if conn.received:
                message = f"the request did not arrive within {REQUEST_TIMEOUT:g} s"
                write_json_error(conn.sock, 408, message)
                self.count(*request_line(conn.received), 408, time.perf_counter())
            conn.close()

    # -- draining on SIGTERM ---------------------------------------------------------------------

    def set_accept_enabled(self, enabled: bool) -> None:
        stopping = not enabled and not self.alive
        if stopping and self._accepting:
            self.accept_backlog()
        super().set_accept_enabled(enabled)
        if stopping:
            for listener in self.sockets:  # from now on a new connection is refused, not reset
                listener.close()
            for conn in self.receiving:  # a request still to come has the keep-alive time to finish
                conn.deadline = min(conn.deadline, time.monotonic() + self.cfg.keepalive)

    def accept_backlog(self) -> None:
        """Take the connections the kernel has accepted for us: closing the listener would reset them."""
        for listener in self.sockets:
            while self.nr_conns < self.worker_connections:
                try:
                    sock, addr = listener.accept()
                except OSError:
                    break
                self.nr_conns += 1
                self.receive(Conn(self.cfg, sock, addr, listener.getsockname()))

    def finish_request(self, conn: Any, fs: Any) -> None:
        """While stopping, gunicorn closes a connection as soon as its answer is out, even one whose
        answer said keep-alive: the client may have sent its next request already, and a close then
        resets it. Such a connection is kept until that request (answered with `Connection: close`)
        or the keep-alive timeout."""
        if isinstance(conn, Conn) and conn.admitted:
            conn.admitted = False
            self.in_flight.release()
        kept_alive = not fs.cancelled() and fs.exception() is None and fs.result() is True
        if self.alive or not isinstance(conn, Conn) or not kept_alive:
            super().finish_request(conn, fs)
            return
        conn.sock.setblocking(False)
        conn.set_timeout()
        self.keepalived_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn))

    def _keepalive_after(self, conn: Any, keepalive: bool) -> bool:
        """A body the app left unread and that cannot be framed: close, quietly (it was answered)."""
        try:
            return bool(super()._keepalive_after(conn, keepalive))
        except (OSError, errors.ParseException):
            return False

    # -- errors of the HTTP layer, as JSON -------------------------------------------------------

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        status, message = http_error(exc)
        if status >= 500:
            self.log.exception("Error handling request %s", getattr(req, "uri", "(no URI read)"))
        else:
            self.log.warning("Invalid request from ip=%s: %s", (addr or ("",))[0], message)
        write_json_error(client, status, message)
        path = getattr(req, "path", None) or "-"
        self.count(getattr(req, "method", None) or "-", path, status, time.perf_counter())


class BufferedUnreader(SocketUnreader):  # type: ignore[misc]
    """gunicorn's SocketUnreader, its buffer a bytearray read by offset: nothing left is copied.

    The worker hands the parser a whole request at once (`unread`), and gunicorn's own buffer copies
    all that is left on every read and unread; its chunked-body reader asks for "what there is" for
    every chunk and carries it along, so a body of one-byte chunks took a thread time quadratic in
    their number (100,000: 23 s here; 1 MB of them: minutes). Here a read costs what it returns,
    and a read of "what there is" returns at most `mxchunk` bytes (8 KiB), as one recv would."""

    def __init__(self, sock: socket.socket, max_chunk: int = 8192) -> None:
        super().__init__(sock, max_chunk)
        self.data = bytearray()
        self.pos = 0  # the bytes before it have been read

    def take_buffered(self) -> bytes:
        ahead = bytes(self.data[self.pos :])
        self.data, self.pos = bytearray(), 0
        return ahead

    def read(self, size: int | None = None) -> bytes:
        if size is not None and not isinstance(size, int):
            raise TypeError("size parameter must be an int or long.")
        if size == 0:
            return b""
        if size is None or size < 0:  # what there is: some of the buffer, else one recv
            if self.pos == len(self.data):
                return bytes(self.chunk())
            return self._take(self.mxchunk)
        while len(self.data) - self.pos < size:
            chunk = self.chunk()
            if not chunk:
                break
            self.data += chunk
        return self._take(size)

    def _take(self, size: int) -> bytes:
        taken = bytes(self.data[self.pos : self.pos + size])
        self.pos += len(taken)
        if self.pos == len(self.data):
            self.data, self.pos = bytearray(), 0
        elif self.pos > 65536 and self.pos * 2 > len(self.data):  # read bytes go, at linear cost
            del self.data[: self.pos]
            self.pos = 0
        return taken

    def unread(self, data: bytes) -> None:
        if len(data) <= self.pos:  # gunicorn puts back what it read: where it was read from
            self.pos -= len(data)
            self.data[self.pos : self.pos + len(data)] = data
        else:
            self.data[: self.pos] = data
            self.pos = 0


def body_framing(head: bytes) -> int | str:
    """How the body after `head` ends: "chunked", its Content-Length, or -1 for a request a thread
    can take now (no body, the client waits for 100 Continue, or framing the parser refuses)."""
    if b"\r\nexpect:" in head.lower():  # the client waits for 100 Continue before its body
        return -1
    codings = TRANSFER_ENCODING.findall(head)
    if codings:  # a chunked body ends with its last chunk; without chunked there is no body
        return "chunked" if any(b"chunked" in coding.lower() for coding in codings) else -1
    lengths = CONTENT_LENGTH.findall(head)
    if len(lengths) != 1:  # no body, or lengths the parser refuses
        return -1
    return int(lengths[0])


class Framing:
    """How far a connection's request has been read: each look goes on from where the last one
    stopped, so a head or a body arriving a byte at a time costs its length, not its square."""

    def __init__(self) -> None:
        self.scanned = 0  # the head: bytes checked for line endings and its end
        self.line_checked = False  # the request line
        self.chunk = -1  # a chunked body: where its next chunk-size line starts
        self.declared = 0  # the chunk sizes so far
        self.trailers = -1  # after the last chunk: where the trailer lines start
        self.body: int | str | None = None  # once the head is in: body_framing's answer
        self.end = -1  # once found: where the head ends (the body after it may come in later reads)

    def head_end(self, received: bytearray) -> int | str:
        """Where the head ends (-1: not yet), or why it is no HTTP/1.x request head."""
        if self.end >= 0:
            return self.end
        problem = self._request_line(received)
        if problem:
            return problem
        start = self.scanned
        end = received.find(HEAD_END, max(0, start - 3))
        stop = len(received) if end < 0 else end + 4
        bare = received.find(b"\n", start, stop)
        while bare >= 0:
            if bare == 0 or received[bare - 1] != 13:  # gunicorn would wait for a CRLF forever
                return "invalid request: a line of the request head ends with LF alone, not CRLF"
            bare = received.find(b"\n", bare + 1, stop)
        self.scanned = stop
        self.end = end
        return end

    def _request_line(self, received: bytearray) -> str | None:
        if self.line_checked:
            return None
        start = 0
        while received.startswith(b"\r\n", start):  # empty lines before a request are allowed
            start += 2
        eol = received.find(b"\n", start)
        if eol < 0:
            if received[start:] in (b"", b"\r") or METHOD_SO_FAR.match(received, start):
                return None
        elif REQUEST_LINE.fullmatch(received, start, eol + 1):
            self.line_checked = True
            return None
        line = bytes(received[start : (eol if eol >= 0 else start + 64)])
        return f"invalid request line: {line[:64]!r}"

    def chunked_body(self, received: bytearray, start: int) -> bool | tuple[int, str]:
        """True when the chunked body from `start` is complete, False when more is to come, or
        (status, why) when it never can be (malformed, or chunks declaring more than the limit)."""
        if self.chunk < 0:
            self.chunk = start
        while self.trailers < 0:
            pos = self.chunk
            eol = received.find(b"\n", pos, pos + MAX_CHUNK_LINE + 1)
            if eol < 0:
                if len(received) - pos > MAX_CHUNK_LINE:
                    return 400, f"malformed request: a chunk-size line over {MAX_CHUNK_LINE} bytes"
                return False
            if eol == pos or received[eol - 1] != 13:
                return 400, "malformed request: a chunk-size line ends with LF alone, not CRLF"
            size_text = bytes(received[pos : eol - 1]).split(b";", 1)[0].strip(b" \t")
            if not CHUNK_SIZE.fullmatch(size_text):
                return 400, f"malformed request: invalid chunk size {size_text[:40]!r} (1 to 16 hex digits)"
            size = int(size_text, 16)
            self.declared += size
            if self.declared > MAX_BODY_BYTES:
                return 413, f"the request body is over the limit of {MAX_BODY_BYTES} bytes"
            if size == 0:  # the last chunk, then trailer lines up to an empty one
                self.trailers = eol + 1
                self.chunk = max(eol - 1, 0)  # from here: where the search for the empty line goes on
                break
            data_end = eol + 1 + size
            if data_end + 2 > len(received):
                return False
            if received[data_end : data_end + 2] != b"\r\n":
                return 400, "malformed request: a chunk's data is not followed by CRLF"
            self.chunk = data_end + 2
        if received.startswith(b"\r\n", self.trailers):
            return True
        if received.find(HEAD_END, self.chunk) >= 0:
            return True
        if len(received) - self.trailers > MAX_CHUNK_LINE * 8:
            return 400, "malformed request: the trailer lines after the last chunk do not end"
        self.chunk = max(self.chunk, len(received) - 3)
        return False


def http_error(exc: BaseException) -> tuple[int, str]:
    """(status, message) for what gunicorn's parser or the socket raised on a request."""
    if isinstance(exc, errors.LimitRequestHeaders):
        return 431, f"the request headers are over the limit: {exc}"
    if isinstance(exc, errors.LimitRequestLine):
        return 414, f"the request line is over the limit: {exc}"
    if isinstance(exc, errors.ExpectationFailed):
        return 417, str(exc)
    if isinstance(exc, errors.ForbiddenProxyRequest):
        return 403, "request forbidden"
    if isinstance(exc, errors.InvalidRequestLine):
        return 400, f"invalid request line: {exc}"
    if isinstance(exc, errors.InvalidRequestMethod):
        return 400, f"invalid method: {exc}"
    if isinstance(exc, errors.InvalidHTTPVersion):
        return 400, f"invalid HTTP version: {exc}"
    if isinstance(exc, errors.InvalidHeader):
        return 400, f"invalid header: {exc}"
    # An unsupported transfer coding is gunicorn's 501: here a client error like any other framing.
    if isinstance(exc, (errors.ParseException, errors.InvalidChunkSize, errors.ChunkMissingTerminator)):
        return 400, f"malformed request: {type(exc).__name__}: {exc}"
    if isinstance(exc, errors.InvalidChunkExtension):
        return 400, f"malformed request: {exc}"
    return 500, "internal server error"


def request_line(received: bytearray) -> tuple[str, str]:
    """(method, path without its query) of a received request, or ("-", "-") if unreadable."""
    parts = bytes(received[: received.find(b"\r\n")]).split(b" ")
    if len(parts) != 3:
        return "-", "-"
    return parts[0].decode("latin-1"), parts[1].split(b"?", 1)[0].decode("latin-1")


def write_json_error(sock: Any, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    headers = {**(headers or {}), "X-Request-ID": request_id(None)}  # every answer has one
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nConnection: close\r\n{extra}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with contextlib.suppress(OSError):  # the client has gone
        util.write_nonblock(sock, head.encode("latin-1") + body)
