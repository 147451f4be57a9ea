"""What several targets share, in one neutral place: units, quantities, pins and option checks.

Quantities use Kubernetes' notation for every target, so one value means the same everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from deployctl import requirements
from deployctl.targets.base import Option

MB = 1024 * 1024
# The JSON encoder every serverless adapter uses, pinned as the REST servers pin it.
ORJSON = next(r for r in requirements.FLASK if requirements.package_name(r) == "orjson")

# --engine: the model's own library (native), or the model converted to ONNX at generate and run
# by onnxruntime without scikit-learn, scipy or the model's other requirements (deployctl/onnx_export.py).
ENGINE = Option(
    "engine",
    "native",
    "native (the model's flavor) or onnx (converted at generate, checked on the recorded rows, "
    "served by onnxruntime: no scikit-learn or scipy in the artifact).",
    choices=("native", "onnx"),
)

MEMORY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
MEMORY_UNITS: dict[str | None, int] = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
MEMORY_UNITS.update({"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40})
CPU = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m)?$")


def memory_bytes(quantity: str) -> int:
    """'512Mi' -> 536870912. Raises ValueError for anything else."""
    match = MEMORY.match(quantity)
    if not match:
        raise ValueError(quantity)
    return int(float(match[1]) * MEMORY_UNITS[match[2]])


def cpu_cores(quantity: str) -> float:
    """'500m' -> 0.5, '2' -> 2.0. Raises ValueError for anything else."""
    match = CPU.match(quantity)
    if not match:
        raise ValueError(quantity)
    return float(match[1]) / (1000 if match[2] else 1)


def check_memory(value: str) -> str | None:
    try:
        ok = memory_bytes(value) >= 32 * 2**20
    except ValueError:
        return f"'{value}' is not a memory quantity; use e.g. 512Mi or 1Gi (Ki/Mi/Gi) or 1G (k/M/G)"
    return None if ok else f"{value} is too little to load a model; give at least 32Mi"


def check_cpu(value: str) -> str | None:
    try:
        ok = cpu_cores(value) >= 0.01
    except ValueError:
        return f"'{value}' is not a CPU quantity; use cores (1, 0.5) or millicores (500m)"
    return None if ok else f"{value} is below the 10m minimum"


def at_least(minimum: int) -> Callable[[int], str | None]:
    return lambda v: None if v >= minimum else f"must be at least {minimum}"


def in_range(low: int, high: int) -> Callable[[int], str | None]:
    return lambda v: None if low <= v <= high else f"must be between {low} and {high}"


def matches(pattern: re.Pattern[str], what: str) -> Callable[[str], str | None]:
    return lambda v: None if pattern.match(v) else f"is not {what}"


def check_workers(value: int) -> str | None:
    return None if value >= 0 else "must be 0 (one per core) or more"
