"""The Open Inference Protocol v2 over gRPC (issue 26), end to end: fastapi artifacts generated and
built through the real CLI, served with their gRPC port on, driven by the real client
(tritonclient.grpc) and by tritonclient's own `inference.*` messages for what its client does not
send (typed contents, malformed requests)."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as oip_grpc
import tritonclient.http as oip_http
from conftest import (
    FRAUD_ROW,
    ROOT,
    Registry,
    build_registry,
    infer_inputs,
    kserve_python,
    run_cli,
    run_readme_oip_example,
)
from prometheus_client.parser import text_string_to_metric_families
from test_capture import records_in, wait_for_lines
from test_oip import Service
from test_params_tensors import tensor_registry  # noqa: F401 (fixture)
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from deployctl.checks.rows import REDACTED
from deployctl.manifest import Artifact
from deployctl.process import free_port

pytestmark = pytest.mark.slow
FRAUD, IRIS = "models:/fraud_detector@production", "models:/iris_species/1"
HOUSE = "models:/house_price/1"  # a regressor
TENSOR, MULTI = "models:/tensor_sum/1", "models:/multi_output/1"  # tests/make_tensor_registry.py
NAMES = {FRAUD: "fraud-detector", IRIS: "iris-species"}
TOKEN = "grpc-test-token"
CONTENTS = {
    "FP64": "fp64_contents",
    "FP32": "fp32_contents",
    "INT64": "int64_contents",
    "BOOL": "bool_contents",
}
NUMPY = {"FP64": np.float64, "FP32": np.float32, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_}


def test_the_shipped_messages_are_generated_from_the_proto() -> None:
    """scripts/generate_oip_grpc.py --check: the runtime's modules are protoc's output for the proto."""
    check = [sys.executable, str(ROOT / "scripts" / "generate_oip_grpc.py"), "--check"]
    proc = subprocess.run(check, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_the_runtime_imports_beside_tritonclients_in_one_process() -> None:
    """Both tritonclients register `inference.*` messages in protobuf's one pool per process; the
    runtime's gRPC modules load beside them (kserve#3099 is the clash this avoids)."""
    code = (
        "import tritonclient.http, tritonclient.grpc\n"
        "from app.oip_grpc import service, deployctl_oip_predict_v2_pb2 as pb\n"
        "from tritonclient.grpc import service_pb2\n"
        "request = service_pb2.ModelInferRequest(model_name='m', raw_input_contents=[b'x'])\n"
        "assert pb.ModelInferRequest.FromString(request.SerializeToString()).model_name == 'm'\n"
        "print(service.SERVICE)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT / "templates" / "runtime",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "inference.GRPCInferenceService"


class GrpcService(Service):
    """`deployctl serve` with its gRPC port on a free port."""

    def __init__(self, artifact: Path, workers: int = 1, env: dict[str, str] | None = None) -> None:
        self.grpc_port = free_port()
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        super().__init__(artifact, workers, {"GRPC": "1", "GRPC_PORT": str(self.grpc_port), **(env or {})})
        self.channel = grpc.insecure_channel(self.grpc_url)
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)

    def stop(self) -> None:
        self.channel.close()
        super().stop()


@pytest.fixture(scope="module")
def built(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """generate + build a fastapi artifact through the CLI, once per model."""
    cache: dict[str, Path] = {}

    def make(uri: str, registry: Registry = registry) -> Path:
        if uri not in cache:
            out = tmp_path_factory.mktemp("fastapi") / "artifact"
            result = run_cli("generate", "-m", uri, "-t", "fastapi", "-o", str(out), env=registry.env())
            assert result.code == 0, result.output
            result = run_cli("build", str(out))
            assert result.code == 0, result.output
            cache[uri] = out
        return cache[uri]

    return make


@pytest.fixture(scope="module")
def serving(built: Callable[..., Path], registry: Registry) -> Iterator[Callable[..., GrpcService]]:
    running: dict[str, GrpcService] = {}

    def get(uri: str, registry: Registry = registry) -> GrpcService:
        if uri not in running:
            running[uri] = GrpcService(built(uri, registry))
        return running[uri]

    yield get
    for service in running.values():
        service.stop()


def recorded_rows(artifact: Path) -> list[dict[str, Any]]:
    return [case["row"] for case in Artifact.open(artifact).smoke_cases]


def input_arrays(metadata: Any, rows: list[Any]) -> list[tuple[str, str, np.ndarray]]:
    """(name, datatype, values) of each input the metadata names, for `rows`: a column's values
    of shape [N] (rows as dicts), or a tensor signature's one input of shape [N, ...] (rows as
    arrays). BYTES as str objects."""
    arrays = []
    for tensor in metadata.inputs:
        values = rows if len(tensor.shape) > 1 else [row[tensor.name] for row in rows]
        arrays.append(
            (tensor.name, tensor.datatype, np.array(values, dtype=NUMPY.get(tensor.datatype, object)))
        )
    return arrays


def grpc_inputs(metadata: Any, rows: list[Any]) -> list[oip_grpc.InferInput]:
    """tritonclient.grpc InferInputs for `rows` (raw_input_contents, the client's only way)."""
    inputs = []
    for name, datatype, array in input_arrays(metadata, rows):
        infer_input = oip_grpc.InferInput(name, list(array.shape), datatype)
        infer_input.set_data_from_numpy(array)
        inputs.append(infer_input)
    return inputs


def plain(array: Any) -> list[Any]:
    """An output's values, BYTES as text (tritonclient.http decodes JSON text; gRPC gives bytes)."""
    return [v.decode() if isinstance(v, bytes) else v for v in array.tolist()]


def typed_request(name: str, metadata: Any, rows: list[Any]) -> pb.ModelInferRequest:
    """A ModelInferRequest with each input's values in its datatype's typed contents (row-major)."""
    request = pb.ModelInferRequest(model_name=name, id="typed-1")
    for input_name, datatype, array in input_arrays(metadata, rows):
        given = request.inputs.add(name=input_name, datatype=datatype, shape=array.shape)
        if datatype == "BYTES":
            given.contents.bytes_contents.extend(v.encode() for v in array.ravel().tolist())
        else:
            getattr(given.contents, CONTENTS[datatype]).extend(array.ravel().tolist())
    return request


@pytest.mark.parametrize("uri", [FRAUD, IRIS])
def test_tritonclient_grpc_answers_equal_rest_infer(
    serving: Callable[[str], GrpcService], built: Callable[[str], Path], uri: str
) -> None:
    service, artifact = serving(uri), built(uri)
    name, version = NAMES[uri], str(Artifact.open(artifact).model["version"])
    client = oip_grpc.InferenceServerClient(service.grpc_url)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(name) and client.is_model_ready(name, version)
    assert client.get_server_metadata().name == "deployctl"
    metadata = client.get_model_metadata(name, version)
    rest = oip_http.InferenceServerClient(service.url.removeprefix("http://"))
    rest_metadata = rest.get_model_metadata(name, version)
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        (t["name"], t["datatype"], t["shape"]) for t in rest_metadata["inputs"]
    ]
    assert [t.name for t in metadata.outputs] == [t["name"] for t in rest_metadata["outputs"]]

    rows = recorded_rows(artifact)
    expected = rest.infer(name, infer_inputs(rest_metadata, rows), model_version=version)
    outputs = [t["name"] for t in rest_metadata["outputs"]]
    raw = client.infer(name, grpc_inputs(metadata, rows), model_version=version, request_id="req-9")
    assert raw.get_response().id == "req-9" and raw.get_response().model_name == name
    assert raw.get_response().raw_output_contents  # raw in, raw out (tritonclient reads those)
    for output in outputs:
        assert plain(raw.as_numpy(output)) == plain(expected.as_numpy(output)), output

    typed = service.stub.ModelInfer(typed_request(name, metadata, rows))
    assert not typed.raw_output_contents and typed.id == "typed-1"
    answers = {tensor.name: tensor for tensor in typed.outputs}
    predictions = plain(expected.as_numpy("predict"))
    if answers["predict"].datatype == "BYTES":
        assert [v.decode() for v in answers["predict"].contents.bytes_contents] == predictions
    else:
        assert list(
            answers["predict"].contents.int64_contents or answers["predict"].contents.fp64_contents
        ) == (predictions)
    if "predict_proba" in answers:
        probabilities = expected.as_numpy("predict_proba")
        assert list(answers["predict_proba"].shape) == list(probabilities.shape)
        assert list(answers["predict_proba"].contents.fp64_contents) == probabilities.ravel().tolist()


def test_the_readme_tritonclient_grpc_example_runs_as_written(serving: Callable[[str], GrpcService]) -> None:
    """README.md's OIP gRPC example against the fastapi service of the fraud model: as written but
    for the gRPC address it names, 127.0.0.1:8081, which is this service's (on a free port)."""
    served_at = serving(FRAUD).grpc_url
    printed = run_readme_oip_example("import tritonclient.grpc as grpcclient", "127.0.0.1:8081", served_at)
    assert printed.startswith("[1 0] [["), printed


def test_kserve_grpc_and_rest_clients_answer_as_recorded(
    serving: Callable[[str], GrpcService], built: Callable[[str], Path]
) -> None:
    """KServe's own clients, from a venv with kserve (tests/kserve_clients.py): InferenceGRPCClient
    with raw and with typed contents, InferenceRESTClient (v2) with binary and with JSON tensors.
    Each is told the service is live and the model ready, and gets the fraud model's recorded
    answers for its recorded rows, under the request id it sent."""
    python = kserve_python()
    service, artifact = serving(FRAUD), built(FRAUD)
    manifest = Artifact.open(artifact)
    name, version = NAMES[FRAUD], str(manifest.model["version"])
    metadata = httpx.get(f"{service.url}/v2/models/{name}").json()
    rows = recorded_rows(artifact)
    tensors = [[t["name"], t["datatype"], [row[t["name"]] for row in rows]] for t in metadata["inputs"]]
    client = [python, str(ROOT / "tests" / "kserve_clients.py")]
    proc = subprocess.run(
        [*client, service.grpc_url, service.url, name, version, json.dumps(tensors)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = json.loads(proc.stdout)
    health = ["grpc_live", "grpc_ready", "grpc_model_ready", "rest_live", "rest_model_ready"]
    assert [said[key] for key in health] == [True] * len(health)
    labels = [case["prediction"] for case in manifest.smoke_cases]
    probabilities = [p for case in manifest.smoke_cases for p in case["probabilities"].values()]
    for way in ("grpc_raw", "grpc_typed", "rest_binary", "rest_json"):
        answer = said[way]
        assert answer["id"] == way, answer
        assert answer["outputs"]["predict"] == labels, way
        answered = [p for row in answer["outputs"]["predict_proba"] for p in row]
        assert answered == pytest.approx(probabilities, rel=1e-9), way


@pytest.mark.parametrize("uri", [HOUSE, TENSOR, MULTI])
def test_regressor_tensor_and_multi_output_models_answer_over_grpc_as_predict_batch(
    serving: Callable[..., GrpcService],
    built: Callable[..., Path],
    request: pytest.FixtureRequest,
    uri: str,
) -> None:
    """A regressor (columns, one of them integer), a tensor signature ([N, 3] FP64) and a model of
    two named outputs: tritonclient.grpc's raw tensors and typed contents get /predict_batch's answers."""
    registry = request.getfixturevalue("tensor_registry" if uri in (TENSOR, MULTI) else "registry")
    service, artifact = serving(uri, registry), built(uri, registry)
    name, rows = Artifact.open(artifact).name, recorded_rows(artifact)
    batch = httpx.post(f"{service.url}/predict_batch", json={"instances": rows}).json()["predictions"]
    client = oip_grpc.InferenceServerClient(service.grpc_url)
    metadata = client.get_model_metadata(name)
    named = isinstance(batch[0], dict)  # several outputs per row: a tensor each
    expected = {o.name: [p[o.name] for p in batch] if named else batch for o in metadata.outputs}
    assert named == (uri == MULTI) and len(expected) == (2 if named else 1)

    raw = client.infer(name, grpc_inputs(metadata, rows))
    typed = {t.name: t for t in service.stub.ModelInfer(typed_request(name, metadata, rows)).outputs}
    for output, values in expected.items():
        assert raw.as_numpy(output).tolist() == values, output
        tensor = typed[output]
        typed_values = list(getattr(tensor.contents, CONTENTS[tensor.datatype]))
        assert np.reshape(typed_values, list(tensor.shape)).tolist() == values, output


def fraud_request(**tensors: Any) -> pb.ModelInferRequest:
    """FRAUD_ROW with typed contents, `tensors` replacing inputs (None: left out)."""
    row = {**FRAUD_ROW, "merchant_category": FRAUD_ROW["merchant_category"].encode()}
    kinds = {
        float: ("FP64", "fp64_contents"),
        bool: ("BOOL", "bool_contents"),
        bytes: ("BYTES", "bytes_contents"),
    }
    request = pb.ModelInferRequest(model_name="fraud-detector")
    for column, value in row.items():
        if tensors.get(column, {}) is None:
            continue
        datatype, field = kinds.get(type(value), ("INT64", "int64_contents"))
        given = request.inputs.add(name=column, datatype=datatype, shape=[1])
        getattr(given.contents, field).append(value)
        for key, changed in (tensors.get(column) or {}).items():
            if key == "shape":
                given.ClearField("shape")
                given.shape.extend(changed)
            elif key == "contents":
                given.ClearField("contents")
                for content_field, values in changed.items():
                    getattr(given.contents, content_field).extend(values)
            else:
                setattr(given, key, changed)
    return request


def with_raw(request: pb.ModelInferRequest, *buffers: bytes) -> pb.ModelInferRequest:
    request.raw_input_contents.extend(buffers)
    return request


def all_raw(**replaced: bytes) -> pb.ModelInferRequest:
    """The fraud row with every input raw, `replaced` buffers by input name."""
    request = fraud_request()
    buffers = []
    for tensor in request.inputs:
        field = tensor.contents.ListFields()[0][0].name
        values = list(getattr(tensor.contents, field))
        tensor.ClearField("contents")
        if tensor.datatype == "BYTES":
            buffer = b"".join(len(v).to_bytes(4, "little") + v for v in values)
        else:
            buffer = np.array(values, dtype=NUMPY[tensor.datatype]).tobytes()
        buffers.append(replaced.get(tensor.name, buffer))
    return with_raw(request, *buffers)


INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
BAD_REQUESTS = [
    (fraud_request(), None, None),  # the valid request these are variations of
    (all_raw(), None, None),
    (pb.ModelInferRequest(model_name="another-model"), NOT_FOUND, "not served here"),
    (pb.ModelInferRequest(model_name="fraud-detector/versions/1"), NOT_FOUND, "not served here"),
    (pb.ModelInferRequest(model_name="fraud-detector", model_version="99"), NOT_FOUND, "version '99'"),
    (pb.ModelInferRequest(model_name="fraud-detector"), INVALID, "non-empty list of tensors"),
    (fraud_request(amount={"name": "amout"}), INVALID, "unknown input 'amout'"),
    (fraud_request(hour=None), INVALID, "'hour' is required"),
    (fraud_request(amount={"shape": [2]}), INVALID, "holds 2 values, data has 1"),
    (fraud_request(amount={"datatype": "FP128"}), INVALID, "not an Open Inference Protocol datatype"),
    (
        fraud_request(amount={"contents": {"fp32_contents": [1.0]}}),
        INVALID,
        "FP64 values go in fp64_contents",
    ),
    (
        fraud_request(amount={"datatype": "BYTES", "contents": {"bytes_contents": [b"x"]}}),
        INVALID,
        "does not fit",
    ),
    (fraud_request(merchant_category={"contents": {"bytes_contents": [b"\xff"]}}), INVALID, "not UTF-8"),
    (with_raw(fraud_request(), b"\x00" * 8), INVALID, "raw_input_contents: 1 buffers for 5 inputs"),
    (all_raw(amount=b"\x00" * 7), INVALID, "not a whole number of FP64 values"),
    (all_raw(amount=b"\x00" * 16), INVALID, "holds 1 values, data has 2"),
    (all_raw(merchant_category=b"\xff\x00\x00\x00ab"), INVALID, "runs past the data"),
    (
        with_raw(fraud_request(), *all_raw().raw_input_contents),
        INVALID,
        "has contents and raw_input_contents",
    ),
]


@pytest.mark.parametrize(("request_", "code", "message"), BAD_REQUESTS)
def test_malformed_requests_get_their_status_and_the_server_stays_up(
    serving: Callable[[str], GrpcService], request_: pb.ModelInferRequest, code: Any, message: str | None
) -> None:
    service = serving(FRAUD)
    if code is None:
        answer = service.stub.ModelInfer(request_)
        assert [o.name for o in answer.outputs] == ["predict", "predict_proba"]
        return
    with pytest.raises(grpc.RpcError) as refused:
        service.stub.ModelInfer(request_)
    assert refused.value.code() == code, refused.value.details()
    assert message in refused.value.details()
    assert service.stub.ServerLive(pb.ServerLiveRequest()).live


def test_unknown_models_are_not_found_on_every_model_rpc(serving: Callable[[str], GrpcService]) -> None:
    service = serving(FRAUD)
    for call in (
        lambda: service.stub.ModelReady(pb.ModelReadyRequest(name="another")),
        lambda: service.stub.ModelMetadata(pb.ModelMetadataRequest(name="fraud-detector", version="99")),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == NOT_FOUND


def grpc_requests(url: str) -> dict[str, float]:
    """deployctl_requests_total of the `grpc` route, by status code, from /metrics."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == "deployctl_requests_total" and sample.labels["route"] == "grpc":
                counts[sample.labels["code"]] = counts.get(sample.labels["code"], 0) + sample.value
    return counts


def test_auth_and_metrics_with_two_workers(built: Callable[[str], Path]) -> None:
    """AUTH_TOKEN_SHA256 guards gRPC as REST (bearer in `authorization`; the probes open), and the
    calls are counted in /metrics under route="grpc", summed over two workers sharing the port."""
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    service = GrpcService(built(FRAUD), workers=2, env={"AUTH_TOKEN_SHA256": digest})
    try:
        assert service.stub.ServerLive(pb.ServerLiveRequest()).live  # open, as /v2/health/live
        for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", "Basic x"),)):
            with pytest.raises(grpc.RpcError) as refused:
                service.stub.ModelInfer(fraud_request(), metadata=metadata)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        bearer = (("authorization", f"Bearer {TOKEN}"),)
        for _ in range(4):  # on new connections: the kernel spreads them over the workers
            channel = grpc.insecure_channel(service.grpc_url)
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ModelInfer(fraud_request(), metadata=bearer).outputs
            channel.close()
        assert grpc_requests(service.url) == {"200": 5.0, "401": 3.0}
    finally:
        service.stop()


def test_metrics_count_grpc_calls_in_one_worker(serving: Callable[[str], GrpcService]) -> None:
    service = serving(FRAUD)
    before = grpc_requests(service.url)
    service.stub.ModelInfer(fraud_request())
    with pytest.raises(grpc.RpcError):
        service.stub.ModelInfer(fraud_request(hour=None))
    after = grpc_requests(service.url)
    assert after.get("200", 0) - before.get("200", 0) == 1
    assert after.get("400", 0) - before.get("400", 0) == 1


@pytest.fixture(scope="module")
def sleeper(tmp_path_factory: pytest.TempPathFactory, built: Callable[..., Path]) -> Path:
    """A fastapi artifact of a model that takes 20 ms of wall time per row (tests/make_slow_registry.py)."""
    registry = build_registry("make_slow_registry.py", tmp_path_factory.mktemp("slow-registry"))
    return built("models:/sleeper/1", registry)


def sleeper_request(rows: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="sleeper")
    request.inputs.add(name="x", datatype="FP64", shape=[rows]).contents.fp64_contents.extend([1.0] * rows)
    return request


def test_calls_past_max_in_flight_are_refused_as_resource_exhausted(built: Callable[[str], Path]) -> None:
    """gRPC and REST share the bound on requests in progress: a REST request admitted and still
    sending its body holds the one slot, so a gRPC call is refused at once, then served once it is free."""
    service = GrpcService(built(FRAUD), env={"MAX_IN_FLIGHT": "1"})
    try:
        body = json.dumps({"features": FRAUD_ROW}).encode()
        with socket.create_connection(("127.0.0.1", service.port)) as held:
            head = "POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            held.sendall(f"{head}content-length: {len(body)}\r\n\r\n".encode() + body[:5])
            time.sleep(1)  # the server admits the request and waits for the rest of its body
            with pytest.raises(grpc.RpcError) as refused:
                service.stub.ModelInfer(fraud_request())
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "overloaded" in refused.value.details()
            held.sendall(body[5:])
            assert held.recv(4096).startswith(b"HTTP/1.1 200")
        assert service.stub.ModelInfer(fraud_request()).outputs
        assert grpc_requests(service.url) == {"200": 1.0, "503": 1.0}
    finally:
        service.stop()


def test_sigterm_answers_the_call_in_progress_and_exits_0(sleeper: Path) -> None:
    service = GrpcService(sleeper)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        call = pool.submit(service.stub.ModelInfer, sleeper_request(150))  # 3 s of scoring
        time.sleep(1)
        service.proc.send_signal(signal.SIGTERM)
        answer = call.result(30)
    assert list(answer.outputs[0].contents.fp64_contents) == [2.0] * 150
    assert service.proc.wait(30) == 0
    service.channel.close()


def held_request(port: int) -> tuple[socket.socket, bytes]:
    """A REST /predict admitted and still sending its body (its first 5 bytes sent), which the
    server must answer before it stops: (the connection, the rest of the body to send)."""
    body = json.dumps({"features": FRAUD_ROW}).encode()
    held = socket.create_connection(("127.0.0.1", port))
    head = "POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    held.sendall(f"{head}content-length: {len(body)}\r\n\r\n".encode() + body[:5])
    return held, body[5:]


def test_during_the_sigterm_drain_grpc_is_not_ready_and_refuses_new_infer(
    built: Callable[[str], Path],
) -> None:
    """uvicorn drains HTTP before the lifespan stops gRPC: all that time the gRPC port is open, and
    must say not ready (ServerReady, ModelReady false, as Triton and KServe do) and refuse a new
    ModelInfer with UNAVAILABLE, while the request in progress is answered and the process exits 0."""
    service = GrpcService(built(FRAUD))
    held, rest = held_request(service.port)
    with held:
        time.sleep(1)  # the server admits the request and waits for the rest of its body
        assert service.stub.ServerReady(pb.ServerReadyRequest()).ready
        service.proc.send_signal(signal.SIGTERM)
        time.sleep(1)  # uvicorn's loop sees the signal, closes HTTP's listener, waits for `held`
        with grpc.insecure_channel(service.grpc_url) as channel:  # a new client
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerLive(pb.ServerLiveRequest()).live
            assert not stub.ServerReady(pb.ServerReadyRequest()).ready
            assert not stub.ModelReady(pb.ModelReadyRequest(name="fraud-detector")).ready
            with pytest.raises(grpc.RpcError) as refused:
                stub.ModelInfer(fraud_request())
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "not ready: the server is shutting down" in refused.value.details()
        assert not oip_grpc.InferenceServerClient(service.grpc_url).is_server_ready()
        held.sendall(rest)
        assert held.recv(4096).startswith(b"HTTP/1.1 200")
    assert service.proc.wait(30) == 0
    service.channel.close()


def many_rows(count: int) -> list[dict[str, Any]]:
    return [{**FRAUD_ROW, "amount": float(i)} for i in range(count)]


def test_grpc_max_message_bytes_refuses_a_larger_request_and_raised_admits_it(
    built: Callable[[str], Path],
) -> None:
    """200 rows are ~8 KB of raw tensors: over a 4096-byte limit RESOURCE_EXHAUSTED (gRPC's own
    check, never UNKNOWN) and the server stays up; with the limit raised they are answered."""
    rows = many_rows(200)
    small = GrpcService(built(FRAUD), env={"GRPC_MAX_MESSAGE_BYTES": "4096"})
    try:
        client = oip_grpc.InferenceServerClient(small.grpc_url)
        metadata = client.get_model_metadata("fraud-detector")
        inputs = grpc_inputs(metadata, rows)
        with pytest.raises(InferenceServerException) as refused:
            client.infer("fraud-detector", inputs)
        assert refused.value.status() == "StatusCode.RESOURCE_EXHAUSTED", refused.value
        assert client.is_server_live()  # up, and answering what fits
        one = client.infer("fraud-detector", grpc_inputs(metadata, rows[:1]))
        assert one.as_numpy("predict").shape == (1,)
    finally:
        small.stop()
    raised = GrpcService(built(FRAUD), env={"GRPC_MAX_MESSAGE_BYTES": "65536"})
    try:
        client = oip_grpc.InferenceServerClient(raised.grpc_url)
        answer = client.infer("fraud-detector", inputs)
        assert answer.as_numpy("predict").shape == (200,)
    finally:
        raised.stop()


def captured_grpc(artifact: Path, sink: Path, **env: str) -> GrpcService:
    return GrpcService(artifact, env={"CAPTURE": f"file:{sink}", "ACCESS_LOG": "0", **env})


def request_id_of(call: Any) -> str | None:
    """The `x-request-id` a call's answer (or refusal) carried in its trailing metadata."""
    return dict(call.trailing_metadata() or ()).get("x-request-id")


def test_model_infer_is_captured_as_rest_infer_is(built: Callable[[str], Path], tmp_path: Path) -> None:
    """With CAPTURE, each ModelInfer is one schema-valid record under the metrics' route label `grpc`:
    the caller's x-request-id (returned as trailing metadata), the validated rows with a
    CAPTURE_REDACT column as the marker, and the answer REST /v2 infer gives the same request;
    an id no log line should hold is replaced by a generated one; a refusal with CAPTURE_ERRORS=1
    is recorded with its error."""
    artifact, sink = built(FRAUD), tmp_path / "capture.jsonl"
    service = captured_grpc(artifact, sink, CAPTURE_REDACT="merchant_category", CAPTURE_ERRORS="1")
    try:
        name, rows = "fraud-detector", recorded_rows(artifact)
        client = oip_grpc.InferenceServerClient(service.grpc_url)
        inputs = grpc_inputs(client.get_model_metadata(name), rows)
        client.infer(name, inputs, request_id="oip-1", headers={"x-request-id": "grpc-1"})
        rest = oip_http.InferenceServerClient(service.url.removeprefix("http://"))
        rest_inputs = infer_inputs(rest.get_model_metadata(name), rows)
        expected = rest.infer(name, rest_inputs, request_id="oip-1", headers={"X-Request-ID": "rest-1"})
        infer = service.stub.ModelInfer.with_call
        _, answered = infer(fraud_request(), metadata=(("x-request-id", "grpc-2"),))
        assert request_id_of(answered) == "grpc-2"
        _, odd = infer(fraud_request(), metadata=(("x-request-id", "a b"),))
        generated = request_id_of(odd)
        assert generated is not None and len(generated) == 32
        with pytest.raises(grpc.RpcError) as refused:
            service.stub.ModelInfer(fraud_request(hour=None), metadata=(("x-request-id", "grpc-bad"),))
        assert request_id_of(refused.value) == "grpc-bad"
        wait_for_lines(sink, 5)
    finally:
        service.stop()
    written = records_in(sink)
    records = {r["request_id"]: r for r in written}
    assert sorted(r["request_id"] for r in written) == sorted(
        ["grpc-1", "rest-1", "grpc-2", generated, "grpc-bad"]
    )
    first, same = records["grpc-1"], records["rest-1"]
    assert first["route"] == "grpc" and first["status"] == 200 and first["error"] is None
    assert first["answer"] == expected.get_response()  # REST infer's answer to the same request
    assert first["input"] == same["input"] and same["route"] == "/v2/models/{name}/infer"
    columns = first["input"]["columns"]
    assert first["input"]["rows"] == [
        [REDACTED if c == "merchant_category" else row[c] for c in columns] for row in rows
    ]
    assert records[generated]["status"] == records["grpc-2"]["status"] == 200
    bad = records["grpc-bad"]
    assert bad["status"] == 400 and bad["error"] == refused.value.details() and bad["answer"] is None
    assert bad["route"] == "grpc" and bad["input"] is None


def test_refused_model_infer_is_not_captured_without_capture_errors(
    built: Callable[[str], Path], serving: Callable[[str], GrpcService], tmp_path: Path
) -> None:
    """As HTTP: a refused call is recorded only with CAPTURE_ERRORS=1; and with capture off, no
    request id is read or returned (ModelInfer does nothing for capture)."""
    sink = tmp_path / "capture.jsonl"
    service = captured_grpc(built(FRAUD), sink)
    try:
        with pytest.raises(grpc.RpcError) as refused:
            service.stub.ModelInfer(fraud_request(hour=None), metadata=(("x-request-id", "bad"),))
        assert refused.value.code() == INVALID and request_id_of(refused.value) == "bad"
        service.stub.ModelInfer(fraud_request(), metadata=(("x-request-id", "good"),))
        wait_for_lines(sink, 1)
        time.sleep(0.5)  # the writer's next wakes: nothing more comes
    finally:
        service.stop()
    assert [r["request_id"] for r in records_in(sink)] == ["good"]
    _, plain_call = serving(FRAUD).stub.ModelInfer.with_call(
        fraud_request(), metadata=(("x-request-id", "off"),)
    )
    assert request_id_of(plain_call) is None


def test_smoke_test_checks_model_infer_over_grpc(built: Callable[[str], Path]) -> None:
    result = run_cli("smoke-test", str(built(IRIS)), "--json", env={**os.environ, "GRPC": "1"})
    assert result.code == 0, result.output
    checks = {check["name"]: check for check in json.loads(result.stdout)["checks"]}
    rows = len(Artifact.open(built(IRIS)).smoke_cases)
    assert checks[f"gRPC ModelInfer {rows} rows"]["ok"], checks


def test_workers_refuse_a_grpc_port_another_service_holds(
    built: Callable[[str], Path], serving: Callable[[str], GrpcService]
) -> None:
    """Two workers share their gRPC port (SO_REUSEPORT); a second service must not join the port of a
    running one (the kernel would hand it part of that one's calls): it exits at once and says why."""
    artifact, taken = built(FRAUD), str(serving(FRAUD).grpc_port)
    env = {**os.environ, "GRPC": "1", "GRPC_PORT": taken, "WORKERS": "2", "PORT": str(free_port())}
    proc = subprocess.run([str(artifact / ".venv/bin/python"), "-m", "app"], cwd=artifact, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 1 and f"the gRPC port {taken} cannot be bound" in proc.stderr, proc.stderr
    assert "GRPC=0" in proc.stderr and "Traceback" not in proc.stderr


# -- smoke-test --url URL --grpc HOST:PORT: a deployed service's gRPC binding ---------------------


def smoke_remote(artifact: Path, url: str, grpc_address: str) -> tuple[Any, dict[str, Any]]:
    """`deployctl smoke-test ARTIFACT --url URL --grpc HOST:PORT --json`: (result, checks by name)."""
    result = run_cli("smoke-test", str(artifact), "--url", url, "--grpc", grpc_address, "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]} if result.stdout else {}
    return result, checks


def test_smoke_test_url_checks_the_grpc_port_of_a_deployed_service(
    serving: Callable[[str], GrpcService], built: Callable[[str], Path]
) -> None:
    service, artifact = serving(FRAUD), built(FRAUD)
    result, checks = smoke_remote(artifact, service.url, service.grpc_url)
    assert result.code == 0, result.output
    rows = len(Artifact.open(artifact).smoke_cases)
    assert checks["gRPC ModelMetadata"]["ok"] and checks[f"gRPC ModelInfer {rows} rows"]["ok"], checks
    assert json.loads(result.stdout)["grpc"] == service.grpc_url


def test_smoke_test_grpc_fails_against_another_models_or_versions_service(
    serving: Callable[[str], GrpcService], built: Callable[..., Path]
) -> None:
    """A check that passed while --grpc reaches the wrong service would be the worst bug: another
    model's service, and another version of the same model (same service name, other answers)."""
    artifact, rest = built(FRAUD), serving(FRAUD).url
    result, checks = smoke_remote(artifact, rest, serving(IRIS).grpc_url)
    assert result.code == 1, result.output
    metadata = checks["gRPC ModelMetadata"]
    assert not metadata["ok"] and "NOT_FOUND" in metadata["detail"] and "'iris-species'" in metadata["detail"]
    infer = next(c for name, c in checks.items() if name.startswith("gRPC ModelInfer"))
    assert not infer["ok"] and "NOT_FOUND" in infer["detail"], infer

    challenger = serving("models:/fraud_detector@challenger")  # version 2, also 'fraud-detector'
    result, checks = smoke_remote(artifact, rest, challenger.grpc_url)
    assert result.code == 1, result.output
    assert "versions ['2'], not fraud-detector version 1" in checks["gRPC ModelMetadata"]["detail"]
    infer = next(c for name, c in checks.items() if name.startswith("gRPC ModelInfer"))
    assert not infer["ok"] and "recorded" in infer["detail"], infer  # its answers differ too
    assert "Error:" in result.stderr and "Traceback" not in result.output


def test_smoke_test_grpc_unreachable_is_exit_3_with_a_hint(
    serving: Callable[[str], GrpcService], built: Callable[[str], Path]
) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    result, _ = smoke_remote(built(FRAUD), serving(FRAUD).url, nobody)
    assert result.code == 3, result.output
    assert "the gRPC service never answered" in result.stderr and "Hint:" in result.stderr
    assert "--grpc HOST:PORT" in " ".join(result.stderr.split()) and "Traceback" not in result.output
    assert json.loads(result.stdout)["outcome"] == "unreachable"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "http://127.0.0.1:9", "--grpc", "localhost"], "--grpc must be HOST:PORT, got 'localhost'"),
        (["--url", "http://127.0.0.1:9", "--grpc", "grpc://h:8081"], "--grpc must be HOST:PORT"),
        (["--url", "http://127.0.0.1:9", "--grpc", "h:70000"], "--grpc must be HOST:PORT"),
        (["--url", "http://127.0.0.1:9", "--grpc", "::1:8081"], "--grpc must be HOST:PORT"),
        (["--grpc", "127.0.0.1:8081"], "--grpc applies to a deployed service only"),
    ],
)
def test_smoke_test_refuses_a_malformed_grpc_value(
    built: Callable[[str], Path], args: list[str], message: str
) -> None:
    result = run_cli("smoke-test", str(built(FRAUD)), *args)
    assert result.code == 2, result.output
    assert message in result.stderr and "Hint:" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("target", ["flask", "lambda", "gcf"])
def test_smoke_test_refuses_grpc_for_a_target_without_it(
    registry: Registry, tmp_path: Path, target: str
) -> None:
    out = tmp_path / target
    assert run_cli("generate", "-m", FRAUD, "-t", target, "-o", str(out), env=registry.env()).code == 0
    result = run_cli("smoke-test", str(out), "--url", "http://127.0.0.1:9", "--grpc", "127.0.0.1:9")
    assert result.code == 2, result.output
    assert f"is a {target} artifact, which serves no gRPC" in " ".join(result.stderr.split())
    assert "Hint:" in result.stderr and "Traceback" not in result.output
