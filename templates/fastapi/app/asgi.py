"""A raw ASGI front for the model's routes; every other request goes on to the FastAPI app.

FastAPI's routing, request and response objects cost more per request than the model on a small
input does, and do nothing here: the runtime validates and answers every model route itself. So
/health, /predict, /predict_batch, /invocations, the probes, /metrics and the Open Inference
Protocol's /v2 paths are answered straight from the ASGI messages,
while /docs, /openapi.json and unknown paths are FastAPI's, as before.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from app.runtime import (
    MAX_BODY_BYTES,
    OPEN_PATHS,
    BadRequest,
    Call,
    Deferred,
    InFlight,
    Metrics,
    ModelService,
    Scored,
    Scorer,
    dumps,
    error_body,
    failure,
    headers_for,
    is_oip_path,
    log,
    log_request,
    request_id,
    score_together,
)
from uvicorn.protocols.http.auto import AutoHTTPProtocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
JSON = b"application/json"
# Requests with more rows than this already amortize the model's per-call cost: scored alone.
SMALL_REQUEST_ROWS = 16
# The request line and headers together; httptools sets no limit of its own (h11's is 16 KiB).
MAX_HEADER_BYTES = int(os.environ.get("MAX_HEADER_BYTES", 64 * 1024))
# Seconds a request's line and headers may take to arrive, from its first byte (or the connection's
# opening); uvicorn has a keep-alive timeout, but none for a request that has begun.
HEADER_TIMEOUT = float(os.environ.get("HEADER_TIMEOUT", "10"))
# Seconds the whole request, body included, may take from its first byte (as on the flask target):
# a body trickled a byte at a time would otherwise hold a connection and a slot of MAX_IN_FLIGHT.
REQUEST_TIMEOUT = float(os.environ.get("REQUEST_TIMEOUT", "30"))
# Requests in progress per worker (one event loop) before more are refused with 503: the micro-batcher
# scores every waiting small request in one model call, so an admitted request waits for at most the
# batch being scored and its own; 64 small rows take a few milliseconds for a typical model.
DEFAULT_MAX_IN_FLIGHT = 64
# The metrics of this process's ModelRoutes (one a worker process): JsonErrorsProtocol counts there
# what it answers itself, before any app sees the request (README: every answer is counted).
PROCESS_METRICS: list[Metrics | Deferred] = []


class MicroBatcher:
    """Scores the rows of small requests that arrive together in one model call.

    Rows wait for one turn of the event loop, no timer: until the requests already received have
    been read. A request alone is scored at once (no added latency); under load, the requests that
    came in while the model was busy are scored together. That spreads the model's per-call cost
    (scikit-learn's input checks: ~0.1 ms, most of a small request's) over the batch, and halves
    the CPU time per request at 16 connections.

    Used only when rows scored together get the labels they get alone and the probabilities
    within 1e-12 (checked at load on the smoke-test rows): BLAS may sum a batch in another order
    than a single row, so a probability can differ in its last bit with the traffic around it.
    MICRO_BATCH=0 turns it off, for answers that are bit for bit those of each request alone.
    """

    def __init__(self, scorer: Scorer, enabled: bool, metrics: Metrics | Deferred) -> None:
        self.scorer = scorer
        self.metrics = metrics
        self.enabled = enabled
        self.pending: list[tuple[Call, asyncio.Future[Scored]]] = []

    async def score(self, call: Call) -> Scored:
        alone = call.scorer is not None or call.params is not None  # its own scorer, or params
        if alone or not self.enabled or len(call.rows) > SMALL_REQUEST_ROWS:
            # One turn of the loop first, as a batched request waits: the requests read with this
            # one are admitted or refused (ModelRoutes.refuse) before it holds the loop, so the
            # bound on requests in progress counts them instead of leaving them queued behind it.
            await asyncio.sleep(0)
            self.metrics.scored(len(call.rows))
            return call.scored(self.scorer)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Scored] = loop.create_future()
        self.pending.append((call, future))
        if len(self.pending) == 1:  # the first of a batch: score once the loop has read the rest
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        self.metrics.scored(sum(len(call.rows) for call, _ in batch))
        results: list[Any]
        try:
            results = score_together(self.scorer, [call for call, _ in batch])
        except Exception as exc:  # a bug, not the input: fail these requests instead of hanging them
            log.exception("scoring a micro-batch failed")
            results = [exc] * len(batch)
        for (_, future), result in zip(batch, results):
            if future.done():  # its client has gone
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)


class ModelRoutes:
    """Answers the runtime's paths (with or without a trailing slash); passes on everything else."""

    def __init__(self, service: ModelService, fallback: ASGIApp) -> None:
        self.service = service
        self.fallback = fallback
        self.paths = service.paths | {path + "/" for path in service.paths}
        wanted = os.environ.get("MICRO_BATCH", "1") != "0"
        agrees = wanted and service.scorer.agrees_in_batches(service.probe)
        if type(service.metrics) is Metrics:
            # one event loop a process: the cheaper counting (see Deferred)
            service.metrics = Deferred(service.metrics)  # type: ignore[assignment]
        self.metrics = service.metrics
        PROCESS_METRICS[:] = [self.metrics]
        self.batcher = MicroBatcher(service.scorer, wanted and agrees, service.metrics)
        # the batcher's queue holds only admitted requests: this bounds it too
        self.in_flight = InFlight.from_environ(DEFAULT_MAX_IN_FLIGHT)
        self.media_types = {path: type_.encode() for path, type_ in service.media_types.items()}
        log.info("micro-batching", extra={"fields": {"wanted": wanted, "enabled": self.batcher.enabled}})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")  # a lifespan scope has none
        if scope["type"] != "http" or (path not in self.paths and not is_oip_path(path)):
            await self.guarded_fallback(scope, receive, send)
            return
        started = self.metrics.started()
        status = 500
        try:
            rid = request_id(header(scope, b"x-request-id"))
            refused = self.refuse(scope)
            if refused is None:
                try:
                    status, payload = await self.answer(scope, receive, rid, started)
                finally:
                    if path not in OPEN_PATHS:
                        self.in_flight.release()
            else:
                status, payload = refused.status, error_body(refused)
            content_type = self.media_types.get(path, JSON)
            headers = [
                (b"content-type", content_type),
                (b"content-length", b"%d" % len(payload)),
                (b"x-request-id", rid.encode()),
            ]
            if status in (401, 503):
                headers += [(name.encode(), value.encode()) for name, value in headers_for(status)]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
        finally:  # counted however it ended (a client gone, a cancelled task): the gauge never leaks
            log_request(scope["method"], path, status, started)
            self.metrics.finished(path, status, started)

    def refuse(self, scope: Scope) -> BadRequest | None:
        """The guard (app/guard.py): a missing or wrong token (401), then the bound on requests in
        progress (503, at once; never for a probe); None: admitted, and `in_flight.release()` is due
        once answered unless it is a probe."""
        auth = self.service.auth
        if auth.enabled:  # the headers are looked through only then
            refused = auth.refuse(scope["path"], authorization(scope))
            if refused is not None:
                return refused
        if scope["path"] in OPEN_PATHS:
            return None
        if not self.in_flight.admit():
            self.metrics.shed()
            return self.in_flight.overloaded()
        return None

    async def guarded_fallback(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's paths (/docs, /openapi.json, unknown ones) need the token too when auth is on,
        and answer with X-Request-ID; the lifespan's shutdown writes out the capture queue."""
        if scope["type"] != "http":
            lifespan = scope["type"] == "lifespan"
            await self.fallback(scope, receive, self.closing_capture(send) if lifespan else send)
            return
        # counted and logged like the runtime's answers (the route label: "other"), whatever FastAPI
        # answers or raises; 500 if it never began an answer
        started = self.metrics.started()
        answered = [500]
        try:
            await self.guarded(scope, receive, send, answered)
        finally:
            log_request(scope["method"], scope["path"], answered[-1], started)
            self.metrics.finished(scope["path"], answered[-1], started)

    async def guarded(self, scope: Scope, receive: Receive, send: Send, answered: list[int]) -> None:
        """One request to FastAPI's paths, its status appended to `answered` once its answer begins."""
        rid = request_id(header(scope, b"x-request-id")).encode()
        refused = self.service.auth.refuse(scope["path"], authorization(scope))
        if refused is None:
            await self.fallback(scope, receive, with_request_id(send, rid, answered))
            return
        payload = error_body(refused)
        headers = [(b"content-type", JSON), (b"content-length", b"%d" % len(payload)), (b"x-request-id", rid)]
        headers += [(name.encode(), value.encode()) for name, value in headers_for(refused.status)]
        answered.append(refused.status)
        await send({"type": "http.response.start", "status": refused.status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    def closing_capture(self, send: Send) -> Send:
        """The lifespan's `send`, writing out the capture queue before the server's shutdown completes:
        a uvicorn worker process exits without running atexit hooks."""

        async def closing(message: Message) -> None:
            capture = self.service.capture
            if message["type"] == "lifespan.shutdown.complete" and capture is not None:
                await asyncio.get_running_loop().run_in_executor(None, capture.close)
            await send(message)

        return closing

    async def answer(
        self, scope: Scope, receive: Receive, rid: str = "-", started: float = 0.0
    ) -> tuple[int, bytes]:
        """(status, JSON body) for one request to one of the runtime's paths; its capture record
        queued when capture is on."""
        call = None
        service = self.service
        try:
            body, content_type = await read_request(scope, receive)
            call = service.prepare(scope["method"], scope["path"], body, content_type)
            if isinstance(call, bytes):
                return 200, call
            answer = call.answer(*await self.batcher.score(call))
            payload = call.encode(answer)
        except Exception as exc:  # the runtime's rule: a JSON answer, a 500 only for a bug (logged)
            status, payload = failure(exc, scope["method"], scope["path"])
            if service.capture is not None:
                service.captured(rid, scope["method"], scope["path"], call, None, status, exc, started)
            return status, payload
        if service.capture is not None:
            service.captured(rid, scope["method"], scope["path"], call, answer, 200, None, started)
        return 200, payload


def header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return bytes(value)
    return None


def with_request_id(send: Send, rid: bytes, answered: list[int]) -> Send:
    """FastAPI's answers (/docs, unknown paths) carry X-Request-ID too; their status is appended
    to `answered`, for the metrics."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            answered.append(message["status"])
            message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid)]}
        await send(message)

    return sending


def authorization(scope: Scope) -> str | None:
    value = header(scope, b"authorization")
    return None if value is None else value.decode("latin-1")


async def read_request(scope: Scope, receive: Receive) -> tuple[bytes, str | None]:
    """(body, content type); a body over MAX_BODY_BYTES is refused before it is all buffered."""
    content_type = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value.decode("latin-1")
        elif name == b"content-length" and value.isdigit() and int(value) > MAX_BODY_BYTES:
            raise BadRequest.too_large()
    chunks: list[bytes] = []
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":  # the client left (or was timed out): score nothing
            raise BadRequest("the client closed the connection before its body arrived", 400)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest.too_large()
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks), content_type


class HeadersTooLarge(Exception):
    """The request line and headers are over MAX_HEADER_BYTES."""


class JsonErrorsProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP protocol (httptools, else h11), answering what it refuses itself as JSON.

    uvicorn answers a request it cannot parse (a garbage request line, a bad Content-Length, a
    malformed chunk, headers over the limit) with a plain-text 400 before any app sees it. Here it
    is {"error": "<what the parser found>"} like every other error of the service, 431 for headers
    over MAX_HEADER_BYTES, and the connection is closed as before. Run with
    `uvicorn.run(..., http="app.asgi:JsonErrorsProtocol")`.

    A request's line and headers must arrive within HEADER_TIMEOUT seconds, and all of it, body
    included, within REQUEST_TIMEOUT seconds of its first byte, else 408 and the connection is
    closed: without them a client that sends its request a byte at a time (slowloris) holds the
    socket, and on a model's route a slot of MAX_IN_FLIGHT, for as long as it likes; a few such
    clients shed every other request, a few hundred hold every file descriptor.
    """

    head_bytes = 0
    began = 0.0  # the loop's time at the request's first byte
    headers_done = False
    # One timer a request, as before the body deadline: it fires at HEADER_TIMEOUT and, once the
    # headers are in, re-arms itself for the rest of REQUEST_TIMEOUT; the message's end cancels it.
    timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self.began = self.loop.time()
        self._arm(HEADER_TIMEOUT)

    def data_received(self, data: bytes) -> None:
        if self.timer is None and (self.cycle is None or self.cycle.response_complete):
            self.began = self.loop.time()  # the first bytes of a kept-alive connection's next request
            self.headers_done = False
            self._arm(HEADER_TIMEOUT)
        super().data_received(data)

    def on_message_begin(self) -> None:
        self.head_bytes = 0
        self.headers_done = False
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self.headers_done = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._stop_waiting()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _arm(self, after: float) -> None:
        self.timer = self.loop.call_at(self.began + after, self._late)

    def _stop_waiting(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _late(self) -> None:
        self.timer = None
        if self.transport.is_closing():
            return
        if not self.headers_done:
            message = f"the request line and headers did not arrive within {HEADER_TIMEOUT:g} s"
        elif self.loop.time() < self.began + REQUEST_TIMEOUT:
            self._arm(REQUEST_TIMEOUT)
            return
        elif self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # answered without its body (a 404, a 401): nobody awaits the rest
            return
        else:  # the app's receive() then sees a disconnect, and its slot is released
            message = f"the request body did not arrive within {REQUEST_TIMEOUT:g} s"
        self._refuse(408, b"Request Timeout", message)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > MAX_HEADER_BYTES:
            raise HeadersTooLarge(
                f"the request line and headers are over the limit of {MAX_HEADER_BYTES} bytes"
            )

    def send_400_response(self, msg: str) -> None:
        """Called by uvicorn inside its `except` for the parser's error, which says what was wrong."""
        error = sys.exc_info()[1]
        cause = error.__cause__ or error.__context__ if error is not None else None
        if isinstance(cause, HeadersTooLarge):
            status, reason, message = 431, b"Request Header Fields Too Large", str(cause)
        else:
            detail = f"{type(error).__name__}: {error}" if error is not None else msg
            status, reason, message = 400, b"Bad Request", f"invalid HTTP request: {detail}"
        self._refuse(status, reason, message)

    def _refuse(self, status: int, reason: bytes, message: str) -> None:
        """Answer {"error": message} with `status` and close the connection. Counted in the metrics
        (route "other") when refused in its head: once its headers are in, the app runs it, sees
        the connection close and counts it itself."""
        if not self.headers_done:
            for metrics in PROCESS_METRICS:
                metrics.finished("-", status, metrics.started())
        body = dumps({"error": message})
        head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (
            status,
            reason,
            len(body),
        )
        head += b"x-request-id: %s\r\n" % request_id(None).encode()
        self.transport.write(head + b"connection: close\r\n\r\n" + body)
        self.transport.close()
