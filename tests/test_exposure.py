"""Private by default (issue 20): bearer-token authentication in the runtime, the bound on requests
in progress under overload, `deployctl token`, and smoke-test's credentials, on real services over
real sockets."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from conftest import FRAUD_ROW, Registry, build_registry, run_cli
from loadgen import closed_loop, open_loop, percentile, request_bytes
from test_lambda import cfn_lint, cfn_yaml
from test_rest import build_artifact, serve  # noqa: F401 - the session's artifacts
from test_runtime import runtime

from deployctl.manifest import Artifact
from deployctl.targets import get as get_target
from deployctl.targets.k8s import K8S_VERSION

pytestmark = pytest.mark.slow
FRAUD = "models:/fraud_detector@production"
TOKEN = "tok-3f9c1e7a-not-a-real-secret"
DIGEST = runtime.token_digest(TOKEN)


def stop(proc: subprocess.Popen[bytes]) -> str:
    """SIGTERM, then the server's whole output (every log line it wrote)."""
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return out.decode(errors="replace")


# -- the guard, in the runtime package as every artifact carries it --------------------------------


def test_auth_is_off_unless_configured_and_checks_digests() -> None:
    assert runtime.Auth.from_environ({}).refuse("/predict", None) is None
    auth = runtime.Auth.from_environ({"AUTH_TOKEN_SHA256": f"{'0' * 64}, {DIGEST}"})
    assert auth.refuse("/predict", f"Bearer {TOKEN}") is None
    assert auth.refuse("/predict", f"bearer  {TOKEN} ") is None  # the scheme is case-insensitive
    for header in (None, "", TOKEN, f"Basic {TOKEN}", "Bearer ", "Bearer wrong", f"Bearer {TOKEN}x"):
        refused = auth.refuse("/predict", header)
        assert refused is not None and refused.status == 401, header
    for probe in ("/health", "/health/live", "/health/ready/", "/ping", "/v2/health/live", "/metrics"):
        assert auth.refuse(probe, None) is None, probe
    closed = runtime.Auth.from_environ({"AUTH_TOKEN_SHA256": DIGEST, "METRICS_AUTH": "1"})
    assert closed.refuse("/metrics", None) is not None and closed.refuse("/health", None) is None
    assert runtime.headers_for(401) == (("WWW-Authenticate", "Bearer"),)
    assert runtime.headers_for(503) == (("Retry-After", "1"),)


def test_tokens_file_takes_one_digest_a_line_with_comments(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text(f"# the CI's token\n{DIGEST}  # rotated 2026-01\n\n{'a' * 64}\n")
    auth = runtime.Auth.from_environ({"AUTH_TOKENS_FILE": str(file)})
    assert auth.refuse("/predict", f"Bearer {TOKEN}") is None and len(auth.digests) == 2


@pytest.mark.parametrize(
    "environ",
    [
        {"AUTH_TOKEN_SHA256": TOKEN},
        {"AUTH_TOKEN_SHA256": DIGEST.upper()},
        {"AUTH_TOKENS_FILE": "/nonexistent"},
    ],
)
def test_unusable_auth_settings_stop_the_service_without_quoting_them(environ: dict[str, str]) -> None:
    with pytest.raises(runtime.ConfigError) as raised:
        runtime.Auth.from_environ(environ)
    assert TOKEN not in str(raised.value) and DIGEST.upper() not in str(raised.value)


def test_in_flight_bound() -> None:
    bound = runtime.InFlight.from_environ(4, {"MAX_IN_FLIGHT": "2"})
    assert [bound.admit() for _ in range(3)] == [True, True, False]
    bound.release()
    assert bound.admit() and runtime.InFlight.from_environ(4, {}).limit == 4
    with pytest.raises(runtime.ConfigError):
        runtime.InFlight.from_environ(4, {"MAX_IN_FLIGHT": "0"})


def test_token_command_makes_a_token_and_its_digest() -> None:
    result = run_cli("token", "--json")
    assert result.code == 0, result.output
    made = json.loads(result.stdout)
    assert runtime.token_digest(made["token"]) == made["sha256"] and len(made["token"]) >= 40
    assert json.loads(run_cli("token", "--json").stdout)["token"] != made["token"]


# -- authentication on the running services ----------------------------------------------------------


@pytest.mark.parametrize("target", ["fastapi", "flask"])
def test_a_service_with_auth_refuses_without_the_right_token(
    build_artifact: Callable[..., Path],  # noqa: F811
    target: str,
) -> None:
    artifact = build_artifact(FRAUD, target)
    proc, url = serve(artifact, {"AUTH_TOKEN_SHA256": DIGEST})
    try:
        body = {"features": FRAUD_ROW}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            answer = httpx.post(f"{url}/predict", json=body, headers=headers)
            assert answer.status_code == 401, (headers, answer.text)
            assert answer.headers["www-authenticate"] == "Bearer" and "error" in answer.json()
        right = httpx.post(f"{url}/predict", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 200 and right.json()["prediction"] in (0, 1)
        for probe in ("/health", "/health/live", "/health/ready", "/v2/health/ready"):
            assert httpx.get(url + probe).status_code == 200, probe
        metrics = httpx.get(f"{url}/metrics").text  # open by default, and counting the refusals
        assert 'deployctl_requests_total{code="401",route="/predict"} 3.0' in metrics
        assert "deployctl_shed_total 0.0" in metrics
    finally:
        logs = stop(proc)
    assert "/predict" in logs and TOKEN not in logs


def test_metrics_can_be_closed_and_tokens_read_from_a_file(
    build_artifact: Callable[..., Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    (tmp_path / "tokens").write_text(f"# from a Secret\n{DIGEST}\n")
    artifact = build_artifact(FRAUD, "fastapi")
    proc, url = serve(artifact, {"AUTH_TOKENS_FILE": str(tmp_path / "tokens"), "METRICS_AUTH": "1"})
    try:
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/docs").status_code == 401  # FastAPI's own pages too
        assert httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    finally:
        stop(proc)


def test_smoke_test_sends_the_header_and_checks_a_tokenless_request_is_refused(
    build_artifact: Callable[..., Path],  # noqa: F811
    registry: Registry,
) -> None:
    artifact = build_artifact(FRAUD, "flask")
    env = {**registry.env(), "AUTH_TOKEN_SHA256": DIGEST}
    header = f"Authorization: Bearer {TOKEN}"
    result = run_cli("smoke-test", str(artifact), "--header", header, "--json", env=env)
    assert result.code == 0, result.output
    names = [c["name"] for c in json.loads(result.stdout)["checks"]]
    assert any("without a token is refused" in n for n in names)
    assert TOKEN not in result.output
    files = [p for p in artifact.rglob("*") if p.is_file() and ".venv" not in p.parts]
    assert not [p for p in files if TOKEN.encode() in p.read_bytes()]
    # without the token, the same service fails its smoke test (refused), without a traceback
    result = run_cli("smoke-test", str(artifact), env=env)
    assert result.code == 1 and "401" in result.output and "Traceback" not in result.output


# -- overload ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sleeper(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return build_registry("make_slow_registry.py", tmp_path_factory.mktemp("slow-registry"))


@pytest.fixture(params=["fastapi", "flask"])
def overloadable(
    request: pytest.FixtureRequest, sleeper: Registry, tmp_path: Path
) -> Iterator[tuple[str, int, int]]:
    """The slow model served by one worker with a small bound: (target, port, clients it serves)."""
    target, out = request.param, tmp_path / "artifact"
    for command in (
        ["generate", "-m", "models:/sleeper/1", "-t", target, "-o", str(out)],
        ["build", str(out)],
    ):
        result = run_cli(*command, env=sleeper.env())
        assert result.code == 0, result.output
    # sized for this slow model: fastapi 4 in flight (the batcher scores them together); flask one
    # thread, 2 handed over to it
    env = {"MAX_IN_FLIGHT": "4"} if target == "fastapi" else {"THREADS": "1", "MAX_IN_FLIGHT": "2"}
    # no access log: `serve` pipes the output, read only at the end, and thousands of lines would fill it
    proc, url = serve(out, {**env, "ACCESS_LOG": "0"})
    try:
        yield target, int(url.rsplit(":", 1)[1]), 4 if target == "fastapi" else 2
    finally:
        stop(proc)


def test_overload_is_refused_at_once_and_the_admitted_keep_their_latency(
    overloadable: tuple[str, int, int],
) -> None:
    """~3x what the service scores, offered for 4 s: the excess is refused (503 + Retry-After)
    faster than anything is answered, the admitted stay near the unloaded latency, nothing else
    fails, and the service serves at full rate again afterwards."""
    target, port, clients = overloadable
    request = request_bytes(port, "/predict", {"features": [1.0]})
    unloaded = percentile([a.seconds for a in closed_loop(port, request, 1, 1.0)], 0.99)
    capacity = sum(a.status == 200 for a in closed_loop(port, request, clients, 2.0)) / 2.0

    # A warm pool: uvicorn on uvloop accepts new connections slowly while its loop is busy
    # scoring, so a storm of new connections waits in the listen backlog, before any bound.
    outcome = open_loop(port, request, 3 * capacity, 4.0, connections=64)

    assert not outcome.errors, outcome.errors[:5]  # no connection dropped, no timeout
    assert {a.status for a in outcome.answers} == {200, 503}, {a.status for a in outcome.answers}
    refused, admitted = outcome.of(503), outcome.of(200)
    for answer in refused:
        assert answer.headers.get("retry-after") == "1" and "overloaded" in json.loads(answer.body)["error"]
    admitted_ms = [a.seconds for a in admitted]
    refused_ms = [a.seconds for a in refused]
    assert percentile(refused_ms, 0.5) < percentile(admitted_ms, 0.5), (target, refused_ms[:20])
    assert percentile(admitted_ms, 0.99) < 10 * unloaded + 0.25, (target, unloaded, admitted_ms[-20:])

    after = sum(a.status == 200 for a in closed_loop(port, request, clients, 2.0)) / 2.0
    assert after >= 0.7 * capacity, (target, capacity, after)
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert f"deployctl_shed_total {float(len(refused))}" in metrics


# -- cloud exposure: the SAM template and the Kubernetes manifests ------------------------------------


def cfn_lint_clean(template: Path) -> None:
    result = cfn_lint(template)
    assert result.returncode == 0, result.stdout + result.stderr


def sam_api(template: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The HttpApi's properties and the function's HttpApi events, from the SAM template."""
    resources = cfn_yaml(template)["Resources"]
    events = list(resources["ModelFunction"]["Properties"]["Events"].values())
    return resources["ModelApi"]["Properties"], [e["Properties"] for e in events]


def test_lambda_api_requires_aws_iam_by_default_and_is_throttled(
    cli: Callable[..., Any], tmp_path: Path
) -> None:
    result = cli("generate", "-m", FRAUD, "-t", "lambda", "-o", str(tmp_path / "fn"))
    assert result.code == 0 and "Warning" not in result.stderr, result.output
    cfn_lint_clean(tmp_path / "fn" / "template.yaml")
    api, routes = sam_api(tmp_path / "fn" / "template.yaml")
    assert api["Auth"] == {"EnableIamAuthorizer": True, "DefaultAuthorizer": "AWS_IAM"}
    assert api["DefaultRouteSettings"] == {"ThrottlingRateLimit": 50, "ThrottlingBurstLimit": 100}
    assert len(routes) == 10 and all(r["Auth"] == {"Authorizer": "AWS_IAM"} for r in routes)
    assert all(r["ApiId"] == "!Ref" for r in routes)  # cfn_yaml keeps only the tag: !Ref ModelApi
    assert "awscurl" in (tmp_path / "fn" / "README.md").read_text()


def test_lambda_jwt_authorizer_names_issuer_and_audience(cli: Callable[..., Any], tmp_path: Path) -> None:
    issuer = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Abc123"
    options = ["--auth", "jwt", "--jwt-issuer", issuer, "--jwt-audience", "app-1, app-2"]
    options += ["--throttle-rps", "5", "--throttle-burst", "10"]
    result = cli("generate", "-m", FRAUD, "-t", "lambda", "-o", str(tmp_path / "fn"), *options)
    assert result.code == 0, result.output
    cfn_lint_clean(tmp_path / "fn" / "template.yaml")
    api, routes = sam_api(tmp_path / "fn" / "template.yaml")
    jwt = api["Auth"]["Authorizers"]["JwtAuthorizer"]
    assert jwt["JwtConfiguration"] == {"issuer": issuer, "audience": ["app-1", "app-2"]}
    assert jwt["IdentitySource"] == "$request.header.Authorization"
    assert api["Auth"]["DefaultAuthorizer"] == "JwtAuthorizer"
    assert all(r["Auth"] == {"Authorizer": "JwtAuthorizer"} for r in routes)
    assert api["DefaultRouteSettings"] == {"ThrottlingRateLimit": 5, "ThrottlingBurstLimit": 10}


def test_lambda_auth_none_only_when_asked_and_with_a_warning(cli: Callable[..., Any], tmp_path: Path) -> None:
    result = cli("generate", "-m", FRAUD, "-t", "lambda", "-o", str(tmp_path / "fn"), "--auth", "none")
    assert result.code == 0, result.output
    assert "Warning: --auth none" in " ".join(result.stderr.split())
    cfn_lint_clean(tmp_path / "fn" / "template.yaml")
    api, routes = sam_api(tmp_path / "fn" / "template.yaml")
    assert "Auth" not in api and not any("Auth" in r for r in routes)
    assert "DefaultRouteSettings" in api  # throttled still


@pytest.mark.parametrize(
    ("options", "phrase"),
    [
        (["--auth", "jwt"], "--auth jwt needs --jwt-issuer, an https URL"),
        (["--auth", "jwt", "--jwt-issuer", "http://issuer.example"], "an https URL"),
        (["--auth", "jwt", "--jwt-issuer", "https://issuer.example"], "--auth jwt needs --jwt-audience"),
        (["--jwt-audience", "app"], "only apply with --auth jwt"),
        (["--auth", "open"], "--auth must be one of iam, jwt, none"),
        (["--throttle-rps", "0"], "--throttle-rps: must be at least 1"),
    ],
)
def test_lambda_auth_mistakes_are_usage_errors(
    cli: Callable[..., Any], tmp_path: Path, options: list[str], phrase: str
) -> None:
    result = cli("generate", "-m", FRAUD, "-t", "lambda", "-o", str(tmp_path / "fn"), *options)
    assert result.code == 2 and phrase in " ".join(result.stderr.split()), result.output
    assert "Traceback" not in result.output


def k8s_objects(artifact: Path) -> dict[str, dict[str, Any]]:
    docs = [d for f in sorted((artifact / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
    return {d["kind"]: d for d in docs if d}


def test_k8s_is_cluster_internal_by_default_with_a_network_policy(
    cli: Callable[..., Any], tmp_path: Path
) -> None:
    result = cli("generate", "-m", FRAUD, "-t", "k8s", "-o", str(tmp_path / "k8s"))
    assert result.code == 0 and "Warning" not in result.stderr, result.output
    found = k8s_objects(tmp_path / "k8s")
    assert found["Service"]["spec"]["type"] == "ClusterIP"
    policy = found["NetworkPolicy"]
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
    pods = found["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pods.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    # the serving ports only: HTTP and OIP over gRPC (fastapi serves both)
    ports = [{"port": "http", "protocol": "TCP"}, {"port": "grpc", "protocol": "TCP"}]
    assert policy["spec"]["ingress"] == [{"ports": ports}]
    assert "networkpolicy.yaml" in found["Kustomization"]["resources"]
    checks = get_target("k8s").extra_checks(Artifact.open(tmp_path / "k8s"))
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    assert any(c.name == "NetworkPolicy selects the pods" for c in checks)


def test_k8s_public_service_warns_and_namespace_restriction_renders(
    cli: Callable[..., Any], tmp_path: Path
) -> None:
    options = ["--service-type", "LoadBalancer", "--allow-from-namespace", "gateway"]
    result = cli("generate", "-m", FRAUD, "-t", "k8s", "-o", str(tmp_path / "k8s"), *options)
    assert result.code == 0, result.output
    assert "Warning: --service-type LoadBalancer" in " ".join(result.stderr.split())
    found = k8s_objects(tmp_path / "k8s")
    assert found["Service"]["spec"]["type"] == "LoadBalancer"
    rule = found["NetworkPolicy"]["spec"]["ingress"][0]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}}
    ]
    kubernetes_validate.validate(found["NetworkPolicy"], K8S_VERSION, strict=True)


def test_k8s_node_port_warns_that_every_node_exposes_the_model(
    cli: Callable[..., Any], tmp_path: Path
) -> None:
    options = ["--service-type", "NodePort"]
    result = cli("generate", "-m", FRAUD, "-t", "k8s", "-o", str(tmp_path / "k8s"), *options)
    assert result.code == 0, result.output
    warning = " ".join(result.stderr.split())
    assert "Warning: --service-type NodePort: the model is reachable from outside the cluster" in warning
    assert "(a port on every node)" in warning and "AUTH_TOKEN_SHA256" in warning
    assert k8s_objects(tmp_path / "k8s")["Service"]["spec"]["type"] == "NodePort"
