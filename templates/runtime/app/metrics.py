"""Prometheus metrics of the service (`Metrics`), served at GET /metrics in the text format.

With several worker processes (gunicorn, uvicorn --workers) each has its own counters: the server's
start-up sets PROMETHEUS_MULTIPROC_DIR before this module is imported, prometheus_client then keeps
the values in files there, and /metrics adds up every process's.

The hot path is `started` + `finished`: the labelled children are bound once per (route, status)
and kept, so a request costs a few lock-protected additions, no label lookups.
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

# The classic text format, which generate_latest writes and every Prometheus 2 and 3 reads.
MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Latency buckets for a small model: most answers take well under 10 ms.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 10_000)
OTHER = "other"  # the route label of a path the service does not serve: keeps the label set bounded
GRPC_ROUTE = "grpc"  # the route label of every gRPC call (app/oip_grpc/service.py)


class Metrics:
    """The service's metrics. A request's route label is its path when that is one of `paths`,
    else what `label` maps the path to (a template such as /v2/models/{name}/infer, or "other")."""

    def __init__(
        self, model: dict[str, Any], runtime: str, paths: set[str], label: Callable[[str], str]
    ) -> None:
        self.multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        disable_created_metrics()  # no *_created series: they double the output and say little
        self.registry = CollectorRegistry()
        if not self.multiprocess:  # per-process CPU and memory; meaningless summed over workers
            ProcessCollector(registry=self.registry)
        self.label = label
        self.requests = Counter(
            "deployctl_requests", "HTTP requests answered", ["route", "code"], registry=self.registry
        )
        self.duration = Histogram(
            "deployctl_request_duration_seconds",
            "Time to answer a request, from its body read to its answer written",
            ["route"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.in_progress = Gauge(
            "deployctl_requests_in_progress",
            "Requests being answered",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.rows = Counter("deployctl_rows", "Rows scored by the model", registry=self.registry)
        self.shed_requests = Counter(
            "deployctl_shed",
            "Requests refused at once (503) because the worker had MAX_IN_FLIGHT in progress",
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "deployctl_batch_rows",
            "Rows per model call (above a request's rows when requests are micro-batched)",
            buckets=ROWS_BUCKETS,
            registry=self.registry,
        )
        # traffic capture (app/capture.py): counted by its writer thread, so never deferred
        self.capture_counters = {
            "records": Counter(
                "deployctl_capture_records", "Capture records written to the sink", registry=self.registry
            ),
            "dropped": Counter(
                "deployctl_capture_dropped",
                "Capture records dropped: the queue was full or the sink failed",
                registry=self.registry,
            ),
        }
        info = Gauge(
            "deployctl_model_info",
            "The model served (always 1)",
            ["name", "version", "flavor", "runtime"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        info.labels(
            str(model["name"]), str(model["version"]), str(model.get("flavor", "unknown")), runtime
        ).set(1)
        self.routes = {variant: path for path in paths for variant in (path, path + "/")}
        self.routes[GRPC_ROUTE] = GRPC_ROUTE
        # (route, status) -> (the route's request counter, its duration histogram): bound once
        self.children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def started(self) -> float:
        """Count a request in progress; the time it started, for `finished`."""
        self.in_progress.inc()
        return time.perf_counter()

    def finished(self, path: str, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        children = self.children_of(self.routes.get(path) or self.label(path), status)
        children[0].inc()
        children[1].observe(elapsed)
        self.in_progress.dec()

    def children_of(self, route: str, status: int) -> tuple[Any, Any]:
        children = self.children.get((route, status))
        if children is None:
            children = self.children[(route, status)] = (
                self.requests.labels(route, str(status)),
                self.duration.labels(route),
            )
        return children

    def scored(self, rows: int) -> None:
        """One model call on `rows` rows."""
        self.rows.inc(rows)
        self.batch_rows.observe(rows)

    def shed(self) -> None:
        """One request refused for overload (also counted, as a 503, by `finished`)."""
        self.shed_requests.inc()

    def captured(self, outcome: str, records: int) -> None:
        """Capture records "records" (written) or "dropped"; from any thread."""
        self.capture_counters[outcome].inc(records)

    @classmethod
    def chosen(
        cls, model: dict[str, Any], runtime: str, paths: set[str], label: Callable[[str], str]
    ) -> Metrics:
        """The metrics, or with METRICS=0 none recorded (what measures their cost: bench/)."""
        chosen = cls if os.environ.get("METRICS", "1") != "0" else Unrecorded
        return chosen(model, runtime, paths, label)

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format, summed over the worker processes if several."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)


class Unrecorded(Metrics):
    """METRICS=0: /metrics still answers (model info only); requests and rows are not counted."""

    def started(self) -> float:
        return time.perf_counter()

    def finished(self, path: str, status: int, started: float) -> None:
        pass

    def scored(self, rows: int) -> None:
        pass

    def shed(self) -> None:
        pass


# How often a Deferred hands its counts to prometheus_client (and always before /metrics answers).
FLUSH_SECONDS = 0.25
DURATION_BOUNDS = (*DURATION_BUCKETS, float("inf"))
ROWS_BOUNDS = (*ROWS_BUCKETS, float("inf"))


class Deferred:
    """The metrics of one thread in one process (the ASGI event loop), counted in plain numbers.

    prometheus_client takes a lock for every increment, and its histograms find their bucket in a
    Python loop: about 5 µs a request in all, some 7% of a small model's request at 16 connections
    (bench/results.md). Here a request costs a few additions; the sums go to prometheus_client at
    most every FLUSH_SECONDS and before every exposition, so /metrics is always exact. With several
    worker processes, /metrics (answered by one of them) reads the others' counts from their files:
    each worker then also hands its counts over whenever it has nothing left in progress, so an idle
    worker holds nothing back, and under load it hands them over once per burst, not per request.
    Not for threads (additions here are not atomic): `Metrics` does those.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.routes, self.label = metrics.routes, metrics.label
        self.active = 0
        self.flushed = time.perf_counter()
        # (route, status) -> [requests, seconds, one count per duration bucket]
        self.requests: dict[tuple[str, int], list[Any]] = {}
        self.batches = [0, *[0] * len(ROWS_BOUNDS)]  # rows, then model calls per rows bucket
        self.when_idle = metrics.multiprocess  # hand the counts over as the worker falls idle

    def started(self) -> float:
        self.active += 1
        return time.perf_counter()

    def finished(self, path: str, status: int, started: float) -> None:
        now = time.perf_counter()
        key = (self.routes.get(path) or self.label(path), status)
        tally = self.requests.get(key)
        if tally is None:
            tally = self.requests[key] = [0, 0.0, *[0] * len(DURATION_BOUNDS)]
        elapsed = now - started
        tally[0] += 1
        tally[1] += elapsed
        tally[2 + bisect_left(DURATION_BOUNDS, elapsed)] += 1
        self.active -= 1
        if now - self.flushed > FLUSH_SECONDS or (self.when_idle and not self.active):
            self.flush(now)

    def scored(self, rows: int) -> None:
        self.batches[0] += rows
        self.batches[1 + bisect_left(ROWS_BOUNDS, rows)] += 1

    def shed(self) -> None:
        self.metrics.shed()  # rare, and under overload: no need to defer it

    def flush(self, now: float) -> None:
        """Add the counts so far to prometheus_client's metrics."""
        self.flushed = now
        metrics = self.metrics
        for (route, status), tally in self.requests.items():
            if tally[0]:
                counter, histogram = metrics.children_of(route, status)
                counter.inc(tally[0])
                _add(histogram, tally[1], tally[2:])
                tally[:] = [0, 0.0, *[0] * len(DURATION_BOUNDS)]
        if self.batches[0]:
            metrics.rows.inc(self.batches[0])
            _add(metrics.batch_rows, self.batches[0], self.batches[1:])
            self.batches = [0, *[0] * len(ROWS_BOUNDS)]
        metrics.in_progress.set(self.active)

    def exposition(self) -> bytes:
        self.flush(time.perf_counter())
        return self.metrics.exposition()


def _add(histogram: Any, total: float, counts: list[int]) -> None:
    """Observations already sorted into buckets, added to a histogram at once. prometheus_client has
    no public call for it: this writes the values `observe` writes (its `_sum` and `_buckets`,
    unchanged since 0.4; tests/test_oip.py compares the result with what was sent)."""
    histogram._sum.inc(total)
    for bucket, count in zip(histogram._buckets, counts):
        if count:
            bucket.inc(count)
