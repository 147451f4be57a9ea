"""smoke-test's check of traffic capture (the runtime's app/capture.py), for a service it starts
while CAPTURE is set where deployctl runs: each request the contract sent was recorded exactly once,
under the request's X-Request-ID, with the status and the answer the client got.

The service records to its standard output whatever sink CAPTURE names, so that a smoke test writes
nothing to the user's files or topics and the check reads the records from the service's output;
every request is recorded (CAPTURE_SAMPLE=1), refused ones included (CAPTURE_ERRORS=1), so that
"exactly once" holds. CAPTURE_REDACT is kept, and checked: a redacted column holds only the marker.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from deployctl.checks.contract import Check, Exchange
from deployctl.checks.rows import REDACTED

OFF = ("0", "off", "none")  # app/capture.py's OFF: a test checks they agree
SCORING_ROUTES = ("/predict", "/predict_batch", "/invocations")  # and the OIP's .../infer
NAME = "capture: one record per request, with its id and answer"


def requested() -> bool:
    """Whether capture is on where deployctl runs (a service started here inherits it)."""
    where = os.environ.get("CAPTURE", "").strip()
    return bool(where) and where.lower() not in OFF


@contextmanager
def recording_to_stdout() -> Iterator[None]:
    """While in the block, a service started here records every request to its standard output."""
    forced = {"CAPTURE": "stdout", "CAPTURE_SAMPLE": "1", "CAPTURE_ERRORS": "1"}
    saved = {name: os.environ.get(name) for name in forced}
    os.environ.update(forced)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def capture_check(journal: list[Exchange], output: Callable[[], str], seconds: float = 15.0) -> Check:
    """Match the journal's requests with the records on the service's `output` (read again until
    every scoring request has its record: the runtime writes them off the request path)."""
    wanted = {e.request_id for e in journal if _scoring(e)}
    deadline = time.monotonic() + seconds
    records = _records(output())
    while not wanted <= records.keys() and time.monotonic() < deadline:
        time.sleep(0.2)
        records = _records(output())
    redact = {c.strip() for c in os.environ.get("CAPTURE_REDACT", "").split(",") if c.strip()}
    problems = [p for e in journal if (p := _problem(e, records.get(e.request_id, []), redact))]
    detail = f"{len(wanted)} scoring requests, {sum(map(len, records.values()))} records"
    if problems:
        return Check(NAME, False, f"{detail}; {len(problems)} wrong, first: {problems[0]}")
    return Check(NAME, True, detail)


def _scoring(exchange: Exchange) -> bool:
    path = exchange.path.split("?")[0].rstrip("/")
    return exchange.method == "POST" and (path in SCORING_ROUTES or path.endswith("/infer"))


def _records(output: str) -> dict[str, list[dict[str, Any]]]:
    """The capture records among the output's lines, by request id."""
    records: dict[str, list[dict[str, Any]]] = {}
    for line in output.splitlines():
        if line.startswith('{"schema_version"'):
            record = json.loads(line)
            records.setdefault(record["request_id"], []).append(record)
    return records


def _problem(exchange: Exchange, records: list[dict[str, Any]], redact: set[str]) -> str | None:
    """What is wrong with the records of one request, None when they are right."""
    asked = f"{exchange.method} {exchange.path} ({exchange.request_id})"
    if not _scoring(exchange):
        return f"{asked} is not a scoring request but was recorded" if records else None
    if len(records) != 1:
        return f"{asked}: {len(records)} records, expected 1"
    record = records[0]
    if record["status"] != exchange.status:
        return f"{asked}: recorded status {record['status']}, answered {exchange.status}"
    if exchange.status == 200 and record["answer"] != json.loads(exchange.body):
        return f"{asked}: the recorded answer is not the one given"
    if exchange.status != 200 and not record["error"]:
        return f"{asked}: refused ({exchange.status}) but recorded without its error"
    rows = record["input"] or {"columns": [], "rows": []}
    for i, column in enumerate(rows["columns"]):
        if column in redact and any(row[i] != REDACTED for row in rows["rows"]):
            return f"{asked}: column '{column}' is in CAPTURE_REDACT but its values were recorded"
    return None
