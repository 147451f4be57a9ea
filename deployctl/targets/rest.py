"""flask and fastapi: the model as a REST service in a virtual environment inside the artifact."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Console

from deployctl import requirements
from deployctl.manifest import Artifact, sha256
from deployctl.process import ProcessService, run_or_fail
from deployctl.targets.base import Option, RunningService, Target, require_built


def _positive(value: int) -> str | None:
    return None if value > 0 else "must be at least 1"


class VenvServiceTarget(Target):
    """A REST server run from `.venv` inside the artifact dir."""

    produces = "app/ (runtime + server), requirements.txt, a .venv after build"
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "workers",
            0,
            "Worker processes for `serve` (0: one per core).",
            int,
            check=lambda v: None if v >= 0 else "must be 0 (one per core) or more",
        ),
    )

    def build(self, artifact: Artifact, console: Console) -> dict[str, Any]:
        started = time.monotonic()
        venv = artifact.path / ".venv"
        stamp = venv / "requirements.sha256"
        wanted = sha256(artifact.path / "requirements.txt")
        if stamp.is_file() and stamp.read_text() == wanted:
            console.print("[dim].venv is up to date with requirements.txt[/]")
        else:
            create_venv(venv, artifact.path / "requirements.txt", console)
            stamp.write_text(wanted)
        return {"venv": str(venv), "seconds": round(time.monotonic() - started, 1)}

    def start(self, artifact: Artifact, port: int) -> RunningService:
        python = artifact.path / ".venv" / "bin" / "python"
        require_built(artifact, python, ".venv")
        env = {"PORT": str(port), "HOST": "127.0.0.1", "WORKERS": "1"}
        return ProcessService([str(python), "-m", "app"], artifact.path, port, env)

    def serve(self, artifact: Artifact, port: int, console: Console) -> None:
        """exec the server: it then receives Ctrl-C and SIGTERM itself and shuts down gracefully."""
        python = artifact.path / ".venv" / "bin" / "python"
        require_built(artifact, python, ".venv")
        workers = artifact.options.get("workers") or ""
        os.environ.update(PORT=str(port), WORKERS=str(workers or os.environ.get("WORKERS", "")))
        console.print(f"[green]Serving {artifact.name} on http://0.0.0.0:{port}[/] (Ctrl-C to stop)")
        os.chdir(artifact.path)
        os.execv(str(python), [str(python), "-m", "app"])


def create_venv(venv: Path, requirements_txt: Path, console: Console) -> None:
    """A fresh venv with the pinned requirements; on failure show the installer's last lines.

    uv installs in seconds where pip takes half a minute, so it is used when present.
    """
    uv = shutil.which("uv")
    with console.status(f"Installing {requirements_txt.name} into {venv.name} ({'uv' if uv else 'pip'})"):
        python = str(venv / "bin" / "python")
        if uv:
            _run(
                [sys.executable, "-m", "venv", "--clear", "--without-pip", str(venv)],
                "create the venv",
            )
            install = [uv, "pip", "install", "--python", python]
            freeze = [uv, "pip", "freeze", "--python", python]
        else:
            _run([sys.executable, "-m", "venv", "--clear", str(venv)], "create the venv")
            install = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
            freeze = [python, "-m", "pip", "freeze"]
        _run([*install, "-r", str(requirements_txt)], f"install {requirements_txt.name}")
        frozen = subprocess.run(freeze, capture_output=True, text=True, check=True)
        (requirements_txt.parent / "requirements.lock").write_text(frozen.stdout)


def _run(cmd: list[str], what: str) -> None:
    run_or_fail(
        cmd,
        what,
        "Check that the pinned versions in requirements.txt exist for this Python "
        f"({sys.version.split()[0]}) and that the package index is reachable.",
    )


class FastAPITarget(VenvServiceTarget):
    name = "fastapi"
    summary = "REST API on FastAPI + uvicorn, typed OpenAPI docs from the signature"
    layers: ClassVar[tuple[str, ...]] = ("runtime", "fastapi")
    server_requirements = requirements.FASTAPI


class FlaskTarget(VenvServiceTarget):
    name = "flask"
    summary = "REST API on Flask + gunicorn"
    layers: ClassVar[tuple[str, ...]] = ("runtime", "flask")
    server_requirements = requirements.FLASK
