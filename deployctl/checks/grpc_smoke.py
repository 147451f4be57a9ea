"""smoke-test's gRPC checks: ModelMetadata names the artifact's model, version and inputs, and one
Open Inference Protocol ModelInfer of the recorded rows is answered as recorded (the same verdict
as the REST infer check).

The calls are made by the artifact's own client (`app/oip_grpc/probe.py`), run with the artifact's
.venv when it has one (fastapi, built), else with this interpreter if it has grpcio (a docker or
k8s artifact, or one checked at --url without being built here).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from typing import Any

from deployctl.checks.contract import Check, infer_problem, infer_request
from deployctl.errors import UsageError
from deployctl.manifest import Artifact

TIMEOUT = 60.0


def grpc_checks(artifact: Artifact, address: str, headers: dict[str, str] | None = None) -> list[Check]:
    """ModelMetadata, then one ModelInfer of the recorded rows, at `address` (HOST:PORT)."""
    return [grpc_metadata_check(artifact, address, headers), grpc_infer_check(artifact, address, headers)]


def grpc_metadata_check(artifact: Artifact, address: str, headers: dict[str, str] | None = None) -> Check:
    name = "gRPC ModelMetadata"
    answer, error, ms = _probe(artifact, address, headers, ["--metadata"])
    if answer is None:
        return Check(name, False, error, ms, "an answer", "no answer")
    version = str(artifact.model["version"])
    inputs = [
        (t["name"], t["datatype"]) for t in infer_request(artifact.model, artifact.smoke_cases)["inputs"]
    ]
    got = [(t.get("name"), t.get("datatype")) for t in answer.get("inputs", [])]
    if answer.get("name") != artifact.name or version not in answer.get("versions", []):
        want = f"{artifact.name} version {version}"
        got_model = f"{answer.get('name')} versions {answer.get('versions')}"
        return Check(name, False, f"serves {got_model}, not {want}", ms, want, got_model)
    if got != inputs:
        return Check(name, False, f"inputs {got} != the model's {inputs}", ms, str(inputs), str(got))
    return Check(name, True, f"{artifact.name} version {version}, {len(inputs)} inputs", ms)


def grpc_infer_check(artifact: Artifact, address: str, headers: dict[str, str] | None = None) -> Check:
    cases = artifact.smoke_cases
    name = f"gRPC ModelInfer {len(cases)} rows"
    body = {**infer_request(artifact.model, cases), "id": "smoke-test"}
    answer, error, ms = _probe(artifact, address, headers, [], json.dumps(body))
    if answer is None:
        return Check(name, False, error, ms, "an answer", "no answer")
    problem = infer_problem(answer, cases, artifact.model)
    if problem is None:
        return Check(name, True, "as recorded", ms)
    return Check(name, False, problem.detail, ms)


def client_python(artifact: Artifact) -> str | None:
    """The interpreter that runs the artifact's gRPC client: its .venv's, else this one if it can
    import grpc (deployctl does not need grpcio itself), else None."""
    venv = artifact.path / ".venv" / "bin" / "python"
    if venv.exists():
        return str(venv)
    return sys.executable if importlib.util.find_spec("grpc") is not None else None


def probe_python(artifact: Artifact) -> str:
    """client_python, or a usage error saying how to get one."""
    python = client_python(artifact)
    if python is None:
        raise UsageError(
            f"No gRPC client to check {artifact.path} with: it has no .venv and grpcio is not "
            "installed where deployctl runs.",
            "Install grpcio there (pip install 'grpcio>=1.85'), or leave out --grpc.",
        )
    return python


def not_checked() -> Check:
    """What a started service's gRPC port gets when no gRPC client can run here: said, not hidden."""
    return Check(
        "gRPC: not checked",
        True,
        "grpcio is not installed where deployctl runs (pip install 'grpcio>=1.85' to check it)",
    )


def _probe(
    artifact: Artifact, address: str, headers: dict[str, str] | None, args: list[str], stdin: str = ""
) -> tuple[dict[str, Any] | None, str, float | None]:
    """(the probe's JSON answer, or None and why, ms) for one call at `address`."""
    authorization = {k.lower(): v for k, v in (headers or {}).items()}.get("authorization")
    command = [probe_python(artifact), "-m", "app.oip_grpc.probe", address, artifact.name, *args]
    env = {k: v for k, v in os.environ.items() if k != "AUTHORIZATION"}
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            command,
            cwd=artifact.path,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=env | ({"AUTHORIZATION": authorization} if authorization else {}),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"no answer: {exc}", None
    ms = (time.perf_counter() - started) * 1000
    try:
        answer = json.loads(proc.stdout)
    except ValueError:
        return None, f"the gRPC client failed: {proc.stderr.strip()[-300:]}", ms
    if proc.returncode != 0:
        return None, f"{answer.get('code')}: {answer.get('error')}", ms
    return answer, "", ms
