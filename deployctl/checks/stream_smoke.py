"""smoke-test for a stream consumer (the kafka target): the recorded rows through a real broker.

The built consumer (.venv) runs against KAFKA_BOOTSTRAP_SERVERS with topics of its own, or
against a local broker started for the run. Records go in while it runs; it is killed with
SIGKILL mid-stream and restarted; then every good record must have its recorded answer on the
output topic and every bad one a dead-letter record: nothing lost (duplicates from the replay are
allowed: the guarantee is at least once). A last paced phase measures the end-to-end latency,
and SIGTERM must drain and exit 0.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from deployctl import kafka_broker
from deployctl.checks.contract import Check, predict_problem
from deployctl.manifest import Artifact
from deployctl.process import ProcessService, free_port, wait_healthy
from deployctl.targets.builders import require_current_venv

# Faster group joins and failure detection on the local broker (Tansu waits about half the session
# timeout before it completes a join); a real cluster keeps the consumer's defaults.
LOCAL_BROKER_SETTINGS = {"KAFKA_SESSION_TIMEOUT_MS": "1000", "KAFKA_HEARTBEAT_INTERVAL_MS": "100"}
BAD_RECORDS: dict[str, bytes] = {
    "bad-json": b"{not json",
    "bad-shape": b'{"features": "oops"}',
    "bad-empty": b"",
    "bad-no-features": b'{"rows": [1, 2]}',
    "bad-binary": b"\xff\xfe\x00garbage",
}
GOOD_RECORDS = 6000  # enough for the consumer to be mid-stream when it is killed
LATENCY_RECORDS = 1000


@dataclass
class Stream:
    """One run's topics, the consumer's environment, and what was sent."""

    artifact: Artifact
    bootstrap: str
    local: bool
    names: dict[str, str] = field(default_factory=dict)
    sent: dict[bytes, int] = field(default_factory=dict)  # key -> smoke case index (-1: bad record)
    sent_ms: dict[bytes, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.names = kafka_broker.unique_topics(self.artifact.name)
        self.producer = kafka_broker.producer(self.bootstrap)  # one connection for every send

    def create_topics(self, partitions: int = 3) -> None:
        kafka_broker.create_topics(
            self.bootstrap,
            {self.names["INPUT_TOPIC"]: partitions, self.names["OUTPUT_TOPIC"]: partitions,
             self.names["DLQ_TOPIC"]: 1},
        )  # fmt: skip

    def env(self, **extra: str) -> dict[str, str]:
        settings = LOCAL_BROKER_SETTINGS if self.local else {}
        return {**self.names, "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, **settings, **extra}

    def start_consumer(self, timeout: float = 60.0, **extra: str) -> tuple[ProcessService, float]:
        """The built consumer, started; returns once it holds partitions (/health 200), and the seconds."""
        program = self.artifact.path / ".venv" / "bin" / "python"
        require_current_venv(self.artifact)
        port = free_port()
        env = {"PORT": str(port), **self.env(**extra)}
        service = ProcessService([str(program), "-m", "app"], self.artifact.path, port, env)
        return service, wait_healthy(service, timeout)

    def good_records(self, count: int, prefix: str) -> list[tuple[bytes, bytes]]:
        """`count` /predict bodies cycling over the recorded cases, in both feature forms."""
        cases = self.artifact.smoke_cases
        names = [c["name"] for c in self.artifact.model["columns"]]
        records = []
        for i in range(count):
            case = i % len(cases)
            row = cases[case]["row"]
            features = [row[n] for n in names] if i % 2 else row
            key = f"{prefix}-{i}".encode()
            self.sent[key] = case
            records.append((key, json.dumps({"features": features}).encode()))
        return records

    def bad_records(self) -> list[tuple[bytes, bytes]]:
        for key in BAD_RECORDS:
            self.sent[key.encode()] = -1
        return [(key.encode(), value) for key, value in BAD_RECORDS.items()]

    def produce(self, records: list[tuple[bytes, bytes]]) -> None:
        now = time.time() * 1000
        self.sent_ms.update((key, now) for key, _ in records)
        kafka_broker.produce(self.bootstrap, self.names["INPUT_TOPIC"], records, self.producer)

    @contextmanager
    def reader(self) -> Iterator[kafka_broker.Reader]:
        reader = kafka_broker.Reader(self.bootstrap, [self.names["OUTPUT_TOPIC"], self.names["DLQ_TOPIC"]])
        try:
            yield reader
        finally:
            reader.close()

    def all_answered(self, records: list[Any]) -> bool:
        return set(self.sent) <= {r.key() for r in records}

    # -- verdicts ------------------------------------------------------------------------------

    def answers_check(self, records: list[Any]) -> Check:
        """Every good record's answer is the recorded one, and names the input it answers."""
        cases, model = self.artifact.smoke_cases, self.artifact.model
        good = [r for r in records if r.topic() == self.names["OUTPUT_TOPIC"]]
        problems = []
        for record in good:
            body = json.loads(record.value())
            case = self.sent.get(record.key(), -1)
            if case < 0:
                problems.append(f"{record.key()!r}: an answer for a record that was not a good one")
                continue
            problem = predict_problem(body, cases[case], model)
            if problem is not None:
                problems.append(f"{record.key()!r}: {problem.detail}")
            elif set(body.get("input", {})) != {"topic", "partition", "offset"}:
                problems.append(f"{record.key()!r}: no input topic/partition/offset in {body}")
        detail = f"{len(good)} answers checked against the recorded ones"
        return Check(
            "every answer is the recorded one", not problems and bool(good), "; ".join(problems[:3]) or detail
        )

    def dead_letter_check(self, records: list[Any]) -> Check:
        dead = {r.key(): json.loads(r.value()) for r in records if r.topic() == self.names["DLQ_TOPIC"]}
        bad = {key.encode(): value for key, value in BAD_RECORDS.items()}
        wrong = [k for k in bad if k not in dead or not dead[k].get("error") or "input" not in dead[k]]
        unexpected = [k for k in dead if k not in bad]
        values_kept = all(
            dead[k]["value"] == v.decode("utf-8", "replace") for k, v in bad.items() if k in dead
        )
        ok = not wrong and not unexpected and values_kept
        detail = f"{len(bad)} bad records, each with its error and original value"
        if not ok:
            detail = f"missing or incomplete {wrong}; unexpected {unexpected}; values kept: {values_kept}"
        return Check("every bad record in the dead-letter topic", ok, detail)


def run(artifact: Artifact, timeout: float = 120.0) -> list[Check]:
    """The whole stream smoke test, on KAFKA_BOOTSTRAP_SERVERS or a local broker."""
    kafka_broker.client()  # a clear UsageError before anything starts, if it is missing
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = nullcontext(servers) if servers else kafka_broker.local_broker()
    with broker as bootstrap:
        assert bootstrap is not None
        stream = Stream(artifact, bootstrap, local=not servers)
        where = f"KAFKA_BOOTSTRAP_SERVERS {bootstrap}" if servers else f"a local broker at {bootstrap}"
        checks = [Check("broker reachable, topics created", True, where)]
        stream.create_topics()
        with stream.reader() as reader:
            checks += crash_and_resume(stream, reader, timeout)
            if all(c.ok for c in checks):
                checks += latency_and_drain(stream, reader, timeout)
    return checks


def crash_and_resume(stream: Stream, reader: kafka_broker.Reader, timeout: float) -> list[Check]:
    """Records keep arriving while the consumer scores them; SIGKILL it, restart it, count."""
    first = stream.good_records(GOOD_RECORDS // 4, "early") + stream.bad_records()
    rest = stream.good_records(GOOD_RECORDS - GOOD_RECORDS // 4, "late")
    stream.produce(first)
    consumer, joined = stream.start_consumer(timeout)
    checks = [Check("consumer joined its group (/health 200)", True, f"after {joined:.1f} s", joined * 1000)]
    feeding = threading.Thread(target=paced, args=(stream, rest, 20, 0.05), daemon=True)
    feeding.start()
    reader.read_until(lambda records: len(records) >= len(first) // 2, timeout)
    os.killpg(consumer.proc.pid, signal.SIGKILL)
    killed_at, still_feeding = len(reader.records), feeding.is_alive()
    consumer.stop()
    feeding.join()
    backlog = len(stream.sent) - len({r.key() for r in reader.records})
    consumer, _ = stream.start_consumer(timeout)
    started = time.monotonic()
    complete = reader.read_until(stream.all_answered, timeout)
    seconds = time.monotonic() - started
    consumer.stop()
    answered = {r.key() for r in reader.records}
    lost = [k for k in stream.sent if k not in answered]
    duplicates = len(reader.records) - len(answered)
    mid = f"killed with SIGKILL after {killed_at} of {len(stream.sent)} outputs" + (
        ", records still arriving" if still_feeding else ""
    )
    return [
        *checks,
        Check("SIGKILL mid-stream, restart: nothing lost", complete and not lost,
              f"{mid}; {len(lost)} lost, {duplicates} replayed (at least once)" if complete
              else f"{mid}; {len(lost)} never answered, e.g. {lost[:3]}"),
        stream.answers_check(reader.records),
        stream.dead_letter_check(reader.records),
        Check("throughput (backlog after restart)", complete, f"{backlog / seconds:,.0f} records/s "
              f"({backlog} records in {seconds:.2f} s)", seconds * 1000),
    ]  # fmt: skip


def latency_and_drain(stream: Stream, reader: kafka_broker.Reader, timeout: float) -> list[Check]:
    """End-to-end latency at a paced rate, then SIGTERM: the batch finished, exit status 0."""
    consumer, _ = stream.start_consumer(timeout)
    before = len(reader.records)
    paced(stream, stream.good_records(LATENCY_RECORDS, "paced"), 50, 0.02)
    complete = reader.read_until(stream.all_answered, timeout)
    timed = [r for r in reader.records[before:] if r.key().startswith(b"paced-")]
    latencies = sorted(r.timestamp()[1] - stream.sent_ms[r.key()] for r in timed)
    consumer.stop()
    status = consumer.proc.returncode
    p50, p99 = (statistics.quantiles(latencies, n=100)[i] for i in (49, 98)) if len(latencies) > 1 else (0, 0)
    return [
        Check("end-to-end latency, paced input", complete and bool(timed),
              f"p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(timed)} records", p50),
        Check("SIGTERM: batch drained, group left, exit 0", status == 0, f"exit status {status}"),
    ]  # fmt: skip


def paced(stream: Stream, records: list[tuple[bytes, bytes]], chunks: int, pause: float) -> None:
    """Send `records` in `chunks` parts, `pause` seconds apart: a stream, not one burst."""
    size = max(1, len(records) // chunks)
    for start in range(0, len(records), size):
        stream.produce(records[start : start + size])
        time.sleep(pause)
