"""The Open Inference Protocol datatypes of a signature's types.

A pure module (no imports): deployctl loads it from the templates too, so the infer requests its
checks build (deployctl/checks/contract.py) use the very table the service answers metadata with.
"""

# MLflow column type -> the OIP datatype of that column's tensor
DATATYPES = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
}


def tensor_datatype(kind: str, itemsize: int) -> str:
    """A numpy dtype's kind and size -> OIP datatype (FP32, INT64, UINT8, BOOL...; BYTES for text)."""
    if kind == "b":
        return "BOOL"
    prefix = {"f": "FP", "i": "INT", "u": "UINT"}.get(kind)
    return f"{prefix}{itemsize * 8}" if prefix else "BYTES"
