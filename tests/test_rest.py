"""flask and fastapi end to end: generate, build, smoke-test and serve through the real CLI, then
drive the running services over HTTP with good and bad requests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import FRAUD_ROW, Registry, run_cli

from deployctl.process import free_port

pytestmark = pytest.mark.slow
FRAUD_COLUMNS = list(FRAUD_ROW)


@pytest.fixture(scope="session")
def build_artifact(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """generate + build through the CLI, once per (model, target) unless a fresh copy is asked."""
    cache: dict[tuple[str, str], Path] = {}

    def make(uri: str, target: str, fresh: bool = False) -> Path:
        key = (uri, target)
        if key in cache and not fresh:
            return cache[key]
        out = tmp_path_factory.mktemp(target) / "artifact"
        result = run_cli("generate", "-m", uri, "-t", target, "-o", str(out), env=registry.env())
        assert result.code == 0, result.output
        result = run_cli("build", str(out))
        assert result.code == 0, result.output
        if not fresh:
            cache[key] = out
        return out

    return make


def serve(artifact: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployctl", "serve", str(artifact), "--port", str(port)],
        env={**os.environ, "WORKERS": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240  # a PyTorch model on a loaded 2-core CI machine: minutes
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
    raise AssertionError("service did not become healthy in 240 s")


@pytest.fixture(scope="module", params=["fastapi", "flask"])
def fraud_service(
    request: pytest.FixtureRequest, build_artifact: Callable[..., Path]
) -> Iterator[tuple[str, Path]]:
    artifact = build_artifact("models:/fraud_detector@production", request.param)
    proc, url = serve(artifact)
    yield url, artifact
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)


def in_process(artifact: Path, rows: list[dict]) -> tuple[list, list]:
    """What the bundled model answers in this process, through MLflow's own loader."""
    import mlflow.sklearn
    import pandas as pd

    model = mlflow.sklearn.load_model(str(artifact / "model"))
    frame = pd.DataFrame(rows)
    return model.predict(frame).tolist(), model.predict_proba(frame)[:, 1].tolist()


@pytest.mark.parametrize(
    ("uri", "target"),
    [
        ("models:/fraud_detector@production", "fastapi"),
        ("models:/fraud_detector@production", "flask"),
        ("models:/iris_species/1", "fastapi"),
        ("models:/iris_species/1", "flask"),
        ("models:/house_price/1", "fastapi"),
        ("models:/churn_logreg/1", "flask"),
        ("models:/doubler/1", "fastapi"),
    ],
)
def test_smoke_test_passes_for_every_model_kind(
    build_artifact: Callable[..., Path], uri: str, target: str
) -> None:
    artifact = build_artifact(uri, target)
    # a relative path, as a user types it
    result = run_cli("smoke-test", artifact.name, "--json", cwd=artifact.parent)
    assert result.code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["target"] == target
    names = [c["name"] for c in report["checks"]]
    assert any("/predict_batch" in n for n in names) and any("malformed" in n for n in names)


def test_predictions_equal_the_models_in_process_output(fraud_service: tuple[str, Path]) -> None:
    url, artifact = fraud_service
    rows = [
        FRAUD_ROW,
        {
            **FRAUD_ROW,
            "amount": 12.5,
            "hour": 14,
            "is_foreign": False,
            "merchant_category": "grocery",
            "account_age_days": 3000,
        },
    ]
    labels, probas = in_process(artifact, rows)
    for row, label, proba in zip(rows, labels, probas):
        for features in (row, [row[c] for c in FRAUD_COLUMNS]):
            answer = httpx.post(f"{url}/predict", json={"features": features}).json()
            # the same row scored alone or in a batch may differ in the last bit (BLAS blocking)
            assert answer == {
                "prediction": label,
                "probability": pytest.approx(proba, rel=1e-12),
                "model_version": "1",
            }
    batch = httpx.post(f"{url}/predict_batch", json={"instances": rows}).json()
    assert batch == {
        "predictions": labels,
        "probabilities": pytest.approx(probas, rel=1e-12),
        "model_version": "1",
    }
    assert httpx.post(f"{url}/predict_batch", json=rows).json()["predictions"] == labels
    health = httpx.get(f"{url}/health").json()
    assert health == {"status": "healthy", "model_name": "fraud_detector", "model_version": "1"}


def test_invocations_accepts_every_mlflow_input_format(fraud_service: tuple[str, Path]) -> None:
    url, artifact = fraud_service
    rows = [FRAUD_ROW, {**FRAUD_ROW, "hour": 15, "is_foreign": False}]
    labels, _ = in_process(artifact, rows)
    bodies = [
        {
            "dataframe_split": {
                "columns": FRAUD_COLUMNS,
                "data": [[r[c] for c in FRAUD_COLUMNS] for r in rows],
            }
        },
        {"dataframe_records": rows},
        {"instances": rows},
        {"inputs": {c: [r[c] for r in rows] for c in FRAUD_COLUMNS}},
    ]
    for body in bodies:
        response = httpx.post(f"{url}/invocations", json=body)
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": labels}


BAD_REQUESTS = [
    ("POST", "/predict", b"not json", 400, "not valid JSON"),
    ("POST", "/predict", b"", 400, "empty"),
    ("POST", "/predict", b"[]", 400, "features"),
    ("POST", "/predict", json.dumps({"features": [1, 2]}).encode(), 400, "expected 5 values"),
    (
        "POST",
        "/predict",
        json.dumps({"features": {**FRAUD_ROW, "amount": "high"}}).encode(),
        400,
        "'amount' must be a number",
    ),
    (
        "POST",
        "/predict",
        json.dumps({"features": {k: v for k, v in FRAUD_ROW.items() if k != "hour"}}).encode(),
        400,
        "'hour' is required",
    ),
    (
        "POST",
        "/predict",
        json.dumps({"features": {**FRAUD_ROW, "hour": None}}).encode(),
        400,
        "'hour' is required",
    ),
    ("POST", "/predict", json.dumps({"features": {**FRAUD_ROW, "amout": 1}}).encode(), 400, "unknown field"),
    (
        "POST",
        "/predict",
        json.dumps({"features": {**FRAUD_ROW, "is_foreign": "yes"}}).encode(),
        400,
        "true or false",
    ),
    (
        "POST",
        "/predict",
        json.dumps({"features": {**FRAUD_ROW, "hour": 3.5}}).encode(),
        400,
        "must be an integer",
    ),
    (
        "POST",
        "/predict_batch",
        json.dumps({"instances": [list(FRAUD_ROW.values()), [1, 2]]}).encode(),
        400,
        "instances[1]",
    ),
    ("POST", "/predict_batch", json.dumps({"instances": []}).encode(), 400, "non-empty"),
    ("POST", "/predict", b'{"features": [' + b"1," * 700_000 + b"1]}", 413, "over the limit"),
    ("POST", "/invocations", json.dumps({"foo": 1}).encode(), 400, "exactly one of the input fields"),
    (
        "POST",
        "/invocations",
        json.dumps({"dataframe_split": {"columns": FRAUD_COLUMNS, "data": [[1]]}}).encode(),
        400,
        "'split' format",
    ),
    ("GET", "/predict", b"", 405, "GET /predict"),
    ("GET", "/nope", b"", 404, ""),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "phrase"), BAD_REQUESTS)
def test_bad_input_gets_a_4xx_json_error_and_the_service_stays_up(
    fraud_service: tuple[str, Path], method: str, path: str, body: bytes, status: int, phrase: str
) -> None:
    url, _ = fraud_service
    response = httpx.request(
        method, f"{url}{path}", content=body or None, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert phrase in response.json()["error"]
    assert httpx.get(f"{url}/health").status_code == 200


def test_non_json_content_type_is_refused(fraud_service: tuple[str, Path]) -> None:
    url, _ = fraud_service
    response = httpx.post(f"{url}/predict", content=b"a,b", headers={"content-type": "text/csv"})
    assert response.status_code == 415 and "application/json" in response.json()["error"]


def test_fastapi_openapi_describes_the_signature(build_artifact: Callable[..., Path]) -> None:
    from openapi_spec_validator import validate

    proc, url = serve(build_artifact("models:/fraud_detector@production", "fastapi"))
    try:
        spec = httpx.get(f"{url}/openapi.json").json()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    validate(spec)
    features = spec["components"]["schemas"]["Features"]
    types = {name: prop.get("type") for name, prop in features["properties"].items()}
    assert types == {
        "amount": "number",
        "hour": "integer",
        "merchant_category": "string",
        "is_foreign": "boolean",
        "account_age_days": "integer",
    }
    assert set(features["required"]) == set(FRAUD_COLUMNS)
    assert "/predict" in spec["paths"] and "requestBody" in spec["paths"]["/predict"]["post"]


@pytest.mark.parametrize("target", ["fastapi", "flask"])
def test_serve_stops_cleanly_on_sigterm(build_artifact: Callable[..., Path], target: str) -> None:
    proc, url = serve(build_artifact("models:/house_price/1", target))
    assert httpx.post(f"{url}/predict", json={"features": [80.0, 3, 10.0]}).status_code == 200
    proc.send_signal(signal.SIGTERM)
    # gunicorn exits 0; uvicorn re-raises the signal after its graceful shutdown, which the app's
    # own handler (there for SIGTERM during model load) turns into exit 128 + 15: all clean
    assert proc.wait(20) in (0, 128 + signal.SIGTERM)
    assert proc.stdout is not None and "Shutting down" in proc.stdout.read().decode()


def test_a_pinned_artifact_keeps_serving_its_version_after_the_alias_moves(
    registry: Registry, build_artifact: Callable[..., Path]
) -> None:
    from mlflow import MlflowClient

    artifact = build_artifact("models:/fraud_detector@production", "fastapi", fresh=True)
    client = MlflowClient(registry.tracking_uri)
    client.set_registered_model_alias("fraud_detector", "production", "2")
    try:
        result = run_cli("smoke-test", str(artifact), "--json")
        assert result.code == 0, result.output
        inspect = run_cli("inspect", "-m", "models:/fraud_detector@production", "--json", env=registry.env())
        assert json.loads(inspect.stdout)["version"] == "2"
    finally:
        client.set_registered_model_alias("fraud_detector", "production", "1")
    assert json.loads((artifact / "deployctl.json").read_text())["model"]["version"] == "1"


def test_smoke_test_fails_when_answers_differ_from_the_record(build_artifact: Callable[..., Path]) -> None:
    artifact = build_artifact("models:/house_price/1", "fastapi", fresh=True)
    manifest_file = artifact / "deployctl.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["smoke_cases"][0]["prediction"] += 1.0
    manifest_file.write_text(json.dumps(manifest))
    result = run_cli("smoke-test", str(artifact))
    assert result.code == 1
    assert "does not serve the model as recorded" in " ".join(result.stderr.split())
    assert "Traceback" not in result.output
    assert "!= recorded" in " ".join(result.output.split())


def test_smoke_test_shows_the_log_when_the_service_cannot_start(build_artifact: Callable[..., Path]) -> None:
    artifact = build_artifact("models:/house_price/1", "flask", fresh=True)
    model_file = next((artifact / "model").glob("model.*"))
    model_file.write_bytes(b"corrupted")
    result = run_cli("smoke-test", str(artifact), "--timeout", "60")
    assert result.code == 1
    text = " ".join(result.stderr.split())
    assert "exited before it became healthy" in text and "Traceback" not in result.stdout
    assert "Error:" in result.stderr


@pytest.fixture(scope="module")
def mlflow_serve(registry: Registry) -> Iterator[Callable[[str], str]]:
    """`mlflow models serve` for a model URI, started on demand and stopped at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(uri: str) -> str:
        port = free_port()
        cmd = [
            "mlflow",
            "models",
            "serve",
            "-m",
            uri,
            "--env-manager",
            "local",
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
        ]
        proc = subprocess.Popen(cmd, env=registry.env(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{url}/ping").status_code == 200:
                    return url
            except httpx.TransportError:
                time.sleep(0.2)
            assert proc.poll() is None, "mlflow models serve exited"
        raise AssertionError("mlflow models serve did not start")

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize(
    ("uri", "rows"),
    [
        ("models:/fraud_detector/1", [FRAUD_ROW, {**FRAUD_ROW, "amount": 3.0, "is_foreign": False}]),
        (
            "models:/iris_species/1",
            [{"sepal length (cm)": 0.1, "sepal_width": -1.0, "petal_length": 2, "petal_width": 0.3}],
        ),
    ],
)
def test_invocations_answers_exactly_as_mlflow_models_serve(
    build_artifact: Callable[..., Path], mlflow_serve: Callable[[str], str], uri: str, rows: list[dict]
) -> None:
    ours, _ = proc_url = serve(build_artifact(uri, "fastapi"))
    theirs = mlflow_serve(uri)
    columns = list(rows[0])
    bodies = [
        {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in rows]}},
        {"dataframe_records": rows},
        {"instances": rows},
        {"inputs": {c: [r[c] for r in rows] for c in columns}},
    ]
    try:
        for body in bodies:
            mine = httpx.post(f"{proc_url[1]}/invocations", json=body)
            reference = httpx.post(f"{theirs}/invocations", json=body)
            assert (mine.status_code, mine.json()) == (reference.status_code, reference.json()), body
        for bad in ({"dataframe_records": [{"nope": 1}]}, {"unknown_key": []}):
            mine = httpx.post(f"{proc_url[1]}/invocations", json=bad)
            reference = httpx.post(f"{theirs}/invocations", json=bad)
            assert mine.status_code == reference.status_code == 400, (bad, reference.text)
            # MLflow clients read error_code and message; ours adds the contract's "error"
            assert {"error_code", "message"} <= set(mine.json()) and "error" in mine.json()
    finally:
        ours.send_signal(signal.SIGTERM)
        ours.wait(20)
