"""KServe's `inference.GRPCInferenceService` on grpc.aio, in the REST server's event loop.

Every RPC is answered by the REST binding's logic (app/oip.py through convert.py), behind the
same door: the bearer token of app/guard.py (`authorization` metadata; the liveness and
readiness RPCs stay open, as /v2/health/* do), the same bound on requests in progress, the same
micro-batched scoring, the same metrics (route label `grpc`) and the same traffic capture
(app/capture.py: ModelInfer recorded under that route label, its request id the caller's
`x-request-id` metadata or a generated one, returned as `x-request-id` trailing metadata).
A refused request is a status with the REST error's message: INVALID_ARGUMENT (400, 413, 415),
NOT_FOUND (404), UNAUTHENTICATED (401), RESOURCE_EXHAUSTED (overloaded), UNAVAILABLE (a new
ModelInfer once the server is stopping, when ServerReady and ModelReady answer false); INTERNAL
only for a bug, logged with its traceback.

Settings: GRPC=0 turns it off; GRPC_PORT (default 8081); GRPC_MAX_MESSAGE_BYTES, the largest
request and answer (default 4 MiB, gRPC's own default; over it: RESOURCE_EXHAUSTED from gRPC).
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from grpc import aio

from ..capture import request_id
from ..guard import ConfigError, InFlight
from ..logs import log, log_request
from ..metrics import GRPC_ROUTE
from ..schema import BadRequest
from ..service import Call, ModelService, Scored
from . import SERVICE, convert
from . import deployctl_oip_predict_v2_pb2 as pb

DEFAULT_PORT = 8081
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# the REST path whose guard rule each RPC follows (open probes, or a token when auth is on)
LIVE, READY, MODELS = "/v2/health/live", "/v2/health/ready", "/v2/models"
CODES = {
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    503: grpc.StatusCode.UNAVAILABLE,
}
HINT = "set GRPC_PORT to a free port, or GRPC=0 to serve HTTP only"
REQUEST_ID = "x-request-id"  # the metadata key of the request id, as HTTP's X-Request-ID header
Score = Callable[[Call], Awaitable[Scored]]
Answer = Callable[[Any, aio.ServicerContext], Awaitable[Any]]  # an RPC's answer to one request


class Refused(BadRequest):
    """A call the guard turns away before its answer, with the status code that says why."""

    def __init__(self, refusal: BadRequest, code: grpc.StatusCode) -> None:
        super().__init__(refusal.message, refusal.status)
        self.code = code


class Settings:
    """GRPC, GRPC_PORT and GRPC_MAX_MESSAGE_BYTES, checked (ConfigError: the service will not start)."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self.enabled = environ.get("GRPC", "1") != "0"
        self.port = _whole(environ, "GRPC_PORT", DEFAULT_PORT, 1, 65535)
        self.max_message_bytes = _whole(
            environ, "GRPC_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES, 1, 2**31 - 1
        )
        # several worker processes share the port (SO_REUSEPORT: the kernel spreads connections);
        # one process alone binds it exclusively, so a second service cannot silently share it
        self.reuse_port = _whole(environ, "WORKERS", 1, 0, 2**31 - 1) > 1
        host = environ.get("HOST", "0.0.0.0")
        self.address = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


def _whole(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high}; got '{raw}'")
    return int(raw)


class InferenceService:
    """The six RPCs of the service, each a coroutine (request, context) -> response."""

    def __init__(self, service: ModelService, score: Score, in_flight: InFlight, metrics: Any) -> None:
        self.service = service
        self.oip = service.oip
        self.score = score
        self.in_flight = in_flight
        self.metrics = metrics
        self.metadata = convert.metadata_response(self.oip.metadata)
        self.server = convert.server_metadata_response(self.oip.server)

    def handlers(self) -> grpc.GenericRpcHandler:
        # chosen once: with capture off, ModelInfer does nothing for it (no metadata read, no id)
        infer = self.model_infer if self.service.capture is None else self.captured_infer
        rpcs: dict[str, tuple[str, Answer, Any, Any]] = {
            "ServerLive": (LIVE, self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": (READY, self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ModelReady": (MODELS, self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ServerMetadata": (
                MODELS,
                self.server_metadata,
                pb.ServerMetadataRequest,
                pb.ServerMetadataResponse,
            ),
            "ModelMetadata": (MODELS, self.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
            "ModelInfer": (MODELS, infer, pb.ModelInferRequest, pb.ModelInferResponse),
        }
        methods = {
            name: grpc.unary_unary_rpc_method_handler(
                self.guarded(name, path, answer),
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
            for name, (path, answer, request, response) in rpcs.items()
        }
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    def guarded(self, name: str, path: str, answer: Answer) -> Any:
        """The RPC behind the guard, counted in the metrics and the access log; refusals as statuses."""
        method = f"/{SERVICE}/{name}"
        probe = path != MODELS
        infer = name == "ModelInfer"

        async def rpc(request: Any, context: aio.ServicerContext) -> Any:
            started = self.metrics.started()
            status, admitted = 500, False
            try:
                refused = self.refusal(path, infer, context)
                if refused is not None:
                    raise refused
                admitted = not probe
                response = await answer(request, context)
                status = 200
                return response
            except Refused as exc:
                status = exc.status
                await context.abort(exc.code, exc.message)
            except BadRequest as exc:
                status = exc.status
                await context.abort(CODES.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT), exc.message)
            except Exception as exc:  # the rule of app/service.py's `failure`: only a bug is INTERNAL
                log.error(
                    "request failed", exc_info=exc, extra={"fields": {"method": "gRPC", "path": method}}
                )
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")
            finally:
                if admitted:
                    self.in_flight.release()
                log_request("gRPC", method, status, started)
                self.metrics.finished(GRPC_ROUTE, status, started)

        return rpc

    def refusal(self, path: str, infer: bool, context: aio.ServicerContext) -> Refused | None:
        """Why a call is turned away before its answer: no token; a ModelInfer once the server is
        stopping (UNAVAILABLE, so that the client tries another replica, while the readiness RPCs
        answer false); the bound on requests in progress. None: admitted, and a call other than
        the probes then holds a slot of that bound until answered."""
        refused = self.service.auth.refuse(path, _metadata(context, "authorization"))
        if refused is not None:
            return Refused(refused, CODES.get(refused.status, grpc.StatusCode.UNAUTHENTICATED))
        if path != MODELS:
            return None
        if infer and self.service.draining:
            return Refused(self.service.not_ready(), grpc.StatusCode.UNAVAILABLE)
        if not self.in_flight.admit():
            self.metrics.shed()
            return Refused(self.in_flight.overloaded(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        return None

    # -- the RPCs ---------------------------------------------------------------------------------

    async def server_live(self, _: pb.ServerLiveRequest, __: aio.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, _: pb.ServerReadyRequest, __: aio.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.service.ready)  # false from SIGTERM on

    async def model_ready(
        self, request: pb.ModelReadyRequest, _: aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        self.oip.route(model_path(request.name, request.version))  # NOT_FOUND for another model
        return pb.ModelReadyResponse(ready=self.service.ready)

    async def server_metadata(
        self, _: pb.ServerMetadataRequest, __: aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return self.server

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, _: aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        self.oip.route(model_path(request.name, request.version))
        return self.metadata

    async def model_infer(
        self, request: pb.ModelInferRequest, _: aio.ServicerContext
    ) -> pb.ModelInferResponse:
        call = self.infer_call(request)
        scored = await self.score(call)
        return convert.infer_response(call.answer(*scored), raw=bool(request.raw_input_contents))

    async def captured_infer(
        self, request: pb.ModelInferRequest, context: aio.ServicerContext
    ) -> pb.ModelInferResponse:
        """ModelInfer with CAPTURE on: answered as `model_infer`, its record queued as an HTTP
        request's (a refused one only with CAPTURE_ERRORS); the request id goes back to the
        client as trailing metadata, which a refusal's status carries too."""
        started = time.perf_counter()
        rid = request_id(_metadata(context, REQUEST_ID))
        context.set_trailing_metadata(((REQUEST_ID, rid),))
        call: Call | None = None
        try:
            call = self.infer_call(request)
            answer = call.answer(*await self.score(call))
            response = convert.infer_response(answer, raw=bool(request.raw_input_contents))
        except Exception as exc:
            self.service.captured_call(rid, GRPC_ROUTE, call, None, _status(exc), exc, started)
            raise
        self.service.captured_call(rid, GRPC_ROUTE, call, answer, 200, None, started)
        return response

    def infer_call(self, request: pb.ModelInferRequest) -> Call:
        """The validated request to score, as REST's infer makes it (the same errors)."""
        self.oip.route(model_path(request.model_name, request.model_version) + "/infer")
        rows, probabilities, answer = self.oip.infer(convert.infer_body(request))
        return Call(rows, probabilities, answer)


def model_path(name: str, version: str) -> str:
    """The REST path of a model (and version), whose routing gives the same NOT_FOUND answers."""
    if "/" in name + version:  # a path of its own, which must not route elsewhere
        raise BadRequest(f"model '{name}' version '{version}' is not served here", 404)
    return f"/v2/models/{name}" + (f"/versions/{version}" if version else "")


async def start(
    service: ModelService, score: Score, in_flight: InFlight, metrics: Any, settings: Settings
) -> aio.Server:
    """The gRPC server, started on settings.address in the running event loop."""
    limit = settings.max_message_bytes
    server = aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", int(settings.reuse_port)),
        ]
    )
    server.add_generic_rpc_handlers((InferenceService(service, score, in_flight, metrics).handlers(),))
    try:
        port = server.add_insecure_port(settings.address)
    except RuntimeError as exc:  # grpcio raises where older versions returned 0
        raise ConfigError(f"the gRPC port {settings.address} cannot be bound ({exc}); {HINT}") from None
    if port == 0:
        raise ConfigError(f"the gRPC port {settings.address} cannot be bound; {HINT}")
    await server.start()
    log.info("gRPC serving", extra={"fields": {"address": settings.address, "port": port}})
    return server


def _metadata(context: aio.ServicerContext, wanted: str) -> str | None:
    """The value of a text metadata key of the call (gRPC gives the keys lowercase)."""
    for key, value in context.invocation_metadata() or ():
        if key == wanted:
            return value if isinstance(value, str) else None
    return None


def _status(exc: Exception) -> int:
    """The HTTP status counted (and recorded) for an answer that raised: a bug's is 500."""
    return exc.status if isinstance(exc, BadRequest) else 500
