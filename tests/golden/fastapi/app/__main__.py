"""Start the production server: uvicorn with $WORKERS worker processes (unset or 0: one per core)."""

import os
import shutil
import signal
import socket
import sys

import uvicorn

from app import metrics_dir as metrics_folder


def cores() -> int:
    """The cores this process may run on (a container's cpuset, taskset), not all the host's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def exit_on_sigterm(signum: int, frame: object) -> None:
    """Exit at once during the model's load; 0 when uvicorn re-raises the signal after its
    graceful shutdown (HTTP and gRPC drained, see app/server.py): a stop asked for and done."""
    server = sys.modules.get("app.server")
    sys.exit(0 if getattr(server, "drained", False) else 128 + signum)


def grpc_port_taken() -> str | None:
    """Several workers share the gRPC port (SO_REUSEPORT), which would also let them join a port
    another service already holds and take part of its calls: it must be free before they start."""
    port = os.environ.get("GRPC_PORT", "8081")
    if os.environ.get("GRPC", "1") == "0" or not port.isdigit():
        return None  # off, or a bad value the workers refuse with their own message
    host = os.environ.get("HOST", "0.0.0.0")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except OSError as exc:
            hint = "set GRPC_PORT to a free port, or GRPC=0 to serve HTTP only"
            return f"the gRPC port {port} cannot be bound ({exc.strerror}): {hint}"
    return None


def serve(workers: int) -> None:
    uvicorn.run(
        "app.server:app",
        host=os.environ.get("HOST", "0.0.0.0"),
        port=int(os.environ.get("PORT", "8000")),
        workers=workers,
        lifespan="on",  # app/server.py starts gRPC at start-up: a failure there stops the server
        access_log=False,  # app.runtime logs each request as one JSON line
        http="app.asgi:JsonErrorsProtocol",  # uvicorn's own 400s, and 431, as JSON like every other error
        timeout_graceful_shutdown=int(os.environ.get("GRACEFUL_TIMEOUT", "20")),
        log_level=os.environ.get("LOG_LEVEL", "info").lower(),
    )


if __name__ == "__main__":
    # As PID 1 in a container, a process ignores SIGTERM it has no handler for; uvicorn installs
    # its own only after the model has loaded, so a stop during a slow load would hang till SIGKILL.
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    workers = int(os.environ.get("WORKERS") or 0) or cores()
    os.environ["WORKERS"] = str(workers)  # the count, for the workers (the gRPC port is shared by several)
    taken = grpc_port_taken() if workers > 1 else None  # one process alone binds it exclusively
    if taken:
        sys.exit(f"error: {taken}")
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Prometheus metrics from every worker: each writes its values to files there, and
        # /metrics adds them up (a fresh directory: no stale values of an earlier run)
        metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_folder.make()
    try:
        serve(workers)
    finally:  # the directory made here goes with the server (one given in the environment stays)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
