"""The HTTP contract: routes, parsing, and the answers (`ModelService`); MLflow's protocol is in
mlflow_protocol.py."""

from __future__ import annotations

import contextlib
import gc
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import outputs
from .capture import SCHEMA_VERSION, Capture, now
from .guard import Auth, ConfigError
from .jsonio import JSONDecodeError, dumps, loads
from .logs import log
from .metrics import MEDIA_TYPE, OTHER, Metrics
from .oip import OpenInference, is_oip_path
from .params import Params
from .schema import MAX_BATCH_ROWS, MAX_BODY_BYTES, BadRequest, Schema
from .scoring import Scorer, load_model
from .tensors import InputSchema, input_schema

ROOT = Path(__file__).resolve().parent.parent


Scored = tuple[list[Any], Any]  # (labels, probabilities or None)


@dataclass
class Call:
    """A validated request: the rows to score and how the model's output becomes the answer."""

    rows: list[list[Any]]
    probabilities: bool
    answer: Callable[[list[Any], Any], dict[str, Any]]
    # /invocations: scored by its own scorer (MLflow's way, NaN allowed), written as MLflow writes JSON
    scorer: Any = None
    encode: Callable[[Any], bytes] = dumps
    params: dict[str, Any] | None = None  # checked against the model's ParamSchema (app/params.py)
    # /invocations scored by the service's scorer: the model's refusal as MLflow words it
    refused: Callable[[BadRequest], BadRequest] | None = None

    def scored(self, scorer: Scorer) -> Scored:
        """The model's answer to this call: by its own scorer if it has one, else by `scorer`."""
        try:
            return (self.scorer or scorer).score(self.rows, self.probabilities, self.params)
        except BadRequest as exc:
            if self.refused is None:
                raise
            raise self.refused(exc) from None


class MlflowScorer:
    """The model called as `mlflow models serve` calls it (on a DataFrame), its predictions as
    MLflow writes them, and a model that raises is MLflow's 400.

    `MlflowScorer(model, schema)` lets NaN and a missing value reach the model (sklearn's own
    finiteness check stays on). `MlflowScorer(model, schema, like=scorer)` calls the model the way
    `scorer` was chosen to (Scorer.fastest: the DataFrame's answers, bit for bit), for rows with
    every value given and finite, on which the two ways agree.
    """

    def __init__(self, model: Any, schema: InputSchema, like: Scorer | None = None) -> None:
        if like is not None:
            self.scorer = Scorer(
                model, schema, array=like.array, shortcuts=like.shortcuts, convert=outputs.as_mlflow
            )
            return
        if isinstance(schema, Schema):  # MLflow leaves a missing value to the model
            schema = Schema([{**c, "required": False} for c in schema.columns])
        self.scorer = Scorer(model, schema, convert=outputs.as_mlflow)

    def score(
        self, rows: list[list[Any]], probabilities: bool = False, params: dict[str, Any] | None = None
    ) -> Scored:
        try:
            return self.scorer.score(rows, False, params)
        except BadRequest as exc:
            raise refused_as_mlflow(exc) from None


def refused_as_mlflow(exc: BadRequest) -> BadRequest:
    """The model's refusal of an input, as `mlflow models serve` answers it."""
    from . import mlflow_protocol

    return mlflow_protocol.model_failure(exc.message)


class ModelService:
    """The model behind the HTTP contract. Build it once per process with `from_artifact`.

    A request goes route -> parse -> validate (`prepare`, giving a Call) -> score -> answer
    (`respond`); `handle` does it all at once. The ASGI adapter scores the Calls of concurrent
    requests together (app/asgi.py), which is why the steps are apart.
    """

    def __init__(self, manifest: dict[str, Any], model: Any) -> None:
        meta = manifest["model"]
        self.manifest = manifest  # read-only: adapters document their API from it
        self.name: str = meta["name"]
        self.version: str = meta["version"]
        self.schema = input_schema(meta)  # the signature's columns, or its tensor (app/tensors.py)
        self.params = Params(meta.get("params", []))
        self.model = model
        self.probe = self._probe(manifest)
        self.scorer = Scorer.fastest(model, self.schema, self.probe)
        self.classes = None if self.scorer.classes is None else self.scorer.classes.tolist()
        self.routes: dict[tuple[str, str], Callable[[Any], Call]] = {
            ("POST", "/predict"): self.predict,
            ("POST", "/predict_batch"): self.predict_batch,
            ("POST", "/invocations"): self.invocations,
        }
        # the routes whose body is JSON parsed by `parse`; /invocations parses its own (text/csv too)
        self.json_routes = {key: route for key, route in self.routes.items() if key[1] != "/invocations"}
        self.paths = {path for _, path in self.routes} | {"/health", "/ping", "/version"} | PROBES.keys()
        self.paths |= {"/metrics"}
        self.mlflow_scorer = MlflowScorer(model, self.schema)
        # /invocations rows with every value given and finite: scored the fast way, and with the
        # /predict requests of the micro-batch when the model's predictions are the same JSON both
        # ways (a 1-D array of labels or numbers, as most models answer)
        self.mlflow_fast = MlflowScorer(model, self.schema, like=self.scorer)
        self.mlflow_joins = isinstance(self.schema, Schema) and self._same_predictions()
        # GET /version answers as MLflow's scoring server: the MLflow version, as a bare string
        self.version_body = str(meta.get("mlflow_version") or "unknown").encode()
        # /health never changes: serialize it once
        self.health_body = dumps(self.health())
        self.oip = OpenInference(manifest, self.schema, self.classes, self.parse)
        self.metrics = Metrics.chosen(meta, manifest.get("target", "-"), self.paths, _route_label)
        self.auth = Auth.from_environ()  # off unless AUTH_TOKEN_SHA256 or AUTH_TOKENS_FILE (app/guard.py)
        self.capture = Capture.from_environ(self.metrics.captured)  # off unless CAPTURE (app/capture.py)
        self.service_name = str(manifest.get("name", self.name))
        # adapters answer JSON but for these paths
        self.media_types = {"/metrics": MEDIA_TYPE, "/metrics/": MEDIA_TYPE}
        # loaded, and warmed up on the smoke-test rows (Scorer.fastest scored them): ready
        self.ready = True
        self.draining = False  # stopping (`drain`): not ready again

    @classmethod
    def from_artifact(cls, root: Path = ROOT, own_process: bool = True) -> ModelService:
        """The service of the artifact at `root`, loaded and warmed up. `own_process`: serving is
        this process's whole job (every server adapter, not the embedded package, which lives in
        its user's process): what is alive once loaded is frozen out of the cyclic collector."""
        manifest = json.loads((root / "deployctl.json").read_text())
        model = load_model(manifest["model"]["loader"], root / "model")
        try:
            service = cls(manifest, model)  # also warms the model up on the smoke-test rows
        except ConfigError as exc:  # a setting it cannot honour: one line, no traceback, no start
            raise SystemExit(f"the service cannot start: {exc}") from None
        if own_process:
            # The imports and the model (MLflow, pandas, scikit-learn: some 140,000 objects the
            # collector tracks) live as long as the process, yet every full collection walked them
            # all: 60-170 ms with every request stopped, every few seconds under load with capture
            # on (fastapi's p99 at 16 connections: 80-120 ms). Frozen, a full collection walks only
            # what serving allocated since: 4-6 ms (bench/results.md).
            gc.freeze()
        log.info("model loaded", extra={"fields": {"scoring": service.scorer.options}})
        return service

    def _probe(self, manifest: dict[str, Any]) -> list[list[Any]]:
        """The smoke-test rows (real input examples) that pass validation."""
        rows = []
        for case in manifest.get("smoke_cases", []):
            with contextlib.suppress(BadRequest):
                rows.append(self.schema.row(case["row"], "smoke case"))
        return rows

    def drain(self) -> None:
        """The server is stopping (SIGTERM): not ready from now on, so that probes and load
        balancers send nothing new while the requests in progress finish (app/server.py)."""
        self.ready, self.draining = False, True

    def not_ready(self) -> BadRequest:
        """The 503 of a readiness probe (or gRPC's UNAVAILABLE) while not ready, saying why."""
        why = "the server is shutting down" if self.draining else "the model is still loading"
        return BadRequest(f"not ready: {why}", 503)

    # -- endpoints: each takes the parsed JSON body and returns the Call that answers it ----------

    def health(self) -> dict[str, Any]:
        return {"status": "healthy", "model_name": self.name, "model_version": self.version}

    def predict(self, body: Any) -> Call:
        if type(body) is not dict or "features" not in body:
            raise BadRequest('expected an object {"features": [...]} or {"features": {...}}')
        params = self.params.strict(body.get("params"))
        return Call([self.schema.row(body["features"], "features")], True, self._one_answer, params=params)

    def predict_batch(self, body: Any) -> Call:
        items = body.get("instances") if type(body) is dict else body
        if items is None:
            raise BadRequest('expected {"instances": [[...], ...]} or a list of objects')
        params = self.params.strict(body.get("params") if type(body) is dict else None)
        return Call(self.schema.rows(items, "instances"), True, self._batch_answer, params=params)

    def invocations(self, body: Any) -> Call:
        """MLflow's scoring protocol on a parsed JSON body (the embedding API's `answer`)."""
        return self.mlflow_call(dumps(body), "application/json")

    def mlflow_call(self, body: bytes, content_type: str | None) -> Call:
        """MLflow's scoring protocol, answered as `mlflow models serve` answers it."""
        from . import mlflow_protocol  # imports pandas: only when /invocations is asked

        conforming = mlflow_protocol.conforming_rows(body, content_type, self.schema)
        if conforming is not None:  # the usual request: its rows without a DataFrame
            rows, params = conforming
        else:  # everything else, as MLflow parses it (its coercions and errors)
            frame, params = mlflow_protocol.frame_of(body, content_type, self.schema)
            if len(frame) > MAX_BATCH_ROWS:
                raise BadRequest(f"input: {len(frame)} rows is over the limit of {MAX_BATCH_ROWS}", 413)
            rows = mlflow_protocol.rows_of(frame, self.schema)  # MLflow checks the input before params
        checked = self.params.mlflow(params)
        encode = mlflow_protocol.encode
        if isinstance(self.schema, Schema) and (conforming is not None or mlflow_protocol.complete(rows)):
            if self.mlflow_joins:  # scored by the service's scorer, in the micro-batch
                return Call(rows, False, _predictions, None, encode, checked, refused_as_mlflow)
            return Call(rows, False, _predictions, self.mlflow_fast, encode, checked)
        return Call(rows, False, _predictions, self.mlflow_scorer, encode, checked)

    def _same_predictions(self) -> bool:
        """Whether the service's scorer gives /invocations' predictions (MLflow's JSON of the
        model's output) as it gives /predict's labels, on the smoke-test rows."""
        if not self.probe:
            return False
        try:
            mlflow = self.mlflow_fast.score(self.probe)[0]
            ours = self.scorer.score(self.probe, False)[0]
        except BadRequest:
            return False
        return bool(mlflow == ours)

    def _one_answer(self, labels: list[Any], probas: Any) -> dict[str, Any]:
        answer: dict[str, Any] = {"prediction": labels[0]}
        if probas is not None:
            assert self.classes is not None
            key = "probability" if len(self.classes) == 2 else "probabilities"
            answer[key] = self._probabilities(probas[:1])[0]
        answer["model_version"] = self.version
        return answer

    def _batch_answer(self, labels: list[Any], probas: Any) -> dict[str, Any]:
        answer: dict[str, Any] = {"predictions": labels}
        if probas is not None:
            answer["probabilities"] = self._probabilities(probas)
        answer["model_version"] = self.version
        return answer

    def answer(self, path: str, body: Any) -> dict[str, Any]:
        """The answer to POSTing `body` (parsed JSON) to `path`, as a dict: the embedding API.

        `service.answer("/predict", {"features": {...}})` gives what the HTTP service answers, as
        {"prediction": ..., "model_version": ...}; input it would refuse raises BadRequest.
        """
        endpoint = self.routes.get(("POST", path.rstrip("/") or "/"))
        if endpoint is None:
            raise BadRequest(f"POST {path} is not served", 405 if path in self.paths else 404)
        call = endpoint(body)
        return call.answer(*self.score(call))

    def score(self, call: Call) -> Scored:
        self.metrics.scored(len(call.rows))
        return call.scored(self.scorer)

    # -- plumbing ---------------------------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        body: bytes,
        content_type: str | None = None,
        authorization: str | None = None,
        request_id: str = "-",
    ) -> tuple[int, bytes]:
        """Answer one HTTP request: (status, JSON bytes). Never raises (see `failure`).

        `authorization` is the request's Authorization header: checked first when auth is on
        (a 401 then needs `guard.headers_for(status)` beside it). `request_id` (capture.request_id)
        names the request in its capture record; the adapter returns it as X-Request-ID."""
        started = self.metrics.started()
        status = 500
        call: Call | bytes | None = None
        answer = error = None
        try:
            refused = self.auth.refuse(path, authorization)
            if refused is not None:
                raise refused
            call = self.prepare(method, path, body, content_type)
            if isinstance(call, bytes):
                status, payload = 200, call
            else:
                answer = call.answer(*self.score(call))
                status, payload = 200, call.encode(answer)
        except Exception as exc:
            status, payload = failure(exc, method, path)
            error = exc
        finally:  # counted however it ended: the in-progress gauge never leaks
            self.metrics.finished(path, status, started)
        if self.capture is not None and not isinstance(call, bytes):
            self.captured(request_id, method, path, call, answer, status, error, started)
        return status, payload

    def captured(
        self,
        request_id: str,
        method: str,
        path: str,
        call: Call | None,
        answer: Any,
        status: int,
        error: Exception | None,
        started: float,
    ) -> None:
        """Queue the capture record of one scoring request, when it is in the sample; a refused
        one (no Call, or the model's refusal) only with CAPTURE_ERRORS, and only on a scoring route."""
        capture = self.capture
        if capture is None or not capture.wanted():
            return
        route = path.rstrip("/") or "/"
        if error is not None:
            scoring = (method, route) in self.routes or (method == "POST" and route.endswith("/infer"))
            if not capture.errors or not scoring:
                return
        label = route if route in self.paths else _route_label(route)
        text = None if error is None else _error_text(error)
        self.record_capture(request_id, label, call, answer, status, text, started)

    def captured_call(
        self,
        request_id: str,
        route: str,
        call: Call | None,
        answer: Any,
        status: int,
        error: Exception | None,
        started: float,
    ) -> None:
        """Queue the capture record of a scoring call of another binding (gRPC's ModelInfer), by
        `captured`'s rules: when in the sample, and a refused one only with CAPTURE_ERRORS.
        `route` is its label as recorded (the metrics' label of that binding)."""
        capture = self.capture
        if capture is None or not capture.wanted() or (error is not None and not capture.errors):
            return
        text = None if error is None else _error_text(error)
        self.record_capture(request_id, route, call, answer, status, text, started)

    def record_capture(
        self,
        request_id: str,
        route: str,
        call: Call | None,
        answer: Any,
        status: int,
        error: str | None,
        started: float,
    ) -> None:
        """Queue one capture record, once the adapter has decided it is wanted (capture on, in the
        sample): `route` as recorded (the kafka consumer's `kafka:<input topic>`), `error` the
        error answered."""
        assert self.capture is not None
        elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
        record = {
            "schema_version": SCHEMA_VERSION,
            "request_id": request_id,
            "time": now(),
            "model": {"name": self.name, "version": self.version},
            "service": self.service_name,
            "route": route,
            "input": None if call is None else {"columns": self.schema.names, "rows": call.rows},
            "params": None if call is None else call.params,
            "answer": answer,
            "status": status,
            "error": error,
            "latency_ms": elapsed_ms,
        }
        self.capture.record(record)

    def prepare(self, method: str, path: str, body: bytes, content_type: str | None) -> Call | bytes:
        """Route, parse and validate one request: the Call to score, or the answer (/health)."""
        path = path.rstrip("/") or "/"
        if path in ("/health", "/ping") and method in ("GET", "HEAD"):
            return self.health_body
        endpoint = self.json_routes.get((method, path))
        if endpoint is not None:
            return endpoint(self.parse(body, content_type))
        if path == "/invocations" and method == "POST":  # MLflow's protocol parses its own body
            if len(body) > MAX_BODY_BYTES:
                raise BadRequest.too_large()
            return self.mlflow_call(body, content_type)
        if path == "/version" and method in ("GET", "HEAD"):
            return self.version_body
        if is_oip_path(path):
            unready = None if self.ready else self.not_ready()
            answer = self.oip.prepare(method, path, body, content_type, unready)
            return answer if isinstance(answer, bytes) else Call(*answer)
        if path in PROBES and method in ("GET", "HEAD"):
            if path == "/health/ready" and not self.ready:
                raise self.not_ready()
            return PROBES[path]
        if path == "/metrics" and method in ("GET", "HEAD"):
            return self.metrics.exposition()
        raise BadRequest(f"{method} {path} is not served", 405 if path in self.paths else 404)

    @staticmethod
    def respond(call: Call, scored: Scored) -> bytes:
        return call.encode(call.answer(*scored))

    @staticmethod
    def parse(body: bytes, content_type: str | None = None) -> Any:
        if len(body) > MAX_BODY_BYTES:
            raise BadRequest.too_large()
        if content_type and "json" not in content_type.lower():
            raise BadRequest(f"content type '{content_type}' is not supported; send application/json", 415)
        if not body:
            raise BadRequest("the request body is empty; send a JSON object")
        try:
            return loads(body)
        except (JSONDecodeError, ValueError, UnicodeDecodeError) as exc:
            try:  # NaN and Infinity literals (MLflow writes NaN in its input examples): rare, slow path
                return json.loads(body)
            except (ValueError, UnicodeDecodeError, RecursionError):
                raise BadRequest(f"the body is not valid JSON: {exc}") from None

    def _probabilities(self, probas: Any) -> list[Any]:
        """Per row: P(classes_[1]) for a binary classifier, {class: p} for a multi-class one."""
        assert self.classes is not None
        if len(self.classes) == 2:
            return probas[:, 1].tolist()
        keys = [str(c) for c in self.classes]
        return [dict(zip(keys, row)) for row in probas.tolist()]


# GET /health/live: the process answers; /health/ready: the model is loaded and warmed up
PROBES = {"/health/live": dumps({"status": "live"}), "/health/ready": dumps({"status": "ready"})}


def _route_label(path: str) -> str:
    """The metrics label of a path that is not one of the service's fixed paths."""
    return (OpenInference.label(path.rstrip("/")) if is_oip_path(path) else None) or OTHER


def _predictions(labels: list[Any], _: Any) -> dict[str, Any]:
    return {"predictions": labels}


def _error_text(exc: Exception) -> str:
    """The error a capture record holds: what the client was answered."""
    if isinstance(exc, BadRequest):
        return exc.message
    return f"internal error: {type(exc).__name__}"


def status_of(exc: BaseException) -> int:
    """The HTTP status `failure` answers `exc` with: the input's fault (4xx), or the service's (500)."""
    if isinstance(exc, BadRequest):
        return exc.status
    return 400 if isinstance(exc, RecursionError) else 500


def error_body(exc: BadRequest, path: str = "") -> bytes:
    body: dict[str, Any] = {"error": exc.message}
    if path == "/invocations":  # MLflow clients read error_code and message
        body.update(
            error_code=exc.error_code, message=exc.message, sqlstate=exc.sqlstate, error_class=exc.error_class
        )
    try:
        return dumps(body)
    except (TypeError, ValueError):  # a message quoting text no UTF-8 can hold (a lone surrogate)
        return json.dumps(body).encode()  # ASCII, with such text escaped


def failure(exc: Exception, method: str, path: str) -> tuple[int, bytes]:
    """The answer to a request whose handling raised, whatever it raised: the rule every adapter
    follows, so that no exception reaches the server (a 500 page, a dropped connection).

    BadRequest is the input's fault, answered with its status. RecursionError is too: a body
    nested deeper than Python's stack, which no model input is. Anything else is a bug of the
    service: a 500 {"error": ...} naming the exception, and one JSON log line with its traceback.
    """
    path = path.rstrip("/")
    if isinstance(exc, BadRequest):
        return exc.status, error_body(exc, path)
    if isinstance(exc, RecursionError):
        return status_of(exc), error_body(BadRequest("the input is nested too deeply"), path)
    log.error("request failed", exc_info=exc, extra={"fields": {"method": method, "path": path}})
    return 500, error_body(BadRequest(f"internal error: {type(exc).__name__}", 500, "INTERNAL_ERROR"), path)
