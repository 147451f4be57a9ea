"""replay: captured requests sent again to a service, its answers written as capture records.

Each record of the capture (a file, or a directory of rotated files) is sent as it was asked: to its
route, with its rows and params and its request id as X-Request-ID, so that the records written
join the captured ones by id and two captures can be compared. A record of a refused request (no
rows) or with a redacted value is skipped, and counted: it cannot be asked again as it was.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deployctl.checks.compare import KeepAliveTransport
from deployctl.checks.contract import NO_ANSWER
from deployctl.checks.rows import REDACTED, read_records, traffic_files
from deployctl.errors import EndpointUnreachable, UsageError

SCHEMA_VERSION = 1  # deployctl/schemas/capture-record.schema.json; tests validate what is written


@dataclass
class Replayed:
    sent: int = 0
    answered: int = 0  # 200
    refused: int = 0  # any other status
    skipped: int = 0  # refused when captured, or redacted


def body_of(record: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(route, JSON body) asking again what the record asked; None when it cannot be asked again."""
    inputs = record.get("input")
    if not inputs or not inputs.get("rows"):
        return None
    columns, rows = inputs["columns"], inputs["rows"]
    if any(REDACTED in row for row in rows if isinstance(row, list)):
        return None
    named = [dict(zip(columns, row)) for row in rows] if columns else rows
    route = record.get("route")
    if route == "/invocations":
        body: dict[str, Any] = {"dataframe_split": {"columns": columns, "data": rows}}
    elif route == "/predict" and len(named) == 1:
        body = {"features": named[0]}
    else:  # /predict_batch, and the Open Inference Protocol's routes in the plain contract
        route, body = "/predict_batch", {"instances": named}
    if record.get("params"):
        body["params"] = record["params"]
    return route, body


def replay(
    source: Path, url: str, headers: dict[str, str], out: Path, force: bool, timeout: float = 30.0
) -> Replayed:
    """Send every replayable record of `source` to `url`; write the answers to `out` as records."""
    traffic_files(source)  # a usage error before anything is sent
    if out.exists() and not force:
        raise UsageError(f"{out} exists.", "Give another --out, or --force to overwrite it.")
    transport = KeepAliveTransport(url)
    health = _ask(transport, url, "GET", "/health", None, headers, timeout)[1]
    health = health if isinstance(health, dict) else {}
    model = {"name": str(health.get("model_name", "")), "version": str(health.get("model_version", ""))}
    tally = Replayed()
    with out.open("w", encoding="utf-8") as fh:
        for _, record in read_records(source):
            asked = body_of(record)
            if asked is None:
                tally.skipped += 1
                continue
            route, body = asked
            sent = {**headers, "X-Request-ID": str(record["request_id"])}
            started = time.perf_counter()
            status, answer = _ask(transport, url, "POST", route, body, sent, timeout)
            latency_ms = round((time.perf_counter() - started) * 1000, 3)
            tally.sent += 1
            if status == 200:
                tally.answered += 1
            else:
                tally.refused += 1
            replayed = answered_record(record, url, model, route, status, answer, latency_ms)
            fh.write(json.dumps(replayed) + "\n")
    return tally


def answered_record(
    asked: dict[str, Any],
    url: str,
    model: dict[str, str],
    route: str,
    status: int,
    answer: Any,
    latency_ms: float,
) -> dict[str, Any]:
    """The capture record of a replayed request: the asked record's id, input and params, the
    service's answer (or its error)."""
    error = None
    if status != 200:
        error = str(answer.get("error", answer)) if isinstance(answer, dict) else str(answer)
    return {
        "schema_version": SCHEMA_VERSION,
        "request_id": asked["request_id"],
        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "model": model,
        "service": url,
        "route": route,
        "input": asked["input"],
        "params": asked.get("params"),
        "answer": answer if status == 200 and isinstance(answer, dict) else None,
        "status": status,
        "error": error,
        "latency_ms": latency_ms,
    }


def _ask(
    transport: KeepAliveTransport,
    url: str,
    method: str,
    route: str,
    body: Any,
    headers: dict[str, str],
    timeout: float,
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    try:
        status, payload = transport.send(method, route, data, headers, timeout)
    except NO_ANSWER as exc:
        raise EndpointUnreachable(
            f"{url} did not answer {method} {route} ({type(exc).__name__}: {exc}).",
            "Check that the service runs and the URL is right; --timeout gives a slow one longer.",
        ) from None
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload.decode(errors="replace")[:200]
