"""docker: the fastapi artifact as a small, hardened container image, built offline from a wheelhouse.

Composition: the runtime, fastapi and docker layers, the image builder, and a container runner
that starts the image with its own user and environment and the limits of --cpu and --memory.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from deployctl import requirements
from deployctl.docker_engine import RunSpec
from deployctl.manifest import Artifact
from deployctl.targets.base import Option, Target
from deployctl.targets.builders import ImageBuilder, default_image, image_ref
from deployctl.targets.runners import ContainerRunner
from deployctl.targets.shared import ENGINE, check_cpu, check_memory, check_workers, cpu_cores, memory_bytes

UID = 10001  # the image's numeric user: Kubernetes' runAsNonRoot can only verify a numeric one
PORT = 8000
GRPC_PORT = 8081  # the Open Inference Protocol over gRPC (app/oip_grpc/), in the same process

# Docker's reference grammar, simplified: [registry[:port]/]path[:tag][@digest], lowercase path.
IMAGE_REF = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+|__[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:[._-][a-z0-9]+|__[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)


def check_image(value: str) -> str | None:
    if value == "" or IMAGE_REF.match(value):
        return None
    return f"'{value}' is not a valid image reference (e.g. registry.example.com/team/fraud-detector:1)"


# The options of every image-based target (docker, and k8s on top of them).
OPTIONS: tuple[Option, ...] = (
    Option("image", "", "Image reference to tag (default: <name>:<model version>).", check=check_image),
    Option("base_image", "python:3.11-slim", "Base image; needs python3 with venv.", check=check_image),
    Option(
        "workers",
        1,
        "uvicorn workers per container (0: one per core the container sees); scale out with replicas.",
        int,
        check=check_workers,
    ),
    Option("cpu", "1", "CPU limit (cores or millicores: 1, 500m).", check=check_cpu),
    Option("memory", "1Gi", "Memory limit (512Mi, 1Gi).", check=check_memory),
    ENGINE,
)


def image_context(base: dict[str, Any]) -> dict[str, Any]:
    """The Dockerfile's and compose file's variables: image tag, labels (data), user, port, limits."""
    options, model = base["options"], base["model"]
    image = options["image"] or default_image(base["name"], model["version"], base["target"])
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
        "grpc_port": GRPC_PORT,
        "labels": labels,  # data: the template escapes them (`docker` filter)
        "cpus": f"{cpu_cores(options['cpu']):g}",
        "memory_bytes": memory_bytes(options["memory"]),
        "openmp": requirements.needs_system_openmp(base["requirements"]),  # libgomp1 (Dockerfile)
    }
    return {**base, "image": image, "docker": docker}


def run_spec(artifact: Artifact) -> RunSpec:
    """The container as `docker run` should start it: the image's own user and env, hardened."""
    options = artifact.options
    return RunSpec(
        image=image_ref(artifact),
        container_port=PORT,
        grpc_port=GRPC_PORT,
        mem_limit=memory_bytes(options["memory"]),
        nano_cpus=int(cpu_cores(options["cpu"]) * 1e9),
    )


IMAGE = ImageBuilder()
CONTAINER = ContainerRunner(run_spec)


class DockerTarget(Target):
    name = "docker"
    summary = "Container image (FastAPI inside): multi-stage, non-root, read-only-root ready, built offline"
    produces = "the fastapi app + Dockerfile, .dockerignore, docker-compose.yml; an image after build"
    serves_grpc = True
    layers: ClassVar[tuple[str, ...]] = ("runtime", "fastapi", "docker")
    options: ClassVar[tuple[Option, ...]] = OPTIONS
    server_requirements = requirements.FASTAPI
    builder = IMAGE
    runner = CONTAINER

    def context(self, base: dict[str, Any]) -> dict[str, Any]:
        return image_context(base)

    def next_steps(self, artifact: Artifact) -> list[str]:
        return [*super().next_steps(artifact), f"deployctl serve {artifact.path} --port 8000"]
