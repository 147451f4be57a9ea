"""lambda: the model as an AWS Lambda function behind API Gateway, packaged as a zip with SAM.

build downloads manylinux wheels for the Lambda runtime's Python and Amazon Linux, unpacks them next
to the handler, strips what is never imported (tests, C sources, stubs), and writes a reproducible
dist/function.zip checked against Lambda's size limits. smoke-test and serve unpack that zip into an
empty dir and run it in a clean interpreter (sys.path = the package + the standard library), with
real API Gateway events and a Lambda context, through deployctl.apigw.

Runtime choice: python3.11 runs on Amazon Linux 2 (glibc 2.26), but current numpy, scipy and
scikit-learn ship only manylinux_2_27/_2_28 wheels, which cannot load there. python3.12 (Amazon
Linux 2023, glibc 2.34) is the closest runtime that runs them, so it is the default. Where no Python
3.12 is installed, build also makes a stand-in zip with the local Python's wheels of the same pinned
versions, which the smoke test runs instead and says so.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Console

from deployctl import apigw, requirements, wheelhouse
from deployctl.errors import BuildFailed, SmokeTestFailed, UsageError
from deployctl.manifest import Artifact, sha256
from deployctl.process import ProcessService
from deployctl.smoke import Client, http_checks
from deployctl.targets.base import Check, Option, Target, require_built

MB = 1024 * 1024
UNZIPPED_LIMIT = 250 * MB  # code + layers, unzipped: a hard Lambda limit
DIRECT_UPLOAD_LIMIT = 50 * MB  # larger zips must be uploaded through S3
# Lambda runtime -> (Python version, glibc of the Amazon Linux it runs on)
RUNTIMES = {"python3.11": ("3.11", 26), "python3.12": ("3.12", 34), "python3.13": ("3.13", 34)}
ROUTES = (
    ("Health", "GET", "/health"),
    ("Predict", "POST", "/predict"),
    ("PredictBatch", "POST", "/predict_batch"),
    ("Invocations", "POST", "/invocations"),
)
# Never imported at run time: test suites, C/Cython sources and headers, type stubs.
STRIP_DIRS = ("tests", "__pycache__")
STRIP_SUFFIXES = (".pyc", ".pyx", ".pxd", ".pxi", ".c", ".cpp", ".h", ".hpp", ".pyi")
STRIP_FILES = ("conftest.py", "RECORD")  # RECORD lists hashes of files we removed
ORJSON = next(r for r in requirements.FLASK if requirements.package_name(r) == "orjson")
LOCAL_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _range(low: int, high: int) -> Callable[[int], str | None]:
    return lambda v: None if low <= v <= high else f"must be between {low} and {high}"


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
            check=_range(128, 10240),
        ),
        Option(
            "timeout",
            30,
            "Timeout in seconds (1-900; an HTTP API waits 30 s at most).",
            int,
            check=_range(1, 900),
        ),
        Option(
            "model_source",
            "bundled",
            "bundled (in the zip) or s3 (downloaded at cold start).",
            choices=("bundled", "s3"),
        ),
        Option("s3_bucket", "", "Bucket holding the model tarball (with --model-source s3)."),
        Option("s3_key", "", "Key of the model tarball (default: <name>/<version>/model.tar.gz)."),
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

    def context(self, base: dict[str, Any]) -> dict[str, Any]:
        key = base["options"]["s3_key"] or default_s3_key(base["model"]["name"], base["model"]["version"])
        return {**base, "s3_key": key, "routes": ROUTES}

    # -- build ------------------------------------------------------------------------------------

    def build(self, artifact: Artifact, console: Console) -> dict[str, Any]:
        started = time.monotonic()
        runtime = artifact.options["runtime"]
        version, _ = RUNTIMES[runtime]
        dist = artifact.path / "dist"
        dist.mkdir(exist_ok=True)
        stand_in_zip(artifact).unlink(missing_ok=True)  # a stale one would shadow a real Python later
        python = find_python(version)
        report = build_zip(artifact, dist / "function.zip", version, python, console)
        check_size(report, console)
        stand_in = None if python else build_stand_in(artifact, console)
        if artifact.options["model_source"] == "s3":
            write_model_tarball(artifact, dist / "model.tar.gz")
        (dist / "build.json").write_text(json.dumps({"function": report, "stand_in": stand_in}, indent=2))
        for step in deploy_steps(artifact):
            console.print(f"Deploy: [bold]{step}[/]")
        return {
            "zip": "dist/function.zip",
            "zipped": f"{report['zip_bytes'] / MB:.1f} MB",
            "unzipped": f"{report['unzipped_bytes'] / MB:.1f} MB",
            "runtime": runtime,
            "precompiled": "yes" if report["precompiled"] else f"no (no Python {version} here)",
            "seconds": round(time.monotonic() - started, 1),
        }

    # -- run locally ------------------------------------------------------------------------------

    def start(self, artifact: Artifact, port: int) -> ProcessService:
        zip_path, python, _ = local_run(artifact)
        options = artifact.options
        if options["model_source"] == "s3":
            require_sdk()
        cmd = [sys.executable, "-I", apigw.WORKER_FILE, "gateway", "--zip", str(zip_path)]
        cmd += ["--python", python, "--port", str(port), "--name", artifact.name]
        cmd += ["--runtime", options["runtime"], "--memory", str(options["memory"])]
        cmd += ["--timeout", str(options["timeout"])]
        if options["model_source"] == "s3":
            cmd.append("--provide-sdk")
        return ProcessService(cmd, artifact.path, port)

    def extra_checks(self, artifact: Artifact) -> list[Check]:
        zip_path, python, how = local_run(artifact)
        if artifact.options["model_source"] == "s3":
            require_sdk()
        checks = [size_check(artifact.path / "dist" / "function.zip"), Check("interpreter", True, how)]
        with (
            tempfile.TemporaryDirectory(prefix="lambda-smoke-") as tmp,
            open(Path(tmp) / "stderr", "w+") as log,
        ):
            task, runtime_paths = apigw.prepare(zip_path, Path(tmp), artifact.options["model_source"] == "s3")
            try:
                invoker = apigw.Invoker(task, python, function_config(artifact, runtime_paths), stderr=log)
            except apigw.InitFailed as exc:
                log.seek(0)
                return [*checks, Check("cold start (init)", False, f"{exc}\n{log.read()[-2000:]}")]
            try:
                checks += event_checks(artifact, invoker)
            finally:
                invoker.close()
        return checks

    def next_steps(self, artifact: Artifact) -> list[str]:
        return [*super().next_steps(artifact), *deploy_steps(artifact)]


# -- packaging --------------------------------------------------------------------------------------


def default_s3_key(name: str, version: str) -> str:
    return f"{name}/{version}/model.tar.gz"


def s3_key(artifact: Artifact) -> str:
    return str(
        artifact.options["s3_key"] or default_s3_key(artifact.model["name"], artifact.model["version"])
    )


def platforms(glibc_minor: int) -> tuple[str, ...]:
    """Every manylinux tag a glibc 2.<minor> x86_64 system runs (pip does not infer older ones)."""
    return (*(f"manylinux_2_{m}_x86_64" for m in range(glibc_minor, 16, -1)), "manylinux2014_x86_64")


def stand_in_zip(artifact: Artifact) -> Path:
    return artifact.path / "dist" / f"local-python{LOCAL_PYTHON}.zip"


def build_stand_in(artifact: Artifact, console: Console) -> dict[str, Any]:
    """The same package with this Python's wheels of the same pins, for local runs only.

    Like the real zip it has no bytecode (that needs the runtime's Python), so its cold start
    stands in for the real one's too."""
    runtime = artifact.options["runtime"]
    console.print(
        f"[yellow]Note:[/] no Python {RUNTIMES[runtime][0]} here to run the {runtime} zip with; building "
        f"a stand-in with Python {LOCAL_PYTHON} wheels of the same pins for smoke-test and serve."
    )
    return build_zip(artifact, stand_in_zip(artifact), LOCAL_PYTHON, None, console)


def build_zip(
    artifact: Artifact, dest: Path, version: str, python: str | None, console: Console
) -> dict[str, Any]:
    """Wheels for (Python `version`, the runtime's glibc) + handler + app + model -> `dest`."""
    runtime = artifact.options["runtime"]
    wheels = download_wheels(artifact, version, RUNTIMES[runtime][1], console)
    with tempfile.TemporaryDirectory(prefix="lambda-pkg-", dir=dest.parent) as tmp:
        package = Path(tmp).resolve()
        with console.status(f"Assembling {dest.name} for Python {version}"):
            for wheel in wheels:
                install_wheel(wheel, package)
            stripped = strip(package)
            copy_app(artifact, package)
        precompiled = python is not None and precompile(artifact, package, python, console)
        unzipped = _size(package)
        if unzipped > UNZIPPED_LIMIT and precompiled:
            console.print("[yellow]Note:[/] with bytecode the package is over the limit; ships without.")
            remove_bytecode(package)
            precompiled, unzipped = False, _size(package)
        if unzipped > UNZIPPED_LIMIT:
            raise too_big(unzipped)
        with console.status(f"Writing {dest.name}"):
            write_zip(package, dest)
    return {
        "path": dest.relative_to(artifact.path).as_posix(),
        "python": version,
        "runtime": runtime,
        "zip_bytes": dest.stat().st_size,
        "unzipped_bytes": unzipped,
        "stripped_bytes": stripped,
        "precompiled": precompiled,
        "sha256": sha256(dest),
    }


def download_wheels(artifact: Artifact, version: str, glibc: int, console: Console) -> list[Path]:
    dest = artifact.path / ".wheelhouse" / f"lambda-py{version}"
    try:
        return wheelhouse.download(
            artifact.path / "requirements.txt",
            dest,
            console,
            python_version=version,
            platforms=platforms(glibc),
        )
    except BuildFailed as exc:
        runtime = artifact.options["runtime"]
        raise BuildFailed(
            f"{exc.message}\n(Lambda {runtime} runs Python {version} on glibc 2.{glibc}.)",
            "Some pinned package has no wheel for this runtime. python3.11 runs on Amazon Linux 2 "
            "(glibc 2.26), too old for current numpy/scipy/scikit-learn wheels: regenerate with "
            "--runtime python3.12, or log the model with versions that ship manylinux2014 wheels.",
        ) from None


def install_wheel(wheel: Path, dest: Path) -> None:
    """Unpack a wheel as pip would into a target dir: importable files only (no scripts, headers)."""
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            parts = info.filename.split("/")
            if info.is_dir() or ".." in parts or info.filename.startswith("/"):
                continue
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue
                parts = parts[2:]
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out)


def strip(package: Path) -> int:
    """Remove what is never imported; strip symbol tables from extension modules. Returns bytes saved."""
    before = _size(package)
    for directory in sorted(
        (p for p in package.rglob("*") if p.is_dir() and p.name in STRIP_DIRS), reverse=True
    ):
        shutil.rmtree(directory, ignore_errors=True)
    for file in list(package.rglob("*")):
        if file.is_file() and (file.suffix in STRIP_SUFFIXES or file.name in STRIP_FILES):
            file.unlink()
    strip_symbols(package)
    return before - _size(package)


def strip_symbols(package: Path) -> None:
    """--strip-unneeded keeps the dynamic symbols that loading needs. Libraries that auditwheel
    vendored into *.libs are left alone: stripping patched ELF files can corrupt them."""
    tool = shutil.which("strip")
    modules = [str(p) for p in package.rglob("*.so") if not p.parent.name.endswith(".libs")]
    if tool and modules:
        subprocess.run([tool, "--strip-unneeded", *modules], capture_output=True, check=False)


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def copy_app(artifact: Artifact, package: Path) -> None:
    """The handler, the runtime, the manifest and (unless it comes from S3) the model."""
    shutil.copy2(artifact.path / "handler.py", package / "handler.py")
    shutil.copy2(artifact.path / "deployctl.json", package / "deployctl.json")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(artifact.path / "app", package / "app", ignore=ignore, dirs_exist_ok=True)
    if artifact.options["model_source"] == "bundled":
        shutil.copytree(artifact.path / "model", package / "model", dirs_exist_ok=True)


def precompile(artifact: Artifact, package: Path, python: str, console: Console) -> bool:
    """Ship bytecode for exactly the modules a cold start imports.

    /var/task is read-only, so without it every cold start compiles numpy, pandas and scikit-learn
    from source (several seconds). Unchecked-hash .pyc files stay valid whatever the file times in
    the zip. Compiling every module instead would cost half as much again in size, for modules that
    are never imported.
    """
    with console.status("Precompiling the modules a cold start imports"):
        listing = package.parent / f"{package.name}.modules"
        listing.write_text("\n".join(imported_modules(artifact, package, python)) + "\n")
        cmd = [python, "-I", "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash"]
        # recorded as /var/task/..., where Lambda unpacks the zip, so tracebacks name real paths
        cmd += ["-s", str(package), "-p", "/var/task", "-i", str(listing)]
        result = subprocess.run(cmd, capture_output=True)
        listing.unlink()
    if result.returncode != 0:  # a package without bytecode rather than with half of it
        remove_bytecode(package)
    return result.returncode == 0


def imported_modules(artifact: Artifact, package: Path, python: str) -> list[str]:
    """The package's .py files that importing the handler (and loading the model) loads."""
    model_copy = package / "model"
    borrowed = not model_copy.exists()
    if borrowed:  # the S3 source: init loads the model, so lend it the bundled copy meanwhile
        shutil.copytree(artifact.path / "model", model_copy)
    function = function_config(artifact, [])
    function.env["MODEL_SOURCE"] = "bundled"
    try:
        invoker = apigw.Invoker(package, python, function, stderr=subprocess.DEVNULL, list_modules=True)
    except apigw.InitFailed as exc:
        raise BuildFailed(
            f"The handler failed to import in a clean Python ({python}):\n{exc}",
            "A requirement is missing from requirements.txt, or the model needs a package it does not list.",
        ) from None
    finally:
        if borrowed:
            shutil.rmtree(model_copy)
    invoker.close()
    return [m for m in invoker.info["modules"] if m.endswith(".py") and Path(m).is_relative_to(package)]


def remove_bytecode(package: Path) -> None:
    for cache in list(package.rglob("__pycache__")):
        shutil.rmtree(cache)


def write_zip(package: Path, dest: Path) -> None:
    """A reproducible zip: sorted entries, fixed times, world-readable modes (Lambda needs them)."""
    partial = dest.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(p for p in package.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(file.relative_to(package).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o100755 if os.access(file, os.X_OK) else 0o100644) << 16
            with file.open("rb") as src, archive.open(info, "w") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    partial.replace(dest)


def write_model_tarball(artifact: Artifact, dest: Path) -> None:
    """deployctl.json + model/ for the S3 model source, reproducible like the zip."""
    files = [
        artifact.path / "deployctl.json",
        *sorted(p for p in (artifact.path / "model").rglob("*") if p.is_file()),
    ]
    with (
        dest.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        for file in files:
            info = tar.gettarinfo(str(file), arcname=file.relative_to(artifact.path).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o644
            with file.open("rb") as fh:
                tar.addfile(info, fh)


def too_big(unzipped: int) -> BuildFailed:
    return BuildFailed(
        f"The package is {unzipped / MB:.0f} MB unzipped, over Lambda's {UNZIPPED_LIMIT // MB} MB limit "
        "for a zip (code and layers together).",
        "Deploy it as a container image Lambda (up to 10 GB), e.g. from the docker target's image; "
        "if the model is the large part, --model-source s3 keeps it out of the zip.",
    )


def check_size(report: dict[str, Any], console: Console) -> None:
    if report["zip_bytes"] > DIRECT_UPLOAD_LIMIT:
        console.print(
            f"[yellow]Note:[/] dist/function.zip is {report['zip_bytes'] / MB:.1f} MB, over the "
            f"{DIRECT_UPLOAD_LIMIT // MB} MB limit for direct upload: `sam deploy` uploads it through "
            "S3 (--resolve-s3), as would `aws lambda update-function-code --s3-bucket ...`."
        )


def deploy_steps(artifact: Artifact) -> list[str]:
    steps = []
    if artifact.options["model_source"] == "s3":
        steps.append(
            f"aws s3 cp {artifact.path}/dist/model.tar.gz s3://{artifact.options['s3_bucket']}/{s3_key(artifact)}"
        )
    steps.append(
        f"sam deploy --template-file {artifact.path}/template.yaml --stack-name {artifact.name} "
        "--resolve-s3 --capabilities CAPABILITY_IAM"
    )
    return steps


# -- local runs -----------------------------------------------------------------------------------


def find_python(version: str) -> str | None:
    """An interpreter of the runtime's Python version: this one, `pythonX.Y` on PATH, or uv's."""
    if version == LOCAL_PYTHON:
        return sys.executable
    candidates = [shutil.which(f"python{version}")]
    uv = shutil.which("uv")
    if uv:
        found = subprocess.run([uv, "python", "find", version], capture_output=True, text=True, check=False)
        candidates.append(found.stdout.strip() if found.returncode == 0 else None)
    probe = "import sys; print('%d.%d' % sys.version_info[:2])"
    for candidate in filter(None, candidates):
        result = subprocess.run([candidate, "-I", "-c", probe], capture_output=True, text=True, check=False)
        if result.returncode == 0 and result.stdout.strip() == version:
            return candidate
    return None


def local_run(artifact: Artifact) -> tuple[Path, str, str]:
    """(zip, interpreter, how) for smoke-test and serve: the real zip when its Python is here."""
    zip_path = artifact.path / "dist" / "function.zip"
    require_built(artifact, zip_path, "dist/function.zip")
    runtime = artifact.options["runtime"]
    version = RUNTIMES[runtime][0]
    python = find_python(version)
    if python:
        return zip_path, python, f"dist/function.zip on Python {version}, as Lambda {runtime}"
    stand_in = stand_in_zip(artifact)
    if not stand_in.is_file():
        raise UsageError(
            f"No Python {version} to run the {runtime} zip with, and no stand-in zip for "
            f"Python {LOCAL_PYTHON}.",
            f"Install Python {version} (as python{version} on PATH), or rebuild: "
            f"`deployctl build {artifact.path}`.",
        )
    return (
        stand_in,
        sys.executable,
        (
            f"STAND-IN: {stand_in.name}, the same package with Python {LOCAL_PYTHON} wheels of the same "
            f"pins, because no Python {version} was found for the {runtime} zip"
        ),
    )


def function_config(artifact: Artifact, runtime_paths: list[str]) -> apigw.Function:
    options = artifact.options
    return apigw.Function(
        name=artifact.name,
        runtime=options["runtime"],
        memory_mb=options["memory"],
        timeout_s=float(options["timeout"]),
        runtime_paths=runtime_paths,
    )


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


class EventClient(Client):
    """smoke.Client's interface, answered by invoking the handler with API Gateway events."""

    def __init__(self, invoker: apigw.Invoker, payload: str) -> None:  # no socket: no super().__init__
        self.invoker, self.payload = invoker, payload

    def send(self, method: str, path: str, data: bytes | None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if data else {}
        make = apigw.v1_event if self.payload == "1.0" else apigw.v2_event
        reply = self.invoker.invoke(make(method, path, data or b"", headers))
        status, _, payload = apigw.http_response(reply, self.payload)
        return status, payload


def event_checks(artifact: Artifact, invoker: apigw.Invoker) -> list[Check]:
    """Cold start, the whole contract as REST API (1.0) events, and the 2.0 event quirks."""
    info = invoker.info
    checks = [
        Check(
            "cold start (init)",
            True,
            f"interpreter start + handler import + model load; handler import {info['init_ms']:.0f} ms",
            invoker.startup_ms,
        )
    ]
    for check in http_checks(artifact, EventClient(invoker, "1.0")):
        check.name = f"REST API event: {check.name}"
        checks.append(check)
    checks += v2_checks(artifact, invoker)
    rss = invoker.invoke(apigw.v2_event("GET", "/health")).get("rss_mb", 0)
    memory = artifact.options["memory"]
    checks.append(Check("memory", rss < memory, f"peak RSS {rss} MB of {memory} MB configured"))
    return checks


def v2_checks(artifact: Artifact, invoker: apigw.Invoker) -> list[Check]:
    case = artifact.smoke_cases[0] if artifact.smoke_cases else None
    body = json.dumps({"features": case["row"] if case else {}}).encode()
    headers = {"content-type": "application/json"}
    staged = apigw.v2_event(
        "POST", "/predict", body, headers, stage="prod", route_key="POST /predict", base64_body=True
    )
    not_base64 = apigw.v2_event("POST", "/predict", b"{}", headers)
    not_base64.update(body="%%% not base64", isBase64Encoded=True)
    checks = [
        _event_check(invoker, "HTTP API event: stage prefix + base64 body", staged, 200, case),
        _event_check(invoker, "HTTP API event: invalid base64 -> 400", not_base64, 400),
        _event_check(invoker, "direct invoke, not an HTTP event -> 400", {"features": [1]}, 400),
        _event_check(invoker, "HTTP API event: unknown path -> 404", apigw.v2_event("GET", "/nope"), 404),
    ]
    return checks


def _event_check(
    invoker: apigw.Invoker, name: str, event: dict[str, Any], want: int, case: dict[str, Any] | None = None
) -> Check:
    from deployctl.expect import same_prediction

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


def require_sdk() -> None:
    """The S3 source uses the runtime's boto3; locally, deployctl lends its own."""
    try:
        import boto3  # noqa: F401
    except ImportError:
        raise SmokeTestFailed(
            "--model-source s3 loads the model with boto3, which Lambda's runtime provides; "
            "running it locally needs boto3 installed next to deployctl.",
            "pip install boto3",
        ) from None
