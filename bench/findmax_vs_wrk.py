"""`deployctl loadtest --find-max` beside wrk on one served artifact (issue 25's side-by-side figure).

    python bench/findmax_vs_wrk.py ARTIFACT [--rounds 2] [--slo 'p99<=100ms']

Serves the built ARTIFACT with `deployctl serve` (its default workers, HTTP only), then the two
tools take turns, `--rounds` times: wrk, a closed loop of 16 connections for 4 s posting /predict
with the artifact's first recorded row (bench/post.lua), and `deployctl loadtest --url ...
--find-max --slo SLO --duration 3`, open loop, latency from each request's due time. Prints a line
per run: wrk's req/s, p50 and p99; find-max's highest rate meeting the SLO, that step's achieved
rate, p50 and p99, and whether the generator lagged. The server and wrk are bench/run.py's (a
socket error or a non-2xx answer under wrk stops the run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import run as bench  # noqa: E402 - bench/run.py's server runner and wrk driver


def wrk(url: str, body: Path) -> dict[str, Any]:
    figures = bench.wrk(f"{url}/predict", body, connections=16, seconds=4, threads=1)
    milliseconds = {f"{p} ms": figures[f"{p}_us"] / 1000 for p in ("p50", "p99")}
    return {"req/s": round(figures["rps"]), **milliseconds}


def find_max(artifact: Path, url: str, slo: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "deployctl", "loadtest", str(artifact), "--url", url]
    command += ["--find-max", "--slo", slo, "--duration", "3", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=bench.REPO)
    report = json.loads(result.stdout)
    met = [s for s in report["steps"] if s["passed"]]
    best = max(met, key=lambda s: s["offered_rate"]) if met else {}
    return {
        "max rate": report.get("max_rate"),
        "achieved req/s": best.get("achieved_rate"),
        "p50 ms": best.get("latency_ms", {}).get("p50"),
        "p99 ms": best.get("latency_ms", {}).get("p99"),
        "steps": len(report["steps"]),
        "generator_limited": report["generator_limited"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--slo", default="p99<=100ms")
    args = parser.parse_args()
    artifact = args.artifact.resolve()
    manifest = json.loads((artifact / "deployctl.json").read_text())
    serve = [sys.executable, "-m", "deployctl", "serve", str(artifact), "--port", "{port}"]
    server = bench.Server("deployctl serve", serve, bench.REPO, {"GRPC": "0"})
    with tempfile.TemporaryDirectory() as scratch, server.running(Path(scratch)):
        body = Path(scratch) / "predict.json"
        body.write_text(json.dumps({"features": manifest["smoke_cases"][0]["row"]}))
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        for round_ in range(1, args.rounds + 1):
            print(f"round {round_} wrk -t1 -c16 -d4s: {wrk(server.url, body)}", flush=True)
            found = find_max(artifact, server.url, args.slo)
            print(f"round {round_} loadtest --find-max --slo {args.slo}: {found}", flush=True)


if __name__ == "__main__":
    main()
