"""The pinned requirements.txt of an artifact: the model's own pins, then what serving needs."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version

from deployctl.errors import DeployctlError

# Server stacks, pinned to the versions deployctl is tested with.
FASTAPI = (
    "fastapi==0.165.0",
    "uvicorn==0.54.0",
    "uvloop==0.23.0",
    "httptools==0.9.0",
    "orjson==3.13.0",
    # the Open Inference Protocol over gRPC (app/oip_grpc/): grpc.aio, and the runtime of the
    # generated messages (protobuf at least the version that generated them: 7.35)
    "grpcio==1.85.3",
    "protobuf==7.36.2",
)
FLASK = ("flask==3.1.3", "gunicorn==26.2.0", "orjson==3.13.0")
# The streaming consumer: librdkafka's Python client (wheels bundle librdkafka).
KAFKA = ("confluent-kafka==2.16.1", "orjson==3.13.0")
# What app/runtime.py imports; pinned to the versions that produced the recorded smoke outputs.
RUNTIME = ("numpy", "pandas", "prometheus_client")
ONNX_RUNTIME = "onnxruntime"  # --engine onnx: pinned to the version deployctl runs (tested: 1.32)
LOADER_PACKAGES = {"skops": "skops", "cloudpickle": "cloudpickle"}


def package_name(requirement: str) -> str:
    """The normalized (PEP 503) project name a requirement line names."""
    name = re.split(r"[<>=!~;\[ @(]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _pinned_here(package: str) -> str:
    try:
        return f"{package}=={version(package)}"
    except PackageNotFoundError:
        return package


def parse(model_requirements: list[str]) -> list[str]:
    """The model's logged requirement lines, each a PEP 508 requirement, or a DeployctlError.

    requirements.txt is installed by pip and uv into the artifact's venv, image and zip: a line
    that is not a requirement (`-e .`, `--index-url ...`, `-r other.txt`, a bare URL, or two lines
    joined by a line break) would change where and what they install from, so it is refused
    rather than copied. Blank lines and comments are dropped.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    lines = []
    for raw in model_requirements:
        line = raw.strip()
        if not line or (line.startswith("#") and "\n" not in line and "\r" not in line):
            continue
        try:
            Requirement(line)
        except InvalidRequirement as exc:
            raise DeployctlError(
                f"The model's logged requirements hold a line that is not a PEP 508 requirement: "
                f"{line!r} ({str(exc).splitlines()[0]}). deployctl copies only plain requirements "
                "into requirements.txt: no pip options (-e, -r, --index-url...), bare URLs or line breaks.",
                "Log the model with pinned requirements, e.g. mlflow.sklearn.log_model(..., "
                "pip_requirements=['scikit-learn==1.5.2', ...]); a package from a URL is written "
                "'name @ https://...'; a private index is configured in pip.conf or uv.toml "
                "where the artifact is built, not in the model.",
            ) from None
        lines.append(line)
    return lines


# Packages whose wheel loads the system's OpenMP runtime (libgomp.so.1) instead of bundling one,
# as scikit-learn's, xgboost's and torch's wheels do: slim images lack it (Debian's libgomp1).
NEEDS_SYSTEM_OPENMP = ("lightgbm",)


def needs_system_openmp(requirements: list[str]) -> bool:
    """Whether an image for these requirements must install the OpenMP runtime (libgomp1)."""
    return any(package_name(line) in NEEDS_SYSTEM_OPENMP for line in requirements)


def cpu_only(requirements: list[str]) -> list[str]:
    """`xgboost==X` becomes `xgboost-cpu==X` where PyPI has it (Linux, Windows).

    mlflow.xgboost logs `xgboost==X`, whose Linux x86_64 wheel depends on nvidia-nccl-cu12: about
    1.2 GB of GPU libraries in a venv, image or zip that serves on CPU. xgboost-cpu is the same
    library and version (it installs the same `xgboost` module) without them. It has no macOS
    wheel, where xgboost pulls no GPU package: the line keeps `xgboost` there, by marker.
    """
    from packaging.requirements import Requirement

    out: list[str] = []
    for line in requirements:
        if package_name(line) == "torch":
            out += [t for t in _cpu_torch(line) if t not in out]
            continue
        if package_name(line) != "xgboost":
            if line not in out:
                out.append(line)
            continue
        req = Requirement(line)
        marker = f"({req.marker}) and " if req.marker else ""
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        for name, platform in (("xgboost-cpu", '!= "darwin"'), ("xgboost", '== "darwin"')):
            lines = f"{name}{extras}{req.specifier}; {marker}sys_platform {platform}"
            if lines not in out:
                out.append(lines)
    # MLflow may log xgboost-cpu itself beside xgboost (as it does where xgboost-cpu is installed)
    cpu = [r for r in out if package_name(r) == "xgboost-cpu"]
    if any(";" in r for r in cpu):
        out = [r for r in out if not (package_name(r) == "xgboost-cpu" and ";" not in r)]
    return out


def _cpu_torch(line: str) -> list[str]:
    """`torch==X` becomes `torch==X+cpu` on Linux, where PyPI's `torch==X` is the CUDA build (GBs
    of GPU libraries). The +cpu wheel comes from PyTorch's CPU index or a wheel directory
    (pip's find-links), configured where the artifact is built; macOS and Windows keep `torch==X`
    (their PyPI wheels are CPU builds). Any other pin (a range, a local label) is kept as is."""
    from packaging.requirements import Requirement

    req = Requirement(line)
    pins = list(req.specifier)
    if len(pins) != 1 or pins[0].operator != "==" or "+" in pins[0].version or "*" in pins[0].version:
        return [line]
    marker = f"({req.marker}) and " if req.marker else ""
    version = pins[0].version
    return [
        f'torch=={version}+cpu; {marker}sys_platform == "linux"',
        f'torch=={version}; {marker}sys_platform != "linux"',
    ]


def merge(model_requirements: list[str], loader: dict[str, str], server: tuple[str, ...]) -> list[str]:
    """Model pins win; MLflow itself is dropped when the model loads natively (it is not imported).

    An ONNX model (--engine onnx) imports none of the model's libraries: only the runtime's
    packages keep the model's pins (numpy, pandas), and onnxruntime runs the model.
    """
    native = loader["kind"] != "pyfunc"
    parsed = cpu_only(parse(model_requirements))
    lines = [r for r in parsed if not (native and package_name(r) == "mlflow")]
    needed = list(RUNTIME)
    if loader["kind"] == "onnx":
        lines = [r for r in lines if package_name(r) in RUNTIME]
        needed.append(ONNX_RUNTIME)
    if loader.get("format") in LOADER_PACKAGES:
        needed.append(LOADER_PACKAGES[loader["format"]])
    have = {package_name(r) for r in lines}
    for package in needed:
        if package not in have:
            lines.append(_pinned_here(package))
            have.add(package)
    lines += [r for r in server if package_name(r) not in have]
    return lines
