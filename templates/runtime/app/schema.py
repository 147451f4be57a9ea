"""Validation: a request's rows checked against the model's signature columns, and the model's input
built from them (one array when the column types allow it, else a DataFrame)."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pandas is imported when a DataFrame is built: an ONNX model needs none (cold start)
    import pandas as pd

MAX_BODY_BYTES = int(os.environ.get("MAX_BODY_BYTES", 1024 * 1024))
MAX_BATCH_ROWS = int(os.environ.get("MAX_BATCH_ROWS", 10_000))
# The MLflow signature column types served: the numpy dtype and the Python type of each. The artifact
# never imports deployctl, which keeps the same table (deployctl/columns.py); a test checks they agree.
COLUMN_TYPES: dict[str, tuple[str, type]] = {
    "double": ("float64", float),
    "float": ("float32", float),
    "long": ("int64", int),
    "integer": ("int32", int),
    "boolean": ("bool", bool),
    "string": ("object", str),
}
DTYPES = {name: dtype for name, (dtype, _) in COLUMN_TYPES.items()}
PYTYPES = {name: pytype for name, (_, pytype) in COLUMN_TYPES.items()}


class BadRequest(Exception):
    """A request the service refuses: answered with `status` and {"error": message}."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        error_code: str = "BAD_REQUEST",
        error_class: str = "INVALID_PARAMETER_VALUE",
        sqlstate: str = "KAM00",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        # what `mlflow models serve` answers in its error body on /invocations
        self.error_code = error_code
        self.error_class = error_class
        self.sqlstate = sqlstate

    @classmethod
    def too_large(cls) -> BadRequest:
        return cls(f"the body is over the limit of {MAX_BODY_BYTES} bytes", 413)


Check = Callable[[Any, str, str], Any]


def _as_float(value: Any, name: str, where: str) -> float:
    # type() rather than isinstance: bool is an int subclass and must be refused
    if type(value) is int and abs(value) <= sys.float_info.max:
        value = float(value)
    if type(value) is not float:
        raise BadRequest(f"{where}: '{name}' must be a number, got {_kind(value)}")
    if not math.isfinite(value):
        raise BadRequest(f"{where}: '{name}' must be finite")
    return value


def _int_check(bits: int) -> Check:
    """An integer column's check: its values must fit the column's type (int64 or int32)."""
    limit = 2 ** (bits - 1)

    def check(value: Any, name: str, where: str) -> int:
        if type(value) is float and value.is_integer():
            value = int(value)
        if type(value) is not int:
            raise BadRequest(f"{where}: '{name}' must be an integer, got {_kind(value)}")
        if not -limit <= value < limit:
            raise BadRequest(f"{where}: '{name}' is out of range for a {bits}-bit integer")
        return value

    return check


def _as_bool(value: Any, name: str, where: str) -> bool:
    if type(value) is bool:
        return value
    raise BadRequest(f"{where}: '{name}' must be true or false, got {_kind(value)}")


def _as_str(value: Any, name: str, where: str) -> str:
    if isinstance(value, str):
        return value
    raise BadRequest(f"{where}: '{name}' must be a string, got {_kind(value)}")


CHECKS: dict[str, Check] = {
    "double": _as_float,
    "float": _as_float,
    "long": _int_check(64),
    "integer": _int_check(32),
    "boolean": _as_bool,
    "string": _as_str,
}


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names.update({list: "a list", dict: "an object", type(None): "null"})
    return names.get(type(value), type(value).__name__)


class Schema:
    """Validates JSON rows against the signature's columns and builds the model's input."""

    def __init__(self, columns: list[dict[str, Any]]) -> None:
        self.columns = columns
        self.names = [c["name"] for c in columns]
        self.index = {name: i for i, name in enumerate(self.names)}
        self.checks = [
            (c["name"], CHECKS[c["type"]] if required else _nan_is_missing(CHECKS[c["type"]]), required)
            for c in columns
            for required in [c.get("required", True)]
        ]
        self.all_required = all(required for _, _, required in self.checks)
        self.array_dtype = self._array_dtype()

    def _array_dtype(self) -> np.dtype[Any] | None:
        """The dtype of one array holding every column, or None when only a DataFrame can."""
        types = {c["type"] for c in self.columns}
        if not types or "string" in types:
            return None
        dtype = np.result_type(*(DTYPES[t] for t in types))
        # an optional column left out is NaN, which only a float array can hold
        return dtype if self.all_required or dtype.kind == "f" else None

    def row(self, item: Any, where: str, strict: bool = True) -> list[Any]:
        """One row, given as a list in signature order or as an object keyed by column name."""
        if isinstance(item, list):
            if len(item) != len(self.checks):
                raise BadRequest(
                    f"{where}: expected {len(self.checks)} values in signature order "
                    f"{self.names}, got {len(item)}"
                )
            values = item
        elif isinstance(item, dict):
            unknown = [key for key in item if key not in self.index] if strict else None
            if unknown:
                raise BadRequest(f"{where}: unknown field(s) {unknown}; expected {self.names}")
            values = [item.get(name) for name in self.names]
        else:
            raise BadRequest(f"{where}: expected a list or an object, got {_kind(item)}")
        return [
            check(v, name, where) if v is not None else _missing(name, required, where)
            for v, (name, check, required) in zip(values, self.checks)
        ]

    def rows(self, items: Any, where: str, strict: bool = True) -> list[list[Any]]:
        if type(items) is not list or not items:
            raise BadRequest(f"{where}: expected a non-empty list of rows")
        if len(items) > MAX_BATCH_ROWS:
            raise BadRequest(f"{where}: {len(items)} rows is over the limit of {MAX_BATCH_ROWS}", 413)
        return [self.row(item, f"{where}[{i}]", strict) for i, item in enumerate(items)]

    def array(self, rows: list[list[Any]]) -> np.ndarray[Any, Any]:
        """The rows as one 2-D array (None becomes NaN), as a DataFrame would give it to the model.

        Column-major like a DataFrame's values: with rows in row-major order, BLAS may sum in
        another order and a probability can differ in its last bit from the DataFrame's.
        """
        return np.array(rows, dtype=self.array_dtype, order="F")

    def frame(self, rows: list[list[Any]]) -> pd.DataFrame:
        import pandas as pd

        data = {}
        for i, col in enumerate(self.columns):
            values = [r[i] for r in rows]
            dtype = DTYPES[col["type"]]
            if None in values:  # an optional column left out: NaN for numbers, None for the rest
                dtype = "float64" if dtype not in ("object", "bool") else "object"
                values = [np.nan if v is None and dtype == "float64" else v for v in values]
            data[col["name"]] = np.asarray(values, dtype=dtype)
        return pd.DataFrame(data, columns=self.names)


def _nan_is_missing(check: Check) -> Check:
    """An optional column's check: NaN (what pandas and MLflow's input examples write for a missing
    value) is the value left out, like null. A required column refuses NaN as not finite."""

    def optional(value: Any, name: str, where: str) -> Any:
        if type(value) is float and value != value:
            return None
        return check(value, name, where)

    return optional


def _missing(name: str, required: bool, where: str) -> Any:
    """None for an optional column left out (NaN or None in the model's input); else refused."""
    if required:
        raise BadRequest(f"{where}: '{name}' is required and missing or null")
    return None
