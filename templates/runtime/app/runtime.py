"""The serving runtime every deployctl artifact carries.

One module holds all the serving logic: load the bundled model once, validate requests against
the model's signature, predict, and answer the HTTP contract (/health, /predict, /predict_batch,
/invocations). The Flask, FastAPI, Lambda and Cloud Functions entry points are thin adapters that
move bytes in and out of `ModelService.handle`. This file does not import deployctl.

Speed: per request, the cost is in the model call (scikit-learn checks its input on every call,
and far more slowly for a DataFrame than for an array), not in the arithmetic. So the way the
model is called is chosen once, at load (see `Scorer`): the fastest way that gives bit-for-bit the
answers the model gives on a DataFrame of the smoke-test rows.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
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
# sklearn warns on every call when an array replaces the DataFrame a model was fitted on. The
# array path is only taken after checking the columns match by name and order, so it is noise.
FEATURE_NAMES_WARNING = "X does not have valid feature names"
log = logging.getLogger("model_service")


class BadRequest(Exception):
    """A request the service refuses: answered with `status` and {"error": message}."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    @classmethod
    def too_large(cls) -> BadRequest:
        return cls(f"the body is over the limit of {MAX_BODY_BYTES} bytes", 413)


# -- validation ------------------------------------------------------------------------------------

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
        self.checks = [(c["name"], CHECKS[c["type"]], c.get("required", True)) for c in columns]
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
        data = {}
        for i, col in enumerate(self.columns):
            values = [r[i] for r in rows]
            dtype = DTYPES[col["type"]]
            if None in values:  # an optional column left out: NaN for numbers, None for the rest
                dtype = "float64" if dtype not in ("object", "bool") else "object"
                values = [np.nan if v is None and dtype == "float64" else v for v in values]
            data[col["name"]] = np.asarray(values, dtype=dtype)
        return pd.DataFrame(data, columns=self.names)


def _missing(name: str, required: bool, where: str) -> None:
    if required:
        raise BadRequest(f"{where}: '{name}' is required and missing or null")


# -- calling the model -----------------------------------------------------------------------------


def _tolist(values: Any) -> list[Any]:
    """Predictions as plain JSON values, whatever container the model returned."""
    if isinstance(values, pd.DataFrame):
        if values.shape[1] == 1:
            return values.iloc[:, 0].tolist()
        return values.to_dict(orient="records")
    if hasattr(values, "tolist"):
        return values.tolist()
    return list(values)


def _is_sklearn(obj: Any, module: str, name: str) -> bool:
    """isinstance without importing scikit-learn for models that do not use it."""
    cls = getattr(sys.modules.get(module), name, None)
    return cls is not None and isinstance(obj, cls)


# Classifiers whose predict() is the class of highest predict_proba() (their own code, or an argmax
# of a score that predict_proba maps monotonically; a tie is asked again with predict, see
# Scorer._labels). Not e.g. SVC (Platt scaling) or threshold-tuned classifiers.
ARGMAX_CLASSIFIERS = {
    "sklearn.linear_model._logistic": ("LogisticRegression", "LogisticRegressionCV"),
    "sklearn.tree._classes": ("DecisionTreeClassifier", "ExtraTreeClassifier"),
    "sklearn.ensemble._forest": ("RandomForestClassifier", "ExtraTreesClassifier"),
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting": ("HistGradientBoostingClassifier",),
}


def _argmax_classifier(model: Any) -> bool:
    names = ARGMAX_CLASSIFIERS.get(type(model).__module__, ())
    return type(model).__name__ in names and getattr(model, "n_outputs_", 1) == 1


class Scorer:
    """Calls the model on validated rows; the options say how, and are chosen by `Scorer.fastest`.

    - array: an array instead of a DataFrame (scikit-learn checks an array several times faster);
    - shortcuts: a Pipeline's transformers run once for predict and predict_proba, not twice, and
      an argmax classifier's labels come from its probabilities instead of a second model call;
    - sklearn's per-call checks that validation already made (finite numbers) are skipped.
    """

    def __init__(self, model: Any, schema: Schema, *, array: bool = False, shortcuts: bool = False) -> None:
        self.model = model
        self.schema = schema
        self.array = array
        self.head, self.final = _split_pipeline(model) if shortcuts else (None, model)
        has_proba = hasattr(model, "predict_proba") and hasattr(model, "classes_")
        self.classes: np.ndarray[Any, Any] | None = np.asarray(model.classes_) if has_proba else None
        self.from_proba = shortcuts and _argmax_classifier(self.final)
        self.options = f"{'array' if array else 'DataFrame'} input{', shortcuts' if shortcuts else ''}"

    @classmethod
    def fastest(cls, model: Any, schema: Schema, probe: list[list[Any]]) -> Scorer:
        """The fastest options that answer the probe rows exactly as the model does on a DataFrame."""
        reference = cls(model, schema)
        candidates = [cls(model, schema, shortcuts=True)]
        if schema.array_dtype is not None and _names_match(model, schema.names):
            candidates.insert(0, cls(model, schema, array=True, shortcuts=True))
        # as one batch and row by row: sklearn itself may differ in the last bit between the two
        batches = [probe, *([row] for row in probe)] if probe else []
        try:
            expected = [reference.score(rows) for rows in batches]
        except BadRequest:  # the model refuses its own examples: keep to the plain way
            batches = []
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", FEATURE_NAMES_WARNING, UserWarning)
            agreeing = (c for c in candidates if batches and _same_answers(c, batches, expected))
            chosen = next(agreeing, reference)
        if chosen.array:
            warnings.filterwarnings("ignore", FEATURE_NAMES_WARNING, UserWarning)
        return chosen

    def score(self, rows: list[list[Any]], probabilities: bool = True) -> tuple[list[Any], Any]:
        """(labels, probabilities or None) for validated rows; BadRequest(422) if the model refuses."""
        try:
            with self._checks_done():
                inputs = self.schema.array(rows) if self.array else self.schema.frame(rows)
                if self.head is not None:
                    inputs = self.head.transform(inputs)
                probas = None
                if probabilities and self.classes is not None:
                    probas = self.final.predict_proba(inputs)
                return self._labels(inputs, probas), probas
        except Exception as exc:  # e.g. a category the encoder never saw: the input's fault
            log.warning("model refused input: %s", exc)
            raise BadRequest(f"the model could not score this input: {exc}", 422) from None

    def agrees_in_batches(self, rows: list[list[Any]]) -> bool:
        """Whether rows scored together get the labels they get one by one, and the same numbers
        within 1e-12 relative (BLAS may sum a batch in another order: the last bit can differ)."""
        try:
            labels, probas = self.score(rows)
            alone = [self.score([row]) for row in rows]
        except BadRequest:
            return False
        if len(rows) < 2 or not _close(labels, [label for one, _ in alone for label in one]):
            return False
        return probas is None or _close(probas, np.concatenate([one for _, one in alone]))

    def _labels(self, inputs: Any, probas: Any) -> list[Any]:
        if probas is None or not self.from_proba or self.classes is None:
            return _tolist(self.final.predict(inputs))
        best = probas.argmax(axis=1)
        top = probas[np.arange(len(best)), best]
        if np.count_nonzero(probas == top[:, None]) > len(best):  # a tie: let the model decide
            return _tolist(self.final.predict(inputs))
        return self.classes.take(best).tolist()

    def _checks_done(self) -> contextlib.AbstractContextManager[Any]:
        """Skip sklearn's finiteness check: validation refused NaN and inf in required columns."""
        sklearn = sys.modules.get("sklearn")
        if sklearn is None or not self.schema.all_required:
            return contextlib.nullcontext()
        return sklearn.config_context(assume_finite=True, skip_parameter_validation=True)


def _close(a: Any, b: Any) -> bool:
    """Equal, or for numbers equal within 1e-12 relative (1e-15 absolute for probabilities ~0)."""
    if isinstance(a, list) and a == b:
        return True
    try:
        return bool(np.allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-12, atol=1e-15))
    except (TypeError, ValueError):  # string labels that differ
        return False


def _split_pipeline(model: Any) -> tuple[Any, Any]:
    """(the transformers, the final estimator) of a scikit-learn Pipeline, else (None, model)."""
    if not _is_sklearn(model, "sklearn.pipeline", "Pipeline") or len(model.steps) < 2:
        return None, model
    final = model.steps[-1][1]
    if not hasattr(final, "predict"):  # "passthrough" or a transformer: nothing to split
        return None, model
    return model[:-1], final


def _names_match(model: Any, names: list[str]) -> bool:
    """An array is matched to columns by position: the model's fitted names must be in that order."""
    fitted = getattr(model, "feature_names_in_", None)
    return fitted is None or list(fitted) == names


def _same_answers(scorer: Scorer, batches: list[list[list[Any]]], expected: list[Any]) -> bool:
    """Bit-for-bit the labels and probabilities the reference gave for the same batches."""
    for rows, (labels, probas) in zip(batches, expected):
        try:
            got_labels, got_probas = scorer.score(rows)
        except BadRequest:
            return False
        if got_labels != labels or not (probas is None or np.array_equal(got_probas, probas)):
            return False
    return True


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


# -- the HTTP contract -----------------------------------------------------------------------------


Scored = tuple[list[Any], Any]  # (labels, probabilities or None)


@dataclass
class Call:
    """A validated request: the rows to score and how the model's output becomes the answer."""

    rows: list[list[Any]]
    probabilities: bool
    answer: Callable[[list[Any], Any], dict[str, Any]]


class ModelService:
    """The model behind the HTTP contract. Build it once per process with `from_artifact`.

    A request goes route -> parse -> validate (`prepare`, giving a Call) -> score -> answer
    (`respond`); `handle` does it all at once. The ASGI adapter scores the Calls of concurrent
    requests together (app/asgi.py), which is why the steps are apart.
    """

    def __init__(self, manifest: dict[str, Any], model: Any) -> None:
        meta = manifest["model"]
        self.manifest = manifest  # read-only: adapters document their API from it
        self.name: str = meta["name"]
        self.version: str = meta["version"]
        self.schema = Schema(meta["columns"])
        self.model = model
        self.probe = self._probe(manifest)
        self.scorer = Scorer.fastest(model, self.schema, self.probe)
        self.classes = None if self.scorer.classes is None else self.scorer.classes.tolist()
        self.routes: dict[tuple[str, str], Callable[[Any], Call]] = {
            ("POST", "/predict"): self.predict,
            ("POST", "/predict_batch"): self.predict_batch,
            ("POST", "/invocations"): self.invocations,
        }
        self.paths = {path for _, path in self.routes} | {"/health", "/ping"}
        # /health never changes: serialize it once
        self.health_body = dumps(self.health())

    @classmethod
    def from_artifact(cls, root: Path = ROOT) -> ModelService:
        manifest = json.loads((root / "deployctl.json").read_text())
        model = load_model(manifest["model"]["loader"], root / "model")
        service = cls(manifest, model)  # also warms the model up on the smoke-test rows
        log.info("model loaded", extra={"fields": {"scoring": service.scorer.options}})
        return service

    def _probe(self, manifest: dict[str, Any]) -> list[list[Any]]:
        """The smoke-test rows (real input examples) that pass validation."""
        rows = []
        for case in manifest.get("smoke_cases", []):
            with contextlib.suppress(BadRequest):
                rows.append(self.schema.row(case["row"], "smoke case"))
        return rows

    # -- endpoints: each takes the parsed JSON body and returns the Call that answers it ----------

    def health(self) -> dict[str, Any]:
        return {"status": "healthy", "model_name": self.name, "model_version": self.version}

    def predict(self, body: Any) -> Call:
        if type(body) is not dict or "features" not in body:
            raise BadRequest('expected an object {"features": [...]} or {"features": {...}}')
        return Call([self.schema.row(body["features"], "features")], True, self._one_answer)

    def predict_batch(self, body: Any) -> Call:
        items = body.get("instances") if type(body) is dict else body
        if items is None:
            raise BadRequest('expected {"instances": [[...], ...]} or a list of objects')
        return Call(self.schema.rows(items, "instances"), True, self._batch_answer)

    def invocations(self, body: Any) -> Call:
        """MLflow's scoring protocol, answered as `mlflow models serve` answers it."""
        rows = self.schema.rows(_mlflow_rows(body), "input", strict=False)
        return Call(rows, False, lambda labels, _: {"predictions": labels})

    def _one_answer(self, labels: list[Any], probas: Any) -> dict[str, Any]:
        answer: dict[str, Any] = {"prediction": labels[0]}
        if probas is not None:
            assert self.classes is not None
            key = "probability" if len(self.classes) == 2 else "probabilities"
            answer[key] = self._probabilities(probas[:1])[0]
        answer["model_version"] = self.version
        return answer

    def _batch_answer(self, labels: list[Any], probas: Any) -> dict[str, Any]:
        answer: dict[str, Any] = {"predictions": labels}
        if probas is not None:
            answer["probabilities"] = self._probabilities(probas)
        answer["model_version"] = self.version
        return answer

    # -- plumbing ---------------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, body: bytes, content_type: str | None = None
    ) -> tuple[int, bytes]:
        """Answer one HTTP request: (status, JSON bytes). Never raises for bad input."""
        try:
            call = self.prepare(method, path, body, content_type)
            if isinstance(call, bytes):
                return 200, call
            return 200, self.respond(call, self.scorer.score(call.rows, call.probabilities))
        except BadRequest as exc:
            return exc.status, error_body(exc, path.rstrip("/"))

    def prepare(self, method: str, path: str, body: bytes, content_type: str | None) -> Call | bytes:
        """Route, parse and validate one request: the Call to score, or the answer (/health)."""
        path = path.rstrip("/") or "/"
        if path in ("/health", "/ping") and method in ("GET", "HEAD"):
            return self.health_body
        endpoint = self.routes.get((method, path))
        if endpoint is None:
            raise BadRequest(f"{method} {path} is not served", 405 if path in self.paths else 404)
        return endpoint(self.parse(body, content_type))

    @staticmethod
    def respond(call: Call, scored: Scored) -> bytes:
        return dumps(call.answer(*scored))

    @staticmethod
    def parse(body: bytes, content_type: str | None = None) -> Any:
        if len(body) > MAX_BODY_BYTES:
            raise BadRequest.too_large()
        if content_type and "json" not in content_type.lower():
            raise BadRequest(f"content type '{content_type}' is not supported; send application/json", 415)
        if not body:
            raise BadRequest("the request body is empty; send a JSON object")
        try:
            return loads(body)
        except (JSONDecodeError, ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None

    def _probabilities(self, probas: Any) -> list[Any]:
        """Per row: P(classes_[1]) for a binary classifier, {class: p} for a multi-class one."""
        assert self.classes is not None
        if len(self.classes) == 2:
            return probas[:, 1].tolist()
        keys = [str(c) for c in self.classes]
        return [dict(zip(keys, row)) for row in probas.tolist()]


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


# -- logging ---------------------------------------------------------------------------------------


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
    ACCESS.fd = _fileno(sys.stderr)


class AccessLog:
    """One JSON line per request, in the format of the other log lines, on the same stream.

    Written with one os.write: a record through `logging` costs 27 us against 7 (a tenth of a
    small request's whole cost). Before configure_logging (fd None) it goes through `logging`.
    """

    def __init__(self) -> None:
        self.enabled = os.environ.get("ACCESS_LOG", "1") != "0"
        self.fd: int | None = None

    def __call__(self, method: str, path: str, status: int, started: float) -> None:
        if not self.enabled or not log.isEnabledFor(logging.INFO):
            return
        fields = {"method": method, "path": path, "status": status}
        fields["ms"] = round((time.perf_counter() - started) * 1000, 3)
        if self.fd is None:
            log.info("request", extra={"fields": fields})
            return
        entry = {"ts": round(time.time(), 3), "level": "INFO", "msg": "request", **fields}
        os.write(self.fd, dumps(entry) + b"\n")


def _fileno(stream: Any) -> int | None:
    try:
        return int(stream.fileno())
    except (AttributeError, OSError, ValueError):  # e.g. an in-memory stream in tests
        return None


ACCESS = AccessLog()
log_request = ACCESS  # the name the adapters import
