"""The trust boundary, filesystem and secrets half: what `--force` may touch, links in model
directories, credentials in tracking URIs, host paths in artifacts, odd `--out` and odd model URIs.

Everything runs for real: the CLI in a subprocess, the session's sqlite registry, a private sqlite
registry for names MLflow accepts but filters choke on, and a real `mlflow server` for URIs with
credentials.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Registry, Result, run_cli
from test_cli import assert_user_error

from deployctl.redact import public_uri, redact

Cli = Callable[..., Result]


@pytest.fixture(autouse=True)
def wide_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich folds long lines (and long paths) at 80 columns: assert on whole paths instead."""
    monkeypatch.setenv("COLUMNS", "400")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry under `root`: file contents, link targets, directories."""
    entries: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            entries[rel] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            entries[rel] = "<dir>"
        else:
            entries[rel] = path.read_bytes()
    return entries


def edit_manifest(out: Path, change: Callable[[dict[str, Any]], None]) -> None:
    manifest = json.loads((out / "deployctl.json").read_text())
    change(manifest)
    (out / "deployctl.json").write_text(json.dumps(manifest, indent=2))


@pytest.fixture(scope="module")
def base_artifact(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fastapi artifact (house_price v1); tests work on copies of it."""
    out = tmp_path_factory.mktemp("base") / "api"
    result = run_cli(
        "generate", "-m", "models:/house_price/1", "-t", "fastapi", "-o", str(out), env=registry.env()
    )
    assert result.code == 0, result.output
    return out


@pytest.fixture
def artifact(base_artifact: Path, tmp_path: Path) -> Path:
    out = tmp_path / "work" / "api"
    shutil.copytree(base_artifact, out)
    return out


@pytest.fixture(scope="module")
def model_dir(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local MLflow model directory: house_price v1's artifacts, copied out of the registry."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=registry.tracking_uri, registry_uri=registry.tracking_uri)
    source = Path(client.get_model_version_download_uri("house_price", "1"))
    dest = tmp_path_factory.mktemp("models") / "house model"
    shutil.copytree(source, dest)
    return dest


# ---------------------------------------------------------------------------------------------
# --force: only what generate wrote and nobody changed


def test_force_keeps_an_edited_file_and_build_reports_it(cli: Cli, artifact: Path) -> None:
    readme = artifact / "README.md"
    readme.write_text(readme.read_text() + "\nOur on-call runbook: page the ML team.\n")
    mine = readme.read_text()
    mlmodel = artifact / "model" / "MLmodel"  # app/server.py is the same for every model now
    old_mlmodel = mlmodel.read_text()

    result = cli("generate", "-m", "models:/churn_logreg/1", "-t", "fastapi", "-o", str(artifact), "--force")
    assert result.code == 0, result.output
    assert readme.read_text() == mine  # the user's edit survives
    assert "kept 1 file(s) you edited" in " ".join(result.stderr.split()) and "README.md" in result.stderr
    assert mlmodel.read_text() != old_mlmodel  # unmodified generated files follow the new model
    manifest = json.loads((artifact / "deployctl.json").read_text())
    assert manifest["model"]["name"] == "churn_logreg"
    assert manifest["files"]["README.md"] != sha(readme)

    built = cli("build", str(artifact))
    assert built.code == 0, built.output
    assert "edited since generate: README.md" in built.stderr
    assert "server.py" not in built.stderr.split("edited since generate:")[1].splitlines()[0]

    # and a second --force still keeps it
    again = cli("generate", "-m", "models:/churn_logreg/1", "-t", "fastapi", "-o", str(artifact), "--force")
    assert again.code == 0, again.output
    assert readme.read_text() == mine


def test_force_removes_stale_files_and_leaves_user_and_build_files(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "svc"
    assert cli("generate", "-m", "models:/house_price/1", "-t", "docker", "-o", str(out)).code == 0
    assert (out / "Dockerfile").is_file()
    (out / "notes.txt").write_text("mine")
    for build_output in (".venv/bin/python", "dist/function.zip", ".wheelhouse/x.whl"):
        (out / build_output).parent.mkdir(parents=True)
        (out / build_output).write_text("built")
    (out / "build.json").write_text("{}")
    (out / "requirements.lock").write_text("x==1")
    compose = out / "docker-compose.yml"
    compose.write_text(compose.read_text() + "# my change\n")

    result = cli("generate", "-m", "models:/house_price/1", "-t", "fastapi", "-o", str(out), "--force")
    assert result.code == 0, result.output
    text = " ".join(result.stderr.split())
    assert not (out / "Dockerfile").exists() and not (out / ".dockerignore").exists()
    assert "removed 2 unmodified generated file(s) no longer produced: .dockerignore, Dockerfile" in text
    assert compose.read_text().endswith("# my change\n")  # edited, no longer generated: kept
    assert "this target no longer generates" in text and "docker-compose.yml" in text
    assert (out / "notes.txt").read_text() == "mine"
    for build_output in (".venv/bin/python", "dist/function.zip", ".wheelhouse/x.whl", "build.json"):
        assert (out / build_output).exists(), build_output
    assert (out / "requirements.lock").read_text() == "x==1"
    assert "docker-compose.yml" not in json.loads((out / "deployctl.json").read_text())["files"]


def test_force_into_a_directory_that_is_no_artifact_refuses_user_files(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "project"
    (out / "app").mkdir(parents=True)
    (out / "README.md").write_text("# my project")
    (out / "requirements.txt").write_text("numpy\n")
    (out / "app" / "server.py").write_text("print('my server')")
    (out / "data.csv").write_text("a,b\n")
    before = snapshot(out)

    result = cli("generate", "-m", "models:/house_price/1", "-t", "fastapi", "-o", str(out), "--force")
    assert_user_error(
        result, "did not write", "README.md", "requirements.txt", "app/server.py", "Nothing was written"
    )
    assert "data.csv" not in result.stderr  # not in the way: not listed
    assert snapshot(out) == before


def test_force_refuses_a_user_model_dir_in_a_directory_that_is_no_artifact(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "project"
    (out / "model").mkdir(parents=True)
    (out / "model" / "weights.bin").write_bytes(b"\x00\x01")
    before = snapshot(out)
    result = cli("generate", "-m", "models:/house_price/1", "-t", "fastapi", "-o", str(out), "--force")
    assert_user_error(result, "model/weights.bin (not written by deployctl)")
    assert snapshot(out) == before


@pytest.mark.parametrize("kind", ["parent", "absolute", "dotdot-inside", "link-out", "build-output"])
def test_force_refuses_a_manifest_listing_paths_outside_out(cli: Cli, artifact: Path, kind: str) -> None:
    victim = artifact.parent / "victim.txt"
    victim.write_text("the user's file next to the artifact")
    outside = artifact.parent / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("another user file")
    (artifact / ".venv").mkdir()
    (artifact / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin")
    listed = {
        "parent": ("../victim.txt", victim),
        "absolute": (str(victim), victim),
        "dotdot-inside": ("app/../../victim.txt", victim),
        "link-out": ("linked/secret.txt", outside / "secret.txt"),
        "build-output": (".venv/pyvenv.cfg", artifact / ".venv" / "pyvenv.cfg"),
    }
    rel, target = listed[kind]
    if kind == "link-out":
        (artifact / "linked").symlink_to(outside)
    # with the right hash, the old --force deleted it as "an unmodified generated file"
    edit_manifest(artifact, lambda m: m["files"].__setitem__(rel, sha(target)))
    before = snapshot(artifact.parent)

    result = cli("generate", "-m", "models:/house_price/1", "-t", "fastapi", "-o", str(artifact), "--force")
    assert_user_error(result, "lead outside --out", rel, "refuses this manifest")
    assert snapshot(artifact.parent) == before


def test_force_refuses_a_model_dir_that_holds_more_than_generate_wrote(cli: Cli, artifact: Path) -> None:
    (artifact / "model" / "notes.md").write_text("how we trained it")
    before = snapshot(artifact)
    args = ("generate", "-m", "models:/churn_logreg/1", "-t", "fastapi", "-o", str(artifact), "--force")
    assert_user_error(cli(*args), "model/notes.md (not written by deployctl)", "Nothing was written")
    assert snapshot(artifact) == before

    (artifact / "model" / "notes.md").unlink()
    mlmodel = artifact / "model" / "MLmodel"
    mlmodel.write_text(mlmodel.read_text() + "# tuned\n")
    assert_user_error(cli(*args), "model/MLmodel (edited)")
    assert mlmodel.read_text().endswith("# tuned\n")

    mlmodel.write_text(mlmodel.read_text().removesuffix("# tuned\n"))
    result = cli(*args)  # exactly what generate wrote: replaced as a unit
    assert result.code == 0, result.output
    assert "replaced" in result.stderr and "model/" in result.stderr
    assert json.loads((artifact / "deployctl.json").read_text())["model"]["name"] == "churn_logreg"


def test_force_refuses_a_corrupt_manifest(cli: Cli, artifact: Path) -> None:
    (artifact / "deployctl.json").write_text("{not json")
    before = snapshot(artifact)
    result = cli("generate", "-m", "models:/house_price/1", "-t", "fastapi", "-o", str(artifact), "--force")
    assert_user_error(result, "is not a valid deployctl manifest", "cannot tell which files")
    assert snapshot(artifact) == before


def test_force_never_writes_through_a_link_planted_in_the_artifact(cli: Cli, artifact: Path) -> None:
    outside = artifact.parent / "elsewhere"
    outside.mkdir()
    shutil.rmtree(artifact / "app")
    (artifact / "app").symlink_to(outside)  # app/server.py would land in `elsewhere`
    result = cli("generate", "-m", "models:/house_price/1", "-t", "fastapi", "-o", str(artifact), "--force")
    assert_user_error(result, "lead outside --out", "(through the link app)", "a link on the way")
    assert list(outside.iterdir()) == []

    # the same link in a directory that is no artifact: in the way, nothing written through it
    (artifact / "deployctl.json").unlink()
    result = cli("generate", "-m", "models:/house_price/1", "-t", "fastapi", "-o", str(artifact), "--force")
    assert_user_error(result, "app (a link, where deployctl writes a directory)", "Nothing was written")
    assert list(outside.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# links in model directories and registry artifacts


def test_a_link_out_of_a_local_model_dir_is_refused(cli: Cli, model_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "credentials"
    secret.write_text("aws_secret_access_key = hunter2")
    local = tmp_path / "model"
    shutil.copytree(model_dir, local)
    (local / "leak").symlink_to(secret)
    out = tmp_path / "out"
    for result in (
        cli("generate", "-m", str(local), "-t", "fastapi", "-o", str(out)),
        cli("inspect", "-m", str(local)),
    ):
        assert_user_error(result, "symbolic link 'leak'", str(secret), "points outside the model directory")
    assert not out.exists()

    (local / "leak").unlink()
    (local / "up").symlink_to("..")  # a directory link that loops back up
    assert_user_error(cli("inspect", "-m", str(local)), "symbolic link 'up'")


def test_a_link_inside_a_local_model_dir_is_copied_as_a_file(
    cli: Cli, model_dir: Path, tmp_path: Path
) -> None:
    local = tmp_path / "model"
    shutil.copytree(model_dir, local)
    (local / "example.json").symlink_to("input_example.json")
    out = tmp_path / "out"
    result = cli("generate", "-m", str(local), "-t", "fastapi", "-o", str(out))
    assert result.code == 0, result.output
    copied = out / "model" / "example.json"
    assert copied.is_file() and not copied.is_symlink()
    assert copied.read_bytes() == (local / "input_example.json").read_bytes()
    assert not any(p.is_symlink() for p in out.rglob("*"))

    (local / "sub").mkdir()
    (local / "alias").symlink_to("sub")  # a link to a directory: refused (loops, whole trees)
    assert_user_error(cli("inspect", "-m", str(local)), "symbolic link 'alias'", "does not point to a file")


def test_a_fifo_in_a_model_dir_is_refused_not_read(cli: Cli, model_dir: Path, tmp_path: Path) -> None:
    local = tmp_path / "model"
    shutil.copytree(model_dir, local)
    os.mkfifo(local / "pipe")
    assert_user_error(
        cli("inspect", "-m", str(local), timeout=120), "'pipe'", "neither a file nor a directory"
    )


@pytest.fixture(scope="module")
def odd_registry(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A private sqlite registry: names with quotes (which MLflow accepts) and a version whose
    artifacts hold a link to a host file."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("odd-registry")
    linked = root / "linked-model"
    shutil.copytree(model_dir, linked)
    (root / "host-secret").write_text("host secret")
    (linked / "leak").symlink_to(root / "host-secret")
    uri = f"sqlite:///{root / 'registry.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for name, source in [
        ("it's", model_dir),
        ('say "hi"', model_dir),
        ("both'\"quotes", model_dir),
        ("linked", linked),
    ]:
        client.create_registered_model(name)
        client.create_model_version(name, source=str(source))
    return uri


@pytest.mark.parametrize("name", ["it's", 'say "hi"', "both'\"quotes"])
def test_names_with_quotes_resolve(odd_registry: str, name: str) -> None:
    # `latest` and stages list the versions with a registry search filter
    result = run_cli("inspect", "-m", f"models:/{name}/latest", "--tracking-uri", odd_registry, "--json")
    assert result.code == 0, result.output
    info = json.loads(result.stdout)
    assert (info["name"], info["version"]) == (name, "1")
    result = run_cli("inspect", "-m", f"models:/{name}/Production", "--tracking-uri", odd_registry)
    assert_user_error(result, "has no version in stage 'Production'")


def test_registry_artifacts_with_a_link_out_are_refused(odd_registry: str) -> None:
    result = run_cli("inspect", "-m", "models:/linked/1", "--tracking-uri", odd_registry)
    assert_user_error(result, "symbolic link 'leak'", "points outside the model directory")


# ---------------------------------------------------------------------------------------------
# secrets


HOSTILE = [
    # (uri, the secrets that must not survive)
    ("http://alice:p@ss@mlflow.internal:5000", ["p@ss", "ss@mlflow", "alice"]),
    ("https://alice:p:w@@rd@host/", ["p:w@@rd", "w@@rd", "@rd@", "alice"]),
    ("https://bob:pa/ss@host/mlflow", ["pa/ss", "bob"]),
    ("https://bob:pa?ss@host/x?token=abc123", ["pa?ss", "bob", "abc123"]),
    ("https://token:dapi0123456789abcdef0123456789abcdef@host", ["dapi0123456789abcdef"]),
    ("databricks://dapi0123456789abcdef0123456789abcdef-2", ["0123456789abcdef0123"]),
    ("https://host/api?token=s3cr3tvalue&x=1", ["s3cr3tvalue"]),
    ("https://host/api?Access_Token=AT123&API_KEY=K456&apikey=K789", ["AT123", "K456", "K789"]),
    (
        "https://host/?secret=S1&password=P2&key=K3&code=C4&sig=G5&signature=G6",
        ["S1", "P2", "K3", "C4", "G5", "G6"],
    ),
    (
        "https://b.s3.amazonaws.com/m.tar.gz?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Security-Token=FwoGZXIvYXdzEXAMPLETOKEN&X-Amz-Signature=0a1b2c3d4e5f",
        ["AKIAIOSFODNN7EXAMPLE", "FwoGZXIvYXdzEXAMPLETOKEN", "0a1b2c3d4e5f"],
    ),
    (
        "https://acct.blob.core.windows.net/models/m?sv=2022-11-02&ss=b&srt=o&sp=r"
        "&se=2030-01-01T00:00:00Z&sig=Zm9vYmFyYmF6cXV4%2BZm9vYmFy%3D",
        ["Zm9vYmFyYmF6cXV4", "Zm9vYmFy%3D"],
    ),
    (
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey="
        + "A" * 40
        + "b" * 46
        + "==;EndpointSuffix=core.windows.net",
        ["A" * 40 + "b" * 46],
    ),
    ("postgresql://mlflow:dbpass@db:5432/mlflow", ["dbpass"]),
    ("https://host/cb#access_token=frag123&state=x", ["frag123"]),
    ("Cannot reach http://u:pw1@h:1 or https://v:pw2@g/ now", ["pw1", "pw2"]),
]


@pytest.mark.parametrize(("uri", "secrets"), HOSTILE)
def test_no_credential_survives_redaction(uri: str, secrets: list[str]) -> None:
    for cleaned in (redact(uri), public_uri(uri)):
        assert cleaned is not None
        for secret in secrets:
            assert secret not in cleaned, (uri, cleaned)


@pytest.mark.parametrize(
    ("uri", "shown", "recorded"),
    [
        ("http://alice:p@ss@host:5000", "http://***@host:5000", "http://host:5000"),
        ("https://host/mlflow?token=x", "https://host/mlflow?token=***", "https://host/mlflow"),
        (
            "sqlite:////home/ci/registry/mlflow.db",
            "sqlite:////home/ci/registry/mlflow.db",
            "sqlite:///mlflow.db",
        ),
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db", "sqlite:///mlflow.db"),
        ("file:///home/ci/mlruns", "file:///home/ci/mlruns", "mlruns"),
        ("/home/ci/models/churn", "/home/ci/models/churn", "churn"),
        ("models:/fraud@production", "models:/fraud@production", "models:/fraud@production"),
        ("runs:/0123abcd/model", "runs:/0123abcd/model", "runs:/0123abcd/model"),
        ("http://[::1]:5000", "http://[::1]:5000", "http://[::1]:5000"),
        ("databricks", "databricks", "databricks"),
    ],
)
def test_redact_shows_and_public_uri_records(uri: str, shown: str, recorded: str) -> None:
    assert redact(uri) == shown
    assert public_uri(uri) == recorded


@pytest.mark.parametrize(
    ("uri", "secret", "shown"),
    [
        ("http://alice:p@ss@127.0.0.1:9", "p@ss", "http://***@127.0.0.1:9"),
        ("http://127.0.0.1:9/?token=s3cr3tvalue", "s3cr3tvalue", "token=***"),
        (
            "http://token:dapi0123456789abcdef0123456789abcdef@127.0.0.1:9",
            "dapi0123",
            "http://***@127.0.0.1:9",
        ),
    ],
)
def test_unreachable_server_message_hides_credentials(uri: str, secret: str, shown: str) -> None:
    result = run_cli("inspect", "-m", "models:/x/1", "--tracking-uri", uri, timeout=60)
    assert_user_error(result, "Cannot reach the tracking server at", shown)
    assert secret not in result.output
    assert "alice" not in result.output


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server over the session registry; yields its address (host:port)."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("server")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "mlflow", "server", "--backend-store-uri", registry.tracking_uri),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, "mlflow server exited"
            assert time.monotonic() < deadline, "mlflow server did not answer /health"
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def test_inspect_never_prints_the_password(server: str) -> None:
    uri = f"http://alice:p@ss@{server}"
    as_json = run_cli("inspect", "-m", "models:/house_price/1", "--tracking-uri", uri, "--json")
    assert as_json.code == 0, as_json.output
    assert json.loads(as_json.stdout)["tracking_uri"] == f"http://***@{server}"
    human = run_cli("inspect", "-m", "models:/house_price/1", "--tracking-uri", uri)
    assert human.code == 0, human.output
    assert f"http://***@{server}" in human.stdout
    for result in (as_json, human):
        assert "p@ss" not in result.output and "ss@" not in result.output and "alice" not in result.output

    unknown = run_cli("inspect", "-m", "models:/no_such_model/1", "--tracking-uri", uri)
    assert_user_error(unknown, f"Registered models at http://***@{server}:", "house_price")
    assert "p@ss" not in unknown.output and "alice" not in unknown.output


def test_the_artifact_records_the_server_without_credentials(server: str, tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    uri = f"http://alice:p@ss@{server}"
    result = run_cli(
        "generate", "-m", "models:/house_price/1", "-t", "k8s", "-o", str(out), "--tracking-uri", uri
    )
    assert result.code == 0, result.output
    manifest = json.loads((out / "deployctl.json").read_text())
    assert manifest["model"]["tracking_uri"] == f"http://{server}"
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"p@ss" not in data and b"alice" not in data, path


# ---------------------------------------------------------------------------------------------
# host paths


def assert_no_host_path(out: Path, *paths: Path) -> None:
    needles = {str(p).encode() for p in paths} | {str(p.resolve()).encode() for p in paths}
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for needle in needles:
                assert needle not in data, f"{needle.decode()} in {path}"


def test_a_local_model_leaves_no_host_path_in_the_artifact(
    cli: Cli, registry: Registry, model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "k8s"
    result = cli("generate", "-m", str(model_dir), "-t", "k8s", "-o", str(out))
    assert result.code == 0, result.output
    model = json.loads((out / "deployctl.json").read_text())["model"]
    assert model["uri"] == model["source"] == "house model"
    assert_no_host_path(out, model_dir, model_dir.parent, tmp_path, registry.root)


@pytest.mark.parametrize("target", ["lambda", "docker"])
def test_a_registry_model_leaves_no_host_path_in_the_artifact(
    cli: Cli, registry: Registry, tmp_path: Path, target: str
) -> None:
    out = tmp_path / target
    result = cli("generate", "-m", "models:/house_price/1", "-t", target, "-o", str(out))
    assert result.code == 0, result.output
    model = json.loads((out / "deployctl.json").read_text())["model"]
    assert model["tracking_uri"] == "sqlite:///mlflow.db"
    assert_no_host_path(out, registry.root, tmp_path)


# ---------------------------------------------------------------------------------------------
# odd --out


def test_odd_out_dirs_are_refused_cleanly(cli: Cli, tmp_path: Path) -> None:
    file = tmp_path / "a-file"
    file.write_text("x")
    home = tmp_path / "home"
    (home / ".bashrc").parent.mkdir()
    (home / ".bashrc").write_text("# mine")
    cases = [
        (file / "sub", ["is under", "which is a file"]),
        (file, ["is a file"]),
        (Path("/proc/deployctl-test"), ["inside /proc, a virtual filesystem"]),
        (Path("/proc/self/fd/out"), ["inside /proc"]),
        (Path("/sys/deployctl-test"), ["inside /sys"]),
        (Path("/"), ["the root of the filesystem"]),
        (tmp_path / ("x" * 300), ["Cannot use --out", "too long"]),
    ]
    for out, phrases in cases:
        result = cli("generate", "-m", "models:/house_price/1", "-t", "fastapi", "-o", str(out), "--force")
        assert_user_error(result, *phrases)
    assert file.read_text() == "x"

    env_home = {**os.environ, "HOME": str(home)}
    for args in ([], ["--force"]):
        result = run_cli(
            "generate", "-m", "models:/house_price/1", "-t", "fastapi", "-o", str(home), *args, env=env_home
        )
        assert_user_error(result, "is your home directory")
    assert sorted(p.name for p in home.iterdir()) == [".bashrc"]


def test_force_into_the_current_directory_that_is_no_artifact(registry: Registry, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("# my training code")
    env = {**registry.env(), "PYTHONPATH": str(ROOT)}  # cwd is no longer the checkout: import ours
    args = ("generate", "-m", "models:/house_price/1", "-t", "fastapi", "-o", ".", "--force")
    result = run_cli(*args, env=env, cwd=project)
    assert_user_error(result, "is the current directory", "not an artifact")
    assert sorted(p.name for p in project.iterdir()) == ["train.py"]


# ---------------------------------------------------------------------------------------------
# odd model URIs


@pytest.mark.parametrize(
    ("uri", "phrases"),
    [
        ("models:/fraud\ndetector/1", ["contains a newline"]),
        ("models:/fraud_detector\r/1", ["contains a carriage return"]),
        ("", ["The model URI is empty"]),
        ("   ", ["The model URI is empty"]),
        ("models:/", ["Cannot parse the model URI 'models:/'"]),
        ("models:/x@", ["Cannot parse the model URI 'models:/x@'"]),
        ("models:/fraud_detector/", ["Cannot parse the model URI"]),
        ("models:/" + "a" * 3000 + "/1", ["is 3010 characters long"]),
        ("/" + "a" * 300 + "/model", ["neither a model URI nor an MLflow model directory"]),
        ("models:/it's/latest", ["No registered model named 'it's'"]),
        ('models:/say "hi"/latest', ["No registered model named 'say \"hi\"'"]),
        ("models:/[b]x/1", ["No registered model named '[b]x'"]),
        ("runs:/not-a-run/model", ["Cannot parse the run URI"]),
    ],
)
def test_odd_model_uris_get_one_clear_error(cli: Cli, uri: str, phrases: list[str]) -> None:
    assert_user_error(cli("inspect", "-m", uri), *phrases)
