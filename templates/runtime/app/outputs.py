"""A model's predictions as JSON values: the one place that decides their shape.

deployctl's smoke-test recorder (deployctl/expect.py) loads this very file, so what it records
and what the service answers cannot disagree. Only numpy is imported here: pandas only where the
model returned a pandas object (an ONNX model's runtime carries no pandas).

- `per_row` (/predict, /predict_batch): one JSON value per input row. A single output (a 1-D
  array, a Series, a one-column DataFrame or (n, 1) array) gives one value per row; several
  outputs give an object per row: a DataFrame's columns, or a dict of equally long arrays, by
  name ({"sum": 4.0, "diff": -2.0}); a 2-D array's rows stay lists (a tensor output row).
  A dict of one array is one output too.
- `as_mlflow` (/invocations): what MLflow's scoring server writes under "predictions"
  (`predictions_to_json`): a DataFrame or Series as records, an array as nested lists, a dict of
  arrays as a dict of lists, numpy scalars as Python ones.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np


def _is_pandas(value: Any, name: str) -> bool:
    """isinstance(value, pandas.<name>) without importing pandas when the model did not."""
    cls = getattr(sys.modules.get("pandas"), name, None)
    return cls is not None and isinstance(value, cls)


def per_row(values: Any, rows: int | None = None) -> list[Any]:
    """One JSON value per row; `rows` (when known) checks a dict of outputs has one per row."""
    if _is_pandas(values, "DataFrame"):
        if values.shape[1] == 1:
            return plain(values.iloc[:, 0].to_numpy())
        return plain(values.to_dict(orient="records"))
    if isinstance(values, dict):
        columns = {str(k): plain(v) for k, v in values.items()}
        lengths = {len(v) if isinstance(v, list) else -1 for v in columns.values()}
        if len(lengths) != 1 or -1 in lengths or (rows is not None and lengths != {rows}):
            raise ValueError(f"the model's outputs {list(columns)} do not hold one value per row")
        if len(columns) == 1:
            return next(iter(columns.values()))
        return [dict(zip(columns, row)) for row in zip(*columns.values())]
    if _is_pandas(values, "Series"):
        values = values.to_numpy()
    if isinstance(values, np.ndarray) and values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    converted = plain(values)
    return converted if isinstance(converted, list) else [converted]


def as_mlflow(values: Any) -> Any:
    """The "predictions" MLflow's scoring server answers for this model output."""
    if _is_pandas(values, "DataFrame"):
        return plain(values.to_dict(orient="records"))
    if _is_pandas(values, "Series"):
        return plain(values.to_frame().to_dict(orient="records"))
    return plain(values)


def from_mlflow(predictions: Any) -> Any:
    """/invocations' "predictions" read back as `per_row` gives them (the smoke test compares
    them with the recorded per-row predictions): a dict of lists and one-output records or
    rows ({"y": 1.0} or [1.0] each) become one value per row."""
    if isinstance(predictions, dict):
        return per_row(predictions)
    if isinstance(predictions, list) and predictions:
        if all(isinstance(p, dict) and len(p) == 1 for p in predictions):
            return [next(iter(p.values())) for p in predictions]
        if all(isinstance(p, list) and len(p) == 1 for p in predictions):
            return [p[0] for p in predictions]
    return predictions


def plain(value: Any) -> Any:
    """numpy arrays and scalars (in lists and dicts too) as Python lists and scalars."""
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()] if value.dtype == object else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
