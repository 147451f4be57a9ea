"""Runners: how a built artifact is started, shared by reference between targets.

Each runner has `start` (in the background on loopback, for the smoke test) and `serve` (in the
foreground until Ctrl-C or SIGTERM).

- `ProcessRunner`: a command from the artifact (its `.venv`'s server, functions-framework...);
  `serve` execs it, so the server gets the signals itself and shuts down gracefully.
- `ContainerRunner`: a container from a `RunSpec` (the image's settings, or a pod spec's);
  `serve` streams its logs and stops and removes it on Ctrl-C or SIGTERM.

The Lambda emulator's runner lives with the Lambda target.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console

from deployctl import docker_engine
from deployctl.docker_engine import ContainerService, RunSpec
from deployctl.manifest import Artifact
from deployctl.process import ProcessService, check_port, free_port, run_until_signalled
from deployctl.targets.base import require_built
from deployctl.targets.builders import require_current_venv


@dataclass(frozen=True)
class ProcessRunner:
    """Runs `argv` (relative to the artifact; its first element must exist once built).

    `argv` may hold `{host}` and `{port}`; `env` is added for the background run, `serve_env`
    (given the artifact) for the foreground one.
    """

    argv: tuple[str, ...]
    built: str  # what is missing before `build`, as the error names it
    env: dict[str, str] = field(default_factory=dict)
    serve_env: Callable[[Artifact], dict[str, str]] | None = None
    # the server also answers the Open Inference Protocol over gRPC (on GRPC_PORT, unless GRPC=0)
    grpc: bool = False

    def command(self, artifact: Artifact, port: int, host: str) -> list[str]:
        program = artifact.path / self.argv[0]
        if Path(self.argv[0]).parts[0] == ".venv":  # the venv builder's: current, not just there
            require_current_venv(artifact)
        require_built(artifact, program, self.built)
        rest = [a.format(host=host, port=port) for a in self.argv[1:]]
        return [str(program), *rest]

    def start(self, artifact: Artifact, port: int) -> ProcessService:
        cmd = self.command(artifact, port, "127.0.0.1")
        env = {"PORT": str(port), "HOST": "127.0.0.1", **self.env}
        grpc_port = free_port() if self.grpc and os.environ.get("GRPC", "1") != "0" else None
        if grpc_port is not None:
            env["GRPC_PORT"] = str(grpc_port)
        service = ProcessService(cmd, artifact.path, port, env)
        service.grpc_address = None if grpc_port is None else f"127.0.0.1:{grpc_port}"
        return service

    def serve(self, artifact: Artifact, port: int, console: Console) -> None:
        """exec the server: it then receives Ctrl-C and SIGTERM itself and shuts down gracefully."""
        grpc_port = os.environ.get("GRPC_PORT", "8081")
        if self.grpc and os.environ.get("GRPC", "1") != "0" and grpc_port.isdigit():
            check_port(int(grpc_port), setting="GRPC_PORT")  # or GRPC=0: HTTP only
        cmd = self.command(artifact, port, "0.0.0.0")
        os.environ.update(PORT=str(port), **(self.serve_env(artifact) if self.serve_env else {}))
        console.print(f"[green]Serving {artifact.name} on http://0.0.0.0:{port}[/] (Ctrl-C to stop)")
        os.chdir(artifact.path)
        os.execv(cmd[0], cmd)


@dataclass(frozen=True)
class ContainerRunner:
    """Runs the container `spec(artifact)` describes, labelled with the artifact it came from."""

    spec: Callable[[Artifact], RunSpec]

    def start(self, artifact: Artifact, port: int) -> ContainerService:
        labels = {"io.deployctl.artifact": str(artifact.path.resolve())}
        return docker_engine.run(with_grpc_env(with_guard_env(self.spec(artifact))), port, labels)

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


# The runtime's settings set where deployctl runs reach a container as they reach a process: the
# guard's (app/guard.py: accepted token digests, never tokens; /metrics closed; the in-flight bound)
# and capture's (app/capture.py; a file: path is then one inside the container).
# AUTH_TOKENS_FILE names a host file, which a container cannot read: it is not passed.
GUARD_ENV = ("AUTH_TOKEN_SHA256", "METRICS_AUTH", "MAX_IN_FLIGHT")
CAPTURE_ENV = (
    "CAPTURE",
    "CAPTURE_SAMPLE",
    "CAPTURE_REDACT",
    "CAPTURE_ERRORS",
    "CAPTURE_QUEUE",
    "CAPTURE_FILE_BYTES",
    "CAPTURE_FILE_COUNT",
)


def with_grpc_env(spec: RunSpec) -> RunSpec:
    """GRPC=0 where deployctl runs turns the container's gRPC service off, as it does a process's."""
    if spec.grpc_port is None or os.environ.get("GRPC", "1") != "0":
        return spec
    return replace(spec, grpc_port=None, env={**(spec.env or {}), "GRPC": "0"})


def with_guard_env(spec: RunSpec) -> RunSpec:
    guard = {name: os.environ[name] for name in GUARD_ENV + CAPTURE_ENV if os.environ.get(name)}
    return replace(spec, env={**(spec.env or {}), **guard}) if guard else spec


def _echo(service: ContainerService, console: Console) -> None:
    try:
        for line in service.follow():
            console.print(line.decode(errors="replace").rstrip(), highlight=False, markup=False)
    except Exception:  # the container went away: serve's loop reports that
        return
