"""Generate the runtime's gRPC message modules from KServe's grpc_predict_v2.proto.

    python scripts/generate_oip_grpc.py          # rewrite templates/runtime/app/oip_grpc/
    python scripts/generate_oip_grpc.py --check  # exit 1 if the shipped copy is not current

The proto's package `inference` is renamed (and its file given another name) before compiling:
protobuf keeps one descriptor pool per process, and tritonclient and kserve register their own
`inference.*` messages and `grpc_predict_v2.proto` there, so importing both would fail with a
duplicate-symbol error (kserve#3099). The messages' wire format does not depend on the package;
the service's method paths (`/inference.GRPCInferenceService/...`) do, and app/oip_grpc/service.py
registers them under the original name. Artifacts ship the generated modules: they need protobuf
and grpcio at run time, never grpcio-tools.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTO = REPO / "deployctl" / "schemas" / "grpc_predict_v2.proto"
OUT = REPO / "templates" / "runtime" / "app" / "oip_grpc"
PACKAGE = "deployctl_oip.v2"  # private: clashes with no other registrant of `inference.*`
FILE = "deployctl_oip_predict_v2.proto"
GENERATED = ("deployctl_oip_predict_v2_pb2.py", "deployctl_oip_predict_v2_pb2.pyi")


def renamed(proto: str) -> str:
    """The proto with its package renamed; anything else unchanged."""
    original = "package inference;"
    if proto.count(original) != 1:
        raise SystemExit(f"{PROTO} no longer declares `{original}` once: update this script")
    return proto.replace(original, f"package {PACKAGE};")


def generate() -> dict[str, str]:
    """The generated modules' text, by file name."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / FILE
        source.write_text(renamed(PROTO.read_text()))
        code = protoc.main(["protoc", f"-I{tmp}", f"--python_out={tmp}", f"--pyi_out={tmp}", str(source)])
        if code != 0:
            raise SystemExit(f"protoc failed on {PROTO} (exit {code})")
        return {name: (Path(tmp) / name).read_text() for name in GENERATED}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the shipped copy is current")
    args = parser.parse_args()
    stale = []
    for name, text in generate().items():
        target = OUT / name
        if target.exists() and target.read_text() == text:
            continue
        stale.append(name)
        if not args.check:
            target.write_text(text)
    if args.check and stale:
        print(f"stale: {', '.join(stale)}; run python scripts/generate_oip_grpc.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
