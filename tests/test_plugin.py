"""A third-party target, installed as a package, works end to end through the same registry.

The package is written here: its own pyproject.toml with an entry point in `deployctl.targets`, a
target module that reuses deployctl's venv builder and process runner by reference, and its own
template layer. It is installed into a venv made with --system-site-packages (deployctl itself is
importable from this checkout through PYTHONPATH), and the real CLI runs `targets`, `generate`,
`build` and `smoke-test` with it against the test registry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, Registry

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "deployctl-hello"
version = "0.1.0"

[project.entry-points."deployctl.targets"]
hello = "deployctl_hello.target:HelloTarget"

[tool.setuptools]
packages = ["deployctl_hello"]

[tool.setuptools.package-data]
deployctl_hello = ["templates/**/*"]
"""

TARGET = '''\
"""hello: the fastapi service plus a greeting page, from its own template layer."""

from pathlib import Path

from deployctl import requirements
from deployctl.checks.contract import Check
from deployctl.targets.base import Option, Target
from deployctl.targets.rest import APP, VENV


class HelloTarget(Target):
    name = "hello"
    summary = "FastAPI service with a greeting (a third-party target)"
    produces = "the fastapi artifact + HELLO.md"
    layers = ("runtime", "fastapi", "hello")
    templates = Path(__file__).parent / "templates"
    options = (Option("greeting", "Hello", "The greeting HELLO.md opens with."),)
    server_requirements = requirements.FASTAPI
    builder = VENV  # deployctl's builder and runner, by reference
    runner = APP

    def service_checks(self, artifact, base_url):
        text = (artifact.path / "HELLO.md").read_text()
        wanted = artifact.options["greeting"]
        return [Check("HELLO.md greets", text.startswith(wanted), text.splitlines()[0])]
'''

LAYER = "{{ options.greeting | md }}, this is {{ name | md }} serving {{ model.name | md }}.\n"


@pytest.fixture(scope="module")
def plugin_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plugin")
    package = root / "src"
    (package / "deployctl_hello" / "templates" / "hello").mkdir(parents=True)
    (package / "pyproject.toml").write_text(PYPROJECT)
    (package / "deployctl_hello" / "__init__.py").write_text("")
    (package / "deployctl_hello" / "target.py").write_text(TARGET)
    (package / "deployctl_hello" / "templates" / "hello" / "HELLO.md.j2").write_text(LAYER)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    uv = shutil.which("uv")
    install = (
        [uv, "pip", "install", "--python", str(python)]
        if uv
        else [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    )
    done = subprocess.run([*install, str(package)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return python


def deployctl(python: Path, registry: Registry, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**registry.env(), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [str(python), "-m", "deployctl", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=900,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_a_third_party_target_generates_builds_and_passes_its_smoke_test(
    plugin_python: Path, registry: Registry, tmp_path: Path
) -> None:
    listed = deployctl(plugin_python, registry, "targets")
    assert listed.returncode == 0, listed.stderr
    assert "hello" in listed.stdout and "third-party target" in listed.stdout
    # the same name is unknown to the plain interpreter, where the package is not installed
    plain = subprocess.run(
        [sys.executable, "-m", "deployctl", "targets"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert "third-party target" not in plain.stdout

    out = tmp_path / "hello"
    generated = deployctl(
        plugin_python,
        registry,
        *("generate", "-m", "models:/fraud_detector@production", "-t", "hello", "-o", str(out)),
        *("--greeting", "Good morning"),
    )
    assert generated.returncode == 0, generated.stderr
    # its own layer, rendered with the same escaping rules (`md`), next to the built-in ones it names
    assert (
        out / "HELLO.md"
    ).read_text() == "Good morning, this is fraud-detector serving fraud\\_detector.\n"
    assert (out / "app" / "runtime.py").is_file() and (out / "app" / "server.py").is_file()
    assert json.loads((out / "deployctl.json").read_text())["target"] == "hello"

    built = deployctl(plugin_python, registry, "build", str(out))
    assert built.returncode == 0, built.stderr
    assert (out / ".venv" / "bin" / "python").exists()

    smoke = deployctl(plugin_python, registry, "smoke-test", str(out), "--json")
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    report = json.loads(smoke.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] and report["target"] == "hello"
    assert checks["HELLO.md greets"]["ok"]
    assert checks["POST /predict_batch 5 rows"]["ok"]


def test_a_users_templates_still_win_over_the_targets_own(
    plugin_python: Path, registry: Registry, tmp_path: Path
) -> None:
    override = tmp_path / "mine" / "hello"
    override.mkdir(parents=True)
    (override / "HELLO.md.j2").write_text("Mine: {{ name | md }}\n")
    out = tmp_path / "hello"
    generated = deployctl(
        plugin_python,
        registry,
        *("generate", "-m", "models:/fraud_detector@production", "-t", "hello", "-o", str(out)),
        *("--templates", str(tmp_path / "mine")),
    )
    assert generated.returncode == 0, generated.stderr
    assert (out / "HELLO.md").read_text() == "Mine: fraud-detector\n"
