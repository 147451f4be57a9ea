"""Traffic capture: what the service was asked and what it answered, one JSON record a request.

Off unless CAPTURE is set:
- CAPTURE=stdout: one JSON line a record on standard output (CloudWatch, Cloud Logging and
  Kubernetes log shippers read it as it is);
- CAPTURE=file:PATH: JSON lines appended to PATH, rotated at CAPTURE_FILE_BYTES (default 64 MiB)
  into PATH.1 .. PATH.<CAPTURE_FILE_COUNT - 1> (default 5 files in all), the oldest dropped;
- CAPTURE=kafka:TOPIC: one message a record on TOPIC, at the brokers of CAPTURE_KAFKA_BOOTSTRAP_SERVERS
  (CAPTURE_KAFKA_<PROPERTY>: any librdkafka property), else the kafka target's own (KAFKA_*); needs
  confluent-kafka, which only the kafka target installs: elsewhere the service refuses to start;
- CAPTURE_SAMPLE: the fraction of requests recorded (default 1.0);
- CAPTURE_REDACT: comma-separated columns whose values become "[REDACTED]" before they leave the process;
- CAPTURE_ERRORS=1: also the scoring requests refused (4xx), with their error.

Writing is off the request path: the request serializes its record (orjson, a few microseconds)
and appends the bytes to a bounded queue (CAPTURE_QUEUE, default 10,000); one writer thread per
process writes them, waking every WRITE_SECONDS rather than per record (a wake-up per record cost
the serving thread a GIL hand-over each time: 40% more CPU per request at CAPTURE_SAMPLE=0.1,
bench/capture.py). Bytes, not the record's dicts, wait in the queue: the writer then holds the GIL
only to join them (the write itself releases it), and a queued record is one object the cyclic
collector does not track, where thousands of dicts kept alive for 0.1 s were promoted to the old
generation and brought full collections every few seconds.
A full queue or a failing sink (a dead broker included) never fails, slows or blocks a request: the
record is dropped and counted (deployctl_capture_dropped_total; written ones in
deployctl_capture_records_total). At exit (SIGTERM drains the server, then the process exits) the
queue is written out, and a kafka: sink's buffer delivered, within GRACEFUL_TIMEOUT.

The record's format is versioned (SCHEMA_VERSION) and described by capture-record.schema.json in
deployctl's repository.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import os
import random
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from .guard import ConfigError
from .jsonio import dumps
from .logs import log

SCHEMA_VERSION = 1
REDACTED = "[REDACTED]"
# A caller's X-Request-ID is kept when it is this sane (a log line and a file name can hold it);
# anything else gets a generated one, so a header can never inject into a record or a log line.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
QUEUE_SIZE = 10_000
BATCH = 512  # records written at once by the writer
WRITE_SECONDS = 0.1  # how often the writer wakes to write what was queued
OFF = ("0", "off", "none")  # CAPTURE values that mean no capture, as an unset CAPTURE does


def request_id(given: str | bytes | None) -> str:
    """The caller's request id when sane, else a new random one (32 hex digits)."""
    if isinstance(given, bytes):
        given = given.decode("latin-1")
    if given and REQUEST_ID.fullmatch(given):
        return given
    return os.urandom(16).hex()


class Sink:
    """Where serialized records go: `put` takes them (one JSON document each), `write` whole JSON
    lines; both raise OSError on failure."""

    # whether the sink counts its records itself, as the broker acknowledges them (kafka:)
    counts_deliveries = False

    def put(self, records: list[bytes]) -> None:
        self.write(b"".join(record + b"\n" for record in records))

    def write(self, lines: bytes) -> None:
        raise NotImplementedError

    def poll(self) -> None:
        """Called by the writer at each wake: serve what the sink owes (delivery reports)."""

    def close(self, seconds: float = 0.0) -> None:
        """Release the sink, delivering what it holds within `seconds`."""


class StdoutSink(Sink):
    def write(self, lines: bytes) -> None:
        fd = sys.stdout.fileno()
        view = memoryview(lines)
        while view:  # a pipe takes a long write in parts
            view = view[os.write(fd, view) :]


class FileSink(Sink):
    """JSON lines appended to `path`, rotated by size. Several worker processes may append to the
    same file (O_APPEND: each write lands whole); one of them rotates, under a lock file, and the
    others see the new file by its inode and reopen it."""

    def __init__(self, path: str, max_bytes: int, count: int) -> None:
        self.path, self.max_bytes, self.count = path, max_bytes, count
        self.fd: int | None = None

    def write(self, lines: bytes) -> None:
        fd = self._current()
        if os.fstat(fd).st_size >= self.max_bytes:  # full: rotated before, so the newest file is there
            self._rotate()
            fd = self._current()
        os.write(fd, lines)

    def _current(self) -> int:
        """The descriptor of the file now at `path` (another process may have rotated it away)."""
        if self.fd is not None:
            try:
                if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                    return self.fd
            except FileNotFoundError:
                pass
            self.close()
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self.fd

    def _rotate(self) -> None:
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.path).st_size < self.max_bytes:
                    return  # another process rotated it first
                for n in range(self.count - 1, 0, -1):
                    older = self.path if n == 1 else f"{self.path}.{n - 1}"
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(older, f"{self.path}.{n}")
                if self.count == 1:
                    os.unlink(self.path)
        self.close()

    def close(self, seconds: float = 0.0) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


class KafkaSink(Sink):
    """Each record one message on `topic`, produced by the writer thread, never by a request.

    librdkafka's own buffer is bounded (KAFKA_SINK_DEFAULTS): when the broker is away it fills,
    and a record that finds it full is dropped (a produce never blocks); a record the broker has
    not acknowledged within message.timeout.ms is dropped too. Both are counted, and so are the
    delivered ones, by the delivery reports the writer serves at each wake."""

    counts_deliveries = True

    def __init__(self, topic: str, config: dict[str, Any], counted: Callable[[str, int], None]) -> None:
        self.topic, self.config, self.counted = topic, config, counted
        self.producer: Any = None  # made by the writer thread: a forked worker makes its own
        os.register_at_fork(after_in_child=self._forked)

    def _producer(self) -> Any:
        if self.producer is None:
            from confluent_kafka import Producer

            self.producer = Producer(self.config, logger=log)
        return self.producer

    def put(self, records: list[bytes]) -> None:
        from confluent_kafka import KafkaException

        producer = self._producer()
        for i, record in enumerate(records):
            try:
                producer.produce(self.topic, record, on_delivery=self._delivered)
            except BufferError:  # the buffer is full (the broker is away or slow): the rest dropped
                self.counted("dropped", len(records) - i)
                break
            except KafkaException:  # this record is over the message size limit
                self.counted("dropped", 1)
        producer.poll(0)

    def poll(self) -> None:
        if self.producer is not None:
            self.producer.poll(0)

    def _delivered(self, error: Any, message: Any) -> None:
        self.counted("records" if error is None else "dropped", 1)

    def _forked(self) -> None:
        # the parent's producer has no threads here; left to the parent, never destroyed here
        _ORPHANS.append(self.producer)
        self.producer = None

    def close(self, seconds: float = 0.0) -> None:
        if self.producer is not None:
            undelivered = self.producer.flush(seconds)
            if undelivered:
                self.counted("dropped", undelivered)


class Capture:
    """The capture of one service: `wanted()` per request, then `record(...)` if it was."""

    enabled = True

    def __init__(
        self,
        sink: Sink,
        sample: float,
        redact: set[str],
        errors: bool,
        counted: Callable[[str, int], None],
        queue_size: int = QUEUE_SIZE,
        drain_seconds: float = 20.0,
    ) -> None:
        self.sink, self.sample, self.redact, self.errors = sink, sample, redact, errors
        self.counted = counted  # ("records" | "dropped", how many): the metrics
        self.queue_size, self.drain_seconds = queue_size, drain_seconds
        self.queue: deque[bytes] = deque()  # serialized records
        self.writer: threading.Thread | None = None
        self.starting = threading.Lock()
        self.wake = threading.Event()  # write now: flush() and close()
        self.writing = False  # a batch is taken from the queue and not yet written
        self.closed = False
        # a forked worker (gunicorn's preload) has the parent's queue but not its thread: start afresh
        os.register_at_fork(after_in_child=self._forked)
        atexit.register(self.close)

    @classmethod
    def from_environ(
        cls, counted: Callable[[str, int], None], environ: Mapping[str, str] = os.environ
    ) -> Capture | None:
        """The capture CAPTURE asks for, None when off; ConfigError (the service does not start)
        for a setting it cannot honour."""
        where = environ.get("CAPTURE", "").strip()
        if not where or where.lower() in OFF:
            return None
        size = int(_number(environ, "CAPTURE_QUEUE", str(QUEUE_SIZE), int))
        if size < 1:
            raise ConfigError(f"CAPTURE_QUEUE must be at least 1 record; got '{size}'")
        sink = sink_of(where, environ, counted, size)
        sample = _number(environ, "CAPTURE_SAMPLE", "1.0", float)
        if not 0.0 <= sample <= 1.0:
            raise ConfigError(f"CAPTURE_SAMPLE must be a fraction from 0 to 1; got '{sample:g}'")
        redact = {c.strip() for c in environ.get("CAPTURE_REDACT", "").split(",") if c.strip()}
        errors = environ.get("CAPTURE_ERRORS", "0").strip().lower() in ("1", "true", "yes", "on")
        drain = _number(environ, "GRACEFUL_TIMEOUT", "20", float)
        return cls(sink, sample, redact, errors, counted, size, drain)

    def wanted(self) -> bool:
        """Whether this request is one of the sample."""
        return self.sample >= 1.0 or random.random() < self.sample

    def record(self, record: dict[str, Any]) -> None:
        """Redact, serialize and queue a record for the writer; never blocks, never raises: a full
        queue, or a value JSON cannot hold, drops it."""
        if self.writer is None:
            self._start()
        if len(self.queue) >= self.queue_size:  # a race overfills by a thread or two
            self.counted("dropped", 1)
            return
        try:
            line = dumps(self.redacted(record))
        except Exception:  # a value JSON cannot hold (a model's complex number): dropped, counted
            self.counted("dropped", 1)
            return
        self.queue.append(line)  # deque.append is atomic

    def _start(self) -> None:
        with self.starting:
            if self.writer is None:
                self.writer = threading.Thread(target=self._write, name="capture-writer", daemon=True)
                self.writer.start()

    def _forked(self) -> None:
        self.queue = deque()
        self.writer = None
        self.starting = threading.Lock()
        self.wake = threading.Event()
        self.writing = False

    def _write(self) -> None:
        """The writer thread: every WRITE_SECONDS (or when woken), what is queued, in batches; a
        failure drops the batch. Ends once closed with the queue empty."""
        while True:
            self.wake.wait(WRITE_SECONDS)
            self.wake.clear()
            self.sink.poll()
            while self.queue:
                self.writing = True
                batch = [self.queue.popleft() for _ in range(min(BATCH, len(self.queue)))]
                self._flush(batch)
                self.writing = False
            if self.closed:
                return

    def _flush(self, records: list[bytes]) -> None:
        try:
            self.sink.put(records)
        except Exception:  # a full disk, a closed pipe, a broker's refusal: dropped, counted
            self.counted("dropped", len(records))
            return
        if not self.sink.counts_deliveries:
            self.counted("records", len(records))

    def redacted(self, record: dict[str, Any]) -> dict[str, Any]:
        """The record with the values of the CAPTURE_REDACT columns replaced by the marker, and an
        error message that names such a column (it may quote the value) replaced too."""
        if not self.redact:
            return record
        inputs = record.get("input")
        if inputs:
            hidden = [i for i, name in enumerate(inputs["columns"]) if name in self.redact]
            if hidden:
                rows = []
                for row in inputs["rows"]:
                    row = list(row)
                    for i in hidden:
                        row[i] = REDACTED
                    rows.append(row)
                record = {**record, "input": {**inputs, "rows": rows}}
        error = record.get("error")
        if error and any(name in error for name in self.redact):
            record = {**record, "error": REDACTED}
        return record

    def close(self) -> None:
        """Write out what is queued, within the drain time; then stop the writer."""
        if self.closed:
            return
        self.closed = True
        if self.writer is None:
            return
        deadline = time.monotonic() + self.drain_seconds
        self.wake.set()
        self.writer.join(self.drain_seconds)
        self.sink.close(max(0.0, deadline - time.monotonic()))

    def flush(self, seconds: float = 2.0) -> None:
        """Wait (at most `seconds`) until every queued record is written: for a platform that freezes
        the process between requests (AWS Lambda), where a record left queued may never be written."""
        if self.writer is None:
            return
        deadline = time.monotonic() + seconds
        while (self.queue or self.writing) and time.monotonic() < deadline:
            self.wake.set()
            time.sleep(0.001)


def sink_of(
    where: str, environ: Mapping[str, str], counted: Callable[[str, int], None], queue_size: int = QUEUE_SIZE
) -> Sink:
    kind, _, target = where.partition(":")
    kind = kind.lower()
    if kind == "stdout" and not target:
        return StdoutSink()
    if kind == "file" and target:
        max_bytes = int(_number(environ, "CAPTURE_FILE_BYTES", str(64 * 1024 * 1024), int))
        count = int(_number(environ, "CAPTURE_FILE_COUNT", "5", int))
        if max_bytes < 1 or count < 1:
            raise ConfigError("CAPTURE_FILE_BYTES and CAPTURE_FILE_COUNT must be at least 1")
        return FileSink(target, max_bytes, count)
    if kind == "kafka" and target:
        return KafkaSink(target, kafka_sink_config(environ, queue_size), counted)
    raise ConfigError(
        f"CAPTURE must be 'stdout', 'file:PATH' or 'kafka:TOPIC'; got '{where[:80]}' "
        "(unset it to record nothing)"
    )


# The capture producer's buffer: bounded in records (CAPTURE_QUEUE) and bytes, so that a dead broker
# costs at most that much memory; a record not acknowledged within 30 s is dropped. Batches of up
# to 50 ms. CAPTURE_KAFKA_<PROPERTY> (or the kafka target's KAFKA_<PROPERTY>) overrides any.
KAFKA_SINK_DEFAULTS = {
    "linger.ms": 50,
    "queue.buffering.max.kbytes": 64 * 1024,
    "message.timeout.ms": 30_000,
}


def kafka_properties(environ: Mapping[str, str], prefix: str = "KAFKA_") -> dict[str, str]:
    """Every <prefix><PROPERTY> as librdkafka's <property>: KAFKA_BOOTSTRAP_SERVERS ->
    bootstrap.servers, KAFKA_SASL_MECHANISM -> sasl.mechanism..."""
    return {
        key.removeprefix(prefix).lower().replace("_", "."): value
        for key, value in environ.items()
        if key.startswith(prefix) and value
    }


def kafka_sink_config(environ: Mapping[str, str], queue_size: int) -> dict[str, Any]:
    """The capture producer's settings: CAPTURE_KAFKA_* when CAPTURE_KAFKA_BOOTSTRAP_SERVERS is set,
    else the kafka target's own KAFKA_* (its brokers, its security settings). ConfigError without
    a broker, without the client library, or for a property librdkafka refuses."""
    settings = kafka_properties(environ, "CAPTURE_KAFKA_")
    if not settings.get("bootstrap.servers"):
        settings = kafka_properties(environ, "KAFKA_")
    if not settings.get("bootstrap.servers"):
        raise ConfigError(
            "CAPTURE=kafka:TOPIC needs the brokers: set CAPTURE_KAFKA_BOOTSTRAP_SERVERS "
            "(the kafka target uses its own KAFKA_BOOTSTRAP_SERVERS)"
        )
    try:
        from confluent_kafka import KafkaException, Producer
    except ImportError:
        raise ConfigError(
            "CAPTURE=kafka:TOPIC needs the confluent-kafka package, which this artifact does not "
            "install (the kafka target's does): use CAPTURE=stdout or file:PATH here"
        ) from None
    config = {**KAFKA_SINK_DEFAULTS, "queue.buffering.max.messages": queue_size, **settings}
    try:  # a property librdkafka refuses stops the start, not every record later
        Producer(config, logger=log).flush(0)
    except KafkaException as exc:
        raise ConfigError(f"CAPTURE=kafka:TOPIC: a setting librdkafka refuses: {exc.args[0].str()}") from None
    return config


_ORPHANS: list[Any] = []  # producers made before a fork: a forked worker must not destroy them


def _number(environ: Mapping[str, str], name: str, default: str, kind: type[Any]) -> Any:
    raw = environ.get(name, "").strip() or default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a {kind.__name__}; got '{raw[:40]}'") from None


def now() -> str:
    """The time of a record: UTC, ISO 8601, milliseconds (2026-12-06T02:35:07.991Z)."""
    t = time.time()
    second = int(t)
    return f"{_second_stamp(second)}.{int((t - second) * 1000):03d}Z"


@functools.lru_cache(maxsize=1)
def _second_stamp(second: int) -> str:
    """The date and time to the second, formatted once a second: datetime's isoformat on every
    record was 2.5 of the 6.4 microseconds a record cost the request."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
