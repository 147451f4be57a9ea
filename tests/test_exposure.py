"""Private by default (issue 20): bearer-token authentication in the runtime, the bound on requests
in progress under overload, `deployctl token`, and smoke-test's credentials, on real services over
real sockets."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import FRAUD_ROW, Registry, build_registry, run_cli
from loadgen import closed_loop, open_loop, percentile, request_bytes
from test_rest import build_artifact, serve  # noqa: F401 - the session's artifacts
from test_runtime import runtime

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
    # fastapi: 4 in flight (the batcher scores them together); flask: one thread, 2 handed over
    env = {"MAX_IN_FLIGHT": "4"} if target == "fastapi" else {"THREADS": "1"}
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
