"""The Open Inference Protocol v2, the probes and the Prometheus metrics, end to end: flask and
fastapi services generated and built through the real CLI, driven by a real OIP client
(tritonclient[http]), and scraped by a real Prometheus server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tritonclient.http as oip
import yaml
from conftest import FRAUD_ROW, REQUIRE_DOCKER, Registry, infer_inputs, run_cli, run_readme_oip_example
from prometheus_client.parser import text_string_to_metric_families

from deployctl.manifest import Artifact
from deployctl.process import free_port

pytestmark = pytest.mark.slow
MODELS = {  # uri -> the service name (`--name` defaults to the DNS-safe model name)
    "models:/fraud_detector@production": "fraud-detector",  # pipeline, string and boolean columns
    "models:/iris_species/1": "iris-species",  # multi-class, string labels
    "models:/house_price/1": "house-price",  # regressor
    "models:/churn_logreg/1": "churn-logreg",  # binary, numbers only
}
FRAUD = "models:/fraud_detector@production"


@pytest.fixture(scope="module")
def built(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """generate + build through the CLI, once per (model, target)."""
    cache: dict[tuple[str, str], Path] = {}

    def make(uri: str, target: str) -> Path:
        if (uri, target) not in cache:
            out = tmp_path_factory.mktemp(target) / "artifact"
            result = run_cli("generate", "-m", uri, "-t", target, "-o", str(out), env=registry.env())
            assert result.code == 0, result.output
            result = run_cli("build", str(out))
            assert result.code == 0, result.output
            cache[(uri, target)] = out
        return cache[(uri, target)]

    return make


class Service:
    """`deployctl serve` on a free port, until `stop`."""

    def __init__(self, artifact: Path, workers: int = 1, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "deployctl", "serve", str(artifact), "--port", str(self.port)],
            env={**os.environ, "WORKERS": str(workers), **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(600):
            try:
                if httpx.get(f"{self.url}/health/ready").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
            assert self.proc.poll() is None, self.proc.stdout.read().decode() if self.proc.stdout else ""
        raise AssertionError("the service did not become ready")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


@pytest.fixture(scope="module")
def serving(built: Callable[[str, str], Path]) -> Iterator[Callable[[str, str], Service]]:
    """One running service per (model, target), shared by the module's tests."""
    running: dict[tuple[str, str], Service] = {}

    def get(uri: str, target: str) -> Service:
        if (uri, target) not in running:
            running[(uri, target)] = Service(built(uri, target))
        return running[(uri, target)]

    yield get
    for service in running.values():
        service.stop()


def recorded_rows(artifact: Path) -> list[dict[str, Any]]:
    return [case["row"] for case in Artifact.open(artifact).smoke_cases]


@pytest.mark.parametrize("target", ["fastapi", "flask"])
@pytest.mark.parametrize("uri", list(MODELS))
def test_tritonclient_answers_equal_predict_batch(
    serving: Callable[[str, str], Service], built: Callable[[str, str], Path], uri: str, target: str
) -> None:
    service, artifact = serving(uri, target), built(uri, target)
    name, version = MODELS[uri], Artifact.open(artifact).model["version"]
    client = oip.InferenceServerClient(url=service.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(name) and client.is_model_ready(name, version)
    assert not client.is_model_ready("another-model")
    metadata = client.get_model_metadata(name, version)
    columns = Artifact.open(artifact).model["columns"]
    assert [t["name"] for t in metadata["inputs"]] == [c["name"] for c in columns]
    assert all(t["shape"] == [-1] for t in metadata["inputs"])
    classes = Artifact.open(artifact).model["classes"]

    rows = recorded_rows(artifact)
    batch = httpx.post(f"{service.url}/predict_batch", json={"instances": rows}).json()
    result = client.infer(name, infer_inputs(metadata, rows), model_version=version, request_id="req-7")
    response = result.get_response()
    assert response["id"] == "req-7" and response["model_name"] == name
    assert result.as_numpy("predict").tolist() == batch["predictions"]
    # the binary tensor data extension (tritonclient's default): the same answers
    raw = client.infer(name, infer_inputs(metadata, rows, binary=True), model_version=version)
    assert raw.as_numpy("predict").tolist() == batch["predictions"]
    if classes is None:
        assert [t["name"] for t in metadata["outputs"]] == ["predict"]
        assert result.as_numpy("predict_proba") is None
        return
    assert metadata["parameters"]["classes"] == classes
    probabilities = result.as_numpy("predict_proba")
    assert probabilities.shape == (len(rows), len(classes))
    if len(classes) == 2:  # /predict_batch gives P(classes[1])
        assert probabilities[:, 1].tolist() == batch["probabilities"]
    else:
        assert [dict(zip(map(str, classes), p)) for p in probabilities.tolist()] == batch["probabilities"]
    # outputs in the request select what comes back
    only = client.infer(
        name, infer_inputs(metadata, rows), outputs=[oip.InferRequestedOutput("predict", False)]
    )
    assert [o["name"] for o in only.get_response()["outputs"]] == ["predict"]


def fraud_infer(**tensors: Any) -> dict[str, Any]:
    """An infer body for the fraud model: one row, FRAUD_ROW, with `tensors` replacing inputs."""
    types = {"amount": "FP64", "hour": "INT64", "merchant_category": "BYTES", "is_foreign": "BOOL"}
    inputs = {
        column: {"name": column, "shape": [1], "datatype": types.get(column, "INT64"), "data": [value]}
        for column, value in FRAUD_ROW.items()
    }
    for column, tensor in tensors.items():
        if tensor is None:
            del inputs[column]
        else:
            inputs[column] = {**inputs[column], **tensor}
    return {"inputs": list(inputs.values())}


INFER = "/v2/models/fraud-detector/infer"
BAD_REQUESTS = [
    ("POST", INFER, b"not json", 400, "not valid JSON"),
    ("POST", INFER, b"[]", 400, "inference request object"),
    ("POST", INFER, {"inputs": []}, 400, "non-empty list of tensors"),
    ("POST", INFER, fraud_infer(amount={"data": ["high"]}), 400, "'amount' must be a number"),
    ("POST", INFER, fraud_infer(hour=None), 400, "'hour' is required"),
    ("POST", INFER, fraud_infer(amount={"name": "amout"}), 400, "unknown input 'amout'"),
    ("POST", INFER, fraud_infer(amount={"shape": [1, 2]}), 400, "shape must be [N] or [N, 1]"),
    ("POST", INFER, fraud_infer(amount={"shape": [2]}), 400, "holds 2 values, data has 1"),
    (
        "POST",
        INFER,
        fraud_infer(amount={"datatype": "FLOAT"}),
        400,
        "not an Open Inference Protocol datatype",
    ),
    ("POST", INFER, fraud_infer(amount={"data": [1.0, 2.0], "shape": [2]}), 400, "same number of rows"),
    ("POST", INFER, {**fraud_infer(), "outputs": [{"name": "scores"}]}, 400, "unknown output"),
    ("POST", INFER, {**fraud_infer(), "id": 7}, 400, "id: expected a string"),
    ("POST", "/v2/models/other/infer", fraud_infer(), 404, "model 'other' is not served"),
    ("POST", "/v2/models/fraud-detector/versions/9/infer", fraud_infer(), 404, "version '9' is not served"),
    ("GET", INFER, None, 405, "use POST"),
    ("POST", "/v2/models/fraud-detector", fraud_infer(), 405, "use GET"),
    ("GET", "/v2/repository/index", None, 404, "not an Open Inference Protocol path"),
]


def test_the_readme_tritonclient_http_example_runs_as_written(serving: Callable[[str, str], Service]) -> None:
    """README.md's OIP REST example against the fastapi service of the fraud model: as written but
    for the address it names, 127.0.0.1:8000, which is this service's (on a free port)."""
    served_at = serving(FRAUD, "fastapi").url.removeprefix("http://")
    printed = run_readme_oip_example("import tritonclient.http as httpclient", "127.0.0.1:8000", served_at)
    assert printed.startswith("[1 0] [["), printed


@pytest.mark.parametrize("target", ["fastapi", "flask"])
def test_bad_infer_requests_get_4xx_json_and_the_service_stays_up(
    serving: Callable[[str, str], Service], target: str
) -> None:
    url = serving(FRAUD, target).url
    for method, path, body, status, message in BAD_REQUESTS:
        content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if content else {}
        response = httpx.request(method, url + path, content=content, headers=headers)
        assert response.status_code == status, (path, body, response.text)
        assert message in response.json()["error"], (path, body, response.text)
    good = httpx.post(url + INFER, json=fraud_infer()).json()
    assert good["outputs"][0] == {"name": "predict", "datatype": "INT64", "shape": [1], "data": [1]}
    nested = httpx.post(url + INFER, json=fraud_infer(hour={"shape": [1, 1], "data": [[3]]})).json()
    assert nested["outputs"] == good["outputs"]


@pytest.mark.parametrize("target", ["fastapi", "flask"])
def test_probes(serving: Callable[[str, str], Service], target: str) -> None:
    url = serving(FRAUD, target).url
    assert httpx.get(f"{url}/health/live").json() == {"status": "live"}
    assert httpx.get(f"{url}/health/ready").json() == {"status": "ready"}
    assert httpx.get(f"{url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{url}/v2").json()["name"] == "deployctl"
    assert httpx.get(f"{url}/health").json()["status"] == "healthy"  # as before


@pytest.mark.parametrize(
    ("uri", "target"),
    [(FRAUD, "flask"), ("models:/iris_species/1", "fastapi"), ("models:/house_price/1", "fastapi")],
)
def test_smoke_test_checks_oip_and_metrics(built: Callable[[str, str], Path], uri: str, target: str) -> None:
    artifact = built(uri, target)
    result = run_cli("smoke-test", str(artifact), "--json")
    assert result.code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert all(c["ok"] for c in checks.values())
    assert checks["GET /v2/health/ready"]["ok"]
    assert any(name.startswith(f"POST /v2/models/{MODELS[uri]}/infer") for name in checks)
    # one /predict per recorded row, one /predict_batch, one infer, two bad /predict
    sent = len(Artifact.open(artifact).smoke_cases) + 4
    detail = checks["GET /metrics counts the smoke test's requests"]["detail"]
    assert detail.startswith(f"{sent} requests on 4 routes")


# -- metrics --------------------------------------------------------------------------------------


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of GET /metrics, parsed by prometheus_client's own parser."""
    response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def requests_total(found: dict[Any, float], route: str, code: str) -> float:
    return found.get(("deployctl_requests_total", (("code", code), ("route", route))), 0.0)


@pytest.mark.parametrize(("target", "workers"), [("fastapi", 1), ("flask", 2), ("fastapi", 2)])
def test_metrics_count_requests_rows_and_errors(
    built: Callable[[str, str], Path], target: str, workers: int
) -> None:
    """With 2 workers, every worker's counts are in the one answer (multiprocess mode)."""
    service = Service(built(FRAUD, target), workers)
    try:
        before = samples(service.url)
        for _ in range(6):
            assert httpx.post(f"{service.url}/predict", json={"features": FRAUD_ROW}).status_code == 200
        assert httpx.post(f"{service.url}/predict_batch", json=[FRAUD_ROW] * 5).status_code == 200
        assert httpx.post(f"{service.url}/predict", content=b"{").status_code == 400
        assert httpx.post(f"{service.url}{INFER}", json=fraud_infer()).status_code == 200
        after = samples(service.url)
    finally:
        service.stop()
    assert requests_total(after, "/predict", "200") - requests_total(before, "/predict", "200") == 6
    assert requests_total(after, "/predict", "400") - requests_total(before, "/predict", "400") == 1
    assert requests_total(after, "/v2/models/{name}/infer", "200") == 1
    assert after[("deployctl_rows_total", ())] - before[("deployctl_rows_total", ())] == 12
    assert after[("deployctl_batch_rows_sum", ())] - before[("deployctl_batch_rows_sum", ())] == 12
    assert after[("deployctl_request_duration_seconds_count", (("route", "/predict"),))] >= 7
    info = (("flavor", "sklearn"), ("name", "fraud_detector"), ("runtime", target), ("version", "1"))
    assert after[("deployctl_model_info", info)] == 1
    assert after[("deployctl_requests_in_progress", ())] == 1  # this scrape


def test_a_real_prometheus_scrapes_the_service(built: Callable[[str, str], Path], tmp_path: Path) -> None:
    if shutil.which("prometheus") is None:
        message = "no prometheus on PATH: install Debian's `prometheus` package (.ci/run does)"
        if REQUIRE_DOCKER:  # CI: never green by skipping
            pytest.fail(message)
        pytest.skip(message)
    service = Service(built(FRAUD, "fastapi"))
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": "model",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [service.url[7:]]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        sent = 9
        for _ in range(sent):
            assert httpx.post(f"{service.url}/predict", json={"features": FRAUD_ROW}).status_code == 200
        query = 'deployctl_requests_total{job="model",route="/predict",code="200"}'
        deadline = time.monotonic() + 60
        value = up = None
        while time.monotonic() < deadline and (value != sent or up != 1):
            time.sleep(0.5)
            value = promql(port, query)
            up = promql(port, 'up{job="model"}')
        assert (up, value) == (1, sent)
    finally:
        prometheus.terminate()
        prometheus.wait(30)
        service.stop()


def promql(port: int, query: str) -> float | None:
    """The value of a one-series instant query, None before Prometheus has it."""
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}).json()
    except httpx.TransportError:
        return None
    result = answer.get("data", {}).get("result", [])
    return float(result[0]["value"][1]) if len(result) == 1 else None
