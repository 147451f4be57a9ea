"""Traffic capture in the kafka consumer (issue 23): the built consumer on the real broker of the kafka
tests, each record it scores (and with CAPTURE_ERRORS each dead letter) captured through the runtime's
app/capture.py, to a file and to a topic (CAPTURE=kafka:TOPIC, on the consumer's own brokers); every
record validated against deployctl/schemas/capture-record.schema.json. A dead capture broker or an
unwritable file leaves every input answered and counts the drops."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from test_capture import FRAUD, VALIDATOR, metric, records_in, row
from test_kafka import broker, stream, stream_dir  # noqa: F401 - the kafka tests' broker and artifact
from test_rest import build_artifact  # noqa: F401 - the session's artifacts
from test_runtime import runtime

from deployctl import kafka_broker
from deployctl.checks.stream_smoke import Stream
from deployctl.process import ProcessService, free_port, get

pytestmark = pytest.mark.slow
GOOD = 12  # records scored; the stream's 5 bad records go to the dead-letter topic
SECRET_AMOUNT = 98765.4321  # in every input's `amount`, redacted in the kafka sink test


def id_headers(i: int) -> list[tuple[str, bytes]]:
    """A third of the records name themselves in X-Request-ID, a third in request_id, a third not
    at all; the last one with an id no record may hold (replaced by a generated one)."""
    if i == GOOD - 1:
        return [("X-Request-ID", b"x" * 200)]
    return [[("X-Request-ID", f"id-{i}".encode())], [("request_id", f"id-{i}".encode())], []][i % 3]


def send(run: Stream, amount: float | None = None) -> dict[str, dict[str, Any]]:
    """GOOD known rows and the bad records to the input topic, with their id headers; returns
    {id: row} of the good records that name themselves."""
    named = {}
    topic = run.names["INPUT_TOPIC"]
    for i in range(GOOD):
        features = row(i) if amount is None else {**row(i), "amount": amount}
        key = f"good-{i}".encode()
        run.sent[key] = 0
        run.producer.produce(topic, json.dumps({"features": features}).encode(), key, headers=id_headers(i))
        if id_headers(i) and i != GOOD - 1:
            named[f"id-{i}"] = features
    for key, value in run.bad_records():
        run.producer.produce(topic, value, key, headers=[("x-request-id", b"dead-" + key)])
    assert run.producer.flush(30) == 0
    return named


def answered(run: Stream, consumer: ProcessService) -> list[Any]:
    """The output and dead-letter records once every input has one."""
    with run.reader() as reader:
        assert reader.read_until(run.all_answered, 60), consumer.logs()
        return list(reader.records)


def wait_for(done: Callable[[], bool], seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def check_records(
    records: list[dict[str, Any]], named: dict[str, Any], outputs: list[Any], run: Stream
) -> None:
    """One record per input: valid, ids round-tripped from the headers, the answer sent for each
    good one, the dead letter's error for each bad one."""
    for record in records:
        VALIDATOR.validate(record)
    assert len(records) == GOOD + 5, [r["request_id"] for r in records]
    assert {r["route"] for r in records} == {f"kafka:{run.names['INPUT_TOPIC']}"}
    by_id = {r["request_id"]: r for r in records}
    assert len(by_id) == len(records)  # generated ids are distinct
    generated = [rid for rid in by_id if not rid.startswith(("id-", "dead-"))]
    assert len(generated) == GOOD - len(named) and all(len(rid) == 32 for rid in generated), generated
    for rid, features in named.items():
        record = by_id[rid]
        assert record["status"] == 200 and record["error"] is None
        assert dict(zip(record["input"]["columns"], record["input"]["rows"][0], strict=True)) == features
    good = [r for r in records if not r["request_id"].startswith("dead-")]
    sent = [json.loads(o.value()) for o in outputs if o.key().startswith(b"good-")]
    assert sorted(map(canonical, (r["answer"] for r in good))) == sorted(map(canonical, sent))
    dead = [r for r in records if r["request_id"].startswith("dead-")]
    assert len(dead) == 5 and all(r["status"] == 400 and r["error"] and r["answer"] is None for r in dead)


def canonical(answer: dict[str, Any]) -> str:
    return json.dumps(answer, sort_keys=True)


def test_each_record_gives_one_capture_record_in_a_file_that_compare_reads(
    stream: Stream,  # noqa: F811
    tmp_path: Path,
    build_artifact: Callable[..., Path],  # noqa: F811
) -> None:
    sink = tmp_path / "capture.jsonl"
    consumer, _ = stream.start_consumer(CAPTURE=f"file:{sink}", CAPTURE_ERRORS="1")
    try:
        named = send(stream)
        outputs = answered(stream, consumer)
        assert wait_for(lambda: metric(consumer.base_url, "deployctl_capture_records_total") == GOOD + 5)
        logs = consumer.logs()
    finally:
        consumer.stop()
    assert consumer.proc.returncode == 0, logs
    check_records(records_in(sink), named, outputs, stream)
    # compare --traffic takes the consumer's capture as it takes an HTTP service's
    flask = build_artifact(FRAUD, "flask")
    both = ("compare", str(flask), "--against", str(flask), "--max-latency-ratio", "1000")  # rows, not speed
    result = run_cli(*both, "--traffic", str(sink), "--json")
    assert result.code == 0, result.output
    report = json.loads(result.stdout)
    assert report["rows"] == report["compared"] == GOOD and report["agreement"] == 1.0


def test_the_kafka_sink_writes_each_record_to_a_topic_on_the_consumers_brokers_by_sigterm(
    stream: Stream,  # noqa: F811
) -> None:
    """The consumer's own brokers (KAFKA_*, no CAPTURE_KAFKA_*), whose linger of 10 s keeps the
    capture records in the producer's buffer until SIGTERM, which delivers them all."""
    topic = f"{stream.names['GROUP_ID']}-capture"
    kafka_broker.create_topics(stream.bootstrap, {topic: 1})
    env = {"CAPTURE": f"kafka:{topic}", "CAPTURE_ERRORS": "1", "CAPTURE_REDACT": "amount"}
    consumer, _ = stream.start_consumer(KAFKA_LINGER_MS="10000", **env)
    try:
        named = send(stream, amount=SECRET_AMOUNT)
        outputs = answered(stream, consumer)  # the consumer's own outputs are flushed, not lingered
        assert metric(consumer.base_url, "deployctl_capture_records_total") == 0  # still lingering
    finally:
        consumer.stop()
    assert consumer.proc.returncode == 0
    captured = kafka_broker.Reader(stream.bootstrap, [topic])
    try:
        assert captured.read_until(lambda got: len(got) >= GOOD + 5, 30)
        captured.read(0.5)
    finally:
        captured.close()
    assert not any(b"98765" in m.value() for m in captured.records)  # redacted before it left
    redacted = {rid: {**features, "amount": runtime.REDACTED} for rid, features in named.items()}
    check_records([json.loads(m.value()) for m in captured.records], redacted, outputs, stream)


def test_the_kafka_sink_counts_what_the_broker_acknowledged(broker: str) -> None:  # noqa: F811
    """In process, CAPTURE_KAFKA_BOOTSTRAP_SERVERS: records delivered, counted from the reports."""
    topic = f"capture-{os.urandom(4).hex()}"
    kafka_broker.create_topics(broker, {topic: 1})
    counts = {"records": 0, "dropped": 0}
    environ = {"CAPTURE": f"kafka:{topic}", "CAPTURE_KAFKA_BOOTSTRAP_SERVERS": broker}
    capture = runtime.Capture.from_environ(
        lambda kind, n: counts.__setitem__(kind, counts[kind] + n), environ
    )
    assert capture is not None
    for i in range(50):
        capture.record({"request_id": f"r{i}", "input": None})
    assert wait_for(lambda: counts["records"] == 50, 20), counts
    capture.close()
    reader = kafka_broker.Reader(broker, [topic])
    try:
        assert reader.read_until(lambda got: len(got) >= 50, 20)
    finally:
        reader.close()
    assert [json.loads(m.value())["request_id"] for m in reader.records] == [f"r{i}" for i in range(50)]
    assert counts == {"records": 50, "dropped": 0}


@pytest.mark.parametrize("broken", ["dead broker", "unwritable file"])
def test_a_dead_capture_broker_or_unwritable_file_answers_every_record_and_counts_the_drops(
    stream: Stream,  # noqa: F811
    tmp_path: Path,
    broken: str,
) -> None:
    if broken == "dead broker":  # nothing listens there; undelivered records expire after 1 s
        env = {
            "CAPTURE": "kafka:capture",
            "CAPTURE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "CAPTURE_KAFKA_MESSAGE_TIMEOUT_MS": "1000",
        }
    else:
        env = {"CAPTURE": f"file:{tmp_path / 'missing' / 'capture.jsonl'}"}
    consumer, _ = stream.start_consumer(**env)
    try:
        send(stream)
        outputs = answered(stream, consumer)
        dropped = lambda: metric(consumer.base_url, "deployctl_capture_dropped_total")  # noqa: E731
        assert wait_for(lambda: dropped() >= GOOD), consumer.logs()
        assert dropped() == GOOD and metric(consumer.base_url, "deployctl_capture_records_total") == 0
        assert get(consumer.base_url, "/health")[0] == 200
    finally:
        consumer.stop()
    assert consumer.proc.returncode == 0
    assert sum(o.topic() == stream.names["OUTPUT_TOPIC"] for o in outputs) == GOOD  # every one answered


def test_a_kafka_sink_needs_brokers_and_the_client_else_the_service_does_not_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def start(**environ: str) -> str:
        with pytest.raises(runtime.ConfigError) as refused:
            runtime.Capture.from_environ(lambda kind, n: None, {"CAPTURE": "kafka:capture", **environ})
        return str(refused.value)

    assert "set CAPTURE_KAFKA_BOOTSTRAP_SERVERS" in start()
    bad = start(CAPTURE_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", CAPTURE_KAFKA_NOT_A_PROPERTY="1")
    assert "a setting librdkafka refuses" in bad and "not.a.property" in bad
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # as in an HTTP target's artifact
    assert "needs the confluent-kafka package" in start(CAPTURE_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
