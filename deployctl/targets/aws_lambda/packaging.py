"""The Lambda zip: manylinux wheels for the runtime, unpacked next to the handler, stripped, zipped.

build downloads manylinux wheels for the Lambda runtime's Python and Amazon Linux, unpacks them next
to the handler, strips what is never imported (tests, C sources, stubs), precompiles what a cold
start imports, and writes a reproducible dist/function.zip checked against Lambda's size limits.

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
import shutil
import subprocess
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from rich.console import Console

from deployctl import wheelhouse
from deployctl.errors import BuildFailed, interruptible
from deployctl.manifest import Artifact, sha256
from deployctl.targets.aws_lambda import emulator
from deployctl.targets.aws_lambda.local import (
    LOCAL_PYTHON,
    RUNTIMES,
    find_python,
    function_config,
    stand_in_zip,
)
from deployctl.targets.shared import MB

UNZIPPED_LIMIT = 250 * MB  # code + layers, unzipped: a hard Lambda limit
DIRECT_UPLOAD_LIMIT = 50 * MB  # larger zips must be uploaded through S3
# Never imported at run time: test suites, C/Cython sources and headers, type stubs.
STRIP_DIRS = ("tests", "__pycache__")
STRIP_SUFFIXES = (".pyc", ".pyx", ".pxd", ".pxi", ".c", ".cpp", ".h", ".hpp", ".pyi")
STRIP_FILES = ("conftest.py", "RECORD")  # RECORD lists hashes of files we removed
# onnxruntime (--engine onnx) ships its C API library beside the Python binding, which does not load
# it (the binding has the runtime built in: no NEEDED entry, no Python code opens it): 35 MB
# unzipped, 13 MB zipped. Its model-tooling subpackages are never imported by an InferenceSession.
STRIP_GLOBS = (
    "onnxruntime/capi/libonnxruntime.so*",
    "onnxruntime/transformers",
    "onnxruntime/quantization",
    "onnxruntime/tools",
)


class ZipBuilder:
    """dist/function.zip (and a stand-in for local runs where the runtime's Python is missing)."""

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
            tarball = dist / "model.tar.gz"
            with interruptible(lambda: remove_partial_tarball(tarball)):
                write_model_tarball(artifact, tarball)
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


def default_s3_key(name: str, version: str) -> str:
    return f"{name}/{version}/model.tar.gz"


def s3_key(artifact: Artifact) -> str:
    return str(
        artifact.options["s3_key"] or default_s3_key(artifact.model["name"], artifact.model["version"])
    )


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
    with (
        interruptible(lambda: zip_left(artifact, dest)),
        tempfile.TemporaryDirectory(prefix="lambda-pkg-", dir=dest.parent) as tmp,
    ):
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
            platforms=wheelhouse.manylinux_platforms("x86_64", glibc),
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
    for path in (p for pattern in STRIP_GLOBS for p in package.glob(pattern)):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
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
        invoker = emulator.Invoker(package, python, function, stderr=subprocess.DEVNULL, list_modules=True)
    except emulator.InitFailed as exc:
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


def zip_left(artifact: Artifact, dest: Path) -> str:
    """What a Ctrl-C while making `dest` leaves: the package was being assembled in a temporary
    folder, which goes with it, and `dest` is replaced only once complete (write_zip)."""
    shown = dest.relative_to(artifact.path)
    state = "is still the last build's" if dest.exists() else "was not written"
    return f"{shown} {state}; the package being assembled in a temporary folder was removed"


def write_zip(package: Path, dest: Path) -> None:
    """A reproducible zip: sorted entries, fixed times, world-readable modes (Lambda needs them)."""
    partial = dest.with_suffix(".partial")
    try:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(p for p in package.rglob("*") if p.is_file()):
                info = zipfile.ZipInfo(file.relative_to(package).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = (0o100755 if os.access(file, os.X_OK) else 0o100644) << 16
                with file.open("rb") as src, archive.open(info, "w") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
    except BaseException:  # Ctrl-C, a full disk: half a zip must not stay beside the real one
        partial.unlink(missing_ok=True)
        raise
    partial.replace(dest)


def remove_partial_tarball(tarball: Path) -> str:
    tarball.unlink(missing_ok=True)  # written in place: a half one must not be uploaded
    return f"the half-written dist/{tarball.name} was removed"


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
