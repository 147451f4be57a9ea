"""A raw ASGI front for the model's routes; every other request goes on to the FastAPI app.

FastAPI's routing, request and response objects cost more per request than the model on a small
input does, and do nothing here: the runtime validates and answers every model route itself. So
/health, /predict, /predict_batch and /invocations are answered straight from the ASGI messages,
while /docs, /openapi.json and unknown paths are FastAPI's, as before.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from app.runtime import MAX_BODY_BYTES, BadRequest, ModelService, error_body, log_request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
JSON = b"application/json"


class ModelRoutes:
    """Answers the runtime's paths (with or without a trailing slash); passes on everything else."""

    def __init__(self, service: ModelService, fallback: ASGIApp) -> None:
        self.service = service
        self.fallback = fallback
        self.paths = service.paths | {path + "/" for path in service.paths}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.fallback(scope, receive, send)
            return
        started = time.perf_counter()
        status, payload = await answer(self.service, scope, receive)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", JSON), (b"content-length", b"%d" % len(payload))],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        log_request(scope["method"], scope["path"], status, started)


async def answer(service: ModelService, scope: Scope, receive: Receive) -> tuple[int, bytes]:
    """(status, JSON body) for one request to one of the runtime's paths."""
    try:
        body, content_type = await read_request(scope, receive)
    except BadRequest as exc:
        return exc.status, error_body(exc, scope["path"].rstrip("/"))
    return service.handle(scope["method"], scope["path"], body, content_type)


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
        if message["type"] == "http.disconnect":  # the client left: nobody reads the answer
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest.too_large()
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks), content_type
