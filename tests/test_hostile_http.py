"""Hostile input on the HTTP services (issue 19): real fastapi and flask artifacts of the fraud
model (a pipeline with string and boolean columns) and of a tensor pyfunc, generated and built
through the CLI, run as their READMEs run them, driven over real sockets.

Every request here got a 5xx, a stalled worker or an unbounded metric before; each must now be
a 4xx JSON answer (or 408 for headers that never finish), counted, and the service stays healthy.
A bug no validation catches (a model whose predictions JSON cannot hold) is a 500 JSON answer,
logged with its traceback and counted; every answer is counted, FastAPI's own pages and what the
HTTP layer refuses itself included. The fuzz suite at the end throws generated bodies (nesting,
unicode, sizes, types) at every route.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import FRAUD_ROW, Registry, build_registry, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from test_http_edges import exchange, read_response, stop
from test_params_tensors import tensor_registry  # noqa: F401 (fixture)

from deployctl.process import free_port

pytestmark = pytest.mark.slow
HOST = "127.0.0.1"
MODELS = {"fraud": "models:/fraud_detector@production", "tensor": "models:/tensor_sum/1"}
NAMES = {"fraud": "fraud-detector", "tensor": "tensor-sum"}
TARGETS = ["fastapi", "flask"]
HEADER_TIMEOUT = 2  # seconds (fastapi's HEADER_TIMEOUT), short for the slowloris test
FRAUD_COLUMNS = list(FRAUD_ROW)


@pytest.fixture(scope="module")
def built(
    registry: Registry,
    tensor_registry: Registry,  # noqa: F811 (the fixture imported above)
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str, str], Path]:
    """generate + build through the CLI, once per (model, target)."""
    cache: dict[tuple[str, str], Path] = {}
    registries = {"fraud": registry, "tensor": tensor_registry}

    def make(model: str, target: str) -> Path:
        if (model, target) not in cache:
            out = tmp_path_factory.mktemp(f"{model}-{target}") / "artifact"
            env = registries[model].env()
            result = run_cli("generate", "-m", MODELS[model], "-t", target, "-o", str(out), env=env)
            assert result.code == 0, result.output
            result = run_cli("build", str(out))
            assert result.code == 0, result.output
            cache[(model, target)] = out
        return cache[(model, target)]

    return make


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    name: str

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def post(
        self, path: str, body: bytes, content_type: str = "application/json", timeout: float = 30
    ) -> httpx.Response:
        return httpx.post(
            self.url + path, content=body, headers={"content-type": content_type}, timeout=timeout
        )

    def healthy(self) -> bool:
        return httpx.get(self.url + "/health", timeout=5).status_code == 200


def start(artifact: Path, name: str, **env: str) -> Running:
    """The artifact's own server (`python -m app`), as its README runs it, once /health answers."""
    port = free_port()
    environ = {**os.environ, "PORT": str(port), "HOST": HOST, "WORKERS": "1", "ACCESS_LOG": "0"}
    environ["HEADER_TIMEOUT"] = str(HEADER_TIMEOUT)
    environ.update(env)
    log = artifact.parent / f"server-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(artifact / ".venv" / "bin" / "python"), "-m", "app"],
            cwd=artifact,
            env=environ,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    running = Running(proc, port, log, name)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if running.healthy():
                return running
        except httpx.TransportError:
            time.sleep(0.1)
    stop(proc)
    raise AssertionError(f"{artifact} did not answer /health: {log.read_text()}")


@pytest.fixture(scope="module", params=TARGETS)
def fraud(request: pytest.FixtureRequest, built: Callable[[str, str], Path]) -> Iterator[Running]:
    running = start(built("fraud", request.param), NAMES["fraud"])
    yield running
    stop(running.proc)


@pytest.fixture(scope="module", params=TARGETS)
def tensor(request: pytest.FixtureRequest, built: Callable[[str, str], Path]) -> Iterator[Running]:
    running = start(built("tensor", request.param), NAMES["tensor"])
    yield running
    stop(running.proc)


def assert_json_4xx(response: httpx.Response, status: int | None = None, says: str = "") -> str:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if status is not None:
        assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json"), response.text[:300]
    error = str(response.json()["error"])
    assert says in error, error[:300]
    return error


def in_progress(running: Running) -> float:
    """deployctl_requests_in_progress as /metrics gives it (the /metrics request itself included)."""
    text = httpx.get(running.url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "deployctl_requests_in_progress":
            return sum(sample.value for sample in family.samples)
    raise AssertionError("no in-progress gauge")


def request_series(running: Running) -> dict[tuple[str, str], float]:
    """deployctl_requests_total by (route, code)."""
    text = httpx.get(running.url + "/metrics", timeout=10).text
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "deployctl_requests":
            for sample in family.samples:
                if sample.name == "deployctl_requests_total":
                    key = (sample.labels["route"], sample.labels["code"])
                    found[key] = found.get(key, 0) + sample.value
    return found


def fraud_csv(*rows: dict[str, Any]) -> bytes:
    lines = [",".join(FRAUD_COLUMNS)] + [",".join(str(row[c]) for c in FRAUD_COLUMNS) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def infer_body(running: Running, **override: Any) -> dict[str, Any]:
    """A valid OIP infer request for FRAUD_ROW; `override` replaces fields of the first input."""
    types = {"amount": "FP64", "hour": "INT64", "merchant_category": "BYTES", "is_foreign": "BOOL"}
    types["account_age_days"] = "INT64"
    inputs = [{"name": c, "datatype": types[c], "shape": [1], "data": [FRAUD_ROW[c]]} for c in FRAUD_COLUMNS]
    inputs[0].update(override)
    return {"inputs": inputs}


def infer_path(running: Running) -> str:
    return f"/v2/models/{running.name}/infer"


# -- 1. CSV on /invocations -------------------------------------------------------------------


def test_csv_that_cannot_be_a_frame_is_refused_while_health_answers(fraud: Running) -> None:
    """pandas.read_csv took minutes on these (a header of 40,000 duplicate names, a record of a
    million commas), its event loop or thread held; now refused before pandas, /health answering."""
    hostile = {
        "duplicate names": (",".join(["a"] * 40_000) + "\n").encode(),  # 80 KB
        "a record of a million commas": fraud_csv(FRAUD_ROW) + b"," * 1_000_000 + b"\n",
        "a header of a million commas": b"," * 1_000_000 + b"\n",
    }
    with ThreadPoolExecutor(len(hostile)) as pool:
        answers = {
            name: pool.submit(fraud.post, "/invocations", body, "text/csv", 60)
            for name, body in hostile.items()
        }
        time.sleep(0.2)
        assert fraud.healthy()  # within 5 s, while they are being answered
        errors = {name: assert_json_4xx(answer.result(), 400) for name, answer in answers.items()}
    assert "header has 40000 columns" in errors["duplicate names"]
    assert "record 3 has 1000001 fields" in errors["a record of a million commas"]
    assert "header has 1000001 columns" in errors["a header of a million commas"]
    twice = fraud.post("/invocations", b"amount,amount,hour\n1,2,3\n", "text/csv")
    assert "given more than once: ['amount']" in assert_json_4xx(twice, 400)
    # a valid CSV is still answered (tests/test_invocations.py: as `mlflow models serve` answers)
    good = fraud.post("/invocations", fraud_csv(FRAUD_ROW, FRAUD_ROW), "text/csv")
    assert good.status_code == 200 and len(good.json()["predictions"]) == 2, good.text
    assert fraud.healthy()


# -- 4. deep nesting --------------------------------------------------------------------------

DEEP = 100_000


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/predict", b"[" * DEEP),
        ("/predict", b'{"features": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
        ("/predict_batch", b'{"instances": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
        ("/invocations", b'{"inputs": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
        ("/invocations", b"[" * DEEP),
        ("infer", b'{"inputs": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
        ("infer", b"{" + b'"a":{' * DEEP),
    ],
    ids=[
        "predict",
        "predict-closed",
        "predict_batch",
        "invocations",
        "invocations-open",
        "infer",
        "infer-objects",
    ],
)
def test_deeply_nested_json_is_a_400(fraud: Running, path: str, body: bytes) -> None:
    path = infer_path(fraud) if path == "infer" else path
    assert_json_4xx(fraud.post(path, body), 400)
    assert fraud.healthy()


def test_oip_tensor_data_nested_900_deep_is_a_400(tensor: Running) -> None:
    data: Any = [1.0]
    for _ in range(900):
        data = [data]
    body = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 3], "data": data}]}
    assert_json_4xx(tensor.post(infer_path(tensor), json.dumps(body).encode()), 400, "holds 3 values")
    flat = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 3], "data": [[[1.0, 2.0, 3.0]]]}]}
    answer = tensor.post(infer_path(tensor), json.dumps(flat).encode())
    assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [6.0], answer.text
    assert tensor.healthy()


# -- 5. OIP requests that were a 500; 6. the in-progress gauge -----------------------------------


def test_oip_hostile_fields_are_a_400_and_leave_no_request_in_progress(fraud: Running) -> None:
    path = infer_path(fraud)
    lone_surrogate = json.dumps(infer_body(fraud)).replace("{", '{"id": "\\ud800", ', 1).encode()
    assert_json_4xx(fraud.post(path, lone_surrogate), 400, "id: ")
    for datatype in (["FP64"], {"a": 1}):
        assert_json_4xx(
            fraud.post(path, json.dumps(infer_body(fraud, datatype=datatype)).encode()), 400, "datatype"
        )
    header = json.dumps(infer_body(fraud, parameters=["binary_data_size", 8], data=None)).encode()
    binary = fraud.post(path, header + np.float64(950.0).tobytes(), "application/octet-stream")
    assert_json_4xx(binary, 400, "parameters must be an object")
    assert fraud.healthy()
    assert in_progress(fraud) <= 1  # /metrics itself; each of these leaked one before
    assert request_series(fraud).get(("/v2/models/{name}/infer", "400"), 0) >= 4


# -- 8. OIP metadata and declared datatypes ------------------------------------------------------


def test_oip_metadata_gives_predict_any_length_and_refuses_a_contradicting_datatype(fraud: Running) -> None:
    metadata = httpx.get(f"{fraud.url}/v2/models/{fraud.name}", timeout=10).json()
    shapes = {output["name"]: output["shape"] for output in metadata["outputs"]}
    assert shapes["predict"] == [-1], metadata
    declared_as_text = infer_body(fraud, datatype="BYTES")  # amount is FP64
    error = assert_json_4xx(fraud.post(infer_path(fraud), json.dumps(declared_as_text).encode()), 400)
    assert "datatype BYTES does not fit" in error
    good = fraud.post(infer_path(fraud), json.dumps(infer_body(fraud)).encode())
    assert good.status_code == 200, good.text


# -- 6. metrics: a closed set of route labels; directories removed ---------------------------------


def test_unknown_v2_paths_share_one_route_label(fraud: Running) -> None:
    for i in range(150):
        assert httpx.get(f"{fraud.url}/v2/nope-{i}", timeout=10).status_code == 404
        assert httpx.get(f"{fraud.url}/v2/models/{fraud.name}/x{i}", timeout=10).status_code == 404
    routes = {route for route, _ in request_series(fraud)}
    assert not [r for r in routes if "nope" in r or "/x" in r], sorted(routes)[:10]
    assert len(routes) < 20, sorted(routes)
    assert request_series(fraud)[("other", "404")] >= 300


# Requests answered outside the runtime's `handle` on one server or the other: FastAPI's own pages,
# flask's refusal of a body too large to read and Flask's of a method no route takes, and what
# each server's HTTP layer refuses itself (a chunk size that is no number, a garbage request line,
# headers over the limit).
OUTSIDE_THE_RUNTIME = [
    b"GET /docs HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
    b"TRACE /predict HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 50000000\r\n\r\n{",
    b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"\x16\x03\x01\x02\x00 garbage\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
]


def test_every_answer_is_counted_by_code(fraud: Running) -> None:
    """FastAPI's pages and flask's body refusals were answered but not in deployctl_requests_total;
    every answer's status is now counted once, under a route label of the closed set."""
    before = request_series(fraud)
    answered: dict[str, int] = {}
    for request in OUTSIDE_THE_RUNTIME:
        status = str(exchange(fraud.port, request)[0])
        answered[status] = answered.get(status, 0) + 1
    after = request_series(fraud)
    counted = {
        code: sum(n - before.get((route, c), 0) for (route, c), n in after.items() if c == code)
        for code in answered
    }
    if "200" in counted:
        counted["200"] -= 1  # the first request_series' GET /metrics
    assert counted == answered, (counted, answered)
    assert {route for route, _ in after} - {route for route, _ in before} <= {"other", "/predict", "/metrics"}


@pytest.mark.parametrize("target", TARGETS)
def test_multiprocess_metrics_directory_is_removed_at_shutdown(
    built: Callable[[str, str], Path], target: str, tmp_path: Path
) -> None:
    running = start(built("fraud", target), NAMES["fraud"], WORKERS="2", TMPDIR=str(tmp_path))
    try:
        assert [p.name for p in tmp_path.glob("metrics-*")], "the server made no metrics directory"
        assert httpx.get(running.url + "/metrics", timeout=10).status_code == 200
    finally:
        stop(running.proc)
    assert running.proc.returncode is not None
    assert list(tmp_path.glob("metrics-*")) == []


@pytest.mark.parametrize("target", TARGETS)
def test_a_killed_servers_metrics_directory_goes_at_the_next_start(
    built: Callable[[str, str], Path], target: str, tmp_path: Path
) -> None:
    """SIGKILL (a harness's or an orchestrator's last resort) leaves no chance to clean up: the next
    start removes the directories of servers that are gone."""
    artifact, name = built("fraud", target), NAMES["fraud"]
    killed = start(artifact, name, WORKERS="2", TMPDIR=str(tmp_path))
    left = list(tmp_path.glob("metrics-*"))
    os.killpg(killed.proc.pid, signal.SIGKILL)
    killed.proc.wait(30)
    time.sleep(1)  # the workers, orphaned, notice their parent is gone
    assert left and all(path.exists() for path in left), "SIGKILL left nothing to clean up"
    running = start(artifact, name, WORKERS="2", TMPDIR=str(tmp_path))
    try:
        assert not [path for path in left if path.exists()], "the killed server's directory is still there"
    finally:
        stop(running.proc)
    assert list(tmp_path.glob("metrics-*")) == []


# -- fastapi: headers that never finish ----------------------------------------------------------


def peer_closed(sock: socket.socket) -> bool:
    """True once the server has closed: an orderly FIN, or a reset because the trickle's last
    bytes reached a socket the server had already closed."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_fastapi_times_out_250_clients_whose_headers_never_finish(built: Callable[[str, str], Path]) -> None:
    running = start(built("fraud", "fastapi"), NAMES["fraud"])
    sockets: list[socket.socket] = []
    done = threading.Event()

    def trickle() -> None:  # a byte a second each: never a complete header
        while not done.wait(1):
            for sock in sockets[1::10] + sockets[2::10]:  # those that began a request
                with contextlib.suppress(OSError):
                    sock.send(b"a")

    try:
        for i in range(250):
            sock = socket.create_connection((HOST, running.port), timeout=HEADER_TIMEOUT + 20)
            if i % 10 in (1, 2):  # the others send nothing at all
                sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            sockets.append(sock)
        threading.Thread(target=trickle, daemon=True).start()
        assert running.healthy()
        answers = [read_response(sock) for sock in sockets]
        assert all(a is not None and a[0] == 408 for a in answers), {a and a[0] for a in answers}
        assert all(b"did not arrive within" in a[2] for a in answers if a)
        done.set()
        assert all(peer_closed(sock) for sock in sockets)
        assert exchange(running.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
    finally:
        done.set()
        for sock in sockets:
            sock.close()
        stop(running.proc)


@pytest.mark.parametrize("target", ["fastapi", "flask"])
def test_bodies_that_never_finish_are_timed_out_and_free_their_slots(
    built: Callable[[str, str], Path], target: str
) -> None:
    """8 clients send a /predict head announcing 1,000 bytes, then trickle the body a byte a second,
    against a bound of 8 requests in progress (fastapi admits a request at its head): each is answered
    408 once REQUEST_TIMEOUT has passed since its first byte, and the slots serve others again."""
    timeout = 4
    running = start(built("fraud", target), NAMES["fraud"], REQUEST_TIMEOUT=str(timeout), MAX_IN_FLIGHT="8")
    sockets: list[socket.socket] = []
    done = threading.Event()

    def trickle() -> None:
        while not done.wait(1):
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.send(b" ")

    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    try:
        began = time.monotonic()
        for _ in range(8):
            sock = socket.create_connection((HOST, running.port), timeout=timeout + 20)
            sock.sendall(head + b"Content-Length: 1000\r\n\r\n{")
            sockets.append(sock)
        threading.Thread(target=trickle, daemon=True).start()
        answers = [read_response(sock) for sock in sockets]
        waited = time.monotonic() - began
        done.set()
        assert all(a is not None and a[0] == 408 for a in answers), {a and a[0] for a in answers}
        assert all(b"did not arrive within" in a[2] for a in answers if a)
        assert timeout - 1 <= waited <= timeout + 15, waited
        assert all(peer_closed(sock) for sock in sockets)
        assert running.post("/predict", json.dumps({"features": FRAUD_ROW}).encode()).status_code == 200
    finally:
        done.set()
        for sock in sockets:
            sock.close()
        stop(running.proc)


# -- the rule: a bug is a counted, logged 500 JSON answer -------------------------------------------


class BrokenProbabilities:
    """A classifier with a bug: predict_proba gives one column for two classes."""

    classes_ = np.array([0, 1])

    def predict(self, X: Any) -> Any:
        return np.zeros(len(X), dtype=int)

    def predict_proba(self, X: Any) -> Any:
        return np.ones((len(X), 1))


def test_a_bug_is_a_logged_counted_500_json_and_the_next_request_is_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import pandas as pd
    from test_runtime import columns, make_service, runtime

    service = make_service(BrokenProbabilities(), columns({"x": "double"}), pd.DataFrame({"x": [1.0]}))
    with caplog.at_level(logging.ERROR, logger="model_service"):
        status, body = service.handle("POST", "/predict", b'{"features": [1.0]}')
    assert status == 500 and json.loads(body) == {"error": "internal error: IndexError"}
    [record] = [r for r in caplog.records if r.getMessage() == "request failed"]
    line = runtime.JsonFormatter().format(record)
    assert (
        "\n" not in line
        and json.loads(line)["path"] == "/predict"
        and "IndexError" in json.loads(line)["exc"]
    )
    exposition = service.metrics.exposition().decode()
    assert 'deployctl_requests_total{code="500",route="/predict"} 1.0' in exposition
    assert "deployctl_requests_in_progress 0.0" in exposition
    status, body = service.handle("POST", "/predict_batch", b'{"instances": [[1.0]]}')
    assert status == 500 and service.handle("GET", "/health", b"")[0] == 200


@pytest.fixture(scope="module")
def broken_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """square_root (tests/make_broken_registry.py): complex predictions for a negative x."""
    return build_registry("make_broken_registry.py", tmp_path_factory.mktemp("broken-registry"))


def failure_lines(log: Path) -> list[dict[str, Any]]:
    """The server's JSON log lines saying a request failed (its other output is not JSON)."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("{")]
    return [entry for entry in map(json.loads, lines) if entry.get("msg") == "request failed"]


@pytest.mark.parametrize("target", TARGETS)
def test_a_bug_on_a_real_server_is_a_logged_counted_500_json_and_the_next_request_is_answered(
    broken_registry: Registry, tmp_path: Path, target: str
) -> None:
    """The runtime's rule on the real servers: a valid request whose answer the service cannot
    write (the model's predictions are complex numbers) is a 500 JSON answer, one JSON log line
    with the traceback, counted by code, the in-progress gauge back where it was, and the worker
    answers the next request."""
    out = tmp_path / "artifact"
    generate = ["generate", "-m", "models:/square_root/1", "-t", target, "-o", str(out)]
    for command in (generate, ["build", str(out)]):
        result = run_cli(*command, env=broken_registry.env())
        assert result.code == 0, result.output
    running = start(out, "square-root")
    try:
        assert running.post("/predict", b'{"features": [4.0]}').json()["prediction"] == 2.0
        broken = running.post("/predict", b'{"features": [-4.0]}')
        assert broken.status_code == 500, broken.text
        assert broken.headers["content-type"].startswith("application/json")
        assert broken.json() == {"error": "internal error: TypeError"}  # orjson's, for complex
        assert in_progress(running) == 1  # the /metrics request itself: the failed one is not left in
        assert request_series(running)[("/predict", "500")] == 1
        after = running.post("/predict", b'{"features": [9.0]}')
        assert after.status_code == 200 and after.json()["prediction"] == 3.0, after.text
        assert running.healthy()
    finally:
        stop(running.proc)
    [line] = failure_lines(running.log)
    assert line["level"] == "ERROR" and (line["method"], line["path"]) == ("POST", "/predict")
    assert line["exc"].startswith("Traceback"), line
    assert "not JSON serializable: complex" in line["exc"], line["exc"]


# -- the fuzz suite: generated bodies on every route of both servers ------------------------------

FIELDS = ["features", "instances", "inputs", "data", "datatype", "shape", "name", "id", "parameters"]
FIELDS += ["params", "dataframe_split", "dataframe_records", "columns"]
JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from([*FRAUD_COLUMNS, "FP64", "BYTES", "input-0", "amount", "x" * 5000]),
    st.just([]),
    st.just({}),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, min_size=1, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.sampled_from(FIELDS), inner, min_size=1, max_size=4)
    ),
    max_leaves=20,
)


def nested(depth: int, opener: bytes) -> bytes:
    closer = b"]" if opener == b"[" else b"}"
    inner = b'"a":' if opener == b"{" else b""
    return (opener + inner) * depth + b"1" + closer * depth


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A body of any kind: JSON values, deep nesting, lone surrogates, BOMs, raw bytes, big ones."""
    kind = draw(st.sampled_from(["json", "deep", "surrogate", "bom", "bytes", "big", "wrapped"]))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == "deep":
        return nested(draw(st.integers(1, 5000)), draw(st.sampled_from([b"[", b"{"])))
    if kind == "surrogate":
        key = draw(st.sampled_from(["id", "features", "name", "amount", "merchant_category"]))
        return b'{"%s": "\\ud%03x", "features": {"merchant_category": "\\udfff"}}' % (
            key.encode(),
            draw(st.integers(0x800, 0xFFF)),
        )
    if kind == "bom":
        return "\ufeff".encode() + json.dumps({"features": FRAUD_ROW}).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "big":
        return (
            b'{"instances": ['
            + b",".join([json.dumps(FRAUD_ROW).encode()] * draw(st.integers(1, 20_000)))
            + b"]}"
        )
    # a valid request shape with a generated value in one place
    value = draw(JSON_VALUES)
    field = draw(st.sampled_from(FRAUD_COLUMNS))
    return json.dumps(
        {
            "features": {**FRAUD_ROW, field: value},
            "id": value,
            "inputs": [
                {"name": field, "datatype": value, "shape": value, "data": value, "parameters": value}
            ],
        }
    ).encode()


ROUTES = ["/predict", "/predict_batch", "/invocations", "infer", "/v2", "model", "model-ready"]
ROUTES += ["/health", "/health/live", "/health/ready", "/ping", "/version", "/metrics"]
MODEL_PATHS = {"infer": "/infer", "model": "", "model-ready": "/ready"}  # under /v2/models/{name}


def route_path(running: Running, route: str) -> str:
    if route in MODEL_PATHS:
        return f"/v2/models/{running.name}{MODEL_PATHS[route]}"
    return route


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    route=st.sampled_from(ROUTES),
    body=bodies(),
    content_type=st.sampled_from(
        ["application/json", "text/csv", "application/json; charset=utf-8", "text/plain"]
    ),
    method=st.sampled_from(["POST", "POST", "POST", "GET", "HEAD", "PUT"]),
)
def test_fuzz_no_5xx_and_healthy_after_each(
    fraud: Running, route: str, body: bytes, content_type: str, method: str
) -> None:
    path = route_path(fraud, route)
    answer = httpx.request(
        method, fraud.url + path, content=body, headers={"content-type": content_type}, timeout=30
    )
    assert answer.status_code < 500, (answer.status_code, answer.text[:300])
    if path != "/metrics" and answer.status_code >= 400 and method != "HEAD":  # HEAD: no body
        assert "error" in answer.json()
    assert fraud.healthy()


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    text=st.text(st.characters(codec="utf-8"), max_size=60)
    | st.sampled_from(["\ufeffamount,hour\n1,2\n", "amount\n" + "1\n" * 20000, '"' * 1000]),
    width=st.integers(0, 300),
    names=st.lists(st.sampled_from([*FRAUD_COLUMNS, "x", ""]), max_size=12),
)
def test_fuzz_csv_no_5xx_and_healthy_after_each(
    fraud: Running, text: str, width: int, names: list[str]
) -> None:
    header = ",".join(names + [f"e{i}" for i in range(width)])
    body = (header + "\n" + text).encode("utf-8", "surrogatepass")
    answer = fraud.post("/invocations", body, "text/csv")
    assert answer.status_code < 500, (answer.status_code, answer.text[:300])
    assert fraud.healthy()
