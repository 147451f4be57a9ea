"""Starting, probing and stopping local server processes."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from rich.console import Console

from deployctl.errors import BuildFailed, DeployctlError, SmokeTestFailed, UsageError


class RunningService(Protocol):
    """A started artifact that answers HTTP on `base_url` until `stop()`."""

    base_url: str

    def alive(self) -> bool: ...
    def logs(self, lines: int = 30) -> str: ...
    def stop(self) -> None: ...


def run_or_fail(
    cmd: list[str],
    what: str,
    hint: str,
    lines: int = 15,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run a build step; on failure raise BuildFailed with the step's last output lines."""
    result = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=cwd, env=env)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-lines:])
        raise BuildFailed(f"Could not {what} (exit {result.returncode}). Last lines:\n{tail}", hint)
    return result.stdout


def check_port(port: int, host: str = "0.0.0.0", setting: str = "--port") -> None:
    """Refuse a port a server could not listen on (out of range, taken, privileged), before
    anything loads: the servers' own errors come late (after the model loaded) or not at all.
    `setting` is what the user changes to pick another (the option or the environment variable)."""
    if not 1 <= port <= 65535:
        raise UsageError(f"{setting} {port} is not a TCP port.", "Give one from 1 to 65535, e.g. 8000.")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            sock.bind((host, port))
        except OSError as exc:
            pick = f"--port {free_port()}" if setting == "--port" else f"{setting}={free_port()}"
            raise UsageError(
                f"Cannot listen on port {port} ({setting}): {exc.strerror or exc}.",
                f"Stop what listens there (`ss -ltnp` shows it) or pick another port, e.g. {pick}.",
            ) from None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ProcessService:
    """A server process on loopback; its output goes to a log file we can show on failure."""

    def __init__(self, cmd: list[str], cwd: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.base_url = f"http://127.0.0.1:{port}"
        self.grpc_address: str | None = None  # host:port of its gRPC service, if it has one
        self.log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix="deployctl-", suffix=".log", delete=False
        )
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our Ctrl-C must not hit it before we stop it cleanly
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def logs(self, lines: int = 30) -> str:
        text = Path(self.log_file.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, as an orchestrator would, then SIGKILL if it does not exit in time."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log_file.close()
        Path(self.log_file.name).unlink(missing_ok=True)


def request(
    base_url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    timeout: float = 2.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One HTTP request on a fresh connection (JSON content type when there is a body).

    `base_url` is `http[s]://host[:port][/base/path]`: the base path (an API Gateway stage, say)
    goes before `path`. `timeout` bounds connecting and every read.
    """
    url = urlsplit(base_url)
    connection = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    conn = connection(url.hostname or "", url.port, timeout=timeout)
    try:
        sent = {"content-type": "application/json"} if body is not None else {}
        sent.update(headers or {})
        conn.request(method, url.path.rstrip("/") + path, body=body, headers=sent)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def get(base_url: str, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    return request(base_url, "GET", path, timeout=timeout)


def wait_healthy(service: RunningService, timeout: float, path: str = "/health") -> float:
    """Poll `path` until it answers 200; return the seconds it took. Fail with the service's logs."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not service.alive():
            raise SmokeTestFailed(
                "The service exited before it became healthy. Its last log lines:\n" + service.logs(),
                "Fix the error above, rebuild, and run the smoke test again.",
            )
        try:
            status, _ = get(service.base_url, path)
            if status == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.1)
    raise SmokeTestFailed(
        f"{service.base_url}{path} did not answer 200 within {timeout:.0f} s. "
        f"The service's last log lines:\n{service.logs()}",
        "A slow model load needs a longer --timeout; otherwise fix the error above.",
    )


def run_until_signalled(start: Callable[[], RunningService], console: Console) -> None:
    """Start a service and keep it in the foreground until Ctrl-C or SIGTERM, then stop it.

    Both signals only raise a flag: a KeyboardInterrupt raised at any bytecode can land inside
    Popen.poll() between taking and releasing its waitpid lock, and the stop() after it then
    waits on that lock forever (serve once hung on a Ctrl-C that way)."""
    stop_requested = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    # SIGINT stays ignored where it was (`deployctl serve &` in a script: the shell's choice)
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    signums = [signal.SIGTERM] if ignored else [signal.SIGTERM, signal.SIGINT]
    previous = {signum: signal.signal(signum, request_stop) for signum in signums}
    try:
        service = start()
    except BaseException:
        _restore(previous)
        raise
    exited_alone = False
    try:
        console.print(f"[green]Serving on {service.base_url}[/] (Ctrl-C to stop)")
        grpc_address = getattr(service, "grpc_address", None)
        if grpc_address:  # a container's gRPC port, published on a free loopback port
            console.print(f"[green]gRPC (Open Inference Protocol) on {grpc_address}[/]")
        while not stop_requested and service.alive():
            time.sleep(0.2)
        exited_alone = not stop_requested
    finally:
        last_lines = service.logs() if exited_alone else ""  # before stop() removes them
        console.print("Stopping...")
        service.stop()
        _restore(previous)
    if exited_alone:  # nobody asked it to stop: not a success
        raise DeployctlError(
            f"The service exited on its own. Its last log lines:\n{last_lines}",
            "Fix the error above, rebuild if needed, and serve again.",
        )


def _restore(handlers: dict[signal.Signals, Any]) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
