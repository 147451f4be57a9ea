"""Record what the model answers in-process, through MLflow's own loaders, at generate time.

The smoke test later checks that the deployed service gives the same answers. The service loads
the model with its own code (app/runtime.py), so the comparison is between two independent paths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from deployctl.columns import COLUMN_DTYPES, PLACEHOLDERS
from deployctl.errors import DeployctlError
from deployctl.model import Column, ResolvedModel

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
    rows = model.example_rows[:MAX_CASES] or [{c.name: PLACEHOLDERS[c.type] for c in model.columns}]
    frame = dataframe(rows, model.columns)
    estimator = _load(model)
    labeller = _load(model, pyfunc=True) if model.flavor in PYFUNC_LABELS else estimator
    try:
        labels = _plain(labeller.predict(frame))
        has_proba = hasattr(estimator, "predict_proba") and hasattr(estimator, "classes_")
        probas = estimator.predict_proba(frame).tolist() if has_proba else None
    except Exception as exc:
        source = "its input example" if model.example_rows else "placeholder rows (no input example)"
        raise DeployctlError(
            f"The model failed to predict on {source}: {exc}",
            "Log the model with input_example=X[:5] so deployctl has real rows to test with.",
        ) from exc
    classes = _plain(estimator.classes_) if probas is not None else None
    task = "regression" if classes is None else ("binary" if len(classes) == 2 else "multiclass")
    cases = []
    for i, row in enumerate(rows):
        case: dict[str, Any] = {"row": row, "prediction": labels[i]}
        if probas is not None and classes is not None:
            case["probabilities"] = dict(zip(map(str, classes), probas[i]))
        cases.append(case)
    return Expectations(task, classes, _type_name(labels), cases)


def _load(model: ResolvedModel, pyfunc: bool = False) -> Any:
    """The model through MLflow's loader for its flavor (native object), or its pyfunc wrapper."""
    import importlib

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


def dataframe(rows: list[dict[str, Any]], columns: list[Column]) -> Any:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=[c.name for c in columns])
    return frame.astype({c.name: COLUMN_DTYPES[c.type] for c in columns if frame[c.name].notna().all()})


def _plain(values: Any) -> list[Any]:
    if hasattr(values, "to_numpy"):
        values = values.to_numpy()
    values = values.tolist() if hasattr(values, "tolist") else list(values)
    if values and isinstance(values[0], list) and len(values[0]) == 1:
        values = [v[0] for v in values]  # a one-column output frame
    return values


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


def same_prediction(expected: Any, got: Any, tolerance: float = 1e-12) -> bool:
    """Labels equal exactly; numbers within 1e-9 relative (JSON round trip of a float is exact), or
    `tolerance` absolute (an ONNX model's: `onnx_export.TOLERANCE`)."""
    if isinstance(expected, float) and isinstance(got, (int, float)):
        return math.isclose(expected, got, rel_tol=1e-9, abs_tol=tolerance)
    return bool(expected == got)
