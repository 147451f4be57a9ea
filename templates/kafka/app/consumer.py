"""The streaming adapter: a Kafka consumer that scores its input topic in micro-batches, at least once.

Each record's value is a `/predict` body; it goes through the runtime's validation
(`ModelService.predict`) and the valid ones of a poll are scored in one model call
(`app.batching.score_together`). Every input gets one record on OUTPUT_TOPIC (the answer) or on
DLQ_TOPIC (why it was refused), and the input offsets are committed only once the broker has
acknowledged all of them: a crash at any point replays from the last commit, never skips.

A record can only ever cost itself: whatever goes wrong with one (not JSON, refused, nested too
deep for the parser, refused by the model, an answer too large for the broker) sends it to the
dead-letter topic, its value cut to fit the message limit, with its size and sha256, and the
consumer goes on. Only the broker failing to take the outputs stops it (a restart then replays).

With CAPTURE set, each record scored (and with CAPTURE_ERRORS each dead letter) also gives one
capture record through the runtime's app/capture.py, as an HTTP request does: its id from the
record's X-Request-ID (or request_id) header when sane, its route `kafka:<input topic>`, its answer
the value sent on OUTPUT_TOPIC. Like the outputs, a record replayed after a crash is captured again.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from app.runtime import (
    ROOT,
    BadRequest,
    Call,
    ModelService,
    Scored,
    configure_logging,
    dumps,
    kafka_properties,
    log,
    request_id,
    score_together,
    status_of,
)
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
# Idempotent production: a send the broker stored but whose acknowledgement was lost (a stalled
# broker, a reconnect) is retried by librdkafka without being written twice (the test broker,
# Tansu, supports it).
PRODUCER_DEFAULTS = {"acks": "all", "linger.ms": 2, "enable.idempotence": True}
FLUSH_TIMEOUT_S = 30.0
MESSAGE_MAX_BYTES = 1_000_000  # librdkafka's default message.max.bytes (brokers default to ~1 MiB)
# Room for the record's framing, timestamp and the dead letter's fields besides the value.
DEAD_LETTER_OVERHEAD = 2048
ERROR_MAX_CHARS = 2000  # an error message may quote the input (an unknown column's name)
Outcome = Scored | BadRequest | Exception


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
        self.too_large: list[Message] = []  # inputs whose output the broker refused for its size
        self.max_message_bytes = int(settings.kafka.get("message.max.bytes") or MESSAGE_MAX_BYTES)

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
            self.send(record, value)
        self.acknowledged()
        if self.too_large:  # a broker whose limit is below ours: the dead letter without its value
            refused, self.too_large = self.too_large, []
            for record in refused:
                self.produce(self.settings.dlq_topic, *self.bare_dead_letter(record))
            self.acknowledged()
            if self.too_large:
                raise DeliveryFailed(f"dead letters refused as too large: {[origin(r) for r in refused[:3]]}")
        if inputs:
            self.commit(inputs)

    def acknowledged(self) -> None:
        """Wait for every delivery report; DeliveryFailed if the broker did not take them all."""
        remaining = self.producer.flush(FLUSH_TIMEOUT_S)
        if remaining or self.failed_deliveries:
            # Not committing is enough for at least once; exiting lets the orchestrator restart
            # us from the last commit instead of carrying on past records without outputs.
            raise DeliveryFailed(f"{remaining} outputs unacknowledged, failed: {self.failed_deliveries[:3]}")

    def send(self, record: Message, value: dict[str, Any]) -> None:
        """The answer on OUTPUT_TOPIC, or the dead letter on DLQ_TOPIC, cut to the message limit."""
        if "error" not in value:
            try:
                self.produce(self.settings.output_topic, dumps(value), record.key(), record)
                return
            except (TypeError, ValueError, KafkaException) as exc:  # no JSON, or over the limit
                if isinstance(exc, KafkaException) and not _too_large(exc.args[0]):
                    raise
                value = dead_letter(record, exc)
        budget = self.max_message_bytes - DEAD_LETTER_OVERHEAD - len(record.key() or b"")
        try:
            self.produce(self.settings.dlq_topic, fitted(value, budget), record.key(), record)
        except KafkaException as exc:  # a key near the limit
            if not _too_large(exc.args[0]):
                raise
            self.produce(self.settings.dlq_topic, *self.bare_dead_letter(record))

    def bare_dead_letter(self, record: Message) -> tuple[bytes, bytes | None, Message]:
        """(value, key, record): the dead letter without the record's value, and with the digest of
        its key in place of a key too large to send."""
        letter = dead_letter(record, "the record's answer or dead letter was over the message size limit")
        key = record.key()
        if key is not None and len(key) > self.max_message_bytes // 2:
            key = b"sha256:" + hashlib.sha256(key).hexdigest().encode()
        return fitted(letter, 0), key, record

    def produce(self, topic: str, value: bytes, key: bytes | None, record: Message) -> None:
        """Queue one output; KafkaException(MSG_SIZE_TOO_LARGE) when it is over the client's limit."""
        while True:
            try:
                self.producer.produce(
                    topic, value, key, on_delivery=lambda error, message: self._delivered(record, error)
                )
                break
            except BufferError:  # the local queue is full: let the broker take some first
                self.producer.poll(0.1)
        self.producer.poll(0)  # serve delivery reports as the queue fills

    def outputs(self, records: list[Message]) -> list[tuple[Message, dict[str, Any]]]:
        """(record, the answer or the dead-letter value) for each record, in order; each captured."""
        started = time.perf_counter()
        valid: list[tuple[Message, Call]] = []
        refused: dict[int, Exception] = {}
        for i, record in enumerate(records):
            try:
                valid.append((record, self.service.predict(self.service.parse(record.value() or b""))))
            except Exception as exc:  # BadRequest, or RecursionError from a deep value, anything: its own
                refused[i] = exc
        self.service.metrics.scored(sum(len(call.rows) for _, call in valid))
        scored = iter(self.score([call for _, call in valid]))
        calls = iter(valid)
        results: list[tuple[Message, dict[str, Any]]] = []
        for i, record in enumerate(records):
            if i in refused:
                results.append((record, dead_letter(record, refused[i])))
                self.capture(record, None, results[-1][1], refused[i], started)
                continue
            _, call = next(calls)
            outcome = next(scored)
            try:
                if isinstance(outcome, Exception):
                    raise outcome
                results.append((record, {**call.answer(*outcome), "input": origin(record)}))
                self.capture(record, call, results[-1][1], None, started)
            except Exception as exc:
                results.append((record, dead_letter(record, exc)))
                self.capture(record, call, results[-1][1], exc, started)
        return results

    def capture(
        self,
        record: Message,
        call: Call | None,
        value: dict[str, Any],
        error: Exception | None,
        started: float,
    ) -> None:
        """The capture record of one input (off unless CAPTURE): its answer, or with CAPTURE_ERRORS
        its dead letter's error; queued, written by the capture's own thread."""
        capture = self.service.capture
        if capture is None or (error is not None and not capture.errors) or not capture.wanted():
            return
        self.service.record_capture(
            request_id(header_request_id(record)),
            f"kafka:{record.topic()}",
            call,
            value if error is None else None,
            200 if error is None else status_of(error),
            None if error is None else value["error"],
            started,
        )

    def score(self, calls: list[Call]) -> list[Outcome]:
        """score_together; if the model fails the batch with more than a refusal (which it already
        narrows down), each Call is scored alone so that only the records at fault fail."""
        try:
            return list(score_together(self.service.scorer, calls))
        except Exception:
            return [self._score_alone(call) for call in calls]

    def _score_alone(self, call: Call) -> Outcome:
        try:
            return score_together(self.service.scorer, [call])[0]
        except Exception as exc:
            return exc

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

    def _delivered(self, record: Message, error: KafkaError | None) -> None:
        if error is None:
            return
        if _too_large(error):  # the broker's limit is below the client's: this record's output only
            self.too_large.append(record)
        else:
            self.failed_deliveries.append(f"{origin(record)}: {error}")

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.health.assigned = list(partitions)
        log.info("partitions assigned", extra={"fields": {"partitions": [p.partition for p in partitions]}})

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.health.assigned = []


# The headers a producer may name a record by; request_id() keeps the value when it is sane.
REQUEST_ID_HEADERS = ("x-request-id", "request_id")


def header_request_id(record: Message) -> bytes | None:
    """The value of the record's X-Request-ID (or request_id) header, any case; None without one."""
    for key, value in record.headers() or ():
        if key.lower() in REQUEST_ID_HEADERS and value:
            return bytes(value)
    return None


def origin(record: Message) -> dict[str, Any]:
    return {"topic": record.topic(), "partition": record.partition(), "offset": record.offset()}


def dead_letter(record: Message, error: BadRequest | Exception | str) -> dict[str, Any]:
    """Why the record was refused, where it was, and its value (as text) with its size and digest:
    the value may be cut to fit the broker's limit (`fitted`), the digest identifies the original."""
    if isinstance(error, BadRequest):
        message = error.message
    elif isinstance(error, Exception):
        message = f"the record could not be scored: {type(error).__name__}: {error}"
        log.warning("record refused", extra={"fields": {"input": origin(record), "error": message[:200]}})
    else:
        message = error
    raw = record.value() or b""
    return {
        "error": message if len(message) <= ERROR_MAX_CHARS else message[:ERROR_MAX_CHARS] + "...",
        "input": origin(record),
        "value": raw.decode("utf-8", errors="replace"),
        "value_bytes": len(raw),
        "value_sha256": hashlib.sha256(raw).hexdigest(),
    }


def fitted(letter: dict[str, Any], max_bytes: int) -> bytes:
    """The dead letter as JSON of at most `max_bytes` (its value cut, `value_truncated`), or with
    an empty value if even that is over. JSON escaping makes a character cost 1 to 6 bytes, so
    the cut is estimated from the bytes of the last try, a few times."""
    payload = dumps(letter)
    text: str = letter["value"]
    while len(payload) > max_bytes and text:
        keep = int(len(text) * max_bytes / len(payload) * 0.95) if max_bytes > 0 else 0
        text = text[: min(keep, len(text) - 1)]
        payload = dumps({**letter, "value": text, "value_truncated": True})
    return payload


def _too_large(error: KafkaError) -> bool:
    return bool(error.code() in (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE))


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
