"""Usage mistakes: the usage line and the error, exit 2, never a traceback, on every Typer we admit.

Typer 0.29 vendors its own Click, so a handler keyed to `click.ClickException` stops matching:
these run the real CLI with the Typer installed here (the newest a fresh install takes) and,
in a second environment, with the oldest release `pyproject.toml` admits.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

MISTAKES = [
    (["generate", "--target", "fastapi", "--out", "x"], "Missing option '--model'"),
    (["smoke-test", "some-dir", "--bogus", "1"], "No such option: --bogus"),
    (["deploy-everything"], "No such command 'deploy-everything'"),
    (["build"], "Missing argument 'ARTIFACT_DIR'"),
]


def typer_floor() -> str:
    match = re.search(r'"typer>=([\d.]+)(,<[\d.]+)?"', (ROOT / "pyproject.toml").read_text())
    assert match, "tests expect pyproject.toml to declare typer>=X[,<Y]"
    return match[1]


@pytest.fixture(scope="session")
def oldest_typer_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A venv over this one's packages, with the oldest Typer the dependency range admits."""
    venv = tmp_path_factory.mktemp("typer-floor") / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True
    )
    python = str(venv / "bin" / "python")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "uv",
            "pip",
            "install",
            "--quiet",
            "--python",
            python,
            f"typer=={typer_floor()}",
        ],
        check=True,
    )
    return python


def run(python: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "deployctl", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "TERM": "dumb"},
    )


def assert_usage_error(proc: subprocess.CompletedProcess[str], message: str) -> None:
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output, output
    assert "Usage:" in proc.stderr, output
    assert message in " ".join(proc.stderr.split()), output


@pytest.mark.parametrize(("args", "message"), MISTAKES, ids=[m[0][0] for m in MISTAKES])
def test_usage_mistakes_with_the_installed_typer(args: list[str], message: str) -> None:
    assert_usage_error(run(sys.executable, args), message)


@pytest.mark.parametrize(("args", "message"), MISTAKES, ids=[m[0][0] for m in MISTAKES])
def test_usage_mistakes_with_the_oldest_typer_admitted(
    oldest_typer_python: str, args: list[str], message: str
) -> None:
    version = run(oldest_typer_python, ["--version"])  # the floor really is what runs
    probe = subprocess.run(
        [oldest_typer_python, "-c", "import importlib.metadata as m; print(m.version('typer'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == typer_floor()
    assert version.returncode == 0, version.stderr
    assert_usage_error(run(oldest_typer_python, args), message)


def test_our_errors_stay_one_paragraph_with_their_exit_code(tmp_path: Path) -> None:
    proc = run(sys.executable, ["build", str(tmp_path / "nowhere")])
    assert proc.returncode == 2, proc.stderr  # not an artifact: a usage mistake (smoke-test --help)
    assert "Traceback" not in proc.stderr
    assert "Error:" in proc.stderr and "Hint:" in proc.stderr
