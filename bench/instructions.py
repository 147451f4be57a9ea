"""What one request costs a server, in CPU instructions counted by callgrind.

    python bench/instructions.py [--revisions REV ...] [--requests 1000] [--targets fastapi flask]

Throughput on a shared machine cannot resolve a 3% difference (other processes take the cores in
turns); the instructions a server executes per request do not depend on them. bench/run.py's
logistic regression is generated and built as fastapi and flask artifacts (one worker each), then
served, one after the other, by:

- this checkout's runtime;
- this checkout's runtime with bearer auth on (AUTH_TOKEN_SHA256 set, every request carrying the token);
- each `--revisions` REV's runtime and adapter in a copy of the artifact (bench/guards.py's copy: the
  same venv, model and manifest, only the serving files differ).

Each runs under `valgrind --tool=callgrind --instr-atstart=no`. After a warm-up of the route,
instrumentation is switched on (`callgrind_control -i on`), N requests are sent one after another on
one keep-alive connection, it is switched off and the counts dumped: instructions per request =
total / N (the server's user-space instructions, every thread; the kernel's are not counted). Routes:
/predict and /invocations (dataframe_split), 1 row. Prints a markdown table with each configuration's
ratio to the first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from guards import with_revision
from run import BENCH, Server, bench_rows, ensure_registry, group_processes, make_artifact, requests_for

TOKEN = "bench-token-not-a-secret"
ROUTES = ("predict", "invocations")


def under_callgrind(server: Server, out: Path) -> Server:
    """The same server, started by callgrind with instrumentation off until asked."""
    valgrind = ["valgrind", "--tool=callgrind", "--trace-children=yes", "--instr-atstart=no",
                f"--callgrind-out-file={out}.%p"]  # fmt: skip
    return Server(server.name, [*valgrind, *server.command], server.cwd, server.env, ready_timeout=900)


def send(server: Server, path: str, body: dict[str, Any], headers: dict[str, str], n: int) -> None:
    """`n` POSTs one after another on one keep-alive connection, each request in one write (flask's
    worker before c914add waited for ever for a body sent in a later write than its head)."""
    payload = json.dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
            f"Content-Length: {len(payload)}", *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
    with socket.create_connection(("127.0.0.1", server.port), timeout=120) as sock:
        answers = sock.makefile("rb")
        for _ in range(n):
            sock.sendall(request)
            status, length = answers.readline(), 0
            while (line := answers.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                length = int(value) if name.strip().lower() == b"content-length" else length
            answers.read(length)
            if status.split()[1:2] != [b"200"]:
                sys.exit(f"{server.name} {path}: {status.decode(errors='replace').strip()}")


def callgrind_control(server: Server, action: str) -> None:
    """`action` in every process of the server (flask's gunicorn master and its forked worker)."""
    # vgdb finds a process by a file named after $HOST, which the server has as 127.0.0.1
    env = {**os.environ, "HOST": server.env.get("HOST", "127.0.0.1")}
    for pid, _ in group_processes(server.pid):
        subprocess.run(["callgrind_control", action, str(pid)], check=True, capture_output=True, env=env)


def counted_instructions(server: Server, out: Path, route: str, headers: dict[str, str], n: int) -> float:
    """Instructions per request the server executed for `n` requests of `route`, from callgrind's dump."""
    request = requests_for(bench_rows(1))[route]
    send(server, request.path, request.body, headers, 200)  # warm-up: code paths and caches
    for old in out.parent.glob(out.name + "*"):
        old.unlink()
    callgrind_control(server, "--instr=on")
    send(server, request.path, request.body, headers, n)
    callgrind_control(server, "--instr=off")
    callgrind_control(server, "--dump")
    return dumped_instructions(out) / n


def dumped_instructions(out: Path) -> int:
    """The instructions counted in callgrind's dumps `out`.* (one a process of the server)."""
    total = 0
    for dump in out.parent.glob(out.name + "*"):
        found = re.search(r"^totals: (\d+)", dump.read_text(errors="replace"), re.M)
        total += int(found.group(1)) if found else 0
    return total


def measure(server: Server, workdir: Path, headers: dict[str, str], n: int) -> dict[str, float]:
    out = workdir / f"callgrind-{server.name.replace(' ', '_')}.out"
    probe = under_callgrind(server, out)
    with probe.running(workdir):
        return {route: counted_instructions(probe, out, route, headers, n) for route in ROUTES}


def configurations(
    target: str, artifact: Path, revisions: list[str]
) -> list[tuple[str, Server, dict[str, str]]]:
    """(label, server, request headers) for this checkout, with auth on, capturing traffic, and
    each revision."""
    command = [str(artifact / ".venv" / "bin" / "python"), "-m", "app"]
    env = {"WORKERS": "1", "ACCESS_LOG": "0", "MICRO_BATCH": "0"}
    auth = {"AUTH_TOKEN_SHA256": hashlib.sha256(TOKEN.encode()).hexdigest()}
    capture = {"CAPTURE": f"file:{artifact.parent / f'capture-{target}.jsonl'}"}
    configs = [
        ("this checkout", Server(f"{target} this", command, artifact, env), {}),
        ("this checkout, auth on", Server(f"{target} auth", command, artifact, {**env, **auth}),
         {"authorization": f"Bearer {TOKEN}"}),
        ("this checkout, capture 0.1", Server(f"{target} capture-0.1", command, artifact,
         {**env, **capture, "CAPTURE_SAMPLE": "0.1"}), {}),
        ("this checkout, capture 1.0 to a file", Server(f"{target} capture-1", command, artifact,
         {**env, **capture}), {}),
    ]  # fmt: skip
    for revision in revisions:
        copy = with_revision(artifact, target, revision)
        configs.append((revision, Server(f"{target} {revision.replace('/', '_')}", command, copy, env), {}))
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--revisions", nargs="*", default=[], help="git revisions to compare with")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--targets", nargs="*", default=["fastapi", "flask"])
    parser.add_argument("--workdir", type=Path, default=BENCH / ".work")
    args = parser.parse_args()
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    tracking_uri, models = ensure_registry(workdir, fraud=False)
    print("| server | runtime | /predict, instr./request | ratio | /invocations, instr./request | ratio |")
    print("|---|---|--:|--:|--:|--:|")
    for target in args.targets:
        artifact = workdir / f"instructions-{target}"
        make_artifact(models["logreg"], target, artifact, tracking_uri)
        base: dict[str, float] = {}
        for label, server, headers in configurations(target, artifact, args.revisions):
            figures = measure(server, workdir, headers, args.requests)
            base = base or figures
            cells = [target, label]
            for route in ROUTES:
                cells += [f"{figures[route]:,.0f}", f"{figures[route] / base[route]:.3f}"]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
