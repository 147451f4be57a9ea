"""`deployctl loadtest --find-max` beside wrk on one served artifact (issue 25's side-by-side figure).

    python bench/findmax_vs_wrk.py ARTIFACT [--rounds 2] [--slo 'p99<=100ms']

Serves the built ARTIFACT with `deployctl serve` (its default workers, HTTP only), then the two
tools take turns, `--rounds` times: wrk, a closed loop of 16 connections for 4 s posting /predict
with the artifact's first recorded row (bench/post.lua), and `deployctl loadtest --url ...
--find-max --slo SLO --duration 3`, open loop, latency from each request's due time. Prints a line
per run: wrk's req/s, p50 and p99; find-max's highest rate meeting the SLO, that step's achieved
rate, p50 and p99, and whether the generator lagged.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from deployctl.process import free_port  # noqa: E402


def wait_healthy(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"{url}/health did not answer within {seconds:.0f} s")


def wrk(url: str, body: Path) -> dict[str, Any]:
    command = ["wrk", "-t1", "-c16", "-d4s", "--latency", "-s", str(BENCH / "post.lua"), f"{url}/predict"]
    env = {**os.environ, "BODY_FILE": str(body)}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    figures: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])  # post.lua's line comes last
    return {
        "req/s": round(figures["requests"] / (figures["duration_us"] / 1e6)),
        "p50 ms": figures["p50_us"] / 1000,
        "p99 ms": figures["p99_us"] / 1000,
        "errors": {k: v for k, v in figures["errors"].items() if v},
    }


def find_max(artifact: Path, url: str, slo: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "deployctl", "loadtest", str(artifact), "--url", url]
    command += ["--find-max", "--slo", slo, "--duration", "3", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=BENCH.parent)
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
    manifest = json.loads((args.artifact / "deployctl.json").read_text())
    body = Path(tempfile.mkstemp(suffix=".json")[1])
    body.write_text(json.dumps({"features": manifest["smoke_cases"][0]["row"]}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "deployctl", "serve", str(args.artifact), "--port", str(port)],
        env={**os.environ, "GRPC": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_healthy(url)
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        for round_ in range(1, args.rounds + 1):
            print(f"round {round_} wrk -t1 -c16 -d4s: {wrk(url, body)}", flush=True)
            found = find_max(args.artifact, url, args.slo)
            print(f"round {round_} loadtest --find-max --slo {args.slo}: {found}", flush=True)
    finally:
        server.terminate()
        server.wait(30)
        body.unlink()


if __name__ == "__main__":
    main()
