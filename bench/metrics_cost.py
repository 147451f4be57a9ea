"""What the Prometheus metrics cost fastapi's /predict under load, in instructions counted by callgrind.

    python bench/metrics_cost.py [--revisions REV ...] [--seconds 30]

bench/run.py's logistic regression as a fastapi artifact, one worker, started under callgrind
(bench/instructions.py's way); after a warm-up, instrumentation is on while wrk loads /predict at 16
connections for `--seconds` (so requests are micro-batched as in production), and the figure is the
server's instructions over the requests wrk counted. The configurations:

- METRICS=0: nothing counted, the floor;
- multiprocess: PROMETHEUS_MULTIPROC_DIR set, as every server with several workers runs (the
  default: a worker per core); for this checkout and for each `--revisions` REV (its runtime and
  adapter in a copy of the artifact, bench/guards.py's copy);
- one process: a single worker, its counts in process memory.

wrk's figures on a shared 2-core machine cannot resolve a few percent; these counts do not depend on
the other load. The number of requests per batch depends on how fast the server runs under
callgrind, so compare configurations of one run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from guards import with_revision
from instructions import callgrind_control, dumped_instructions, send, under_callgrind
from run import BENCH, Server, bench_rows, ensure_registry, make_artifact, requests_for, wrk


def instructions_under_load(server: Server, workdir: Path, seconds: int) -> tuple[int, float]:
    """(requests wrk sent at 16 connections, instructions per request) of `server` under callgrind."""
    out = workdir / f"callgrind-load-{server.name.replace(' ', '_').replace('=', '')}.out"
    probe = under_callgrind(server, out)
    request = requests_for(bench_rows(1))["predict"]
    body = workdir / "metrics_cost_predict.json"
    body.write_text(json.dumps(request.body))
    with probe.running(workdir):
        send(probe, request.path, request.body, {}, 200)  # warm-up: code paths and caches
        for old in out.parent.glob(out.name + "*"):
            old.unlink()
        callgrind_control(probe, "--instr=on")
        figures = wrk(probe.url + request.path, body, 16, seconds, threads=1)  # stops on any error
        callgrind_control(probe, "--instr=off")
        callgrind_control(probe, "--dump")
    return figures["requests"], dumped_instructions(out) / figures["requests"]


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--revisions", nargs="*", default=[], help="git revisions to compare with")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--workdir", type=Path, default=BENCH / ".work")
    args = parser.parse_args()
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    tracking_uri, models = ensure_registry(workdir, fraud=False)
    artifact = workdir / "metrics-cost-fastapi"
    make_artifact(models["logreg"], "fastapi", artifact, tracking_uri)
    env = {"WORKERS": "1", "ACCESS_LOG": "0", "GRPC": "0"}
    configs = [("METRICS=0", artifact, {"METRICS": "0"})]
    for revision in args.revisions:
        configs.append((f"multiprocess, {revision}", with_revision(artifact, "fastapi", revision), {}))
    configs += [("multiprocess, this checkout", artifact, {}), ("one process, this checkout", artifact, {})]
    print("| configuration | requests at 16 connections | instructions / request | vs METRICS=0 |")
    print("|---|--:|--:|--:|")
    floor = 0.0
    for label, served, extra in configs:
        with tempfile.TemporaryDirectory() as multiproc:
            if label.startswith("multiprocess"):
                extra = {**extra, "PROMETHEUS_MULTIPROC_DIR": multiproc}
            command = [str(served / ".venv" / "bin" / "python"), "-m", "app"]
            requests, per_request = instructions_under_load(
                Server(label, command, served, {**env, **extra}), workdir, args.seconds
            )
        floor = floor or per_request
        print(f"| {label} | {requests:,} | {per_request:,.0f} | {per_request / floor:.3f} |", flush=True)


if __name__ == "__main__":
    main()
