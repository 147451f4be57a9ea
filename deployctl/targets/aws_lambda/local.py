"""Running a Lambda package here: the runtime's interpreter, or a stand-in, and the function's settings.

smoke-test and serve run dist/function.zip on an interpreter of the runtime's Python version (this
one, `pythonX.Y` on PATH, or one uv knows). Where there is none, build made a stand-in zip with this
Python's wheels of the same pins, and the local run says it uses it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from deployctl.errors import SmokeTestFailed, UsageError
from deployctl.manifest import Artifact
from deployctl.targets.aws_lambda import emulator
from deployctl.targets.base import require_built

# Lambda runtime -> (Python version, glibc of the Amazon Linux it runs on)
RUNTIMES = {"python3.11": ("3.11", 26), "python3.12": ("3.12", 34), "python3.13": ("3.13", 34)}
LOCAL_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def stand_in_zip(artifact: Artifact) -> Path:
    return artifact.path / "dist" / f"local-python{LOCAL_PYTHON}.zip"


def find_python(version: str) -> str | None:
    """An interpreter of the runtime's Python version: this one, `pythonX.Y` on PATH, pyenv's
    (whose `pythonX.Y` shim on PATH fails unless that version is selected), or uv's."""
    if version == LOCAL_PYTHON:
        return sys.executable
    candidates = [shutil.which(f"python{version}")]
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    candidates += [str(p) for p in sorted(pyenv.glob(f"{version}.*/bin/python{version}"), reverse=True)]
    uv = shutil.which("uv")
    if uv:
        found = subprocess.run([uv, "python", "find", version], capture_output=True, text=True, check=False)
        candidates.append(found.stdout.strip() if found.returncode == 0 else None)
    probe = "import sys; print('%d.%d' % sys.version_info[:2])"
    for candidate in filter(None, candidates):
        result = subprocess.run([candidate, "-I", "-c", probe], capture_output=True, text=True, check=False)
        if result.returncode == 0 and result.stdout.strip() == version:
            return candidate
    return None


def local_run(artifact: Artifact) -> tuple[Path, str, str]:
    """(zip, interpreter, how) for smoke-test and serve: the real zip when its Python is here."""
    zip_path = artifact.path / "dist" / "function.zip"
    require_built(artifact, zip_path, "dist/function.zip")
    runtime = artifact.options["runtime"]
    version = RUNTIMES[runtime][0]
    python = find_python(version)
    if python:
        return zip_path, python, f"dist/function.zip on Python {version}, as Lambda {runtime}"
    stand_in = stand_in_zip(artifact)
    if not stand_in.is_file():
        raise UsageError(
            f"No Python {version} to run the {runtime} zip with, and no stand-in zip for "
            f"Python {LOCAL_PYTHON}.",
            f"Install Python {version} (as python{version} on PATH), or rebuild: "
            f"`deployctl build {artifact.path}`.",
        )
    return (
        stand_in,
        sys.executable,
        (
            f"STAND-IN: {stand_in.name}, the same package with Python {LOCAL_PYTHON} wheels of the same "
            f"pins, because no Python {version} was found for the {runtime} zip"
        ),
    )


def function_config(artifact: Artifact, runtime_paths: list[str]) -> emulator.Function:
    options = artifact.options
    return emulator.Function(
        name=artifact.name,
        runtime=options["runtime"],
        memory_mb=options["memory"],
        timeout_s=float(options["timeout"]),
        runtime_paths=runtime_paths,
    )


def require_sdk() -> None:
    """The S3 source uses the runtime's boto3; locally, deployctl lends its own."""
    try:
        import boto3  # noqa: F401
    except ImportError:
        raise SmokeTestFailed(
            "--model-source s3 loads the model with boto3, which Lambda's runtime provides; "
            "running it locally needs boto3 installed next to deployctl.",
            "pip install boto3",
        ) from None
