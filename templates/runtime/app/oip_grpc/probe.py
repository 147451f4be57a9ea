"""One Open Inference Protocol infer over gRPC, from the artifact's own environment:

    .venv/bin/python -m app.oip_grpc.probe HOST:PORT MODEL_NAME < request.json

reads a REST infer request (JSON) on stdin, sends it as a ModelInferRequest with typed contents,
and prints the answer as REST's JSON answer; a refusal prints {"code": ..., "error": ...} and
exits 1. AUTHORIZATION in the environment is sent as the `authorization` metadata. deployctl's
smoke-test uses it to check a fastapi artifact's gRPC service against the recorded answers.
"""

from __future__ import annotations

import json
import os
import sys

import grpc

from . import SERVICE, convert
from . import deployctl_oip_predict_v2_pb2 as pb


def infer(address: str, model_name: str, body: dict[str, object], timeout: float = 30.0) -> dict[str, object]:
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(
            f"/{SERVICE}/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        authorization = os.environ.get("AUTHORIZATION")
        metadata = (("authorization", authorization),) if authorization else None
        response = call(convert.request_message(body, model_name), timeout=timeout, metadata=metadata)
        return convert.answer_of(response)


def main() -> int:
    address, model_name = sys.argv[1], sys.argv[2]
    try:
        answer = infer(address, model_name, json.load(sys.stdin))
    except grpc.RpcError as exc:
        print(json.dumps({"code": exc.code().name, "error": exc.details()}))
        return 1
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
