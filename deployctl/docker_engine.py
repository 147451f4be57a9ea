"""The Docker engine through the Docker SDK: one client, streamed image builds, hardened runs.

Every engine failure a user can cause (no engine, a missing base image, a failing build step,
a busy port) becomes a DeployctlError with a hint; SDK tracebacks never reach the terminal.
"""

from __future__ import annotations

import json
import os
import re
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from deployctl import wheelhouse
from deployctl.errors import BuildFailed, DeployctlError, EngineUnavailable, UsageError

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container
    from rich.status import Status

START_HINT = (
    "Start a Docker engine (Docker Desktop, `sudo systemctl start docker`, or `sudo dockerd &`) "
    "or point DOCKER_HOST at one, then check it with `docker info`."
)
MANAGED_LABEL = "io.deployctl.managed"
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the engine colours a step's stderr


@cache
def client() -> DockerClient:
    """A client for the engine DOCKER_HOST names (else the local socket), checked with a ping."""
    try:
        import docker

        engine = docker.from_env(timeout=120)
        engine.ping()
        return engine
    except ImportError as exc:
        raise EngineUnavailable(f"The Docker SDK is not installed ({exc}).", "pip install docker") from None
    except Exception as exc:  # the SDK raises DockerException, requests errors or OSError here
        where = os.environ.get("DOCKER_HOST") or "the default socket (unix:///var/run/docker.sock)"
        raise EngineUnavailable(
            f"No Docker engine answers at {where}: {_first_line(exc)}", START_HINT
        ) from None


@contextmanager
def engine_errors(what: str) -> Iterator[None]:
    """Engine errors in the middle of an operation, as one clear message instead of a traceback."""
    import docker.errors
    import requests.exceptions

    try:
        yield
    except docker.errors.APIError as exc:
        raise DeployctlError(f"Docker refused to {what}: {exc.explanation or exc}") from None
    except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
        message = f"Lost the Docker engine while trying to {what}: {_first_line(exc)}"
        raise EngineUnavailable(message, START_HINT) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


# -- base images ----------------------------------------------------------------------------------

PROBE = (
    "import glob, json, platform, sys; "
    "print(json.dumps({'python': '%d.%d' % sys.version_info[:2], 'machine': platform.machine(), "
    "'libc': platform.libc_ver(), 'musl': sorted(glob.glob('/lib/ld-musl-*'))}))"
)


@dataclass(frozen=True)
class BaseImage:
    """What a base image runs: needed to download wheels that install inside it."""

    ref: str
    python: str  # "3.11"
    machine: str  # "x86_64"
    platforms: tuple[str, ...]  # wheel platform tags, newest first


def ensure_image(ref: str) -> None:
    """Make sure `ref` exists locally: pull it once if it does not, with a clear error if that fails."""
    import docker.errors

    engine = client()
    try:
        engine.images.get(ref)
        return
    except docker.errors.ImageNotFound:
        pass
    try:
        engine.images.pull(ref)
    except docker.errors.APIError as exc:
        raise BuildFailed(
            f"Base image {ref} is not on this engine and could not be pulled: {exc.explanation or exc}",
            f"Pull or load it first (`docker pull {ref}` where a registry is reachable, or "
            "`docker load`), or choose another with --base-image when generating.",
        ) from None


def run_once(image: str, command: list[str]) -> tuple[int, str]:
    """Run `command` in a throwaway container without network: (exit code, output).

    Created, started and removed step by step, so a command that cannot even start (a missing
    executable) leaves no container behind either.
    """
    engine = client()
    with engine_errors(f"run {image}"):
        container = engine.containers.create(image, command, entrypoint=[], network_disabled=True)
        try:
            container.start()
            code = int(container.wait(timeout=120)["StatusCode"])
            return code, container.logs().decode(errors="replace")
        finally:
            container.remove(force=True)


def probe_base_image(ref: str) -> BaseImage:
    """Run the base image's python3 once to learn its version, CPU and C library."""
    ensure_image(ref)
    try:
        code, raw = run_once(ref, ["python3", "-c", PROBE])
    except EngineUnavailable:
        raise
    except DeployctlError as exc:  # the engine could not even start python3
        code, raw = -1, exc.message
    if code != 0:
        raise BuildFailed(
            f"Base image {ref} cannot run `python3`: {raw.strip()[-300:]}",
            "Use a base image with python3 and its venv module (such as python:3.11-slim); "
            "pass it with --base-image when generating.",
        )
    facts = json.loads(raw.strip().splitlines()[-1])
    machine = facts["machine"]
    libc, libc_version = facts["libc"]
    if libc == "glibc":
        platforms = wheelhouse.manylinux_platforms(machine, int(libc_version.split(".")[1]))
    elif facts["musl"]:
        platforms = wheelhouse.musllinux_platforms(machine)
    else:
        raise BuildFailed(f"Cannot tell which C library base image {ref} uses.", "Use a Debian-based image.")
    return BaseImage(ref, facts["python"], machine, platforms)


# -- builds ---------------------------------------------------------------------------------------


# A build's cached step whose image another build's tidy-up (or `docker rmi`) removed the moment
# before: the engine fails the step ("failed to get digest sha256:..."), though nothing is wrong
# with this build. Building again takes the layers that remain.
CACHE_VANISHED = re.compile(r"failed to get digest sha256:|No such image: sha256:")


class _CacheVanished(BuildFailed):
    """The build failed on CACHE_VANISHED: worth one more build; a second one is a plain failure."""


def build_image(
    context: Path,
    tag: str,
    console: Console,
    labels: dict[str, str] | None = None,
    nocache: bool = False,
) -> str:
    """Build `context`/Dockerfile as `tag`, printing each step; return the image id.

    The low-level API streams the engine's output, so a slow step shows progress and a failing
    step can be reported with its last log lines.
    """
    engine = client()
    previous = _image_id(tag)
    with engine_errors(f"build {tag}"), console.status(f"Building {tag}") as status:
        try:
            image_id = _stream_build(context, tag, console, status, labels, nocache)
        except _CacheVanished:
            console.print("[yellow]Note:[/] a cached step was removed during the build; building again")
            image_id = _stream_build(context, tag, console, status, labels, nocache)
    image_id = image_id or engine.images.get(tag).id
    _tidy_up(tag, previous, image_id, console)
    return image_id


def _stream_build(
    context: Path,
    tag: str,
    console: Console,
    status: Status,
    labels: dict[str, str] | None,
    nocache: bool,
) -> str:
    """One build, its steps printed; the image id ('' if the engine did not say)."""
    stream = client().api.build(
        path=str(context),
        tag=tag,
        rm=True,
        forcerm=True,
        pull=False,  # the base was checked (or pulled) before; pulling again needs a registry
        decode=True,
        labels=labels,
        nocache=nocache,
    )
    tail: deque[str] = deque(maxlen=25)
    step, image_id = "", ""
    for chunk in stream:
        if "error" in chunk:
            failure = _CacheVanished if CACHE_VANISHED.search(chunk["error"]) else BuildFailed
            raise failure(
                f"Building {tag} failed at {_shorten(step or 'the first step', 300)}\n"
                + "\n".join([*tail, chunk["error"].strip()]),
                "Fix the Dockerfile or requirements.txt, or check that the wheelhouse holds a "
                "wheel for every requirement, then run `deployctl build` again.",
            )
        image_id = chunk.get("aux", {}).get("ID", image_id)
        for line in chunk.get("stream", "").splitlines():
            if line.startswith("Step "):
                step = " ".join(line.split())
                tail.clear()  # on failure, show the failing step's own output
                console.print(f"[dim]{_shorten(step)}[/]", highlight=False, no_wrap=True, overflow="crop")
            elif line.strip() and not line.startswith((" ---> ", "Removing intermediate")):
                tail.append(ANSI.sub("", line).rstrip())
                status.update(f"Building {tag}: {_shorten(line.strip())}")
    return str(image_id)


BUILD_STAGE_LABEL = "io.deployctl.build-stage"  # the Dockerfile's build stage: LABEL <this>=<tag>


def build_stage_ref(tag: str) -> tuple[str, str]:
    """(repository, tag) under which the build stage of image `tag` is kept: `<tag>-build`."""
    from docker.utils import parse_repository_tag

    repository, version = parse_repository_tag(tag)
    return repository, f"{(version or 'latest')[:122]}-build"


def _tidy_up(tag: str, previous: str | None, image_id: str, console: Console) -> None:
    """Leave no dangling image behind a build.

    Docker's classic builder leaves the build stage's image untagged (about 800 MB a build), and a
    rebuild leaves untagged the image `tag` named before. The build stage is tagged `<tag>-build`
    instead, so it stays the next build's cache (its pip layer is shared by every model with the
    same pins); the stage it replaced and the replaced image are removed, with the layers only they
    used (Docker keeps layers that other images use).
    """
    engine = client()
    repository, stage_tag = build_stage_ref(tag)
    previous_stage = _image_id(f"{repository}:{stage_tag}")
    stages = engine.images.list(filters={"dangling": True, "label": f"{BUILD_STAGE_LABEL}={tag}"})
    leftovers = []
    if stages:  # else the stage came from the cache: it is the one already tagged
        newest = max(stages, key=lambda image: str(image.attrs["Created"]))
        with engine_errors(f"tag {repository}:{stage_tag}"):
            engine.api.tag(newest.id, repository, stage_tag)
        leftovers = [image.id for image in stages if image.id != newest.id]
        if previous_stage is not None and previous_stage != newest.id:
            leftovers.append(previous_stage)
    if previous is not None and previous != image_id and _image_tags(previous) == []:
        leftovers.append(previous)
    for leftover in leftovers:
        _remove_untagged(leftover, console)


def _image_id(ref: str) -> str | None:
    import docker.errors

    try:
        return str(client().images.get(ref).id)
    except docker.errors.ImageNotFound:
        return None


def _image_tags(ref: str) -> list[str] | None:
    """The image's tags; None if it is gone."""
    import docker.errors

    try:
        return list(client().images.get(ref).tags)
    except docker.errors.ImageNotFound:
        return None


def _remove_untagged(image_id: str, console: Console) -> None:
    """Remove an untagged image; one that a container or a concurrent build uses stays, with a note."""
    import docker.errors

    try:
        client().images.remove(image_id)
    except docker.errors.APIError as exc:
        console.print(f"[yellow]Note:[/] kept image {image_id[7:19]}: {exc.explanation}", highlight=False)


def _shorten(text: str, width: int = 96) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def image_size(ref: str) -> int:
    with engine_errors(f"inspect {ref}"):
        return int(client().images.get(ref).attrs["Size"])


def image_uid(ref: str) -> int | None:
    """The numeric user id the image runs as (USER 10001 or 10001:10001); None if it is a name."""
    with engine_errors(f"inspect {ref}"):
        user = client().images.get(ref).attrs["Config"].get("User") or "0"
    uid = user.split(":")[0]
    return int(uid) if uid.isdigit() else None


def human_size(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


# -- containers -----------------------------------------------------------------------------------


@dataclass
class RunSpec:
    """How to run one container: the hardening every deployctl container gets, plus the target's own."""

    image: str
    container_port: int = 8000
    grpc_port: int | None = None  # the container's gRPC port, published beside container_port
    env: dict[str, str] | None = None
    user: str | None = None  # None: the image's USER
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    read_only: bool = True
    tmpfs: dict[str, str] | None = None  # mount path -> options
    cap_drop: tuple[str, ...] = ("ALL",)
    cap_add: tuple[str, ...] = ()
    no_new_privileges: bool = True
    mem_limit: int | None = None  # bytes
    nano_cpus: int | None = None
    image_healthcheck: bool = True  # a kubelet ignores HEALTHCHECK: the k8s target turns it off


class ContainerService:
    """A container publishing its port (and its gRPC port, if it has one) on loopback; `stop()`
    stops it and removes it."""

    def __init__(self, container: Container, port: int, grpc_port: int | None = None) -> None:
        self.container = container
        self.base_url = f"http://127.0.0.1:{port}"
        self.grpc_address = None if grpc_port is None else f"127.0.0.1:{grpc_port}"

    def alive(self) -> bool:
        import docker.errors

        try:
            self.container.reload()
        except docker.errors.NotFound:
            return False
        return self.container.status in ("created", "running")

    def logs(self, lines: int = 30) -> str:
        import docker.errors

        try:
            return self.container.logs(tail=lines).decode(errors="replace").rstrip()
        except docker.errors.APIError as exc:
            return f"(logs unavailable: {_first_line(exc)})"

    def follow(self) -> Iterator[bytes]:
        """The container's output as it comes (for `serve`)."""
        return self.container.logs(stream=True, follow=True)

    def stop(self, timeout: int = 10) -> None:
        """SIGTERM (as an orchestrator would), SIGKILL after `timeout`, then remove the container."""
        import docker.errors

        with suppress(docker.errors.APIError):  # already stopped or gone: removing is what matters
            self.container.stop(timeout=timeout)
        with suppress(docker.errors.NotFound):
            self.container.remove(force=True)


def run(spec: RunSpec, port: int, labels: dict[str, str] | None = None) -> ContainerService:
    """Start `spec` detached, its port published on 127.0.0.1:`port` (its gRPC port on a free one)."""
    import docker.errors

    from deployctl.process import free_port

    engine = client()
    try:
        engine.images.get(spec.image)
    except docker.errors.ImageNotFound:
        raise UsageError(
            f"Image {spec.image} is not on this Docker engine.",
            "Run `deployctl build <artifact>` first (it builds and tags the image).",
        ) from None
    grpc_port = free_port() if spec.grpc_port is not None else None
    with engine_errors(f"start a container from {spec.image}"):
        kwargs = _run_kwargs(spec, port, labels, grpc_port)
        container = engine.containers.run(spec.image, detach=True, **kwargs)
    return ContainerService(container, port, grpc_port)


def _run_kwargs(
    spec: RunSpec, port: int, labels: dict[str, str] | None, grpc_port: int | None = None
) -> dict[str, Any]:
    ports = {f"{spec.container_port}/tcp": ("127.0.0.1", port)}
    if spec.grpc_port is not None and grpc_port is not None:
        ports[f"{spec.grpc_port}/tcp"] = ("127.0.0.1", grpc_port)
    kwargs: dict[str, Any] = {
        "ports": ports,
        "environment": spec.env or {},
        "read_only": spec.read_only,
        "tmpfs": spec.tmpfs if spec.tmpfs is not None else {"/tmp": "rw,nosuid,nodev,size=64m"},
        "cap_drop": list(spec.cap_drop),
        "cap_add": list(spec.cap_add),
        "security_opt": ["no-new-privileges:true"] if spec.no_new_privileges else [],
        "labels": {MANAGED_LABEL: "true", **(labels or {})},
    }
    optional = {
        "user": spec.user,
        "command": spec.command,
        "entrypoint": spec.entrypoint,
        "mem_limit": spec.mem_limit,
        "nano_cpus": spec.nano_cpus,
    }
    kwargs.update({k: v for k, v in optional.items() if v is not None})
    if not spec.image_healthcheck:
        kwargs["healthcheck"] = {"test": ["NONE"]}
    return kwargs
