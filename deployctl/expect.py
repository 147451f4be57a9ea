"""Record what the model answers in-process, through MLflow's own loaders, at generate time.

The smoke test later checks that the deployed service gives the same answers. The service loads
the model with its own code (app/runtime.py), so the comparison is between two independent paths.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import struct
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from deployctl.columns import COLUMN_DTYPES, PLACEHOLDERS
from deployctl.errors import DeployctlError
from deployctl.model import Column, ResolvedModel
from deployctl.render import templates_root

MAX_CASES = 5
# Native flavors whose labels are recorded through MLflow's pyfunc loader (what `mlflow models
# serve` answers), and only the probabilities through the flavor's own loader.
PYFUNC_LABELS = ("lightgbm", "xgboost")


@dataclass
class Expectations:
    task: str  # "binary", "multiclass" or "regression" (anything without class probabilities)
    classes: list[Any] | None
    prediction_type: str
    cases: list[dict[str, Any]] = field(default_factory=list)


def record_expectations(model: ResolvedModel) -> Expectations:
    rows = model.example_rows[:MAX_CASES] or [_placeholder(model)]
    frame = dataframe(rows, model.columns) if model.tensor is None else _tensor(rows, model.tensor)
    estimator = _load(model)
    labeller = _load(model, pyfunc=True) if model.flavor in PYFUNC_LABELS else estimator
    try:
        labels = runtime_module("outputs").per_row(labeller.predict(frame), len(rows))
        has_proba = hasattr(estimator, "predict_proba") and hasattr(estimator, "classes_")
        probas = estimator.predict_proba(frame).tolist() if has_proba else None
    except Exception as exc:
        source = "its input example" if model.example_rows else "placeholder rows (no input example)"
        raise DeployctlError(
            f"The model failed to predict on {source}: {exc}",
            "Log the model with input_example=X[:5] so deployctl has real rows to test with.",
        ) from exc
    classes = runtime_module("outputs").plain(estimator.classes_) if probas is not None else None
    task = "regression" if classes is None else ("binary" if len(classes) == 2 else "multiclass")
    cases = []
    for i, row in enumerate(rows):
        case: dict[str, Any] = {"row": row, "prediction": labels[i]}
        if probas is not None and classes is not None:
            case["probabilities"] = dict(zip(map(str, classes), probas[i]))
        cases.append(case)
    return Expectations(task, classes, _type_name(labels), cases)


@functools.cache
def runtime_module(name: str) -> ModuleType:
    """A pure module of the serving runtime (app/NAME.py: no relative imports), loaded from the
    templates: deployctl then records and checks answers with the very code the service runs
    (outputs.py turns predictions into JSON, oip_types.py names OIP datatypes)."""
    path = templates_root() / "runtime" / "app" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"deployctl_runtime_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(model: ResolvedModel, pyfunc: bool = False) -> Any:
    """The model through MLflow's loader for its flavor (native object), or its pyfunc wrapper."""
    import mlflow.pyfunc

    try:
        if model.flavor != "python_function" and not pyfunc:
            flavor = importlib.import_module(f"mlflow.{model.flavor}")
            return flavor.load_model(str(model.local_path))
        return mlflow.pyfunc.load_model(str(model.local_path))
    except Exception as exc:
        raise DeployctlError(
            f"MLflow could not load the model {model.uri}: {exc}",
            "Check that this environment has the model's requirements (its requirements.txt).",
        ) from exc


def _placeholder(model: ResolvedModel) -> Any:
    """A row of zeros: of each column's type, or of the tensor's shape (a -1 dim of length 1)."""
    if model.tensor is None:
        return {c.name: PLACEHOLDERS[c.type] for c in model.columns}
    import numpy as np

    dims = [1 if d == -1 else d for d in model.tensor["shape"][1:]]
    return np.zeros(dims, dtype=model.tensor["dtype"]).tolist()


def _tensor(rows: list[Any], tensor: dict[str, Any]) -> Any:
    import numpy as np

    return np.asarray(rows, dtype=tensor["dtype"])


def dataframe(rows: list[dict[str, Any]], columns: list[Column]) -> Any:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=[c.name for c in columns])
    return frame.astype({c.name: COLUMN_DTYPES[c.type] for c in columns if frame[c.name].notna().all()})


def _type_name(labels: list[Any]) -> str:
    kinds = {type(v) for v in labels}
    if kinds <= {bool}:
        return "bool"
    if kinds <= {int}:
        return "int"
    if kinds <= {int, float}:
        return "float"
    if kinds <= {str}:
        return "str"
    return "Any"


def _is_float32(value: float) -> bool:
    """Whether a float is exactly a float32 value (what a float32 model output becomes in JSON)."""
    try:
        return bool(struct.unpack("f", struct.pack("f", value))[0] == value) and value != int(value)
    except (OverflowError, ValueError):  # too large for float32, or inf/NaN
        return False


def same_prediction(expected: Any, got: Any, tolerance: float = 1e-12) -> bool:
    """Labels equal exactly; numbers within 1e-9 relative (JSON round trip of a float is exact);
    several outputs (an object per row) or a tensor row (a list) compared value by value; or
    `tolerance` absolute (an ONNX model's: `onnx_export.TOLERANCE`)."""
    if isinstance(expected, float) and isinstance(got, (int, float)):
        # a float32 output (a torch or Keras model's) holds ~7 digits: one build of the library
        # (its BLAS) and a batch of another size may differ in the last few bits
        rel = 1e-5 if _is_float32(expected) and _is_float32(got) else 1e-9
        return math.isclose(expected, got, rel_tol=rel, abs_tol=tolerance)
    if isinstance(expected, dict) and isinstance(got, dict):
        return expected.keys() == got.keys() and all(
            same_prediction(expected[k], got[k], tolerance) for k in expected
        )
    if isinstance(expected, list) and isinstance(got, list):
        return len(expected) == len(got) and all(
            same_prediction(e, g, tolerance) for e, g in zip(expected, got)
        )
    return bool(expected == got)
