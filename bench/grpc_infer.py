"""Open Inference Protocol infer over gRPC against REST, on the same fastapi artifact and process.

    python bench/grpc_infer.py [--duration 4] [--rounds 3]

bench/run.py's logistic regression as a fastapi artifact, one worker, with its gRPC port on. Three
ways in, 1 row and 100 rows, 16 concurrent streams each, in alternating rounds:

- `grpc`: ModelInfer with typed contents (grpc.aio client, one channel, 16 calls in flight);
- `rest infer`: POST /v2/models/{name}/infer, the same tensors as JSON (httpx, 16 connections);
- `rest batch`: POST /predict_batch, the same rows (httpx, 16 connections).

The load clients are Python on the same cores as the server: throughput says as much about them as
about the server, so the server's CPU time per request (its process group's) is printed too, and
that is the figure to compare. Medians over the rounds; ratios against `rest infer`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO / "templates" / "runtime"))
import run as bench  # noqa: E402 - bench/run.py's registry, servers, rows
from app.oip_grpc import SERVICE, convert  # noqa: E402 - the runtime's messages, as the probe uses them
from app.oip_grpc import deployctl_oip_predict_v2_pb2 as pb  # noqa: E402

STREAMS = 16


async def drive(call: Callable[[], Awaitable[Any]], seconds: float) -> int:
    """STREAMS loops calling `call` until `seconds` have passed; the calls answered."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call()
            done += 1

    await asyncio.gather(*(loop() for _ in range(STREAMS)))
    return done


async def grpc_load(address: str, request: pb.ModelInferRequest, seconds: float) -> int:
    import grpc

    async with grpc.aio.insecure_channel(address) as channel:
        infer = channel.unary_unary(
            f"/{SERVICE}/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        await infer(request)  # connected and warm
        return await drive(lambda: infer(request), seconds)


async def http_load(url: str, body: bytes, seconds: float) -> int:
    import httpx

    limits = httpx.Limits(max_connections=STREAMS)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def post() -> None:
            response = await client.post(url, content=body, headers=headers)
            response.raise_for_status()

        await post()
        return await drive(post, seconds)


def measure(server: bench.Server, load: Callable[[], Awaitable[int]], seconds: float) -> dict[str, float]:
    cpu = bench.group_cpu_seconds(server.pid)
    started = time.perf_counter()
    answered = asyncio.run(load())
    elapsed = time.perf_counter() - started
    cpu = bench.group_cpu_seconds(server.pid) - cpu
    return {"rps": answered / elapsed, "cpu_us": cpu / answered * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=BENCH / ".work")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    tracking_uri, models = bench.ensure_registry(workdir, False)
    artifact = workdir / "grpc-fastapi"
    bench.make_artifact(models["logreg"], "fastapi", artifact, tracking_uri)
    name = bench.oip_name(artifact)
    grpc_port = bench.free_port()
    env = {"WORKERS": "1", "ACCESS_LOG": "0", "GRPC": "1", "GRPC_PORT": str(grpc_port)}
    server = bench.Server(
        "fastapi grpc", [str(artifact / ".venv" / "bin" / "python"), "-m", "app"], artifact, env
    )
    results: dict[tuple[int, str], list[dict[str, float]]] = {}
    with server.running(workdir):
        for rows in (1, 100):
            body = bench.oip_body(bench.bench_rows(rows))
            ways: dict[str, Callable[[], Awaitable[int]]] = {
                "grpc": lambda b=body: grpc_load(
                    f"127.0.0.1:{grpc_port}", convert.request_message(b, name), args.duration
                ),
                "rest infer": lambda b=body: http_load(
                    f"{server.url}/v2/models/{name}/infer", json.dumps(b).encode(), args.duration
                ),
                "rest batch": lambda r=rows: http_load(
                    f"{server.url}/predict_batch",
                    json.dumps({"instances": bench.bench_rows(r)}).encode(),
                    args.duration,
                ),
            }
            for _ in range(args.rounds):  # alternating: drift in the machine's load hits all alike
                for way, load in ways.items():
                    results.setdefault((rows, way), []).append(measure(server, load, args.duration))
    print(f"{'rows':>4} {'way':11} {'rps':>8} {'vs infer':>9} {'server CPU us/req':>18} {'vs infer':>9}")
    for (rows, way), runs in results.items():
        median, base = bench.median_of(runs), bench.median_of(results[(rows, "rest infer")])
        print(
            f"{rows:>4} {way:11} {median['rps']:8.0f} {median['rps'] / base['rps']:9.3f} "
            f"{median['cpu_us']:18.1f} {median['cpu_us'] / base['cpu_us']:9.3f}"
        )


if __name__ == "__main__":
    main()
