"""Builders: what `deployctl build` does for a target, shared by reference between targets.

- `VenvBuilder`: a `.venv` inside the artifact with its pinned requirements (flask, fastapi, gcf).
- `ImageBuilder`: a wheelhouse for the base image's platform, then the image (docker, k8s).

The Lambda zip builder lives with the Lambda target (`deployctl.targets.aws_lambda.packaging`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from deployctl import docker_engine, wheelhouse
from deployctl.errors import UsageError, interruptible
from deployctl.manifest import Artifact, sha256
from deployctl.process import run_or_fail

BUILD_FACTS = "build.json"  # what the image build recorded, next to the manifest
VENV_STAMP = "requirements.sha256"  # in .venv: the requirements.txt it was built from, written last


class VenvBuilder:
    """`.venv` with requirements.txt installed; rebuilt only when requirements.txt changed."""

    def build(self, artifact: Artifact, console: Console) -> dict[str, Any]:
        started = time.monotonic()
        venv = artifact.path / ".venv"
        if venv_problem(artifact) is None:
            console.print("[dim].venv is up to date with requirements.txt[/]")
        else:
            with interruptible(lambda: remove_half_made_venv(venv)):
                create_venv(venv, artifact.path / "requirements.txt", console)
                (venv / VENV_STAMP).write_text(sha256(artifact.path / "requirements.txt"))
        return {"venv": str(venv), "seconds": round(time.monotonic() - started, 1)}


def remove_half_made_venv(venv: Path) -> str:
    """A half-filled .venv looks built to whoever runs its python (`serve` checks its stamp, a
    user does not): it goes, whole."""
    shutil.rmtree(venv, ignore_errors=True)
    return "the half-filled .venv was removed"


def venv_problem(artifact: Artifact) -> str | None:
    """Why the artifact's .venv cannot run it (missing, unfinished, older than requirements.txt), or None."""
    stamp = artifact.path / ".venv" / VENV_STAMP
    if not stamp.is_file():
        return ".venv is missing or its build did not finish"
    if stamp.read_text() != sha256(artifact.path / "requirements.txt"):
        return ".venv was built for another requirements.txt (generated again since)"
    return None


def require_current_venv(artifact: Artifact) -> None:
    """What `build` would rebuild, `serve` and `smoke-test` refuse to run."""
    problem = venv_problem(artifact)
    if problem is not None:
        raise UsageError(
            f"{artifact.path} is not built: {problem}.", f"Run `deployctl build {artifact.path}` first."
        )


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
            install = [uv, "pip", "install", "--python", python, *_pip_find_links()]
            freeze = [uv, "pip", "freeze", "--python", python]
        else:
            _run([sys.executable, "-m", "venv", "--clear", str(venv)], "create the venv")
            install = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
            freeze = [python, "-m", "pip", "freeze"]
        _run([*install, "-r", str(requirements_txt)], f"install {requirements_txt.name}")
        frozen = subprocess.run(freeze, capture_output=True, text=True, check=True)
        (requirements_txt.parent / "requirements.lock").write_text(frozen.stdout)


def _pip_find_links() -> list[str]:
    """uv does not read pip's settings: give it the wheel directories PIP_FIND_LINKS names (where
    a CPU build of torch, `torch==X+cpu`, may come from), as pip would use them."""
    links = os.environ.get("PIP_FIND_LINKS", "").split()
    return [arg for link in links for arg in ("--find-links", link)]


def _run(cmd: list[str], what: str) -> None:
    run_or_fail(
        cmd,
        what,
        "Check that the pinned versions in requirements.txt exist for this Python "
        f"({sys.version.split()[0]}) and that the package index is reachable.",
    )


# -- images -----------------------------------------------------------------------------------------


# A target whose image is not the HTTP service's names it apart: with one default tag, building
# the kafka consumer retagged the docker/k8s image of the same model (and the other way round).
IMAGE_NAME_SUFFIX = {"kafka": "-consumer"}


def default_image(name: str, version: str, target: str = "docker") -> str:
    """`<name>:<model version>`, e.g. fraud-detector:1 (kafka: fraud-detector-consumer:1); the
    version made tag-safe."""
    tag = re.sub(r"[^\w.-]", "-", version).lstrip(".-")[:128] or "latest"
    return f"{name}{IMAGE_NAME_SUFFIX.get(target, '')}:{tag}"


def image_ref(artifact: Artifact) -> str:
    """The tag the build gives the image: the `image` option, else the target's default."""
    return artifact.options["image"] or default_image(
        artifact.name, artifact.model["version"], artifact.target
    )


def build_facts(artifact: Artifact) -> dict[str, Any] | None:
    """What the last image build recorded (image tag and id...), or None before the first build."""
    path: Path = artifact.path / BUILD_FACTS
    return json.loads(path.read_text()) if path.is_file() else None


def image_build_stopped(tag: str) -> str:
    """Nothing to remove: the client's Ctrl-C cancels the engine's build, whose tag is applied
    only to a finished image, and build.json is written after."""
    return (
        f"the image build was stopped (the engine tags {tag} only when a build completes; "
        f"{BUILD_FACTS} is as it was)"
    )


class ImageBuilder:
    """The artifact's Dockerfile built offline: wheels downloaded on the host, then the image.

    Reads the `image` and `base_image` options; writes build.json (tag, id, size, platform).
    """

    def build(self, artifact: Artifact, console: Console) -> dict[str, Any]:
        started = time.monotonic()
        facts = self.build_image(artifact, console)
        facts["seconds"] = round(time.monotonic() - started, 1)
        (artifact.path / BUILD_FACTS).write_text(json.dumps(facts, indent=2) + "\n")
        return {k: facts[k] for k in ("image", "size", "seconds")}

    def build_image(self, artifact: Artifact, console: Console, nocache: bool = False) -> dict[str, Any]:
        """Wheels for the base image's Python and platform, then the image. Facts for build.json."""
        tag = image_ref(artifact)
        with interruptible(lambda: image_build_stopped(tag)):  # the wheelhouse says what it left
            base = docker_engine.probe_base_image(artifact.options["base_image"])
            console.print(
                f"Base image {base.ref}: CPython {base.python} on {base.machine} ({base.platforms[0]})"
            )
            wheels = wheelhouse.download(
                artifact.path / "requirements.txt",
                artifact.path / ".wheelhouse",
                console,
                python_version=base.python,
                platforms=base.platforms,
            )
            image_id = docker_engine.build_image(artifact.path, tag, console, nocache=nocache)
        size = docker_engine.image_size(tag)
        console.print(f"Image [bold]{tag}[/] ({image_id[:19]}): {docker_engine.human_size(size)}")
        return {
            "image": tag,
            "image_id": image_id,
            "size": docker_engine.human_size(size),
            "size_bytes": size,
            "base_image": base.ref,
            "python": base.python,
            "platform": base.platforms[0],
            "wheels": len(wheels),
        }
