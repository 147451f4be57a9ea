"""Checks on the handler itself: cold start, the contract as REST API (1.0) events, 2.0 event quirks.

The HTTP contract is the one in `deployctl.checks.contract`; here only the transport differs: each request
becomes an API Gateway event handed to the handler, and its reply the answer API Gateway would give.
"""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployctl.checks.contract import Check, Client, http_checks
from deployctl.expect import same_prediction
from deployctl.manifest import Artifact
from deployctl.targets.aws_lambda import emulator
from deployctl.targets.aws_lambda.packaging import DIRECT_UPLOAD_LIMIT, UNZIPPED_LIMIT
from deployctl.targets.shared import MB


def size_check(zip_path: Path) -> Check:
    with zipfile.ZipFile(zip_path) as archive:
        unzipped = sum(i.file_size for i in archive.infolist())
    zipped = zip_path.stat().st_size
    upload = "direct upload" if zipped <= DIRECT_UPLOAD_LIMIT else "upload through S3"
    detail = (
        f"zip {zipped / MB:.1f} MB ({upload}), unzipped {unzipped / MB:.1f} MB of {UNZIPPED_LIMIT // MB} MB"
    )
    return Check("package size within Lambda limits", unzipped <= UNZIPPED_LIMIT, detail)


# -- smoke checks on the handler itself -------------------------------------------------------------


@dataclass(frozen=True)
class EventTransport:
    """A contract `Client`'s transport: each request becomes an API Gateway event (payload "1.0" as
    REST APIs send, "2.0" as HTTP APIs send), handed to the handler; the reply becomes the answer."""

    invoker: emulator.Invoker
    payload: str

    def send(
        self, method: str, path: str, data: bytes | None, headers: dict[str, str], timeout: float
    ) -> tuple[int, bytes]:
        sent = {"Content-Type": "application/json", **headers} if data else dict(headers)
        make = emulator.v1_event if self.payload == "1.0" else emulator.v2_event
        reply = self.invoker.invoke(make(method, path, data or b"", sent))
        status, _, answer = emulator.http_response(reply, self.payload)
        return status, answer


def event_checks(artifact: Artifact, invoker: emulator.Invoker) -> list[Check]:
    """Cold start, the contract as REST API (1.0) events, the 2.0 event quirks, memory."""
    info = invoker.info
    checks = [
        Check(
            "cold start (init)",
            True,
            f"interpreter start + handler import + model load; handler import {info['init_ms']:.0f} ms",
            invoker.startup_ms,
        )
    ]
    client = Client("REST API events", transport=EventTransport(invoker, "1.0"))
    for check in http_checks(artifact, client):
        check.name = f"REST API event: {check.name}"
        checks.append(check)
    checks += v2_checks(artifact, invoker)
    rss = invoker.invoke(emulator.v2_event("GET", "/health")).get("rss_mb", 0)
    memory = artifact.options["memory"]
    checks.append(Check("memory", rss < memory, f"peak RSS {rss} MB of {memory} MB configured"))
    return checks


def v2_checks(artifact: Artifact, invoker: emulator.Invoker) -> list[Check]:
    case = artifact.smoke_cases[0] if artifact.smoke_cases else None
    body = json.dumps({"features": case["row"] if case else {}}).encode()
    headers = {"content-type": "application/json"}
    staged = emulator.v2_event(
        "POST", "/predict", body, headers, stage="prod", route_key="POST /predict", base64_body=True
    )
    not_base64 = emulator.v2_event("POST", "/predict", b"{}", headers)
    not_base64.update(body="%%% not base64", isBase64Encoded=True)
    checks = [
        _event_check(invoker, "HTTP API event: stage prefix + base64 body", staged, 200, case),
        _event_check(invoker, "HTTP API event: invalid base64 -> 400", not_base64, 400),
        _event_check(invoker, "direct invoke, not an HTTP event -> 400", {"features": [1]}, 400),
        _event_check(invoker, "HTTP API event: unknown path -> 404", emulator.v2_event("GET", "/nope"), 404),
    ]
    return checks


def _event_check(
    invoker: emulator.Invoker, name: str, event: dict[str, Any], want: int, case: dict[str, Any] | None = None
) -> Check:
    started = time.perf_counter()
    reply = invoker.invoke(event)
    ms = (time.perf_counter() - started) * 1000
    if not reply.get("ok"):
        return Check(
            name, False, f"the handler raised {reply.get('errorType')}: {reply.get('errorMessage')}", ms
        )
    result = reply["result"]
    try:
        answer = json.loads(result["body"])
    except (KeyError, TypeError, ValueError):
        return Check(name, False, f"not a JSON proxy response: {str(result)[:200]}", ms)
    ok = result.get("statusCode") == want and (want == 200 or "error" in answer)
    if ok and case is not None:
        ok = same_prediction(case["prediction"], answer.get("prediction"))
    return Check(name, ok, f"HTTP {result.get('statusCode')}: {str(answer)[:150]}", ms)
