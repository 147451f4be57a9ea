"""KServe's own Python clients against a deployctl service: the gRPC client (InferenceGRPCClient)
and the REST client (InferenceRESTClient, protocol v2), each with its binary and its JSON/typed way
of sending tensors.

Run by tests/test_grpc.py in an interpreter that has kserve (a venv of its own: kserve pins
protobuf < 7, the tests' interpreter has 7). Arguments: the gRPC address, the REST base URL, the
model name, its version and the input tensors as JSON ([[name, datatype, [values]], ...]). Prints one
JSON object: the health answers, then each way's outputs by name (BYTES as text) and response id.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np
from kserve import InferInput, InferRequest
from kserve.inference_client import InferenceGRPCClient, InferenceRESTClient, RESTConfig

NUMPY = {"FP64": np.float64, "FP32": np.float32, "INT64": np.int64, "BOOL": np.bool_, "BYTES": np.object_}


def request(model: str, version: str, tensors: list[Any], binary: bool, request_id: str) -> InferRequest:
    """numpy arrays set as binary data (raw_input_contents over gRPC, the binary extension over
    REST), or plain lists (typed contents over gRPC, JSON `data` over REST)."""
    inputs = []
    for name, datatype, values in tensors:
        if binary:
            array = np.array([v.encode() for v in values] if datatype == "BYTES" else values, NUMPY[datatype])
            tensor = InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array, binary_data=True)
        else:
            tensor = InferInput(name, [len(values)], datatype, data=values)
        inputs.append(tensor)
    return InferRequest(model, inputs, request_id=request_id, model_version=version)


def outputs(response: Any) -> dict[str, Any]:
    answer = {}
    for output in response.outputs:
        values = output.as_numpy().tolist()
        answer[output.name] = [v.decode() if isinstance(v, bytes) else v for v in values]
    return {"id": response.id, "outputs": answer}


async def main(grpc_url: str, rest_url: str, model: str, version: str, tensors: list[Any]) -> dict[str, Any]:
    said: dict[str, Any] = {}
    async with InferenceGRPCClient(grpc_url) as client:
        said["grpc_live"] = await client.is_server_live()
        said["grpc_ready"] = await client.is_server_ready()
        said["grpc_model_ready"] = await client.is_model_ready(model)
        for binary in (True, False):
            way = f"grpc_{'raw' if binary else 'typed'}"
            said[way] = outputs(await client.infer(request(model, version, tensors, binary, way)))
    async with InferenceRESTClient(RESTConfig(protocol="v2")) as rest:
        said["rest_live"] = await rest.is_server_live(rest_url)
        said["rest_model_ready"] = await rest.is_model_ready(rest_url, model)
        for binary in (True, False):
            way = f"rest_{'binary' if binary else 'json'}"
            sent = request(model, version, tensors, binary, way)
            said[way] = outputs(await rest.infer(rest_url, sent, model_name=model))
    return said


if __name__ == "__main__":
    grpc_url, rest_url, model, version, tensors = sys.argv[1:6]
    print(json.dumps(asyncio.run(main(grpc_url, rest_url, model, version, json.loads(tensors)))))
