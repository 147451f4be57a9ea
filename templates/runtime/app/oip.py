"""The Open Inference Protocol v2 (KServe's and Triton's REST API) on the model's signature.

Paths (`{name}` the service name, `{version}` the model version; any other is a 404):
GET /v2, /v2/health/live, /v2/health/ready, /v2/models/{name}[/versions/{version}][/ready], and
POST /v2/models/{name}[/versions/{version}]/infer.

An infer request carries one input tensor per signature column, of shape [N] or [N, 1]; its columns
become the same rows /predict_batch validates and scores, so both answer alike. Outputs: `predict`
(the labels or values, shape [N]) and, for a classifier, `predict_proba` ([N, n_classes], the
classes in the order of the metadata's `parameters.classes`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .jsonio import dumps
from .schema import MAX_BATCH_ROWS, BadRequest, Schema

PREFIX = "/v2"
# MLflow signature column type -> OIP tensor datatype
DATATYPES = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
}
KNOWN_DATATYPES = {"BOOL", "BYTES", "FP16", "FP32", "FP64"} | {
    f"{sign}INT{bits}" for sign in ("", "U") for bits in (8, 16, 32, 64)
}
PREDICT, PROBA = "predict", "predict_proba"
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
        schema: Schema,
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
        self.outputs = [PREDICT, PROBA] if classes else [PREDICT]
        self.model_ready = dumps({"name": self.name, "ready": True})
        self.server = dumps(
            {"name": "deployctl", "version": manifest.get("tool_version", "unknown"), "extensions": []}
        )
        recorded = [case["prediction"] for case in manifest.get("smoke_cases", []) if "prediction" in case]
        self.metadata = dumps(self._metadata(model, datatype_of(classes or recorded)))

    def _metadata(self, model: dict[str, Any], predict_type: str) -> dict[str, Any]:
        inputs = [
            {"name": c["name"], "datatype": DATATYPES[c["type"]], "shape": [-1]} for c in model["columns"]
        ]
        outputs = [{"name": PREDICT, "datatype": predict_type, "shape": [-1]}]
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
        self, method: str, path: str, body: bytes, content_type: str | None, ready: bool
    ) -> bytes | tuple[list[list[Any]], bool, Answer]:
        """The answer to a request under /v2 (no trailing slash), or what `infer` gives to score."""
        expected, what = self.route(path)
        if method != expected and not (expected == "GET" and method == "HEAD"):
            raise BadRequest(f"{method} {path} is not served; use {expected}", 405)
        if what == "infer":
            return self.infer(self.parse(body, content_type))
        if what in ("ready", "model_ready") and not ready:
            raise BadRequest("not ready: the model is still loading", 503)
        answers = {"server": self.server, "live": LIVE, "ready": READY, "model": self.metadata}
        return answers.get(what, self.model_ready)

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
    def label(path: str) -> str:
        """The metrics route label: the path with the model's name and version as placeholders."""
        parts = path.split("/")
        if len(parts) > 3 and parts[2] == "models":
            parts[3] = "{name}"
            if len(parts) > 5 and parts[4] == "versions":
                parts[5] = "{version}"
        return "/".join(parts)

    # -- infer ------------------------------------------------------------------------------------

    def infer(self, body: Any) -> tuple[list[list[Any]], bool, Answer]:
        """(validated rows, probabilities wanted, the answer from (labels, probabilities))."""
        if type(body) is not dict:
            raise BadRequest('expected an inference request object {"inputs": [...]}')
        columns = self._columns(body.get("inputs"))
        wanted = self._wanted(body.get("outputs"))
        count = len(next(iter(columns.values())))
        if count > MAX_BATCH_ROWS:
            raise BadRequest(f"inputs: {count} rows is over the limit of {MAX_BATCH_ROWS}", 413)
        given = [columns.get(name) for name in self.schema.names]
        rows = [[None if col is None else col[i] for col in given] for i in range(count)]
        rows = self.schema.rows(rows, "inputs")
        request_id = body.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise BadRequest("id: expected a string")

        def answer(labels: list[Any], probas: Any) -> dict[str, Any]:
            return self._answer(request_id, wanted, labels, probas)

        return rows, PROBA in wanted, answer

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
        if not isinstance(name, str) or name not in self.schema.index:
            raise BadRequest(f"{where}: unknown input {name!r}; expected one of {self.schema.names}")
        where = f"{where} '{name}'"
        if datatype not in KNOWN_DATATYPES:
            raise BadRequest(f"{where}: datatype {datatype!r} is not an Open Inference Protocol datatype")
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
        tensors = {
            PREDICT: lambda: {
                "name": PREDICT,
                "datatype": datatype_of(labels),
                "shape": [len(labels)],
                "data": labels,
            }
        }
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


def _flat(data: Any, where: str) -> list[Any]:
    """Row-major values of a [N] or [N, 1] tensor, given flat or nested."""
    if type(data) is not list:
        raise BadRequest(f"{where}: data must be a list")
    if any(type(v) is list for v in data):
        if not all(type(v) is list and len(v) == 1 for v in data):
            raise BadRequest(f"{where}: nested data must hold one value per row")
        return [v[0] for v in data]
    return data
