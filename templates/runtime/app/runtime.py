"""The serving runtime every deployctl artifact carries.

One module holds all the serving logic: load the bundled model once, validate requests against
the model's signature, predict, and answer the HTTP contract (/health, /predict, /predict_batch,
/invocations). The Flask, FastAPI, Lambda and Cloud Functions entry points are thin adapters that
move bytes in and out of `ModelService.handle`. This file does not import deployctl.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

try:  # orjson is several times faster than json and serializes numpy scalars natively
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)

    loads = orjson.loads
    JSONDecodeError: type[Exception] = orjson.JSONDecodeError
except ImportError:  # pragma: no cover - the generated requirements include orjson

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, allow_nan=False).encode()

    loads = json.loads
    JSONDecodeError = json.JSONDecodeError

ROOT = Path(__file__).resolve().parent.parent
MAX_BODY_BYTES = int(os.environ.get("MAX_BODY_BYTES", 1024 * 1024))
MAX_BATCH_ROWS = int(os.environ.get("MAX_BATCH_ROWS", 10_000))
DTYPES = {
    "double": "float64",
    "float": "float32",
    "long": "int64",
    "integer": "int32",
    "boolean": "bool",
    "string": "object",
}
log = logging.getLogger("model_service")


class BadRequest(Exception):
    """A request the service refuses: answered with `status` and {"error": message}."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Schema:
    """Validates JSON rows against the signature's columns and builds the model's input frame."""

    def __init__(self, columns: list[dict[str, Any]]) -> None:
        self.columns = columns
        self.names = [c["name"] for c in columns]
        self.index = {name: i for i, name in enumerate(self.names)}

    def row(self, item: Any, where: str, strict: bool = True) -> list[Any]:
        """One row, given as a list in signature order or as an object keyed by column name."""
        if isinstance(item, list):
            if len(item) != len(self.columns):
                raise BadRequest(
                    f"{where}: expected {len(self.columns)} values in signature order "
                    f"{self.names}, got {len(item)}"
                )
            values = item
        elif isinstance(item, dict):
            unknown = [key for key in item if key not in self.index]
            if unknown and strict:
                raise BadRequest(f"{where}: unknown field(s) {unknown}; expected {self.names}")
            values = [item.get(name) for name in self.names]
        else:
            raise BadRequest(f"{where}: expected a list or an object, got {_kind(item)}")
        return [_check(v, col, where) for v, col in zip(values, self.columns)]

    def rows(self, items: Any, where: str, strict: bool = True) -> list[list[Any]]:
        if not isinstance(items, list) or not items:
            raise BadRequest(f"{where}: expected a non-empty list of rows")
        if len(items) > MAX_BATCH_ROWS:
            raise BadRequest(f"{where}: {len(items)} rows is over the limit of {MAX_BATCH_ROWS}", 413)
        return [self.row(item, f"{where}[{i}]", strict) for i, item in enumerate(items)]

    def frame(self, rows: list[list[Any]]) -> pd.DataFrame:
        data = {}
        for i, col in enumerate(self.columns):
            values = [r[i] for r in rows]
            dtype = DTYPES[col["type"]]
            if None in values:  # an optional column left out: NaN for numbers, None for the rest
                dtype = "float64" if dtype not in ("object", "bool") else "object"
                values = [np.nan if v is None and dtype == "float64" else v for v in values]
            data[col["name"]] = np.asarray(values, dtype=dtype)
        return pd.DataFrame(data, columns=self.names)


def _check(value: Any, col: dict[str, Any], where: str) -> Any:
    """Check one JSON value against its column type; return it in the model's type."""
    name, kind = col["name"], col["type"]
    if value is None:
        if col.get("required", True):
            raise BadRequest(f"{where}: '{name}' is required and missing or null")
        return None
    if kind in ("double", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadRequest(f"{where}: '{name}' must be a number, got {_kind(value)}")
        if not math.isfinite(value):
            raise BadRequest(f"{where}: '{name}' must be finite")
        return float(value)
    if kind in ("long", "integer"):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"{where}: '{name}' must be an integer, got {_kind(value)}")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise BadRequest(f"{where}: '{name}' must be true or false, got {_kind(value)}")
        return value
    if not isinstance(value, str):
        raise BadRequest(f"{where}: '{name}' must be a string, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names.update({list: "a list", dict: "an object", type(None): "null"})
    return names.get(type(value), type(value).__name__)


def _tolist(values: Any) -> list[Any]:
    """Predictions as plain JSON values, whatever container the model returned."""
    if isinstance(values, pd.DataFrame):
        if values.shape[1] == 1:
            return values.iloc[:, 0].tolist()
        return values.to_dict(orient="records")
    if hasattr(values, "tolist"):
        return values.tolist()
    return list(values)


def load_model(loader: dict[str, Any], model_dir: Path) -> Any:
    """Load the model natively (so classifiers keep predict_proba), else through MLflow pyfunc."""
    if loader["kind"] == "pyfunc":
        import mlflow.pyfunc

        return mlflow.pyfunc.load_model(str(model_dir))
    path = model_dir / loader["file"]
    if loader["format"] == "skops":
        import skops.io

        return skops.io.load(path, trusted=loader.get("trusted_types") or None)
    with open(path, "rb") as fh:
        if loader["format"] == "cloudpickle":
            import cloudpickle

            return cloudpickle.load(fh)
        import pickle

        return pickle.load(fh)


class ModelService:
    """The model behind the HTTP contract. Build it once per process with `from_artifact`."""

    def __init__(self, manifest: dict[str, Any], model: Any) -> None:
        meta = manifest["model"]
        self.name: str = meta["name"]
        self.version: str = meta["version"]
        self.schema = Schema(meta["columns"])
        self.model = model
        has_proba = hasattr(model, "predict_proba") and hasattr(model, "classes_")
        self.classes: list[Any] | None = _tolist(model.classes_) if has_proba else None
        self.routes: dict[tuple[str, str], Callable[[Any], dict[str, Any]]] = {
            ("POST", "/predict"): self.predict,
            ("POST", "/predict_batch"): self.predict_batch,
            ("POST", "/invocations"): self.invocations,
        }

    @classmethod
    def from_artifact(cls, root: Path = ROOT) -> ModelService:
        manifest = json.loads((root / "deployctl.json").read_text())
        model = load_model(manifest["model"]["loader"], root / "model")
        service = cls(manifest, model)
        rows = [case["row"] for case in manifest.get("smoke_cases", [])]
        if rows:  # warm up: the first request should not pay for lazy initialisation
            service.predict_batch({"instances": rows})
        return service

    # -- endpoints: each takes the parsed JSON body and returns the JSON answer -------------------

    def health(self) -> dict[str, Any]:
        return {"status": "healthy", "model_name": self.name, "model_version": self.version}

    def predict(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or "features" not in body:
            raise BadRequest('expected an object {"features": [...]} or {"features": {...}}')
        frame = self.schema.frame([self.schema.row(body["features"], "features")])
        labels, probas = self._score(frame)
        answer: dict[str, Any] = {"prediction": labels[0]}
        if probas is not None:
            answer.update(self._probability(probas[0]))
        answer["model_version"] = self.version
        return answer

    def predict_batch(self, body: Any) -> dict[str, Any]:
        items = body.get("instances") if isinstance(body, dict) else body
        if items is None:
            raise BadRequest('expected {"instances": [[...], ...]} or a list of objects')
        frame = self.schema.frame(self.schema.rows(items, "instances"))
        labels, probas = self._score(frame)
        answer: dict[str, Any] = {"predictions": labels}
        if probas is not None:
            answer["probabilities"] = [next(iter(self._probability(p).values())) for p in probas]
        answer["model_version"] = self.version
        return answer

    def invocations(self, body: Any) -> dict[str, Any]:
        """MLflow's scoring protocol, answered as `mlflow models serve` answers it."""
        rows = self.schema.rows(_mlflow_rows(body), "input", strict=False)
        labels, _ = self._score(self.schema.frame(rows), probabilities=False)
        return {"predictions": labels}

    # -- plumbing ---------------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, body: bytes, content_type: str | None = None
    ) -> tuple[int, bytes]:
        """Answer one HTTP request: (status, JSON bytes). Never raises for bad input."""
        path = path.rstrip("/") or "/"
        try:
            if path in ("/health", "/ping") and method in ("GET", "HEAD"):
                return 200, dumps(self.health())
            endpoint = self.routes.get((method, path))
            if endpoint is None:
                known = any(p == path for _, p in self.routes)
                raise BadRequest(f"{method} {path} is not served", 405 if known else 404)
            return 200, dumps(endpoint(self.parse(body, content_type)))
        except BadRequest as exc:
            return exc.status, error_body(exc, path)

    @staticmethod
    def parse(body: bytes, content_type: str | None = None) -> Any:
        if len(body) > MAX_BODY_BYTES:
            raise BadRequest(f"body of {len(body)} bytes is over the limit of {MAX_BODY_BYTES}", 413)
        if content_type and "json" not in content_type.lower():
            raise BadRequest(f"content type '{content_type}' is not supported; send application/json", 415)
        if not body:
            raise BadRequest("the request body is empty; send a JSON object")
        try:
            return loads(body)
        except (JSONDecodeError, ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None

    def _score(self, frame: pd.DataFrame, probabilities: bool = True) -> tuple[list[Any], Any]:
        try:
            labels = _tolist(self.model.predict(frame))
            probas = None
            if probabilities and self.classes is not None:
                probas = self.model.predict_proba(frame)
        except Exception as exc:  # e.g. a category the encoder never saw: the input's fault
            log.warning("model refused input: %s", exc)
            raise BadRequest(f"the model could not score this input: {exc}", 422) from None
        return labels, probas

    def _probability(self, row: Any) -> dict[str, Any]:
        """P(classes_[1]) for a binary classifier, {class: p} for a multi-class one."""
        assert self.classes is not None
        if len(self.classes) == 2:
            return {"probability": float(row[1])}
        return {"probabilities": {str(c): float(p) for c, p in zip(self.classes, row)}}


def _mlflow_rows(body: Any) -> Any:
    """The rows of an MLflow scoring request, in any of its four input formats."""
    formats = ("dataframe_split", "dataframe_records", "instances", "inputs")
    if not isinstance(body, dict):
        raise BadRequest(f"expected a JSON object with one of the keys {list(formats)}")
    given = [key for key in formats if key in body]
    if len(given) != 1:
        raise BadRequest(f"expected exactly one of the keys {list(formats)}, got {sorted(body)}")
    data = body[given[0]]
    if given[0] == "dataframe_split":
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise BadRequest('dataframe_split must be {"columns": [...], "data": [[...], ...]}')
        columns = data.get("columns")
        if columns is None:
            return data["data"]
        if not all(isinstance(row, list) and len(row) == len(columns) for row in data["data"]):
            raise BadRequest("dataframe_split: every row of data must have one value per column")
        return [dict(zip(columns, row)) for row in data["data"]]
    if isinstance(data, dict):  # columnar: {"col": [v1, v2, ...], ...}
        lengths = {len(v) if isinstance(v, list) else -1 for v in data.values()}
        if len(lengths) != 1 or -1 in lengths:
            raise BadRequest(f"{given[0]}: every column must be a list of the same length")
        return [dict(zip(data, values)) for values in zip(*data.values())]
    return data


def error_body(exc: BadRequest, path: str = "") -> bytes:
    body: dict[str, Any] = {"error": exc.message}
    if path == "/invocations":  # MLflow clients read error_code and message
        body.update(error_code="BAD_REQUEST", message=exc.message)
    return dumps(body)


class JsonFormatter(logging.Formatter):
    """One JSON object per log line, for log pipelines that parse structured logs."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    log.handlers[:] = [handler]
    log.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
    log.propagate = False


ACCESS_LOG = os.environ.get("ACCESS_LOG", "1") != "0"


def log_request(method: str, path: str, status: int, started: float) -> None:
    if ACCESS_LOG:
        ms = round((time.perf_counter() - started) * 1000, 3)
        log.info(
            "request",
            extra={"fields": {"method": method, "path": path, "status": status, "ms": ms}},
        )
