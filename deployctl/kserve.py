"""KServe's InferenceService (serving.kserve.io/v1beta1): checking k8s/inferenceservice.yaml.

The schema is the `v1beta1` openAPIV3Schema of KServe's InferenceService CRD (Apache-2.0), as
shipped in schemas/ without its descriptions, `status`, and the transformer and explainer
components, which deployctl never writes. Validation is strict: as kubernetes-validate does for the
built-in kinds, a field the schema does not name is an error (the API server would prune it
silently, so a typo would go unnoticed).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

SCHEMA = Path(__file__).resolve().parent / "schemas" / "kserve-inferenceservice-v1beta1.json"
API_VERSION, KIND = "serving.kserve.io/v1beta1", "InferenceService"
FILE = "inferenceservice.yaml"
PORT = 8080  # where KServe sends a custom predictor's traffic


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists an object's fields."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict_schema = {key: strict(value) for key, value in schema.items()}
    open_ended = "additionalProperties" in schema or schema.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in schema and not open_ended:
        strict_schema["additionalProperties"] = False
    return strict_schema


@functools.cache
def validator() -> Any:
    import jsonschema

    return jsonschema.Draft7Validator(strict(json.loads(SCHEMA.read_text())))


def errors(doc: dict[str, Any]) -> list[str]:
    """What is wrong with an InferenceService, as `path: message` lines; [] when valid."""
    found = [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(top level)'}: {error.message}"
        for error in sorted(validator().iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if (doc.get("apiVersion"), doc.get("kind")) != (API_VERSION, KIND):
        found.insert(0, f"expected apiVersion {API_VERSION} and kind {KIND}")
    if not isinstance(doc.get("metadata"), dict) or not doc["metadata"].get("name"):
        found.append("metadata.name: required")
    return found
