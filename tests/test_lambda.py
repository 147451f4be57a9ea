"""lambda end to end: generate and build through the real CLI, lint the SAM template with cfn-lint,
invoke the handler from the unpacked zip in a clean interpreter with real API Gateway events (payload
1.0 and 2.0), load the model from S3 served by moto's server mode, smoke-test and serve."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import Registry, loadtest_every_route, run_cli

from deployctl.manifest import Artifact
from deployctl.process import free_port
from deployctl.targets import aws_lambda
from deployctl.targets.aws_lambda import emulator as apigw

pytestmark = pytest.mark.slow
FRAUD = "models:/fraud_detector@production"
IRIS = "models:/iris_species/1"
BUCKET = "models"
ROW = {"amount": 950.0, "hour": 3, "merchant_category": "gaming", "is_foreign": True, "account_age_days": 12}
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def generate(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    def make(uri: str, *options: str) -> Path:
        out = tmp_path_factory.mktemp("lambda") / "fn"
        result = run_cli("generate", "-m", uri, "-t", "lambda", "-o", str(out), *options, env=registry.env())
        assert result.code == 0, result.output
        return out

    return make


@pytest.fixture(scope="module")
def fraud_fn(generate: Callable[..., Path]) -> tuple[Path, str]:
    """The fraud model, bundled in the zip: (artifact, output of `deployctl build`)."""
    out = generate(FRAUD)
    result = run_cli("build", str(out))
    assert result.code == 0, result.output
    return out, result.output


@pytest.fixture(scope="module")
def iris_s3_fn(generate: Callable[..., Path]) -> Path:
    """The multi-class iris model, loaded from S3 at cold start."""
    out = generate(IRIS, "--model-source", "s3", "--s3-bucket", BUCKET)
    result = run_cli("build", str(out))
    assert result.code == 0, result.output
    return out


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    """moto's S3 in server mode (real HTTP); the variables that point boto3 at it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    s3 = s3_client(env)
    s3.create_bucket(Bucket=BUCKET)
    yield env
    server.stop()


def s3_client(env: dict[str, str]) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL_S3"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    )


def upload(env: dict[str, str], tarball: Path, key: str) -> None:
    s3_client(env).upload_file(str(tarball), BUCKET, key)


def start_invoker(artifact: Path, tmp: Path, env: dict[str, str] | None = None) -> apigw.Invoker:
    """The zip unpacked into an empty dir, its handler imported in a clean interpreter."""
    art = Artifact.open(artifact)
    zip_path, python, _ = aws_lambda.local_run(art)
    task, runtime_paths = apigw.prepare(zip_path, tmp, art.options["model_source"] == "s3")
    function = aws_lambda.function_config(art, runtime_paths)
    function.env.update(env or {})
    return apigw.Invoker(task, python, function, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def fraud_invoker(
    fraud_fn: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[apigw.Invoker]:
    invoker = start_invoker(fraud_fn[0], tmp_path_factory.mktemp("task"))
    yield invoker
    invoker.close()


def call(invoker: apigw.Invoker, payload: str, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    """Invoke with an event of `payload` format; return (status, JSON body) from the proxy response."""
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else b"")
    make = apigw.v1_event if payload == "1.0" else apigw.v2_event
    reply = invoker.invoke(make(method, path, data, JSON if data else {}, **kw))
    assert reply["ok"], reply  # the handler never raises, whatever the input
    result = reply["result"]
    assert result["headers"]["content-type"] == "application/json"
    return result["statusCode"], json.loads(result["body"])


def recorded(artifact: Path) -> list[dict[str, Any]]:
    return Artifact.open(artifact).smoke_cases


# -- generate and build ---------------------------------------------------------------------------


def cfn_yaml(path: Path) -> dict[str, Any]:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: f"!{suffix}")
    return dict(yaml.load(path.read_text(), Loader=Loader))


def cfn_lint(template: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or shutil.which("cfn-lint")
    assert tool, "cfn-lint is part of the test extra"
    return subprocess.run([tool, str(template)], capture_output=True, text=True, timeout=300)


def test_sam_templates_pass_cfn_lint(fraud_fn: tuple[Path, str], iris_s3_fn: Path) -> None:
    for artifact in (fraud_fn[0], iris_s3_fn):
        result = cfn_lint(artifact / "template.yaml")
        assert result.returncode == 0, result.stdout + result.stderr


def test_sam_template_declares_the_function_and_one_http_route_per_endpoint(
    fraud_fn: tuple[Path, str], iris_s3_fn: Path
) -> None:
    template = cfn_yaml(fraud_fn[0] / "template.yaml")
    function = template["Resources"]["ModelFunction"]["Properties"]
    assert function["Runtime"] == "python3.12" and function["Handler"] == "handler.handler"
    assert function["CodeUri"] == "dist/function.zip"
    assert (function["MemorySize"], function["Timeout"]) == (1024, 30)
    routes = {(e["Properties"]["Method"], e["Properties"]["Path"]) for e in function["Events"].values()}
    assert routes == {
        ("GET", "/health"),
        ("POST", "/predict"),
        ("POST", "/predict_batch"),
        ("POST", "/invocations"),
        ("GET", "/version"),
        ("GET", "/health/live"),
        ("GET", "/health/ready"),
        ("GET", "/v2"),
        ("GET", "/v2/{proxy+}"),
        ("POST", "/v2/{proxy+}"),
    }
    assert {e["Type"] for e in function["Events"].values()} == {"HttpApi"}
    s3 = cfn_yaml(iris_s3_fn / "template.yaml")
    assert s3["Parameters"]["ModelBucket"]["Default"] == BUCKET
    assert s3["Parameters"]["ModelKey"]["Default"] == "iris_species/1/model.tar.gz"
    assert "S3ReadPolicy" in s3["Resources"]["ModelFunction"]["Properties"]["Policies"][0]


def test_build_writes_a_lean_reproducible_zip_within_lambda_limits(fraud_fn: tuple[Path, str]) -> None:
    artifact, output = fraud_fn
    report = json.loads((artifact / "dist" / "build.json").read_text())["function"]
    assert report["runtime"] == "python3.12" and report["python"] == "3.12"
    assert report["zip_bytes"] < report["unzipped_bytes"] <= aws_lambda.UNZIPPED_LIMIT
    output = " ".join(output.split())  # the terminal may wrap lines
    assert "sam deploy --template-file" in output and "over the 50 MB limit for direct upload" in output
    with zipfile.ZipFile(artifact / "dist" / "function.zip") as archive:
        names = archive.namelist()
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    for needed in ("handler.py", "app/runtime.py", "deployctl.json", "model/MLmodel", "numpy/__init__.py"):
        assert needed in names
    runtime = sorted(p.name for p in (artifact / "app").glob("*.py"))
    assert "service.py" in runtime and all(f"app/{name}" in names for name in runtime)  # the whole runtime
    assert not [n for n in names if "/tests/" in n or n.endswith((".pyx", ".pxd", "/RECORD", ".h"))]
    # the wheels are those of Lambda's python3.12 (CPython 3.12 ABI), whatever runs deployctl here
    assert any(n.endswith(".cpython-312-x86_64-linux-gnu.so") for n in names)
    assert not any(n.endswith(".cpython-311-x86_64-linux-gnu.so") for n in names)


def test_rebuild_is_byte_for_byte_identical(fraud_fn: tuple[Path, str]) -> None:
    artifact, _ = fraud_fn
    before = json.loads((artifact / "dist" / "build.json").read_text())["function"]["sha256"]
    assert run_cli("build", str(artifact)).code == 0
    after = json.loads((artifact / "dist" / "build.json").read_text())["function"]["sha256"]
    assert after == before


def test_size_check_fails_a_package_over_250_mb(tmp_path: Path) -> None:
    big = tmp_path / "function.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as archive, archive.open("blob", "w") as out:
        for _ in range(251):
            out.write(bytes(aws_lambda.MB))
    check = aws_lambda.size_check(big)
    assert not check.ok and "unzipped 251.0 MB of 250 MB" in check.detail
    assert "container image" in aws_lambda.too_big(251 * aws_lambda.MB).hint  # type: ignore[operator]


def test_wheels_for_python311_on_amazon_linux_2_are_refused_with_a_way_out(
    generate: Callable[..., Path],
) -> None:
    artifact = generate(FRAUD, "--runtime", "python3.11")
    result = run_cli("build", str(artifact))
    assert result.code == 1, result.output
    output = " ".join(result.output.split())
    assert "glibc 2.26" in output and "--runtime python3.12" in output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--model-source", "s3"], "needs a valid --s3-bucket"),
        (["--s3-bucket", "b-1"], "only apply with --model-source s3"),
        (["--memory", "64"], "between 128 and 10240"),
        (["--runtime", "python2.7"], "must be one of"),
    ],
)
def test_bad_options_are_usage_errors(
    registry: Registry, tmp_path: Path, options: list[str], message: str
) -> None:
    result = run_cli(
        "generate", "-m", FRAUD, "-t", "lambda", "-o", str(tmp_path / "x"), *options, env=registry.env()
    )
    assert result.code == 2 and message in result.output and "Traceback" not in result.output


def test_smoke_test_before_build_says_to_build(generate: Callable[..., Path]) -> None:
    artifact = generate(FRAUD)
    result = run_cli("smoke-test", str(artifact))
    assert result.code != 0 and "deployctl build" in result.output and "Traceback" not in result.output


# -- the handler, from the unpacked zip, in a clean interpreter -------------------------------------


@pytest.mark.parametrize("payload", ["1.0", "2.0"])
def test_handler_answers_the_open_inference_protocol(
    fraud_fn: tuple[Path, str], fraud_invoker: apigw.Invoker, payload: str
) -> None:
    rows = [case["row"] for case in recorded(fraud_fn[0])]
    model = "/v2/models/fraud-detector"
    status, metadata = call(fraud_invoker, payload, "GET", model)
    assert status == 200 and [t["name"] for t in metadata["inputs"]] == list(ROW)
    inputs = [
        {
            "name": t["name"],
            "datatype": t["datatype"],
            "shape": [len(rows)],
            "data": [r[t["name"]] for r in rows],
        }
        for t in metadata["inputs"]
    ]
    status, answer = call(fraud_invoker, payload, "POST", f"{model}/versions/1/infer", {"inputs": inputs})
    status_batch, batch = call(fraud_invoker, payload, "POST", "/predict_batch", {"instances": rows})
    assert (status, status_batch) == (200, 200), answer
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["predict"]["data"] == batch["predictions"]
    assert outputs["predict_proba"]["data"][1::2] == batch["probabilities"]
    for path in ("/v2/health/ready", f"{model}/ready", "/health/ready", "/health/live"):
        assert call(fraud_invoker, payload, "GET", path)[0] == 200, path
    status, error = call(fraud_invoker, payload, "POST", "/v2/models/other/infer", {"inputs": inputs})
    assert status == 404 and "'other' is not served" in error["error"]
    status, error = call(fraud_invoker, payload, "POST", f"{model}/infer", {"inputs": inputs[1:]})
    assert status == 400 and "'amount' is required" in error["error"]


@pytest.mark.parametrize("payload", ["1.0", "2.0"])
def test_handler_answers_as_the_model_did_in_process(
    fraud_fn: tuple[Path, str], fraud_invoker: apigw.Invoker, payload: str
) -> None:
    cases = recorded(fraud_fn[0])
    names = list(cases[0]["row"])
    for case in cases:
        for features in (case["row"], [case["row"][n] for n in names]):
            status, answer = call(fraud_invoker, payload, "POST", "/predict", {"features": features})
            assert status == 200, answer
            assert answer["prediction"] == case["prediction"]
            assert answer["probability"] == pytest.approx(case["probabilities"]["1"], rel=1e-9)
    status, batch = call(
        fraud_invoker, payload, "POST", "/predict_batch", {"instances": [c["row"] for c in cases]}
    )
    assert status == 200 and batch["predictions"] == [c["prediction"] for c in cases]
    status, answer = call(fraud_invoker, payload, "POST", "/invocations", {"dataframe_records": [ROW]})
    assert status == 200 and len(answer["predictions"]) == 1
    status, health = call(fraud_invoker, payload, "GET", "/health")
    assert (status, health["model_name"], health["model_version"]) == (200, "fraud_detector", "1")


def test_http_api_quirks_stage_prefix_and_base64_body(fraud_invoker: apigw.Invoker) -> None:
    body = {"features": ROW}
    status, staged = call(fraud_invoker, "2.0", "POST", "/predict", body, stage="prod", base64_body=True)
    assert status == 200 and "prediction" in staged
    status, _ = call(fraud_invoker, "1.0", "POST", "/predict", body, stage="prod", base64_body=True)
    assert status == 200
    # a form-encoded or binary body arrives base64-encoded: decoded, then refused by content type
    event = apigw.v2_event(
        "POST", "/predict", json.dumps(body).encode(), {"content-type": "application/octet-stream"}
    )
    assert event["isBase64Encoded"]
    result = fraud_invoker.invoke(event)["result"]
    assert result["statusCode"] == 415


BAD = [
    ("POST", "/predict", b"{not json", 400, "not valid JSON"),
    ("POST", "/predict", b"", 400, "empty"),
    ("POST", "/predict", {"features": "oops"}, 400, "expected a list or an object"),
    ("POST", "/predict", {"features": [1, 2]}, 400, "expected 5 values"),
    (
        "POST",
        "/predict",
        {"features": {k: v for k, v in ROW.items() if k != "hour"}},
        400,
        "'hour' is required",
    ),
    ("POST", "/predict", {"features": {**ROW, "amount": "high"}}, 400, "'amount' must be a number"),
    ("POST", "/predict_batch", {"instances": [list(ROW.values()), [1]]}, 400, "instances[1]"),
    ("POST", "/invocations", {"foo": 1}, 400, "exactly one of the input fields"),
    ("GET", "/predict", None, 405, "GET /predict"),
    ("POST", "/nope", {"features": []}, 404, "/nope"),
    ("POST", "/predict", b'{"features": [' + b"1," * 600_000 + b"1]}", 413, "over the limit"),
]


@pytest.mark.parametrize("payload", ["1.0", "2.0"])
@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"), BAD, ids=[f"{b[3]}-{b[4]}" for b in BAD]
)
def test_bad_requests_get_4xx_json_never_an_exception(
    fraud_invoker: apigw.Invoker, payload: str, method: str, path: str, body: Any, status: int, message: str
) -> None:
    got, answer = call(fraud_invoker, payload, method, path, body)
    assert got == status and message in answer["error"], answer


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"features": list(ROW.values())}, "not an HTTP event"),
        ([1, 2], "expected an API Gateway"),
        ({"version": "2.0", "rawPath": "/predict", "requestContext": {}}, "no HTTP method"),
        (
            {**apigw.v2_event("POST", "/predict", b"{}", JSON), "body": "%%%", "isBase64Encoded": True},
            "base64",
        ),
        ({**apigw.v1_event("POST", "/predict", b"{}", JSON), "body": {"features": []}}, "must be a string"),
        ({**apigw.v1_event("GET", "/health"), "headers": None, "multiValueHeaders": None}, None),
    ],
)
def test_events_that_are_not_http_requests_get_400(
    fraud_invoker: apigw.Invoker, event: Any, message: str | None
) -> None:
    reply = fraud_invoker.invoke(event)
    assert reply["ok"], reply
    result = reply["result"]
    if message is None:  # a REST API test event without headers is still a fine request
        assert result["statusCode"] == 200
        return
    assert result["statusCode"] == 400 and message in json.loads(result["body"])["error"]


def test_handler_is_still_warm_after_bad_input(fraud_invoker: apigw.Invoker) -> None:
    assert fraud_invoker.alive()
    assert call(fraud_invoker, "2.0", "GET", "/health")[0] == 200


TOKEN = "tok-7d2a9c41-not-a-real-secret"
PROBES = ("/health", "/health/live", "/health/ready", "/v2/health/ready")


def test_with_a_token_digest_the_handler_refuses_without_the_right_token(
    fraud_fn: tuple[Path, str], tmp_path: Path
) -> None:
    """AUTH_TOKEN_SHA256 on the function (a deployment with `--auth none`, the platform checking
    nothing): 401 JSON with `WWW-Authenticate: Bearer` without the token or with a wrong one, in
    both payload formats; 200 with it; the probes stay open."""
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    invoker = start_invoker(fraud_fn[0], tmp_path, {"AUTH_TOKEN_SHA256": digest})
    body = json.dumps({"features": ROW}).encode()
    try:
        for make in (apigw.v1_event, apigw.v2_event):
            for wrong in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                result = invoker.invoke(make("POST", "/predict", body, {**JSON, **wrong}))["result"]
                headers = {name.lower(): value for name, value in result["headers"].items()}
                assert result["statusCode"] == 401, (wrong, result)
                assert headers["www-authenticate"] == "Bearer", headers
                assert headers["content-type"] == "application/json", headers
                assert json.loads(result["body"])["error"], result
            right = {**JSON, "Authorization": f"Bearer {TOKEN}"}
            result = invoker.invoke(make("POST", "/predict", body, right))["result"]
            assert result["statusCode"] == 200 and json.loads(result["body"])["prediction"] in (0, 1), result
            for probe in PROBES:
                assert invoker.invoke(make("GET", probe))["result"]["statusCode"] == 200, probe
    finally:
        invoker.close()


# -- the emulated execution environment itself -----------------------------------------------------


PROBE = """
import json, os, sys
INIT = {"modules": sorted(m for m in sys.modules if m in ("site", "numpy", "deployctl"))}

def handler(event, context):
    return {
        "sys_path": sys.path,
        "cwd": os.getcwd(),
        "init": INIT,
        "context": [context.function_name, context.memory_limit_in_mb, context.aws_request_id,
                    context.invoked_function_arn, context.get_remaining_time_in_millis()],
        "env": {k: os.environ.get(k) for k in ("LAMBDA_TASK_ROOT", "AWS_EXECUTION_ENV", "TMPDIR", "HOME_X")},
    }
"""


def test_worker_runs_the_handler_like_lambda_in_a_clean_interpreter(tmp_path: Path) -> None:
    task = tmp_path / "task"
    task.mkdir()
    (task / "probe.py").write_text(PROBE)
    function = apigw.Function(name="probe", handler="probe.handler", memory_mb=512, timeout_s=5)
    invoker = apigw.Invoker(task, sys.executable, function, stderr=subprocess.DEVNULL)
    try:
        result = invoker.invoke(apigw.v2_event("GET", "/"))["result"]
    finally:
        invoker.close()
    assert result["sys_path"][0] == str(task) and result["cwd"] == str(task)
    assert not [p for p in result["sys_path"] if "site-packages" in p or "dist-packages" in p]
    assert result["init"]["modules"] == []  # no site, nothing of this environment pre-imported
    name, memory, request_id, arn, remaining = result["context"]
    assert (name, memory) == ("probe", "512") and arn.endswith(":function:probe")
    assert request_id and 0 < remaining <= 5000
    assert result["env"]["LAMBDA_TASK_ROOT"] == str(task)
    assert result["env"]["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.12"
    assert result["env"]["TMPDIR"] != os.environ.get("TMPDIR")  # a /tmp of its own


def test_an_import_error_is_reported_as_an_init_failure(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("import numpy\n")  # not in the package: must not be found
    with pytest.raises(apigw.InitFailed, match="No module named 'numpy'"):
        apigw.Invoker(
            tmp_path, sys.executable, apigw.Function(handler="broken.handler"), stderr=subprocess.DEVNULL
        )


def test_gateway_responses_follow_api_gateway_rules() -> None:
    ok = {
        "ok": True,
        "result": {"statusCode": 201, "headers": {"X-A": "1"}, "body": "aGk=", "isBase64Encoded": True},
    }
    assert apigw.http_response(ok, "2.0") == (201, {"x-a": "1"}, b"hi")
    assert apigw.http_response({"ok": True, "result": {"a": 1}}, "2.0") == (
        200,
        {"content-type": "application/json"},
        b'{"a": 1}',
    )
    assert apigw.http_response({"ok": True, "result": {"a": 1}}, "1.0")[0] == 502
    assert apigw.http_response({"ok": False, "errorType": "ValueError"}, "2.0")[0] == 500
    assert apigw.http_response({"ok": False, "errorType": "ValueError"}, "1.0")[0] == 502


# -- S3 model source, against moto's S3 server --------------------------------------------------------


@pytest.fixture(scope="module")
def iris_s3_invoker(
    iris_s3_fn: Path, s3_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[apigw.Invoker]:
    upload(s3_env, iris_s3_fn / "dist" / "model.tar.gz", "iris_species/1/model.tar.gz")
    invoker = start_invoker(iris_s3_fn, tmp_path_factory.mktemp("task"), s3_env)
    yield invoker
    invoker.close()


def test_s3_model_source_keeps_the_model_out_of_the_zip(iris_s3_fn: Path) -> None:
    with zipfile.ZipFile(iris_s3_fn / "dist" / "function.zip") as archive:
        names = archive.namelist()
    assert "handler.py" in names and not [n for n in names if n.startswith(("model/", "boto3/"))]
    with tarfile.open(iris_s3_fn / "dist" / "model.tar.gz") as tar:
        assert {"deployctl.json", "model/MLmodel"} <= set(tar.getnames())


def test_s3_model_is_loaded_at_cold_start_and_answers_as_recorded(
    iris_s3_fn: Path, iris_s3_invoker: apigw.Invoker
) -> None:
    for case in recorded(iris_s3_fn):
        status, answer = call(iris_s3_invoker, "2.0", "POST", "/predict", {"features": case["row"]})
        assert status == 200 and answer["prediction"] == case["prediction"]
        assert answer["probabilities"] == pytest.approx(case["probabilities"], rel=1e-9)
    status, _ = call(iris_s3_invoker, "1.0", "POST", "/predict", {"features": {"petal_length": 1}})
    assert status == 400


def test_s3_tarball_of_another_build_is_refused_at_init(
    iris_s3_fn: Path, fraud_fn: tuple[Path, str], s3_env: dict[str, str], tmp_path: Path
) -> None:
    other = tmp_path / "other.tar.gz"
    aws_lambda.write_model_tarball(Artifact.open(fraud_fn[0]), other)
    upload(s3_env, other, "wrong/model.tar.gz")
    env = {**s3_env, "MODEL_S3_KEY": "wrong/model.tar.gz"}
    with pytest.raises(apigw.InitFailed, match="fraud_detector version 1 from another build"):
        start_invoker(iris_s3_fn, tmp_path / "a", env)
    with pytest.raises(apigw.InitFailed, match="could not download s3://models/missing"):
        start_invoker(iris_s3_fn, tmp_path / "b", {**s3_env, "MODEL_S3_KEY": "missing"})


def test_cli_smoke_test_loads_the_model_from_s3(
    iris_s3_fn: Path, iris_s3_invoker: apigw.Invoker, s3_env: dict[str, str]
) -> None:
    result = run_cli("smoke-test", str(iris_s3_fn), "--json", env={**os.environ, **s3_env})
    assert result.code == 0, result.output
    assert json.loads(result.stdout)["ok"]


# -- the CLI: smoke-test and serve ------------------------------------------------------------------


def test_cli_smoke_test_passes_and_reports_cold_start_and_sizes(fraud_fn: tuple[Path, str]) -> None:
    result = run_cli("smoke-test", str(fraud_fn[0]), "--json")
    assert result.code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["cold start (init)"]["ok"] and checks["cold start (init)"]["ms"] > 0
    assert "unzipped" in checks["package size within Lambda limits"]["detail"]
    assert "python3.12" in checks["interpreter"]["detail"]
    assert checks["REST API event: POST /predict_batch 5 rows"]["ok"]
    assert checks["HTTP API event: stage prefix + base64 body"]["ok"]
    assert checks["POST /predict malformed JSON"]["ok"]  # over HTTP, through the local API Gateway


def test_serve_runs_a_local_api_gateway_until_sigterm(fraud_fn: tuple[Path, str]) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployctl", "serve", str(fraud_fn[0]), "--port", str(port)],
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
                pass
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            time.sleep(0.1)
        answer = httpx.post(f"{url}/predict", json={"features": ROW})
        assert answer.status_code == 200 and answer.json()["model_version"] == "1"
        bad = httpx.post(f"{url}/predict", content=b"{nope", headers=JSON)
        assert bad.status_code == 400 and "error" in bad.json()
        assert httpx.get(f"{url}/nope").status_code == 404
        assert (
            httpx.post(f"{url}/predict", content=b"x", headers={"content-type": "text/plain"}).status_code
            == 415
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_stops_promptly_on_a_signal_to_its_pid(fraud_fn: tuple[Path, str], signum: int) -> None:
    """Ctrl-C's SIGINT sent to the pid alone (`kill -INT`) and SIGTERM, after a warm request: the
    local API Gateway and its function process go within seconds (issue 22 once saw ~10 s)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployctl", "serve", str(fraud_fn[0]), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            with contextlib.suppress(httpx.TransportError):
                if httpx.post(f"http://127.0.0.1:{port}/predict", json={"features": ROW}).status_code == 200:
                    break
            assert proc.poll() is None
            time.sleep(0.1)
        sent = time.monotonic()
        proc.send_signal(signum)
        assert proc.wait(30) == 0
        assert time.monotonic() - sent < 5, "serve took more than 5 s to stop"
    finally:
        proc.kill()
    with pytest.raises(httpx.TransportError):  # the gateway went with it
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


@pytest.mark.parametrize("payload", ["2.0", "1.0"])
def test_the_content_type_reaches_the_runtime(fraud_invoker: apigw.Invoker, payload: str) -> None:
    """/invocations reads text/csv and refuses another charset, as `mlflow models serve` does."""
    make = apigw.v1_event if payload == "1.0" else apigw.v2_event
    csv = (",".join(ROW) + "\n" + ",".join(str(v) for v in ROW.values()) + "\n").encode()
    json_row = json.dumps({"dataframe_records": [ROW]}).encode()
    answers = {}
    for name, body, content_type in [
        ("csv", csv, "text/csv"),
        ("json", json_row, "application/json; charset=utf-8"),
        ("latin-1", json_row, "application/json; charset=latin-1"),
    ]:
        reply = fraud_invoker.invoke(make("POST", "/invocations", body, {"Content-Type": content_type}))
        answers[name] = (reply["result"]["statusCode"], json.loads(reply["result"]["body"]))
    assert answers["csv"] == answers["json"] and answers["csv"][0] == 200
    assert answers["latin-1"][0] == 415 and "UTF-8" in answers["latin-1"][1]["error"]
    reply = fraud_invoker.invoke(make("GET", "/version"))
    import mlflow

    assert (reply["result"]["statusCode"], reply["result"]["body"]) == (200, mlflow.__version__)


def test_loadtest_starts_the_artifact_and_checks_every_route(fraud_fn: tuple[Path, str]) -> None:
    loadtest_every_route(fraud_fn[0])
