"""One Open Inference Protocol call over gRPC, from the artifact's own environment:

    .venv/bin/python -m app.oip_grpc.probe HOST:PORT MODEL_NAME < request.json
    .venv/bin/python -m app.oip_grpc.probe HOST:PORT MODEL_NAME --metadata

reads a REST infer request (JSON) on stdin, sends it as a ModelInferRequest with typed contents,
and prints the answer as REST's JSON answer; with --metadata, prints ModelMetadata as REST's JSON
model metadata. A refusal prints {"code": ..., "error": ...} and exits 1. AUTHORIZATION in the
environment is sent as the `authorization` metadata. deployctl's smoke-test uses it to check a
service's gRPC binding against the recorded answers.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import grpc

from . import SERVICE, convert
from . import deployctl_oip_predict_v2_pb2 as pb


def call(address: str, method: str, request: Any, response_type: Any, timeout: float = 30.0) -> Any:
    """One unary call of the service, with the `authorization` metadata if AUTHORIZATION is set."""
    with grpc.insecure_channel(address) as channel:
        stub = channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )
        authorization = os.environ.get("AUTHORIZATION")
        metadata = (("authorization", authorization),) if authorization else None
        return stub(request, timeout=timeout, metadata=metadata)


def infer(address: str, model_name: str, body: dict[str, Any]) -> dict[str, Any]:
    request = convert.request_message(body, model_name)
    return convert.answer_of(call(address, "ModelInfer", request, pb.ModelInferResponse))


def metadata(address: str, model_name: str) -> dict[str, Any]:
    request = pb.ModelMetadataRequest(name=model_name)
    return convert.metadata_of(call(address, "ModelMetadata", request, pb.ModelMetadataResponse))


def main() -> int:
    address, model_name = sys.argv[1], sys.argv[2]
    try:
        if sys.argv[3:] == ["--metadata"]:
            answer = metadata(address, model_name)
        else:
            answer = infer(address, model_name, json.load(sys.stdin))
    except grpc.RpcError as exc:
        print(json.dumps({"code": exc.code().name, "error": exc.details()}))
        return 1
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
