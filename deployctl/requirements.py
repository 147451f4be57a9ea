"""The pinned requirements.txt of an artifact: the model's own pins, then what serving needs."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version

# Server stacks, pinned to the versions deployctl is tested with.
FASTAPI = (
    "fastapi==0.165.0",
    "uvicorn==0.54.0",
    "uvloop==0.23.0",
    "httptools==0.9.0",
    "orjson==3.13.0",
)
FLASK = ("flask==3.1.3", "gunicorn==26.2.0", "orjson==3.13.0")
# What app/runtime.py imports; pinned to the versions that produced the recorded smoke outputs.
RUNTIME = ("numpy", "pandas")
LOADER_PACKAGES = {"skops": "skops", "cloudpickle": "cloudpickle"}


def package_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ @]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def _pinned_here(package: str) -> str:
    try:
        return f"{package}=={version(package)}"
    except PackageNotFoundError:
        return package


def merge(model_requirements: list[str], loader: dict[str, str], server: tuple[str, ...]) -> list[str]:
    """Model pins win; MLflow itself is dropped when the model loads natively (it is not imported)."""
    native = loader["kind"] != "pyfunc"
    lines = [r for r in model_requirements if not (native and package_name(r) == "mlflow")]
    needed = list(RUNTIME)
    if loader.get("format") in LOADER_PACKAGES:
        needed.append(LOADER_PACKAGES[loader["format"]])
    have = {package_name(r) for r in lines}
    for package in needed:
        if package not in have:
            lines.append(_pinned_here(package))
            have.add(package)
    lines += [r for r in server if package_name(r) not in have]
    return lines
