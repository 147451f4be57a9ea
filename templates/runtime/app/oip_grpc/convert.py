"""gRPC messages <-> the JSON-shaped requests and answers of app/oip.py, so both bindings share
one validation and one answer.

A tensor's values come typed (`contents`, the field of its datatype) or raw
(`raw_input_contents`, one little-endian buffer per input; BYTES: a 4-byte length, then the
bytes, per element). The answer is raw when the request was (as Triton does; tritonclient reads
raw outputs), typed otherwise.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..oip import KNOWN_DATATYPES, RAW_DTYPES, raw_values
from ..schema import BadRequest
from . import deployctl_oip_predict_v2_pb2 as pb

# OIP datatype -> the InferTensorContents field its typed values go in (FP16 has none: raw only)
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
FIELDS = sorted(set(CONTENTS.values()))


def infer_body(request: pb.ModelInferRequest) -> dict[str, Any]:
    """A ModelInferRequest as the JSON body of REST's infer, for OpenInference.infer."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(
            f"raw_input_contents: {len(raw)} buffers for {len(request.inputs)} inputs; send one per input"
        )
    inputs = []
    for i, tensor in enumerate(request.inputs):
        where = f"inputs[{i}] '{tensor.name}'"
        if raw:
            if any(tensor.contents.ListFields()):
                raise BadRequest(f"{where}: has contents and raw_input_contents; send one kind only")
            data = raw_values(raw[i], tensor.datatype, where)
        else:
            data = typed_values(tensor, where)
        inputs.append(
            {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape), "data": data}
        )
    body: dict[str, Any] = {"inputs": inputs}
    if request.id:
        body["id"] = request.id
    if request.outputs:
        body["outputs"] = [{"name": output.name} for output in request.outputs]
    return body


def typed_values(tensor: pb.ModelInferRequest.InferInputTensor, where: str) -> list[Any]:
    """The values of a tensor's `contents`, which must be in its datatype's field."""
    if tensor.datatype not in KNOWN_DATATYPES:
        raise BadRequest(f"{where}: datatype {tensor.datatype!r} is not an Open Inference Protocol datatype")
    given = [field.name for field, _ in tensor.contents.ListFields()]
    expected = CONTENTS.get(tensor.datatype)
    if given and given != [expected]:
        wanted = f"in {expected}" if expected else "as raw_input_contents"
        raise BadRequest(f"{where}: {tensor.datatype} values go {wanted}, got {', '.join(given)}")
    if expected is None:  # FP16: raw only
        return []
    values = list(getattr(tensor.contents, expected))
    if tensor.datatype == "BYTES":
        try:
            return [value.decode("utf-8") for value in values]
        except UnicodeDecodeError:
            raise BadRequest(f"{where}: a BYTES element is not UTF-8 text") from None
    return values


def infer_response(answer: dict[str, Any], raw: bool) -> pb.ModelInferResponse:
    """REST's infer answer as a ModelInferResponse: raw outputs if `raw`, else typed contents."""
    response = pb.ModelInferResponse(
        model_name=answer["model_name"], model_version=answer["model_version"], id=answer.get("id", "")
    )
    for output in answer["outputs"]:
        datatype, data = output["datatype"], output["data"]
        tensor = response.outputs.add(name=output["name"], datatype=datatype, shape=output["shape"])
        if datatype == "BYTES":
            texts = [value if isinstance(value, str) else json.dumps(value) for value in data]
            encoded = [text.encode("utf-8") for text in texts]
            if raw:
                response.raw_output_contents.append(
                    b"".join(len(b).to_bytes(4, "little") + b for b in encoded)
                )
            else:
                tensor.contents.bytes_contents.extend(encoded)
            continue
        array = np.asarray(data, dtype=RAW_DTYPES[datatype])  # a missing value (None): NaN
        if raw:
            response.raw_output_contents.append(array.tobytes())
        else:
            getattr(tensor.contents, CONTENTS[datatype]).extend(array.tolist())
    return response


def metadata_response(metadata: bytes) -> pb.ModelMetadataResponse:
    """REST's model metadata (JSON) as a ModelMetadataResponse (which has no parameters)."""
    body = json.loads(metadata)
    response = pb.ModelMetadataResponse(
        name=body["name"], versions=body["versions"], platform=body["platform"]
    )
    for kind in ("inputs", "outputs"):
        for tensor in body[kind]:
            getattr(response, kind).add(
                name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"]
            )
    return response


def server_metadata_response(server: bytes) -> pb.ServerMetadataResponse:
    body = json.loads(server)
    return pb.ServerMetadataResponse(
        name=body["name"], version=body["version"], extensions=body["extensions"]
    )


# -- the client's side (app/oip_grpc/probe.py): REST's JSON request and answer as messages --------


def request_message(body: dict[str, Any], model_name: str) -> pb.ModelInferRequest:
    """REST's JSON infer request as a ModelInferRequest with typed contents (data flat, row-major)."""
    request = pb.ModelInferRequest(model_name=model_name, id=body.get("id", ""))
    for tensor in body["inputs"]:
        given = request.inputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
        values = _leaves(tensor["data"])
        if tensor["datatype"] == "BYTES":
            values = [str(value).encode("utf-8") for value in values]
        getattr(given.contents, CONTENTS[tensor["datatype"]]).extend(values)
    return request


def answer_of(response: pb.ModelInferResponse) -> dict[str, Any]:
    """A ModelInferResponse as REST's JSON answer (raw outputs decoded)."""
    outputs = []
    for i, tensor in enumerate(response.outputs):
        if response.raw_output_contents:
            data = raw_values(response.raw_output_contents[i], tensor.datatype, f"outputs[{i}]")
        else:
            data = list(getattr(tensor.contents, CONTENTS[tensor.datatype]))
            if tensor.datatype == "BYTES":
                data = [value.decode("utf-8") for value in data]
        outputs.append(
            {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape), "data": data}
        )
    return {"model_name": response.model_name, "model_version": response.model_version, "outputs": outputs}


def metadata_of(response: pb.ModelMetadataResponse) -> dict[str, Any]:
    """A ModelMetadataResponse as REST's JSON model metadata (without its parameters)."""
    tensors = {
        kind: [
            {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in getattr(response, kind)
        ]
        for kind in ("inputs", "outputs")
    }
    return {
        "name": response.name,
        "versions": list(response.versions),
        "platform": response.platform,
        **tensors,
    }


def _leaves(values: Any) -> list[Any]:
    if type(values) is not list:
        return [values]
    return [leaf for value in values for leaf in _leaves(value)]
