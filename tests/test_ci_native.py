"""CI-native smoke tests: `smoke-test --url` against services started separately (a fastapi process,
the docker container, the Lambda emulator behind a stage base path, functions-framework), another
model version, an endpoint behind an authorizing reverse proxy, a rollout answering 503, an
unreachable endpoint; the JUnit report; `generate`/`build --json`; the pipeline recipes in examples/ci.

Artifacts are generated and built once per module and every service is started once.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, Registry, Result, run_cli
from junitparser import Error, Failure, JUnitXml

from deployctl.manifest import Artifact
from deployctl.process import ProcessService, free_port, wait_healthy
from deployctl.targets import aws_lambda
from deployctl.targets import get as get_target
from deployctl.targets.aws_lambda import emulator as apigw

pytestmark = pytest.mark.slow
FRAUD_V1 = "models:/fraud_detector@production"
FRAUD_V2 = "models:/fraud_detector/2"
SECRET = "s3cr3t-t0ken-4f1c9a7e"
EXAMPLES = ROOT / "examples" / "ci"


# -- artifacts and services, once per module --------------------------------------------------------


@pytest.fixture(scope="module")
def fastapi_v1(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result, Result]:
    """The v1 fraud model as a fastapi artifact, through `generate --json` and `build --json`."""
    out = tmp_path_factory.mktemp("ci") / "v1"
    generated = run_cli(
        "generate", "-m", FRAUD_V1, "-t", "fastapi", "-o", str(out), "--json", env=registry.env()
    )
    assert generated.code == 0, generated.output
    built = run_cli("build", str(out), "--json")
    assert built.code == 0, built.output
    return out, generated, built


@pytest.fixture(scope="module")
def v1_url(fastapi_v1: tuple[Path, Result, Result]) -> Iterator[str]:
    """The v1 service started as `deployctl serve` would start it, not by the smoke test."""
    out = fastapi_v1[0]
    port = free_port()
    env = {"PORT": str(port), "HOST": "127.0.0.1", "WORKERS": "1"}
    yield from serving(ProcessService([str(out / ".venv" / "bin" / "python"), "-m", "app"], out, port, env))


@pytest.fixture(scope="module")
def v2_artifact(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 2 of the same model, generated and never built: --url needs only the manifest."""
    out = tmp_path_factory.mktemp("ci") / "v2"
    result = run_cli("generate", "-m", FRAUD_V2, "-t", "fastapi", "-o", str(out), env=registry.env())
    assert result.code == 0, result.output
    return out


def serving(service: Any, health: str = "/health") -> Iterator[str]:
    try:
        wait_healthy(service, 180, health)
        yield service.base_url
    finally:
        service.stop()


def smoke(artifact: Path, url: str, *args: str, tmp: Path, timeout: float = 300) -> tuple[Result, Any, Any]:
    """`smoke-test --url` with both reports: (result, the JSON report, the parsed JUnit file)."""
    junit = tmp / f"junit-{time.monotonic_ns()}.xml"
    result = run_cli(
        "smoke-test", str(artifact), "--url", url, "--json", "--junit", str(junit), *args, timeout=timeout
    )
    assert "Traceback" not in result.output, result.output
    report = json.loads(result.stdout)  # stdout is the one JSON document, nothing else
    return result, report, JUnitXml.fromfile(str(junit)) if junit.exists() else None


def suite_of(xml: Any) -> Any:
    suites = list(xml)
    assert len(suites) == 1, "one testsuite"
    return suites[0]


def assert_junit_matches(xml: Any, report: dict[str, Any]) -> None:
    """One testcase per check, in order, with its outcome, time and properties."""
    suite = suite_of(xml)
    cases = list(suite)
    assert [c.name for c in cases] == [c["name"] for c in report["checks"]]
    for case, check in zip(cases, report["checks"]):
        assert case.is_passed == check["ok"], (case.name, case.result)
        assert case.time == pytest.approx((check["ms"] or 0) / 1000, abs=0.002)
    props = {p.name: p.value for p in suite.properties()}
    assert props["target"] == report["target"] and props["version"] == report["version"]
    assert props["model"] == report["model"] and props["url"] == report["url"]
    assert suite.tests == len(cases)
    assert suite.failures + suite.errors == sum(not c["ok"] for c in report["checks"])


# -- generate --json and build --json ----------------------------------------------------------------


def test_generate_and_build_json_print_one_summary_on_stdout(fastapi_v1: tuple[Path, Result, Result]) -> None:
    out, generated, built = fastapi_v1
    summary = json.loads(generated.stdout)  # fails on anything else on stdout
    assert summary["path"] == str(out.resolve()) and summary["target"] == "fastapi"
    assert summary["model"] == {"name": "fraud_detector", "version": "1", "uri": FRAUD_V1}
    assert "app/runtime.py" in summary["files"] and summary["files_written"] == len(summary["files"])
    assert 0 < summary["seconds"] < 600
    assert "Generated" in generated.stderr  # progress stays on stderr
    facts = json.loads(built.stdout)
    assert facts["target"] == "fastapi" and facts["path"] == str(out.resolve())
    assert facts["build"]["venv"].endswith(".venv") and facts["seconds"] >= 0 and facts["edited"] == []
    assert "Built" in built.stderr


# -- the fastapi process ----------------------------------------------------------------------------


def test_url_passes_against_a_separately_started_service(
    fastapi_v1: tuple[Path, Result, Result], v1_url: str, tmp_path: Path
) -> None:
    result, report, xml = smoke(fastapi_v1[0], v1_url, tmp=tmp_path)
    assert result.code == 0, result.output
    assert report["ok"] and report["outcome"] == "passed" and report["url"] == v1_url
    names = [c["name"] for c in report["checks"]]
    assert names[0].startswith("GET /health")
    for name in (
        "POST /predict row 0 (list)",
        "POST /predict_batch 5 rows",
        "POST /invocations dataframe_split",
    ):
        assert name in names
    assert "POST /predict malformed JSON" in names and names[-1] == "GET /health after bad input"
    assert all(c["ms"] and c["ms"] > 0 for c in report["checks"])  # the latency of every call
    assert_junit_matches(xml, report)
    assert "Smoke test passed" in result.stderr


def test_another_version_fails_first_with_the_version_message(
    v2_artifact: Path, v1_url: str, tmp_path: Path
) -> None:
    result, report, xml = smoke(v2_artifact, v1_url, tmp=tmp_path)
    assert result.code == 1, result.output
    message = "the endpoint serves version 1, this artifact pins 2"
    assert message in " ".join(result.stderr.split())
    assert len(report["checks"]) == 1 and report["outcome"] == "failed"  # nothing else was asked
    (case,) = list(suite_of(xml))
    (failure,) = case.result
    assert isinstance(failure, Failure) and message in failure.message
    assert "expected: version 2" in failure.text and "got: version 1" in failure.text


def test_a_version_mismatch_is_retried_while_a_rollout_settles(v2_artifact: Path, v1_url: str) -> None:
    started = time.monotonic()
    result = run_cli("smoke-test", str(v2_artifact), "--url", v1_url, "--retries", "1")
    assert result.code == 1, result.output
    assert "retry 1 of 1 in 1 s" in result.stderr and time.monotonic() - started >= 1


def test_a_base_path_with_a_trailing_slash_is_the_same_url(
    fastapi_v1: tuple[Path, Result, Result], v1_url: str, tmp_path: Path
) -> None:
    result, _, _ = smoke(fastapi_v1[0], v1_url + "/", tmp=tmp_path)
    assert result.code == 0, result.output


# -- authorization, redaction, retries ----------------------------------------------------------------


class Proxy(ThreadingHTTPServer):
    """A reverse proxy on loopback: answers 503 to the first `unavailable` requests (a rollout
    settling), refuses requests without `Authorization: Bearer <token>` with a 401, both echoing the
    Authorization header they got (as careless servers do), and forwards the rest to `upstream`."""

    daemon_threads = True

    def __init__(self, upstream: str, token: str | None = None, unavailable: int = 0) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream, self.token, self.unavailable = upstream, token, unavailable
        self.lock = threading.Lock()
        self.seen: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    server: Proxy
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        got = self.headers.get("authorization") or ""
        with self.server.lock:
            self.server.seen.append(got)
            if self.server.unavailable > 0:
                self.server.unavailable -= 1
                return self._reply(503, json.dumps({"message": "Service Unavailable", "auth": got}).encode())
        if self.server.token and got != f"Bearer {self.server.token}":
            return self._reply(401, json.dumps({"error": f"invalid credentials: {got!r}"}).encode())
        host, port = self.server.upstream.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            headers = {"content-type": self.headers.get("content-type") or "application/json"}
            conn.request(self.command, self.path, body=body, headers=headers if body is not None else {})
            response = conn.getresponse()
            self._reply(response.status, response.read())
        finally:
            conn.close()

    def _reply(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def proxy(v1_url: str) -> Iterator[Callable[..., Proxy]]:
    started: list[Proxy] = []

    def start(**kwargs: Any) -> Proxy:
        server = Proxy(v1_url, **kwargs)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def assert_never_shown(secret: str, result: Result, *files: Path) -> None:
    assert secret not in result.stdout and secret not in result.stderr
    for file in files:
        assert secret not in file.read_text()


def test_authorization_header_is_sent_and_never_shown(
    fastapi_v1: tuple[Path, Result, Result], proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    gate = proxy(token=SECRET)
    artifact = fastapi_v1[0]
    junit = tmp_path / "reports" / "smoke.xml"
    header = f"Authorization: Bearer {SECRET}"
    args = ("smoke-test", str(artifact), "--url", gate.url, "--json", "--junit", str(junit))

    passed = run_cli(*args, "--header", header, "-H", "X-Request-Source: ci-pipeline")
    assert passed.code == 0, passed.output
    assert set(gate.seen) == {f"Bearer {SECRET}"}  # on every request
    assert json.loads(passed.stdout)["ok"]
    assert_never_shown(SECRET, passed, junit)

    refused = run_cli(*args)
    assert refused.code == 1, refused.output
    text = " ".join(refused.stderr.split())
    assert "the endpoint refused authorization (HTTP 401)" in text and "--header" in text
    assert "Traceback" not in refused.output

    # a wrong token, echoed back by the endpoint: redacted in the error, the JSON and the JUnit file
    wrong = f"{SECRET}-old"
    echoed = run_cli(*args, "--header", f"Authorization: Bearer {wrong}")
    assert echoed.code == 1, echoed.output
    assert "were not accepted" in " ".join(echoed.stderr.split())
    detail = json.loads(echoed.stdout)["checks"][0]["detail"]
    assert "invalid credentials" in detail and "***" in detail
    assert_never_shown(SECRET, echoed, junit)


def test_a_bad_header_is_a_usage_error_that_does_not_show_it(fastapi_v1: tuple[Path, Result, Result]) -> None:
    artifact = str(fastapi_v1[0])
    result = run_cli(
        "smoke-test", artifact, "--url", "http://127.0.0.1:9", "--header", f"Authorization {SECRET}"
    )
    assert result.code == 2, result.output
    assert "not 'NAME: VALUE'" in result.stderr
    assert_never_shown(SECRET, result)


def test_retries_wait_while_the_endpoint_answers_503(
    fastapi_v1: tuple[Path, Result, Result], proxy: Callable[..., Proxy]
) -> None:
    artifact = str(fastapi_v1[0])
    no_retry = run_cli("smoke-test", artifact, "--url", proxy(unavailable=1).url)
    assert no_retry.code == 1, no_retry.output
    assert "HTTP 503" in no_retry.stderr

    settling = proxy(unavailable=2)
    started = time.monotonic()
    header = f"Authorization: Bearer {SECRET}"
    result = run_cli("smoke-test", artifact, "--url", settling.url, "--retries", "3", "--header", header)
    assert result.code == 0, result.output
    assert "retry 1 of 3 in 1 s\n" in result.stderr and "retry 2 of 3 in 2 s\n" in result.stderr
    assert "HTTP 503" in result.stderr and "'auth': '***'" in result.stderr  # what it echoed, redacted
    assert_never_shown(SECRET, result)
    assert "retry 3" not in result.stderr
    assert time.monotonic() - started >= 3  # the back-off: 1 s, then 2 s


# -- an unreachable endpoint: exit 3 within --timeout -------------------------------------------------


def test_unreachable_endpoint_exits_3_within_the_timeout(
    fastapi_v1: tuple[Path, Result, Result], tmp_path: Path
) -> None:
    artifact = str(fastapi_v1[0])
    # a socket that accepts connections into its backlog and never answers: only --timeout ends a call
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        result, report, xml = smoke(fastapi_v1[0], url, "--timeout", "1", "--retries", "1", tmp=tmp_path)
        elapsed = time.monotonic() - started
    assert result.code == 3, result.output
    assert 3 <= elapsed < 3 + 5, elapsed  # 2 attempts of 1 s + 1 s back-off, plus the CLI's start
    text = " ".join(result.stderr.split())
    assert f"{url} is unreachable" in text and "timed out" in text and "2 attempts" in text
    assert report["outcome"] == "unreachable" and not report["ok"]
    (case,) = list(suite_of(xml))
    assert isinstance(case.result[0], Error)

    refused_port = free_port()  # nothing listens: refused at once
    started = time.monotonic()
    refused = run_cli("smoke-test", artifact, "--url", f"http://127.0.0.1:{refused_port}", "--timeout", "5")
    assert refused.code == 3, refused.output
    assert "refused" in refused.stderr.lower() and time.monotonic() - started < 5


# -- usage and artifact errors: exit 2 -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--url", "ftp://example.com"], "http:// or https://"),
        (["--url", "https://user:pw@example.com"], "must not hold credentials"),
        (["--url", "https://example.com/prod?code=k3y"], "without ?query"),
        (["--retries", "2"], "applies to a deployed service only"),
        (["--url", "http://127.0.0.1:9", "--timeout", "0"], "--timeout must be more than 0"),
    ],
)
def test_usage_mistakes_exit_2(fastapi_v1: tuple[Path, Result, Result], args: list[str], phrase: str) -> None:
    result = run_cli("smoke-test", str(fastapi_v1[0]), *args)
    assert result.code == 2, result.output
    assert phrase in " ".join(result.stderr.split()) and "Traceback" not in result.output
    assert "pw@" not in result.stderr and "k3y" not in result.stderr


def test_not_an_artifact_exits_2(tmp_path: Path) -> None:
    result = run_cli("smoke-test", str(tmp_path), "--url", "http://127.0.0.1:9")
    assert result.code == 2, result.output
    assert "not a deployctl artifact" in " ".join(result.stderr.split())


# -- every HTTP target ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lambda_fn(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ci") / "fn"
    result = run_cli("generate", "-m", FRAUD_V1, "-t", "lambda", "-o", str(out), env=registry.env())
    assert result.code == 0, result.output
    built = run_cli("build", str(out))
    assert built.code == 0, built.output
    return out


@pytest.mark.parametrize("payload", ["2.0", "1.0"])
def test_url_with_a_stage_base_path_through_the_lambda_emulator(
    lambda_fn: Path, payload: str, tmp_path: Path
) -> None:
    """API Gateway serves the function under its stage: https://ID.execute-api.REGION.amazonaws.com/prod."""
    artifact = Artifact.open(lambda_fn)
    zip_path, python, _ = aws_lambda.local_run(artifact)
    port = free_port()
    cmd = [sys.executable, "-I", apigw.WORKER_FILE, "gateway", "--zip", str(zip_path), "--python", python]
    cmd += ["--port", str(port), "--stage", "prod", "--payload", payload, "--name", artifact.name]
    for base in serving(ProcessService(cmd, lambda_fn, port), "/prod/health"):
        result, report, xml = smoke(lambda_fn, f"{base}/prod", tmp=tmp_path)
        assert result.code == 0, result.output
        assert report["target"] == "lambda" and len(report["checks"]) == 13  # OIP ready + infer included
        assert_junit_matches(xml, report)

        # without the stage the gateway has no such route: the first check says so
        missing = run_cli("smoke-test", str(lambda_fn), "--url", base)
        assert missing.code == 1, missing.output
        assert ("HTTP 404" if payload == "2.0" else "HTTP 403") in missing.stderr


@pytest.fixture(scope="module")
def gcf_fn(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ci") / "gcf"
    result = run_cli("generate", "-m", FRAUD_V1, "-t", "gcf", "-o", str(out), env=registry.env())
    assert result.code == 0, result.output
    built = run_cli("build", str(out))
    assert built.code == 0, built.output
    return out


def test_url_against_functions_framework(gcf_fn: Path, tmp_path: Path) -> None:
    port = free_port()
    framework = gcf_fn / ".venv" / "bin" / "functions-framework"
    cmd = [str(framework), "--target", "handle", "--host", "127.0.0.1", "--port", str(port)]
    for base in serving(ProcessService(cmd, gcf_fn, port)):
        result, report, xml = smoke(gcf_fn, base, tmp=tmp_path)
        assert result.code == 0, result.output
        assert report["target"] == "gcf"
        assert_junit_matches(xml, report)


@pytest.mark.docker
def test_url_against_the_docker_container(registry: Registry, tmp_path: Path) -> None:
    out = tmp_path / "img"
    image = ("--image", "deployctl-test/fraud-detector:ci")
    generated = run_cli(
        "generate", "-m", FRAUD_V1, "-t", "docker", "-o", str(out), *image, env=registry.env()
    )
    assert generated.code == 0, generated.output
    built = run_cli("build", str(out), "--json", timeout=1200)
    assert built.code == 0, built.output
    assert json.loads(built.stdout)["build"]["image"] == "deployctl-test/fraud-detector:ci"
    service = get_target("docker").start(Artifact.open(out), free_port())
    for base in serving(service):
        result, report, xml = smoke(out, base, tmp=tmp_path)
        assert result.code == 0, result.output
        assert_junit_matches(xml, report)


# -- the pipeline recipes --------------------------------------------------------------------------------


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is part of the test extra"
    return found


def actionlint() -> list[str]:
    """actionlint, with shellcheck for the run: scripts (it skips them when none is found)."""
    return [tool("actionlint"), "-no-color", "-shellcheck", tool("shellcheck")]


def test_github_workflow_passes_actionlint(tmp_path: Path) -> None:
    workflow = EXAMPLES / "github-actions.yml"
    result = subprocess.run([*actionlint(), str(workflow)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # the linter does catch mistakes in this file: a step that uses an undefined job output
    broken = tmp_path / "broken.yml"
    broken.write_text(workflow.read_text().replace("needs.build.outputs.", "needs.build.outputz."))
    result = subprocess.run([*actionlint(), str(broken)], capture_output=True, text=True)
    assert result.returncode == 1 and "outputz" in result.stdout


def test_github_workflow_runs_the_pipeline_in_order() -> None:
    workflow = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())
    jobs = workflow["jobs"]
    assert list(jobs) == ["build", "compare", "deploy", "verify", "promote"]
    assert jobs["deploy"]["needs"] == ["build", "compare"] and jobs["verify"]["needs"] == ["build", "deploy"]
    assert jobs["promote"]["needs"] == ["build", "verify"]  # only what was compared, deployed, verified
    compare = next(s["run"] for s in jobs["compare"]["steps"] if "deployctl compare" in s.get("run", ""))
    assert "--against" in compare and "--junit" in compare and "> compare.json" in compare
    assert any("--report compare.json" in s.get("run", "") for s in jobs["promote"]["steps"])
    runs = [s.get("run", "") for s in jobs["build"]["steps"]]
    order = [
        next(i for i, r in enumerate(runs) if f"deployctl {c}" in r)
        for c in ("generate", "build", "smoke-test")
    ]
    assert order == sorted(order)
    verify = jobs["verify"]["steps"]
    live = next(s for s in verify if "--url" in s.get("run", ""))
    assert "--junit" in live["run"] and "--header" in live["run"]
    upload = next(s for s in verify if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()"


def test_gitlab_pipeline_declares_stages_jobs_and_junit_reports() -> None:
    pipeline = yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text())
    assert pipeline["stages"] == ["build", "test", "compare", "deploy", "verify", "promote"]
    jobs = {k: v for k, v in pipeline.items() if isinstance(v, dict) and "script" in v}
    assert set(jobs) == {"build", "smoke-test", "compare", "deploy", "verify", "promote"}
    for name, job in jobs.items():
        assert job["stage"] in pipeline["stages"], name
        assert set(job.get("needs", [])) <= set(jobs), name
    for name in ("smoke-test", "compare", "verify"):
        report = jobs[name]["artifacts"]["reports"]["junit"]
        assert jobs[name]["artifacts"]["when"] == "always"
        assert any(f"--junit {report}" in line for line in jobs[name]["script"]), name
    assert any("--url" in line for line in jobs["verify"]["script"])


def scripts(recipe: str) -> str:
    """The shell the recipe runs: GitHub steps' `run:`, GitLab jobs' `before_script` and `script`."""
    data = yaml.safe_load((EXAMPLES / recipe).read_text())
    if "jobs" in data:
        lines = [s.get("run", "") for job in data["jobs"].values() for s in job["steps"]]
    else:
        jobs = [v for v in data.values() if isinstance(v, dict)]
        lines = [line for job in jobs for key in ("before_script", "script") for line in job.get(key, [])]
    return "\n".join(lines).replace("\\\n", " ")


@pytest.mark.parametrize("recipe", ["github-actions.yml", "gitlab-ci.yml"])
def test_recipes_use_only_options_deployctl_has(recipe: str) -> None:
    commands = re.findall(r"deployctl ([a-z-]+)((?: +[^\n|&;#]*)?)", scripts(recipe))
    assert [c for c, _ in commands].count("smoke-test") == 2
    assert {c for c, _ in commands} == {"generate", "build", "smoke-test", "compare", "promote"}
    for command, rest in commands:
        helptext = run_cli(command, "--help").stdout
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest):
            assert option in helptext, f"{recipe}: deployctl {command} has no {option}"
