"""`--engine onnx`: the model converted to ONNX at generate time, and checked before it is used.

skl2onnx converts scikit-learn models (pipelines with ColumnTransformer, OneHotEncoder, imputers,
scalers included), with one [N, 1] input per signature column, typed as the column (double stays
double, so the graph computes in float64 where its operators allow). The converted model is then
run by onnxruntime on the rows recorded at generate and must agree with MLflow's in-process answers:
labels equal, probabilities (or a regressor's values) within `TOLERANCE`, absolute. Where the
converter fails or the answers disagree, generate refuses, quoting the converter or the worst row,
and suggests the native engine.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from deployctl.errors import DeployctlError, UsageError
from deployctl.expect import Expectations
from deployctl.model import ResolvedModel

TOLERANCE = 1e-5  # |probability (or value) from ONNX - MLflow's in-process one|, on every recorded row
ONNX_FILE = "model.onnx"
NATIVE_HINT = "Generate with --engine native (the default): the model's own library serves it."


def convert(model: ResolvedModel, expectations: Expectations, model_dir: Path) -> dict[str, Any]:
    """Write model_dir/model.onnx, checked against the recorded answers; return the runtime's loader.

    Input typings are tried in order of precision (see `input_typings`): the first whose graph
    converts, loads in onnxruntime and agrees on the recorded rows is kept; else the last reason
    (the converter's, onnxruntime's, or the worst row) is the refusal.
    """
    if model.flavor != "sklearn":
        raise UsageError(
            f"--engine onnx converts scikit-learn models; this one is a '{model.flavor}' model.",
            NATIVE_HINT,
        )
    estimator = _load_sklearn(model)
    failure = ""
    for inputs in input_typings(model):
        try:
            onnx_model = _to_onnx(estimator, inputs)
            (model_dir / ONNX_FILE).write_bytes(onnx_model.SerializeToString())
            worst = check_parity(model_dir / ONNX_FILE, model, expectations)
        except Refused as exc:
            failure = str(exc)
            continue
        loader = {"kind": "onnx", "file": ONNX_FILE, "classes": expectations.classes}
        return {**loader, "tolerance": TOLERANCE, "max_abs_diff": worst}
    (model_dir / ONNX_FILE).unlink(missing_ok=True)
    raise DeployctlError(failure, NATIVE_HINT)


class Refused(Exception):
    """Why one input typing does not serve: the converter's, onnxruntime's or the parity's reason."""


def input_typings(model: ResolvedModel) -> list[list[tuple[str, Any]]]:
    """skl2onnx input declarations, most precise first: one [N, 1] input per column (what a
    ColumnTransformer takes) with doubles as double, then as float (some ONNX operators, e.g. the
    Imputer, exist only for float); for a plain estimator on numbers, one [N, columns] table."""
    require_converter()
    from skl2onnx.common import data_types as types

    kinds = {
        "long": types.Int64TensorType,
        "integer": types.Int64TensorType,
        "boolean": types.BooleanTensorType,
        "string": types.StringTensorType,
        "float": types.FloatTensorType,
    }
    typings = []
    for real in (types.DoubleTensorType, types.FloatTensorType):
        typings.append([(c.name, kinds.get(c.type, real)([None, 1])) for c in model.columns])
    if all(c.type not in ("string", "boolean") for c in model.columns):
        typings += [
            [("X", real([None, len(model.columns)]))]
            for real in (types.DoubleTensorType, types.FloatTensorType)
        ]
    return typings


def require_converter() -> Any:
    """skl2onnx, or a usage error naming what to install: generate calls this before it resolves
    the model, so a missing converter is said in a second, not after the model's download."""
    try:
        import onnxruntime  # noqa: F401
        import skl2onnx
    except ImportError as exc:
        from deployctl.origin import install_extra

        raise UsageError(
            f"--engine onnx needs skl2onnx and onnxruntime where deployctl runs ({exc}).",
            f"{install_extra('onnx', ['skl2onnx', 'onnx', 'onnxruntime'])}, or use --engine native.",
        ) from None
    return skl2onnx


def _load_sklearn(model: ResolvedModel) -> Any:
    import mlflow.sklearn

    return mlflow.sklearn.load_model(str(model.local_path))


def _to_onnx(estimator: Any, inputs: list[tuple[str, Any]]) -> Any:
    skl2onnx = require_converter()
    from sklearn.base import is_classifier

    # probabilities as one [N, classes] tensor, not a list of {class: p} maps
    options = {id(estimator): {"zipmap": False}} if is_classifier(estimator) else None
    try:
        return skl2onnx.to_onnx(estimator, initial_types=inputs, options=options)
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise Refused(
            f"skl2onnx cannot convert this model ({type(estimator).__name__}): "
            f"{type(exc).__name__}: {text[:400]}"
        ) from None


def check_parity(path: Path, model: ResolvedModel, expectations: Expectations) -> float:
    """The largest |difference| over the recorded rows, the model run by the runtime's own ONNX
    code; refuses a label that differs or a larger difference."""
    from deployctl.expect import dataframe

    rows = [case["row"] for case in expectations.cases]
    try:
        onnx_model = _runtime_engine().OnnxModel(path, expectations.classes)
    except Exception as exc:  # a graph onnxruntime cannot run (an operator without a kernel)
        raise Refused(f"onnxruntime cannot run the converted model: {str(exc)[:400]}") from None
    try:
        frame = dataframe(rows, model.columns)
        labels = onnx_model.predict(frame).tolist()
        probas = onnx_model.predict_proba(frame).tolist() if expectations.classes is not None else None
    except Exception as exc:
        raise Refused(f"The ONNX model fails on the recorded rows: {exc}") from None
    diffs = [
        _difference(case, labels[i], probas and probas[i], expectations)
        for i, case in enumerate(expectations.cases)
    ]
    worst_row = max(range(len(diffs)), key=diffs.__getitem__, default=None)
    if worst_row is not None and diffs[worst_row] > TOLERANCE:
        case = expectations.cases[worst_row]
        raise Refused(
            f"The ONNX model disagrees with the model in-process on recorded row {worst_row} "
            f"({case['row']}): {_said(case, labels[worst_row], probas and probas[worst_row])}, "
            f"over the {TOLERANCE:g} allowed."
        )
    return 0.0 if worst_row is None else diffs[worst_row]


def _runtime_engine() -> Any:
    """The serving runtime's onnx_engine module (the artifact's copy of it), loaded from the templates."""
    import importlib.util

    from deployctl.render import templates_root

    spec = importlib.util.spec_from_file_location(
        "deployctl_onnx_engine", templates_root() / "runtime" / "app" / "onnx_engine.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _said(case: dict[str, Any], label: Any, probas: Any) -> str:
    return f"recorded {case['prediction']!r} {case.get('probabilities') or ''}, ONNX {label!r} {probas or ''}"


def _difference(case: dict[str, Any], label: Any, probas: Any, expectations: Expectations) -> float:
    """How far the ONNX answer is from the recorded one (inf for another label)."""
    if expectations.classes is None:  # a regressor: its value
        return abs(float(label) - float(case["prediction"]))
    if label != case["prediction"]:
        return math.inf
    recorded = case.get("probabilities") or {}
    return max((abs(float(p) - recorded[str(c)]) for p, c in zip(probas, expectations.classes)), default=0.0)
