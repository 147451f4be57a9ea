"""flask and fastapi: the model as a REST service in a virtual environment inside the artifact.

Both are the same composition: the runtime layer plus their server layer, the venv builder, and a
process runner for `.venv/bin/python -m app`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import ClassVar

from deployctl import requirements
from deployctl.manifest import Artifact
from deployctl.targets.base import Option, Target
from deployctl.targets.builders import VenvBuilder
from deployctl.targets.runners import ProcessRunner
from deployctl.targets.shared import ENGINE, check_workers

WORKERS = Option("workers", 0, "Worker processes for `serve` (0: one per core).", int, check=check_workers)
PRODUCES = "app/ (runtime + server), requirements.txt, a .venv after build"


def _serve_env(artifact: Artifact) -> dict[str, str]:
    return {"WORKERS": str(artifact.options["workers"] or os.environ.get("WORKERS", ""))}


VENV = VenvBuilder()
# `python -m app` from the artifact's .venv; one worker for the smoke test, --workers for serve
APP = ProcessRunner((".venv/bin/python", "-m", "app"), ".venv", {"WORKERS": "1"}, _serve_env)
FASTAPI_APP = replace(APP, grpc=True)  # uvicorn with the OIP gRPC service beside it


class FastAPITarget(Target):
    name = "fastapi"
    summary = "REST API on FastAPI + uvicorn, typed OpenAPI docs from the signature"
    produces = PRODUCES
    serves_grpc = True
    layers: ClassVar[tuple[str, ...]] = ("runtime", "fastapi")
    options: ClassVar[tuple[Option, ...]] = (WORKERS, ENGINE)
    server_requirements = requirements.FASTAPI
    builder = VENV
    runner = FASTAPI_APP


class FlaskTarget(Target):
    name = "flask"
    summary = "REST API on Flask + gunicorn"
    produces = PRODUCES
    layers: ClassVar[tuple[str, ...]] = ("runtime", "flask")
    options: ClassVar[tuple[Option, ...]] = (WORKERS, ENGINE)
    server_requirements = requirements.FLASK
    builder = VENV
    runner = APP
