"""gcf end to end: generate and build through the real CLI, then run the real functions-framework
(`deployctl serve`) and drive it over HTTP with good and bad requests; smoke-test exits 0."""

from __future__ import annotations

import contextlib
import hashlib
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
from conftest import Registry, infer_inputs, loadtest_every_route, run_cli

from deployctl.manifest import Artifact
from deployctl.process import free_port
from deployctl.targets import gcf

pytestmark = pytest.mark.slow
FRAUD = "models:/fraud_detector@production"
HOUSE = "models:/house_price/1"
ROW = {"amount": 950.0, "hour": 3, "merchant_category": "gaming", "is_foreign": True, "account_age_days": 12}


@pytest.fixture(scope="module")
def built(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, str]]:
    """generate + build through the CLI once per model: (artifact, output of both commands)."""
    cache: dict[str, tuple[Path, str]] = {}

    def make(uri: str) -> tuple[Path, str]:
        if uri not in cache:
            out = tmp_path_factory.mktemp("gcf") / "fn"
            generated = run_cli("generate", "-m", uri, "-t", "gcf", "-o", str(out), env=registry.env())
            assert generated.code == 0, generated.output
            build = run_cli("build", str(out))
            assert build.code == 0, build.output
            cache[uri] = (out, generated.output + build.output)
        return cache[uri]

    return make


@contextlib.contextmanager
def serving(artifact: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """`deployctl serve`: the real functions-framework, its URL once /health answers, until SIGTERM."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployctl", "serve", str(artifact), "--port", str(port)],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


@pytest.fixture(scope="module")
def fraud_url(built: Callable[[str], tuple[Path, str]]) -> Iterator[str]:
    with serving(built(FRAUD)[0]) as url:
        yield url


def test_generate_writes_the_function_source_and_prints_the_deploy_command(
    built: Callable[[str], tuple[Path, str]],
) -> None:
    artifact, output = built(FRAUD)
    main = (artifact / "main.py").read_text()
    assert "@functions_framework.http\ndef handle(" in main and "import deployctl" not in main
    requirements = (artifact / "requirements.txt").read_text().splitlines()
    assert gcf.FUNCTIONS_FRAMEWORK in requirements
    assert all("==" in line for line in requirements if line and not line.startswith("#"))
    ignored = (artifact / ".gcloudignore").read_text()
    assert ".venv/" in ignored and "dist/" in ignored
    command = "gcloud functions deploy fraud-detector --gen2 --runtime=python311 --region=us-central1"
    assert command in " ".join(output.split())  # the terminal may wrap it
    assert "--entry-point=handle --trigger-http --memory=1Gi --timeout=60s" in " ".join(output.split())
    # private: only callers with roles/cloudfunctions.invoker (issue 20)
    assert "--timeout=60s --no-allow-unauthenticated" in " ".join(output.split())
    assert "--allow-unauthenticated" not in output.replace("--no-allow-unauthenticated", "")
    assert "--source=. --entry-point=handle" in (artifact / "README.md").read_text()


def test_build_makes_a_venv_with_the_real_functions_framework_and_measures_the_upload(
    built: Callable[[str], tuple[Path, str]],
) -> None:
    artifact, output = built(FRAUD)
    assert (artifact / ".venv" / "bin" / "functions-framework").is_file()
    assert "functions-framework==3.10.2" in (artifact / "requirements.lock").read_text().lower()
    assert "limit 100 MB zipped" in " ".join(output.split())
    uploaded = {p.relative_to(artifact).as_posix() for p in gcf.uploaded_files(artifact)}
    assert {"main.py", "app/runtime.py", "requirements.txt", "deployctl.json", "model/MLmodel"} <= uploaded
    runtime = {f"app/{p.name}" for p in (artifact / "app").glob("*.py")}
    assert "app/service.py" in runtime and runtime <= uploaded  # the whole runtime package
    assert not [p for p in uploaded if p.startswith((".venv/", "dist/")) or p == "requirements.lock"]


@pytest.mark.parametrize("uri", [FRAUD, HOUSE])
def test_cli_smoke_test_passes_on_the_real_functions_framework(
    built: Callable[[str], tuple[Path, str]], uri: str
) -> None:
    artifact, _ = built(uri)
    result = run_cli("smoke-test", str(artifact), "--json")
    assert result.code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["upload within Cloud Functions limits"]["ok"]
    assert checks["POST /invocations dataframe_split"]["ok"]


def test_the_function_answers_as_the_model_did_in_process(
    built: Callable[[str], tuple[Path, str]], fraud_url: str
) -> None:
    cases = Artifact.open(built(FRAUD)[0]).smoke_cases
    names = list(cases[0]["row"])
    for case in cases:
        for features in (case["row"], [case["row"][n] for n in names]):
            answer = httpx.post(f"{fraud_url}/predict", json={"features": features}).json()
            assert answer["prediction"] == case["prediction"]
            assert answer["probability"] == pytest.approx(case["probabilities"]["1"], rel=1e-9)
    rows = [c["row"] for c in cases]
    batch = httpx.post(f"{fraud_url}/predict_batch", json={"instances": rows}).json()
    assert batch["predictions"] == [c["prediction"] for c in cases]
    invocations = httpx.post(f"{fraud_url}/invocations", json={"dataframe_records": rows}).json()
    assert invocations == {"predictions": [c["prediction"] for c in cases]}
    health = httpx.get(f"{fraud_url}/health").json()
    assert health == {"status": "healthy", "model_name": "fraud_detector", "model_version": "1"}


def test_the_function_answers_the_open_inference_protocol(
    built: Callable[[str], tuple[Path, str]], fraud_url: str
) -> None:
    """A real OIP client (tritonclient) against the function; infer answers as /predict_batch."""
    import tritonclient.http as oip

    rows = [case["row"] for case in Artifact.open(built(FRAUD)[0]).smoke_cases]
    client = oip.InferenceServerClient(url=fraud_url.removeprefix("http://"))
    assert (
        client.is_server_live() and client.is_server_ready() and client.is_model_ready("fraud-detector", "1")
    )
    metadata = client.get_model_metadata("fraud-detector")
    result = client.infer("fraud-detector", infer_inputs(metadata, rows))
    batch = httpx.post(f"{fraud_url}/predict_batch", json={"instances": rows}).json()
    assert result.as_numpy("predict").tolist() == batch["predictions"]
    assert result.as_numpy("predict_proba")[:, 1].tolist() == batch["probabilities"]
    assert httpx.get(f"{fraud_url}/health/ready").status_code == 200


def test_post_to_the_bare_url_predicts(fraud_url: str) -> None:
    bare = httpx.post(f"{fraud_url}/", json={"features": ROW})
    assert bare.status_code == 200
    assert bare.json() == httpx.post(f"{fraud_url}/predict", json={"features": ROW}).json()


TOKEN = "tok-5be0f3d8-not-a-real-secret"


def test_with_a_token_digest_the_function_refuses_without_the_right_token(
    built: Callable[[str], tuple[Path, str]],
) -> None:
    """AUTH_TOKEN_SHA256 (a function deployed public): 401 JSON with `WWW-Authenticate: Bearer`
    without the token or with a wrong one, the bare URL too; 200 with it; the probes stay open."""
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    with serving(built(FRAUD)[0], {"AUTH_TOKEN_SHA256": digest}) as url:
        for path in ("/predict", "/"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                answer = httpx.post(f"{url}{path}", json={"features": ROW}, headers=headers)
                assert answer.status_code == 401, (path, headers, answer.text)
                assert answer.headers["www-authenticate"] == "Bearer"
                assert answer.headers["content-type"].startswith("application/json")
                assert answer.json()["error"]
            right = {"Authorization": f"Bearer {TOKEN}"}
            answer = httpx.post(f"{url}{path}", json={"features": ROW}, headers=right)
            assert answer.status_code == 200 and answer.json()["prediction"] in (0, 1), answer.text
        for probe in ("/health", "/health/live", "/health/ready", "/v2/health/ready"):
            assert httpx.get(url + probe).status_code == 200, probe


BAD = [
    ("POST", "/predict", b"{not json", {}, 400, "not valid JSON"),
    ("POST", "/predict", b'{"features": "oops"}', {}, 400, "expected a list or an object"),
    ("POST", "/predict", json.dumps({"features": [1, 2]}).encode(), {}, 400, "expected 5 values"),
    (
        "POST",
        "/predict",
        json.dumps({"features": {k: v for k, v in ROW.items() if k != "hour"}}).encode(),
        {},
        400,
        "'hour' is required",
    ),
    ("POST", "/predict", b"x", {"content-type": "text/plain"}, 415, "application/json"),
    ("POST", "/predict", b'{"features": [' + b"1," * 600_000 + b"1]}", {}, 413, "over the limit"),
    ("GET", "/predict", b"", {}, 405, "GET /predict"),
    ("POST", "/nope", b"{}", {}, 404, "/nope"),
    ("POST", "/invocations", b'{"foo": 1}', {}, 400, "exactly one of the input fields"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "message"), BAD, ids=[f"{b[4]}-{b[5]}" for b in BAD]
)
def test_bad_requests_get_4xx_json_and_the_function_stays_up(
    fraud_url: str, method: str, path: str, body: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    response = httpx.request(
        method, f"{fraud_url}{path}", content=body, headers={"content-type": "application/json", **headers}
    )
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert httpx.get(f"{fraud_url}/health").status_code == 200


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--region", "Mars"], "a region like us-central1"),
        (["--memory", "1TB"], "like 512Mi or 2Gi"),
        (["--timeout", "0"], "between 1 and 3600"),
        (["--runtime", "python27"], "must be one of"),
    ],
)
def test_bad_options_are_usage_errors(
    registry: Registry, tmp_path: Path, options: list[str], message: str
) -> None:
    result = run_cli(
        "generate", "-m", FRAUD, "-t", "gcf", "-o", str(tmp_path / "x"), *options, env=registry.env()
    )
    assert result.code == 2 and message in result.output and "Traceback" not in result.output


def test_gcloudignore_patterns_decide_the_upload(tmp_path: Path) -> None:
    for rel in ("main.py", "big/model.bin", "keep/a.txt", "x/__pycache__/m.pyc"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / ".gcloudignore").write_text("# comment\n.gcloudignore\nbig/\n*.pyc\n")
    names = [p.relative_to(tmp_path).as_posix() for p in gcf.uploaded_files(tmp_path)]
    assert names == ["keep/a.txt", "main.py"]


def test_the_content_type_reaches_the_runtime(fraud_url: str) -> None:
    """/invocations reads text/csv and refuses another charset, as `mlflow models serve` does."""
    import mlflow

    row = ROW
    csv = ",".join(row) + "\n" + ",".join(str(v) for v in row.values()) + "\n"
    by_csv = httpx.post(f"{fraud_url}/invocations", content=csv, headers={"content-type": "text/csv"})
    by_json = httpx.post(f"{fraud_url}/invocations", json={"dataframe_records": [row]})
    assert by_csv.status_code == 200 and by_csv.json() == by_json.json()
    latin = httpx.post(
        f"{fraud_url}/invocations",
        json={"dataframe_records": [row]},
        headers={"content-type": "application/json; charset=latin-1"},
    )
    assert latin.status_code == 415 and "UTF-8" in latin.json()["error"]
    version = httpx.get(f"{fraud_url}/version")
    assert (version.status_code, version.text) == (200, mlflow.__version__)


def test_loadtest_starts_the_artifact_and_checks_every_route(
    built: Callable[[str], tuple[Path, str]],
) -> None:
    loadtest_every_route(built(FRAUD)[0])
