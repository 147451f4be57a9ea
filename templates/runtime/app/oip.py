"""The Open Inference Protocol v2 (KServe's and Triton's REST API) on the model's signature.

Paths (`{name}` the service name, `{version}` the model version; any other is a 404):
GET /v2, /v2/health/live, /v2/health/ready, /v2/models/{name}[/versions/{version}][/ready], and
POST /v2/models/{name}[/versions/{version}]/infer.

An infer request carries one input tensor per signature column, of shape [N] or [N, 1]; its columns
become the same rows /predict_batch validates and scores, so both answer alike. A model with a tensor
signature takes one input (`input-0`) of the signature's shape, [N, ...]. Outputs: `predict`
(the labels or values, shape [N], or [N, ...] for a model that answers arrays) and, for a classifier,
`predict_proba` ([N, n_classes], the classes in the order of the metadata's `parameters.classes`).
A model that answers several named outputs per row (a DataFrame, a dict) gives one tensor each.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from .jsonio import dumps
from .oip_types import DATATYPES, tensor_datatype
from .schema import DTYPES, MAX_BATCH_ROWS, BadRequest
from .tensors import InputSchema

PREFIX = "/v2"
# MLflow signature column type -> OIP tensor datatype
KNOWN_DATATYPES = {"BOOL", "BYTES", "FP16", "FP32", "FP64"} | {
    f"{sign}INT{bits}" for sign in ("", "U") for bits in (8, 16, 32, 64)
}
NUMBERS = KNOWN_DATATYPES - {"BOOL", "BYTES"}
# the datatypes an input may declare, by the numpy kind of its column or tensor (O: text)
_ACCEPTED = {"O": {"BYTES"}, "b": {"BOOL"}, "f": NUMBERS, "i": NUMBERS, "u": NUMBERS}
PREDICT, PROBA = "predict", "predict_proba"
TENSOR_INPUT = "input-0"  # the one input of a tensor signature (unnamed in MLflow)
# the metrics route labels of the protocol's paths (OpenInference.label)
MODEL_PATHS = ("/v2/models/{name}", "/v2/models/{name}/versions/{version}")
LABELS = {"/v2", "/v2/health/live", "/v2/health/ready"} | {
    model + suffix for model in MODEL_PATHS for suffix in ("", "/ready", "/infer")
}
LIVE = dumps({"live": True})
READY = dumps({"ready": True})
Answer = Callable[[list[Any], Any], dict[str, Any]]


def is_oip_path(path: str) -> bool:
    return path.startswith(PREFIX) and (len(path) == len(PREFIX) or path[len(PREFIX)] == "/")


def datatype_of(values: list[Any]) -> str:
    """The OIP datatype of JSON values (labels of one type; numbers otherwise)."""
    kinds = {type(v) for v in values}
    for candidates, name in (({bool}, "BOOL"), ({int}, "INT64"), ({int, float}, "FP64"), ({str}, "BYTES")):
        if values and kinds <= candidates:
            return name
    return "BYTES" if kinds & {str} else "FP64"


class OpenInference:
    """OIP v2 routes of one model: `prepare` gives the answer bytes, or (rows, whether the
    probabilities are needed, how the scores become the answer) for the service to score."""

    def __init__(
        self,
        manifest: dict[str, Any],
        schema: InputSchema,
        classes: list[Any] | None,
        parse: Callable[[bytes, str | None], Any],
    ) -> None:
        model = manifest["model"]
        self.parse = parse
        # the service name; a manifest written by hand for the embedding API may leave it out
        self.name: str = manifest.get("name") or model["name"]
        self.version = str(model["version"])
        self.schema = schema
        self.classes = classes
        self.tensor: dict[str, Any] | None = model.get("tensor")
        self.column_kinds = {c["name"]: np.dtype(DTYPES[c["type"]]).kind for c in model["columns"]}
        recorded = [case["prediction"] for case in manifest.get("smoke_cases", []) if "prediction" in case]
        # several named outputs per row (a DataFrame's columns, a dict's keys): a tensor each
        self.named = list(recorded[0]) if recorded and isinstance(recorded[0], dict) else []
        self.outputs = self.named or ([PREDICT, PROBA] if classes else [PREDICT])
        self.model_ready = dumps({"name": self.name, "ready": True})
        self.server = dumps(
            {"name": "deployctl", "version": manifest.get("tool_version", "unknown"), "extensions": []}
        )
        self.metadata = dumps(self._metadata(model, classes or recorded))

    def _metadata(self, model: dict[str, Any], recorded: list[Any]) -> dict[str, Any]:
        inputs = [
            {"name": c["name"], "datatype": DATATYPES[c["type"]], "shape": [-1]} for c in model["columns"]
        ]
        if self.tensor is not None:
            dtype = np.dtype(self.tensor["dtype"])
            inputs = [{"name": TENSOR_INPUT, "datatype": _datatype(dtype), "shape": self.tensor["shape"]}]
        outputs = [
            {"name": name, "datatype": datatype_of([r.get(name) for r in recorded]), "shape": [-1]}
            for name in self.named
        ] or [
            {
                "name": PREDICT,
                "datatype": datatype_of(_flatten(recorded)),
                "shape": [-1, *_shape(recorded)[1:]],
            }
        ]
        parameters: dict[str, Any] = {"flavor": model.get("flavor"), "task": model.get("task")}
        if self.classes:
            outputs.append({"name": PROBA, "datatype": "FP64", "shape": [-1, len(self.classes)]})
            parameters["classes"] = self.classes
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": f"mlflow_{model.get('flavor', 'pyfunc')}",
            "inputs": inputs,
            "outputs": outputs,
            "parameters": parameters,
        }

    # -- routing ----------------------------------------------------------------------------------

    def prepare(
        self, method: str, path: str, body: bytes, content_type: str | None, unready: BadRequest | None
    ) -> bytes | tuple[list[list[Any]], bool, Answer]:
        """The answer to a request under /v2 (no trailing slash), or what `infer` gives to score;
        `unready`: what the readiness paths answer while the service is not ready (None: ready)."""
        expected, what = self.route(path)
        if method != expected and not (expected == "GET" and method == "HEAD"):
            raise BadRequest(f"{method} {path} is not served; use {expected}", 405)
        if what == "infer":
            return self.infer(self.request(body, content_type))
        if what in ("ready", "model_ready") and unready is not None:
            raise unready
        answers = {"server": self.server, "live": LIVE, "ready": READY, "model": self.metadata}
        return answers.get(what, self.model_ready)

    def request(self, body: bytes, content_type: str | None) -> Any:
        """An infer request: JSON, or a JSON header followed by the inputs' raw bytes (the binary
        tensor data extension, which tritonclient uses by default: each such input says its
        `parameters.binary_data_size`)."""
        try:
            return self.parse(body, content_type)
        except BadRequest:
            request = _with_binary_data(body) if body[:1] == b"{" else None
            if request is None:
                raise
            return request

    def route(self, path: str) -> tuple[str, str]:
        """(method, what) for a path under /v2: what is server, live, ready, model, model_ready or
        infer. BadRequest(404) for a path that is none, or names another model or version."""
        parts = path[len(PREFIX) :].split("/")[1:]
        if not parts:
            return "GET", "server"
        if parts[0] == "health" and len(parts) == 2 and parts[1] in ("live", "ready"):
            return "GET", parts[1]
        if parts[0] != "models" or len(parts) < 2:
            raise BadRequest(f"{path} is not an Open Inference Protocol path", 404)
        name, rest = parts[1], parts[2:]
        if name != self.name:
            raise BadRequest(f"model '{name}' is not served here; this service serves '{self.name}'", 404)
        if rest[:1] == ["versions"]:
            if len(rest) < 2 or rest[1] != self.version:
                version = rest[1] if len(rest) > 1 else ""
                raise BadRequest(
                    f"model '{name}' version '{version}' is not served here; this service serves "
                    f"version '{self.version}'",
                    404,
                )
            rest = rest[2:]
        what = {(): ("GET", "model"), ("ready",): ("GET", "model_ready"), ("infer",): ("POST", "infer")}
        found = what.get(tuple(rest))
        if found is None:
            raise BadRequest(f"{path} is not an Open Inference Protocol path", 404)
        return found

    @staticmethod
    def label(path: str) -> str | None:
        """The metrics route label: the path with the model's name and version as placeholders,
        if that is one of the protocol's paths, else None. A closed set: every distinct label is
        a series kept for the process's life, and paths are the client's to choose."""
        parts = path.split("/")
        if len(parts) > 3 and parts[2] == "models":
            parts[3] = "{name}"
            if len(parts) > 5 and parts[4] == "versions":
                parts[5] = "{version}"
        label = "/".join(parts)
        return label if label in LABELS else None

    # -- infer ------------------------------------------------------------------------------------

    def infer(self, body: Any) -> tuple[list[list[Any]], bool, Answer]:
        """(validated rows, probabilities wanted, the answer from (labels, probabilities))."""
        if type(body) is not dict:
            raise BadRequest('expected an inference request object {"inputs": [...]}')
        wanted = self._wanted(body.get("outputs"))
        if self.tensor is not None:
            rows = self.schema.rows(self._examples(body.get("inputs")), "inputs[0]")
        else:
            columns = self._columns(body.get("inputs"))
            count = len(next(iter(columns.values())))
            if count > MAX_BATCH_ROWS:
                raise BadRequest(f"inputs: {count} rows is over the limit of {MAX_BATCH_ROWS}", 413)
            given = [columns.get(name) for name in self.schema.names]
            rows = self.schema.rows(
                [[None if c is None else c[i] for c in given] for i in range(count)], "inputs"
            )
        request_id = body.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise BadRequest("id: expected a string")
        if request_id is not None and not _is_utf8(request_id):  # echoed in the answer, which is UTF-8
            raise BadRequest("id: not valid Unicode text (it holds a lone surrogate)")

        def answer(labels: list[Any], probas: Any) -> dict[str, Any]:
            return self._answer(request_id, wanted, labels, probas)

        return rows, PROBA in wanted, answer

    def _examples(self, inputs: Any) -> list[Any]:
        """A tensor signature's one input, [N, ...] with data flat (row-major) or nested, as N
        nested examples; their dtype and dims are checked by the schema like /predict_batch's."""
        if type(inputs) is not list or len(inputs) != 1 or type(inputs[0]) is not dict:
            raise BadRequest(f"inputs: expected one tensor '{TENSOR_INPUT}' of shape {self.tensor_shape}")
        tensor, where = inputs[0], f"inputs[0] '{inputs[0].get('name')}'"
        kind = np.dtype(self.tensor_dtype).kind
        _check_datatype(tensor.get("datatype"), _ACCEPTED.get(kind, NUMBERS), where)
        shape: Any = tensor.get("shape")
        if type(shape) is not list or not shape or not all(type(n) is int and n >= 0 for n in shape):
            raise BadRequest(f"{where}: shape must be a list of sizes, got {shape!r}")
        if type(tensor.get("data")) is not list:
            raise BadRequest(f"{where}: data must be a list")
        values = _flatten(tensor["data"])
        if len(values) != int(np.prod(shape)):
            raise BadRequest(
                f"{where}: shape {shape} holds {int(np.prod(shape))} values, data has {len(values)}"
            )
        if not 0 < shape[0] <= MAX_BATCH_ROWS:
            raise BadRequest(
                f"{where}: {shape[0]} examples; send 1 to {MAX_BATCH_ROWS}", 413 if shape[0] else 400
            )
        examples = _nest(values, shape)
        return examples

    @property
    def tensor_dtype(self) -> str:
        return str(self.tensor["dtype"]) if self.tensor else "float64"

    @property
    def tensor_shape(self) -> list[int]:
        return list(self.tensor["shape"]) if self.tensor else [-1]

    def _columns(self, inputs: Any) -> dict[str, list[Any]]:
        """Each input tensor's values by name, checked: a known column, once, all of one length."""
        if type(inputs) is not list or not inputs:
            raise BadRequest("inputs: expected a non-empty list of tensors")
        columns: dict[str, list[Any]] = {}
        for i, tensor in enumerate(inputs):
            name, values = self._tensor(tensor, f"inputs[{i}]")
            if name in columns:
                raise BadRequest(f"inputs[{i}]: '{name}' is given twice")
            columns[name] = values
        lengths = {name: len(values) for name, values in columns.items()}
        if len(set(lengths.values())) > 1:
            raise BadRequest(f"inputs: every tensor must have the same number of rows, got {lengths}")
        return columns

    def _tensor(self, tensor: Any, where: str) -> tuple[str, list[Any]]:
        if type(tensor) is not dict:
            raise BadRequest(f"{where}: expected a tensor object with name, shape, datatype and data")
        name, datatype = tensor.get("name"), tensor.get("datatype")
        shape: Any = tensor.get("shape")
        if not isinstance(name, str) or name not in self.schema.names:
            raise BadRequest(f"{where}: unknown input {name!r}; expected one of {self.schema.names}")
        where = f"{where} '{name}'"
        _check_datatype(datatype, _ACCEPTED[self.column_kinds[name]], where)
        valid_shape = type(shape) is list and all(type(n) is int and n >= 0 for n in shape)
        if not valid_shape or len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise BadRequest(f"{where}: shape must be [N] or [N, 1], got {shape!r}")
        values = _flat(tensor.get("data"), where)
        if len(values) != shape[0]:
            raise BadRequest(f"{where}: shape {shape} holds {shape[0]} values, data has {len(values)}")
        if not values:
            raise BadRequest(f"{where}: no rows")
        return name, values

    def _wanted(self, outputs: Any) -> list[str]:
        if outputs is None:
            return self.outputs
        if type(outputs) is not list or not all(type(o) is dict for o in outputs):
            raise BadRequest('outputs: expected a list of {"name": ...}')
        names = [o.get("name") for o in outputs]
        unknown = [n for n in names if n not in self.outputs]
        if unknown or not names:
            raise BadRequest(f"outputs: unknown output(s) {unknown}; this model has {self.outputs}")
        return names

    def _answer(
        self, request_id: str | None, wanted: list[str], labels: list[Any], probas: Any
    ) -> dict[str, Any]:
        tensors: dict[str, Callable[[], dict[str, Any]]] = {PREDICT: lambda: _output(PREDICT, labels)}
        for name in self.named:
            tensors[name] = partial(_output, name, [row.get(name) for row in labels])
        if probas is not None:
            tensors[PROBA] = lambda: {
                "name": PROBA,
                "datatype": "FP64",
                "shape": list(probas.shape),
                "data": probas.ravel().tolist(),
            }
        answer: dict[str, Any] = {"model_name": self.name, "model_version": self.version}
        if request_id is not None:
            answer["id"] = request_id
        answer["outputs"] = [tensors[name]() for name in wanted]
        return answer


# OIP datatype -> numpy dtype of its raw little-endian bytes (BYTES: each a 4-byte length, then bytes)
RAW_DTYPES = {"BOOL": "?", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"} | {
    f"{sign}INT{bits}": f"<{sign.lower() or 'i'}{bits // 8}" for sign in ("", "U") for bits in (8, 16, 32, 64)
}


def _with_binary_data(body: bytes) -> Any:
    """A request of the binary tensor data extension with each input's bytes decoded into its
    `data`, or None when the body is not one (then the JSON error stands)."""
    try:  # latin-1 maps each byte to one character: the end of the JSON is its length in bytes
        _, end = json.JSONDecoder().raw_decode(body.decode("latin-1"))
        request = json.loads(body[:end])
    except (ValueError, UnicodeDecodeError):
        return None
    inputs = request.get("inputs") if isinstance(request, dict) else None
    offset = end
    for i, tensor in enumerate(inputs if isinstance(inputs, list) else []):
        parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
        where = f"inputs[{i}]"
        if parameters is not None and type(parameters) is not dict:
            raise BadRequest(f"{where}: parameters must be an object, got {type(parameters).__name__}")
        size = parameters.get("binary_data_size") if parameters else None
        if size is None:
            continue
        if type(size) is not int or not 0 <= size <= len(body) - offset:
            raise BadRequest(
                f"{where}: binary_data_size {size!r} does not fit the {len(body) - offset} bytes left"
            )
        tensor["data"] = raw_values(body[offset : offset + size], tensor.get("datatype"), where)
        offset += size
    if offset != len(body):
        raise BadRequest(f"{len(body) - offset} bytes after the JSON are no input's binary data")
    return request


def raw_values(raw: bytes, datatype: Any, where: str) -> list[Any]:
    if datatype == "BYTES":
        values, at = [], 0
        while at < len(raw):
            size = int.from_bytes(raw[at : at + 4], "little")
            if at + 4 + size > len(raw):
                raise BadRequest(f"{where}: a BYTES element of {size} bytes runs past the data")
            try:
                values.append(raw[at + 4 : at + 4 + size].decode("utf-8"))
            except UnicodeDecodeError:
                raise BadRequest(f"{where}: a BYTES element is not UTF-8 text") from None
            at += 4 + size
        return values
    dtype = RAW_DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise BadRequest(f"{where}: datatype {datatype!r} is not an Open Inference Protocol datatype")
    if len(raw) % np.dtype(dtype).itemsize:
        raise BadRequest(f"{where}: {len(raw)} bytes are not a whole number of {datatype} values")
    return list(np.frombuffer(raw, dtype=dtype).tolist())


def _output(name: str, values: list[Any]) -> dict[str, Any]:
    """An output tensor: [N] for a value per row, [N, ...] for an array per row, data row-major."""
    data = _flatten(values)
    return {"name": name, "datatype": datatype_of(data), "shape": _shape(values), "data": data}


def _flatten(values: list[Any]) -> list[Any]:
    """The leaves of nested lists, in order: with a stack, as a client's nesting has no bound
    (recursion would raise at Python's stack limit, some 500 levels here)."""
    flat: list[Any] = []
    stack = [iter(values)]
    while stack:
        for item in stack[-1]:
            if type(item) is list:
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _shape(values: list[Any]) -> list[int]:
    """The shape of nested lists (of their first items: a model's rows are all of one shape)."""
    shape, level = [len(values)], values
    while level and type(level[0]) is list:
        level = level[0]
        shape.append(len(level))
    return shape


def _nest(values: list[Any], shape: list[int]) -> list[Any]:
    """Row-major values as nested lists of `shape` (len(values) == prod(shape))."""
    for size in reversed(shape[1:]):
        values = [values[i : i + size] for i in range(0, len(values), size)] if size else []
    return values


def _check_datatype(datatype: Any, accepted: set[str], where: str) -> None:
    """An input's declared datatype: one of the protocol's, and one its column or tensor can hold
    (BYTES for text, BOOL for booleans, a number type for numbers)."""
    if not isinstance(datatype, str) or datatype not in KNOWN_DATATYPES:
        raise BadRequest(f"{where}: datatype {datatype!r} is not an Open Inference Protocol datatype")
    if datatype not in accepted:
        raise BadRequest(f"{where}: datatype {datatype} does not fit this input; send {sorted(accepted)}")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _datatype(dtype: np.dtype[Any]) -> str:
    return tensor_datatype(dtype.kind, dtype.itemsize)


def _flat(data: Any, where: str) -> list[Any]:
    """Row-major values of a [N] or [N, 1] tensor, given flat or nested."""
    if type(data) is not list:
        raise BadRequest(f"{where}: data must be a list")
    if any(type(v) is list for v in data):
        if not all(type(v) is list and len(v) == 1 for v in data):
            raise BadRequest(f"{where}: nested data must hold one value per row")
        return [v[0] for v in data]
    return data
