"""What the runtime's guards cost: this checkout's services side by side with another revision's.

    python bench/guards.py [--against main] [--duration 4] [--rounds 5] [--workers N]

Generates and builds the fastapi and flask artifacts of bench/run.py's logistic regression with this
checkout, copies each, and puts the serving files of `--against` (a git revision of this repository)
into the copy: the runtime (app/*.py) and the adapters (fastapi's asgi.py and server.py, flask's
server.py and worker.py). The
same venv, model and manifest: only the request path differs. Both copies run at once and take turns
under wrk at 16 connections on /predict (1 row) and /invocations (1 row, JSON), rounds interleaved;
each figure is the median of the rounds. Prints a markdown table (req/s, server CPU µs per request,
and the ratio of this checkout's to the other's).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

from run import (
    BATCH_ROWS,
    BENCH,
    REPO,
    Server,
    bench_rows,
    ensure_registry,
    group_cpu_seconds,
    make_artifact,
    requests_for,
    wrk,
)

# the files of a built artifact that serve a request, and where each comes from in the repository
SERVING = {
    "fastapi": {f"app/{name}": f"templates/fastapi/app/{name}" for name in ("asgi.py", "server.py")},
    "flask": {f"app/{name}": f"templates/flask/app/{name}" for name in ("server.py", "worker.py")},
}


def runtime_files(revision: str) -> dict[str, str]:
    listed = subprocess.run(
        ["git", "ls-tree", "--name-only", f"{revision}:templates/runtime/app"],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout.split()  # fmt: skip
    return {f"app/{name}": f"templates/runtime/app/{name}" for name in listed if name.endswith(".py")}


def with_revision(artifact: Path, target: str, revision: str) -> Path:
    """A copy of `artifact` serving with `revision`'s runtime and adapter."""
    copy = artifact.with_name(f"{artifact.name}-{revision.replace('/', '_')}")
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(artifact, copy, symlinks=True)
    # modules this checkout added stay: the old request path does not import them, this checkout's
    # start-up files (gunicorn.conf.py, __main__.py) may
    for target_path, source in {**runtime_files(revision), **SERVING[target]}.items():
        text = subprocess.run(
            ["git", "show", f"{revision}:{source}"], capture_output=True, check=True, cwd=REPO
        ).stdout
        (copy / target_path).write_bytes(text)
    return copy


def figures(server: Server, path: str, body_file: Path, seconds: int) -> dict[str, float]:
    before = group_cpu_seconds(server.pid)
    run = wrk(server.url + path, body_file, 16, seconds)
    cpu = group_cpu_seconds(server.pid) - before
    return {"rps": run["rps"], "cpu_us": cpu / run["requests"] * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--against", default="main", help="a git revision (default main)")
    parser.add_argument("--duration", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", type=Path, default=BENCH / ".work")
    args = parser.parse_args()
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    tracking_uri, models = ensure_registry(workdir, fraud=False)
    requests = requests_for(bench_rows(BATCH_ROWS))
    servers: list[tuple[str, str, Server]] = []
    for target in ("fastapi", "flask"):
        artifact = workdir / f"guards-{target}"
        make_artifact(models["logreg"], target, artifact, tracking_uri)
        other = with_revision(artifact, target, args.against)
        command = [str(artifact / ".venv" / "bin" / "python"), "-m", "app"]
        env = {"WORKERS": str(args.workers), "ACCESS_LOG": "0"}
        servers.append((target, "this checkout", Server(f"{target} this", command, artifact, env)))
        servers.append((target, args.against, Server(f"{target} {args.against}", command, other, env)))
    scenarios = [("/predict", requests["predict"]), ("/invocations", requests["invocations"])]
    bodies = {}
    for path, request in scenarios:
        bodies[path] = workdir / f"guards{path.replace('/', '_')}.json"
        bodies[path].write_text(__import__("json").dumps(request.body))
    runs: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    with ExitStack() as stack:
        for _, _, server in servers:
            stack.enter_context(server.running(workdir))
        for _, _, server in servers:  # warm up
            for path, _ in scenarios:
                wrk(server.url + path, bodies[path], 16, 2)
        for i in range(args.rounds):
            print(f"  round {i + 1}/{args.rounds}", file=sys.stderr)
            for path, _ in scenarios:
                for target, revision, server in servers:
                    runs.setdefault((target, path, revision), []).append(
                        figures(server, path, bodies[path], args.duration)
                    )
    print("| server | request | revision | req/s, 16 conns | server CPU µs/req | req/s ratio | CPU ratio |")
    print("|---|---|---|--:|--:|--:|--:|")
    for target in ("fastapi", "flask"):
        for path, _ in scenarios:
            base = runs[(target, path, args.against)]
            mine = runs[(target, path, "this checkout")]
            for revision, run in ((args.against, base), ("this checkout", mine)):
                rps = statistics.median(r["rps"] for r in run)
                cpu = statistics.median(r["cpu_us"] for r in run)
                ratio = rps / statistics.median(r["rps"] for r in base)
                cpu_ratio = cpu / statistics.median(r["cpu_us"] for r in base)
                cells = [target, f"{path}, 1 row", revision, f"{rps:,.0f}", f"{cpu:,.0f}"]
                print("| " + " | ".join([*cells, f"{ratio:.3f}", f"{cpu_ratio:.3f}"]) + " |")


if __name__ == "__main__":
    main()
