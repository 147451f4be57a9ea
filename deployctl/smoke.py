"""smoke-test: start the built artifact, check it answers as the model did in-process, stop it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from deployctl.expect import same_prediction
from deployctl.manifest import Artifact
from deployctl.process import free_port, request, wait_healthy
from deployctl.targets import get as get_target
from deployctl.targets.base import Check


def run(artifact: Artifact, timeout: float = 120.0) -> list[Check]:
    target = get_target(artifact.target)
    checks = target.extra_checks(artifact)
    if not all(c.ok for c in checks):
        return checks
    service = target.start(artifact, free_port())
    try:
        seconds = wait_healthy(service, timeout)
        checks.append(Check("ready: /health answers 200", True, f"after {seconds:.1f} s"))
        checks += http_checks(artifact, Client(service.base_url))
        checks += target.service_checks(artifact, service.base_url)
        if not service.alive():
            checks.append(Check("service still running", False, service.logs()))
    finally:
        service.stop()
    return checks


class Client:
    """A tiny HTTP client: keeps the smoke test free of extra dependencies."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def call(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, Any, float]:
        """(status, the answer parsed as JSON or its first 200 characters, milliseconds)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        started = time.perf_counter()
        status, payload = self.send(method, path, data)
        ms = (time.perf_counter() - started) * 1000
        try:
            return status, json.loads(payload), ms
        except ValueError:
            return status, payload.decode(errors="replace")[:200], ms

    def send(self, method: str, path: str, data: bytes | None) -> tuple[int, bytes]:
        return request(self.base_url, method, path, data, timeout=30)


def http_checks(artifact: Artifact, client: Client) -> list[Check]:
    """The HTTP contract, checked against the outputs recorded at generate time."""
    model, cases = artifact.model, artifact.smoke_cases
    names = [c["name"] for c in model["columns"]]
    checks = [_check(client, "GET /health", "GET", "/health", None, lambda b: _health(b, model))]
    for i, case in enumerate(cases):
        # the first row goes positionally (signature order), the others keyed by column name
        features = [case["row"][n] for n in names] if i == 0 else case["row"]
        form = "list" if i == 0 else "object"
        checks.append(
            _check(
                client,
                f"POST /predict row {i} ({form})",
                "POST",
                "/predict",
                {"features": features},
                lambda b, c=case: _single(b, c, model),
            )
        )
    rows = [c["row"] for c in cases]
    checks.append(
        _check(
            client,
            f"POST /predict_batch {len(rows)} rows",
            "POST",
            "/predict_batch",
            {"instances": rows},
            lambda b: _batch(b, cases, model),
        )
    )
    split = {"columns": names, "data": [[r[n] for n in names] for r in rows]}
    checks.append(
        _check(
            client,
            "POST /invocations dataframe_split",
            "POST",
            "/invocations",
            {"dataframe_split": split},
            lambda b: _predictions(b, cases),
        )
    )
    checks.append(_expect_4xx(client, "POST /predict malformed JSON", b"{not json"))
    checks.append(_expect_4xx(client, "POST /predict wrong shape", b'{"features": "oops"}'))
    checks.append(
        _check(
            client,
            "GET /health after bad input",
            "GET",
            "/health",
            None,
            lambda b: _health(b, model),
        )
    )
    return checks


def _check(
    client: Client,
    name: str,
    method: str,
    path: str,
    body: Any,
    verify: Callable[[Any], str | None],
) -> Check:
    try:
        status, answer, ms = client.call(method, path, body)
    except OSError as exc:
        return Check(name, False, f"no answer: {exc}")
    if status != 200:
        return Check(name, False, f"HTTP {status}: {answer}", ms)
    problem = verify(answer)
    return Check(name, problem is None, problem or "as recorded", ms)


def _expect_4xx(client: Client, name: str, raw: bytes) -> Check:
    try:
        status, answer, ms = client.call("POST", "/predict", raw=raw)
    except OSError as exc:
        return Check(name, False, f"no answer: {exc}")
    ok = 400 <= status < 500 and isinstance(answer, dict) and "error" in answer
    return Check(name, ok, f"HTTP {status}: {answer}", ms)


def _health(body: Any, model: dict[str, Any]) -> str | None:
    want = {"status": "healthy", "model_name": model["name"], "model_version": model["version"]}
    got = {k: body.get(k) for k in want} if isinstance(body, dict) else body
    return None if got == want else f"expected {want}, got {body}"


def _probability_problem(case: dict[str, Any], model: dict[str, Any], got: Any) -> str | None:
    expected = case.get("probabilities")
    if expected is None:
        return None
    if model["task"] == "binary":
        want: Any = expected[str(model["classes"][1])]
        return None if same_prediction(want, got) else f"probability {got} != recorded {want}"
    if not isinstance(got, dict) or set(got) != set(expected):
        return f"probabilities {got} != recorded {expected}"
    bad = [k for k in expected if not same_prediction(expected[k], got[k])]
    return f"probabilities differ for {bad}: {got} != {expected}" if bad else None


def _single(body: Any, case: dict[str, Any], model: dict[str, Any]) -> str | None:
    if not same_prediction(case["prediction"], body.get("prediction")):
        return f"prediction {body.get('prediction')!r} != recorded {case['prediction']!r}"
    key = "probability" if model["task"] == "binary" else "probabilities"
    return _probability_problem(case, model, body.get(key))


def _batch(body: Any, cases: list[dict[str, Any]], model: dict[str, Any]) -> str | None:
    problem = _predictions(body, cases)
    for case, got in zip(cases, body.get("probabilities") or [None] * len(cases)):
        problem = problem or _probability_problem(case, model, got)
    return problem


def _predictions(body: Any, cases: list[dict[str, Any]]) -> str | None:
    got = body.get("predictions") if isinstance(body, dict) else None
    want = [c["prediction"] for c in cases]
    if not isinstance(got, list) or len(got) != len(want):
        return f"predictions {got} != recorded {want}"
    ok = all(same_prediction(w, g) for w, g in zip(want, got))
    return None if ok else f"predictions {got} != recorded {want}"
