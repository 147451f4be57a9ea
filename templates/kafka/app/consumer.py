"""The streaming adapter: a Kafka consumer that scores its input topic in micro-batches, at least once.

Each record's value is a `/predict` body; it goes through the runtime's validation
(`ModelService.predict`) and the valid ones of a poll are scored in one model call
(`app.batching.score_together`). Every input gets one record on OUTPUT_TOPIC (the answer) or on
DLQ_TOPIC (why it was refused), and the input offsets are committed only once the broker has
acknowledged all of them: a crash at any point replays from the last commit, never skips.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from app.runtime import ROOT, BadRequest, Call, ModelService, configure_logging, dumps, log, score_together
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

# Consumer settings that make a group join take ~1 s instead of ~10 s (measured against the
# broker of the tests); KAFKA_* in the environment overrides any of them.
CONSUMER_DEFAULTS = {
    "enable.auto.commit": False,  # offsets are committed by hand, after the outputs are acknowledged
    "auto.offset.reset": "earliest",  # a new group reads the topic from its start
    "session.timeout.ms": 6000,  # the broker's minimum: a crashed consumer's partitions move soon
    "heartbeat.interval.ms": 500,
    "partition.assignment.strategy": "roundrobin",
    "fetch.wait.max.ms": 10,
}
PRODUCER_DEFAULTS = {"acks": "all", "linger.ms": 2}
FLUSH_TIMEOUT_S = 30.0


class DeliveryFailed(Exception):
    """The broker did not acknowledge every output of a batch: its offsets stay uncommitted."""


@dataclass(frozen=True)
class Settings:
    """Where to read and write, from the environment (defaults named after the service)."""

    input_topic: str
    output_topic: str
    dlq_topic: str
    group_id: str
    max_batch_rows: int
    max_batch_wait_s: float
    port: int
    kafka: dict[str, str]  # every KAFKA_<PROPERTY> as librdkafka's <property>

    @classmethod
    def from_env(cls, name: str, env: Mapping[str, str] = os.environ) -> Settings:
        return cls(
            input_topic=env.get("INPUT_TOPIC") or f"{name}-requests",
            output_topic=env.get("OUTPUT_TOPIC") or f"{name}-predictions",
            dlq_topic=env.get("DLQ_TOPIC") or f"{name}-dead-letter",
            group_id=env.get("GROUP_ID") or name,
            max_batch_rows=int(env.get("MAX_BATCH_ROWS") or 500),
            max_batch_wait_s=int(env.get("MAX_BATCH_WAIT_MS") or 20) / 1000,
            port=int(env.get("PORT") or 8080),
            kafka=kafka_properties(env),
        )


def kafka_properties(env: Mapping[str, str]) -> dict[str, str]:
    """KAFKA_BOOTSTRAP_SERVERS -> bootstrap.servers, KAFKA_SASL_MECHANISM -> sasl.mechanism..."""
    return {
        key.removeprefix("KAFKA_").lower().replace("_", "."): value
        for key, value in env.items()
        if key.startswith("KAFKA_") and value
    }


class Health:
    """What GET /health reports: 200 once the model is loaded and the consumer holds partitions."""

    def __init__(self, service: ModelService) -> None:
        self.service = service
        self.assigned: list[TopicPartition] = []

    def answer(self) -> tuple[int, bytes]:
        body = {**self.service.health(), "partitions": len(self.assigned)}
        if not self.assigned:
            body["status"] = "waiting for a partition assignment"
        return (200 if self.assigned else 503), dumps(body)

    def route(self, path: str) -> tuple[int, bytes, str]:
        """/health (and /health/ready, which the image's HEALTHCHECK shared with the docker target
        asks), /health/live, and /metrics (rows scored, rows per model call: the micro-batches)
        for the Prometheus annotations the Deployment shares with the HTTP targets."""
        if path in ("/health", "/health/ready"):
            return (*self.answer(), "application/json")
        if path == "/health/live":
            return 200, dumps({"status": "live"}), "application/json"
        if path == "/metrics":
            return 200, self.service.metrics.exposition(), self.service.media_types["/metrics"]
        return 404, b"{}", "application/json"

    def serve(self, port: int) -> ThreadingHTTPServer:
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body, media_type = health.route(self.path.rstrip("/"))
                self.send_response(status)
                self.send_header("content-type", media_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # probes every few seconds: not logged
                pass

        server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


Clients = tuple[Consumer, Producer]


def kafka_clients(settings: Settings) -> Clients:
    """The consumer and producer; KAFKA_* last, so the operator's settings win over the defaults.
    Raises KafkaException for a property librdkafka does not accept."""
    consumer = Consumer({**CONSUMER_DEFAULTS, "group.id": settings.group_id, **settings.kafka}, logger=log)
    return consumer, Producer({**PRODUCER_DEFAULTS, **settings.kafka}, logger=log)


class StreamScorer:
    """One micro-batch at a time: poll, validate, score together, produce, wait for acks, commit."""

    def __init__(self, service: ModelService, settings: Settings, health: Health, clients: Clients) -> None:
        self.service = service
        self.settings = settings
        self.health = health
        self.stopping = False
        self.consumer, self.producer = clients
        self.failed_deliveries: list[str] = []

    def run(self) -> None:
        self.consumer.subscribe(
            [self.settings.input_topic], on_assign=self._assigned, on_revoke=self._revoked
        )
        try:
            while not self.stopping:
                records = self.consumer.consume(self.settings.max_batch_rows, self.settings.max_batch_wait_s)
                if records:
                    self.process(records)
        finally:
            self.consumer.close()  # leaves the group: its partitions move at once, not after a timeout

    def process(self, records: list[Message]) -> None:
        """Outputs for every record, all acknowledged, then the offsets: at least once."""
        inputs = [r for r in records if not _broker_error(r)]
        for record, value in self.outputs(inputs):
            topic = self.settings.output_topic if "error" not in value else self.settings.dlq_topic
            self.producer.produce(topic, dumps(value), record.key(), on_delivery=self._delivered)
            self.producer.poll(0)  # serve delivery reports as the queue fills
        remaining = self.producer.flush(FLUSH_TIMEOUT_S)
        if remaining or self.failed_deliveries:
            # Not committing is enough for at least once; exiting lets the orchestrator restart
            # us from the last commit instead of carrying on past records without outputs.
            raise DeliveryFailed(f"{remaining} outputs unacknowledged, failed: {self.failed_deliveries[:3]}")
        if inputs:
            self.commit(inputs)

    def outputs(self, records: list[Message]) -> list[tuple[Message, dict[str, Any]]]:
        """(record, the answer or the dead-letter value) for each record, in order."""
        valid: list[tuple[Message, Call]] = []
        refused: dict[int, BadRequest] = {}
        for i, record in enumerate(records):
            try:
                valid.append((record, self.service.predict(self.service.parse(record.value() or b""))))
            except BadRequest as exc:
                refused[i] = exc
        self.service.metrics.scored(sum(len(call.rows) for _, call in valid))
        scored = iter(score_together(self.service.scorer, [call for _, call in valid]))
        calls = iter(valid)
        results: list[tuple[Message, dict[str, Any]]] = []
        for i, record in enumerate(records):
            if i in refused:
                results.append((record, dead_letter(record, refused[i])))
                continue
            _, call = next(calls)
            outcome = next(scored)
            if isinstance(outcome, BadRequest):
                results.append((record, dead_letter(record, outcome)))
            else:
                results.append((record, {**call.answer(*outcome), "input": origin(record)}))
        return results

    def commit(self, records: list[Message]) -> None:
        """The next offset of every partition in the batch; a refused commit only means replay."""
        last: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic(), record.partition())
            last[key] = max(last.get(key, -1), record.offset())
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # e.g. partitions revoked meanwhile: their next owner replays
            log.warning("commit refused", extra={"fields": {"error": str(exc)}})

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.failed_deliveries.append(f"{message.topic()}: {error}")

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.health.assigned = list(partitions)
        log.info("partitions assigned", extra={"fields": {"partitions": [p.partition for p in partitions]}})

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.health.assigned = []


def origin(record: Message) -> dict[str, Any]:
    return {"topic": record.topic(), "partition": record.partition(), "offset": record.offset()}


def dead_letter(record: Message, error: BadRequest) -> dict[str, Any]:
    value = (record.value() or b"").decode("utf-8", errors="replace")
    return {"error": error.message, "input": origin(record), "value": value}


def _broker_error(record: Message) -> bool:
    error = record.error()
    if error is not None:
        log.warning("consumer error", extra={"fields": {"error": str(error)}})
    return error is not None


def main(scorer: type[StreamScorer] = StreamScorer) -> None:
    """Load the model, serve /health, consume until SIGTERM (`scorer`: bench/ swaps in a naive one)."""
    configure_logging()
    stream: list[StreamScorer] = []

    def stop(signum: int, frame: object) -> None:
        if not stream:  # still loading the model: nothing to drain
            raise SystemExit(0)
        stream[0].stopping = True  # the current batch is finished, flushed and committed first

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    settings = Settings.from_env(json.loads((ROOT / "deployctl.json").read_text())["name"])
    try:  # before the model loads: a bad setting fails in a second, not after a long load
        clients = kafka_clients(settings)
    except KafkaException as exc:  # a KAFKA_<PROPERTY> librdkafka does not accept
        log.error("bad Kafka settings", extra={"fields": {"error": exc.args[0].str()}})
        sys.exit(2)
    service = ModelService.from_artifact()
    health = Health(service)
    stream.append(scorer(service, settings, health, clients))
    server = health.serve(settings.port)
    log.info(
        "consuming",
        extra={"fields": {"input": settings.input_topic, "group": settings.group_id,
                          "max_batch_rows": settings.max_batch_rows}},
    )  # fmt: skip
    try:
        stream[0].run()
    except DeliveryFailed as exc:  # exit: a restart resumes from the last commit
        log.error("outputs not acknowledged", extra={"fields": {"error": str(exc)}})
        sys.exit(1)
    finally:
        server.shutdown()
    log.info("stopped: last batch committed, group left")
