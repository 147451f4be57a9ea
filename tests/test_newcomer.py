"""What a newcomer trips over (issue 22): the demo and its next steps pasted as printed, `serve`'s
port, stale or interrupted builds, commands printed for copying at a real terminal width."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ROOT, Registry, Result, run_cli
from rich.console import Console

from deployctl import docker_engine, wheelhouse
from deployctl.errors import Interrupted
from deployctl.manifest import BUILD_OUTPUTS, Artifact
from deployctl.process import free_port
from deployctl.targets import builders, embedded
from deployctl.targets import get as get_target
from deployctl.targets.aws_lambda import packaging
from deployctl.targets.base import Target
from deployctl.targets.builders import BUILD_FACTS

FRAUD = "models:/fraud_detector@production"
NARROW = {"COLUMNS": "80"}  # a common terminal width: Rich used to hard-wrap commands there


def narrow_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **NARROW, **extra}


def try_it_lines(stderr: str) -> list[str]:
    """The demo's "Try it:" commands, as a user copies them from the terminal."""
    lines = stderr.split("Try it:\n", 1)[1].splitlines()
    return [line.removeprefix("  ") for line in lines if line.startswith("  ")]


def deployctl_on_path(tmp: Path) -> dict[str, str]:
    """An environment where `deployctl` is this checkout's CLI, as after `pip install .`."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "deployctl"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m deployctl "$@"\n')
    shim.chmod(0o755)
    return {
        **os.environ,
        **NARROW,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
    }


def paste(lines: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The lines run by a shell, one after the other, as pasted into a terminal.

    What they leave running (a step failed before their `kill %1`, or it did not stop the service)
    is stopped after them: a failure is reported at once, not after the service's pipes time out."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            ["bash", "-e", "-c", "\n".join(lines)],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=err,
            text=True,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=600)
        finally:
            left_running = stop_session(proc.pid, grace=60 if proc.returncode == 0 else 0)
        out.seek(0)
        err.seek(0)
        pasted = subprocess.CompletedProcess(proc.args, code, out.read(), err.read())
    # after lines that succeeded nothing may run on: their `kill %1` must have stopped the service
    assert code != 0 or not left_running, f"still running 60 s after the pasted lines: {pasted.stderr}"
    return pasted


def session_alive(sid: int) -> bool:
    """Whether a process of session `sid` still runs (zombies aside), from /proc/*/stat."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # state ppid pgrp session ...
            if fields[0] != "Z" and int(fields[3]) == sid:
                return True
    return False


def stop_session(sid: int, grace: float) -> bool:
    """Give what the shell started `grace` seconds to end (a service stopping on `kill %1`), then
    SIGTERM, then SIGKILL; whether anything was still running after the grace."""
    deadline = time.monotonic() + grace
    while session_alive(sid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not session_alive(sid):
        return False
    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sid, signum)
        deadline = time.monotonic() + 30
        while session_alive(sid) and time.monotonic() < deadline:
            time.sleep(0.2)
    return True


# -- the demo -----------------------------------------------------------------------------------------


def test_demo_embedded_with_the_default_workdir_and_its_next_steps_pasted(tmp_path: Path) -> None:
    result = run_cli("demo", "--target", "embedded", cwd=tmp_path, env=narrow_env())
    assert result.code == 0, result.output
    assert not (tmp_path / "mlruns").exists(), "the demo wrote ./mlruns outside --workdir"
    assert (tmp_path / "deployctl-demo" / "mlruns").is_dir()
    steps = try_it_lines(result.stderr)
    assert "deployctl serve" not in "\n".join(steps), "an embedded package is not served"
    # a venv that sees the installed requirements (the model's pins are this machine's), no index
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(tmp_path / "venv")], check=True
    )
    env = deployctl_on_path(tmp_path)
    env["PATH"] = f"{tmp_path / 'venv' / 'bin'}{os.pathsep}{env['PATH']}"
    env["PIP_NO_INDEX"] = "1"
    pasted = paste(steps, tmp_path, env)
    assert pasted.returncode == 0, pasted.stdout + pasted.stderr
    assert "'prediction': 1" in pasted.stdout, pasted.stdout
    assert "models:/fraud_detector@production" in pasted.stdout  # inspect's table, last


def on_free_port(steps: list[str]) -> list[str]:
    """The steps with a free port for the printed 8000, which may be taken on a shared machine."""
    port = str(free_port())
    return [s.replace(" 8000", f" {port}").replace("localhost:8000", f"localhost:{port}") for s in steps]


def remove_demo_images(workdir: Path) -> None:
    """The images the demos in `workdir` tagged, `<name>:<version>` and their build stages (kept as
    the next build's cache): names a developer may use for their own, not to be left on their engine."""
    tags = [json.loads(facts.read_text())["image"] for facts in workdir.glob(f"*-artifact/{BUILD_FACTS}")]
    if not tags:
        return
    import docker
    from docker.errors import ImageNotFound

    images = docker.from_env().images
    for tag in tags:
        repository, stage = docker_engine.build_stage_ref(tag)
        for ref in (tag, f"{repository}:{stage}"):
            with contextlib.suppress(ImageNotFound):
                images.remove(ref, force=True)


def containers_of(artifact: Path) -> list[str]:
    """The containers deployctl started for `artifact`, running or not (it labels each)."""
    import docker

    label = f"io.deployctl.artifact={artifact.resolve()}"
    return [c.name for c in docker.from_env().containers.list(all=True, filters={"label": label})]


@pytest.fixture(scope="module")
def demo_workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One --workdir for the demos below, as a user has who tries one target after another: each
    demo registers its own model version in the one registry (whose database is made once) and
    writes its own <target>-artifact folder."""
    workdir = tmp_path_factory.mktemp("demos") / "deployctl-demo"
    yield workdir
    remove_demo_images(workdir)


SERVED_DEMOS = [
    "fastapi",
    "flask",
    "gcf",
    "lambda",  # the local API Gateway emulator
    pytest.param("docker", marks=pytest.mark.docker),
    pytest.param("k8s", marks=pytest.mark.docker),  # its smoke test and serve run the image as the pod would
]


@pytest.mark.parametrize("target", SERVED_DEMOS)
def test_demo_and_its_next_steps_pasted(target: str, demo_workdir: Path, tmp_path: Path) -> None:
    """`deployctl demo --target T`, then its "Try it" pasted into a shell as printed (`serve` in the
    background, the curl against it, `kill %1`, inspect), on a free port for the printed 8000."""
    result = run_cli(
        "demo", "--target", target, "--workdir", str(demo_workdir), cwd=tmp_path, env=narrow_env()
    )
    assert result.code == 0, result.output
    steps = try_it_lines(result.stderr)
    assert steps[0].startswith("deployctl serve ") and steps[0].endswith(" &"), steps
    assert any(s.startswith("curl ") and "-d '{" in s for s in steps), steps  # not broken after -d
    pasted = paste(on_free_port(steps), tmp_path, deployctl_on_path(tmp_path))
    assert pasted.returncode == 0, pasted.stdout + pasted.stderr
    assert '"prediction":1' in pasted.stdout.replace(" ", ""), pasted.stdout
    assert "models:/fraud_detector@production" in pasted.stdout  # inspect's table
    if target in ("docker", "k8s"):
        assert containers_of(demo_workdir / f"{target}-artifact") == [], "kill %1 left its container"


def test_demo_refuses_an_unknown_target_before_training(tmp_path: Path) -> None:
    result = run_cli("demo", "--target", "fastpai", cwd=tmp_path, timeout=60)
    assert result.code == 2, result.output
    assert "Unknown target 'fastpai'" in result.stderr
    assert list(tmp_path.iterdir()) == [], "nothing is written for a mistyped target"


# -- serve's port --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Generated (not built) artifacts: serve must refuse a bad port before it looks further."""
    paths = {}
    for target in ("fastapi", "lambda"):
        out = tmp_path_factory.mktemp(target) / "artifact"
        result = run_cli("generate", "-m", FRAUD, "-t", target, "-o", str(out), env=registry.env())
        assert result.code == 0, result.output
        paths[target] = out
    return paths


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def assert_one_paragraph_error(result: Result, *phrases: str) -> None:
    assert result.code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.startswith("Error: "), result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


@pytest.mark.parametrize("target", ["fastapi", "lambda"])
def test_serve_refuses_a_busy_port_before_loading_anything(
    target: str, generated: dict[str, Path], busy_port: int
) -> None:
    result = run_cli("serve", str(generated[target]), "--port", str(busy_port), timeout=60)
    assert_one_paragraph_error(result, f"Cannot listen on port {busy_port}", "Hint:", "--port")


def test_serve_refuses_a_busy_grpc_port_before_loading_anything(
    generated: dict[str, Path], busy_port: int
) -> None:
    """fastapi also serves gRPC (GRPC_PORT, 8081): with several workers sharing that port, a second
    service started on a busy one would have joined it and answered half the first one's calls."""
    env = {**os.environ, "GRPC": "1", "GRPC_PORT": str(busy_port)}
    result = run_cli("serve", str(generated["fastapi"]), "--port", str(free_port()), env=env, timeout=60)
    assert_one_paragraph_error(result, f"Cannot listen on port {busy_port} (GRPC_PORT)", "GRPC_PORT=")


@pytest.mark.parametrize("port", ["70000", "-5", "0"])
def test_serve_refuses_a_port_out_of_range(port: str, generated: dict[str, Path]) -> None:
    result = run_cli("serve", str(generated["fastapi"]), "--port", port, timeout=60)
    assert_one_paragraph_error(result, f"--port {port} is not a TCP port")


# -- interrupted and stale builds ---------------------------------------------------------------------


def interrupt_build(artifact: Path) -> tuple[int, str]:
    """`deployctl build`, Ctrl-C'd (SIGINT to its process group, as a terminal sends it) as soon
    as the .venv exists: the venv is then being made or filled."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployctl", "build", str(artifact)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not (artifact / ".venv").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    return proc.returncode, stderr


def test_interrupted_then_stale_build_is_not_taken_for_built(registry: Registry, tmp_path: Path) -> None:
    out = tmp_path / "api"
    assert run_cli("generate", "-m", FRAUD, "-t", "fastapi", "-o", str(out), env=registry.env()).code == 0
    for _ in range(5):  # from a warm cache a build can finish before the Ctrl-C lands: start again
        code, stderr = interrupt_build(out)
        if code != 0:
            break
        for name in BUILD_OUTPUTS:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    assert code == 130, stderr
    assert "interrupted: the half-filled .venv was removed." in " ".join(stderr.split()), stderr
    assert "Traceback" not in stderr, stderr
    assert not (out / ".venv").exists(), "the half-filled .venv was left behind"
    for command in (("smoke-test", str(out)), ("serve", str(out), "--port", str(free_port()))):
        result = run_cli(*command, timeout=120)
        assert_one_paragraph_error(result, "is not built", f"deployctl build {out}")

    assert run_cli("build", str(out)).code == 0
    again = run_cli("generate", "-m", FRAUD, "-t", "flask", "-o", str(out), "--force", env=registry.env())
    assert again.code == 0, again.output
    for command in (("smoke-test", str(out)), ("serve", str(out), "--port", str(free_port()))):
        result = run_cli(*command, timeout=120)
        assert_one_paragraph_error(result, "another requirements.txt", f"deployctl build {out}")


def stub_artifact(path: Path, target: str, **options: object) -> Artifact:
    """Enough of an artifact for a builder to start on: what it reads before the step stubbed out."""
    (path / "requirements.txt").write_text("scikit-learn==1.5.2\n")
    manifest = {"target": target, "name": "fraud-detector", "model": {"name": "m", "version": "1"}}
    return Artifact(path, {**manifest, "options": options})


def ctrl_c_after(make: Callable[[], object]) -> Callable[..., None]:
    """A stand-in for a build step: it makes part of its output, then the user presses Ctrl-C."""

    def step(*_: object, **__: object) -> None:
        make()
        raise KeyboardInterrupt

    return step


def interrupted_message(target: str, artifact: Artifact) -> str:
    with pytest.raises(Interrupted) as stopped:
        get_target(target).build(artifact, Console(file=io.StringIO()))
    assert stopped.value.exit_code == 130
    return stopped.value.message


def test_ctrl_c_in_a_venv_build_says_the_venv_was_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv_python = tmp_path / ".venv" / "bin" / "python"
    half = ctrl_c_after(lambda: venv_python.parent.mkdir(parents=True) or venv_python.touch())
    monkeypatch.setattr(builders, "create_venv", half)
    for target in ("flask", "gcf"):  # gcf's builder wraps the venv builder
        message = interrupted_message(target, stub_artifact(tmp_path, target, runtime="python311"))
        assert message.endswith("interrupted: the half-filled .venv was removed."), message
        assert not (tmp_path / ".venv").exists()


def test_ctrl_c_in_a_wheel_download_removes_the_wheels_it_got(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = docker_engine.BaseImage("python:3.11-slim", "3.11", "x86_64", ("manylinux_2_28_x86_64",))
    monkeypatch.setattr(docker_engine, "probe_base_image", lambda ref: base)
    wheelhouse_dir = tmp_path / ".wheelhouse"
    wheelhouse_dir.mkdir()
    (wheelhouse_dir / wheelhouse.STAMP).write_text("what the last download was for")
    got_one = ctrl_c_after(lambda: (wheelhouse_dir / "numpy-2.0-cp311-manylinux_2_28_x86_64.whl").touch())
    monkeypatch.setattr(wheelhouse, "run_or_fail", got_one)
    message = interrupted_message("docker", stub_artifact(tmp_path, "docker", image="", base_image=base.ref))
    assert message.endswith("the wheels downloaded so far were removed from .wheelhouse/."), message
    assert list(wheelhouse_dir.iterdir()) == [], "a stamp or a wheel would pass for a complete download"


def test_ctrl_c_in_an_image_build_says_nothing_was_tagged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = docker_engine.BaseImage("python:3.11-slim", "3.11", "x86_64", ("manylinux_2_28_x86_64",))
    monkeypatch.setattr(docker_engine, "probe_base_image", lambda ref: base)
    monkeypatch.setattr(wheelhouse, "download", lambda *args, **kwargs: [])
    monkeypatch.setattr(docker_engine, "build_image", ctrl_c_after(lambda: None))
    artifact = stub_artifact(tmp_path, "k8s", image="team/fraud:7", base_image=base.ref)
    message = interrupted_message("k8s", artifact)
    assert "the image build was stopped (the engine tags team/fraud:7 only when a build completes" in message
    assert not (tmp_path / "build.json").exists() and not (tmp_path / "dist").exists()


def test_ctrl_c_in_a_lambda_zip_build_leaves_no_half_zip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packaging, "download_wheels", lambda *args: [])
    monkeypatch.setattr(packaging, "find_python", lambda version: None)
    monkeypatch.setattr(packaging, "copy_app", ctrl_c_after(lambda: None))
    artifact = stub_artifact(tmp_path, "lambda", runtime="python3.12", model_source="package")
    message = interrupted_message("lambda", artifact)
    left = "dist/function.zip was not written; the package being assembled in a temporary folder was removed."
    assert message.endswith(left), message
    assert list((tmp_path / "dist").iterdir()) == []

    package = tmp_path / "package"  # the zip itself is written aside, then moved: none half made
    (package / "app").mkdir(parents=True)
    (package / "app" / "handler.py").write_text("def handler(event, context): ...\n")
    monkeypatch.setattr(packaging.shutil, "copyfileobj", ctrl_c_after(lambda: None))
    with pytest.raises(KeyboardInterrupt):
        packaging.write_zip(package, tmp_path / "dist" / "function.zip")
    assert list((tmp_path / "dist").iterdir()) == []


def test_ctrl_c_in_a_wheel_build_leaves_no_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "fraud_detector-1-py3-none-any.whl").write_text("the last build's")
    tmp_dirs: list[str] = []

    def half_copied(*args: object, env: dict[str, str], **kwargs: object) -> None:
        tmp_dirs.append(env["TMPDIR"])  # hatchling's own temporary file goes there
        (Path(env["TMPDIR"]) / "tmpabc.whl").touch()
        (dist / "fraud_detector-1-py3-none-any.whl").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setattr(embedded, "run_or_fail", half_copied)
    message = interrupted_message("embedded", stub_artifact(tmp_path, "embedded"))
    assert message.endswith("no wheel is left in dist/ (the last build's went when this one began)."), message
    assert list(dist.iterdir()) == [] and not Path(tmp_dirs[0]).exists()


def test_ctrl_c_in_another_builder_does_not_claim_a_cleanup(tmp_path: Path) -> None:
    class Plugin(Target):
        name = "plugin"
        builder = SimpleNamespace(build=ctrl_c_after(lambda: None))

    with pytest.raises(Interrupted) as stopped:
        Plugin().build(stub_artifact(tmp_path, "plugin"), Console(file=io.StringIO()))
    assert stopped.value.message.endswith("interrupted: what its builder was writing may be incomplete.")


# -- commands printed for copying ---------------------------------------------------------------------


def test_next_steps_are_printed_unwrapped_at_80_columns(
    generated: dict[str, Path], registry: Registry
) -> None:
    out = generated["lambda"].parent / "a-rather-long-directory-name-that-a-team-might-well-use" / "api"
    result = run_cli(
        "generate", "-m", FRAUD, "-t", "fastapi", "-o", str(out), env={**registry.env(), **NARROW}
    )
    assert result.code == 0, result.output
    next_line = next(line for line in result.stderr.splitlines() if line.startswith("Next: "))
    steps = re.split(r"  then  ", next_line.removeprefix("Next: "))
    assert steps[:2] == [f"deployctl build {out}", f"deployctl smoke-test {out}"], result.stderr


# -- read-only commands create nothing ----------------------------------------------------------------


@pytest.mark.parametrize(
    "tracking_uri", ["sqlite:///typo.db", "sqlite:///no/such/dir/x.db", None], ids=["typo", "dirs", "unset"]
)
def test_a_missing_sqlite_registry_is_reported_and_not_created(
    tmp_path: Path, tracking_uri: str | None
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    for command in (("inspect", "-m", FRAUD), ("generate", "-m", FRAUD, "-t", "fastapi", "-o", "api")):
        result = run_cli(*command, cwd=tmp_path, env=env, timeout=120)
        assert result.code == 1, result.output
        assert "No MLflow database at" in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert list(tmp_path.iterdir()) == [], f"{command[0]} wrote {list(tmp_path.iterdir())}"


# -- --templates ----------------------------------------------------------------------------------------

OVERRIDES = {
    "extends": '{% extends "fastapi/README.md.j2" %}\n{% block run %}\n## Run it our way\n{% endblock %}\n',
    "syntax": "# {{ name | md }}\n{% if %}\n",
    "undefined": "# {{ name | md }}\n\n{{ no_such_variable | md }}\n",
}


def generate_with(registry: Registry, tmp_path: Path, templates: str) -> Result:
    out = tmp_path / "api"
    return run_cli(
        "generate", "-m", FRAUD, "-t", "fastapi", "-o", str(out), "--templates", templates, env=registry.env()
    )


@pytest.mark.parametrize("kind", sorted(OVERRIDES))
def test_a_template_override(kind: str, registry: Registry, tmp_path: Path) -> None:
    readme = tmp_path / "mine" / "fastapi" / "README.md.j2"
    readme.parent.mkdir(parents=True)
    readme.write_text(OVERRIDES[kind])
    result = generate_with(registry, tmp_path, str(tmp_path / "mine"))
    if kind == "extends":  # the override extends the built-in file it replaces
        assert result.code == 0, result.output
        text = (tmp_path / "api" / "README.md").read_text()
        assert "## Run it our way\n" in text and "# fraud-detector" in text, text  # ours around it
        return
    line = {"syntax": 2, "undefined": 3}[kind]
    assert_one_paragraph_error(result, f"{readme}:{line}", "does not render")
    assert not (tmp_path / "api").exists()


def test_templates_that_is_not_a_folder_is_refused(registry: Registry, tmp_path: Path) -> None:
    result = generate_with(registry, tmp_path, "nosuchdir")
    assert_one_paragraph_error(result, "--templates nosuchdir: no such folder")


# -- image tags -------------------------------------------------------------------------------------


def test_the_kafka_consumer_image_has_its_own_default_tag(registry: Registry, tmp_path: Path) -> None:
    images = {}
    for target in ("kafka", "docker"):
        out = tmp_path / target
        result = run_cli("generate", "-m", FRAUD, "-t", target, "-o", str(out), env=registry.env())
        assert result.code == 0, result.output
        images[target] = re.findall(r"image: *\"?([^\"\s]+)", (out / "docker-compose.yml").read_text())
    assert images == {"kafka": ["fraud-detector-consumer:1"], "docker": ["fraud-detector:1"]}, images


# -- help text --------------------------------------------------------------------------------------------


def test_generate_help_names_every_target() -> None:
    from deployctl.targets import names

    result = run_cli("generate", "--help", env=narrow_env(COLUMNS="200"), timeout=60)
    assert result.code == 0, result.output
    flat = " ".join(result.stdout.split())
    assert all(name in flat for name in names()), flat


def command_names() -> list[str]:
    import typer

    from deployctl.cli import app

    group = typer.main.get_command(app)
    return ["", *sorted(group.commands)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", command_names())
def test_no_flag_shows_a_value_in_help(command: str) -> None:
    """`--json <bool>` reads as `--json true`, which is refused: a flag shows no value (--help too)."""
    result = run_cli(*command.split(), "--help", env=narrow_env(COLUMNS="200"), timeout=60)
    assert result.code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if re.search(r"│ +(\* +)?--", line)]
    assert any("--help" in row for row in rows), result.stdout
    assert not [row for row in rows if "<bool>" in row], rows


# -- install hints name what works from where deployctl came from ----------------------------------


def test_onnx_engine_without_the_converter_is_refused_before_the_model_is_resolved(
    registry: Registry, tmp_path: Path
) -> None:
    shadow = tmp_path / "shadow" / "skl2onnx"  # hides the installed converter from the CLI
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'skl2onnx'\")\n")
    env = {**registry.env(), "PYTHONPATH": str(shadow.parent)}
    args = ("-t", "fastapi", "-o", str(tmp_path / "api"), "--engine", "onnx")
    result = run_cli("generate", "-m", "models:/no_such_model/1", *args, env=env, timeout=120)
    assert_one_paragraph_error(result, "--engine onnx needs skl2onnx", "or use --engine native")
    assert "no_such_model" not in result.stderr, "the model was resolved before the converter was checked"
    hint = " ".join(result.stderr.split())
    assert f"pip install '{ROOT}[onnx]'" in hint and "pip install skl2onnx onnx onnxruntime" in hint, hint
    assert "'deployctl[onnx]'" not in hint, "the package index has no deployctl"


NEWER = {"schema_version": 99, "tool_version": "7.0.0", "target": "fastapi", "model": {"name": "m"}}


def test_the_upgrade_hint_from_a_checkout(tmp_path: Path) -> None:
    (tmp_path / "deployctl.json").write_text(json.dumps(NEWER))
    result = run_cli("build", str(tmp_path), timeout=60)
    hint = " ".join(result.stderr.split())
    assert f"Upgrade deployctl to >= 7.0.0 (update the checkout at {ROOT} (git pull))" in hint, hint


def test_hints_from_a_deployctl_installed_from_a_wheel(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(dist)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("deployctl-*.whl")
    venv = tmp_path / "venv"  # the dependencies from this interpreter, deployctl from the wheel
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = [
        python,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        "--ignore-installed",
        str(wheel),
    ]
    subprocess.run(install, check=True, capture_output=True)
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "deployctl.json").write_text(json.dumps(NEWER))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    newer = subprocess.run(
        [python, "-m", "deployctl", "build", str(artifact)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    hint = " ".join(newer.stderr.split())
    assert f"install a deployctl wheel of version 7.0.0 or later (this one came from {wheel})" in hint, hint
    check = "from deployctl.origin import install_extra; print(install_extra('onnx', ['onnx']))"
    extra = subprocess.run([python, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert extra.stdout.startswith(f"pip install '{wheel}[onnx]'"), extra.stdout + extra.stderr


# -- stale text -------------------------------------------------------------------------------------


def test_the_readme_gives_one_size_for_the_fraud_lambda_zip() -> None:
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| Lambda zip")]
    sizes = {tuple(re.findall(r"(\d+(?:\.\d+)?) MB", row)[:2]) for row in rows}
    assert len(rows) >= 2 and len(sizes) == 1, rows
