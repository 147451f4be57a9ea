"""Inference parameters: the model's ParamSchema (its signature's `params`), checked per request.

Each param is {"name", "type", "shape", "default"} in the manifest: a scalar (shape null) or a 1-D
list (shape [-1]) of one of the column types (schema.py). A value is accepted as MLflow accepts it
(`mlflow.models.utils._enforce_params_schema`): the exact JSON type, or an integer for a float or
double param (made a float); no other conversion. A param left out takes its default.

- `/invocations` (`Params.mlflow`): as `mlflow models serve`: unknown names are ignored, null is
  passed to the model as None, a bad value is MLflow's 400 INVALID_PARAMETER_VALUE.
- `/predict` and `/predict_batch` (`Params.strict`): the typed contract: unknown names, null and
  non-finite numbers are refused too, with a 400 naming the param.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from .schema import PYTYPES, BadRequest
from .schema import _kind as kind_of

# MLflow's param types served are its column types; a value of each is of the column's JSON type
PARAM_TYPES = PYTYPES
TYPE_WORDS = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}


class ParamError(ValueError):
    """One param's value is refused: the message says why, without the param's name."""


def invalid_params(message: str) -> BadRequest:
    """MLflow's MlflowException.invalid_parameter_value, as its scoring server answers it."""
    return BadRequest(message, 400, "INVALID_PARAMETER_VALUE", "INVALID_PARAMETER_VALUE", "KAM00")


class Params:
    """The model's params: validates a request's `params` object into what model.predict gets."""

    def __init__(self, specs: list[dict[str, Any]]) -> None:
        self.specs = {spec["name"]: spec for spec in specs}
        self.defaults = {spec["name"]: spec["default"] for spec in specs}

    def __bool__(self) -> bool:
        return bool(self.specs)

    def strict(self, given: Any, where: str = "params") -> dict[str, Any] | None:
        """/predict's params: every name known, every value of its type; None without a schema."""
        if given is None:
            return dict(self.defaults) if self.specs else None
        if type(given) is not dict:
            raise BadRequest(f"{where}: expected an object of params, got {kind_of(given)}")
        unknown = [name for name in given if name not in self.specs]
        if unknown:
            known = sorted(self.specs) or "none (the model takes no params)"
            raise BadRequest(f"{where}: unknown param(s) {unknown}; the model's params: {known}")
        values = dict(self.defaults)
        for name, value in given.items():
            try:
                values[name] = _checked(value, self.specs[name], strict=True)
            except ParamError as exc:
                raise BadRequest(f"{where}: '{name}' {exc}") from None
        return values or None

    def mlflow(self, given: Any) -> dict[str, Any] | None:
        """/invocations' params, as MLflow enforces them: unknown names dropped, defaults added."""
        if not self.specs:  # MLflow ignores params a model does not declare (with a warning)
            return None
        if given is None:
            given = {}
        if not isinstance(given, dict):
            raise invalid_params(f"Parameters must be a dictionary. Got type '{type(given).__name__}'.")
        values = dict(self.defaults)
        invalid = []
        for name, spec in self.specs.items():
            if name not in given:
                continue
            try:
                values[name] = _checked(given[name], spec, strict=False)
            except ParamError as exc:
                invalid.append((name, f"{describe(spec)}: {exc}"))
        if invalid:
            raise invalid_params(f"Invalid parameters found: {invalid!r}")
        return values


def describe(spec: dict[str, Any]) -> str:
    """A param as MLflow writes a ParamSpec: `'factor': double (default: 2.0)`."""
    shape = f" (shape: {tuple(spec['shape'])})" if spec["shape"] is not None else ""
    return f"'{spec['name']}': {spec['type']} (default: {spec['default']}){shape}"


def _checked(value: Any, spec: dict[str, Any], strict: bool) -> Any:
    if spec["shape"] is None:
        return _scalar(value, spec["type"], strict)
    if type(value) is not list or any(isinstance(v, list) for v in value):
        got = "a nested list" if type(value) is list else kind_of(value)
        raise ParamError(f"must be a 1-D list (shape (-1,)), got {got}")
    return [_scalar(v, spec["type"], strict) for v in value]


def _scalar(value: Any, type_name: str, strict: bool) -> Any:
    expected = PARAM_TYPES[type_name]
    if value is None:
        if strict:
            raise ParamError(f"must be {TYPE_WORDS[expected]}, got null")
        return None  # MLflow passes null on to the model
    if type(value) is int and expected is float:
        if abs(value) > sys.float_info.max:
            raise ParamError("is out of range for a float")
        value = float(value)  # MLflow converts integer -> float and double, nothing else
    if type(value) is not expected:
        raise ParamError(f"must be {TYPE_WORDS[expected]}, got {kind_of(value)}")
    if strict and type(value) is float and not math.isfinite(value):
        raise ParamError("must be finite")
    return value
