"""Validation for a tensor signature: a request's examples checked against the model's one unnamed
tensor (its numpy dtype and shape, -1 dims of any length), and the model's input built from them.

The interface is schema.py's `Schema` (row, rows, array, frame), so the scorer and the service do
not care which one the manifest chose (`input_schema`). One example is a nested list of the
tensor's shape without its first (batch) dimension: for shape (-1, 3), `[0.1, 0.2, 0.3]`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .schema import MAX_BATCH_ROWS, BadRequest, Schema
from .schema import _kind as kind_of

# The tensor dtypes served, by numpy kind: the JSON values an element of each may be
KIND_WORDS = {"f": "a number", "i": "an integer", "u": "a non-negative integer", "b": "true or false"}


class TensorSchema:
    """Checks examples of one tensor {"dtype", "shape"} and stacks them into the model's input."""

    def __init__(self, tensor: dict[str, Any]) -> None:
        self.tensor = tensor
        self.dtype = np.dtype(tensor["dtype"])
        self.dims: list[int] = list(tensor["shape"])[1:]  # one example's shape; -1: any length
        self.columns: list[dict[str, Any]] = []
        self.names: list[str] = []
        self.all_required = True
        self.array_dtype: np.dtype[Any] | None = self.dtype
        self.limits = np.iinfo(self.dtype) if self.dtype.kind in "iu" else None
        self.largest = float(np.finfo(self.dtype).max) if self.dtype.kind == "f" else math.inf

    def row(self, item: Any, where: str, strict: bool = True) -> Any:
        """One example, as a nested list of the tensor's shape (less its batch dimension)."""
        return self._checked(item, 0, where)

    def rows(self, items: Any, where: str, strict: bool = True) -> list[Any]:
        if type(items) is not list or not items:
            raise BadRequest(f"{where}: expected a non-empty list of examples")
        if len(items) > MAX_BATCH_ROWS:
            raise BadRequest(f"{where}: {len(items)} examples is over the limit of {MAX_BATCH_ROWS}", 413)
        examples = [self.row(item, f"{where}[{i}]") for i, item in enumerate(items)]
        if len({np.shape(e) for e in examples}) > 1:  # -1 dims: each may differ, but not in a batch
            raise BadRequest(f"{where}: the examples have different shapes; one batch is one tensor")
        return examples

    def array(self, rows: Any) -> np.ndarray[Any, Any]:
        return np.asarray(rows, dtype=self.dtype)

    frame = array  # a tensor model's input is the array, whichever way the scorer asks

    def describe(self) -> str:
        return f"{self.dtype.name} tensor of shape {tuple(self.tensor['shape'])}"

    def _checked(self, item: Any, depth: int, where: str) -> Any:
        if depth == len(self.dims):
            return self._element(item, where)
        if type(item) is not list:
            raise BadRequest(f"{where}: expected a list of {self._length(depth)}, got {kind_of(item)}")
        if self.dims[depth] != -1 and len(item) != self.dims[depth]:
            raise BadRequest(f"{where}: expected {self._length(depth)}, got {len(item)}")
        return [self._checked(value, depth + 1, f"{where}[{i}]") for i, value in enumerate(item)]

    def _length(self, depth: int) -> str:
        size = self.dims[depth]
        return "values" if size == -1 else f"{size} values"

    def _element(self, value: Any, where: str) -> Any:
        kind = self.dtype.kind
        ok = (
            type(value) is bool
            if kind == "b"
            else type(value) is int or (kind == "f" and type(value) is float)
        )
        if not ok:
            raise BadRequest(f"{where}: expected {KIND_WORDS[kind]}, got {kind_of(value)}")
        if kind == "f" and not (math.isfinite(value) and abs(value) <= self.largest):
            raise BadRequest(f"{where}: must be finite and fit {self.dtype.name}")
        if self.limits is not None and not self.limits.min <= value <= self.limits.max:
            raise BadRequest(f"{where}: {value} is out of range for {self.dtype.name}")
        return value


InputSchema = Schema | TensorSchema


def input_schema(model: dict[str, Any]) -> InputSchema:
    """The manifest's model block -> how its requests are validated: columns or one tensor."""
    tensor = model.get("tensor")
    return TensorSchema(tensor) if tensor else Schema(model["columns"])
