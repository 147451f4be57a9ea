"""The HTTP contract every target serves, checked against the answers recorded at generate time.

One module for the checks and their client, used by `deployctl.checks.smoke` (a started artifact, or a
deployed URL) and by targets alike (Lambda runs the contract over API Gateway events too). The
client sends through a transport: plain HTTP by default; a target that answers without a socket
(Lambda's handler invoked with events) passes its own transport, and every check stays the same.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from deployctl.errors import EndpointUnreachable
from deployctl.expect import runtime_module, same_prediction
from deployctl.manifest import Artifact
from deployctl.process import request

# Answers a load balancer or gateway gives while a rollout settles: worth another try.
RETRY_STATUSES = frozenset({502, 503, 504})
MAX_BACKOFF = 15.0
HEALTH = "GET /health: the pinned model version"
NO_ANSWER = (OSError, http.client.HTTPException)  # refused, reset, DNS, TLS, timeout, not HTTP


@dataclass
class Check:
    """One smoke-test step's outcome, as shown in the report table (and the JSON and JUnit reports)."""

    name: str
    ok: bool
    detail: str = ""
    ms: float | None = None
    expected: str | None = None  # on a failure, when there is one thing it should have been
    got: str | None = None


class Transport(Protocol):
    """Sends one request and returns (status, body bytes)."""

    def send(
        self, method: str, path: str, data: bytes | None, headers: dict[str, str], timeout: float
    ) -> tuple[int, bytes]: ...


@dataclass(frozen=True)
class HTTPTransport:
    """A real HTTP request on a fresh connection to `base_url`."""

    base_url: str

    def send(
        self, method: str, path: str, data: bytes | None, headers: dict[str, str], timeout: float
    ) -> tuple[int, bytes]:
        return request(self.base_url, method, path, data, timeout=timeout, headers=headers)


@dataclass(frozen=True)
class Exchange:
    """One request a client sent, under its own X-Request-ID, and the answer it got."""

    request_id: str
    method: str
    path: str
    status: int
    body: bytes


class Client:
    """A tiny client: keeps the smoke test free of extra dependencies.

    `base_url` names the endpoint in messages; `transport` (default: HTTP to `base_url`) sends.
    With a `journal`, each request goes with an X-Request-ID of its own and is written down with
    its answer (the capture check matches them with the service's records).
    """

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
        transport: Transport | None = None,
        journal: list[Exchange] | None = None,
    ) -> None:
        self.base_url = base_url
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.transport: Transport = transport or HTTPTransport(base_url)
        self.journal = journal

    def call(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, Any, float]:
        """(status, the answer parsed as JSON or its first 200 characters, milliseconds)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        started = time.perf_counter()
        status, payload = self.send(method, path, data)
        ms = (time.perf_counter() - started) * 1000
        try:
            return status, json.loads(payload), ms
        except ValueError:
            return status, payload.decode(errors="replace")[:200], ms

    def send(self, method: str, path: str, data: bytes | None) -> tuple[int, bytes]:
        if self.journal is None:
            return self.transport.send(method, path, data, dict(self.headers), self.timeout)
        request_id = f"smoke-{len(self.journal) + 1}"
        headers = {**self.headers, "X-Request-ID": request_id}
        status, payload = self.transport.send(method, path, data, headers, self.timeout)
        self.journal.append(Exchange(request_id, method, path, status, payload))
        return status, payload


@dataclass
class Problem:
    """Why an answer is wrong, with what it should have been and what it was where there is one."""

    detail: str
    expected: Any = None
    got: Any = None
    retryable: bool = False  # a state a settling rollout passes through
    elsewhere: bool = False  # the endpoint serves another model or version: the URL, not the service


def http_checks(
    artifact: Artifact,
    client: Client,
    retries: int = 0,
    log: Callable[[str], None] | None = None,
    metrics: bool = False,
) -> list[Check]:
    """The HTTP contract, checked against the outputs recorded at generate time.

    The first check is `/health` naming the pinned model version; if it fails, nothing else is
    asked: every other answer would be compared with another model's. With `metrics` (a service
    started here, the only client), /metrics must count exactly the requests the checks sent.
    """
    model, cases = artifact.model, artifact.smoke_cases
    health = health_check(model, client, retries, log)
    if not health.ok:
        return [health]
    names = [c["name"] for c in model["columns"]]
    tensor = model.get("tensor") is not None  # a row is then one example, a nested list
    checks = [health]
    for i, case in enumerate(cases):
        # the first row goes positionally (signature order), the others keyed by column name
        features = [case["row"][n] for n in names] if i == 0 and not tensor else case["row"]
        form = "example" if tensor else "list" if i == 0 else "object"
        checks.append(
            _check(
                client,
                f"POST /predict row {i} ({form})",
                "POST",
                "/predict",
                {"features": features},
                partial(predict_problem, case=case, model=model),
            )
        )
    rows = [c["row"] for c in cases]
    checks.append(
        _check(
            client,
            f"POST /predict_batch {len(rows)} rows",
            "POST",
            "/predict_batch",
            {"instances": rows},
            lambda b: _batch(b, cases, model),
        )
    )
    split = {"columns": names, "data": [[r[n] for n in names] for r in rows]}
    body, form = ({"inputs": rows}, "inputs") if tensor else ({"dataframe_split": split}, "dataframe_split")
    checks.append(
        _check(
            client,
            f"POST /invocations {form}",
            "POST",
            "/invocations",
            body,
            lambda b: _predictions(b, cases),
        )
    )
    checks += oip_checks(artifact, client)
    checks.append(_expect_4xx(client, "POST /predict malformed JSON", b"{not json"))
    checks.append(_expect_4xx(client, "POST /predict wrong shape", b'{"features": "oops"}'))
    checks.append(
        _check(client, "GET /health after bad input", "GET", "/health", None, lambda b: _health(b, model))
    )
    if metrics:
        sent = {("/predict", "200"): len(cases), ("/predict_batch", "200"): 1, ("/predict", "400"): 2}
        checks.append(metrics_check(client, {**sent, ("/v2/models/{name}/infer", "200"): 1}))
    return checks


def oip_checks(artifact: Artifact, client: Client) -> list[Check]:
    """The Open Inference Protocol v2: ready, and one infer of the recorded rows."""
    model, cases = artifact.model, artifact.smoke_cases
    ready = _check(
        client,
        "GET /v2/health/ready",
        "GET",
        "/v2/health/ready",
        None,
        lambda b: None if b == {"ready": True} else Problem(f"not ready: {b}", {"ready": True}, b),
    )
    infer = _check(
        client,
        f"POST /v2/models/{artifact.name}/infer {len(cases)} rows",
        "POST",
        f"/v2/models/{artifact.name}/infer",
        {"id": "smoke-test", "inputs": _oip_inputs(model, cases)},
        lambda b: _oip_answer(b, cases, model),
    )
    return [ready, infer]


# MLflow signature column type -> the Open Inference Protocol's tensor datatype (as app/oip.py says)
def _oip_inputs(model: dict[str, Any], cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The recorded rows as infer inputs: a tensor [N] per column, or a tensor signature's one
    input [N, ...] (its examples nested as recorded)."""
    import numpy as np

    types = runtime_module("oip_types")  # the service's own table
    tensor = model.get("tensor")
    if tensor is not None:
        rows = [case["row"] for case in cases]
        dtype = np.dtype(tensor["dtype"])
        datatype = types.tensor_datatype(dtype.kind, dtype.itemsize)
        return [{"name": "input-0", "datatype": datatype, "shape": _nested_shape(rows), "data": rows}]
    return [
        {"name": c["name"], "datatype": types.DATATYPES[c["type"]], "shape": [len(cases)], "data": [
            case["row"][c["name"]] for case in cases
        ]}
        for c in model["columns"]
    ]  # fmt: skip


def _nested_shape(values: Any) -> list[int]:
    shape = []
    while isinstance(values, list):
        shape.append(len(values))
        values = values[0] if values else None
    return shape


def _oip_predictions(outputs: dict[Any, Any], recorded: Any) -> list[Any] | None:
    """The per-row predictions an infer answer holds, in the form /predict_batch gives them: a tensor
    per output for a model of several named outputs; `predict`, [N] or [N, ...] row-major, else."""
    names = list(recorded) if isinstance(recorded, dict) else ["predict"]
    tensors: list[dict[str, Any]] = [o for o in map(outputs.get, names) if isinstance(o, dict)]
    if len(tensors) != len(names) or not all(isinstance(t.get("data"), list) for t in tensors):
        return None
    columns = [_unflatten(t["data"], t.get("shape")) for t in tensors]
    if not isinstance(recorded, dict):
        return columns[0]
    return [dict(zip(names, row)) for row in zip(*columns)]


def _unflatten(data: list[Any], shape: Any) -> list[Any]:
    if not isinstance(shape, list) or len(shape) < 2 or any(isinstance(v, list) for v in data):
        return data
    for size in reversed(shape[1:]):
        data = [data[i : i + size] for i in range(0, len(data), size)] if size else []
    return data


def _oip_answer(body: Any, cases: list[dict[str, Any]], model: dict[str, Any]) -> Problem | None:
    """An infer answer: `predict` (or a model's named outputs) and `predict_proba` ([N, n_classes])
    as recorded."""
    outputs = (
        {o.get("name"): o for o in body.get("outputs", []) if isinstance(o, dict)}
        if isinstance(body, dict)
        else {}
    )
    predictions = _oip_predictions(outputs, cases[0]["prediction"])
    if predictions is None:
        return Problem(f"not the model's outputs: {str(body)[:200]}", "outputs", body)
    problem = _predictions({"predictions": predictions}, cases)
    classes = model.get("classes")
    if problem or not classes or "probabilities" not in cases[0]:
        return problem
    flat = outputs.get("predict_proba", {}).get("data") or []
    width = len(classes)
    rows = [dict(zip(map(str, classes), flat[i * width : (i + 1) * width])) for i in range(len(cases))]
    tolerance = model["loader"].get("tolerance", 1e-12)  # an ONNX model's (see _probability_problem)
    for case, got in zip(cases, rows):
        want = case["probabilities"]
        if set(got) != set(want) or not all(same_prediction(want[k], got[k], tolerance) for k in want):
            return Problem(f"predict_proba {got} != recorded {want}", want, got)
    return None


def metrics_check(client: Client, sent: dict[tuple[str, str], int]) -> Check:
    """GET /metrics parses as Prometheus text and counts, per (route, code), what was sent."""
    from prometheus_client.parser import text_string_to_metric_families

    name = "GET /metrics counts the smoke test's requests"
    started = time.perf_counter()
    try:
        status, payload = client.send("GET", "/metrics", None)
    except NO_ANSWER as exc:
        return Check(name, False, f"no answer: {describe(exc)}", None, "HTTP 200", "no answer")
    ms = (time.perf_counter() - started) * 1000
    if status != 200:
        return Check(name, False, f"HTTP {status}: {payload[:200]!r}", ms, "HTTP 200", f"HTTP {status}")
    try:
        families = list(text_string_to_metric_families(payload.decode()))
    except (ValueError, UnicodeDecodeError) as exc:
        return Check(name, False, f"not the Prometheus text format: {exc}", ms)
    counted = {
        (s.labels.get("route"), s.labels.get("code")): int(s.value)
        for family in families
        for s in family.samples
        if s.name == "deployctl_requests_total"
    }
    got = {key: counted.get(key, 0) for key in sent}
    if got != sent:
        wrong = {
            f"{route} {code}": f"{got[(route, code)]} (sent {n})"
            for (route, code), n in sent.items()
            if got[(route, code)] != n
        }
        return Check(name, False, f"deployctl_requests_total: {wrong}", ms, _text(str(sent)), _text(str(got)))
    return Check(
        name, True, f"{sum(sent.values())} requests on {len(sent)} routes, {len(families)} metrics", ms
    )


def backoff(attempt: int) -> float:
    """Seconds to wait before retry `attempt` (1, 2, 3...): 1, 2, 4, 8, then 15 at most."""
    return min(2.0 ** (attempt - 1), MAX_BACKOFF)


def health_check(
    model: dict[str, Any],
    client: Client,
    retries: int = 0,
    log: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Check:
    """`/health` answers 200 naming the pinned model and version (see `health_problem`)."""
    problem, ms = health_problem(model, client, retries, log, sleep)
    return _verdict(HEALTH, problem, ms, f"{model['name']} version {model['version']}")


def health_problem(
    model: dict[str, Any],
    client: Client,
    retries: int = 0,
    log: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Problem | None, float | None]:
    """(what is wrong with `/health`'s answer, or None; its milliseconds). Right is 200 naming the
    pinned model and version, healthy.

    Retried (`retries` times, with back-off) while a rollout may be settling: no answer at all,
    502/503/504 from a gateway, and an endpoint still serving another version of the model (the
    old replicas answer until the new ones are ready). Never retried: a refused authorization,
    another model, any other status. No answer after every attempt raises EndpointUnreachable.
    """
    why = ""
    unreachable: str | None = None
    last: tuple[Problem | None, float | None] | None = None
    for attempt in range(retries + 1):
        if attempt:
            delay = backoff(attempt)
            if log:  # the caller redacts: `why` may quote what the endpoint answered
                log(f"{why}; retry {attempt} of {retries} in {delay:g} s")
            sleep(delay)
        try:
            status, body, ms = client.call("GET", "/health")
        except NO_ANSWER as exc:
            unreachable = why = f"no answer from GET /health: {describe(exc)}"
            continue
        unreachable = None
        problem = _health_answer(status, body, model, bool(client.headers))
        last = problem, ms
        why = f"GET /health: {problem.detail}" if problem else ""
        if problem is None or not problem.retryable:
            return last
    if unreachable is not None:
        tries = f"{retries + 1} attempts" if retries else "1 attempt"
        raise EndpointUnreachable(
            f"{client.base_url} is unreachable: {unreachable} ({tries}, each within --timeout "
            f"{client.timeout:g} s).",
            "Check the URL (scheme, host, port, base path) and that the service is deployed and "
            "reachable from here; while a rollout settles, give --retries N (with back-off) or a "
            "longer --timeout.",
        )
    assert last is not None
    return last


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, OSError) else f"{type(exc).__name__}: {text}"


def _health_answer(status: int, body: Any, model: dict[str, Any], sent_credentials: bool) -> Problem | None:
    if status in (401, 403, 407):
        what = (
            "the credentials sent with --header were not accepted"
            if sent_credentials
            else "no credentials were sent: pass them with --header 'Authorization: ...'"
        )
        return Problem(
            f"the endpoint refused authorization (HTTP {status}): {what}. It answered: {str(body)[:200]}",
            "HTTP 200",
            f"HTTP {status}",
        )
    if status != 200:
        return Problem(f"HTTP {status}: {body}", "HTTP 200", f"HTTP {status}", status in RETRY_STATUSES)
    return _health(body, model)


def _health(body: Any, model: dict[str, Any]) -> Problem | None:
    name, version = model["name"], model["version"]
    want = f"model {name} version {version}"
    if not isinstance(body, dict):
        return Problem(f"not a JSON object: {body}", want, body)
    got_name, got_version = body.get("model_name"), body.get("model_version")
    if got_name != name:
        return Problem(
            f"the endpoint serves model {got_name} version {got_version}, this artifact pins {want}",
            want,
            f"model {got_name} version {got_version}",
            elsewhere=True,
        )
    if str(got_version) != str(version):
        return Problem(
            f"the endpoint serves version {got_version}, this artifact pins {version} (model {name})",
            f"version {version}",
            f"version {got_version}",
            retryable=True,
            elsewhere=True,
        )
    if body.get("status") != "healthy":
        return Problem(f"status {body.get('status')!r}, not 'healthy'", "healthy", body.get("status"))
    return None


def _verdict(name: str, problem: Problem | None, ms: float | None, ok_detail: str) -> Check:
    if problem is None:
        return Check(name, True, ok_detail, ms)
    return Check(name, False, problem.detail, ms, _text(problem.expected), _text(problem.got))


def _text(value: Any) -> str | None:
    return None if value is None else value if isinstance(value, str) else json.dumps(value, default=str)


def _check(
    client: Client,
    name: str,
    method: str,
    path: str,
    body: Any,
    verify: Callable[[Any], Problem | None],
) -> Check:
    try:
        status, answer, ms = client.call(method, path, body)
    except NO_ANSWER as exc:
        return Check(name, False, f"no answer: {describe(exc)}", None, "HTTP 200", "no answer")
    if status != 200:
        return Check(name, False, f"HTTP {status}: {answer}", ms, "HTTP 200", f"HTTP {status}")
    return _verdict(name, verify(answer), ms, "as recorded")


def _expect_4xx(client: Client, name: str, raw: bytes) -> Check:
    try:
        status, answer, ms = client.call("POST", "/predict", raw=raw)
    except NO_ANSWER as exc:
        return Check(name, False, f"no answer: {describe(exc)}", None, "a 4xx with a JSON error", "no answer")
    ok = 400 <= status < 500 and isinstance(answer, dict) and "error" in answer
    detail = f"HTTP {status}: {answer}"
    if ok:
        return Check(name, True, detail, ms)
    return Check(name, False, detail, ms, 'a 4xx with {"error": ...}', detail)


def _version(body: dict[str, Any], model: dict[str, Any]) -> Problem | None:
    """Answers name the version that scored them: mid-rollout, another replica may have answered."""
    if "model_version" in body and str(body["model_version"]) != str(model["version"]):
        return Problem(
            f"answered by model version {body['model_version']}, this artifact pins {model['version']}",
            f"version {model['version']}",
            f"version {body['model_version']}",
        )
    return None


def _probability_problem(case: dict[str, Any], model: dict[str, Any], got: Any) -> Problem | None:
    expected = case.get("probabilities")
    if expected is None:
        return None
    # an ONNX model agrees within the tolerance generate checked it with, not to the last bit
    tolerance = model["loader"].get("tolerance", 1e-12)
    if model["task"] == "binary":
        want: Any = expected[str(model["classes"][1])]
        ok = same_prediction(want, got, tolerance)
        return None if ok else Problem(f"probability {got} != recorded {want}", want, got)
    if not isinstance(got, dict) or set(got) != set(expected):
        return Problem(f"probabilities {got} != recorded {expected}", expected, got)
    bad = [k for k in expected if not same_prediction(expected[k], got[k], tolerance)]
    return Problem(f"probabilities differ for {bad}: {got} != {expected}", expected, got) if bad else None


def batch_problem(body: Any, cases: list[dict[str, Any]], model: dict[str, Any]) -> Problem | None:
    """What is wrong with a /predict_batch answer for `cases` (None: the recorded answers)."""
    return _batch(body, cases, model)


def invocations_problem(body: Any, cases: list[dict[str, Any]]) -> Problem | None:
    """What is wrong with an /invocations answer for `cases` (None: the recorded predictions)."""
    return _predictions(body, cases)


def infer_problem(body: Any, cases: list[dict[str, Any]], model: dict[str, Any]) -> Problem | None:
    """What is wrong with an Open Inference Protocol infer answer for `cases`."""
    return _oip_answer(body, cases, model)


def infer_request(model: dict[str, Any], cases: list[dict[str, Any]]) -> dict[str, Any]:
    """The infer request body for the rows of `cases` (each {"row": ...})."""
    return {"inputs": _oip_inputs(model, cases)}


def predict_problem(body: Any, case: dict[str, Any], model: dict[str, Any]) -> Problem | None:
    """What is wrong with `body` as the /predict answer to `case` (None: it is the recorded one)."""
    if not isinstance(body, dict):
        return Problem(f"not a JSON object: {body}", case["prediction"], body)
    problem = _version(body, model)
    if problem:
        return problem
    if not same_prediction(case["prediction"], body.get("prediction")):
        return Problem(
            f"prediction {body.get('prediction')!r} != recorded {case['prediction']!r}",
            case["prediction"],
            body.get("prediction"),
        )
    key = "probability" if model["task"] == "binary" else "probabilities"
    return _probability_problem(case, model, body.get(key))


def _batch(body: Any, cases: list[dict[str, Any]], model: dict[str, Any]) -> Problem | None:
    problem = _predictions(body, cases) or _version(body, model)
    for case, got in zip(cases, body.get("probabilities") or [None] * len(cases)):
        problem = problem or _probability_problem(case, model, got)
    return problem


def _predictions(body: Any, cases: list[dict[str, Any]]) -> Problem | None:
    got = body.get("predictions") if isinstance(body, dict) else None
    got = runtime_module("outputs").from_mlflow(got)  # MLflow's shape of several outputs, read per row
    want = [c["prediction"] for c in cases]
    if not isinstance(got, list) or len(got) != len(want):
        return Problem(f"predictions {got} != recorded {want}", want, got)
    ok = all(same_prediction(w, g) for w, g in zip(want, got))
    return None if ok else Problem(f"predictions {got} != recorded {want}", want, got)
