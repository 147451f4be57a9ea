"""docker: the fastapi artifact as a small, hardened container image, built offline from a wheelhouse."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Console

from deployctl import docker_engine, wheelhouse
from deployctl.docker_engine import ContainerService, RunSpec
from deployctl.manifest import Artifact
from deployctl.process import run_until_signalled
from deployctl.targets.base import Option
from deployctl.targets.rest import FastAPITarget

UID = 10001  # the image's numeric user: Kubernetes' runAsNonRoot can only verify a numeric one
PORT = 8000
BUILD_FACTS = "build.json"

# Docker's reference grammar, simplified: [registry[:port]/]path[:tag][@digest], lowercase path.
IMAGE_REF = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+|__[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:[._-][a-z0-9]+|__[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
MEMORY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
MEMORY_UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
MEMORY_UNITS.update({"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40})
CPU = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m)?$")


# -- quantities, in Kubernetes' notation for every target so one value means the same everywhere --


def memory_bytes(quantity: str) -> int:
    """'512Mi' -> 536870912. Raises ValueError for anything else."""
    match = MEMORY.match(quantity)
    if not match:
        raise ValueError(quantity)
    return int(float(match[1]) * MEMORY_UNITS[match[2]])


def cpu_cores(quantity: str) -> float:
    """'500m' -> 0.5, '2' -> 2.0. Raises ValueError for anything else."""
    match = CPU.match(quantity)
    if not match:
        raise ValueError(quantity)
    return float(match[1]) / (1000 if match[2] else 1)


def check_memory(value: str) -> str | None:
    try:
        ok = memory_bytes(value) >= 32 * 2**20
    except ValueError:
        return f"'{value}' is not a memory quantity; use e.g. 512Mi or 1Gi (Ki/Mi/Gi) or 1G (k/M/G)"
    return None if ok else f"{value} is too little to load a model; give at least 32Mi"


def check_cpu(value: str) -> str | None:
    try:
        ok = cpu_cores(value) >= 0.01
    except ValueError:
        return f"'{value}' is not a CPU quantity; use cores (1, 0.5) or millicores (500m)"
    return None if ok else f"{value} is below the 10m minimum"


def check_image(value: str) -> str | None:
    if value == "" or IMAGE_REF.match(value):
        return None
    return f"'{value}' is not a valid image reference (e.g. registry.example.com/team/fraud-detector:1)"


def default_image(name: str, version: str) -> str:
    """`<name>:<model version>`, e.g. fraud-detector:1; the version made tag-safe."""
    tag = re.sub(r"[^\w.-]", "-", version).lstrip(".-")[:128] or "latest"
    return f"{name}:{tag}"


def image_ref(artifact: Artifact) -> str:
    return artifact.options.get("image") or default_image(artifact.name, artifact.model["version"])


class DockerTarget(FastAPITarget):
    name = "docker"
    summary = "Container image (FastAPI inside): multi-stage, non-root, read-only-root ready, built offline"
    produces = "the fastapi app + Dockerfile, .dockerignore, docker-compose.yml; an image after build"
    layers: ClassVar[tuple[str, ...]] = ("runtime", "fastapi", "docker")
    options: ClassVar[tuple[Option, ...]] = (
        Option("image", "", "Image reference to tag (default: <name>:<model version>).", check=check_image),
        Option("base_image", "python:3.11-slim", "Base image; needs python3 with venv.", check=check_image),
        Option(
            "workers",
            1,
            "uvicorn workers per container (0: one per core the container sees); scale out with replicas.",
            int,
            check=lambda v: None if v >= 0 else "must be 0 (one per core) or more",
        ),
        Option("cpu", "1", "CPU limit (cores or millicores: 1, 500m).", check=check_cpu),
        Option("memory", "1Gi", "Memory limit (512Mi, 1Gi).", check=check_memory),
    )

    # -- generate ---------------------------------------------------------------------------------

    def context(self, base: dict[str, Any]) -> dict[str, Any]:
        options, model = base["options"], base["model"]
        image = options["image"] or default_image(base["name"], model["version"])
        labels = {
            "org.opencontainers.image.title": base["name"],
            "org.opencontainers.image.description": f"Model {model['name']} version {model['version']}",
            "org.opencontainers.image.version": model["version"],
            "org.opencontainers.image.base.name": options["base_image"],
            "io.deployctl.model.name": model["name"],
            "io.deployctl.model.version": model["version"],
            "io.deployctl.model.run-id": model["run_id"] or "",
            "io.deployctl.model.uri": model["uri"],
            "io.deployctl.model.source": model["source"] or "",
            "io.deployctl.tool-version": base["tool_version"],
        }
        docker = {
            "uid": UID,
            "port": PORT,
            "labels": labels,  # data: the template escapes them (`docker` filter)
            "cpus": f"{cpu_cores(options['cpu']):g}",
            "memory_bytes": memory_bytes(options["memory"]),
        }
        return {**base, "image": image, "docker": docker}

    # -- build ------------------------------------------------------------------------------------

    def build(self, artifact: Artifact, console: Console) -> dict[str, Any]:
        started = time.monotonic()
        facts = self.build_image(artifact, console)
        facts["seconds"] = round(time.monotonic() - started, 1)
        (artifact.path / BUILD_FACTS).write_text(json.dumps(facts, indent=2) + "\n")
        return {k: facts[k] for k in ("image", "size", "seconds")}

    def build_image(self, artifact: Artifact, console: Console, nocache: bool = False) -> dict[str, Any]:
        """Wheels for the base image's Python and platform, then the image. Facts for build.json."""
        tag = image_ref(artifact)
        base = docker_engine.probe_base_image(artifact.options.get("base_image", "python:3.11-slim"))
        console.print(f"Base image {base.ref}: CPython {base.python} on {base.machine} ({base.platforms[0]})")
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

    # -- run --------------------------------------------------------------------------------------

    def run_spec(self, artifact: Artifact) -> RunSpec:
        """The container as `docker run` should start it: the image's own user and env, hardened."""
        options = artifact.options
        return RunSpec(
            image=image_ref(artifact),
            container_port=PORT,
            mem_limit=memory_bytes(options.get("memory", "1Gi")),
            nano_cpus=int(cpu_cores(options.get("cpu", "1")) * 1e9),
        )

    def start(self, artifact: Artifact, port: int) -> ContainerService:
        labels = {"io.deployctl.artifact": str(artifact.path.resolve())}
        return docker_engine.run(self.run_spec(artifact), port, labels)

    def serve(self, artifact: Artifact, port: int, console: Console) -> None:
        """Foreground: the container's logs stream here; Ctrl-C or SIGTERM stops and removes it."""
        echoes: list[threading.Thread] = []

        def start() -> ContainerService:
            service = self.start(artifact, port)
            echoes.append(threading.Thread(target=_echo, args=(service, console), daemon=True))
            echoes[0].start()
            return service

        run_until_signalled(start, console)
        for echo in echoes:  # the server's shutdown lines, printed before we return
            echo.join(timeout=5)

    def next_steps(self, artifact: Artifact) -> list[str]:
        return [*super().next_steps(artifact), f"deployctl serve {artifact.path} --port 8000"]


def _echo(service: ContainerService, console: Console) -> None:
    try:
        for line in service.follow():
            console.print(line.decode(errors="replace").rstrip(), highlight=False, markup=False)
    except Exception:  # the container went away: serve's loop reports that
        return


def build_facts(artifact: Artifact) -> dict[str, Any] | None:
    """What the last `build` recorded (image tag and id...), or None before the first build."""
    path: Path = artifact.path / BUILD_FACTS
    return json.loads(path.read_text()) if path.is_file() else None
