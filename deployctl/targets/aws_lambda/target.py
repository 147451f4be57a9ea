"""lambda: the model as an AWS Lambda function behind API Gateway, packaged as a zip with SAM.

Composition: the runtime and lambda template layers, the zip builder (`packaging`), a runner that
starts the local API Gateway and Lambda emulator (`emulator`) on the zip in a clean interpreter, and
checks on the handler itself (`events`): cold start, the contract as REST API events, memory.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Console

from deployctl.checks.contract import Check
from deployctl.errors import UsageError
from deployctl.manifest import Artifact
from deployctl.process import ProcessService, run_until_signalled
from deployctl.targets.aws_lambda import emulator
from deployctl.targets.aws_lambda.events import event_checks, size_check
from deployctl.targets.aws_lambda.local import RUNTIMES, function_config, local_run, require_sdk
from deployctl.targets.aws_lambda.packaging import ZipBuilder, default_s3_key, deploy_steps
from deployctl.targets.base import Option, Target
from deployctl.targets.shared import ENGINE, ORJSON, at_least, in_range

ROUTES = (
    ("Health", "GET", "/health"),
    ("Predict", "POST", "/predict"),
    ("PredictBatch", "POST", "/predict_batch"),
    ("Invocations", "POST", "/invocations"),
    ("Version", "GET", "/version"),  # MLflow's scoring server has it: its clients ask
    ("HealthLive", "GET", "/health/live"),
    ("HealthReady", "GET", "/health/ready"),
    # the Open Inference Protocol v2: GET /v2, its health, the model's metadata; POST .../infer
    ("OpenInference", "GET", "/v2"),
    ("OpenInferenceGet", "GET", "/v2/{proxy+}"),
    ("OpenInferencePost", "POST", "/v2/{proxy+}"),
)
S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# API Gateway takes an https issuer URL (an OpenID Connect provider's) for a JWT authorizer.
JWT_ISSUER = re.compile(r"^https://[^\s/]+(/[^\s]*)?$")
AUTHORIZERS = {"iam": "AWS_IAM", "jwt": "JwtAuthorizer"}  # the HttpApi authorizer of each --auth


class GatewayRunner:
    """The zip behind a local API Gateway (payload 2.0, as the SAM template's HTTP API)."""

    def start(self, artifact: Artifact, port: int) -> ProcessService:
        zip_path, python, _ = local_run(artifact)
        options = artifact.options
        if options["model_source"] == "s3":
            require_sdk()
        cmd = [sys.executable, "-I", emulator.WORKER_FILE, "gateway", "--zip", str(zip_path)]
        cmd += ["--python", python, "--port", str(port), "--name", artifact.name]
        cmd += ["--runtime", options["runtime"], "--memory", str(options["memory"])]
        cmd += ["--timeout", str(options["timeout"])]
        if options["model_source"] == "s3":
            cmd.append("--provide-sdk")
        return ProcessService(cmd, artifact.path, port)

    def serve(self, artifact: Artifact, port: int, console: Console) -> None:
        run_until_signalled(lambda: self.start(artifact, port), console)


def check_auth(values: dict[str, Any]) -> None:
    """--jwt-issuer and --jwt-audience go with --auth jwt, and it needs both."""
    jwt = values["auth"] == "jwt"
    if not jwt and (values["jwt_issuer"] or values["jwt_audience"]):
        raise UsageError(
            "--jwt-issuer and --jwt-audience only apply with --auth jwt.",
            "Add --auth jwt, or drop them to keep AWS_IAM authorization.",
        )
    if jwt and not JWT_ISSUER.match(values["jwt_issuer"]):
        raise UsageError(
            f"--auth jwt needs --jwt-issuer, an https URL; got '{values['jwt_issuer']}'.",
            "E.g. --jwt-issuer https://cognito-idp.REGION.amazonaws.com/POOL_ID",
        )
    if jwt and not values["jwt_audience"].strip(" ,"):
        raise UsageError(
            "--auth jwt needs --jwt-audience: the audience (client id) the tokens are issued for.",
            "E.g. --jwt-audience my-app-client-id (several: comma-separated).",
        )


class LambdaTarget(Target):
    name = "lambda"
    summary = "AWS Lambda function behind API Gateway (zip + SAM template)"
    produces = "handler.py, app/, template.yaml (SAM), events/; build: dist/function.zip"
    layers = ("runtime", "lambda")
    server_requirements = (ORJSON,)
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "runtime",
            "python3.12",
            "Lambda runtime: python3.12/3.13 (Amazon Linux 2023) or python3.11 (Amazon Linux 2, "
            "only for pins with manylinux2014 wheels).",
            choices=tuple(RUNTIMES),
        ),
        Option(
            "memory",
            1024,
            "Memory in MB (128-10240); CPU share grows with it.",
            int,
            check=in_range(128, 10240),
        ),
        Option(
            "timeout",
            30,
            "Timeout in seconds (1-900; an HTTP API waits 30 s at most).",
            int,
            check=in_range(1, 900),
        ),
        Option(
            "model_source",
            "bundled",
            "bundled (in the zip) or s3 (downloaded at cold start).",
            choices=("bundled", "s3"),
        ),
        Option("s3_bucket", "", "Bucket holding the model tarball (with --model-source s3)."),
        Option("s3_key", "", "Key of the model tarball (default: <name>/<version>/model.tar.gz)."),
        Option(
            "auth",
            "iam",
            "Who may call the HTTP API: iam (AWS_IAM, SigV4-signed requests), jwt (a JWT authorizer: "
            "--jwt-issuer, --jwt-audience) or none (anyone on the internet; a warning).",
            choices=("iam", "jwt", "none"),
        ),
        Option("jwt_issuer", "", "With --auth jwt: the token issuer, an https URL (e.g. a Cognito pool's)."),
        Option("jwt_audience", "", "With --auth jwt: the accepted audience(s), comma-separated."),
        Option(
            "throttle_rps",
            50,
            "Requests per second the API stage lets through (steady state; more get 429).",
            int,
            check=at_least(1),
        ),
        Option(
            "throttle_burst", 100, "Requests the API stage lets through in a burst.", int, check=at_least(1)
        ),
        ENGINE,
    )

    def check_options(self, values: dict[str, Any]) -> None:
        super().check_options(values)
        if values["model_source"] == "s3" and not S3_BUCKET.match(values["s3_bucket"]):
            raise UsageError(
                f"--model-source s3 needs a valid --s3-bucket, got '{values['s3_bucket']}'.",
                "Pass the bucket dist/model.tar.gz will be uploaded to, e.g. --s3-bucket my-models.",
            )
        if values["model_source"] == "bundled" and (values["s3_bucket"] or values["s3_key"]):
            raise UsageError(
                "--s3-bucket and --s3-key only apply with --model-source s3.",
                "Add --model-source s3, or drop them to bundle the model in the zip.",
            )
        check_auth(values)

    def warnings(self, options: dict[str, Any]) -> list[str]:
        if options["auth"] != "none":
            return []
        return [
            "--auth none: the HTTP API will answer anyone on the internet once deployed (only stage "
            "throttling limits it). Set AUTH_TOKEN_SHA256 on the function to require a bearer token, "
            "or use --auth iam (the default) or --auth jwt."
        ]

    def context(self, base: dict[str, Any]) -> dict[str, Any]:
        key = base["options"]["s3_key"] or default_s3_key(base["model"]["name"], base["model"]["version"])
        options = base["options"]
        audiences = [a.strip() for a in options["jwt_audience"].split(",") if a.strip()]
        authorizer = AUTHORIZERS.get(options["auth"])
        return {**base, "s3_key": key, "routes": ROUTES, "authorizer": authorizer, "jwt_audiences": audiences}

    builder = ZipBuilder()
    runner = GatewayRunner()

    def extra_checks(self, artifact: Artifact) -> list[Check]:
        """Before the function runs: the package's size, and which interpreter runs it here."""
        _, _, how = local_run(artifact)
        return [size_check(artifact.path / "dist" / "function.zip"), Check("interpreter", True, how)]

    def service_checks(self, artifact: Artifact, base_url: str) -> list[Check]:
        """After the contract over HTTP: the handler itself, invoked with events in a fresh
        execution environment (its cold start, REST API events, HTTP API event quirks, memory)."""
        zip_path, python, _ = local_run(artifact)
        with (
            tempfile.TemporaryDirectory(prefix="lambda-smoke-") as tmp,
            open(Path(tmp) / "stderr", "w+") as log,
        ):
            task, runtime_paths = emulator.prepare(
                zip_path, Path(tmp), artifact.options["model_source"] == "s3"
            )
            try:
                invoker = emulator.Invoker(task, python, function_config(artifact, runtime_paths), stderr=log)
            except emulator.InitFailed as exc:
                log.seek(0)
                return [Check("cold start (init)", False, f"{exc}\n{log.read()[-2000:]}")]
            try:
                return event_checks(artifact, invoker)
            finally:
                invoker.close()

    def next_steps(self, artifact: Artifact) -> list[str]:
        return [*super().next_steps(artifact), *deploy_steps(artifact)]
