"""smoke-test's gRPC check: one Open Inference Protocol ModelInfer of the recorded rows over gRPC,
answered as recorded (the same verdict as the REST infer check).

The call is made by the artifact's own client (`app/oip_grpc/probe.py`, run with the artifact's
.venv): the environment that has grpcio and the generated messages, which deployctl's need not.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

from deployctl.checks.contract import Check, infer_problem, infer_request
from deployctl.manifest import Artifact

TIMEOUT = 60.0


def grpc_infer_check(artifact: Artifact, address: str, headers: dict[str, str] | None = None) -> Check:
    cases = artifact.smoke_cases
    name = f"gRPC ModelInfer {len(cases)} rows"
    body = {**infer_request(artifact.model, cases), "id": "smoke-test"}
    authorization = {k.lower(): v for k, v in (headers or {}).items()}.get("authorization")
    command = [
        str(artifact.path / ".venv" / "bin" / "python"),
        "-m",
        "app.oip_grpc.probe",
        address,
        artifact.name,
    ]
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            command,
            cwd=artifact.path,
            input=json.dumps(body),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env={k: v for k, v in os.environ.items() if k != "AUTHORIZATION"}
            | ({"AUTHORIZATION": authorization} if authorization else {}),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check(name, False, f"no answer: {exc}", None, "an answer", "no answer")
    ms = (time.perf_counter() - started) * 1000
    try:
        answer = json.loads(proc.stdout)
    except ValueError:
        return Check(name, False, f"the gRPC client failed: {proc.stderr.strip()[-300:]}", ms)
    if proc.returncode != 0:
        return Check(
            name, False, f"{answer.get('code')}: {answer.get('error')}", ms, "OK", answer.get("code")
        )
    problem = infer_problem(answer, cases, artifact.model)
    if problem is None:
        return Check(name, True, "as recorded", ms)
    return Check(name, False, problem.detail, ms)
